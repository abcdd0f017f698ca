"""Reading records and their histories back in bulk, for verification and checkpoints.

Verification reads every row of the database, and building SQLAlchemy rows (a `Row`, then a
`RowMapping`, each value through its type's processor) was most of its cost. Here a statement
is rendered once per dialect and run with ``exec_driver_sql``, so SQLAlchemy's events, logging
and error handling still apply; the rows come back as the driver returns them, and only the
columns that need it are converted: with the conversion SQLAlchemy itself would apply (a JSON
document, a decimal, a boolean), so each value is the one a `RowMapping` gives. Times take a
shorter road to the same value (`utc_time`).

Ids are the exception: a record's id stays the text the database holds (32 hex digits on
SQLite, the canonical form on PostgreSQL) and is given as the UUID's canonical text (what
``str`` of the UUID gives, and what the hash chain hashes); only an id that is reported becomes
a `UUID`. On SQLite, which keeps any value in any column, a record id that is not 32 lowercase
hex digits raises `Unusual`: the caller then reads that batch the ordinary way, whose answer is
the reference.

Generic: works on any machine's table with the `StateRecord` columns, and the shared log.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from workflow.engine.records import Repository
from workflow.models.base import UTCDateTime

Processor = Callable[[Any], Any]


class Unusual(Exception):
    """A stored value that is not of the shape the library writes (planted by hand)."""


class Statement:
    """A SELECT rendered once per dialect and run through ``exec_driver_sql``.

    Parameters go through the type processors SQLAlchemy would apply. `rows` returns the rows
    as the driver does; `processors` gives, for each column that needs one, the conversion
    SQLAlchemy would apply (none for the columns named ``raw``)."""

    def __init__(self, select: sa.Select[Any], *, raw: Sequence[str] = ()) -> None:
        self.select = select
        self.names = [str(c.key) for c in select.selected_columns]
        self.raw = frozenset(raw)
        self._rendered: dict[str, tuple[Any, str, list[str] | None, dict[str, Any]]] = {}
        self._results: dict[str, list[tuple[int, Processor]]] = {}

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Every row of the result, as the driver returns it."""
        dialect = conn.dialect
        rendered = self._rendered.get(dialect.name)
        if rendered is None:
            compiled = self.select.compile(dialect=dialect)
            names = list(compiled.positiontup or []) if compiled.positional else None
            processors = {}
            for name, bind in compiled.binds.items():
                processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if processor is not None:
                    processors[name] = processor
            rendered = (compiled, compiled.string, names, processors)
            self._rendered[dialect.name] = rendered
        compiled, sql, names, processors = rendered
        values = compiled.construct_params(dict(params))
        ready = {k: processors[k](v) if k in processors else v for k, v in values.items()}
        arguments = tuple(ready[n] for n in names) if names is not None else ready
        result = conn.exec_driver_sql(sql, arguments)
        if dialect.name not in self._results:
            self._results[dialect.name] = self._result_processors(dialect, result)
        cursor = result.cursor
        try:
            # The driver's own rows: SQLAlchemy's `Row` per row is what this module avoids.
            return list(cursor.fetchall())
        except dialect.loaded_dbapi.Error as exc:
            error = dialect.loaded_dbapi.Error
            raise sa.exc.DBAPIError.instance(sql, arguments, exc, error, dialect=dialect) from exc
        finally:
            result.close()

    def processors(self, dialect: Dialect) -> list[tuple[int, Processor]]:
        """``(position, conversion)`` of the columns whose values need converting."""
        return self._results[dialect.name]

    def _result_processors(
        self, dialect: Dialect, result: sa.CursorResult[Any]
    ) -> list[tuple[int, Processor]]:
        description = result.cursor.description or ()
        found: list[tuple[int, Processor]] = []
        for position, column in enumerate(self.select.selected_columns):
            if column.key in self.raw:
                continue
            coltype = description[position][1] if position < len(description) else None
            processor: Processor | None
            processor = column.type.dialect_impl(dialect).result_processor(dialect, coltype)
            if isinstance(column.type, UTCDateTime) and processor is not None:
                impl = column.type.impl_instance.dialect_impl(dialect)
                processor = utc_time(processor, impl.result_processor(dialect, coltype))
            elif isinstance(column.type, sa.JSON) and processor is not None:
                processor = json_document(processor, dialect)
            if processor is not None:
                found.append((position, processor))
        return found


