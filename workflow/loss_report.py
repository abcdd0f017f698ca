"""Loss reporting (挂失申报) as a state machine.

A loss can be reported at any police station or identity-card office in the country; applying
for a replacement counts as reporting it. The report is withdrawn when the holder comes back in
person with the found card, and closed for good when a replacement card is collected. No I/O
happens here: facts from other records (whether a replacement was collected) reach the guards
as context the engine computes in the command's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from statemachine import State

from workflow.definition import Definition, EventRule, Guard, Permission, ProcessMachine
from workflow.models.enums import LossReportState as S
from workflow.models.enums import Role
from workflow.models.schemas import NoPayload, WithdrawPayload

ANY_ACCEPTANCE_CLERK = Permission(
    Role.ACCEPTANCE_CLERK,
    unit_field=None,
    description="an acceptance clerk of any office in the country",
)

CARD_PRESENTED = Guard(
    name="card_presented",
    rule="the holder comes in person with the found card",
    check=lambda record, payload: payload.card_presented,
    facts=lambda record, payload: {"card_presented": payload.card_presented},
    proven_by=lambda record, facts: facts.get("card_presented") is True,
)

REPLACEMENT_COLLECTED = Guard(
    name="replacement_collected",
    rule="a replacement card has been collected: the lost card stays invalid for good",
    check=lambda record, payload: bool(record.replacement_collected),
    facts=lambda record, payload: {"replacement_collected": bool(record.replacement_collected)},
    proven_by=lambda record, facts: facts.get("replacement_collected") is True,
)


def _report_facts(record: Any) -> Mapping[str, Any]:
    application = record.application_id
    return {
        "reported_unit": str(record.reported_unit),
        "application_id": str(application) if application else None,
    }


def end_now(record: Any, payload: Any, now: datetime) -> Mapping[str, Any]:
    """The effect of an event into a final state: the record's ``ended_at``."""
    return {"ended_at": now}


class LossReportMachine(ProcessMachine):
    """One report that a citizen's identity card was lost. Withdrawn and closed are final."""

    reported = State("Reported", value=S.REPORTED, initial=True)
    withdrawn = State("Withdrawn", value=S.WITHDRAWN, final=True)
    closed = State("Closed", value=S.CLOSED, final=True)

    withdraw = reported.to(withdrawn, validators=[CARD_PRESENTED.validator])
    close = reported.to(closed, validators=[REPLACEMENT_COLLECTED.validator])

    creation_event: ClassVar[str | None] = "report"
    creation: ClassVar[Permission | None] = ANY_ACCEPTANCE_CLERK
    creation_facts = staticmethod(_report_facts)
    rules: ClassVar[Mapping[str, EventRule]] = {
        "withdraw": EventRule(
            ANY_ACCEPTANCE_CLERK,
            WithdrawPayload,
            end_now,
            "The holder came back in person with the found card: the card is valid again.",
        ),
        "close": EventRule(
            ANY_ACCEPTANCE_CLERK,
            NoPayload,
            end_now,
            "A replacement card was collected: the lost card stays invalid for good.",
        ),
    }


LOSS_REPORT = Definition.of(LossReportMachine, name="loss_report")
"""The compiled definition of loss reports."""
