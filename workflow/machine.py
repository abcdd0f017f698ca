"""The remote-acceptance process as a state machine: the single source of truth.

States, events, guards and who may fire each event are declared here and nowhere else; the
engine, the tests and the documentation read them from `ApplicationMachine` (through
`APPLICATION`). No I/O happens in this module.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from statemachine import State

from workflow.definition import Definition, EventRule, Guard, Permission, ProcessMachine
from workflow.models.enums import RENEWALS, RejectionGround, Role
from workflow.models.enums import State as S
from workflow.models.schemas import CollectPayload, NoPayload, RejectPayload

ISSUE_WITHIN = timedelta(days=60)
"""The card must be issued within 60 days of the registration form being submitted."""

REVIEW_WITHIN = timedelta(days=5)
"""The household-registration county must decide within 5 days of the transmission."""

# Who may act, by role and unit: the unit is matched against the application's regions.
CLERK_OF_ACCEPTANCE_POINT = Permission(
    Role.ACCEPTANCE_CLERK,
    unit_field="acceptance_region",
    description="an acceptance clerk of the acceptance county",
)
REVIEWER_OF_HUKOU_COUNTY = Permission(
    Role.HUKOU_REVIEWER,
    unit_field="hukou_region",
    description="a reviewer of the household-registration county",
)
PRODUCER_OF_ACCEPTANCE_PROVINCE = Permission(
    Role.CARD_PRODUCER,
    unit_field="acceptance_region",
    unit_digits=2,
    description="a card producer of the acceptance province",
)


def _receipt_matches(record: Any, payload: CollectPayload) -> bool:
    # Constant time: a wrong receipt must not reveal how much of it was right.
    return hmac.compare_digest(payload.receipt_no.encode(), str(record.receipt_no).encode())


RECEIPT_MATCHES = Guard(
    name="receipt_matches",
    rule="the applicant presents the receipt issued at submission",
    check=_receipt_matches,
    facts=lambda record, payload: {"receipt_matches": True},
    proven_by=lambda record, facts: facts.get("receipt_matches") is True,
)

OLD_CARD_HANDED_BACK = Guard(
    name="old_card_handed_back",
    rule="renewal: the old card must be handed back when the new one is received",
    check=lambda record, payload: record.kind not in RENEWALS or payload.old_card_returned,
    facts=lambda record, payload: {"old_card_returned": payload.old_card_returned},
    proven_by=lambda record, facts: (
        record.kind not in RENEWALS or facts.get("old_card_returned") is True
    ),
)

REASONS_GIVEN = Guard(
    name="reasons_given",
    rule="a refusal states its ground; the ground 'other' needs a written note",
    check=lambda record, payload: (
        payload.ground is not RejectionGround.OTHER or bool(payload.note.strip())
    ),
    facts=lambda record, payload: {"ground": str(payload.ground), "note": payload.note},
    proven_by=lambda record, facts: (
        facts.get("ground") in set(RejectionGround)
        and (facts.get("ground") != RejectionGround.OTHER or bool(str(facts.get("note")).strip()))
    ),
)


def _submission_facts(record: Any) -> Mapping[str, Any]:
    # What the acceptance point checked and what decides who may act later: kept in the first
    # history row so that a changed kind, region or fee in the stored record is detected.
    return {
        "kind": str(record.kind),
        "documents": sorted(str(d) for d in record.documents),
        "fee_paid": f"{Decimal(record.fee_paid):.2f}",
        "fee_waiver": str(record.fee_waiver) if record.fee_waiver else None,
        "hukou_region": str(record.hukou_region),
        "acceptance_region": str(record.acceptance_region),
    }


def _start_review_clock(record: Any, payload: Any, now: datetime) -> Mapping[str, Any]:
    return {"review_due_at": now + REVIEW_WITHIN}


def _record_refusal(record: Any, payload: RejectPayload, now: datetime) -> Mapping[str, Any]:
    return {"rejection_ground": str(payload.ground), "rejection_note": payload.note}


def _record_hand_over(record: Any, payload: CollectPayload, now: datetime) -> Mapping[str, Any]:
    return {"old_card_returned": payload.old_card_returned}


class ApplicationMachine(ProcessMachine):
    """Remote acceptance of one application for a resident identity card.

    Rejected and collected are final. Submission creates the record in ``submitted``; it is
    the ``creation_event``, not a transition.
    """

    submitted = State("Submitted", value=S.SUBMITTED, initial=True)
    transmitted = State("Transmitted", value=S.TRANSMITTED)
    approved = State("Approved", value=S.APPROVED)
    rejected = State("Rejected", value=S.REJECTED, final=True)
    produced = State("Produced", value=S.PRODUCED)
    ready = State("Ready", value=S.READY)
    collected = State("Collected", value=S.COLLECTED, final=True)

    transmit = submitted.to(transmitted)
    approve = transmitted.to(approved)
    reject = transmitted.to(rejected, validators=[REASONS_GIVEN.validator])
    produce = approved.to(produced)
    mark_ready = produced.to(ready)
    collect = ready.to(
        collected, validators=[RECEIPT_MATCHES.validator, OLD_CARD_HANDED_BACK.validator]
    )

    creation_event: ClassVar[str | None] = "submit"
    creation_facts = staticmethod(_submission_facts)
    creation: ClassVar[Permission | None] = CLERK_OF_ACCEPTANCE_POINT
    rules: ClassVar[Mapping[str, EventRule]] = {
        "transmit": EventRule(
            CLERK_OF_ACCEPTANCE_POINT,
            NoPayload,
            _start_review_clock,
            "The acceptance point sends the application to the household-registration county; "
            "the 5-day review period starts.",
        ),
        "approve": EventRule(
            REVIEWER_OF_HUKOU_COUNTY,
            NoPayload,
            None,
            "The household-registration county signs off: the details match the register.",
        ),
        "reject": EventRule(
            REVIEWER_OF_HUKOU_COUNTY,
            RejectPayload,
            _record_refusal,
            "The household-registration county refuses, with its ground; the applicant must "
            "apply at home instead.",
        ),
        "produce": EventRule(
            PRODUCER_OF_ACCEPTANCE_PROVINCE,
            NoPayload,
            None,
            "The card is produced and checked.",
        ),
        "mark_ready": EventRule(
            CLERK_OF_ACCEPTANCE_POINT,
            NoPayload,
            None,
            "The card has reached the acceptance point, is verified, and the applicant is told.",
        ),
        "collect": EventRule(
            CLERK_OF_ACCEPTANCE_POINT,
            CollectPayload,
            _record_hand_over,
            "The applicant collects the card with the receipt; on renewal the old card is "
            "handed back.",
        ),
    }


APPLICATION = Definition.of(ApplicationMachine, name="application")
"""The compiled definition the engine runs the application process with."""
