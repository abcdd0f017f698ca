"""Lost-and-found (丢失招领) as a state machine.

A found card is handed in at any office and held there. If its owner already applied for (or
received) a replacement since the card was reported lost or found, it is destroyed and the
destruction recorded; otherwise it is handed back to the owner in person, identity checked.
Whether a replacement exists reaches the guards as context computed in the command's
transaction; no I/O happens here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from statemachine import State

from workflow.definition import Definition, EventRule, Guard, Permission, ProcessMachine
from workflow.loss_report import ANY_ACCEPTANCE_CLERK, end_now
from workflow.models.enums import FoundCardState as S
from workflow.models.enums import Role
from workflow.models.schemas import NoPayload, ReturnPayload

CLERK_OF_HOLDING_OFFICE = Permission(
    Role.ACCEPTANCE_CLERK,
    unit_field="held_unit",
    description="an acceptance clerk of the office holding the card",
)

IDENTITY_CHECKED = Guard(
    name="identity_checked",
    rule="the owner collects the card in person, identity checked",
    check=lambda record, payload: payload.identity_checked,
    facts=lambda record, payload: {"identity_checked": payload.identity_checked},
    proven_by=lambda record, facts: facts.get("identity_checked") is True,
)

NO_REPLACEMENT = Guard(
    name="no_replacement",
    rule="the owner has not applied for a replacement since the card was reported lost or found",
    check=lambda record, payload: not record.replacement_since_loss,
    facts=lambda record, payload: {"replacement_since_loss": bool(record.replacement_since_loss)},
    proven_by=lambda record, facts: facts.get("replacement_since_loss") is False,
)

REPLACEMENT_EXISTS = Guard(
    name="replacement_exists",
    rule="the owner applied for or received a replacement: the found card is destroyed",
    check=lambda record, payload: bool(record.replacement_since_loss),
    facts=lambda record, payload: {"replacement_since_loss": bool(record.replacement_since_loss)},
    proven_by=lambda record, facts: facts.get("replacement_since_loss") is True,
)


def _found_facts(record: Any) -> Mapping[str, Any]:
    return {"held_unit": str(record.held_unit)}


class FoundCardMachine(ProcessMachine):
    """One identity card handed in as found. Returned and destroyed are final."""

    held = State("Held", value=S.HELD, initial=True)
    returned = State("Returned", value=S.RETURNED, final=True)
    destroyed = State("Destroyed", value=S.DESTROYED, final=True)

    return_to_owner = held.to(
        returned, validators=[IDENTITY_CHECKED.validator, NO_REPLACEMENT.validator]
    )
    destroy = held.to(destroyed, validators=[REPLACEMENT_EXISTS.validator])

    creation_event: ClassVar[str | None] = "register"
    creation: ClassVar[Permission | None] = ANY_ACCEPTANCE_CLERK
    creation_facts = staticmethod(_found_facts)
    rules: ClassVar[Mapping[str, EventRule]] = {
        "return_to_owner": EventRule(
            CLERK_OF_HOLDING_OFFICE,
            ReturnPayload,
            end_now,
            "The owner collects the card in person; the owner's loss report is withdrawn.",
        ),
        "destroy": EventRule(
            CLERK_OF_HOLDING_OFFICE,
            NoPayload,
            end_now,
            "A replacement exists: the found card is destroyed and the destruction recorded.",
        ),
    }


FOUND_CARD = Definition.of(FoundCardMachine, name="found_card")
"""The compiled definition of found cards."""
