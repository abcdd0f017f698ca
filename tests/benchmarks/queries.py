"""The overdue queries at growing table sizes, and `verify()` over the whole database.

One database grows through the sizes (10k, 100k, 1M applications in the benchmark's mix of
states, submitted over the 120 days before ``AS_OF``, each with its valid history). At each
size: the median of many calls of ``overdue(AS_OF, limit=100)`` and ``overdue_reviews(...)``
through the library, the same SQL through the driver (the floor), and the query plan. At the
sizes chosen for it, `verify()` runs in a fresh process that reports its time and peak RSS.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import workflow as wf

from . import data
from .common import ROOT, Database, summary

AS_OF = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SPREAD_SECONDS = 120 * 86_400


def submitted_at(n: int) -> datetime:
    """Submission times spread over the 120 days before `AS_OF` (about half are overdue)."""
    return AS_OF - timedelta(seconds=(n * 104_729) % SPREAD_SECONDS, microseconds=n % 997)


def _median_ms(call: Callable[[], Any], calls: int) -> tuple[float, float, float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times), max(times)


def captured(engine: sa.Engine, call: Callable[[], Any]) -> tuple[str, Any]:
    """The SELECT the library sends to the driver during ``call``, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    return seen[-1]


def plan(db: Database, statement: str, parameters: Any) -> list[str]:
    conn = db.connect()
    try:
        if db.sqlite:
            rows = conn.execute("EXPLAIN QUERY PLAN " + statement, parameters).fetchall()
            return [str(r[-1]) for r in rows]
        cur = conn.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, parameters)
        return [str(r[0]) for r in cur.fetchall()]
    finally:
        conn.close()


def _index_line(lines: Sequence[str]) -> str:
    for line in lines:
        if "INDEX" in line.upper() or "SCAN" in line.upper():
            return line.strip()[:90]
    return lines[0].strip()[:90] if lines else "?"


