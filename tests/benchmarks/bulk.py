"""`Workflow.fire_many` in chunks of 1,000 against the set-based floor, interleaved.

The bulk floor runs the same writes per chunk of 1,000 in one transaction through the driver:
``executemany`` of the compare-and-set UPDATE and of the history INSERT (and of the outbox
INSERT when the schema does not write it itself).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import workflow as wf

from . import data
from .common import Database, record_round, summary
from .single import Applications, Floor, actor

CHUNK = 1000


def run_library(flow: wf.Workflow, ids: Sequence[Any], events: Sequence[str], chunk: int) -> int:
    done = 0
    for event in events:
        report = flow.fire_many(ids, event, actor=actor(event), chunk_size=chunk)
        if report.refused:
            raise RuntimeError(f"fire_many refused {len(report.refused)}: {report.refused[0]}")
        done += len(report.succeeded)
    return done


def run_floor(floor: Floor, plans: list[list[tuple[Any, ...]]], chunk: int) -> int:
    cur, begin = floor.cur, floor.begin
    done = 0
    for steps in plans:
        for first in range(0, len(steps), chunk):
            part = steps[first : first + chunk]
            cur.execute(begin)
            statement = part[0][0]
            cur.executemany(statement, [s[1] for s in part])
            cur.executemany(floor.append, [s[2] for s in part])
            if part[0][3] is not None:
                cur.executemany(floor.outbox, [s[3] for s in part])
            cur.execute("COMMIT")
            done += len(part)
    return done


def bench_bulk(
    db: Database,
    *,
    apps_per_round: int,
    rounds: int,
    warmup: int = 1,
    events: Sequence[str] = data.SINGLE_PATH,
    chunk: int = CHUNK,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Like `bench_single`, with ``fire_many`` sweeping each event over the round's
    applications in chunks of ``chunk``."""
    engine = db.engine()
    flow = wf.Workflow(engine)
    floor = Floor(db)
    source = Applications(db)
    per_round = apps_per_round * len(events)
    results: list[dict[str, Any]] = []
    try:
        for number in range(warmup + rounds):
            library_ids = [app_id for app_id, _ in source.fresh(apps_per_round)]
            floor_apps = source.fresh(apps_per_round)
            plans = floor.plan(floor_apps, events)
            timings: dict[str, float] = {}
            order = ("library", "floor") if number % 2 == 0 else ("floor", "library")
            for who in order:
                start = time.perf_counter()
                if who == "library":
                    done = run_library(flow, library_ids, events, chunk)
                else:
                    done = run_floor(floor, plans, chunk)
                timings[who] = time.perf_counter() - start
                assert done == per_round, (who, done)
            if number < warmup:
                continue
            record_round(
                results, timings, per_round, order[0], rounds=rounds, label="fire_many", log=log
            )
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
        "chunk": chunk,
        "rounds": rounds,
        "events": list(events),
        "floor_writes_outbox": floor.publish,
        "verified_records": report.records,
        "library_tps": summary([r["library_tps"] for r in results]),
        "floor_tps": summary([r["floor_tps"] for r in results]),
        "ratio": summary([r["ratio"] for r in results]),
        "per_round": results,
    }
