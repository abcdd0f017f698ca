"""verify(workers=N) over ranges of record ids in N processes: the report of one process."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.orm import Session

import workflow as wf
from tests.support import SUBJECTS, clerk, drive, tampering
from workflow.engine import parallel
from workflow.engine.store import DatabaseFailure
from workflow.models.enums import Kind

LOG = wf.Base.metadata.tables["idcard_transition_log"]
APPLICATIONS = wf.Base.metadata.tables["idcard_applications"]


def boundary_ids() -> list[uuid.UUID]:
    """Ids on and just below the cuts between ranges, for 2 and 3 workers."""
    cuts = {
        low.int
        for workers in (2, 3)
        for low, _ in parallel.id_ranges(parallel.RANGES_PER_WORKER * workers)
        if low is not None
    }
    return [uuid.UUID(int=i) for cut in sorted(cuts) for i in (cut - 1, cut)]


@pytest.fixture
def ids(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[uuid.UUID]]:
    """New records take the boundary ids first, then random ones."""
    planned = boundary_ids()
    given: list[uuid.UUID] = []
    real = uuid.uuid4

    def next_id() -> uuid.UUID:
        given.append(planned.pop(0) if planned else real())
        return given[-1]

    monkeypatch.setattr("workflow.engine.runner.uuid.uuid4", next_id)
    yield given


@pytest.fixture
def office(flow: wf.Workflow, ids: list[uuid.UUID]) -> dict[str, uuid.UUID]:
    """Records of every machine, some on the ranges' boundaries."""
    made = {
        "collected": drive(flow, "collected", Kind.RENEWAL, n=1).id,
        "ready": drive(flow, "ready", n=2).id,
        "rejected": drive(flow, "rejected", n=3).id,
        "replacement": drive(flow, "collected", Kind.REPLACEMENT, n=4).id,
    }
    for n in range(5, 25):
        made[f"submitted-{n}"] = drive(flow, "submitted", n=n).id
    for subject in SUBJECTS.values():
        if subject.name != "application":
            for n in (21, 22, 23):
                made[f"{subject.name}-{n}"] = subject.create(flow, n).id
    return made


def damage(url: str, office: dict[str, uuid.UUID]) -> None:
    """Several problems in several machines, some on records at a range boundary."""
    with tampering(url) as raw, raw.begin() as conn:
        # On a boundary: the first planned id (just below the first cut) and the one on it.
        conn.execute(
            sa.update(APPLICATIONS)
            .where(APPLICATIONS.c.id == office["collected"])
            .values(state="ready")
        )
        conn.execute(
            sa.update(LOG)
            .where(LOG.c.record_id == office["ready"], LOG.c.seq == 2)
            .values(actor_id="someone-else")
        )
        loss = next(v for k, v in office.items() if k.startswith("loss_report"))
        cards = [v for k, v in office.items() if k.startswith("found_card")]
        loss_reports = wf.Base.metadata.tables["idcard_loss_reports"]
        conn.execute(sa.delete(loss_reports).where(loss_reports.c.id == loss))
        conn.execute(sa.delete(LOG).where(LOG.c.record_id == cards[0]))
        conn.execute(sa.insert(LOG).values(ghost_row(boundary_ids()[5])))


def ghost_row(record_id: uuid.UUID) -> dict[str, object]:
    from workflow.engine.decision import history_row

    return history_row("ghost", record_id, 1, "haunt", None, "here", clerk(), datetime.now(UTC), {})


def test_the_ranges_are_disjoint_and_cover_every_id() -> None:
    for parts in (1, 2, 7, 8, 12):
        ranges = parallel.id_ranges(parts)
        assert len(ranges) == parts
        assert ranges[0][0] is None and ranges[-1][1] is None
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_a_clean_database_gives_the_same_report(
    flow: wf.Workflow, office: dict[str, uuid.UUID], ids: list[uuid.UUID]
) -> None:
    assert set(boundary_ids()) <= set(ids)  # records sit on every boundary
    one = flow.verify()
    assert one.ok and one.records == len(office) + 1  # the replacement's loss report
    for workers in (2, 3):
        assert flow.verify(workers=workers) == one


def test_a_damaged_database_gives_the_same_report_in_the_same_order(
    flow: wf.Workflow, office: dict[str, uuid.UUID], db_url: str
) -> None:
    damage(db_url, office)
    one = flow.verify(batch_size=2)
    problems = {(b.machine, b.problem) for b in one.broken}
    assert problems == {
        ("application", "state_mismatch"),
        ("application", "hash_mismatch"),
        ("loss_report", "history_without_record"),
        ("found_card", "missing_history"),
        ("ghost", "unknown_machine"),
    }
    assert office["collected"] == boundary_ids()[0]
    for workers in (2, 3):
        assert flow.verify(workers=workers, batch_size=2) == one


