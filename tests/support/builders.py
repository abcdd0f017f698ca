"""Builders: valid citizen numbers, actors, forms, a controllable clock, the path to a state."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import workflow as wf
from workflow.models.citizen_id import check_character
from workflow.models.enums import NATIONAL_FEE, Document, Kind, Role

ACCEPTANCE = "440305"  # Nanshan District, Shenzhen
HUKOU = "110105"  # Chaoyang District, Beijing
OTHER_COUNTY = "310115"  # Pudong New Area, Shanghai


def citizen_id(n: int = 1, *, region: str = HUKOU) -> str:
    """A valid GB 11643 number; ``n`` below 25,000 gives each a different birth date."""
    born = date(1950, 1, 1) + timedelta(days=n)
    first17 = f"{region}{born:%Y%m%d}{n % 1000:03d}"
    return first17 + check_character(first17)


def clerk(unit: str = ACCEPTANCE, actor_id: str = "clerk-1") -> wf.Actor:
    return wf.Actor(id=actor_id, role=Role.ACCEPTANCE_CLERK, unit=unit)


def reviewer(unit: str = HUKOU, actor_id: str = "reviewer-1") -> wf.Actor:
    return wf.Actor(id=actor_id, role=Role.HUKOU_REVIEWER, unit=unit)


def producer(unit: str = ACCEPTANCE[:2], actor_id: str = "producer-1") -> wf.Actor:
    return wf.Actor(id=actor_id, role=Role.CARD_PRODUCER, unit=unit)


DOCUMENTS = {
    Kind.RENEWAL: {Document.RESIDENT_ID_CARD},
    Kind.DAMAGED_RENEWAL: {Document.RESIDENT_ID_CARD},
    Kind.REPLACEMENT: {Document.HOUSEHOLD_REGISTER},
}


def form(kind: Kind = Kind.RENEWAL, n: int = 1, **changes: object) -> wf.SubmitApplication:
    """A valid registration form for ``kind``; ``changes`` override any field."""
    fields: dict[str, object] = {
        "kind": kind,
        "citizen_id": citizen_id(n),
        "name": "Wang Fang",
        "hukou_region": HUKOU,
        "acceptance_region": ACCEPTANCE,
        "documents": DOCUMENTS[kind],
        "fee_paid": NATIONAL_FEE[kind],
    }
    fields.update(changes)
    return wf.SubmitApplication.model_validate(fields)


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: datetime = field(default_factory=lambda: datetime(2026, 3, 2, 9, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


PATH_TO: dict[str, list[str]] = {
    "submitted": [],
    "transmitted": ["transmit"],
    "approved": ["transmit", "approve"],
    "rejected": ["transmit", "reject"],
    "produced": ["transmit", "approve", "produce"],
    "ready": ["transmit", "approve", "produce", "mark_ready"],
    "collected": ["transmit", "approve", "produce", "mark_ready", "collect"],
}
"""The events that take a new application to each state."""


def actor_for(event: str, view: wf.ApplicationView) -> wf.Actor:
    """The actor who may fire ``event`` on the application."""
    if event in {"approve", "reject"}:
        return reviewer(view.hukou_region)
    if event == "produce":
        return producer(view.acceptance_region[:2])
    return clerk(view.acceptance_region)


def good_payload(event: str, view: wf.ApplicationView) -> dict[str, object]:
    """Arguments with which ``event``'s guards hold."""
    if event == "reject":
        return {"ground": "identity_mismatch"}
    if event == "collect":
        return {"receipt_no": view.receipt_no, "old_card_returned": True}
    if event == "extend_deadline":
        return {"days": 10, "reason": "the mountain road is closed by snow"}
    return {}


def drive(
    flow: wf.Workflow, state: str, kind: Kind = Kind.RENEWAL, n: int = 1
) -> wf.ApplicationView:
    """Submit a valid application and move it along the legal path to ``state``."""
    view = flow.submit(form(kind, n), actor=clerk())
    for event in PATH_TO[state]:
        view = flow.fire(view.id, event, actor=actor_for(event, view), **good_payload(event, view))
    assert view.state == state
    return view
