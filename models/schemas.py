"""Pydantic schemas: the commands coming in and the views going out."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    model_validator,
)

from workflow.models.citizen_id import mask_citizen_id, normalize_citizen_id
from workflow.models.enums import (
    NATIONAL_FEE,
    RENEWALS,
    UNIT_DIGITS,
    Document,
    FeeWaiver,
    FoundCardState,
    Kind,
    LossReportState,
    RejectionGround,
    Role,
    State,
)


def _no_control_characters(value: str) -> str:
    # Line and paragraph separators (U+2028, U+2029) split a log line as a newline does. A
    # printable string has none of these (checked in C); others are looked at character by
    # character, since format characters and spaces other than " " are allowed.
    if value.isprintable():
        return value
    if any(unicodedata.category(c) in {"Cc", "Cs", "Zl", "Zp"} for c in value):
        raise ValueError("must not contain control characters or line breaks")
    return value


def _citizen_id(value: str) -> str:
    return normalize_citizen_id(value)


CitizenId = Annotated[str, StringConstraints(max_length=64), AfterValidator(_citizen_id)]
"""A GB 11643 citizen identity number; lowercase ``x`` is accepted and stored as ``X``."""

DivisionCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]
"""A 6-digit administrative-division code (GB/T 2260), checked for shape only."""

_PLAIN = AfterValidator(_no_control_characters)

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), _PLAIN]
"""A stripped, non-empty line of at most 64 characters with no control characters."""

Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000), _PLAIN]


Checked = Annotated[bool, Strict()]
"""What a clerk checked at the counter: True or False only, never "yes" or 1 (guards rest on it)."""

HIDDEN = ConfigDict(hide_input_in_errors=True)
"""Validation errors never echo the input: it may be a citizen number."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Reprs end up in logs: citizen numbers masked, receipt numbers never shown.
        for key, value in super().__repr_args__():
            if key == "citizen_id" and isinstance(value, str):
                yield key, mask_citizen_id(value)
            elif key == "receipt_no" and isinstance(value, str):
                yield key, "*" * len(value)
            else:
                yield key, value


class _Input(_Frozen):
    # An instance handed in is validated again: one built with model_construct skipped its
    # rules, and the library stores what it is given.
    model_config = ConfigDict(
        frozen=True, extra="forbid", hide_input_in_errors=True, revalidate_instances="always"
    )


class Actor(_Input):
    """Who fires a command: an identifier, a role and the unit the actor works in.

    ``unit`` is the 6-digit division code of the county for acceptance clerks and household-
    registration reviewers, and the 2-digit province code for card producers.
    """

    id: Name
    role: Role
    unit: Annotated[str, StringConstraints(pattern=r"^[0-9]{2}([0-9]{4})?$")]

    @model_validator(mode="after")
    def _unit_fits_role(self) -> Self:
        digits = UNIT_DIGITS[self.role]
        if len(self.unit) != digits:
            raise ValueError(f"unit of a {self.role} must be a {digits}-digit division code")
        return self


Documents = Annotated[AbstractSet[Document], AfterValidator(frozenset)]
"""Any set of documents (a ``set`` or a ``frozenset``), kept as a ``frozenset``."""


class SubmitApplication(_Input):
    """The remote-acceptance registration form, as filled in at the acceptance point."""

    kind: Kind
    citizen_id: CitizenId
    name: Name
    hukou_region: DivisionCode
    acceptance_region: DivisionCode
    documents: Documents
    fee_paid: Annotated[Decimal, Field(allow_inf_nan=False)]
    fee_waiver: FeeWaiver | None = None

    @model_validator(mode="after")
    def _documents_and_fee_fit_the_kind(self) -> Self:
        if self.kind in RENEWALS and Document.RESIDENT_ID_CARD not in self.documents:
            raise ValueError(f"documents: a {self.kind} needs the current resident_id_card")
        if self.kind is Kind.REPLACEMENT and not (
            self.documents & {Document.HOUSEHOLD_REGISTER, Document.RESIDENCE_PERMIT}
        ):
            raise ValueError(
                "documents: a replacement needs the household_register or the residence_permit"
            )
        due = Decimal(0) if self.fee_waiver is not None else NATIONAL_FEE[self.kind]
        if self.fee_paid != due:
            reason = (
                f"waived ({self.fee_waiver})" if self.fee_waiver else f"the fee for {self.kind}"
            )
            raise ValueError(f"fee_paid must be {due} yuan, {reason}; got {self.fee_paid}")
        return self


