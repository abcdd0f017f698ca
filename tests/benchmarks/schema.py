"""The schema's own cost: the floor through the triggers against the same writes on a copy of
the tables without them, interleaved round by round.

The copy (``bare_applications``, ``bare_transition_log``) has the tables' columns, keys,
CHECK constraints and indexes, partial ones included, and nothing else: no trigger, no foreign
key (on SQLite its connection runs with foreign keys off) and so no outbox row, which only a
trigger writes. Both run the library's write statements (`Repository.writes`) through the
driver, the bare one with the tables renamed: per transition (one transaction each, as a
single command writes) and per chunk of 1,000 (as ``fire_many`` writes).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from .bulk import plan_floor, run_floor
from .common import Database, record_round, summary
from .single import Applications, Floor

TABLES = {
    "idcard_applications": "bare_applications",
    "idcard_transition_log": "bare_transition_log",
}


class BareFloor(Floor):
    """The floor's statements on the trigger-less copy of the tables."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        if db.sqlite:
            self.cur.execute("PRAGMA foreign_keys = OFF")

    def sent(self, moves: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> Any:
        return [(_bare(sql), *rest) for sql, *rest in super().sent(moves, rows)]


def _bare(sql: str) -> str:
    for table, copy in TABLES.items():
        sql = sql.replace(table, copy)
    return sql


def make_bare_tables(db: Database) -> None:
    """Create the copy of the tables, empty, with their keys, checks and indexes."""
    conn = db.connect()
    try:
        if not db.sqlite:
            for table, copy in TABLES.items():
                conn.execute(f"CREATE TABLE {copy} (LIKE {table} INCLUDING ALL)")
            return
        rows = conn.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name IN (?, ?) AND type IN ('table', "
            "'index') AND sql IS NOT NULL ORDER BY type DESC",
            tuple(TABLES),
        ).fetchall()
        for (sql,) in rows:
            for table in TABLES:
                sql = sql.replace(f'"{table}"', table)
            conn.execute(_bare(sql).replace("INDEX idcard_", "INDEX bare_"))
    finally:
        conn.close()


def copy_to_bare(db: Database, ids: Sequence[uuid.UUID]) -> None:
    """Copy these applications and their history rows into the bare tables."""
    conn = db.connect(durable=False)
    mark = "?" if db.sqlite else "%s"
    values = [i.hex if db.sqlite else i for i in ids]
    try:
        cur = conn.cursor()
        for table, copy in TABLES.items():
            key = "id" if table == "idcard_applications" else "record_id"
            cur.executemany(
                f"INSERT INTO {copy} SELECT * FROM {table} WHERE {key} = {mark}",
                [(v,) for v in values],
            )
    finally:
        conn.close()


def bench_schema(
    db: Database,
    *,
    apps_per_round: int,
    bulk_apps_per_round: int,
    rounds: int,
    warmup: int = 1,
    events: Sequence[str] = ("transmit", "approve", "produce", "mark_ready"),
    chunk: int = 1000,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``rounds`` rounds of the floor through the triggers and on the bare tables, per
    transition and per chunk, alternating which goes first."""
    make_bare_tables(db)
    floor, bare = Floor(db), BareFloor(db)
    source = Applications(db)
    single: list[dict[str, Any]] = []
    bulk: list[dict[str, Any]] = []
    try:
        for number in range(warmup + rounds):
            for kind, count, results in (
                ("single", apps_per_round, single),
                ("bulk", bulk_apps_per_round, bulk),
            ):
                plans = {}
                for who, target in (("floor", floor), ("bare", bare)):
                    apps = source.fresh(count)
                    if who == "bare":
                        copy_to_bare(db, [a for a, _ in apps])
                    if kind == "single":
                        plans[who] = [(1, t) for event in target.plan(apps, events) for t in event]
                    else:
                        plans[who] = plan_floor(target, apps, events, chunk)
                timings: dict[str, float] = {}
                order = ("floor", "bare") if number % 2 == 0 else ("bare", "floor")
                for who in order:
                    target = floor if who == "floor" else bare
                    start = time.perf_counter()
                    done = run_floor(target, plans[who])
                    timings[who] = time.perf_counter() - start
                    assert done == count * len(events), (who, done)
                if number < warmup:
                    continue
                record_round(
                    results,
                    {"library": timings["floor"], "floor": timings["bare"]},
                    count * len(events),
                    order[0],
                    rounds=rounds,
                    label=f"{kind}: through the triggers",
                    log=log,
                    against="bare",
                )
    finally:
        source.close()
        floor.close()
        bare.close()
    return {
        "revision": _revision(db),
        "rounds": rounds,
        "transitions_per_round": apps_per_round * len(events),
        "bulk_transitions_per_round": bulk_apps_per_round * len(events),
        "chunk": chunk,
        **{
            f"{kind}_{name}": summary([r[key] for r in results])
            for kind, results in (("single", single), ("bulk", bulk))
            for name, key in (
                ("schema_tps", "library_tps"),
                ("bare_tps", "floor_tps"),
                ("ratio", "ratio"),
            )
        },
        "per_round": {"single": single, "bulk": bulk},
    }


def _revision(db: Database) -> str:
    conn = db.connect()
    try:
        row = conn.execute("SELECT version_num FROM idcard_alembic_version").fetchone()
        return str(row[0]) if row else "?"
    finally:
        conn.close()
