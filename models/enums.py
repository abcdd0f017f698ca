"""The closed vocabularies of the domain. Members compare equal to their lowercase values."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum


class Kind(StrEnum):
    """What the applicant asks for."""

    RENEWAL = "renewal"
    """Expiry or changed details: the current card is presented and handed back."""
    DAMAGED_RENEWAL = "damaged_renewal"
    """The current card is damaged: presented and handed back."""
    REPLACEMENT = "replacement"
    """The card was lost: the household register book or residence permit is presented."""


class State(StrEnum):
    """The states of an application (`workflow.machines.application` orders them)."""

    SUBMITTED = "submitted"
    TRANSMITTED = "transmitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    PRODUCED = "produced"
    READY = "ready"
    COLLECTED = "collected"


class LossReportState(StrEnum):
    """The states of a loss report."""

    REPORTED = "reported"
    WITHDRAWN = "withdrawn"
    CLOSED = "closed"


class FoundCardState(StrEnum):
    """The states of a card handed in as found."""

    HELD = "held"
    RETURNED = "returned"
    DESTROYED = "destroyed"


class Role(StrEnum):
    """Who an actor is; the unit an actor works in is interpreted per role."""

    ACCEPTANCE_CLERK = "acceptance_clerk"
    HUKOU_REVIEWER = "hukou_reviewer"
    CARD_PRODUCER = "card_producer"


class Document(StrEnum):
    """Documents an applicant presents at the acceptance point."""

    RESIDENT_ID_CARD = "resident_id_card"
    HOUSEHOLD_REGISTER = "household_register"
    RESIDENCE_PERMIT = "residence_permit"


class FeeWaiver(StrEnum):
    """Grounds on which the fee is waived."""

    MINIMUM_SUBSISTENCE = "minimum_subsistence"
    RURAL_HARDSHIP = "rural_hardship"


class RejectionGround(StrEnum):
    """Grounds on which the household-registration county refuses a remote application."""

    FIRST_APPLICATION = "first_application"
    IDENTITY_MISMATCH = "identity_mismatch"
    APPEARANCE_CHANGED = "appearance_changed"
    DOCUMENT_FRAUD_RECORD = "document_fraud_record"
    BAD_CREDIT_RECORD = "bad_credit_record"
    OTHER = "other"


NATIONAL_FEE: dict[Kind, Decimal] = {
    Kind.RENEWAL: Decimal("20"),
    Kind.DAMAGED_RENEWAL: Decimal("40"),
    Kind.REPLACEMENT: Decimal("40"),
}
"""The national fee in yuan for each kind of application."""

RENEWALS: frozenset[Kind] = frozenset({Kind.RENEWAL, Kind.DAMAGED_RENEWAL})
"""Kinds on which the old card must be presented at submission and handed back at collection."""

UNIT_DIGITS: dict[Role, int] = {
    Role.ACCEPTANCE_CLERK: 6,
    Role.HUKOU_REVIEWER: 6,
    Role.CARD_PRODUCER: 2,
}
"""Length of the division code naming an actor's unit: a county (6 digits) or a province (2)."""
