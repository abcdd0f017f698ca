"""The queries every machine shares.

`Repository` works on any state table with the `StateRecord` columns and the shared transition
log; each machine's module adds its own queries in a subclass. `RequestRepository` and
`OutboxRepository` serve every machine.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from workflow.engine.chain import CHAINED_FIELDS
from workflow.models.base import PENDING_CONDITION, CommandRequest, OutboxEvent, TransitionLog


class Prepared:
    """A statement rendered once per dialect and run with ``exec_driver_sql``.

    SQLAlchemy's events, logging and error handling still apply; its per-execution compilation
    and parameter machinery, most of a command's cost, does not. Parameters go through the
    same type processors SQLAlchemy itself would apply.
    """

    def __init__(self, statement: sa.Insert | sa.Update, keys: Sequence[str] | None = None) -> None:
        self.statement = statement
        self.keys = list(keys) if keys is not None else None
        self._rendered: dict[str, tuple[str, list[str] | None, dict[str, Any]]] = {}

    def execute(
        self, conn: Connection, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> Any:
        dialect = conn.dialect
        rendered = self._rendered.get(dialect.name)
        if rendered is None:
            compiled = self.statement.compile(dialect=dialect, column_keys=self.keys)
            names = list(compiled.positiontup or []) if compiled.positional else None
            processors = {}
            for name, bind in compiled.binds.items():
                processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if processor is not None:
                    processors[name] = processor
            rendered = self._rendered[dialect.name] = (compiled.string, names, processors)
        sql, names, processors = rendered

        def convert(values: Mapping[str, Any]) -> Any:
            ready = {
                key: processors[key](value) if key in processors else value
                for key, value in values.items()
            }
            return tuple(ready[name] for name in names) if names is not None else ready

        if isinstance(params, Mapping):
            return conn.exec_driver_sql(sql, convert(params))
        return conn.exec_driver_sql(sql, [convert(p) for p in params])


LOG_KEYS = (*CHAINED_FIELDS, "hash")
"""The columns of a history row the engine writes (all but the surrogate id)."""


class Repository:
    """Loads, creates and moves records of one machine, and keeps their history.

    The statements of the command path are built once, with bound parameters, so each command
    only binds values to statements SQLAlchemy has already compiled.
    """

    def __init__(self, table: sa.Table, machine: str) -> None:
        self.table = table
        self.log: sa.Table = TransitionLog.__table__  # type: ignore[assignment]
        self.outbox: sa.Table = OutboxEvent.__table__  # type: ignore[assignment]
        self.machine = machine
        t = table
        self._load = sa.select(t).where(t.c.id == sa.bindparam("record_id"))
        self._load_locked = self._load.with_for_update()
        self._insert = sa.insert(t)
        self._append = Prepared(sa.insert(self.log), keys=LOG_KEYS)
        self._moves: dict[tuple[str, ...], Prepared] = {}

    def load(
        self, conn: Connection, record_id: uuid.UUID, *, lock: bool = False
    ) -> RowMapping | None:
        query = self._load_locked if lock else self._load
        return conn.execute(query, {"record_id": record_id}).mappings().one_or_none()

    def load_many(
        self, conn: Connection, record_ids: Sequence[uuid.UUID], *, lock: bool = False
    ) -> dict[uuid.UUID, RowMapping]:
        """The records with these ids (those that exist), locked where the database can."""
        t = self.table
        # Locks are taken in id order, so two bulk commands can't deadlock on each other.
        query = sa.select(t).where(t.c.id.in_(list(record_ids))).order_by(t.c.id)
        if lock:
            query = query.with_for_update()
        return {row["id"]: row for row in conn.execute(query).mappings()}

    def insert(self, conn: Connection, values: Mapping[str, Any]) -> None:
        conn.execute(self._insert, dict(values))

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
        params = {
            "_id": record_id,
            "_version": version,
            "_state": state,
            "state": new_state,
            "version": version + 1,
            **changes,
        }
        return int(self._move(tuple(sorted(changes))).execute(conn, params).rowcount) == 1

    def move_many(self, conn: Connection, moves: Sequence[Mapping[str, Any]]) -> bool:
        """`compare_and_set` for many records in one statement execution; ``moves`` hold the
        same keys as its arguments. Says whether every record moved."""
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for move in moves:
            changes = move["changes"]
            by_columns.setdefault(tuple(sorted(changes)), []).append(
                {
                    "_id": move["record_id"],
                    "_version": move["version"],
                    "_state": move["state"],
                    "state": move["new_state"],
                    "version": move["version"] + 1,
                    **changes,
                }
            )
        moved = 0
        for columns, params in by_columns.items():
            moved += int(self._move(columns).execute(conn, params).rowcount)
        exact = conn.dialect.supports_sane_multi_rowcount
        return moved == len(moves) if exact else True

    def _move(self, columns: tuple[str, ...]) -> Prepared:
        prepared = self._moves.get(columns)
        if prepared is None:
            t = self.table
            statement = (
                sa.update(t)
                .where(
                    t.c.id == sa.bindparam("_id"),
                    t.c.version == sa.bindparam("_version"),
                    t.c.state == sa.bindparam("_state"),
                )
                .values({name: sa.bindparam(name) for name in ("state", "version", *columns)})
            )
            prepared = self._moves[columns] = Prepared(statement)
        return prepared

    def append(self, conn: Connection, entry: Mapping[str, Any]) -> None:
        """Append a history row; the database writes its outbox row (migration 0005)."""
        self._append.execute(conn, entry)

    def append_many(self, conn: Connection, entries: Sequence[Mapping[str, Any]]) -> None:
        """Append history rows in one insert, however many (and so their outbox rows)."""
        if entries:
            self._append.execute(conn, entries)

    def history(self, conn: Connection, record_id: uuid.UUID) -> Sequence[RowMapping]:
        log = self.log
        query = (
            sa.select(log)
            .where(log.c.machine == self.machine, log.c.record_id == record_id)
            .order_by(log.c.seq)
        )
        return conn.execute(query).mappings().all()

    def records_after(
        self,
        conn: Connection,
        after: uuid.UUID | None,
        limit: int,
        *,
        at_least: uuid.UUID | None = None,
        before: uuid.UUID | None = None,
    ) -> Sequence[RowMapping]:
        """The next ``limit`` records in id order after ``after`` (keyset paging), within
        ``at_least`` (included) and ``before`` (excluded) when given."""
        query = sa.select(self.table).order_by(self.table.c.id).limit(limit)
        query = ids_within(query, self.table.c.id, after=after, at_least=at_least, before=before)
        return conn.execute(query).mappings().all()

    def histories(self, conn: Connection, record_ids: Sequence[uuid.UUID]) -> Sequence[RowMapping]:
        """The history rows of these records, grouped by record and in order."""
        if not record_ids:
            return []
        log = self.log
        query = (
            sa.select(log)
            .where(log.c.machine == self.machine, log.c.record_id.in_(record_ids))
            .order_by(log.c.record_id, log.c.seq)
        )
        return conn.execute(query).mappings().all()

    def orphan_histories(
        self,
        conn: Connection,
        record_id: uuid.UUID | None = None,
        *,
        id_range: tuple[uuid.UUID | None, uuid.UUID | None] = (None, None),
    ) -> Sequence[tuple[uuid.UUID, int]]:
        """``(record_id, first seq)`` of history rows whose record does not exist. A record id
        that is no UUID (a row planted on SQLite) comes out as the nil UUID."""
        log, t = self.log, self.table
        query = (
            sa.select(sa.type_coerce(log.c.record_id, sa.String), sa.func.min(log.c.seq))
            .select_from(log.outerjoin(t, t.c.id == log.c.record_id))
            .where(log.c.machine == self.machine, t.c.id.is_(None))
            .group_by(log.c.record_id)
            .order_by(log.c.record_id)
        )
        if record_id is not None:
            query = query.where(log.c.record_id == record_id)
        low, high = id_range
        if low is not None:
            query = query.where(log.c.record_id >= low)
        if high is not None:
            query = query.where(log.c.record_id < high)
        return [(_as_uuid(row[0]), int(row[1])) for row in conn.execute(query)]


def ids_within(
    query: sa.Select[Any],
    column: sa.ColumnElement[Any],
    *,
    after: Any = None,
    at_least: Any = None,
    before: Any = None,
) -> sa.Select[Any]:
    """``query`` kept to the rows whose ``column`` is after ``after``, at least ``at_least``
    and before ``before``: each bound when given (a value, or a bound parameter)."""
    if after is not None:
        query = query.where(column > after)
    if at_least is not None:
        query = query.where(column >= at_least)
    if before is not None:
        query = query.where(column < before)
    return query


def _as_uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(hex=str(value))
    except ValueError:
        return uuid.UUID(int=0)


class RequestRepository:
    """Commands that carried a request id, shared by every machine."""

    def __init__(self) -> None:
        self.table: sa.Table = CommandRequest.__table__  # type: ignore[assignment]

    def find(self, conn: Connection, request_id: str) -> RowMapping | None:
        t = self.table
        return conn.execute(sa.select(t).where(t.c.request_id == request_id)).mappings().first()

    def record(self, conn: Connection, row: Mapping[str, Any]) -> None:
        conn.execute(sa.insert(self.table).values(**row))


class OutboxRepository:
    """The outbox shared by every machine: pending events in order, and acknowledgements."""

    def __init__(self) -> None:
        self.table: sa.Table = OutboxEvent.__table__  # type: ignore[assignment]

    def pending(self, conn: Connection, limit: int) -> Sequence[RowMapping]:
        t = self.table
        query = sa.select(t).where(sa.text(PENDING_CONDITION)).order_by(t.c.id).limit(limit)
        return conn.execute(query).mappings().all()

    def ack(self, conn: Connection, event_ids: Sequence[int], at: datetime) -> int:
        t = self.table
        result = conn.execute(
            sa.update(t)
            .where(t.c.id.in_(list(event_ids)), t.c.acked_at.is_(None))
            .values(acked_at=at)
        )
        return int(result.rowcount)
