"""The rules between the three systems hold when many processes race over a few citizens.

Several worker processes (`load_worker`, each a real process with its own engine) run random
commands of all three machines, `fire_many` included, for a bounded time over six citizens, so
that commands on one citizen collide all the time. Then the database must show:

- `verify()` clean;
- at most one open application and at most one active loss report per citizen;
- no loss report withdrawn, and no found card returned, while a replacement application of the
  citizen was in progress (submitted before, not yet rejected or collected);
- no found card returned when the owner applied for a replacement since the loss, and none
  destroyed when the owner did not (the rule of `found_card._replacement_since_loss`, replayed
  from the history: the destroyed cards show that the replay agrees with the library);
- every collected replacement closed the citizen's active loss report, in its own transaction
  (and there was one to close);
- the outbox equals the history, row for row;
- the workers saw only the refusals a caller is told to expect (`load_worker.EXPECTED`): no
  `StorageError`, no other exception, no refusal of a reaction's event;
- and every event of every machine took place at least once.

The invariants are queries over the history (`idcard_transition_log`) that return the rows
that break them. They order a citizen's rows by the log's ``id``, not by ``at``: commands on one
citizen are serialised (one writer on SQLite, a lock per citizen on PostgreSQL), so the ids
give the order in which they took effect, whatever each process's clock said. The summary
counts the rows whose ``at`` is earlier than the citizen's row before them (it should be 0 now
that a creation reads the clock once it holds the citizen's lock; a clock stepped back would
make it more).

``IDCARD_LOAD_SECONDS`` (default 12) and ``IDCARD_LOAD_WORKERS`` (default 4) make a longer or
wider run by hand; ``IDCARD_LOAD_SUMMARY`` names a file to copy the JSON summary to.

The module also holds the deterministic two-connection race of a replacement and a loss report
for one citizen: whichever commits first, the other ends with a documented answer, never
`StorageError`.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import workflow as wf
from tests.support import Clock, clerk, form, postgres_url

ROOT = Path(__file__).absolute().parents[2]
SECONDS = float(os.environ.get("IDCARD_LOAD_SECONDS", "12"))
WORKERS = int(os.environ.get("IDCARD_LOAD_WORKERS", "4"))

# -- the invariants ---------------------------------------------------------------------------

HISTORY = """
CREATE TEMPORARY TABLE load_history AS
SELECT l.id, l.machine, l.record_id, l.seq, l.event, l.to_state, l.at, r.citizen_id, r.kind
FROM idcard_transition_log l
JOIN (
    SELECT 'application' AS machine, id, citizen_id, kind FROM idcard_applications
    UNION ALL
    SELECT 'loss_report', id, citizen_id, CAST(NULL AS VARCHAR(20)) FROM idcard_loss_reports
    UNION ALL
    SELECT 'found_card', id, citizen_id, CAST(NULL AS VARCHAR(20)) FROM idcard_found_cards
) r ON r.machine = l.machine AND r.id = l.record_id
"""
"""Every history row with its record's citizen (and an application's kind), for the queries."""

HISTORY_INDEXES = (
    "CREATE INDEX load_history_citizen ON load_history (citizen_id, id)",
    "CREATE INDEX load_history_record ON load_history (record_id, id)",
)

IN_PROGRESS = """
    s.machine = 'application' AND s.seq = 1 AND s.kind = 'replacement'
    AND s.citizen_id = {at}.citizen_id AND s.id < {at}.id
    AND NOT EXISTS (
        SELECT 1 FROM load_history e
        WHERE e.record_id = s.record_id AND e.machine = 'application'
          AND e.to_state IN ('rejected', 'collected') AND e.id < {at}.id
    )
"""
"""A replacement application ``s`` of the citizen of row ``{at}`` in progress at that row:
submitted before it, not rejected or collected before it."""

NEXT_ROW_OF_CITIZEN = """
    NOT EXISTS (
        SELECT 1 FROM load_history y
        WHERE y.citizen_id = k.citizen_id AND y.id > k.id AND y.id < z.id
    )
