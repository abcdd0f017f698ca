"""Single commands through the public API against the floor, interleaved round by round.

The floor is the same writes issued directly through the driver, one transaction each:
``BEGIN IMMEDIATE`` (SQLite) or ``BEGIN`` (PostgreSQL), the compare-and-set UPDATE of the
application (state, version + 1, chain head and the event's own columns, guarded by id, version
and state), the INSERT of the history row with the same column values the library writes
(hash chain included, computed beforehand), and COMMIT. Both go through the schema's triggers.
If the schema does not write the outbox row itself, the floor inserts it too, as the library
then does. The library's commands each return their `ApplicationView`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import workflow as wf

from . import data
from .common import Database, record_round, summary

ACTORS = {
    "transmit": data.CLERK,
    "approve": data.REVIEWER,
    "produce": data.PRODUCER,
    "mark_ready": data.CLERK,
    "collect": data.CLERK,
    "reject": data.REVIEWER,
}


def actor(event: str) -> wf.Actor:
    actor_id, role, unit = ACTORS[event]
    return wf.Actor(id=actor_id, role=role, unit=unit)


class Applications:
    """Fresh submitted applications for a database, numbered so that none collide."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.next = 0
        self.conn = db.connect(durable=False)

    def fresh(self, count: int) -> list[tuple[uuid.UUID, str]]:
        """``count`` new applications in ``submitted``: ``(id, chain head)`` each."""
        now = datetime.now(UTC)
        batch = data.build(
            self.next,
            count,
            sqlite=self.db.sqlite,
            salt=1,
            final_state=lambda n: "submitted",
            submitted_at=lambda n: now,
        )
        self.next += count
        data.write(self.db, self.conn, batch)
        return [(uuid.UUID(hex=str(a[0])) if self.db.sqlite else a[0], a[18]) for a in batch.apps]

    def close(self) -> None:
        self.conn.close()


class Floor:
    """The same writes as the library's commands, straight through the driver."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.conn = db.connect(durable=True)
        self.cur = self.conn.cursor()
        self.begin = "BEGIN IMMEDIATE" if db.sqlite else "BEGIN"
        mark = "?" if db.sqlite else "%s"
        self.publish = not db.publishes_log()
        self.move = {
            extra: (
                f"UPDATE idcard_applications SET state = {mark}, version = version + 1, "
                f"chain_head = {mark}{extra} "
                f"WHERE id = {mark} AND version = {mark} AND state = {mark}"
            )
            for extra in ("", f", review_due_at = {mark}")
        }
        self.append = data.insert_sql(db.sqlite, "idcard_transition_log", data.LOG_COLUMNS)
        self.outbox = data.insert_sql(
            db.sqlite, "outbox", ("machine", "record_id", "seq", "event", "state", "at")
        )

    def plan(
        self, apps: Sequence[tuple[uuid.UUID, str]], events: Sequence[str]
    ) -> list[list[tuple[str, tuple[Any, ...], tuple[Any, ...], tuple[Any, ...] | None]]]:
        """For each event, for each application: the statements' parameters, computed before
        the clock starts (the floor measures the database, not Python)."""
        sqlite = self.db.sqlite
        ts: Callable[[datetime | None], Any] = data.sqlite_time if sqlite else (lambda t: t)
        heads = {app_id: head for app_id, head in apps}
        plans = []
        at = datetime.now(UTC)
        for seq, event in enumerate(events, start=2):
            steps = []
            source, target, who, _ = data.EVENTS[event]
            for app_id, _head in apps:
                details, changes = data.step_changes(event, at)
                row = data.entry(
                    app_id, seq, event, source, target, who, at, details, heads[app_id]
                )
                heads[app_id] = row["hash"]
                rid = app_id.hex if sqlite else app_id
                extra: tuple[Any, ...] = ()
                statement = self.move[""]
                if changes["review_due_at"] is not None:
                    extra = (ts(changes["review_due_at"]),)
                    statement = self.move[next(k for k in self.move if k)]
                move = (target, row["hash"], *extra, rid, seq - 1, source)
                log = data._log_tuple(row, rid, ts)
                outbox = (data.MACHINE, rid, seq, event, target, ts(at)) if self.publish else None
                steps.append((statement, move, log, outbox))
            plans.append(steps)
        return plans

    def run(self, plans: list[list[tuple[str, tuple[Any, ...], tuple[Any, ...], Any]]]) -> int:
        cur, begin, append, outbox_sql = self.cur, self.begin, self.append, self.outbox
        done = 0
        for steps in plans:
            for statement, move, log, outbox in steps:
                cur.execute(begin)
                cur.execute(statement, move)
                if cur.rowcount != 1:
                    raise RuntimeError("floor: compare-and-set missed")
                cur.execute(append, log)
                if outbox is not None:
                    cur.execute(outbox_sql, outbox)
                cur.execute("COMMIT")
                done += 1
        return done

    def close(self) -> None:
        self.conn.close()


def run_library(
    flow: wf.Workflow, apps: Sequence[tuple[uuid.UUID, str]], events: Sequence[str]
) -> int:
    done = 0
    for event in events:
        command = getattr(flow, event)
        who = actor(event)
        for app_id, _ in apps:
            view = command(app_id, actor=who)
            done += 1
        assert view.state == data.EVENTS[event][1]
    return done


def bench_single(
    db: Database,
    *,
    apps_per_round: int,
    rounds: int,
    warmup: int = 1,
    events: Sequence[str] = data.SINGLE_PATH,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``rounds`` rounds (after ``warmup`` unrecorded ones) of library and floor, alternating
    which goes first; each runs ``events`` over ``apps_per_round`` fresh applications."""
    engine = db.engine()
    flow = wf.Workflow(engine)
    floor = Floor(db)
    source = Applications(db)
    per_round = apps_per_round * len(events)
    results: list[dict[str, float]] = []
    try:
        for number in range(warmup + rounds):
            library_apps = source.fresh(apps_per_round)
            floor_apps = source.fresh(apps_per_round)
            plans = floor.plan(floor_apps, events)
            timings: dict[str, float] = {}
            order = ("library", "floor") if number % 2 == 0 else ("floor", "library")
            for who in order:
                start = time.perf_counter()
                if who == "library":
                    done = run_library(flow, library_apps, events)
                else:
                    done = floor.run(plans)
                timings[who] = time.perf_counter() - start
                assert done == per_round
            if number < warmup:
                continue
            record_round(
                results, timings, per_round, order[0], rounds=rounds, label="library", log=log
            )
        statements = count_statements(engine, flow, source)
        report = flow.verify()
        if not report.ok:
            raise RuntimeError(f"verify found damage after the benchmark: {report.broken[:3]}")
    finally:
        source.close()
        floor.close()
        flow.close()
        engine.dispose()
    return {
        "apps_per_round": apps_per_round,
        "transitions_per_round": per_round,
        "rounds": rounds,
        "events": list(events),
        "floor_writes_outbox": floor.publish,
        "library_statements_per_command": statements,
        "verified_records": report.records,
        "library_tps": summary([r["library_tps"] for r in results]),
        "floor_tps": summary([r["floor_tps"] for r in results]),
        "ratio": summary([r["ratio"] for r in results]),
        "per_round": results,
    }


def count_statements(engine: Any, flow: wf.Workflow, source: Applications) -> list[str]:
    """The statements the driver receives for one library command (a transmit)."""
    import sqlalchemy as sa

    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split())[:60])

    ((app_id, _),) = source.fresh(1)
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        flow.transmit(app_id, actor=actor("transmit"))
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    return [*seen, "(commit)"]
