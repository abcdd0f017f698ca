"""SQLAlchemy tables: the applications and the append-only transition log.

The transition log is shared by every process the library runs (its ``machine`` column says
which); the state tables each hold one kind of record with its ``state`` and ``version``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from workflow.models.enums import (
    FeeWaiver,
    FoundCardState,
    Kind,
    LossReportState,
    RejectionGround,
    State,
)

TABLE_PREFIX = "idcard_"
"""Every table, index, constraint, trigger, sequence and function the library creates starts
with it, so the library can share a database with a host's own tables."""
VERSION_TABLE = "idcard_alembic_version"
"""The library's Alembic version table; a host's Alembic keeps ``alembic_version``."""


def _unprefixed(constraint: object, table: sa.Table) -> str:
    return table.name.removeprefix(TABLE_PREFIX)


# Constraint names are the prefix, then what they were before the prefix (pk_applications
# became idcard_pk_applications): revision 0006 renames older databases by the same rule.
NAMING_CONVENTION: dict[str, Any] = {
    "unprefixed_table": _unprefixed,
    "ix": "idcard_ix_%(unprefixed_table)s_%(column_0_N_name)s",
    "uq": "idcard_uq_%(unprefixed_table)s_%(column_0_N_name)s",
    "ck": "idcard_ck_%(unprefixed_table)s_%(constraint_name)s",
    "fk": "idcard_fk_%(unprefixed_table)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "idcard_pk_%(unprefixed_table)s",
}

CLOSED_STATES: tuple[State, ...] = (State.REJECTED, State.COLLECTED)
"""The machine's final states; a test checks this against `ApplicationMachine.final_states`."""

AWAITING_CARD_STATES: tuple[State, ...] = (
    State.SUBMITTED,
    State.TRANSMITTED,
    State.APPROVED,
    State.PRODUCED,
)
"""States from which the card is still on its way (the 60-day limit runs); checked by a test."""


class UTCDateTime(sa.TypeDecorator[datetime]):
    """An aware UTC datetime on every database: stored as UTC, read back with ``tzinfo=UTC``."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("datetimes stored by idcard-workflow must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _one_of(column: str, values: Any, *, negate: bool = False) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} {'NOT IN' if negate else 'IN'} ({quoted})"


# Conditions of the partial indexes, as literal SQL: a query that repeats one word for word is
# answered from that index (SQLite can't match a bound parameter against an index condition).
OPEN_CONDITION = _one_of("state", CLOSED_STATES, negate=True)
AWAITING_CARD_CONDITION = _one_of("state", AWAITING_CARD_STATES)
AWAITING_REVIEW_CONDITION = _one_of("state", (State.TRANSMITTED,))
PENDING_CONDITION = "acked_at IS NULL"
ACTIVE_LOSS_CONDITION = _one_of("state", (LossReportState.REPORTED,))


class Base(DeclarativeBase):
    """The declarative base whose metadata the shipped migrations build."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class StateRecord:
    """The columns every machine's records have: what the engine reads and moves."""

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    state: Mapped[str] = mapped_column(sa.String(20))
    version: Mapped[int] = mapped_column(sa.Integer)
    """1 at creation, one more for each transition: the compare-and-set key."""
    chain_head: Mapped[str] = mapped_column(sa.String(64))
    """Hash of the last row of the record's history (see `workflow.chain`)."""


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
    old_card_returned: Mapped[bool] = mapped_column(sa.Boolean(create_constraint=False))

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


class TransitionLog(Base):
    """One row per transition of any record of any machine; rows are only ever appended."""

    __tablename__ = "idcard_transition_log"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    machine: Mapped[str] = mapped_column(sa.String(32))
    record_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    seq: Mapped[int] = mapped_column(sa.Integer)
    event: Mapped[str] = mapped_column(sa.String(32))
    from_state: Mapped[str | None] = mapped_column(sa.String(32))
    to_state: Mapped[str] = mapped_column(sa.String(32))
    actor_id: Mapped[str] = mapped_column(sa.String(64))
    actor_role: Mapped[str] = mapped_column(sa.String(32))
    actor_unit: Mapped[str] = mapped_column(sa.String(6))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    hash: Mapped[str] = mapped_column(sa.String(64))
    """SHA-256 over this row's content and the previous row's hash (see `workflow.chain`)."""

    __table_args__ = (
        # A history never has two entries at one position: racing writers can't both append.
        sa.UniqueConstraint("machine", "record_id", "seq"),
        sa.CheckConstraint("seq >= 1", name="seq"),
        # Only the first row (the creation) has no state before it.
        sa.CheckConstraint("(seq = 1) = (from_state IS NULL)", name="creation_first"),
        # Every other row is a transition the machine allows (creation rows carry a NULL and
        # are not matched, as SQL's MATCH SIMPLE has it).
        sa.ForeignKeyConstraint(
            ["machine", "event", "from_state", "to_state"],
            [
                "idcard_allowed_transitions.machine",
                "idcard_allowed_transitions.event",
                "idcard_allowed_transitions.from_state",
                "idcard_allowed_transitions.to_state",
            ],
            name="idcard_fk_transition_log_allowed_transitions",
        ),
    )


class AllowedTransition(Base):
    """The transitions of every machine, one row each: what the database lets a record do.

    Filled by the migrations with literal rows equal to the machine definitions (a test keeps
    them equal); triggers check every change of state and every history row against it.
    """

    __tablename__ = "idcard_allowed_transitions"

    machine: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    event: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    from_state: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    to_state: Mapped[str] = mapped_column(sa.String(32), primary_key=True)


class CommandRequest(Base):
    """A command that carried a ``request_id``: what it was and what it returned.

    Written in the transaction of the command itself, so a retry finds it exactly when the
    command took effect; the primary key keeps two racing retries from both taking effect.
    """

    __tablename__ = "idcard_command_requests"

    request_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    machine: Mapped[str] = mapped_column(sa.String(32))
    record_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    command: Mapped[str] = mapped_column(sa.String(32))
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    """SHA-256 over the command, its target, its actor and its arguments."""
    response: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxEvent(Base):
    """One row per transition, written with it, for the systems around the library to relay.

    Rows are delivered at least once, in ``id`` order (hence in order per record), until
    acknowledged.
    """

    __tablename__ = "idcard_outbox"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    machine: Mapped[str] = mapped_column(sa.String(32))
    record_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    seq: Mapped[int] = mapped_column(sa.Integer)
    event: Mapped[str] = mapped_column(sa.String(32))
    state: Mapped[str] = mapped_column(sa.String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        sa.UniqueConstraint("machine", "record_id", "seq"),
        sa.Index(
            "idcard_ix_outbox_pending",
            "id",
            sqlite_where=sa.text(PENDING_CONDITION),
            postgresql_where=sa.text(PENDING_CONDITION),
        ),
    )


__all__ = [
    "ACTIVE_LOSS_CONDITION",
    "AWAITING_CARD_CONDITION",
    "AWAITING_CARD_STATES",
    "AWAITING_REVIEW_CONDITION",
    "CLOSED_STATES",
    "OPEN_CONDITION",
    "PENDING_CONDITION",
    "AllowedTransition",
    "Application",
    "Base",
    "CommandRequest",
    "FoundCard",
    "LossReport",
    "OutboxEvent",
    "TransitionLog",
    "TABLE_PREFIX",
    "VERSION_TABLE",
    "UTCDateTime",
]
