"""Tables and the plot from the benchmarks' results: ``python -m tests.benchmarks.report DIR``.

Reads every ``results-*.json`` in DIR, prints the tables, and writes ``DIR/results.md`` (the
same tables in Markdown) and ``DIR/performance.svg`` (transitions per second per variant,
library against floor; needs matplotlib, which ``make bench`` installs).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .common import LABELS, VARIANTS
from .peers.report import tables as peer_tables

SINGLE_TARGET = {"sqlite-ram": 2.0, "sqlite-disk": 1.3, "postgres": 1.3}
"""Single commands: at most this many times the floor's time (issue 13)."""
BULK_TARGET = 0.7
"""fire_many: at least this share of the bulk floor's rate (issue 13)."""
OVERDUE_TARGET_MS = 1.0


def _rate(s: dict[str, float]) -> str:
    return f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f})"


def _ratio(s: dict[str, float]) -> str:
    return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"


def _us(tps: float) -> str:
    return f"{1e6 / tps:,.0f} µs"


def _cpu(s: dict[str, Any]) -> str:
    if "library_cpu_us" not in s:
        return "-"
    return f"{s['library_cpu_us']['median']:,.0f} / {s['floor_cpu_us']['median']:,.0f} µs"


def _ms(v: Sequence[float]) -> str:
    return f"{v[0]:.3f} ({v[1]:.3f}-{v[2]:.3f})"


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.1f} MiB"


