"""Reading records and their histories back in bulk, for verification and checkpoints.

Verification reads every row of the database, and building SQLAlchemy rows (a `Row`, then a
`RowMapping`, each value through its type's processor) was most of its cost. Here a statement
is rendered once per dialect and run with ``exec_driver_sql``, so SQLAlchemy's events, logging
and error handling still apply; the rows come back as the driver returns them, and only the
columns that need it are converted, each to the value SQLAlchemy itself would give (a JSON
document, a decimal, a boolean, an aware UTC time), some by shorter roads (`utc_time`,
`json_document`; a test holds them to SQLAlchemy's own).

- **Ids** stay the text the database holds (32 hex digits on SQLite, the canonical form on
  PostgreSQL) and are given as the UUID's canonical text (what ``str`` of the UUID gives, and
  what the hash chain hashes); only an id that is reported becomes a `UUID`. On SQLite, which
  keeps any value in any column, a record id that is not 32 lowercase hex digits raises
  `Unusual`: the caller then reads that batch the ordinary way, whose answer is the reference.
- **A history row's time** also comes as the text the hash chain hashes (`LogRows.moment`):
  on SQLite from the stored text when it has the library's shape, on PostgreSQL formatted by
  the server; `None` otherwise, and the chain formats the time itself.
- **JSON on PostgreSQL** is read as text and parsed here (psycopg would parse bytes, through
  two more layers), unless the connection was given its own JSON loader.

Generic: works on any machine's table with the `StateRecord` columns, and the shared log.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from workflow.engine.records import LOG_KEYS, Repository, ids_within
from workflow.models.base import UTCDateTime

Processor = Callable[[Any], Any]


class Unusual(Exception):
    """A stored value that is not of the shape the library writes (planted by hand)."""


class Statement:
    """A SELECT rendered once per dialect and run through ``exec_driver_sql``.

    Parameters go through the type processors SQLAlchemy would apply. `rows` returns the rows
    as the driver does; `processors` gives, for each column that needs one, the conversion
    SQLAlchemy would apply (none for the columns named ``raw``; those named in ``given`` get
    the conversion given)."""

    def __init__(
        self,
        select: sa.Select[Any],
        *,
        raw: Sequence[str] = (),
        given: Mapping[str, Processor] | None = None,
    ) -> None:
        self.select = select
        self.names = [str(c.key) for c in select.selected_columns]
        self.raw = frozenset(raw)
        self.given = dict(given or {})
        self._rendered: dict[str, tuple[Any, str, list[str] | None, dict[str, Any]]] = {}
        self._results: dict[str, list[tuple[int, Processor]]] = {}

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, Any, Any]:
        """The result after executing (read its driver ``cursor``), the SQL and the
        parameters sent."""
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
        return result, sql, arguments

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Every row of the result, as the driver returns it."""
        result, sql, arguments = self.execute(conn, params)
        try:
            # The driver's own rows: SQLAlchemy's `Row` per row is what this module avoids.
            return list(result.cursor.fetchall())
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(conn.dialect, sql, arguments, exc) from exc
        finally:
            result.close()

    def chunks(
        self, conn: Connection, params: Mapping[str, Any], size: int
    ) -> Iterator[Sequence[Any]]:
        """The rows of the result ``size`` at a time (run on a connection with
        ``stream_results`` to keep memory flat on PostgreSQL). Fetched through the result, as
        a server-side cursor's first rows are already in its buffer: rows without conversion,
        but each a SQLAlchemy `Row`."""
        result, _, _ = self.execute(conn, params)
        with result:
            while chunk := result.fetchmany(size):
                yield chunk

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
            if column.key in self.given:
                found.append((position, self.given[str(column.key)]))
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


def _wrapped(dialect: Dialect, sql: str, arguments: Any, exc: Exception) -> BaseException:
    """A driver's error while fetching, as SQLAlchemy wraps one while executing."""
    error = dialect.loaded_dbapi.Error
    return sa.exc.DBAPIError.instance(sql, arguments, exc, error, dialect=dialect)


# == Conversions ===============================================================================


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


