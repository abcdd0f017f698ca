"""Racing writers on one database: exactly one wins each race and no update is lost."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import pytest

import workflow as wf
from tests.support import clerk, drive, form, reviewer

APPLICATIONS = 12
WORKERS = 6


def _contend(
    url: str, ids: list[str], worker: int, start: threading.Barrier | None = None
) -> list[str]:
    """Fire approve (even workers) or reject (odd workers) at every application; name outcomes."""
    outcomes = []
    with wf.Workflow(url) as flow:
        if start is not None:
            start.wait()
        for app_id in ids:
            try:
                if worker % 2:
                    flow.reject(
                        uuid.UUID(app_id),
                        actor=reviewer(actor_id=f"r{worker}"),
                        ground="identity_mismatch",
                    )
                else:
                    flow.approve(uuid.UUID(app_id), actor=reviewer(actor_id=f"r{worker}"))
                outcomes.append("won")
            except (wf.IllegalTransition, wf.ConcurrentUpdate) as exc:
                outcomes.append(exc.code)
    return outcomes


def _prepare(flow: wf.Workflow) -> list[str]:
    return [str(drive(flow, "transmitted", n=n).id) for n in range(1, APPLICATIONS + 1)]


def _check(flow: wf.Workflow, ids: list[str], outcomes: list[list[str]]) -> None:
    tally = Counter(o for per_worker in outcomes for o in per_worker)
    assert tally["won"] == len(ids), tally
    assert set(tally) <= {"won", "illegal_transition", "concurrent_update"}, tally
    for app_id in ids:
        view = flow.get(uuid.UUID(app_id))
        assert view.state in {"approved", "rejected"}
        assert view.version == 3
        history = flow.history(view.id)
        assert [h.seq for h in history] == [1, 2, 3]
        assert history[-1].to_state == view.state


def test_threads_racing_on_the_same_applications_have_exactly_one_winner_each(
    flow: wf.Workflow, db_url: str
) -> None:
    ids = _prepare(flow)
    start = threading.Barrier(WORKERS)
    results: list[list[str]] = [[] for _ in range(WORKERS)]

    def run(worker: int) -> None:
        results[worker] = _contend(db_url, ids, worker, start)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(len(r) == len(ids) for r in results), "a worker failed"
    _check(flow, ids, results)


@pytest.mark.slow
def test_processes_racing_on_the_same_applications_have_exactly_one_winner_each(
    flow: wf.Workflow, db_url: str
) -> None:
    ids = _prepare(flow)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=WORKERS, mp_context=context) as pool:
        futures = [pool.submit(_contend, db_url, ids, w) for w in range(WORKERS)]
        results = [f.result(timeout=300) for f in futures]
    _check(flow, ids, results)


def test_one_workflow_shared_by_threads_loses_no_update(flow: wf.Workflow) -> None:
    # Many threads submitting and transmitting through one Workflow object (one engine, a pool).
    errors: list[BaseException] = []
    done: list[uuid.UUID] = []
    lock = threading.Lock()

    def run(start: int) -> None:
        try:
            for n in range(start, start + 10):
                view = flow.submit(form(n=n), actor=clerk())
                view = flow.transmit(view.id, actor=clerk())
                with lock:
                    done.append(view.id)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(100 + 10 * i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(done) == 40
    assert all(flow.get(i).version == 2 for i in done)