def utc_time(exact: Processor, parse: Processor | None) -> Processor:
    """The conversion of a `UTCDateTime` value read back: ``exact`` (SQLAlchemy's own, its
    dialect's ``parse`` then `UTCDateTime.process_result_value`), by a shorter road to the same
    aware UTC datetime where there is one.

    - The driver made the datetime (``parse`` is None: PostgreSQL): converted to UTC, as
      `UTCDateTime` does.
    - The text the library writes on SQLite (``YYYY-MM-DD HH:MM:SS.ffffff``) when SQLAlchemy
      parses it with ``fromisoformat``: parsed with a UTC offset appended, in one step (where
      SQLAlchemy parses, then sets the zone with ``replace``, the slower part).

    Anything else goes to ``exact``."""
    by_iso = parse is not None and _parses_iso(parse)

    def convert(value: Any) -> Any:
        if by_iso and type(value) is str and len(value) == 26 and value[10] == " ":
            try:
                moment = _from_iso(value + "+00:00")
            except ValueError:
                pass
            else:
                if moment.tzinfo is UTC:
                    return moment
        elif parse is None and type(value) is datetime and value.tzinfo is not None:
            return value.astimezone(UTC)
        return exact(value)

    return convert


def _parses_iso(parse: Processor) -> bool:
    """Whether ``parse`` is ``datetime.fromisoformat`` (SQLAlchemy's SQLite parse since 2.0):
    only that reads an offset."""
    try:
        found = parse("2000-01-01 00:00:00+01:00")
    except (TypeError, ValueError):
        return False
    return isinstance(found, datetime) and found.utcoffset() == timedelta(hours=1)


_from_iso = datetime.fromisoformat


def json_document(exact: Processor, dialect: Dialect) -> Processor:
    """The conversion of a JSON document stored as text: ``exact`` (SQLAlchemy's own, which
    is ``json.loads`` unless the engine was given its own deserializer), by a shorter road for
    an object or array with nothing around it: the scanner ``json.loads`` itself runs, without
    its Python-level steps (two whitespace matches, three calls). Anything else, and any
    document the scanner refuses, goes to ``exact``."""
    if getattr(dialect, "_json_deserializer", None) not in (None, json.loads):
        return exact

    def convert(value: Any) -> Any:
        if type(value) is str and value[:1] in _OPENERS:
            try:
                document, end = _scan(value, 0)
            except (StopIteration, ValueError):
                return exact(value)
            if end == len(value):
                return document
        return exact(value)

    return convert


_OPENERS = ("{", "[")
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]

_HEX_ID = re.compile(r"[0-9a-f]{32}")


def shown_id(stored: Any, dialect: str) -> str:
    """The canonical text of a record id as the database holds it (`Unusual` if it is not one
    the library writes)."""
    if dialect == "sqlite":
        if type(stored) is not str or _HEX_ID.fullmatch(stored) is None:
            raise Unusual("a record id is not 32 lowercase hex digits")
        return f"{stored[:8]}-{stored[8:12]}-{stored[12:16]}-{stored[16:20]}-{stored[20:]}"
    if type(stored) is not str:
        raise Unusual("a record id is not text")
    return stored


def stored_text(column: sa.ColumnElement[Any], dialect: str) -> sa.ColumnElement[Any]:
    """A UUID column as the text the database holds: SQLite's is text already (and a value
    planted there must come back as it is); PostgreSQL's is cast."""
    if dialect == "sqlite":
        return sa.type_coerce(column, sa.String).label(column.key)
    return sa.cast(column, sa.Text).label(column.key)