def stored_moment(value: Any) -> str | None:
    """The canonical text of a time stored on SQLite as the library stores it
    (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC), as `workflow.engine.chain.canonical` writes it
    (the ISO form of the aware UTC time it reads back as); None for any other value."""
    if type(value) is str and _STORED_TIME.fullmatch(value) is not None:
        return f"{value[:10]}T{value[11:]}+00:00"
    return None


_STORED_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}")


def json_document(exact: Processor, dialect: Dialect | None = None) -> Processor:
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


# == Selecting =================================================================================


def json_as_text(conn: Connection) -> bool:
    """Whether JSON columns are read as text and parsed here: on PostgreSQL when psycopg's JSON
    loader is ``json.loads`` (the default; a host may give its own, and SQLAlchemy gives it the
    engine's ``json_deserializer``), where psycopg hands ``json.loads`` the document as bytes.
    PostgreSQL's json text is valid UTF-8 without a byte order mark, so both read the same."""
    if conn.dialect.name != "postgresql":
        return False
    try:
        adapters = conn.connection.dbapi_connection.adapters  # type: ignore[union-attr]
        loader = adapters.get_loader(adapters.types["json"].oid, 0)  # 0: text format
    except (AttributeError, KeyError, TypeError):
        return False
    return getattr(loader, "_loads", None) is json.loads


@dataclass(frozen=True)
class Selection:
    """The columns of a table as bulk reading selects them on one dialect."""

    columns: list[sa.ColumnElement[Any]]
    raw: list[str]
    given: dict[str, Processor]


def selection(table: sa.Table, dialect: str, *, text_json: bool, ids: Sequence[str]) -> Selection:
    """Every column of ``table``: the UUID columns named in ``ids`` as stored text (raw), and
    with ``text_json`` its JSON columns as text, parsed by `json_document`."""
    columns: list[sa.ColumnElement[Any]] = []
    given: dict[str, Processor] = {}
    for column in table.columns:
        if column.key in ids:
            columns.append(stored_text(column, dialect))
        elif text_json and isinstance(column.type, sa.JSON):
            columns.append(sa.cast(column, sa.Text).label(column.key))
            given[column.key] = json_document(json.loads)
        else:
            columns.append(column)
    return Selection(columns, list(ids), given)


def stored_text(column: sa.ColumnElement[Any], dialect: str) -> sa.ColumnElement[Any]:
    """A UUID column as the text the database holds: SQLite's is text already (and a value
    planted there must come back as it is); PostgreSQL's is cast."""
    if dialect == "sqlite":
        return sa.type_coerce(column, sa.String).label(column.key)
    return sa.cast(column, sa.Text).label(column.key)


LOG_COLUMNS = ("id", *LOG_KEYS)
"""The log's columns, in the order `LogRows` reads them (the table's own order)."""

_AT, _DETAILS, _MOMENT = LOG_COLUMNS.index("at"), LOG_COLUMNS.index("details"), len(LOG_COLUMNS)

MOMENT_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'
"""PostgreSQL's ``to_char`` pattern of a UTC time as `workflow.engine.chain.canonical` writes
it."""


