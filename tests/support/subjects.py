"""One subject per registered machine: how a test drives it through its handle.

Every machine is driven the same way (`Workflow.handle(name)`: create, fire, get); what is
particular to a machine is only what its events take when their guards should hold, and what
creates one of its records. Per-machine tests iterate `SUBJECTS`, which follows the registry.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import workflow as wf
from tests.support.builders import ACCEPTANCE, citizen_id, clerk, form
from workflow.engine.registry import Machine
from workflow.machines import REGISTRY

View = Any
"""An ApplicationView, LossReportView or FoundCardView."""

GOOD_PAYLOADS: dict[str, dict[str, Any]] = {
    "reject": {"ground": "identity_mismatch", "note": ""},
    "extend_deadline": {"days": 10, "reason": "the mountain road is closed by snow"},
    "withdraw": {"card_presented": True},
    "return_to_owner": {"identity_checked": True},
}
"""Arguments under which an event's own guards hold (facts from elsewhere aside)."""


@dataclass(frozen=True)
class Subject:
    """A registered machine as the tests drive it."""

    machine: Machine[Any, Any]

    @property
    def name(self) -> str:
        return self.machine.name

    def __repr__(self) -> str:
        return self.name

    def argument(self, n: int = 1) -> Any:
        """What creates a record for citizen ``n``: a renewal form for applications (the kind
        with the most guards), a loss report taken in person, the citizen number of a found
        card."""
        if self.name == "application":
            return form(wf.Kind.RENEWAL, n)
        if self.name == "loss_report":
            return wf.ReportLoss(citizen_id=citizen_id(n), identity_checked=True)
        return citizen_id(n)

    def create(self, flow: wf.Workflow, n: int = 1, *, actor: wf.Actor | None = None) -> View:
        return flow.handle(self.name).create(self.argument(n), actor=actor or clerk(ACCEPTANCE))

    def get(self, flow: wf.Workflow, record_id: uuid.UUID) -> View:
        return flow.handle(self.name).get(record_id)

    def good_payload(self, event: str, view: View) -> dict[str, Any]:
        if event == "collect":
            return {"receipt_no": view.receipt_no, "old_card_returned": True}
        return dict(GOOD_PAYLOADS.get(event, {}))

    def fire(
        self,
        flow: wf.Workflow,
        view: View,
        event: Any,
        actor: wf.Actor,
        payload: dict[str, Any] | None = None,
    ) -> View:
        """Fire ``event`` (any name) with ``payload``, or with arguments under which its own
        guards hold."""
        arguments = self.good_payload(event, view) if payload is None else payload
        return flow.handle(self.name).fire(view.id, event, actor=actor, **arguments)


SUBJECTS: dict[str, Subject] = {m.name: Subject(m) for m in REGISTRY}
"""A subject for every registered machine, in the registry's order."""
