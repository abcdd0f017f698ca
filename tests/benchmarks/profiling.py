"""cProfiles of the library's command paths: where the time above the floor goes.

Single commands (the four of the single-command benchmark over fresh applications) and
``fire_many`` (chunks of 1,000), on any database. Each function's own time is put in a group
by where its code lives; on PostgreSQL the time psycopg spends waiting for the server's answer
is a group of its own (the server's work, and the round trips).
"""

from __future__ import annotations

import cProfile
import io
import pstats
from collections.abc import Callable
from pathlib import Path
from typing import Any

import workflow as wf

from . import data
from .bulk import run_library as run_bulk
from .common import Database
from .single import Applications, run_library

WAITING = "waiting for the server (psycopg)"
GROUPS = (
    ("sqlite3 / psycopg (the driver, and the database inside it)", ("'sqlite3.", "psycopg")),
    ("SQLAlchemy", ("sqlalchemy",)),
    ("pydantic (views, validation)", ("pydantic",)),
    ("hash chain (canonical JSON + sha256)", ("json/encoder", "hashlib", "sha256", "chain.py")),
    ("workflow / models (the library's own code)", ("/workflow/", "/models/")),
)
OTHER = "other (stdlib: uuid, datetime, logging, …)"


def profile_single(db: Database, *, apps: int, out: Path) -> dict[str, Any]:
    """Profile ``apps`` x 4 single commands; write the report to ``out``; return a summary
    (seconds per command, and the share of time by group of functions)."""

    def run(flow: wf.Workflow, batch: list[tuple[Any, str]]) -> None:
        run_library(flow, batch, data.SINGLE_PATH)

    return _profile(
        db, apps, out, run, "single commands (transmit, approve, produce, mark_ready)", start=0
    )


def profile_bulk(db: Database, *, apps: int, out: Path) -> dict[str, Any]:
    """Profile ``fire_many`` of the four events over ``apps`` applications, chunks of 1,000."""

    def run(flow: wf.Workflow, batch: list[tuple[Any, str]]) -> None:
        run_bulk(flow, [a for a, _ in batch], data.SINGLE_PATH, 1000)

    return _profile(
        db, apps, out, run, "transitions by fire_many (chunks of 1,000)", start=10_000_000
    )


def _profile(
    db: Database,
    apps: int,
    out: Path,
    run: Callable[[wf.Workflow, list[tuple[Any, str]]], None],
    what: str,
    *,
    start: int,
) -> dict[str, Any]:
    engine = db.engine()
    flow = wf.Workflow(engine)
    source = Applications(db, start=start)
    try:
        run(flow, source.fresh(min(apps, 1000)))  # warm up
        batch = source.fresh(apps)
        profiler = cProfile.Profile()
        profiler.enable()
        run(flow, batch)
        profiler.disable()
    finally:
        source.close()
        flow.close()
        engine.dispose()
    commands = apps * len(data.SINGLE_PATH)
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    groups: dict[str, float] = {WAITING: 0.0, **{name: 0.0 for name, _ in GROUPS}}
    groups[OTHER] = 0.0
    for (filename, line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        label = f"{filename}:{line}({function})" if line else function
        if "psycopg" in label and (function == "wait" or "wait_c" in label):
            groups[WAITING] += row[2]
            continue
        for name, needles in GROUPS:
            if any(n in label for n in needles):
                groups[name] += row[2]
                break
        else:
            groups[OTHER] += row[2]
    text = io.StringIO()
    text.write(f"{commands} {what}\n")
    text.write(f"total {total:.3f} s of own time in profiled functions; by group:\n")
    for name, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        text.write(f"  {seconds / total:6.1%}  {name}\n")
    for key in ("tottime", "cumulative"):
        text.write(f"\n=== top 40 by {key} ===\n")
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(key).print_stats(40)
    out.write_text(text.getvalue())
    top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:15]  # type: ignore[attr-defined]
    return {
        "what": what,
        "commands": commands,
        "profiled_seconds_per_command": total / commands,
        "groups": {name: seconds / total for name, seconds in groups.items() if seconds},
        "top_tottime": [
            {
                "function": f"{Path(f).name}:{line}({fn})",
                "calls": row[1],
                "tottime_us_per_command": row[2] / commands * 1e6,
                "cumtime_us_per_command": row[3] / commands * 1e6,
            }
            for (f, line, fn), row in top
        ],
        "report": str(out),
    }