class LogRows:
    """History rows as bulk reading selects and converts them, on one dialect: the log's
    columns, its record id as stored text, and on PostgreSQL the time as the chain's text."""

    def __init__(self, log: sa.Table, dialect: str, *, text_json: bool) -> None:
        assert tuple(c.key for c in log.columns) == LOG_COLUMNS
        chosen = selection(log, dialect, text_json=text_json, ids=["record_id"])
        self.columns = chosen.columns
        self.raw = chosen.raw
        if dialect == "postgresql":
            # Formatted by the server as `canonical` formats a time. Only a time psycopg can
            # read back reaches the chain: one outside its range fails the fetch itself.
            utc = sa.func.timezone("UTC", log.c.at)
            self.columns.append(sa.func.to_char(utc, MOMENT_FORMAT).label("moment"))
            self.raw.append("moment")
        self.given = chosen.given
        self.sqlite = dialect == "sqlite"
        self.at: Processor | None = None
        self.details: Processor | None = None

    def statement(self, query: sa.Select[Any]) -> Statement:
        """``query`` (a select of `columns`) as a `Statement`."""
        return Statement(query, raw=self.raw, given=self.given)

    def bind(self, statement: Statement, dialect: Dialect) -> None:
        """Take the conversions of ``at`` and ``details`` (once ``statement`` has run)."""
        found = dict(statement.processors(dialect))
        self.at = found.get(_AT)
        self.details = found.get(_DETAILS)

    def row(self, values: Sequence[Any], record_id: str) -> dict[str, Any]:
        """A history row as verification reads it: each column by name, ``at`` and
        ``details`` converted, the record id given (as canonical text)."""
        at, details = self.at, self.details
        assert at is not None  # every UTCDateTime column has a conversion (`utc_time`)
        facts = values[_DETAILS]
        return {
            "id": values[0],
            "machine": values[1],
            "record_id": record_id,
            "seq": values[3],
            "event": values[4],
            "from_state": values[5],
            "to_state": values[6],
            "actor_id": values[7],
            "actor_role": values[8],
            "actor_unit": values[9],
            "at": at(values[_AT]),
            "details": facts if details is None else details(facts),
            "hash": values[12],
        }

    def moment(self, values: Sequence[Any]) -> str | None:
        """The row's time as the hash chain writes it, read from the database (only for a
        row `row` has converted); None when the chain must format it from ``at``."""
        if self.sqlite:
            return stored_moment(values[_AT])
        moment = values[_MOMENT]
        return moment if type(moment) is str else None


# == Batches of records ========================================================================

Item = tuple[dict[str, Any], list[dict[str, Any]], list[str | None]]
"""A record (its columns by name, its id as canonical text), its history rows in order, and
each row's time as the hash chain writes it (None: formatted from the row)."""


@dataclass
class Batch:
    """One batch of records with their history rows, as the driver returned them.

    `items` converts them one record at a time, as they are checked: converted values live
    only as long as their record's check, so the garbage collector's young generation frees
    them (a whole converted batch would outlive several collections and be promoted, and
    full collections would then grow with the batches)."""

    ids: list[str] = field(default_factory=list)
    """The records' ids, as canonical text, in order."""
    records: list[Any] = field(default_factory=list)
    histories: dict[Any, list[Any]] = field(default_factory=dict)
    """Each record's history rows, by its id as stored."""
    convert_record: Callable[[Any], dict[str, Any]] | None = None
    log: LogRows | None = None
    stored_position: int = 0

    @property
    def count(self) -> int:
        """How many records the query returned."""
        return len(self.records)

    @property
    def last(self) -> uuid.UUID | None:
        """The last record's id (where the next page starts)."""
        return uuid.UUID(self.ids[-1]) if self.ids else None

    def items(self) -> Iterator[Item]:
        """Each record with its history, converted (a value that can't be read back raises
        what SQLAlchemy raises for it)."""
        convert, log = self.convert_record, self.log
        for shown, values in zip(self.ids, self.records, strict=True):
            assert convert is not None and log is not None
            record = convert(values)
            record["id"] = shown
            stored = self.histories.get(values[self.stored_position], ())
            rows = [log.row(row, shown) for row in stored]
            yield record, rows, [log.moment(row) for row in stored]


