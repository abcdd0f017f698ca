"""The tables every machine shares, and the declarative base.

`StateRecord` holds the columns the engine moves on any machine's table; the transition log,
the allowed transitions, the command requests and the outbox are shared by every machine. The
engine (`workflow.engine`) imports these and nothing machine-specific.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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


class StoredBoolean(sa.TypeDecorator[bool]):
    """A boolean that reads back only what the library writes. SQLite keeps any value in any
    column and SQLAlchemy's own boolean reads anything but 0 as true: here a stored value other
    than 0 or 1 is refused with `ValueError`, so a value planted by hand is named
    (`malformed_row` in verification) instead of read as true. PostgreSQL's boolean column
    holds nothing else, and is read as SQLAlchemy reads it."""

    impl = sa.Boolean(create_constraint=False)
    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def process(value: Any) -> bool | None:
            if value is None:
                return None
            if type(value) is int and value in (0, 1):
                return value == 1
            raise ValueError(f"a boolean column holds {value!r}, not 0 or 1")

        return process


PENDING_CONDITION = "acked_at IS NULL"


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
    """Hash of the last row of the record's history (see `workflow.engine.chain`)."""


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
    """SHA-256 over this row's content and the previous row's hash (see `workflow.engine.chain`)."""

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


class HistoryMark(Base):
    """The last history row written before a revision (and the library that needs it) began
    recording a set of facts: every later row must carry them, so leaving one out is no way to
    make a forged row look older than it is. Written by the migration, then frozen."""

    __tablename__ = "idcard_history_marks"

    revision: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    last_row: Mapped[int] = mapped_column(sa.BigInteger)


__all__ = [
    "NAMING_CONVENTION",
    "PENDING_CONDITION",
    "TABLE_PREFIX",
    "VERSION_TABLE",
    "AllowedTransition",
    "Base",
    "CommandRequest",
    "HistoryMark",
    "OutboxEvent",
    "StateRecord",
    "TransitionLog",
    "UTCDateTime",
]