def tables(results: Sequence[dict[str, Any]]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table the results allow."""
    ordered = sorted(results, key=lambda r: VARIANTS.index(r["variant"]))
    out: list[tuple[str, list[str], list[list[str]]]] = []
    rows = []
    for r in ordered:
        s = r.get("single")
        if not s:
            continue
        target = SINGLE_TARGET[r["variant"]]
        ratio = s["ratio"]["median"]
        verdict = (
            f"met ({ratio / target:.2f} of the limit)"
            if ratio <= target
            else f"missed by {ratio / target:.2f}x"
        )
        rows.append(
            [
                LABELS[r["variant"]],
                _rate(s["library_tps"]),
                _us(s["library_tps"]["median"]),
                _rate(s["floor_tps"]),
                _us(s["floor_tps"]["median"]),
                _ratio(s["ratio"]),
                f"≤ {target}x",
                verdict,
                _cpu(s),
            ]
        )
    if rows:
        n = next(r["single"] for r in ordered if r.get("single"))
        out.append(
            (
                f"Single commands: transitions/s, median (min-max) of {n['rounds']} rounds of "
                f"{n['transitions_per_round']:,}; ratio = library time / floor time",
                [
                    "database",
                    "library /s",
                    "per command",
                    "floor /s",
                    "per transition",
                    "ratio",
                    "target",
                    "verdict",
                    "CPU per transition, library / floor",
                ],
                rows,
            )
        )
    rows = []
    for r in ordered:
        b = r.get("bulk")
        if not b:
            continue
        share = 1 / b["ratio"]["median"]
        verdict = (
            f"met ({share / BULK_TARGET:.2f}x the target)"
            if share >= BULK_TARGET
            else f"missed by {BULK_TARGET / share:.2f}x"
        )
        rows.append(
            [
                LABELS[r["variant"]],
                _rate(b["library_tps"]),
                _rate(b["floor_tps"]),
                f"{share:.2f} ({1 / b['ratio']['max']:.2f}-{1 / b['ratio']['min']:.2f})",
                f"≥ {BULK_TARGET}",
                verdict,
                _cpu(b),
            ]
        )
    if rows:
        n = next(r["bulk"] for r in ordered if r.get("bulk"))
        out.append(
            (
                f"Bulk: fire_many in chunks of {n['chunk']:,}, transitions/s, median (min-max) "
                f"of {n['rounds']} rounds of {n['transitions_per_round']:,}",
                [
                    "database",
                    "fire_many /s",
                    "bulk floor /s",
                    "share of the floor's rate",
                    "target",
                    "verdict",
                    "CPU per transition, library / floor",
                ],
                rows,
            )
        )
    rows = []
    for r in ordered:
        c = r.get("schema")
        if not c:
            continue
        for kind in ("single", "bulk"):
            rows.append(
                [
                    LABELS[r["variant"]],
                    c["revision"],
                    "one per transaction" if kind == "single" else f"chunks of {c['chunk']:,}",
                    _rate(c[f"{kind}_schema_tps"]),
                    _rate(c[f"{kind}_bare_tps"]),
                    _ratio(c[f"{kind}_ratio"]),
                ]
            )
    if rows:
        n = next(r["schema"] for r in ordered if r.get("schema"))
        out.append(
            (
                "The schema's own cost: the floor through the triggers against the same writes on "
                "a copy of the tables without triggers or foreign keys, transitions/s, median "
                f"(min-max) of {n['rounds']} rounds; ratio = through the triggers / bare (time)",
                ["database", "revision", "writes", "through the triggers /s", "bare /s", "ratio"],
                rows,
            )
        )
    rows = []
    for r in ordered:
        q = r.get("queries")
        if not q:
            continue
        for row in q["overdue"]:
            for name in ("overdue", "overdue_reviews"):
                m = row[name]
                index = next(
                    (
                        word
                        for line in m["plan"]
                        for word in line.replace("(", " ").replace('"', " ").split()
                        if word.startswith("idcard_ix_applications_overdue")
                    ),
                    "NO INDEX",
                )
                rows.append(
                    [
                        LABELS[r["variant"]],
                        f"{row['applications']:,}",
                        name,
                        _ms(m["library_ms"]),
                        _ms(m["driver_ms"]),
                        _ms(m["library_limit10_ms"]),
                        index,
                    ]
                )
    if rows:
        calls = next(r["queries"]["calls"] for r in ordered if r.get("queries"))
        out.append(
            (
                f"Overdue queries, limit=100: ms per call, median (min-max) of {calls} calls",
                [
                    "database",
                    "applications",
                    "query",
                    "library",
                    "SQL alone (driver)",
                    "library, limit=10",
                    "index",
                ],
                rows,
            )
        )
    rows = []
    for r in ordered:
        q = r.get("queries")
        for v in (q or {}).get("verify", []):
            for w in v["variants"]:
                t = w["seconds"]
                rows.append(
                    [
                        LABELS[r["variant"]],
                        f"{v['applications']:,}",
                        f"{w['rows']:,}",
                        w["variant"],
                        f"{t['median']:,.1f} s ({t['min']:,.1f}-{t['max']:,.1f})",
                        f"{w['records'] / t['median']:,.0f}",
                        _ratio(w["speedup"]),
                        f"{w['cpu_seconds']['median']:,.1f} s",
                        _mib(w["rss_before_kib"]),
                        _mib(w["peak_rss_kib"]),
                        _mib(w["workers_peak_rss_kib"]) if w["workers_peak_rss_kib"] else "-",
                        "yes" if w["ok"] else f"NO ({w['broken']} broken)",
                    ]
                )
    if rows:
        out.append(
            (
                "verify() over the whole database, in a fresh process: median (min-max) of the "
                "rounds; ratio = the round's first variant's time ÷ this variant's time",
                [
                    "database",
                    "applications",
                    "history rows",
                    "variant",
                    "time",
                    "records/s",
                    "ratio",
                    "CPU",
                    "RSS before",
                    "peak RSS",
                    "workers' peak RSS (sum)",
                    "ok",
                ],
                rows,
            )
        )
    for r in ordered:
        m = r.get("memory")
        if not m:
            continue
        rows = [
            [
                f"{p['commands']:,}",
                _mib(p["rss_kib"]),
                _mib(p["peak_rss_kib"]),
                f"{p['seconds']:,.1f} s",
            ]
            for p in m["points"]
        ]
        out.append(
            (
                f"Memory across {m['commands']:,} single commands in one process "
                f"({LABELS[r['variant']]})",
                ["commands", "RSS", "peak RSS", "elapsed"],
                rows,
            )
        )
    for r, p in ((r, r.get(key)) for r in ordered for key in ("profile", "profile_bulk")):
        if not p:
            continue
        rows = [
            [name, f"{share:.1%}"]
            for name, share in sorted(p["groups"].items(), key=lambda kv: -kv[1])
        ]
        what = p.get("what", "single commands")
        out.append(
            (
                f"cProfile of {p['commands']:,} {what} ({LABELS[r['variant']]}), "
                f"{p['profiled_seconds_per_command'] * 1e6:,.0f} µs each profiled: "
                "share of the time by code",
                ["code", "share"],
                rows,
            )
        )
        rows = [
            [
                t["function"],
                f"{t['calls']:,}",
                f"{t['tottime_us_per_command']:.1f}",
                f"{t['cumtime_us_per_command']:.1f}",
            ]
            for t in p["top_tottime"]
        ]
        out.append(
            (
                f"cProfile of {what} ({LABELS[r['variant']]}): top functions by own time "
                "(µs per transition; profiler overhead included)",
                ["function", "calls", "own µs/cmd", "cumulative µs/cmd"],
                rows,
            )
        )
    out.extend(peer_tables(ordered))
    return out


def show(results: Sequence[dict[str, Any]], console: Console) -> None:
    for title, header, rows in tables(results):
        table = Table(title=title, title_justify="left")
        for column in header:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def markdown(results: Sequence[dict[str, Any]]) -> str:
    parts = []
    for title, header, rows in tables(results):
        parts.append(f"**{title}**\n")
        parts.append("| " + " | ".join(header) + " |")
        parts.append("|" + "---|" * len(header))
        parts.extend("| " + " | ".join(row) + " |" for row in rows)
        parts.append("")
    return "\n".join(parts)


def plot(results: Sequence[dict[str, Any]], path: Path) -> None:
    """Transitions per second per variant: library against floor, single and bulk."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = [r for v in VARIANTS for r in results if r["variant"] == v]
    series = (
        ("single", "library_tps", "library: single commands", "#1f5fa8", None),
        ("single", "floor_tps", "floor: single transactions", "#9dbfe6", "//"),
        ("bulk", "library_tps", "library: fire_many (chunks of 1,000)", "#c0501d", None),
        (
            "bulk",
            "floor_tps",
            "floor: bulk (the same statements, chunks of 1,000)",
            "#f2b48f",
            "//",
        ),
    )
    plt.rcParams["hatch.linewidth"] = 0.5
    fig, ax = plt.subplots(figsize=(10, 5.8))
    width = 0.2
    for i, (phase, key, label, colour, hatch) in enumerate(series):
        xs, ys, lo, hi = [], [], [], []
        for x, r in enumerate(ordered):
            if r.get(phase):
                s = r[phase][key]
                xs.append(x + (i - 1.5) * width)
                ys.append(s["median"])
                lo.append(s["median"] - s["min"])
                hi.append(s["max"] - s["median"])
        bars = ax.bar(
            xs,
            ys,
            width,
            label=label,
            color=colour,
            hatch=hatch,
            edgecolor="#333333",
            linewidth=0.5,
            yerr=[lo, hi],
            capsize=3,
            error_kw={"elinewidth": 0.8, "ecolor": "#333333"},
        )
        for bar, y, top in zip(bars, ys, hi, strict=True):
            ax.annotate(
                f"{y / 1000:.1f}k" if y >= 1000 else f"{y:.0f}",
                (bar.get_x() + bar.get_width() / 2, y + top),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
            )
    labels = []
    for r in ordered:
        label = LABELS[r["variant"]]
        if r.get("single"):
            label += (
                f"\nsingle: {r['single']['ratio']['median']:.1f}x the floor "
                f"(≤ {SINGLE_TARGET[r['variant']]}x)"
            )
        if r.get("bulk"):
            label += f"\nbulk: {1 / r['bulk']['ratio']['median']:.2f} of its rate (≥ {BULK_TARGET})"
        labels.append(label)
    ax.set_xticks(range(len(ordered)), labels)
    ax.set_yscale("log")
    ax.set_ylim(100, 200_000)
    ax.set_ylabel("transitions per second (log scale)")
    ax.set_title(
        "Transitions per second: the library against the floor (same writes through the driver)\n"
        "median of the rounds; whiskers: min-max",
        fontsize=11,
    )
    ax.grid(axis="y", which="both", alpha=0.25)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    if path.suffix == ".svg":
        fig.savefig(path.with_suffix(".png"), dpi=110)
    plt.close(fig)


def load(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("results-*.json"))]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else Path("var/bench")
    results = load(directory)
    if not results:
        print(f"no results-*.json in {directory}", file=sys.stderr)
        return 1
    console = Console(highlight=False, width=200)
    show(results, console)
    (directory / "results.md").write_text(markdown(results))
    try:
        plot(results, directory / "performance.svg")
    except ImportError:
        console.print("[yellow]matplotlib is missing: no plot (pip install matplotlib)[/]")
    else:
        console.print(f"wrote {directory / 'results.md'} and {directory / 'performance.svg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