"""
"""Row ``z`` is the citizen's next row after row ``k``: the same transaction's reaction."""

SINCE_LOSS = """
        WITH ended AS MATERIALIZED (
            SELECT t.id AS ended_row, t.record_id AS found_card, t.citizen_id,
                (SELECT g.id FROM load_history g
                 WHERE g.record_id = t.record_id AND g.machine = 'found_card' AND g.seq = 1
                ) AS registered_row,
                (SELECT MAX(c.id) FROM load_history c
                 WHERE c.machine = 'loss_report' AND c.seq = 1
                   AND c.citizen_id = t.citizen_id AND c.id < t.id
                   AND NOT EXISTS (
                       SELECT 1 FROM load_history x
                       WHERE x.record_id = c.record_id AND x.machine = 'loss_report'
                         AND x.event = 'withdraw' AND x.id < t.id)
                ) AS report_row
            FROM load_history t
            WHERE t.machine = 'found_card' AND t.event = '{event}'
        ), loss AS MATERIALIZED (
            SELECT ended.*, COALESCE(
                (SELECT s.id FROM load_history c
                 JOIN idcard_loss_reports lr ON lr.id = c.record_id
                 JOIN load_history s ON s.machine = 'application' AND s.seq = 1
                                    AND s.record_id = lr.application_id
                 WHERE c.id = ended.report_row),
                ended.report_row) AS report_point
            FROM ended
        ), since AS MATERIALIZED (
            SELECT loss.*, CASE WHEN report_point IS NOT NULL AND report_point < registered_row
                                THEN report_point ELSE registered_row END AS since_row
            FROM loss
        ), matched AS MATERIALIZED (
            SELECT since.found_card, since.ended_row, since.since_row,
                   s.record_id AS replacement, s.id AS submitted_row
            FROM since JOIN load_history s
              ON s.machine = 'application' AND s.seq = 1 AND s.kind = 'replacement'
             AND s.citizen_id = since.citizen_id
             AND s.id >= since.since_row AND s.id < since.ended_row
            WHERE NOT EXISTS (
                SELECT 1 FROM load_history e
                WHERE e.record_id = s.record_id AND e.machine = 'application'
                  AND e.to_state = 'rejected' AND e.id < since.ended_row)
        )
