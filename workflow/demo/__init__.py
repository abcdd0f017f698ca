"""The demo that ``make demo`` runs: ``python -m workflow.demo`` (``idcard-workflow demo``).

It builds a fresh SQLite database (``var/demo.db`` by default) and replays 90 days of the three
identity-card systems side by side, ending with one ordinary working day, so that the day closes
with the backlog real offices have:

- remote acceptance at four acceptance points in three provinces: cards collected, some
  applications refused by the household-registration county, some still waiting for review,
  production or collection, a few overdue, and a few renewal applicants turned away at the counter
  because they forgot to bring the old card;
- loss reporting: citizens report a lost card at an office; some find it again and withdraw the
  report in person, some apply for a replacement (which reuses their report; the others' reports
  are filed by the application itself), and collecting a replacement closes the report; a few
  replacement applicants report the loss again at a police station and are told it already is;
- lost and found: cards handed in at offices are returned to owners who have no replacement on its
  way (withdrawing their report), or destroyed when the owner has one; some owners come for the card
  anyway and are refused.

Everything is driven by a seeded `random.Random` and a simulated clock, so the same seed gives the
same counts on every run. The simulation keeps its own ledger of every record's state and of the
history rows each machine should have written, and the run ends by comparing it with the database
and by `Workflow.verify`. Citizen numbers are shown masked, receipt numbers never.

The parts, by job: `data` (the fixed data), `planning` (what happens to each record),
`replay` (driving the plans through a `Workflow`: `run_day`), `report` (the summary tables),
`database` (the demo's own file) and `program` (all of it, as the ``demo`` command runs it).
"""

from __future__ import annotations

from workflow.demo.data import (
    DEFAULT_APPLICATIONS,
    DEFAULT_DB,
    DEFAULT_SEED,
    DEMO_MARKER,
    MAX_APPLICATIONS,
    PERIOD_DAYS,
)
from workflow.demo.database import is_demo_database, refusal
from workflow.demo.program import main, run
from workflow.demo.replay import DaySummary, Refusal, SimulatedClock, run_day

__all__ = [
    "DEFAULT_APPLICATIONS",
    "DEFAULT_DB",
    "DEFAULT_SEED",
    "DEMO_MARKER",
    "MAX_APPLICATIONS",
    "PERIOD_DAYS",
    "DaySummary",
    "Refusal",
    "SimulatedClock",
    "is_demo_database",
    "main",
    "refusal",
    "run",
    "run_day",
]
