"""The queries every machine shares.

`Repository` works on any state table with the `StateRecord` columns and the shared transition
log; each machine's module adds its own queries in a subclass. `RequestRepository` and
`OutboxRepository` serve every machine.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Dialect, RowMapping
from sqlalchemy.sql.compiler import SQLCompiler

from workflow.engine.chain import CHAINED_FIELDS
from workflow.engine.store import LOCK_PREFIX, direct, driver_failed
from workflow.models.base import PENDING_CONDITION, CommandRequest, OutboxEvent, TransitionLog


class Prepared:
    """A statement of the command path, rendered once per dialect.

    When nothing observes the connection (`workflow.engine.store.direct`), it goes straight to
    the driver's cursor; otherwise through ``exec_driver_sql``, so SQLAlchemy's events, logging
    and error handling see it as they see any statement. Either way its parameters go through
    the type processors SQLAlchemy itself would apply, and a SELECT's values come back through
    its result processors: both ways send and return the same values.
    """

    def __init__(
        self,
        statement: sa.ClauseElement,
        keys: Sequence[str] | None = None,
        *,
        binary: bool = False,
    ) -> None:
        self.statement = statement
        self.keys = list(keys) if keys is not None else None
        self.binary = binary
        """Send the parameters in psycopg's binary format: for arrays, whose text format
        psycopg writes by quoting element after element in Python."""
        self._rendered: dict[tuple[str, str], _Rendered] = {}

    def _render(self, dialect: Dialect) -> _Rendered:
        rendered = self._rendered.get((dialect.name, dialect.driver))
        if rendered is None:
            compiled = cast(
                SQLCompiler, self.statement.compile(dialect=dialect, column_keys=self.keys)
            )
            sql = compiled.string
            if self.binary and dialect.driver == "psycopg":
                sql = re.sub(r"%\((\w+)\)s", r"%(\1)b", sql)
            names = compiled.positiontup if compiled.positional else list(compiled.binds)
            plan = tuple(
                (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
                for name in names or ()
            )
            columns: tuple[tuple[str, sa.types.TypeEngine[Any]], ...] = ()
            if isinstance(self.statement, sa.Select):
                columns = tuple((str(c.key), c.type) for c in self.statement.selected_columns)
            rendered = _Rendered(sql, compiled.positional, plan, columns)
            self._rendered[dialect.name, dialect.driver] = rendered
        return rendered

    def run(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Execute with one set of parameters; the number of rows it changed."""
        rendered = self._render(conn.dialect)
        values = rendered.convert(params)
        dbapi = direct(conn)
        if dbapi is None:
            return int(conn.exec_driver_sql(rendered.sql, values).rowcount)
        return int(_send(conn, dbapi, rendered.sql, values).rowcount)

    def run_many(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> int:
        """Execute once for each set of parameters (the driver's ``executemany``); the number
        of rows changed, where the driver counts them."""
        rendered = self._render(conn.dialect)
        values = [rendered.convert(p) for p in params]
        dbapi = direct(conn)
        if dbapi is None:
            return int(conn.exec_driver_sql(rendered.sql, values).rowcount)
        return int(_send(conn, dbapi, rendered.sql, values, many=True).rowcount)

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run a SELECT; its rows, each a dict of the selected columns' keys to their values as
        SQLAlchemy would read them."""
        rendered = self._render(conn.dialect)
        values = rendered.convert(params)
        dbapi = direct(conn)
        if dbapi is None:
            result = conn.exec_driver_sql(rendered.sql, values)
            reading = rendered.reading(conn.dialect, result.cursor)
            fetched = [tuple(row) for row in result.all()]
        else:
            cursor = _send(conn, dbapi, rendered.sql, values)
            reading = rendered.reading(conn.dialect, cursor)
            fetched = _fetch(conn, cursor)
        keys, readers = reading
        rows = [dict(zip(keys, row, strict=True)) for row in fetched]
        for row in rows:
            for key, read in readers:
                row[key] = read(row[key])
        return rows


def _send(conn: Connection, dbapi: Any, sql: str, values: Any, *, many: bool = False) -> Any:
    """Execute on the driver's connection; the cursor, whose results are read at once.

    One cursor per driver connection, kept with the connection (the pool's ``info`` for it):
    psycopg sets up each new cursor in Python, about a quarter of a short statement's cost.
    A cursor that failed is dropped."""
    info = conn.connection.info
    held = info.get(_CURSOR)
    if held is not None and held[0] is dbapi:
        cursor = held[1]
    else:
        cursor = dbapi.cursor()
        info[_CURSOR] = (dbapi, cursor)
    try:
        if many:
            cursor.executemany(sql, values)
        else:
            cursor.execute(sql, values)
    except conn.dialect.loaded_dbapi.Error as exc:
        info.pop(_CURSOR, None)
        driver_failed(conn, exc, sql, values, cursor)
    return cursor


def _fetch(conn: Connection, cursor: Any) -> list[Any]:
    """The rows of a statement `_send` ran. psycopg converts each value as it hands the rows
    over, so reading them can fail after the statement ran (a time past year 9999, which the
    database keeps and Python can't): handled as SQLAlchemy handles a failed fetch, which
    names no statement."""
    try:
        return list(cursor.fetchall())
    except conn.dialect.loaded_dbapi.Error as exc:
        conn.connection.info.pop(_CURSOR, None)
        driver_failed(conn, exc, None, None, cursor)


_CURSOR = "idcard_workflow.cursor"
"""The key of the command path's cursor in a pooled connection's ``info``."""


class _Rendered:
    """A statement's SQL for one dialect, and how its parameters and columns are converted."""

    __slots__ = ("columns", "get", "names", "positional", "processors", "read", "sql")

    def __init__(
        self,
        sql: str,
        positional: bool,
        plan: tuple[tuple[str, Callable[[Any], Any] | None], ...],
        columns: tuple[tuple[str, sa.types.TypeEngine[Any]], ...],
    ) -> None:
        self.sql = sql
        self.positional = positional
        self.names = tuple(name for name, _ in plan)
        # The parameters' values in order, taken in one call; then those that need it
        # converted (most need nothing).
        get = itemgetter(*self.names) if self.names else (lambda values: ())
        self.get: Callable[[Mapping[str, Any]], Any] = (
            (lambda values: (get(values),)) if len(self.names) == 1 else get
        )
        self.processors = tuple(
            (i, processor) for i, (_, processor) in enumerate(plan) if processor is not None
        )
        self.columns = columns
        self.read: tuple[tuple[str, ...], tuple[tuple[str, Callable[[Any], Any]], ...]] | None = (
            None
        )

    def convert(self, values: Mapping[str, Any]) -> Any:
        """The driver's parameters: a tuple in order, or a dict by name."""
        taken = self.get(values)
        if self.processors:
            taken = list(taken)
            for i, processor in self.processors:
                taken[i] = processor(taken[i])
        if self.positional:
            return tuple(taken)
        return dict(zip(self.names, taken, strict=True))

    def reading(
        self, dialect: Dialect, cursor: Any
    ) -> tuple[tuple[str, ...], tuple[tuple[str, Callable[[Any], Any]], ...]]:
        """The columns' keys, and the processor of each column that has one.

        The driver's type codes (psycopg's OIDs; None on SQLite) choose some processors, so
        they are read from the first result's description. A statement's columns keep their
        types, and psycopg builds a description anew each time it is asked (a Python object
        per column), so later results are not asked again."""
        if self.read is None:
            codes = [d[1] for d in cursor.description]
            processors = [
                (key, kind.dialect_impl(dialect).result_processor(dialect, code))
                for (key, kind), code in zip(self.columns, codes, strict=True)
            ]
            keys = tuple(key for key, _ in self.columns)
            needed = tuple((key, read) for key, read in processors if read is not None)
            self.read = (keys, needed)
        return self.read


class Write(NamedTuple):
    """One statement of a move (`Repository.writes`): its parameters (a sequence of them,
    one per record, when it runs ``many`` times), and how many rows it must change."""

    statement: Prepared
    params: Any
    changes: int | None = None
    many: bool = False

    def sent(self, dialect: Dialect) -> tuple[str, Any]:
        """The SQL and the driver's parameters the library sends for it on this dialect."""
        rendered = self.statement._render(dialect)
        if self.many:
            return rendered.sql, [rendered.convert(p) for p in self.params]
        return rendered.sql, rendered.convert(self.params)


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
        self._to_change = Prepared(self._load.with_for_update())
        self._serialised: dict[str, Prepared] = {}
        self._many_to_change: dict[str | None, Prepared] = {}
        self._inserts: dict[tuple[str, ...], Prepared] = {}
        self._append = Prepared(sa.insert(self.log), keys=LOG_KEYS)
        self._moves: dict[tuple[str, ...], Prepared] = {}
        self._moves_appending: dict[tuple[str, ...], Prepared] = {}
        self._moves_set: dict[tuple[str, ...], Prepared] = {}
        self._appending_set: Prepared | None = None

    def load(self, conn: Connection, record_id: uuid.UUID) -> RowMapping | None:
        return conn.execute(self._load, {"record_id": record_id}).mappings().one_or_none()

    def load_to_change(
        self, conn: Connection, record_id: uuid.UUID, *, serialised_by: str | None = None
    ) -> dict[str, Any] | None:
        """The record a command is about to change, or None if there is none, in one statement.

        On PostgreSQL the record's row is locked until the transaction ends and, first, the
        value of its column ``serialised_by`` (a fixed column), with the lock `lock_value`
        takes: every command on the same value takes the two in this order, so two of them
        never wait for each other in opposite orders. SQLite has one writer at a time: the
        write lock the transaction began with.
        """
        if serialised_by is None or conn.dialect.name != "postgresql":
            statement = self._to_change
        else:
            statement = self._serialised.get(serialised_by) or self._serialising(serialised_by)
        found = statement.rows(conn, {"record_id": record_id})
        return found[0] if found else None

    def _serialising(self, column: str) -> Prepared:
        t = self.table
        # The value's lock, then the row's. The CTE holds a volatile function, so PostgreSQL
        # runs it as written (never inlined) and has taken its lock by the time the join
        # hands the row up to be locked.
        value_lock = (
            sa.select(_value_lock(t.c[column]))
            .where(t.c.id == sa.bindparam("record_id"))
            .cte("serialised")
        )
        query = (
            sa.select(t)
            .select_from(t.join(value_lock, sa.true()))
            .where(t.c.id == sa.bindparam("record_id"))
            .with_for_update(of=t)
        )
        prepared = self._serialised[column] = Prepared(query)
        return prepared

    def load_many_to_change(
        self,
        conn: Connection,
        record_ids: Sequence[uuid.UUID],
        *,
        serialised_by: str | None = None,
    ) -> dict[uuid.UUID, dict[str, Any]]:
        """`load_to_change` for many records (those that exist), in one statement.

        On PostgreSQL the values of their ``serialised_by`` column are all locked first, in
        one order, then their rows, in id order: two bulk commands never wait for each other
        in opposite orders, nor for a single command."""
        postgres = conn.dialect.name == "postgresql"
        key = serialised_by if postgres else None
        statement = self._many_to_change.get(key)
        if statement is None:
            statement = self._many_to_change[key] = self._loading_many(key, postgres)
        found = statement.rows(conn, {"record_ids": list(record_ids)})
        # Keyed by UUID whatever the driver hands back: a host may have psycopg load UUIDs as
        # text on its connections, and the caller looks its records up by UUID.
        return {_as_uuid(row["id"]): row for row in found}

    def _loading_many(self, serialised_by: str | None, postgres: bool) -> Prepared:
        t = self.table
        if not postgres:
            # The ids as one JSON array: one parameter however many there are.
            ids: sa.Select[Any] = sa.select(sa.column("value")).select_from(
                sa.func.json_each(sa.bindparam("record_ids", type_=_IdList(t.c.id.type)))
            )
            return Prepared(sa.select(t).where(t.c.id.in_(ids)).order_by(t.c.id))
        wanted = t.c.id == sa.any_(sa.bindparam("record_ids", type_=ARRAY(t.c.id.type)))
        query = sa.select(t).where(wanted).order_by(t.c.id).with_for_update(of=t)
        if serialised_by is None:
            return Prepared(query)
        # As `_serialising`: the CTE's locks are all taken before the join hands up a row.
        values = (
            sa.select(t.c[serialised_by].label("value"))
            .where(wanted)
            .distinct()
            .order_by(t.c[serialised_by])
            .subquery("serialised_values")
        )
        locks = sa.select(sa.func.count(_value_lock(values.c.value)).label("locked")).cte(
            "serialised"
        )
        return Prepared(query.join_from(t, locks, sa.true()))

    def insert(self, conn: Connection, values: Mapping[str, Any]) -> None:
        keys = tuple(values)
        prepared = self._inserts.get(keys)
        if prepared is None:
            prepared = self._inserts[keys] = Prepared(sa.insert(self.table), keys=keys)
        prepared.run(conn, values)

    def move_and_append(
        self,
        conn: Connection,
        record_id: uuid.UUID,
        entry: Mapping[str, Any],
        *,
        version: int,
        state: str,
        new_state: str,
        changes: Mapping[str, Any],
    ) -> bool:
        """Move the record only if nobody moved it since it was read (a compare-and-set on
        its id, version and state), and append its history row if it moved (the database
        writes the outbox row, migration 0005); say whether it moved."""
        move = {
            "record_id": record_id,
            "version": version,
            "state": state,
            "new_state": new_state,
            "changes": changes,
        }
        return self.run(conn, self.writes(conn.dialect.name, [move], [entry]))

    def move_many_and_append(
        self,
        conn: Connection,
        moves: Sequence[Mapping[str, Any]],
        entries: Sequence[Mapping[str, Any]],
    ) -> bool:
        """`move_and_append` for many records, in a few statements; each move holds that
        method's arguments (``record_id``, ``version``, ``state``, ``new_state``, ``changes``)
        and ``entries`` the history rows in the same order. Says whether every record moved;
        if one did not, the caller must roll back."""
        return self.run(conn, self.writes(conn.dialect.name, moves, entries))

    def writes(
        self,
        dialect: str,
        moves: Sequence[Mapping[str, Any]],
        entries: Sequence[Mapping[str, Any]],
    ) -> list[Write]:
        """The statements that make these moves and append their rows on a database of this
        dialect, in order: the compare-and-sets, grouped by the columns they set, then the
        inserts of the rows.

        On PostgreSQL one record's move is a single statement (the insert takes its row from
        the update's, so a record that did not move gets none): one round trip. Many records'
        moves are one statement per group and one insert, each parameter an array with a value
        per record: the server plans each once and its statement triggers run once (revision
        0011). On SQLite the driver runs the same update and insert per record.
        """
        postgres = dialect == "postgresql"
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for move in moves:
            changes = move["changes"]
            groups.setdefault(tuple(sorted(changes)), []).append(
                _cas(move["record_id"], move["version"], move["state"], move["new_state"], changes)
            )
        if len(moves) == 1:
            ((columns, (params,)),) = groups.items()
            if postgres:
                return [Write(self._moving_and_appending(columns), {**params, **entries[0]}, 1)]
            return [Write(self._move(columns), params, 1), Write(self._append, entries[0])]
        if not postgres:
            writes = [
                Write(self._move(columns), params, len(params), many=True)
                for columns, params in groups.items()
            ]
            return [*writes, Write(self._append, list(entries), many=True)] if entries else writes
        writes = [
            Write(self._move_set(columns), _columns_of(params), len(params))
            for columns, params in groups.items()
        ]
        return [*writes, Write(self._append_set(), _columns_of(entries))] if entries else writes

    @staticmethod
    def run(conn: Connection, writes: Sequence[Write]) -> bool:
        """Send the writes in order; False, and the rest unsent, as soon as one changes fewer
        rows than it must."""
        for write in writes:
            if write.many:
                changed = write.statement.run_many(conn, write.params)
                counted = conn.dialect.supports_sane_multi_rowcount
            else:
                changed = write.statement.run(conn, write.params)
                counted = True
            if write.changes is not None and counted and changed != write.changes:
                return False
        return True

    def _moving_and_appending(self, columns: tuple[str, ...]) -> Prepared:
        prepared = self._moves_appending.get(columns)
        if prepared is None:
            log = self.log
            update = self._move(columns).statement
            assert isinstance(update, sa.Update)
            moved = update.returning(self.table.c.id).cte("moved")
            row = sa.select(*(sa.bindparam(k, type_=log.c[k].type) for k in LOG_KEYS))
            statement = sa.insert(log).from_select(list(LOG_KEYS), row.select_from(moved))
            prepared = self._moves_appending[columns] = Prepared(statement.add_cte(moved))
        return prepared

    def _move_set(self, columns: tuple[str, ...]) -> Prepared:
        """PostgreSQL: `_move` for many records as one statement."""
        prepared = self._moves_set.get(columns)
        if prepared is None:
            t = self.table
            given = {"_id": t.c.id, "_version": t.c.version, "_state": t.c.state}
            given.update((name, t.c[name]) for name in ("state", "version", *columns))
            table = _quoted(t.name)
            sets = ", ".join(f"{_quoted(n)} = v.{_quoted(n)}" for n in given if n[0] != "_")
            sql = (
                f"UPDATE {table} SET {sets} FROM {_unnest(given)} WHERE {table}.id = v._id "
                f"AND {table}.version = v._version AND {table}.state = v._state"
            )
            prepared = self._moves_set[columns] = Prepared(_arrays(sql, given), binary=True)
        return prepared

    def _append_set(self) -> Prepared:
        """PostgreSQL: the insert of many history rows as one statement."""
        if self._appending_set is None:
            given = {name: self.log.c[name] for name in LOG_KEYS}
            listed = ", ".join(_quoted(name) for name in given)
            sql = f"INSERT INTO {_quoted(self.log.name)} ({listed}) SELECT * FROM {_unnest(given)}"
            self._appending_set = Prepared(_arrays(sql, given), binary=True)
        return self._appending_set

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
        self._append.run(conn, entry)

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
        query = ids_within(query, log.c.record_id, at_least=low, before=high)
        return [(_as_uuid(row[0]), int(row[1])) for row in conn.execute(query)]


class _IdList(sa.types.TypeDecorator[list[Any]]):
    """A list of ids sent as one JSON array of their stored forms (SQLite's ``json_each``)."""

    impl = sa.Text
    cache_ok = True

    def __init__(self, id_type: sa.types.TypeEngine[Any]) -> None:
        super().__init__()
        self.id_type = id_type

    def process_bind_param(self, value: list[Any] | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        stored = self.id_type.dialect_impl(dialect).bind_processor(dialect)
        return json.dumps([stored(v) if stored else v for v in value])


def _value_lock(value: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """PostgreSQL: the lock `workflow.engine.store.lock_value` takes on ``value``, as an
    expression a query evaluates (the same key, so the two wait for each other)."""
    key = sa.literal_column(f"'{LOCK_PREFIX}'", sa.Text).concat(value)
    return sa.func.pg_advisory_xact_lock(
        sa.func.hashtextextended(key, sa.literal_column("0", sa.BigInteger))
    )


def _quoted(name: str) -> str:
    """A name of the library's tables or columns, which need no quoting (checked)."""
    if not (name.isidentifier() and name.isascii() and name.islower()):
        raise ValueError(f"not a plain lower-case SQL name: {name!r}")
    return name


def _unnest(columns: Mapping[str, sa.Column[Any]]) -> str:
    """PostgreSQL: ``unnest(...) AS v(...)``, one array parameter per column, in order (the
    parameters are typed: SQLAlchemy casts each to its column's type's array)."""
    arrays = ", ".join(f":{name}" for name in columns)
    return f"unnest({arrays}) AS v({', '.join(_quoted(name) for name in columns)})"


def _arrays(sql: str, columns: Mapping[str, sa.Column[Any]]) -> sa.TextClause:
    """The statement with each parameter an array of its column's type: SQLAlchemy converts
    each element as it converts a value of the column."""
    return sa.text(sql).bindparams(
        *(sa.bindparam(name, type_=ARRAY(column.type)) for name, column in columns.items())
    )


def _columns_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Rows of parameters as one list of values per parameter."""
    return {name: [row[name] for row in rows] for name in rows[0]}


def _cas(
    record_id: uuid.UUID, version: int, state: str, new_state: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """The parameters of a compare-and-set (`Repository._move`)."""
    return {
        "_id": record_id,
        "_version": version,
        "_state": state,
        "state": new_state,
        "version": version + 1,
        **changes,
    }


_Query = TypeVar("_Query", bound="sa.Select[*tuple[Any, ...]]")


def ids_within(
    query: _Query,
    column: sa.ColumnElement[Any],
    *,
    after: Any = None,
    at_least: Any = None,
    before: Any = None,
) -> _Query:
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
