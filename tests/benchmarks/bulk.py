"""`Workflow.fire_many` in chunks of 1,000 against the set-based floor, interleaved.

The bulk floor runs the library's writes per chunk of 1,000 in one transaction through the
driver: the statements `Repository.writes` gives for the chunk's moves, which is what
`fire_many` sends after its locking read. On SQLite that is ``executemany`` of the
compare-and-set UPDATE and of the history INSERT; on PostgreSQL one UPDATE and one INSERT for
the whole chunk, each parameter an array (``unnest``).
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


def plan_floor(
    floor: Floor, apps: Sequence[tuple[Any, str]], events: Sequence[str], chunk: int
) -> list[tuple[int, list[Any]]]:
    """Each chunk's transitions and statements, in the driver's terms, before the clock
    starts."""
    plans = []
    for steps in floor.moves(apps, events):
        for first in range(0, len(steps), chunk):
            part = steps[first : first + chunk]
            plans.append((len(part), floor.sent([m for m, _ in part], [r for _, r in part])))
    return plans


def run_floor(floor: Floor, plans: list[tuple[int, list[Any]]]) -> int:
    done = 0
    for count, statements in plans:
        floor.transaction(statements)
        done += count
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
            plans = plan_floor(floor, floor_apps, events, chunk)
            timings: dict[str, float] = {}
            cpu: dict[str, float] = {}
            order = ("library", "floor") if number % 2 == 0 else ("floor", "library")
            for who in order:
                start, started = time.perf_counter(), time.thread_time()
                if who == "library":
                    done = run_library(flow, library_ids, events, chunk)
                else:
                    done = run_floor(floor, plans)
                timings[who] = time.perf_counter() - start
                cpu[who] = time.thread_time() - started
                assert done == per_round, (who, done)
            if number < warmup:
                continue
            record_round(
                results,
                timings,
                per_round,
                order[0],
                rounds=rounds,
                label="fire_many",
                log=log,
                cpu=cpu,
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
        "verified_records": report.records,
        "library_tps": summary([r["library_tps"] for r in results]),
        "floor_tps": summary([r["floor_tps"] for r in results]),
        "ratio": summary([r["ratio"] for r in results]),
        "library_cpu_us": summary([r["library_cpu_us"] for r in results]),
        "floor_cpu_us": summary([r["floor_cpu_us"] for r in results]),
        "per_round": results,
    }
