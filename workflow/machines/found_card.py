"""Lost-and-found (丢失招领) as a state machine.

A found card is handed in at any office and held there. If its owner already applied for (or
received) a replacement since the card was reported lost or found, it is destroyed and the
destruction recorded; otherwise it is handed back to the owner in person, identity checked.
Whether a replacement exists is a fact from other records that `MACHINE` declares and the
engine computes in the command's transaction; the machine class does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from pydantic import TypeAdapter
from sqlalchemy.engine import Connection
from statemachine import State

from workflow.engine.definition import Definition, EventRule, Guard, Permission, ProcessMachine
from workflow.engine.records import Repository
from workflow.engine.registry import Audit, Creation, Finding, Machine
from workflow.machines import application, loss_report
from workflow.machines.loss_report import ANY_ACCEPTANCE_CLERK, end_now, ended_from_history
from workflow.models.enums import FoundCardState as S
from workflow.models.enums import Role
from workflow.models.schemas import (
    HIDDEN,
    Actor,
    CitizenId,
    FoundCardView,
    NoPayload,
    ReturnPayload,
)
from workflow.models.tables import FoundCard

CLERK_OF_HOLDING_OFFICE = Permission(
    Role.ACCEPTANCE_CLERK,
    unit_field="held_unit",
    description="an acceptance clerk of the office holding the card",
)

IDENTITY_CHECKED = Guard(
    name="identity_checked",
    rule="the owner collects the card in person, identity checked",
    facts=lambda record, payload: {"identity_checked": payload.identity_checked},
    holds=lambda record, facts: facts.get("identity_checked") is True,
)

NO_REPLACEMENT = Guard(
    name="no_replacement",
    rule="the owner has not applied for a replacement since the card was reported lost or found",
    facts=lambda record, payload: {"replacement_since_loss": bool(record.replacement_since_loss)},
    holds=lambda record, facts: facts.get("replacement_since_loss") is False,
)

REPLACEMENT_EXISTS = Guard(
    name="replacement_exists",
    rule="the owner applied for or received a replacement: the found card is destroyed",
    facts=lambda record, payload: {"replacement_since_loss": bool(record.replacement_since_loss)},
    holds=lambda record, facts: facts.get("replacement_since_loss") is True,
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
    identity = ("citizen_id",)
    history_columns = ended_from_history("registered_at")
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


class FoundCardRepository(Repository):
    """Found cards."""

    def __init__(self) -> None:
        super().__init__(FoundCard.__table__, machine="found_card")  # type: ignore[arg-type]


REPOSITORY = FoundCardRepository()


def found_card_values(citizen_id: str, actor: Actor, now: datetime) -> dict[str, Any]:
    """The columns of a card handed in at the actor's office, which holds it."""
    return {
        "citizen_id": citizen_id,
        "held_unit": actor.unit,
        "registered_at": now,
        "ended_at": None,
    }


def _replacement_since_loss(conn: Connection, card: Mapping[Any, Any]) -> Mapping[str, Any]:
    # "Since the card was reported lost or found": from the citizen's latest loss report that
    # was not withdrawn (a withdrawn one ended with the card found; a closed one with a
    # replacement, leaving the lost card invalid for good), or from the hand-in if that was
    # earlier or there is no such report.
    citizen = str(card["citizen_id"])
    since = card["registered_at"]
    report = loss_report.REPOSITORY.latest_not_withdrawn(conn, citizen)
    if report is not None and report["reported_at"] < since:
        since = report["reported_at"]
    replaced = application.REPOSITORY.replacement_since(conn, citizen, since)
    return {"replacement_since_loss": replaced}


def _returned_during_a_replacement(conn: Connection, after: int) -> list[Finding]:
    rows = application.REPOSITORY.during_a_replacement(
        conn, REPOSITORY.table, "found_card", "return_to_owner", after
    )
    return [
        (r, seq, "returned while a replacement for the owner was in progress") for r, seq in rows
    ]


AUDITS = (
    Audit(
        "returned_during_a_replacement",
        "no found card goes back to an owner whose replacement is in progress",
        _returned_during_a_replacement,
    ),
)


MACHINE: Machine[str, FoundCardView] = Machine(
    definition=FOUND_CARD,
    repository=REPOSITORY,
    view=FoundCardView,
    creation=Creation(argument=TypeAdapter(CitizenId, config=HIDDEN), values=found_card_values),
    serialised_by="citizen_id",
    noun="found card",
    facts={"return_to_owner": _replacement_since_loss, "destroy": _replacement_since_loss},
    audits=AUDITS,
)
"""The found-card machine as the engine runs it."""
