"""Every query the library runs.

`Repository` is generic: it works on any state table with ``id``, ``state`` and ``version``
columns and the shared transition log. `ApplicationRepository` adds the application's queries.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from models.tables import (
    AWAITING_CARD_CONDITION,
    AWAITING_REVIEW_CONDITION,
    OPEN_CONDITION,
    Application,
    TransitionLog,
)


class Repository:
    """Loads, creates and moves records of one machine, and keeps their history."""

    def __init__(self, table: sa.Table, machine: str) -> None:
        self.table = table
        self.log: sa.Table = TransitionLog.__table__  # type: ignore[assignment]
        self.machine = machine

    def load(
        self, conn: Connection, record_id: uuid.UUID, *, lock: bool = False
    ) -> RowMapping | None:
        query = sa.select(self.table).where(self.table.c.id == record_id)
        if lock:
            query = query.with_for_update()
        return conn.execute(query).mappings().one_or_none()

    def insert(self, conn: Connection, values: Mapping[str, Any]) -> None:
        conn.execute(sa.insert(self.table).values(**values))

    def compare_and_set(
        self,
        conn: Connection,
        record_id: uuid.UUID,
        *,
        version: int,
        state: str,
        new_state: str,
        changes: Mapping[str, Any],
    ) -> bool:
        """Move the record only if nobody moved it since it was read; say whether it moved."""
        t = self.table
        result = conn.execute(
            sa.update(t)
            .where(t.c.id == record_id, t.c.version == version, t.c.state == state)
            .values(state=new_state, version=version + 1, **changes)
        )
        return result.rowcount == 1

    def append(self, conn: Connection, entry: Mapping[str, Any]) -> None:
        conn.execute(sa.insert(self.log).values(machine=self.machine, **entry))

    def history(self, conn: Connection, record_id: uuid.UUID) -> Sequence[RowMapping]:
        log = self.log
        query = (
            sa.select(log)
            .where(log.c.machine == self.machine, log.c.record_id == record_id)
            .order_by(log.c.seq)
        )
        return conn.execute(query).mappings().all()


class ApplicationRepository(Repository):
    """The application table's own queries: open applications and overdue ones."""

    def __init__(self) -> None:
        super().__init__(Application.__table__, machine="application")  # type: ignore[arg-type]

    def has_open(self, conn: Connection, citizen_id: str) -> bool:
        t = self.table
        query = sa.select(t.c.id).where(t.c.citizen_id == citizen_id, sa.text(OPEN_CONDITION))
        return conn.execute(query.limit(1)).first() is not None

    def overdue(self, conn: Connection, as_of: datetime, limit: int) -> Sequence[RowMapping]:
        t = self.table
        query = (
            sa.select(t)
            .where(sa.text(AWAITING_CARD_CONDITION), t.c.due_at < as_of)
            .order_by(t.c.due_at, t.c.id)
            .limit(limit)
        )
        return conn.execute(query).mappings().all()

    def overdue_reviews(
        self, conn: Connection, as_of: datetime, limit: int
    ) -> Sequence[RowMapping]:
        t = self.table
        query = (
            sa.select(t)
            .where(sa.text(AWAITING_REVIEW_CONDITION), t.c.review_due_at < as_of)
            .order_by(t.c.review_due_at, t.c.id)
            .limit(limit)
        )
        return conn.execute(query).mappings().all()