class RejectPayload(_Input):
    """What the household-registration reviewer gives when refusing an application."""

    ground: RejectionGround
    note: Note = ""


class CollectPayload(_Input):
    """What the clerk checks when the applicant comes for the card."""

    receipt_no: Annotated[str, StringConstraints(max_length=64)]
    old_card_returned: Checked = False


class ExtendPayload(_Input):
    """The statutory extension of the 60-day limit, where transport is difficult."""

    days: Annotated[int, Field(strict=True, ge=1, le=30)]
    """By how many days ``due_at`` moves: 1 to 30."""
    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), _PLAIN
    ]
    """Why the card can't be issued in time (the transport difficulty), in words."""


class ReportLoss(_Input):
    """A loss report as taken at the counter: whose card, and that the holder came in person
    with the identity checked (a loss is reported only so)."""

    citizen_id: CitizenId
    identity_checked: Checked = False


class WithdrawPayload(_Input):
    """What the clerk checks when a loss report is withdrawn."""

    card_presented: Checked = False


class ReturnPayload(_Input):
    """What the clerk checks when a found card is handed back to its owner."""

    identity_checked: Checked = False


class NoPayload(_Input):
    """An event that takes no arguments beyond the actor."""


class ApplicationView(_Frozen):
    """An application as the library reports it. Every datetime is timezone-aware UTC."""

    id: uuid.UUID
    kind: Kind
    state: State
    citizen_id: str
    name: str
    hukou_region: str
    acceptance_region: str
    documents: frozenset[Document]
    fee_paid: Decimal
    fee_waiver: FeeWaiver | None
    receipt_no: str
    version: int
    submitted_at: AwareDatetime
    due_at: AwareDatetime
    review_due_at: AwareDatetime | None
    rejection_ground: RejectionGround | None
    rejection_note: str | None
    old_card_returned: bool


class LossReportView(_Frozen):
    """A loss report as the library reports it. Every datetime is timezone-aware UTC."""

    id: uuid.UUID
    state: LossReportState
    version: int
    citizen_id: str
    reported_unit: str
    application_id: uuid.UUID | None
    reported_at: AwareDatetime
    ended_at: AwareDatetime | None


class FoundCardView(_Frozen):
    """A found card as the library reports it. Every datetime is timezone-aware UTC."""

    id: uuid.UUID
    state: FoundCardState
    version: int
    citizen_id: str
    held_unit: str
    registered_at: AwareDatetime
    ended_at: AwareDatetime | None


class TransitionRecord(_Frozen):
    """One entry of a record's history, oldest first; ``details`` holds the facts checked."""

    seq: int
    event: str
    from_state: str | None
    to_state: str
    actor_id: str
    actor_role: Role
    actor_unit: str
    at: AwareDatetime
    details: dict[str, Any]
    hash: str
    """SHA-256 over this row and the previous row's hash: the history's tamper-evident chain."""


class BulkRefusal(_Frozen):
    """One record a bulk command left alone, and why (the error it would have raised)."""

    record_id: uuid.UUID
    code: str
    message: str


class BulkReport(_Frozen):
    """What a bulk command did: the records it moved, and each one it refused with the reason."""

    event: str
    succeeded: list[uuid.UUID]
    refused: list[BulkRefusal]


class PendingEvent(_Frozen):
    """A transition waiting in the outbox to be relayed to the systems around the library."""

    id: int
    machine: str
    record_id: uuid.UUID
    seq: int
    event: str
    state: str
    at: AwareDatetime


class Reason(_Frozen):
    """Why an actor can't fire an event now: its ``kind`` is ``role``, ``unit`` or ``state``."""

    kind: Literal["role", "unit", "state"]
    message: str


class Condition(_Frozen):
    """A guard the event checks when it is fired, with its business rule in plain words."""

    guard: str
    rule: str


class EventOption(_Frozen):
    """One event as seen by one actor: whether it can fire it now, and if not, every reason."""

    event: str
    possible: bool
    reasons: list[Reason]
    conditions: list[Condition]


class Explanation(_Frozen):
    """What an actor can do with a record now (`Workflow.explain`)."""

    machine: str
    record_id: uuid.UUID
    state: str
    actor: Actor
    events: list[EventOption]

    @property
    def possible(self) -> list[str]:
        """The events the actor can fire now (subject to their conditions)."""
        return [option.event for option in self.events if option.possible]
