"""What the three SQLAlchemy peers share: the columns of their models, the engine, the rounds.

Transitions, python-statemachine and sqlalchemy-fsm each map their own ``Application`` and
``History`` classes on their own declarative base, in their own database; the columns are the
library's business columns (without its version and hash chain), declared once here as mixins.
Each peer adds its state column its own way. What a SQLAlchemy user would add for concurrency
is SQLAlchemy's own optimistic lock, ``version_id_col``: the UPDATE then carries ``WHERE
version = ?`` and a lost race raises `StaleDataError`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, declared_attr, mapped_column, sessionmaker

from .process import Officer, fresh_values, now
from .variant import Peer


class ApplicationColumns:
    """An application's business columns, its history and its optimistic lock."""

    __tablename__ = "applications"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(20))
    citizen_id: Mapped[str] = mapped_column(sa.String(18), index=True)
    name: Mapped[str] = mapped_column(sa.String(64))
    hukou_region: Mapped[str] = mapped_column(sa.String(6))
    acceptance_region: Mapped[str] = mapped_column(sa.String(6))
    documents: Mapped[list[str]] = mapped_column(sa.JSON)
    fee_paid: Mapped[Decimal] = mapped_column(sa.Numeric(8, 2))
    fee_waiver: Mapped[str | None] = mapped_column(sa.String(32))
    receipt_no: Mapped[str] = mapped_column(sa.String(32), unique=True)
    submitted_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    due_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    review_due_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    rejection_ground: Mapped[str | None] = mapped_column(sa.String(32))
    rejection_note: Mapped[str | None] = mapped_column(sa.Text)
    old_card_returned: Mapped[bool] = mapped_column(default=False)
    version: Mapped[int] = mapped_column()

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.version}


class HistoryColumns:
    """One row per transition: which, from where to where, by whom, when."""

    __tablename__ = "application_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = mapped_column(sa.ForeignKey("applications.id"), index=True)
    event: Mapped[str] = mapped_column(sa.String(32))
    source: Mapped[str] = mapped_column(sa.String(20))
    target: Mapped[str] = mapped_column(sa.String(20))
    officer_id: Mapped[str] = mapped_column(sa.String(64))
    at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))

    @classmethod
    def of(cls, application: Any, event: str, source: str, target: str, officer: Officer) -> Any:
        return cls(
            application_id=application.id,
            event=event,
            source=source,
            target=target,
            officer_id=officer.id,
            at=now(),
        )


def engine(url: str) -> sa.Engine:
    """An engine as SQLAlchemy's documentation sets up SQLite for durability: WAL and
    ``synchronous=FULL`` (and foreign keys) on every new connection. PostgreSQL keeps the
    server's ``synchronous_commit=on``."""
    created = sa.create_engine(url)
    if created.dialect.name == "sqlite":

        @sa.event.listens_for(created, "connect")
        def pragmas(dbapi_connection: Any, record: Any) -> None:
            cursor = dbapi_connection.cursor()
            for pragma in ("journal_mode = WAL", "synchronous = FULL", "foreign_keys = ON"):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

    return created


class OrmPeer(Peer):
    """A peer on SQLAlchemy's ORM, with its own ``Application`` and ``History`` classes."""

    application: Any
    history: Any
    salt = 2

    def __init__(self, url: str) -> None:
        super().__init__()
        self.engine = engine(url)
        self.application.metadata.create_all(self.engine)
        self.sessions = sessionmaker(self.engine)

    def fire(self, event: str, app_id: Any, who: Any) -> None:
        # SQLAlchemy's unit of work: one session and one transaction per transition; the
        # commit flushes the state change (with the version check) and the history row.
        with self.sessions.begin() as session:
            self.move(session.get_one(self.application, app_id), event, who)

    def move(self, application: Any, event: str, who: Any) -> None:
        """Fire ``event`` on the loaded ``application`` the framework's way."""
        raise NotImplementedError

    def create(self, count: int) -> list[Any]:
        rows = [
            fresh_values(n, self.salt) | {"version": 1}
            for n in range(self.created, self.created + count)
        ]
        with self.sessions.begin() as session:
            objects = [self.application(**row) for row in rows]
            session.add_all(objects)
            session.flush()
            return [o.id for o in objects]

    def state_and_history(self, app_id: Any) -> tuple[str, int]:
        with Session(self.engine) as session:
            state = session.get_one(self.application, app_id).state
            count = session.scalar(
                sa.select(sa.func.count()).where(self.history.application_id == app_id)
            )
        return state, count or 0

    def totals(self) -> tuple[dict[str, int], int]:
        with Session(self.engine) as session:
            by_state = session.execute(
                sa.select(self.application.state, sa.func.count()).group_by(self.application.state)
            )
            states = {str(state): count for state, count in by_state}
            history = session.scalar(sa.select(sa.func.count()).select_from(self.history))
        return states, history or 0

    def close(self) -> None:
        self.engine.dispose()