"""
"""The replacement applications of the owner of each found card that ended by ``{event}``
made since the loss, as `found_card._replacement_since_loss` decides it, replayed in the
history's order: the loss is the citizen's latest report not withdrawn before the card's end
(from the submission of the replacement that filed it, if one did), or the card's hand-in if
that was earlier; a replacement counts unless it was rejected before."""

INVARIANTS: dict[str, str] = {
    "more than one open application per citizen": """
        SELECT citizen_id, COUNT(*) AS open_applications FROM idcard_applications
        WHERE state NOT IN ('rejected', 'collected')
        GROUP BY citizen_id HAVING COUNT(*) > 1
    """,
    "more than one active loss report per citizen": """
        SELECT citizen_id, COUNT(*) AS active_reports FROM idcard_loss_reports
        WHERE state = 'reported'
        GROUP BY citizen_id HAVING COUNT(*) > 1
    """,
    "loss report withdrawn while a replacement is in progress": f"""
        SELECT w.record_id AS loss_report, w.id AS withdrawn_row, w.at AS withdrawn_at,
               s.record_id AS replacement, s.id AS submitted_row, s.at AS submitted_at
        FROM load_history w JOIN load_history s ON {IN_PROGRESS.format(at="w")}
        WHERE w.machine = 'loss_report' AND w.event = 'withdraw'
        ORDER BY w.id
    """,
    "found card returned while a replacement is in progress": f"""
        SELECT w.record_id AS found_card, w.id AS returned_row, w.at AS returned_at,
               s.record_id AS replacement, s.id AS submitted_row, s.at AS submitted_at
        FROM load_history w JOIN load_history s ON {IN_PROGRESS.format(at="w")}
        WHERE w.machine = 'found_card' AND w.event = 'return_to_owner'
        ORDER BY w.id
    """,
    "found card returned to a citizen who applied for a replacement since the loss": (
        SINCE_LOSS.format(event="return_to_owner") + "SELECT * FROM matched ORDER BY ended_row"
    ),
    "found card destroyed though no replacement was applied for since the loss": (
        SINCE_LOSS.format(event="destroy")
        + """SELECT d.record_id AS found_card, d.id AS destroyed_row FROM load_history d
        WHERE d.machine = 'found_card' AND d.event = 'destroy'
          AND d.record_id NOT IN (SELECT found_card FROM matched)"""
    ),
    "replacement collected while a loss report stayed active": f"""
        SELECT k.record_id AS replacement, k.id AS collected_row, c.record_id AS loss_report
        FROM load_history k JOIN load_history c
          ON c.machine = 'loss_report' AND c.seq = 1
         AND c.citizen_id = k.citizen_id AND c.id < k.id
        WHERE k.machine = 'application' AND k.event = 'collect' AND k.kind = 'replacement'
          AND NOT EXISTS (
              SELECT 1 FROM load_history x
              WHERE x.record_id = c.record_id AND x.machine = 'loss_report'
                AND x.seq > 1 AND x.id < k.id)
          AND NOT EXISTS (
              SELECT 1 FROM load_history z
              WHERE z.record_id = c.record_id AND z.machine = 'loss_report'
                AND z.event = 'close' AND z.id > k.id AND {NEXT_ROW_OF_CITIZEN})
        ORDER BY k.id
    """,
    "replacement collected with no loss report to close": f"""
        SELECT k.record_id AS replacement, k.id AS collected_row, k.at AS collected_at
        FROM load_history k
        WHERE k.machine = 'application' AND k.event = 'collect' AND k.kind = 'replacement'
          AND NOT EXISTS (
              SELECT 1 FROM load_history z
              WHERE z.machine = 'loss_report' AND z.event = 'close'
                AND z.citizen_id = k.citizen_id AND z.id > k.id AND {NEXT_ROW_OF_CITIZEN})
        ORDER BY k.id
    """,
    "outbox differs from history": """
        SELECT 'history row without its event' AS problem, d.* FROM (
            SELECT machine, record_id, seq, event, to_state AS state FROM idcard_transition_log
            EXCEPT
            SELECT machine, record_id, seq, event, state FROM idcard_outbox
        ) d
        UNION ALL
        SELECT 'event without its history row', o.* FROM (
            SELECT machine, record_id, seq, event, state FROM idcard_outbox
            EXCEPT
            SELECT machine, record_id, seq, event, to_state FROM idcard_transition_log
        ) o
    """,
}
"""Each invariant as a query for the rows that break it."""


def check_invariants(url: str) -> tuple[dict[str, list[Mapping[str, Any]]], dict[str, Any]]:
    """The rows that break each invariant (verification's broken records included), and
    figures about the database for the summary."""
    violations: dict[str, list[Mapping[str, Any]]] = {}
    with wf.Workflow(url) as flow:
        report = flow.verify()
    violations["verify() finds damage"] = [b.model_dump(mode="json") for b in report.broken]
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(HISTORY)
            for statement in HISTORY_INDEXES:
                conn.exec_driver_sql(statement)
            for name, query in INVARIANTS.items():
                violations[name] = [dict(r) for r in conn.execute(sa.text(query)).mappings()]
            figures = database_figures(conn)
            figures["verified"] = {"records": report.records, "rows": report.rows}
            conn.rollback()
    finally:
        engine.dispose()
    return violations, figures


def database_figures(conn: sa.Connection) -> dict[str, Any]:
    """How many records of each machine ended in each state, how many history rows the run
    wrote, and how many rows have an ``at`` earlier than the citizen's row before them."""
    states: dict[str, dict[str, int]] = {}
    for table in ("idcard_applications", "idcard_loss_reports", "idcard_found_cards"):
        counts = conn.execute(sa.text(f"SELECT state, COUNT(*) FROM {table} GROUP BY state"))
        states[table.removeprefix("idcard_")] = {str(s): int(n) for s, n in counts}
    history = conn.execute(
        sa.text(
            "SELECT citizen_id, id, at, machine, event FROM load_history ORDER BY citizen_id, id"
        )
    ).all()
    inversions: list[str] = []
    for before, after in pairwise(history):
        if before[0] == after[0] and after[2] < before[2]:
            inversions.append(f"{before[3]}.{before[4]} then {after[3]}.{after[4]}")
    events = conn.execute(sa.text("SELECT DISTINCT machine, event FROM load_history")).all()
    return {
        "states": states,
        "events": sorted((str(m), str(e)) for m, e in events),
        "history_rows": len(history),
        "at_earlier_than_previous_row": len(inversions),
        "at_inversions_by_pair": dict(Counter(inversions).most_common(8)),
    }


# -- the load ---------------------------------------------------------------------------------


def run_workers(url: str, workers: int, seconds: float, tmp_path: Path) -> list[dict[str, Any]]:
    """Start the workers side by side, wait for each to end on its own, read their summaries."""
    processes = []
    for n in range(workers):
        out = tmp_path / f"worker{n}.json"
        log = (tmp_path / f"worker{n}.log").open("wb")
        command = [
            sys.executable,
            "-m",
            "tests.integration.load_worker",
            url,
            str(20260302 + n),
            str(seconds),
            str(out),
        ]
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        processes.append((process, out, log))
    summaries = []
    try:
        for process, out, log in processes:
            try:
                # A generous bound: a worker still running long after its time is a hang.
                process.wait(timeout=seconds + 120)
            except subprocess.TimeoutExpired:
                pytest.fail(f"a worker still runs {seconds + 120:.0f} s after it started: a hang")
            log.close()
            text = Path(log.name).read_text(errors="replace")
            assert process.returncode == 0 and out.exists(), (
                f"a worker ended with status {process.returncode}: {text[-3000:]}"
            )
            summaries.append(json.loads(out.read_text()))
    finally:
        for process, _, log in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    return summaries


def merge(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"processes": len(summaries)}
    for key in ("commands", "succeeded", "retries_same_request_id", "retries_after_conflict"):
        total[key] = sum(s[key] for s in summaries)
    for key in ("bulk_runs", "bulk_moved"):
        total[key] = sum(s[key] for s in summaries)
    for key in ("tried", "ok", "refused", "unexpected", "bulk_refused"):
        counts: Counter[str] = Counter()
        for s in summaries:
            counts.update(s[key])
        total[key] = dict(sorted(counts.items()))
    total["seconds_per_worker"] = max(s["seconds"] for s in summaries)
    total["samples"] = [line for s in summaries for line in s["samples"]][:10]
    return total


@pytest.mark.slow
def test_the_three_systems_keep_their_rules_under_load(db_url: str, tmp_path: Path) -> None:
    backend = sa.make_url(db_url).get_backend_name()
    started = time.monotonic()
    summaries = run_workers(db_url, WORKERS, SECONDS, tmp_path)
    summary = merge(summaries)
    violations, figures = check_invariants(db_url)
    summary.update(
        database=backend,
        seconds_in_all=round(time.monotonic() - started, 1),
        report_loss_takes_identity_check=summaries[0]["report_loss_takes_identity_check"],
        database_figures=figures,
        violations={name: len(rows) for name, rows in violations.items()},
    )
    path = tmp_path / "load-summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    copy = os.environ.get("IDCARD_LOAD_SUMMARY")
    if copy:
        Path(copy).write_text(path.read_text())
    print("\n" + path.read_text())

    problems = []
    if summary["unexpected"]:
        samples = "\n".join(summary["samples"])
        problems.append(f"errors no caller is told to expect: {summary['unexpected']}\n{samples}")
    for name, rows in violations.items():
        if rows:
            shown = "\n    ".join(json.dumps(r, default=str) for r in rows[:8])
            problems.append(f"{name}: {len(rows)} rows, the first:\n    {shown}")
    assert not problems, "\n".join(problems)

    # The run reached every event of every machine (the reactions' close and withdraw too).
    everything = {(d.name, e) for d in wf.MACHINES for e in (d.creation_event, *d.events)}
    assert everything <= set(figures["events"]), everything - set(figures["events"])
    assert summary["bulk_moved"] > 0, summary


# -- the deterministic race -------------------------------------------------------------------


def report_loss(flow: wf.Workflow, citizen: str, actor: wf.Actor) -> wf.LossReportView:
    """`report_loss` by the holder in person, identity checked (where the library asks)."""
    extra: dict[str, Any] = {}
    if "identity_checked" in inspect.signature(wf.Workflow.report_loss).parameters:
        extra["identity_checked"] = True
    return flow.report_loss(citizen, actor=actor, **extra)


def wait_until_blocked(url: str, thread: threading.Thread) -> None:
    """On PostgreSQL, wait until some connection waits for a lock another holds (the second
    command waiting for the first's transaction); fail if the thread ends without waiting."""
    engine = sa.create_engine(url)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                waiting = conn.execute(
                    sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")
                ).scalar_one()
            if waiting:
                return
            assert thread.is_alive(), "the second command went on without waiting for the first"
            time.sleep(0.02)
        pytest.fail("the second command neither waited for the first nor ended")
    finally:
        engine.dispose()


@pytest.mark.parametrize("first", ["replacement", "loss report"])
def test_a_replacement_racing_a_loss_report_for_one_citizen_is_no_storage_error(
    db_url: str, clock: Clock, first: str
) -> None:
    """A host's uncommitted transaction holds a replacement (which files a loss report) or a
    loss report; a second connection does the other for the same citizen. Once the first
    commits, the second must answer as it would have one after the other: a second report is
    `DuplicateLossReport`, a replacement after a report reuses it. Never `StorageError`."""
    postgres = postgres_url() is not None
    replacement = form(wf.Kind.REPLACEMENT, n=41)
    citizen = replacement.citizen_id
    engine = sa.create_engine(db_url)
    outcome: dict[str, Any] = {}

    def second() -> None:
        with wf.Workflow(db_url, clock=clock) as other:
            try:
                if first == "replacement":
                    outcome["view"] = report_loss(other, citizen, clerk())
                else:
                    outcome["view"] = other.submit(replacement, actor=clerk())
            except Exception as exc:  # reported below
                outcome["error"] = exc

    try:
        with Session(engine) as session:
            host = wf.Workflow(session, clock=clock)
            held: wf.ApplicationView | wf.LossReportView
            if first == "replacement":
                held = host.submit(replacement, actor=clerk())
            else:
                held = report_loss(host, citizen, clerk())
            racing = threading.Thread(target=second)
            racing.start()
            if postgres:
                wait_until_blocked(db_url, racing)
            session.commit()
        racing.join(timeout=60)
        assert not racing.is_alive(), "the second command hangs after the first committed"
    finally:
        engine.dispose()

    with wf.Workflow(db_url, clock=clock) as flow:
        assert flow.verify().broken == []
        assert flow.is_reported_lost(citizen)
    error = outcome.get("error")
    if first == "replacement":
        assert isinstance(error, wf.DuplicateLossReport), outcome
        assert "view" not in outcome
    else:
        assert error is None, outcome
        application = outcome["view"]
        assert application.kind == wf.Kind.REPLACEMENT and application.state == "submitted"
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT id, application_id, state FROM idcard_loss_reports "
                    "WHERE citizen_id = :c"
                ),
                {"c": citizen},
            ).all()
    finally:
        engine.dispose()
    # One report, active: the replacement's own, or the one the replacement reused.
    assert [str(r.state) for r in rows] == ["reported"], rows
    if first == "loss report":
        assert uuid.UUID(str(rows[0].id)) == held.id and rows[0].application_id is None, rows