def test_progress_counts_every_record(flow: wf.Workflow, office: dict[str, uuid.UUID]) -> None:
    for workers in (1, 2):
        seen: list[tuple[int, int | None]] = []
        report = flow.verify(workers=workers, batch_size=3, progress=lambda *a, s=seen: s.append(a))
        assert seen[-1] == (report.records, report.records)
        assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_a_session_bind_verifies_in_this_process(
    office: dict[str, uuid.UUID], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = wf.create_engine(db_url)
    try:
        with Session(engine) as session:
            flow = wf.Workflow(session)
            one = flow.verify()

            def refuse(*args: object, **kwargs: object) -> None:
                raise AssertionError("a Session's transaction can't be shared with processes")

            monkeypatch.setattr(parallel, "verify_parallel", refuse)
            assert flow.verify(workers=2) == one
    finally:
        engine.dispose()


@pytest.mark.parametrize("workers", [0, 65, -1, "2", 2.0, True])
def test_workers_out_of_range_or_not_an_int_is_a_validation_error(
    flow: wf.Workflow, workers: object
) -> None:
    with pytest.raises(ValidationError) as raised:
        flow.verify(workers=workers)  # type: ignore[arg-type]
    assert raised.value.title == "workers"


def test_a_failing_worker_raises_the_library_error_not_a_traceback(
    flow: wf.Workflow, office: dict[str, uuid.UUID], db_url: str
) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("dropping a table would break the shared PostgreSQL test database")
    with tampering(db_url) as raw, raw.begin() as conn:
        conn.exec_driver_sql("DROP TABLE idcard_found_cards")
    with pytest.raises(wf.StorageError) as raised:
        flow.verify(workers=2)
    assert "no such table" in str(raised.value.__cause__)
    assert isinstance(raised.value.__cause__, DatabaseFailure)
    assert "Traceback" not in str(raised.value) + str(raised.value.__cause__)
    failed = cli(db_url, "--workers", "2")
    assert failed.returncode == 3
    assert "no such table" in failed.stderr and "[storage_error]" in failed.stderr


# -- the command line -------------------------------------------------------------------------


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "workflow", "--db", url, "verify", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_the_cli_with_workers_exits_0_when_intact_and_1_when_damaged(
    flow: wf.Workflow, office: dict[str, uuid.UUID], db_url: str
) -> None:
    clean = cli(db_url, "--workers", "2", "--json")
    assert clean.returncode == 0, clean.stderr
    assert clean.stderr == ""  # no progress bar when stderr is not a terminal
    assert wf.VerificationReport.model_validate(json.loads(clean.stdout)) == flow.verify()
    damage(db_url, office)
    damaged = cli(db_url, "--workers", "2")
    assert damaged.returncode == 1, damaged.stderr
    assert "state_mismatch" in damaged.stdout and "unknown_machine" in damaged.stdout
    refused = cli(db_url, "--workers", "0")
    assert refused.returncode == 2
    assert "invalid workers" in refused.stderr


def test_under_a_chain_key_the_workers_check_the_same_way(
    office: dict[str, uuid.UUID], db_url: str
) -> None:
    # Rows written without the key, checked under one: the same findings from every worker.
    keyed = wf.Workflow(db_url, chain_key=b"k" * 32)
    try:
        one = keyed.verify()
        assert one.keyed and not one.ok
        assert keyed.verify(workers=2) == one
    finally:
        keyed.close()


def in_a_terminal(url: str, *args: str) -> tuple[int, str]:
    """Run ``verify`` with its stderr on a pseudo-terminal, as an auditor at a console does:
    the exit code and what it drew there (read while it runs: a terminal's buffer is small,
    and a bar redrawn ten times a second would fill it)."""
    import pty
    import threading

    controller, terminal = pty.openpty()
    drawn: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal's other end is closed: all of it read
                return
            if not chunk:
                return
            drawn.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "workflow", "--db", url, "verify", *args],
            stdout=subprocess.PIPE,
            stderr=terminal,
            stdin=subprocess.DEVNULL,
            timeout=120,
            check=False,
            env={
                **os.environ,
                "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
                "TERM": "xterm",
                "COLUMNS": "120",
            },
        )
    finally:
        os.close(terminal)
        reader.join(timeout=10)
        os.close(controller)
    return result.returncode, b"".join(drawn).decode(errors="replace")


def test_the_cli_draws_a_progress_bar_on_a_terminal_with_and_without_a_checkpoint(
    flow: wf.Workflow, office: dict[str, uuid.UUID], db_url: str, tmp_path: Path
) -> None:
    records = flow.verify().records
    code, drawn = in_a_terminal(db_url, "--workers", "2")
    assert code == 0, drawn
    assert "verifying" in drawn and f"{records}/{records}" in drawn, drawn
    checkpoint = tmp_path / "cp.json"
    checkpoint.write_text(flow.checkpoint().to_json())
    for workers in ("1", "2"):
        code, drawn = in_a_terminal(db_url, "--since", str(checkpoint), "--workers", workers)
        assert code == 0, drawn
        rows = flow.checkpoint().rows
        assert "verifying" in drawn and f"{rows}/{rows}" in drawn and "covered rows" in drawn
