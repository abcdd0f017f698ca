"""verify() before and after, on kept databases: ``python -m tests.benchmarks.verify``.

Times, in turns and each run in a fresh process (`queries.bench_verify`):

1. a full `verify()` of a database of ``--size`` applications (the queries phase's mix): the
   baseline's (``--baseline DIR``: another checkout, with its own ``.venv``, in one process)
   and this checkout's with each of ``--workers``;
2. `verify(since=...)` against a checkpoint of that database: on the database itself (nothing
   changed) and on a copy in which 1% of the applications moved on after the checkpoint,
   against a full verify of that copy.

The databases (and the checkpoint) are built once and kept in ``--data`` (SQLite files; on
PostgreSQL, databases on the server of ``IDCARD_TEST_DATABASE_URL``, as ``.ci/with-postgres``
sets it). Results go to ``<out>/results-verify-<db>.json``, and the tables to stdout and
``<out>/verify.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .common import LABELS, ROOT
from .kept import changed_copy, checkpoint_of, kept_database
from .queries import Variant, bench_verify, library_variants
from .run import console, log, machine


def run(
    variant: str,
    *,
    size: int,
    data: Path,
    baseline: Path | None,
    workers: list[int],
    rounds: int,
    since_rounds: int,
) -> dict[str, Any]:
    started = time.perf_counter()
    console.rule(f"[bold]{LABELS[variant]}[/]: verify at {size:,} applications")
    result: dict[str, Any] = {"variant": variant, "label": LABELS[variant], "machine": machine()}
    db = kept_database(variant, size, data, log=log)
    console.print("[bold cyan]full verify[/]")
    full = bench_verify(library_variants(db.url, workers, baseline), rounds=rounds, log=log)
    result["verify"] = {"applications": size, **full}
    if since_rounds:
        console.print("[bold cyan]verify --since[/]")
        checkpoint = str(checkpoint_of(db, data, log=log))
        changed = changed_copy(db, data, log=log)
        here = sys.executable
        variants = [
            Variant("library", here, 1, changed.url, database="1% changed"),
            *(
                Variant("library", here, w, db.url, checkpoint, database="nothing changed")
                for w in workers
            ),
            *(
                Variant("library", here, w, changed.url, checkpoint, database="1% changed")
                for w in workers
            ),
        ]
        if baseline is not None:
            python = str(baseline / ".venv" / "bin" / "python")
            old = str(baseline.resolve())
            variants += [
                Variant("baseline", python, 1, db.url, checkpoint, old, "nothing changed"),
                Variant("baseline", python, 1, changed.url, checkpoint, old, "1% changed"),
            ]
        result["since"] = {
            "applications": size,
            **bench_verify(variants, rounds=since_rounds, log=log),
        }
    result["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    result["seconds"] = time.perf_counter() - started
    return result


def table(result: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    lines = []
    for part, title in (("verify", "full verify"), ("since", "verify --since")):
        found = result.get(part)
        if not found:
            continue
        lines += [
            f"**{result['label']}, {found['applications']:,} applications: {title}** "
            f"({found['rounds']} rounds; ratio = the round's `{found['reference']}` time ÷ the "
            "variant's)",
            "",
            "| variant | time, median (range) | ratio, median (range) | CPU | peak RSS | "
            "workers' peak RSS (sum) | ok |",
            "|---|---|---|---|---|---|---|",
        ]
        for v in found["variants"]:
            t, c, r = v["seconds"], v["cpu_seconds"], v["speedup"]
            workers_rss = (
                f"{v['workers_peak_rss_kib'] / 1024:.0f} MiB" if v["workers_peak_rss_kib"] else "-"
            )
            lines.append(
                f"| {v['variant']} | {t['median']:.1f} s ({t['min']:.1f}-{t['max']:.1f}) | "
                f"**{r['median']:.2f}x** ({r['min']:.2f}-{r['max']:.2f}) | {c['median']:.1f} s | "
                f"{v['peak_rss_kib'] / 1024:.0f} MiB | {workers_rss} | "
                f"{'yes' if v['ok'] else 'NO'} |"
            )
        loads = [r["loadavg"][0] for r in found["runs"]]
        lines += ["", f"Load average (1 min) at the end of each run: {', '.join(loads)}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", action="append", choices=["sqlite-disk", "postgres"])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "bench-data")
    parser.add_argument("--baseline", type=Path, help="a checkout with its own .venv")
    parser.add_argument("--workers", default="1,2", help="comma-separated workers= to time")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--since-rounds", type=int, default=2, help="0: no verify --since")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-verify")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = []
    for variant in args.db or ["sqlite-disk"]:
        result = run(
            variant,
            size=args.size,
            data=args.data,
            baseline=args.baseline,
            workers=[int(w) for w in args.workers.split(",")],
            rounds=args.rounds,
            since_rounds=args.since_rounds,
        )
        path = args.out / f"results-verify-{variant}.json"
        path.write_text(json.dumps(result, indent=1, default=str))
        markdown.append(table(result))
        console.print(table(result))
        console.print(f"[dim]{LABELS[variant]}: {result['seconds']:.0f} s; wrote {path}[/]")
    (args.out / "verify.md").write_text("\n".join(markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
