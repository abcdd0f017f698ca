"""The peers phase's tables, for `tests.benchmarks.report`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..common import LABELS

Table = tuple[str, list[str], list[list[str]]]


def _ratio(s: dict[str, float]) -> str:
    return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"


def tables(ordered: Sequence[dict[str, Any]]) -> list[Table]:
    """Per database and variant: rate, time per transition and ratios; then the ratios to the
    library side by side for every database."""
    runs = [(r["variant"], r["peers"]) for r in ordered if r.get("peers")]
    if not runs:
        return []
    first = runs[0][1]
    rows = []
    for database, p in runs:
        for name, v in p["variants"].items():
            tps = v["tps"]
            rows.append(
                [
                    LABELS[database],
                    name,
                    f"{tps['median']:,.0f} ({tps['min']:,.0f}-{tps['max']:,.0f})",
                    f"{1e6 / tps['median']:,.0f} µs",
                    f"{v['cpu_us']['median']:,.0f} µs" if "cpu_us" in v else "-",
                    _ratio(v["vs_library"]),
                    _ratio(v["vs_floor"]),
                    "-".join(p["loadavg_start"][:1] + p["loadavg_end"][:1]),
                ]
            )
    out: list[Table] = [
        (
            f"Beside other frameworks: transitions/s, median (min-max) of {first['rounds']} "
            f"rounds of {first['transitions_per_round']:,} per variant; x library = the "
            "variant's time / the library's in the same round (above 1: slower)",
            [
                "database",
                "variant",
                "transitions/s",
                "per transition",
                "its process's CPU",
                "x library",
                "x floor",
                "load (1 min, start-end)",
            ],
            rows,
        )
    ]
    names = list(first["variants"])
    pivot = [
        [name]
        + [
            _ratio(p["variants"][name]["vs_library"]) if name in p["variants"] else "-"
            for _, p in runs
        ]
        for name in names
    ]
    out.append(
        (
            "Beside other frameworks: each variant's time / the library's, median (min-max)",
            ["variant", *(LABELS[database] for database, _ in runs)],
            pivot,
        )
    )
    return out