class MachineReader:
    """Reads one machine's records and their histories in batches.

    A page is the next ``limit`` records in id order (within bounds), and their history rows
    read by the range of their ids: one query each, however many records, without a list of
    ids to send. `some` reads the records of a list of ids instead (with their histories)."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self._statements: dict[tuple[Any, ...], Statement] = {}
        self._logs: dict[tuple[str, bool], LogRows] = {}

    def _records(self, dialect: str, text_json: bool, shape: tuple[Any, ...]) -> Statement:
        key = ("records", dialect, text_json, shape)
        statement = self._statements.get(key)
        if statement is None:
            t = self.repository.table
            chosen = selection(t, dialect, text_json=text_json, ids=["id"])
            query = sa.select(*chosen.columns).order_by(t.c.id)
            if shape[0] == "page":
                _, after, low, high = shape
                query = ids_within(
                    query.limit(sa.bindparam("limit")),
                    t.c.id,
                    after=sa.bindparam("after", type_=t.c.id.type) if after else None,
                    at_least=sa.bindparam("low", type_=t.c.id.type) if low else None,
                    before=sa.bindparam("high", type_=t.c.id.type) if high else None,
                )
            else:
                query = query.where(t.c.id.in_(_id_binds(t.c.id, shape[1])))
            statement = Statement(query, raw=chosen.raw, given=chosen.given)
            self._statements[key] = statement
        return statement

    def log(self, dialect: str, text_json: bool) -> LogRows:
        """How history rows are selected and converted on ``dialect``."""
        found = self._logs.get((dialect, text_json))
        if found is None:
            found = self._logs[(dialect, text_json)] = LogRows(
                self.repository.log, dialect, text_json=text_json
            )
        return found

    def _history(self, dialect: str, text_json: bool, shape: tuple[Any, ...]) -> Statement:
        key = ("history", dialect, text_json, shape)
        statement = self._statements.get(key)
        if statement is None:
            log = self.repository.log
            rows = self.log(dialect, text_json)
            query = (
                sa.select(*rows.columns)
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
            statement = self._statements[key] = rows.statement(query)
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
        dialect, text_json = conn.dialect.name, json_as_text(conn)
        shape = ("page", after is not None, low is not None, high is not None)
        params = {"limit": limit, "after": after, "low": low, "high": high}
        batch = self._read_records(conn, self._records(dialect, text_json, shape), params)
        if batch.ids:
            first, last = uuid.UUID(batch.ids[0]), uuid.UUID(batch.ids[-1])
            history = {"machine": self.repository.machine, "first": first, "last": last}
            statement = self._history(dialect, text_json, ("range",))
            self._read_history(conn, statement, self.log(dialect, text_json), history, batch)
        return batch

    def some(self, conn: Connection, ids: Sequence[uuid.UUID]) -> Batch:
        """The records with these ids (those that exist), in id order, with their histories."""
        if not ids:
            return Batch()
        dialect, text_json = conn.dialect.name, json_as_text(conn)
        bound = {f"id_{n}": value for n, value in enumerate(ids)}
        statement = self._records(dialect, text_json, ("some", len(ids)))
        batch = self._read_records(conn, statement, bound)
        if batch.ids:
            history = {"machine": self.repository.machine, **bound}
            statement = self._history(dialect, text_json, ("some", len(ids)))
            self._read_history(conn, statement, self.log(dialect, text_json), history, batch)
        return batch

    def _read_records(
        self, conn: Connection, statement: Statement, params: Mapping[str, Any]
    ) -> Batch:
        """The records as stored; their ids checked and shown (`Unusual` if one is not of the
        shape the library writes)."""
        dialect = conn.dialect.name
        stored = statement.rows(conn, params)
        names = statement.names
        position = names.index("id")
        ids = [shown_id(values[position], dialect) for values in stored]
        processors = [(names[i], p, i) for i, p in statement.processors(conn.dialect)]

        def convert(values: Sequence[Any]) -> dict[str, Any]:
            record: dict[str, Any] = dict(zip(names, values, strict=True))
            for name, processor, index in processors:
                record[name] = processor(values[index])
            return record

        return Batch(ids, stored, {}, convert, stored_position=position)

    def _read_history(
        self,
        conn: Connection,
        statement: Statement,
        log: LogRows,
        params: Mapping[str, Any],
        batch: Batch,
    ) -> None:
        """The history rows of the batch's records: those whose record id is stored exactly as
        the record's own (as an ``IN`` list of the ids selects them). Rows of records not in
        the batch (histories without a record, which a range reads too) are left out:
        verification names those separately."""
        histories: dict[Any, list[Any]] = {
            values[batch.stored_position]: [] for values in batch.records
        }
        rows = statement.rows(conn, params)
        log.bind(statement, conn.dialect)
        position = LOG_COLUMNS.index("record_id")
        for values in rows:
            found = histories.get(values[position])
            if found is not None:
                found.append(values)
        batch.histories = histories
        batch.log = log


def _id_binds(column: sa.ColumnElement[Any], count: int) -> list[sa.BindParameter[Any]]:
    return [sa.bindparam(f"id_{n}", type_=column.type) for n in range(count)]
