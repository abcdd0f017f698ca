"""The overdue queries at growing table sizes, and `verify()` over the whole database.

One database grows through the sizes (10k, 100k, 1M applications in the benchmark's mix of
states, submitted over the 120 days before ``AS_OF``, each with its valid history). At each
size: the median of many calls of ``overdue(AS_OF, limit=100)`` and ``overdue_reviews(...)``
through the library, the same SQL through the driver (the floor), and the query plan. At the
sizes chosen for it, `verify()` runs in a fresh process that reports its time and peak RSS.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

import workflow as wf

from . import data
from .common import ROOT, Database, peak_rss_kib, rss_kib, summary

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
                verifies.append(
                    bench_verify(db, size, workers=verify_workers, rounds=verify_rounds, log=log)
                )
    finally:
        flow.close()
        engine.dispose()
    return {"calls": calls, "as_of": AS_OF.isoformat(), "overdue": overdue, "verify": verifies}


def bench_verify(
    db: Database,
    size: int,
    *,
    workers: Sequence[int],
    rounds: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """`verify()` with each number of ``workers``, in turns: each round runs every variant once
    in a fresh process, in the opposite order to the round before. Medians per variant, and the
    ratio of each round's time to that round's ``workers=1`` time."""
    runs: list[dict[str, Any]] = []
    for number in range(rounds):
        order = list(workers) if number % 2 == 0 else list(reversed(workers))
        for w in order:
            result = verify_in_child(db.url, workers=w)
            result.update(round=number + 1, workers=w)
            runs.append(result)
            log(
                f"  verify at {size:,}, workers={w} (round {number + 1}/{rounds}): "
                f"{result['seconds']:.1f} s (CPU {result['cpu_seconds']:.1f} s), "
                f"{result['rows']:,} rows, peak RSS {result['peak_rss_kib'] / 1024:.0f} MiB "
                f"+ workers {result['workers_peak_rss_kib'] / 1024:.0f} MiB "
                f"(after start-up {result['rss_before_kib'] / 1024:.0f} MiB), ok={result['ok']}"
            )
    first = runs[0]
    by_workers: dict[str, Any] = {}
    for w in workers:
        mine = [r for r in runs if r["workers"] == w]
        ratios = [
            base["seconds"] / r["seconds"]
            for r in mine
            for base in runs
            if base["workers"] == workers[0] and base["round"] == r["round"]
        ]
        by_workers[str(w)] = {
            "seconds": summary([r["seconds"] for r in mine]),
            "cpu_seconds": summary([r["cpu_seconds"] for r in mine]),
            "speedup": summary(ratios),
            "peak_rss_kib": max(r["peak_rss_kib"] for r in mine),
            "workers_peak_rss_kib": max(r["workers_peak_rss_kib"] for r in mine),
            "worker_peak_rss_kib": max(r["worker_peak_rss_kib"] for r in mine),
            "ok": all(r["ok"] for r in mine),
        }
    one = [r for r in runs if r["workers"] == workers[0]]
    return {
        "applications": size,
        "records": first["records"],
        "rows": first["rows"],
        "ok": all(r["ok"] for r in runs),
        "broken": max(r["broken"] for r in runs),
        # The first variant's (workers=1) medians, as the table before parallel verify had them.
        "seconds": summary([r["seconds"] for r in one])["median"],
        "rss_before_kib": max(r["rss_before_kib"] for r in one),
        "peak_rss_kib": max(r["peak_rss_kib"] for r in one),
        "rounds": rounds,
        "by_workers": by_workers,
        "runs": runs,
    }


def verify_in_child(url: str, *, workers: int = 1) -> dict[str, Any]:
    """Run `verify()` over the whole database in a fresh process; its time and peak RSS, and
    those of the worker processes it starts."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.queries", url, str(workers)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


class _ChildrenPeaks:
    """Samples the peak RSS (VmHWM) of this process's multiprocessing children while they run:
    the sum of their peaks, and the largest. (``getrusage(RUSAGE_CHILDREN)`` gives only the
    largest child's, and includes what a child inherits of this process's peak.)"""

    def __init__(self) -> None:
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for child in multiprocessing.active_children():
                try:
                    with open(f"/proc/{child.pid}/status") as status:
                        for line in status:
                            if line.startswith("VmHWM:"):
                                peak = int(line.split()[1])
                                pid = child.pid or 0
                                self.peaks[pid] = max(self.peaks.get(pid, 0), peak)
                except OSError:
                    pass

    def __enter__(self) -> _ChildrenPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _child(url: str, workers: int) -> None:
    flow = wf.Workflow(url)
    flow.get  # noqa: B018 - everything imported and connected before measuring
    before, peak_before = rss_kib(), peak_rss_kib()
    cpu_before = os.times()
    start = time.perf_counter()
    with _ChildrenPeaks() as children:
        report = flow.verify(workers=workers)
    seconds = time.perf_counter() - start
    cpu = os.times()
    cpu_seconds = sum(
        getattr(cpu, k) - getattr(cpu_before, k)
        for k in ("user", "system", "children_user", "children_system")
    )
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "workers": workers,
                "records": report.records,
                "rows": report.rows,
                "ok": report.ok,
                "broken": len(report.broken),
                "rss_before_kib": before,
                "peak_before_kib": peak_before,
                "peak_rss_kib": peak_rss_kib(),
                "workers_peak_rss_kib": sum(children.peaks.values()),
                "worker_peak_rss_kib": max(children.peaks.values(), default=0),
                "worker_processes": len(children.peaks),
            }
        )
    )


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)
