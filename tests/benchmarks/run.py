"""Run the benchmarks: ``python -m tests.benchmarks.run --db sqlite-ram --db sqlite-disk``.

Phases (``--only`` picks some): ``single``, ``bulk``, ``schema`` (the triggers' own cost) and
``profile`` (single commands and ``fire_many``) on every database given; ``queries`` (overdue
at growing sizes, and verify) on SQLite-on-disk and PostgreSQL; ``memory`` on the SQLite RAM
disk; ``peers``, the library beside other frameworks, on every database given, only when
``--only`` names it (it needs the packages ``make bench-peers`` installs). ``--db postgres``
needs ``IDCARD_TEST_DATABASE_URL``, as ``.ci/with-postgres`` sets it. Results go to
``<out>/results-<db>.json``; ``python -m tests.benchmarks.report <out>`` turns every results
file there into tables and the plot.
``--quick`` runs every phase small, to check that the benchmarks work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from .common import LABELS, ROOT, VARIANTS, Databases, libpq_url, mount_of

console = Console(highlight=False)
PHASES = ("single", "bulk", "schema", "queries", "memory", "profile")
ON_DEMAND = ("peers",)
"""Phases run only when ``--only`` names them."""
WHERE = {
    "single": VARIANTS,
    "bulk": VARIANTS,
    "schema": VARIANTS,
    "queries": ("sqlite-disk", "postgres"),
    "memory": ("sqlite-ram",),
    "profile": VARIANTS,
    "peers": VARIANTS,
}


@dataclass(frozen=True)
class Scale:
    single_apps: int
    single_rounds: int
    bulk_apps: int
    bulk_rounds: int
    sizes: tuple[int, ...]
    verify_sizes: tuple[int, ...]
    verify_workers: tuple[int, ...]
    verify_rounds: int
    calls: int
    memory_commands: int
    memory_checkpoints: tuple[int, ...]
    profile_apps: int
    peers_apps: int = 250
    peers_rounds: int = 5


FULL = Scale(
    single_apps=250,
    single_rounds=9,
    bulk_apps=5000,
    bulk_rounds=5,
    sizes=(10_000, 100_000, 1_000_000),
    verify_sizes=(100_000, 1_000_000),
    verify_workers=(1, 2, 4),
    verify_rounds=3,
    calls=300,
    memory_commands=100_000,
    memory_checkpoints=(1_000, 10_000, 50_000, 100_000),
    profile_apps=500,
)
QUICK = Scale(
    single_apps=100,
    single_rounds=5,
    bulk_apps=2000,
    bulk_rounds=5,
    sizes=(10_000, 50_000),
    verify_sizes=(50_000,),
    verify_workers=(1, 2),
    verify_rounds=2,
    calls=50,
    memory_commands=20_000,
    memory_checkpoints=(1_000, 10_000, 20_000),
    profile_apps=100,
    peers_apps=50,
    peers_rounds=2,
)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import pydantic
    import sqlalchemy

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    mem_kib = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    disk = mount_of(ROOT / "var")
    device = Path(disk["device"]).name
    rotational = _read(f"/sys/block/{device}/queue/rotational").strip()
    try:
        import psycopg

        psycopg_version = psycopg.__version__
    except ImportError:  # pragma: no cover
        psycopg_version = None
    dirty = _git("status", "--porcelain").splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "disk": {**disk, "rotational": rotational or "?"},
        "shm": mount_of("/dev/shm"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg_version,
        "pydantic": pydantic.VERSION,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty_files": len(dirty),
        "git_dirty_library_files": sorted(
            line[3:]
            for line in dirty
            if line[3:].startswith(("workflow/", "models/", "migrations/"))
        ),
        "loadavg_start": _read("/proc/loadavg").split()[:3],
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def postgres_version(url: str) -> str:
    import psycopg

    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("synchronous_commit", "fsync", "shared_buffers", "wal_sync_method")
        }
    return f"{row[0] if row else '?'} ({', '.join(f'{k}={v}' for k, v in settings.items())})"


_STARTED = time.perf_counter()


def log(text: str) -> None:
    console.print(f"[dim]{time.perf_counter() - _STARTED:6.0f}s[/] {text}")


def run_variant(
    variant: str,
    phases: list[str],
    scale: Scale,
    out: Path,
    keep: bool,
    revision: str = "head",
    baseline: Path | None = None,
) -> dict:
    from .bulk import bench_bulk
    from .memory import bench_memory
    from .peers.bench import bench_peers
    from .profiling import profile_bulk, profile_single
    from .queries import bench_queries
    from .schema import bench_schema
    from .single import bench_single

    databases = Databases(variant, keep=keep, revision=revision)
    result: dict[str, Any] = {
        "variant": variant,
        "label": LABELS[variant],
        "machine": machine(),
        "location": databases.location(),
    }
    if variant == "postgres":
        assert databases.server_url is not None
        result["postgres"] = postgres_version(databases.server_url)
    console.rule(
        f"[bold]{LABELS[variant]}[/] — data in {result['location']['path']} "
        f"({result['location']['fstype']} on {result['location']['device']})"
    )
    started = time.perf_counter()
    try:
        for phase in phases:
            if variant not in WHERE[phase]:
                continue
            t0 = time.perf_counter()
            console.print(f"[bold cyan]{phase}[/]")
            with databases.fresh(phase) as db:
                if phase == "single":
                    result["single"] = bench_single(
                        db, apps_per_round=scale.single_apps, rounds=scale.single_rounds, log=log
                    )
                elif phase == "bulk":
                    result["bulk"] = bench_bulk(
                        db, apps_per_round=scale.bulk_apps, rounds=scale.bulk_rounds, log=log
                    )
                elif phase == "schema":
                    result["schema"] = bench_schema(
                        db,
                        apps_per_round=scale.single_apps,
                        bulk_apps_per_round=scale.single_apps * 4,
                        rounds=scale.single_rounds,
                        log=log,
                    )
                elif phase == "queries":
                    result["queries"] = bench_queries(
                        db,
                        sizes=scale.sizes,
                        verify_sizes=scale.verify_sizes,
                        calls=scale.calls,
                        verify_workers=scale.verify_workers,
                        verify_rounds=scale.verify_rounds,
                        verify_baseline=baseline,
                        log=log,
                    )
                elif phase == "memory":
                    result["memory"] = bench_memory(
                        db,
                        commands=scale.memory_commands,
                        checkpoints=list(scale.memory_checkpoints),
                    )
                    for p in result["memory"]["points"]:
                        log(
                            f"  after {p['commands']:>7,} commands: "
                            f"RSS {p['rss_kib'] / 1024:.1f} MiB, "
                            f"peak {p['peak_rss_kib'] / 1024:.1f} MiB"
                        )
                elif phase == "profile":
                    result["profile"] = profile_single(
                        db, apps=scale.profile_apps, out=out / f"profile-{variant}.txt"
                    )
                    result["profile_bulk"] = profile_bulk(
                        db, apps=scale.bulk_apps, out=out / f"profile-bulk-{variant}.txt"
                    )
                    for key in ("profile", "profile_bulk"):
                        log(f"  {result[key]['what']}:")
                        for name, share in result[key]["groups"].items():
                            log(f"  {share:6.1%}  {name}")
                elif phase == "peers":
                    result["peers"] = bench_peers(
                        db, apps_per_round=scale.peers_apps, rounds=scale.peers_rounds, log=log
                    )
            result.setdefault("phase_seconds", {})[phase] = time.perf_counter() - t0
    finally:
        databases.close()
    result["seconds"] = time.perf_counter() - started
    result["machine"]["loadavg_end"] = _read("/proc/loadavg").split()[:3]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", action="append", choices=VARIANTS, help="repeatable")
    parser.add_argument("--only", help=f"comma-separated phases of {', '.join(PHASES + ON_DEMAND)}")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite files")
    parser.add_argument(
        "--revision",
        default="head",
        help="the schema revision of the fresh databases (the schema phase only: the library "
        "needs head)",
    )
    parser.add_argument(
        "--verify-sizes", help="comma-separated sizes at which verify() is timed (of the sizes)"
    )
    parser.add_argument("--verify-rounds", type=int, help="rounds of each verify() variant")
    parser.add_argument("--verify-workers", help="comma-separated workers= of verify() to time")
    parser.add_argument(
        "--verify-baseline",
        type=Path,
        help="another checkout (with its own .venv) whose verify() is timed in turns with this "
        "one's (see tests/benchmarks/verify.py for kept databases and verify --since)",
    )
    args = parser.parse_args(argv)
    variants = args.db or [
        v for v in VARIANTS if v != "postgres" or os.environ.get("IDCARD_TEST_DATABASE_URL")
    ]
    phases = args.only.split(",") if args.only else list(PHASES)
    unknown = set(phases) - set(PHASES) - set(ON_DEMAND)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    scale = QUICK if args.quick else FULL
    if args.verify_sizes:
        scale = replace(scale, verify_sizes=tuple(int(n) for n in args.verify_sizes.split(",")))
    if args.verify_workers:
        scale = replace(scale, verify_workers=tuple(int(n) for n in args.verify_workers.split(",")))
    if args.verify_rounds:
        scale = replace(scale, verify_rounds=args.verify_rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    from .report import show

    for variant in variants:
        result = run_variant(
            variant, phases, scale, args.out, args.keep, args.revision, args.verify_baseline
        )
        result["quick"] = args.quick
        path = args.out / f"results-{variant}.json"
        if args.only and path.exists():
            # Some phases again: keep the other phases' results of the earlier run.
            earlier = json.loads(path.read_text())
            if earlier.get("quick") == args.quick:
                result = {**earlier, **result}
        path.write_text(json.dumps(result, indent=1, default=str))
        console.print(f"[dim]{LABELS[variant]}: {result['seconds']:.0f} s; wrote {path}[/]")
        show([result], console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
