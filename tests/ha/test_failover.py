"""The primary dies with SIGKILL under load; its synchronous standby is promoted; nothing a
writer was told is lost and nothing happens twice.

Several writer processes (`tests.ha.writer`) run commands with request ids through the
multi-host URL (``target_session_attrs=read-write``). At a kill point (after so many commands
were answered) the primary's postmaster and every process of its server get SIGKILL, as if
the machine had died; a moment later the standby is promoted. The writers see
`ConnectionLost`, reconnect through the same URL and send what went unanswered again with the
same request id, then go on. Once they have stopped, the new primary must hold every command
a writer saw answered, each exactly once (one history row per recorded request, and the
reverse), its history must verify, and its outbox must equal its history row for row. The
dead node then comes back as the new primary's synchronous standby, for the next kill point.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

import workflow as wf
from tests.ha.cluster import Cluster
from tests.support import clerk, form

pytestmark = pytest.mark.slow

ROOT = Path(__file__).absolute().parents[2]
WRITERS = int(os.environ.get("IDCARD_FAILOVER_WRITERS", "4"))
AFTER = 25
"""Commands each writer must have answered after the promotion before it is stopped."""
KILL_POINTS = {"early": 10, "mid": 150, "late": 400}
"""Commands answered, over all writers, since the last failover (or the start) when the
primary is killed: right after the writers start (mostly submissions), and later, when most
applications are further along."""
SEED = 20260413
RUN = "failover"
"""The prefix of the writers' names and request ids."""


@dataclass
class Seen:
    """What the writers' logs say, over every run so far."""

    answered: dict[str, tuple[uuid.UUID, str, int, str]] = field(default_factory=dict)
    tried: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)


def read_logs(folder: Path) -> Seen:
    seen = Seen()
    for path in sorted(folder.glob("*.out")):
        for line in path.read_text().splitlines():
            word, _, rest = line.partition(" ")
            if word == "ok":
                request_id, record, event, version, state = rest.split()
                assert request_id not in seen.answered, f"{request_id} answered twice"
                seen.answered[request_id] = (uuid.UUID(record), event, int(version), state)
            elif word == "try":
                seen.tried.add(rest.split()[0])
            elif word == "lost":
                seen.lost.add(rest.split()[0])
            elif word == "BAD":
                pytest.fail(f"{path.name}: {line}")
    return seen


def answered(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.startswith("ok "))


def wait_until(condition: object, timeout: float, what: str, cluster: Cluster) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{cluster.logs()}")
        time.sleep(0.02)


def start_writers(url: str, folder: Path, run: str, stop: Path) -> list[subprocess.Popen[bytes]]:
    writers = []
    for n in range(WRITERS):
        name = f"{run}-w{n}"
        # Seeds below 200 keep every citizen number's birth date in the past (crash_worker).
        seed = n + 1
        with (folder / f"{name}.err").open("wb") as err:
            command = [sys.executable, "-m", "tests.ha.writer", url, name, str(seed)]
            command += [str(folder / f"{name}.out"), str(stop)]
            writers.append(
                subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
            )
    return writers