LOG_COLUMNS = (
    "id",
    "machine",
    "record_id",
    "seq",
    "event",
    "from_state",
    "to_state",
    "actor_id",
    "actor_role",
    "actor_unit",
    "at",
    "details",
    "hash",
)
"""The log's columns, in the order `log_row` reads them."""


def log_columns(log: sa.Table, dialect: str) -> list[sa.ColumnElement[Any]]:
    """The log's columns to select for `log_row`, its record id as stored text."""
    return [
        stored_text(log.c[name], dialect) if name == "record_id" else log.c[name]
        for name in LOG_COLUMNS
    ]


def log_row(
    values: Sequence[Any], at: Processor, details: Processor | None, record_id: Any
) -> dict[str, Any]:
    """A history row as verification reads it: each column by name, ``at`` and ``details``
    converted, the record id given."""
    (
        row_id,
        machine,
        _,
        seq,
        event,
        from_state,
        to_state,
        actor_id,
        actor_role,
        actor_unit,
        moment,
        facts,
        row_hash,
    ) = values
    return {
        "id": row_id,
        "machine": machine,
        "record_id": record_id,
        "seq": seq,
        "event": event,
        "from_state": from_state,
        "to_state": to_state,
        "actor_id": actor_id,
        "actor_role": actor_role,
        "actor_unit": actor_unit,
        "at": at(moment),
        "details": facts if details is None else details(facts),
        "hash": row_hash,
    }


def log_processors(statement: Statement, dialect: Dialect) -> tuple[Processor, Processor | None]:
    """The conversions of ``at`` and ``details`` for rows of a statement made by
    `log_columns`."""
    found = dict(statement.processors(dialect))
    at = found.get(LOG_COLUMNS.index("at"))
    assert at is not None  # every UTCDateTime column has one (`utc_time`)
    return at, found.get(LOG_COLUMNS.index("details"))


Item = tuple[dict[str, Any], list[dict[str, Any]]]
"""A record (its columns by name, its id as canonical text) and its history rows, in order."""


@dataclass
class Batch:
    """One batch of records with their histories."""

    items: list[Item] = field(default_factory=list)
    count: int = 0
    """How many records the query returned."""
    last: uuid.UUID | None = None
    """The last record's id (where the next page starts)."""


