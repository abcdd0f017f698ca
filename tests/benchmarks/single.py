"""Single commands through the public API against the floor, interleaved round by round.

The floor is the library's own writes issued directly through the driver, one transaction
each: the statements `Repository.writes` gives for the move (the very SQL the command path
sends, with its parameters converted as the library converts them, all before the clock
starts). On SQLite that is ``BEGIN IMMEDIATE``, the compare-and-set UPDATE of the application
(state, version + 1, chain head and the event's own columns, guarded by id, version and state)
with its row count checked, the INSERT of the history row, and COMMIT. On PostgreSQL it is
``BEGIN``, one statement that makes the update and, if it changed the row, the insert, and
COMMIT. Both go through the schema's triggers. The library's commands each read the
application first and return its `ApplicationView`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import workflow as wf
from workflow.machines.application import REPOSITORY

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

    def __init__(self, db: Database, *, start: int = 0) -> None:
        self.db = db
        self.next = start
        """The number of the next application (each number is its own citizen)."""
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


Plan = list[list[list[tuple[str, Any, int | None, bool]]]]
"""Per event, per application: the statements of its transaction, each ``(SQL, the driver's
parameters, the rows it must change or None, executemany)``."""


class Floor:
    """The library's writes, straight through the driver."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.conn = db.connect(durable=True)
        self.cur = self.conn.cursor()
        self.begin = "BEGIN IMMEDIATE" if db.sqlite else "BEGIN"
        engine = db.engine()
        self.dialect = engine.dialect
        engine.dispose()

    def moves(
        self, apps: Sequence[tuple[uuid.UUID, str]], events: Sequence[str]
    ) -> list[list[tuple[dict[str, Any], dict[str, Any]]]]:
        """For each event, for each application: the move and its history row, as the
        library's decision step makes them (hash chain included)."""
        heads = {app_id: head for app_id, head in apps}
        plans = []
        at = datetime.now(UTC)
        for seq, event in enumerate(events, start=2):
            steps = []
            source, target, who, _ = data.EVENTS[event]
            for app_id, _head in apps:
                details, effects = data.step_changes(event, at)
                row = data.entry(
                    app_id, seq, event, source, target, who, at, details, heads[app_id]
                )
                heads[app_id] = row["hash"]
                changes = {"chain_head": row["hash"]}
                if effects["review_due_at"] is not None:
                    changes["review_due_at"] = effects["review_due_at"]
                move = {
                    "record_id": app_id,
                    "version": seq - 1,
                    "state": source,
                    "new_state": target,
                    "changes": changes,
                }
                steps.append((move, row))
            plans.append(steps)
        return plans

    def sent(
        self, moves: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]
    ) -> list[tuple[str, Any, int | None, bool]]:
        """The statements the library sends to make these moves, in the driver's terms."""
        writes = REPOSITORY.writes(self.dialect.name, moves, rows)
        return [(*w.sent(self.dialect), w.changes, w.many) for w in writes]

    def plan(self, apps: Sequence[tuple[uuid.UUID, str]], events: Sequence[str]) -> Plan:
        """Every transaction's statements, computed before the clock starts (the floor
        measures the database, not Python)."""
        return [
            [self.sent([move], [row]) for move, row in steps] for steps in self.moves(apps, events)
        ]

    def transaction(self, statements: Sequence[tuple[str, Any, int | None, bool]]) -> None:
        """One transaction of these statements, each with its row count checked."""
        cur = self.cur
        cur.execute(self.begin)
        for sql, params, changes, many in statements:
            if many:
                cur.executemany(sql, params)
            else:
                cur.execute(sql, params)
            if changes is not None and cur.rowcount != changes:
                raise RuntimeError("floor: compare-and-set missed")
        cur.execute("COMMIT")

    def run(self, plans: Plan) -> int:
        done = 0
        for steps in plans:
            for statements in steps:
                self.transaction(statements)
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
            cpu: dict[str, float] = {}
            order = ("library", "floor") if number % 2 == 0 else ("floor", "library")
            for who in order:
                start, started = time.perf_counter(), time.thread_time()
                if who == "library":
                    done = run_library(flow, library_apps, events)
                else:
                    done = floor.run(plans)
                timings[who] = time.perf_counter() - start
                cpu[who] = time.thread_time() - started
                assert done == per_round
            if number < warmup:
                continue
            record_round(
                results,
                timings,
                per_round,
                order[0],
                rounds=rounds,
                label="library",
                log=log,
                cpu=cpu,
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
        "library_statements_per_command": statements,
        "verified_records": report.records,
        "library_tps": summary([r["library_tps"] for r in results]),
        "floor_tps": summary([r["floor_tps"] for r in results]),
        "ratio": summary([r["ratio"] for r in results]),
        "library_cpu_us": summary([r["library_cpu_us"] for r in results]),
        "floor_cpu_us": summary([r["floor_cpu_us"] for r in results]),
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