def check(cluster: Cluster, seen: Seen) -> dict[str, int]:
    """Everything the new primary must say; returns counts for the report."""
    assert seen.tried == set(seen.answered), "a writer stopped with a command unanswered"
    assert seen.answered, "the writers ran nothing"
    engine = sa.create_engine(cluster.primary.url())
    try:
        with engine.connect() as conn:
            requests = {
                str(rid): (uuid.UUID(str(record)), command, int(response["version"]))
                for rid, record, command, response in conn.execute(
                    sa.text(
                        "SELECT request_id, record_id, command, response "
                        "FROM idcard_command_requests"
                    )
                )
            }
            history = [
                (machine, uuid.UUID(str(r)), seq, event, state)
                for machine, r, seq, event, state in conn.execute(
                    sa.text(
                        "SELECT machine, record_id, seq, event, to_state FROM idcard_transition_log"
                    )
                )
            ]
            outbox = [
                (machine, uuid.UUID(str(r)), seq, event, state)
                for machine, r, seq, event, state in conn.execute(
                    sa.text("SELECT machine, record_id, seq, event, state FROM idcard_outbox")
                )
            ]
            apps = {
                uuid.UUID(str(i)): (state, version)
                for i, state, version in conn.execute(
                    sa.text("SELECT id, state, version FROM idcard_applications")
                )
            }
    finally:
        engine.dispose()

    # The writers' own applications and requests (other tests of the session write too).
    mine = {record for record, event, _, _ in seen.answered.values() if event == "submit"}
    requests = {r: v for r, v in requests.items() if r.startswith(f"{RUN}-")}
    apps = {r: v for r, v in apps.items() if r in mine}

    # Every command a writer saw answered is recorded, as it was answered; and the writers ran
    # every command on their applications (each with a request id): the two sets are equal.
    for request_id, (record, event, version, _) in seen.answered.items():
        assert request_id in requests, f"answered {request_id} is lost"
        assert requests[request_id] == (record, event, version), request_id
    assert set(requests) == set(seen.answered)

    # One history row per recorded request and one request per row: nothing took effect twice.
    ours = [h for h in history if h[0] == "application" and h[1] in mine]
    rows = Counter((r, seq) for _, r, seq, _, _ in ours)
    assert all(n == 1 for n in rows.values())
    by_position = {(r, seq): event for _, r, seq, event, _ in ours}
    made = Counter((record, version) for record, _, version in requests.values())
    assert all(n == 1 for n in made.values()), "two requests made one history row"
    for request_id, (record, command, version) in requests.items():
        assert by_position.get((record, version)) == command, request_id
    assert set(by_position) == set(made), "history rows that no request made"
    for app_id, (state, version) in apps.items():
        assert sorted(s for r, s in by_position if r == app_id) == list(range(1, version + 1))
        last = next(h for h in ours if h[1] == app_id and h[2] == version)
        assert last[4] == state

    # The outbox equals the history, one row each; the whole history verifies.
    assert Counter(outbox) == Counter(history)
    assert max(Counter(history).values()) == 1

    # The new primary's history verifies, every row of it.
    with wf.Workflow(cluster.url()) as flow:
        report = flow.verify()
    assert report.ok, report.broken
    assert report.rows == len(history)
    return {"requests": len(requests), "rows": len(history)}


def replayed(cluster: Cluster, request_ids: set[str], killed_at: datetime) -> int:
    """How many of these requests were recorded before the kill: the old primary committed
    them (and the standby had them), the writer never heard, and its retry got the recorded
    answer back. The others were run again after the promotion, for the first time."""
    if not request_ids:
        return 0
    engine = sa.create_engine(cluster.primary.url())
    try:
        with engine.connect() as conn:
            times = conn.execute(
                sa.text(
                    "SELECT at FROM idcard_command_requests WHERE request_id IN :ids"
                ).bindparams(sa.bindparam("ids", expanding=True)),
                {"ids": sorted(request_ids)},
            ).scalars()
            return sum(1 for at in times if at < killed_at)
    finally:
        engine.dispose()


