"""The summary the demo prints: a table per machine (its records per state, from the registry),
the planned refusals, the run's figures, and a few late applications and held cards.

Citizen numbers are masked; names and receipt numbers are never shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

import workflow as wf
from workflow.demo.data import COUNTIES, CST
from workflow.demo.replay import APPLICATION, LOSS_REPORT, DaySummary, Refusal
from workflow.engine.registry import Machine
from workflow.machines import REGISTRY
from workflow.models.citizen_id import mask_citizen_id

_KIND_LABEL = {
    wf.Kind.RENEWAL: "renewal",
    wf.Kind.DAMAGED_RENEWAL: "damaged",
    wf.Kind.REPLACEMENT: "replacement",
}


def _table(title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(justify="right", overflow="fold")
    return table


def _plural(machine: Machine[Any, Any]) -> str:
    return f"{machine.noun}s"


def _title(summary: DaySummary, machine: str) -> str:
    """The title of a machine's table: the system it runs."""
    titles = {
        APPLICATION: f"Remote acceptance at the close of {summary.day:%Y-%m-%d} (CST)",
        LOSS_REPORT: "Loss reporting",
        wf.FOUND_CARD.name: "Lost and found",
    }
    return titles.get(machine, machine)


def _story_rows(summary: DaySummary, machine: str) -> list[tuple[str, int]]:
    """What the story tells of a machine's records beyond their states."""
    if machine == APPLICATION:
        return [
            ("in progress (not rejected or collected)", summary.intermediate),
            ("overdue (not ready 60 days after submission)", summary.overdue),
            ("overdue reviews (undecided after 5 days)", summary.overdue_reviews),
        ]
    if machine == LOSS_REPORT:
        filed = summary.reports_filed_by_application
        return [
            ("reported at an office", sum(summary.states[machine].values()) - filed),
            ("filed by a replacement application", filed),
        ]
    return []


def machine_table(summary: DaySummary, machine: Machine[Any, Any]) -> Table:
    """A machine's records per state, their total, and what the story adds."""
    counts = summary.states[machine.name]
    table = _table(_title(summary, machine.name))
    for state, n in counts.items():
        table.add_row(state, str(n))
    more = _story_rows(summary, machine.name)
    table.add_row(_plural(machine), str(sum(counts.values())), end_section=bool(more))
    for label, n in more:
        table.add_row(label, str(n))
    return table


def summary_tables(summary: DaySummary, path: Path) -> list[Table]:
    """The tables of the day: one per machine, the refusals, and the run."""
    tables = [machine_table(summary, machine) for machine in REGISTRY]

    refusals = _table("Refusals")
    for refusal in Refusal:
        refusals.add_row(refusal.value, str(summary.refusals[refusal]))

    run = _table("The run")
    for machine in REGISTRY:
        run.add_row(
            f"transitions: {_plural(machine)}", str(summary.transitions_by_machine[machine.name])
        )
    run.add_row("transitions (all machines)", str(summary.transitions), end_section=True)
    run.add_row("elapsed wall time", f"{summary.elapsed_seconds:.2f} s")
    run.add_row("transitions per second", f"{summary.transitions_per_second:,.0f}")
    run.add_row("database", str(path))
    return [*tables, refusals, run]


def late_table(
    title: str, views: Sequence[wf.ApplicationView], *, since: datetime, review: bool
) -> Table:
    """A few late applications, the citizen number masked (and no name, no receipt)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("citizen no.", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("accepted -> hukou", no_wrap=True)
    table.add_column("late", justify="right", no_wrap=True)
    for view in views:
        due = view.review_due_at if review else view.due_at
        assert due is not None
        table.add_row(
            mask_citizen_id(view.citizen_id),
            _KIND_LABEL[view.kind],
            str(view.state),
            f"{view.acceptance_region} -> {view.hukou_region}",
            f"{(since - due).days} d",
        )
    return table


def held_table(title: str, cards: Sequence[wf.FoundCardView], *, since: datetime) -> Table:
    """A few found cards waiting for their owners, the citizen number masked."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("citizen no.", no_wrap=True)
    table.add_column("held at", no_wrap=True)
    table.add_column("handed in", no_wrap=True)
    table.add_column("waiting", justify="right", no_wrap=True)
    for card in cards:
        office = COUNTIES.get(card.held_unit)
        table.add_row(
            mask_citizen_id(card.citizen_id),
            f"{card.held_unit} {office.name if office else ''}".rstrip(),
            f"{card.registered_at.astimezone(CST):%Y-%m-%d}",
            f"{(since - card.registered_at).days} d",
        )
    return table