def bench_queries(
    db: Database,
    *,
    sizes: Sequence[int],
    verify_sizes: Sequence[int],
    calls: int,
    verify_workers: Sequence[int] = (1,),
    verify_rounds: int = 1,
    verify_baseline: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    engine = db.engine()
    flow = wf.Workflow(engine)
    written = 0
    overdue: list[dict[str, Any]] = []
    verifies: list[dict[str, Any]] = []
    try:
        for size in sizes:
            start = time.perf_counter()
            data.populate(
                db,
                size - written,
                start=written,
                final_state=data.mixed_state,
                submitted_at=submitted_at,
                batch_size=20_000,
            )
            if not db.sqlite:
                conn = db.connect()
                conn.execute("VACUUM ANALYZE")
                conn.close()
            written = size
            log(f"  {size:,} applications written in {time.perf_counter() - start:.0f} s")
            row: dict[str, Any] = {"applications": size}
            for name in ("overdue", "overdue_reviews"):
                method = getattr(flow, name)
                result = method(AS_OF, limit=100)
                if len(result) != 100:
                    raise RuntimeError(f"{name} returned {len(result)} rows, expected 100")
                statement, parameters = captured(engine, lambda m=method: m(AS_OF, limit=100))
                library = _median_ms(lambda m=method: m(AS_OF, limit=100), calls)
                library10 = _median_ms(lambda m=method: m(AS_OF, limit=10), calls)
                floor_conn = db.connect()
                try:
                    cur = floor_conn.cursor()

                    def raw(cur: Any = cur, s: str = statement, p: Any = parameters) -> None:
                        cur.execute(s, p)
                        assert len(cur.fetchall()) == 100

                    floor = _median_ms(raw, calls)
                finally:
                    floor_conn.close()
                row[name] = {
                    "library_ms": library,
                    "library_limit10_ms": library10,
                    "driver_ms": floor,
                    "plan": plan(db, statement, parameters),
                    "sql": " ".join(statement.split()),
                }
                log(
                    f"  {name} at {size:,}: library {library[0]:.3f} ms (median; limit=10: "
                    f"{library10[0]:.3f} ms), "
                    f"SQL alone {floor[0]:.3f} ms; plan: {_index_line(row[name]['plan'])}"
                )
            overdue.append(row)
            if size in verify_sizes:
                variants = library_variants(db.url, verify_workers, verify_baseline)
                found = bench_verify(variants, rounds=verify_rounds, log=log)
                verifies.append({"applications": size, **found})
    finally:
        flow.close()
        engine.dispose()
    return {"calls": calls, "as_of": AS_OF.isoformat(), "overdue": overdue, "verify": verifies}


@dataclass(frozen=True)
class Variant:
    """One way of running `verify()`, timed in a fresh process by `verify_child.py`."""

    name: str
    """What it stands for in the tables ("baseline", "library", ...)."""
    python: str
    """The interpreter: its installed `workflow` is the library measured."""
    workers: int
    url: str
    checkpoint: str | None = None
    """A checkpoint file: ``verify(since=...)``."""
    library: str = str(ROOT)
    """The checkout whose `workflow` the interpreter must import (checked in every run)."""
    database: str = ""
    """What the database holds, when variants run on several."""

    @property
    def label(self) -> str:
        since = "full verify" if self.checkpoint is None else "verify --since"
        where = f", {self.database}" if self.database else ""
        return f"{self.name}, {since}, workers={self.workers}{where}"


def library_variants(url: str, workers: Sequence[int], baseline: Path | None) -> list[Variant]:
    """The baseline's verify (one process, when ``baseline`` names its checkout), then this
    checkout's with each number of ``workers``."""
    found = []
    if baseline is not None:
        python = baseline / ".venv" / "bin" / "python"
        found.append(Variant("baseline", str(python), 1, url, library=str(baseline.resolve())))
    found += [Variant("library", sys.executable, w, url) for w in workers]
    return found


def bench_verify(
    variants: Sequence[Variant],
    *,
    rounds: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Each variant once per round, each run in a fresh process, in turns: every round in the
    opposite order to the one before. Medians per variant, and each round's ratio of the first
    variant's time (the reference: the baseline, when there is one) to the variant's."""
    runs: list[dict[str, Any]] = []
    for number in range(rounds):
        order = list(variants) if number % 2 == 0 else list(reversed(variants))
        for variant in order:
            result = verify_in_child(variant)
            result.update(
                round=number + 1,
                variant=variant.label,
                loadavg=_loadavg(),
            )
            runs.append(result)
            log(
                f"  {variant.label} (round {number + 1}/{rounds}): {result['seconds']:.1f} s "
                f"(CPU {result['cpu_seconds']:.1f} s), {result['records']:,} records, "
                f"{result['rows']:,} rows, peak RSS {result['peak_rss_kib'] / 1024:.0f} MiB "
                f"+ workers {result['workers_peak_rss_kib'] / 1024:.0f} MiB, "
                f"ok={result['ok']}, load {result['loadavg']}"
            )
    reference = variants[0].label
    summaries = []
    for variant in variants:
        mine = [r for r in runs if r["variant"] == variant.label]
        ratios = [
            base["seconds"] / r["seconds"]
            for r in mine
            for base in runs
            if base["variant"] == reference and base["round"] == r["round"]
        ]
        summaries.append(
            {
                "variant": variant.label,
                "name": variant.name,
                "workers": variant.workers,
                "since": variant.checkpoint is not None,
                "database": variant.database,
                "url": _shown(variant.url),
                "seconds": summary([r["seconds"] for r in mine]),
                "cpu_seconds": summary([r["cpu_seconds"] for r in mine]),
                "speedup": summary(ratios),
                "rss_before_kib": max(r["rss_before_kib"] for r in mine),
                "peak_rss_kib": max(r["peak_rss_kib"] for r in mine),
                "workers_peak_rss_kib": max(r["workers_peak_rss_kib"] for r in mine),
                "worker_peak_rss_kib": max(r["worker_peak_rss_kib"] for r in mine),
                "records": mine[0]["records"],
                "rows": mine[0]["rows"],
                "changed_records": mine[0]["changed_records"],
                "ok": all(r["ok"] for r in mine),
                "broken": max(r["broken"] for r in mine),
            }
        )
    return {"rounds": rounds, "reference": reference, "variants": summaries, "runs": runs}


def _loadavg() -> list[str]:
    with open("/proc/loadavg") as loadavg:
        return loadavg.read().split()[:3]


def _shown(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


CHILD = Path(__file__).with_name("verify_child.py")


def verify_in_child(variant: Variant) -> dict[str, Any]:
    """Run `verify()` as ``variant`` says in a fresh process; its time and peak RSS, and those
    of the worker processes it starts. The child runs from a neutral folder, so that the
    interpreter imports the `workflow` it has installed and nothing else."""
    arguments = [variant.python, str(CHILD), variant.url, str(variant.workers)]
    if variant.checkpoint is not None:
        arguments.append(variant.checkpoint)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        arguments, cwd=tempfile.gettempdir(), env=env, check=True, capture_output=True, text=True
    )
    found = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    if Path(found["library"]).resolve() != Path(variant.library).resolve():
        raise RuntimeError(
            f"{variant.label} ran the library in {found['library']}, not {variant.library}"
        )
    return found
