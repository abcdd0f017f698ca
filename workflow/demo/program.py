"""The demo as a program: a fresh file, the replay with a progress bar, the summary, and the
check that the database, `Workflow.verify` and the replay's ledger agree.

The command line's ``demo`` command (`workflow.cli`) parses the options and refuses a file the
demo did not create; `run` does the rest. ``python -m workflow.demo`` is that command (`main`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

import workflow as wf
from workflow.demo.data import ACCEPTANCE_POINTS, CLOSES, CST, PERIOD_DAYS
from workflow.demo.database import Counts, recreate, stored_counts
from workflow.demo.replay import MACHINE_NAMES, DaySummary, SimulatedClock, run_day
from workflow.demo.report import held_table, late_table, summary_tables

PROG = "python -m workflow.demo"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m workflow.demo [OPTIONS]``: the command line's ``demo`` command, alone (the
    same options, ``--db`` included); returns the exit code."""
    # Imported here: the command line imports this package for the demo's defaults.
    from workflow import cli

    return cli.main(argv, command="demo", prog_name=PROG)


def _last_closed_day() -> date:
    """The latest CST date whose office hours are over, so the replay lies in the past."""
    now = datetime.now(CST)
    return now.date() if now.time() >= CLOSES else now.date() - timedelta(days=1)


def run(path: Path, *, applications: int, seed: int, console: Console | None = None) -> int:
    """Replace ``path`` by a fresh demo database, replay the period ending on the last closed
    day, print the summary and check it; return 0, or 1 when anything disagrees.

    The caller has made sure ``path`` may be replaced (`workflow.demo.refusal`)."""
    url = recreate(path)
    wf.upgrade(url)
    first_day = _last_closed_day() - timedelta(days=PERIOD_DAYS - 1)
    clock = SimulatedClock(datetime.combine(first_day, clock_time(0, 0), CST))
    console = console or Console()
    points = "; ".join(f"{c.name} ({c.code})" for c, _ in ACCEPTANCE_POINTS)
    console.print(
        f"Replaying {PERIOD_DAYS} days of remote acceptance, loss reporting and lost and found, "
        f"{applications} applications (seed {seed}), at the acceptance points of "
        f"{points}, and at offices across the country."
    )
    with wf.Workflow(url, clock=clock) as flow:
        with Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            summary = run_day(
                flow,
                applications=applications,
                rng=random.Random(seed),
                clock=clock,
                progress=progress,
            )
        overdue = flow.overdue(limit=5)
        overdue_reviews = flow.overdue_reviews(limit=5)
        held = [flow.get_found_card(card_id) for card_id in summary.held_cards[:5]]
        report = flow.verify()

    for table in summary_tables(summary, path):
        console.print(table)
    if overdue:
        title = f"Overdue applications (first {len(overdue)} of {summary.overdue})"
        console.print(late_table(title, overdue, since=summary.closed_at, review=False))
    if overdue_reviews:
        title = f"Overdue reviews (first {len(overdue_reviews)} of {summary.overdue_reviews})"
        console.print(late_table(title, overdue_reviews, since=summary.closed_at, review=True))
    if held:
        title = (
            f"Found cards waiting for their owners (first {len(held)} of {len(summary.held_cards)})"
        )
        console.print(held_table(title, held, since=summary.closed_at))

    console.print(
        f"verify(): {report.records} records and {report.rows} history rows checked, "
        f"{len(report.broken)} broken."
    )
    problems = [f"  {b.machine} {b.record_id}: {b.message}" for b in report.broken[:10]]
    if (report.records, report.rows) != (summary.records, summary.transitions):
        problems.append(
            f"verify() checked {report.records} records and {report.rows} rows, the replay "
            f"made {summary.records} and {summary.transitions}"
        )
    problems += _disagreements(stored_counts(url), _tracked_counts(summary))
    for problem in problems:
        console.print(f"[red]{problem}[/red]")
    return 1 if problems else 0


def _tracked_counts(summary: DaySummary) -> Counts:
    """The counts of `stored_counts`, from the replay's ledger."""
    return Counts(
        {m: {s: n for s, n in states.items() if n} for m, states in summary.states.items()},
        {m: n for m, n in summary.transitions_by_machine.items() if n},
    )


def _disagreements(found: Counts, tracked: Counts) -> list[str]:
    """A line for each machine on which the database and the ledger disagree."""
    lines = []
    for machine in MACHINE_NAMES:
        states, rows = found.states.get(machine, {}), found.rows.get(machine, 0)
        expected_states, expected_rows = tracked.states[machine], tracked.rows.get(machine, 0)
        if states != expected_states or rows != expected_rows:
            lines.append(
                f"The database disagrees with the replay on {machine}: {states} and "
                f"{rows} log rows, expected {expected_states} and {expected_rows}"
            )
    return lines