def test_killed_primaries_lose_and_double_nothing(
    pair: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The writers run through every kill point: killed, promoted, the dead node rebuilt as
    the new primary's synchronous standby under their load, and again."""
    cluster = pair
    folder = tmp_path_factory.mktemp("failover")
    stop = folder / "stop"
    started = time.monotonic()
    writers = start_writers(cluster.url(), folder, RUN, stop)
    outs = [folder / f"{RUN}-w{n}.out" for n in range(WRITERS)]
    report = []
    lost_so_far: set[str] = set()
    try:
        wait_until(
            lambda: all(o.exists() and o.read_text().startswith("ready") for o in outs),
            90,
            "the writers to open their workflows",
            cluster,
        )
        for point, (name, kill_after) in enumerate(KILL_POINTS.items()):
            rng = random.Random(f"{SEED}-{name}")
            base = sum(answered(o) for o in outs)
            wait_until(
                lambda base=base, kill_after=kill_after: (
                    sum(answered(o) for o in outs) >= base + kill_after
                ),
                60,
                f"{kill_after} commands answered before the {name} kill",
                cluster,
            )
            killed_at = datetime.now(UTC)
            cluster.kill_primary()
            before = [answered(o) for o in outs]
            # The writers meet a dead server, then no writable one, until the promotion.
            time.sleep(rng.uniform(0.1, 0.6))
            cluster.promote()
            promoted = time.monotonic()
            wait_until(
                lambda before=before: all(
                    answered(o) >= b + AFTER for o, b in zip(outs, before, strict=True)
                ),
                60,
                f"{AFTER} commands answered by each writer after the {name} promotion",
                cluster,
            )
            recovered = time.monotonic() - promoted
            lost = read_logs(folder).lost - lost_so_far
            lost_so_far |= lost
            assert lost, f"no writer saw the connection lost at the {name} kill"
            report.append(
                f"{name} kill after {sum(before)} answers: {len(lost)} commands met "
                f"ConnectionLost and were retried with their request id "
                f"({replayed(cluster, lost, killed_at)} answered from the record the old "
                f"primary had committed); writers back {recovered:.2f} s after the promotion"
            )
            if point < len(KILL_POINTS) - 1:
                cluster.rebuild_standby()  # under the writers' load
        stop.touch()
        for n, writer in enumerate(writers):
            assert writer.wait(timeout=60) == 0, (folder / f"{RUN}-w{n}.err").read_text()
    finally:
        stop.touch()
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
    errors = [(folder / f"{RUN}-w{n}.err").read_text() for n in range(WRITERS)]
    assert not any(errors), errors

    seen = read_logs(folder)
    counts = check(cluster, seen)
    print(
        f"\n{len(KILL_POINTS)} failovers, {WRITERS} writers: {len(seen.answered)} commands "
        f"answered ({counts['rows']} history rows), {len(seen.lost)} retried after "
        f"ConnectionLost, duplicates: 0, nothing lost; {time.monotonic() - started:.1f} s"
    )
    for line in report:
        print("  " + line)


def test_an_answer_lost_with_the_primary_is_answered_from_the_record_after_promotion(
    pair: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit reached the primary and its synchronous standby, then the primary died
    before the answer reached the host: the host sees `ConnectionLost`, and its retry with the
    same request id, on the promoted standby, returns the recorded answer and changes nothing."""
    import psycopg

    cluster = pair
    engine = wf.create_engine(cluster.url(), pool_pre_ping=True)
    real = engine.dialect.do_commit
    dying: list[datetime] = []

    def commit_then_die(dbapi_connection: object) -> None:
        real(dbapi_connection)  # committed, on the standby's disk too (synchronous_commit=on)
        if not dying:
            return
        dying[0] = datetime.now(UTC)
        cluster.kill_primary()
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(engine.dialect, "do_commit", commit_then_die)
    try:
        with wf.Workflow(engine) as flow:
            view = flow.submit(form(n=7101), actor=clerk(), request_id="answer-lost/1")
            dying.append(datetime.now(UTC))
            with pytest.raises(wf.ConnectionLost):
                flow.transmit(view.id, actor=clerk(), request_id="answer-lost/2")
            killed_at = dying[0]
            dying.clear()
            cluster.promote()
            moved = flow.transmit(view.id, actor=clerk(), request_id="answer-lost/2")
            assert (moved.state, moved.version) == (wf.State.TRANSMITTED, 2)
            rows = flow.history(view.id)
            assert [r.event for r in rows] == ["submit", "transmit"]
            assert rows[-1].at < killed_at, "the retry ran the command again"
            # Without its request id the same command is refused: it took place.
            with pytest.raises(wf.IllegalTransition):
                flow.transmit(view.id, actor=clerk())
            assert flow.verify(view.id).ok
    finally:
        engine.dispose()
