"""The machines' own tables: applications, loss reports, found cards.

Each holds one kind of record with the `StateRecord` columns the engine moves; the tables every
machine shares (the transition log, the outbox, ...) are in `workflow.models.base` and are
re-exported here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from workflow.models.base import (
    NAMING_CONVENTION,
    PENDING_CONDITION,
    TABLE_PREFIX,
    VERSION_TABLE,
    AllowedTransition,
    Base,
    CommandRequest,
    OutboxEvent,
    StateRecord,
    StoredBoolean,
    TransitionLog,
    UTCDateTime,
)
from workflow.models.enums import (
    FeeWaiver,
    FoundCardState,
    Kind,
    LossReportState,
    RejectionGround,
    State,
)

CLOSED_STATES: tuple[State, ...] = (State.REJECTED, State.COLLECTED)
"""The machine's final states; a test checks this against `ApplicationMachine.final_states`."""

AWAITING_CARD_STATES: tuple[State, ...] = (
    State.SUBMITTED,
    State.TRANSMITTED,
    State.APPROVED,
    State.PRODUCED,
)
"""States from which the card is still on its way (the 60-day limit runs); checked by a test."""


def _one_of(column: str, values: Any, *, negate: bool = False) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} {'NOT IN' if negate else 'IN'} ({quoted})"


# Conditions of the partial indexes, as literal SQL: a query that repeats one word for word is
# answered from that index (SQLite can't match a bound parameter against an index condition).
OPEN_CONDITION = _one_of("state", CLOSED_STATES, negate=True)
AWAITING_CARD_CONDITION = _one_of("state", AWAITING_CARD_STATES)
AWAITING_REVIEW_CONDITION = _one_of("state", (State.TRANSMITTED,))
ACTIVE_LOSS_CONDITION = _one_of("state", (LossReportState.REPORTED,))


class Application(StateRecord, Base):
    """One remote-acceptance application for a resident identity card."""

    __tablename__ = "idcard_applications"

    kind: Mapped[str] = mapped_column(sa.String(20))
    citizen_id: Mapped[str] = mapped_column(sa.String(18))
    name: Mapped[str] = mapped_column(sa.String(64))
    hukou_region: Mapped[str] = mapped_column(sa.String(6))
    acceptance_region: Mapped[str] = mapped_column(sa.String(6))
    documents: Mapped[list[str]] = mapped_column(sa.JSON)
    fee_paid: Mapped[Decimal] = mapped_column(sa.Numeric(8, 2))
    fee_waiver: Mapped[str | None] = mapped_column(sa.String(32))
    receipt_no: Mapped[str] = mapped_column(sa.String(32))
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    review_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rejection_ground: Mapped[str | None] = mapped_column(sa.String(32))
    rejection_note: Mapped[str | None] = mapped_column(sa.Text)
    old_card_returned: Mapped[bool] = mapped_column(StoredBoolean)

    __table_args__ = (
        sa.CheckConstraint(_one_of("state", State), name="state"),
        sa.CheckConstraint(_one_of("kind", Kind), name="kind"),
        sa.CheckConstraint(
            "fee_waiver IS NULL OR " + _one_of("fee_waiver", FeeWaiver), name="fee_waiver"
        ),
        sa.CheckConstraint(
            "rejection_ground IS NULL OR " + _one_of("rejection_ground", RejectionGround),
            name="rejection_ground",
        ),
        sa.CheckConstraint("version >= 1", name="version"),
        sa.UniqueConstraint("receipt_no"),
        # One open application per citizen: the database refuses a second one.
        sa.Index(
            "idcard_uq_applications_open_citizen",
            "citizen_id",
            unique=True,
            sqlite_where=sa.text(OPEN_CONDITION),
            postgresql_where=sa.text(OPEN_CONDITION),
        ),
        # Found cards and loss reports look up a citizen's replacement applications.
        sa.Index("idcard_ix_applications_citizen_id", "citizen_id"),
        # The overdue queries read these partial indexes only: flat in table size.
        sa.Index(
            "idcard_ix_applications_overdue",
            "due_at",
            sqlite_where=sa.text(AWAITING_CARD_CONDITION),
            postgresql_where=sa.text(AWAITING_CARD_CONDITION),
        ),
        sa.Index(
            "idcard_ix_applications_overdue_review",
            "review_due_at",
            sqlite_where=sa.text(AWAITING_REVIEW_CONDITION),
            postgresql_where=sa.text(AWAITING_REVIEW_CONDITION),
        ),
    )


class LossReport(StateRecord, Base):
    """A report that a resident identity card was lost (挂失申报)."""

    __tablename__ = "idcard_loss_reports"

    citizen_id: Mapped[str] = mapped_column(sa.String(18))
    reported_unit: Mapped[str] = mapped_column(sa.String(6))
    """The division code of the office where the loss was reported."""
    application_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    """The replacement application that filed this report, if one did."""
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        sa.CheckConstraint(_one_of("state", LossReportState), name="state"),
        sa.CheckConstraint("version >= 1", name="version"),
        # At most one active report per citizen: the database refuses a second one.
        sa.Index(
            "idcard_uq_loss_reports_active_citizen",
            "citizen_id",
            unique=True,
            sqlite_where=sa.text(ACTIVE_LOSS_CONDITION),
            postgresql_where=sa.text(ACTIVE_LOSS_CONDITION),
        ),
    )


class FoundCard(StateRecord, Base):
    """A resident identity card handed in as found (丢失招领)."""

    __tablename__ = "idcard_found_cards"

    citizen_id: Mapped[str] = mapped_column(sa.String(18))
    held_unit: Mapped[str] = mapped_column(sa.String(6))
    """The division code of the office that holds the card."""
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        sa.CheckConstraint(_one_of("state", FoundCardState), name="state"),
        sa.CheckConstraint("version >= 1", name="version"),
        sa.Index("idcard_ix_found_cards_citizen_id", "citizen_id"),
    )


__all__ = [
    "ACTIVE_LOSS_CONDITION",
    "AWAITING_CARD_CONDITION",
    "AWAITING_CARD_STATES",
    "AWAITING_REVIEW_CONDITION",
    "CLOSED_STATES",
    "NAMING_CONVENTION",
    "OPEN_CONDITION",
    "PENDING_CONDITION",
    "TABLE_PREFIX",
    "VERSION_TABLE",
    "AllowedTransition",
    "Application",
    "Base",
    "CommandRequest",
    "FoundCard",
    "LossReport",
    "OutboxEvent",
    "StateRecord",
    "TransitionLog",
    "UTCDateTime",
]
