"""A cProfile of the library's single-command path: where the time above the floor goes."""

from __future__ import annotations

import cProfile
import io
import pstats
from pathlib import Path
from typing import Any

import workflow as wf

from . import data
from .common import Database
from .single import Applications, run_library

GROUPS = (
    ("sqlite3 / psycopg (the driver, and the database inside it)", ("'sqlite3.", "psycopg")),
    ("SQLAlchemy", ("sqlalchemy",)),
    ("pydantic (views, validation)", ("pydantic",)),
    ("hash chain (json + sha256)", ("json", "hashlib", "_sha256", "sha256")),
    ("workflow / models (the library's own code)", ("/workflow/", "/models/")),
)


def profile_single(db: Database, *, apps: int, out: Path) -> dict[str, Any]:
    """Profile ``apps`` x 4 single commands; write the report to ``out``; return a summary
    (seconds per command, and the share of time by group of functions)."""
    engine = db.engine()
    flow = wf.Workflow(engine)
    source = Applications(db)
    try:
        run_library(flow, source.fresh(50), data.SINGLE_PATH)  # warm up
        batch = source.fresh(apps)
        profiler = cProfile.Profile()
        profiler.enable()
        run_library(flow, batch, data.SINGLE_PATH)
        profiler.disable()
    finally:
        source.close()
        flow.close()
        engine.dispose()
    commands = apps * len(data.SINGLE_PATH)
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    groups: dict[str, float] = {name: 0.0 for name, _ in GROUPS}
    groups["other (stdlib: uuid, datetime, logging, …)"] = 0.0
    for (filename, line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        label = f"{filename}:{line}({function})" if line else function
        for name, needles in GROUPS:
            if any(n in label for n in needles):
                groups[name] += row[2]
                break
        else:
            groups["other (stdlib: uuid, datetime, logging, …)"] += row[2]
    text = io.StringIO()
    text.write(f"{commands} single commands (transmit, approve, produce, mark_ready)\n")
    text.write(f"total {total:.3f} s of own time in profiled functions; by group:\n")
    for name, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        text.write(f"  {seconds / total:6.1%}  {name}\n")
    for key in ("tottime", "cumulative"):
        text.write(f"\n=== top 30 by {key} ===\n")
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(key).print_stats(30)
    out.write_text(text.getvalue())
    top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:15]  # type: ignore[attr-defined]
    return {
        "commands": commands,
        "profiled_seconds_per_command": total / commands,
        "groups": {name: seconds / total for name, seconds in groups.items()},
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
