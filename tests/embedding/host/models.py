"""The host's own models: a counter system that keeps its own applications, outbox and log.

The table names are deliberately the ones idcard-workflow used before it prefixed its own
(``applications``, ``outbox``, ``transition_log``): a host is free to use them.
"""

from __future__ import annotations

import os
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """The host's metadata root (not the library's ``workflow.Base``)."""


class Application(Base):
    """A job application at the host's own front desk; nothing to do with identity cards."""

    __tablename__ = "applications"

    id: Mapped[int] = mapped_column(primary_key=True)
    applicant: Mapped[str] = mapped_column(sa.String(100))
    status: Mapped[str] = mapped_column(sa.String(20), default="new")


class TransitionLog(Base):
    __tablename__ = "transition_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = mapped_column(sa.ForeignKey("applications.id"), index=True)
    note: Mapped[str] = mapped_column(sa.Text)


class Outbox(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    topic: Mapped[str] = mapped_column(sa.String(50))
    payload: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


if os.environ.get("HOST_EXTRA_MODEL"):
    # Used by the tests to show that the host's `alembic check` still sees the host's own
    # changes once the library's tables are filtered out.

    class CounterNote(Base):
        __tablename__ = "counter_notes"

        id: Mapped[int] = mapped_column(primary_key=True)
        text: Mapped[str] = mapped_column(sa.Text)
