"""The application process as every peer models it: states, events, who may fire each event.

The same process the library runs (`workflow.machines.application`), written down once here
for the frameworks measured beside it, so that each of them expresses the very same rules in
its own way: the states, the six events with their sources and targets, and for each event the
role and unit that may fire it (the library's `Permission`s). The peers keep their guards and
actions in their own idiom; what those call is defined here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from .. import data

STATES = ("submitted", "transmitted", "approved", "rejected", "produced", "ready", "collected")
FINAL_STATES = ("rejected", "collected")

EVENTS: dict[str, tuple[str, str]] = {
    "transmit": ("submitted", "transmitted"),
    "approve": ("transmitted", "approved"),
    "reject": ("transmitted", "rejected"),
    "produce": ("approved", "produced"),
    "mark_ready": ("produced", "ready"),
    "collect": ("ready", "collected"),
}
"""Each event's source and target."""

PATH = data.SINGLE_PATH
"""The events every round fires on each fresh application, one sweep per event."""

REVIEW_WITHIN = timedelta(days=5)
"""Transmitting starts the household-registration county's 5-day review clock."""


@dataclass(frozen=True)
class Officer:
    """Who fires an event: what a host's authentication hands the framework."""

    id: str
    role: str
    unit: str


@dataclass(frozen=True)
class Rule:
    """Who may fire an event: the role, and the unit matched against a region of the record
    (its first ``digits`` characters: 6 for a county, 2 for a province)."""

    role: str
    field: str
    digits: int = 6

    def allows(self, officer: Any, application: Any) -> bool:
        region = str(getattr(application, self.field))
        return officer.role == self.role and officer.unit == region[: self.digits]


CLERK_OF_ACCEPTANCE_POINT = Rule("acceptance_clerk", "acceptance_region")
REVIEWER_OF_HUKOU_COUNTY = Rule("hukou_reviewer", "hukou_region")
PRODUCER_OF_ACCEPTANCE_PROVINCE = Rule("card_producer", "acceptance_region", digits=2)

RULES: dict[str, Rule] = {
    "transmit": CLERK_OF_ACCEPTANCE_POINT,
    "approve": REVIEWER_OF_HUKOU_COUNTY,
    "reject": REVIEWER_OF_HUKOU_COUNTY,
    "produce": PRODUCER_OF_ACCEPTANCE_PROVINCE,
    "mark_ready": CLERK_OF_ACCEPTANCE_POINT,
    "collect": CLERK_OF_ACCEPTANCE_POINT,
}

OFFICERS: dict[str, Officer] = {event: Officer(*data.EVENTS[event][2]) for event in PATH}
"""Who fires each event of the path: the same actors the library's benchmarks use."""

CLERK_ELSEWHERE = Officer("bench-clerk-elsewhere", "acceptance_clerk", data.HUKOU)
"""A clerk of another county: refused wherever the acceptance county's clerk is required."""


def now() -> datetime:
    return datetime.now(UTC)


def review_due(at: datetime) -> datetime:
    return at + REVIEW_WITHIN


def fresh_values(n: int, salt: int) -> dict[str, Any]:
    """The column values of application number ``n``, in ``submitted``: the same kinds,
    regions, fees and documents as the library's benchmark applications. ``salt`` keeps
    receipt numbers of different sources apart."""
    at = now()
    kind, fee = ("damaged_renewal", "40.00") if n % 5 == 4 else ("renewal", "20.00")
    return {
        "kind": kind,
        "state": "submitted",
        "citizen_id": data.citizen_id(n),
        "name": "Wang Fang",
        "hukou_region": data.HUKOU,
        "acceptance_region": data.ACCEPTANCE,
        "documents": ["resident_id_card"],
        "fee_paid": Decimal(fee),
        "fee_waiver": None,
        "receipt_no": data.receipt_no(n, salt),
        "submitted_at": at,
        "due_at": at + data.ISSUE_WITHIN,
        "review_due_at": None,
        "rejection_ground": None,
        "rejection_note": None,
        "old_card_returned": False,
    }