class MachineReader:
    """Reads one machine's records and their histories in batches.

    A page is the next ``limit`` records in id order (within bounds), and their history rows
    read by the range of their ids: one query each, however many records, without a list of
    ids to send. `some` reads the records of a list of ids instead (with their histories)."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self._statements: dict[tuple[Any, ...], Statement] = {}

    def _records(self, dialect: str, shape: tuple[Any, ...]) -> Statement:
        key = ("records", dialect, shape)
        statement = self._statements.get(key)
        if statement is None:
            t = self.repository.table
            columns = [stored_text(c, dialect) if c.key == "id" else c for c in t.columns]
            query = sa.select(*columns).order_by(t.c.id)
            if shape[0] == "page":
                _, after, low, high = shape
                query = query.limit(sa.bindparam("limit"))
                if after:
                    query = query.where(t.c.id > sa.bindparam("after", type_=t.c.id.type))
                if low:
                    query = query.where(t.c.id >= sa.bindparam("low", type_=t.c.id.type))
                if high:
                    query = query.where(t.c.id < sa.bindparam("high", type_=t.c.id.type))
            else:
                query = query.where(t.c.id.in_(_id_binds(t.c.id, shape[1])))
            statement = self._statements[key] = Statement(query, raw=["id"])
        return statement

    def _history(self, dialect: str, shape: tuple[Any, ...]) -> Statement:
        key = ("history", dialect, shape)
        statement = self._statements.get(key)
        if statement is None:
            log = self.repository.log
            query = (
                sa.select(*log_columns(log, dialect))
                .where(log.c.machine == sa.bindparam("machine"))
                .order_by(log.c.record_id, log.c.seq)
            )
            if shape[0] == "range":
                query = query.where(
                    log.c.record_id >= sa.bindparam("first", type_=log.c.record_id.type),
                    log.c.record_id <= sa.bindparam("last", type_=log.c.record_id.type),
                )
            else:
                query = query.where(log.c.record_id.in_(_id_binds(log.c.record_id, shape[1])))
            statement = self._statements[key] = Statement(query, raw=["record_id"])
        return statement

    def page(
        self,
        conn: Connection,
        after: uuid.UUID | None,
        limit: int,
        low: uuid.UUID | None = None,
        high: uuid.UUID | None = None,
    ) -> Batch:
        """The next ``limit`` records after ``after`` (within ``low``, included, and ``high``,
        excluded), with their histories."""
        dialect = conn.dialect.name
        shape = ("page", after is not None, low is not None, high is not None)
        params = {"limit": limit, "after": after, "low": low, "high": high}
        records, stored = self._converted(conn, self._records(dialect, shape), params)
        if not records:
            return Batch()
        first, last = uuid.UUID(records[0]["id"]), uuid.UUID(records[-1]["id"])
        history = {"machine": self.repository.machine, "first": first, "last": last}
        items = self._joined(conn, self._history(dialect, ("range",)), history, records, stored)
        return Batch(items, len(records), last)

    def some(self, conn: Connection, ids: Sequence[uuid.UUID]) -> Batch:
        """The records with these ids (those that exist), in id order, with their histories."""
        if not ids:
            return Batch()
        dialect = conn.dialect.name
        bound = {f"id_{n}": value for n, value in enumerate(ids)}
        records, stored = self._converted(conn, self._records(dialect, ("some", len(ids))), bound)
        history = {"machine": self.repository.machine, **bound}
        statement = self._history(dialect, ("some", len(ids)))
        items = self._joined(conn, statement, history, records, stored)
        return Batch(items, len(records), uuid.UUID(records[-1]["id"]) if records else None)

    def _converted(
        self, conn: Connection, statement: Statement, params: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], list[Any]]:
        """The records, each id as its canonical text, and their ids as stored."""
        dialect = conn.dialect.name
        stored = statement.rows(conn, params)
        names = statement.names
        position = names.index("id")
        processors = [(names[i], p, i) for i, p in statement.processors(conn.dialect)]
        records: list[dict[str, Any]] = []
        for values in stored:
            record: dict[str, Any] = dict(zip(names, values, strict=True))
            for name, processor, index in processors:
                record[name] = processor(values[index])
            record["id"] = shown_id(values[position], dialect)
            records.append(record)
        return records, [values[position] for values in stored]

    def _joined(
        self,
        conn: Connection,
        statement: Statement,
        params: Mapping[str, Any],
        records: list[dict[str, Any]],
        stored: list[Any],
    ) -> list[Item]:
        """Each record with its history rows: those whose record id is stored exactly as the
        record's own (as an ``IN`` list of the ids selects them). Rows of records not in the
        batch (histories without a record, which a range reads too) are left out:
        verification names those separately."""
        histories: dict[Any, tuple[str, list[dict[str, Any]]]] = {
            key: (record["id"], []) for key, record in zip(stored, records, strict=True)
        }
        rows = statement.rows(conn, params)
        at, details = log_processors(statement, conn.dialect)
        position = LOG_COLUMNS.index("record_id")
        for values in rows:
            found = histories.get(values[position])
            if found is not None:
                found[1].append(log_row(values, at, details, found[0]))
        return [(record, histories[key][1]) for key, record in zip(stored, records, strict=True)]


def _id_binds(column: sa.ColumnElement[Any], count: int) -> list[sa.BindParameter[Any]]:
    return [sa.bindparam(f"id_{n}", type_=column.type) for n in range(count)]
