"""The bind: engines, transactions, SQLite's durability and locking settings, database errors.

Generic: nothing here knows any particular table or machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from workflow.errors import ConcurrentUpdate, ConfigurationError, StorageError

Bind = str | URL | Engine | Session
"""What the library runs on: a database URL, an `Engine`, or a caller's `Session`."""

_WRITE = "idcard_workflow_write"
_READY = "idcard_workflow_sqlite_ready"
SQLITE_BUSY_TIMEOUT_MS = 30_000

# SQLSTATEs on which PostgreSQL asks the client to retry the transaction.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def create_engine(url: str | URL, **kwargs: Any) -> Engine:
    """A SQLAlchemy engine prepared for the library (see `prepare_engine`)."""
    # Errors and logs then leave out the statements' parameters: they hold personal data.
    kwargs.setdefault("hide_parameters", True)
    try:
        engine = sa.create_engine(url, **kwargs)
    except (SQLAlchemyError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"cannot open database URL: {exc}") from exc
    prepare_engine(engine)
    return engine


def prepare_engine(engine: Engine) -> None:
    """Give a SQLite engine durable, serialisable write transactions; other engines as they are.

    On SQLite every transaction the engine begins issues its own ``BEGIN`` (``BEGIN IMMEDIATE``
    for the library's commands, so writers queue for the lock instead of failing with "database
    is locked"), and each connection runs in WAL mode with ``synchronous=FULL``: a command that
    returned survives a power cut. Idempotent.
    """
    if engine.dialect.name == "sqlite" and not event.contains(engine, "begin", _sqlite_begin):
        event.listen(engine, "begin", _sqlite_begin)


def _sqlite_begin(conn: Connection) -> None:
    pooled = conn.connection
    if not pooled.info.get(_READY):
        dbapi = pooled.dbapi_connection
        assert dbapi is not None
        # The driver's own implicit BEGIN comes too late (after the first read) and can't be
        # IMMEDIATE; switch it off and begin explicitly below.
        dbapi.isolation_level = None
        cursor = dbapi.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()
        pooled.info[_READY] = True
    # Straight to the driver: this runs before every transaction, and needs no parameters.
    dbapi_connection = pooled.dbapi_connection
    assert dbapi_connection is not None
    statement = "BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN"
    try:
        dbapi_connection.execute(statement)
    except conn.dialect.loaded_dbapi.Error as exc:
        # As SQLAlchemy would have wrapped it, so a busy database still reads as one.
        raise sa.exc.DBAPIError.instance(
            statement, None, exc, conn.dialect.loaded_dbapi.Error
        ) from exc


ConflictMap = Mapping[str, Callable[[], Exception]]
"""Constraint names (or SQLite's ``table.column`` wording of them) to the error they mean."""


class Store:
    """Opens one transaction per command, or joins the transaction of a caller's `Session`."""

    def __init__(self, bind: Bind) -> None:
        self.session: Session | None = None
        self._owns_engine = isinstance(bind, (str, URL))
        if isinstance(bind, (str, URL)):
            self.engine = create_engine(bind)
        elif isinstance(bind, Engine):
            prepare_engine(bind)
            self.engine = bind
        elif isinstance(bind, Session):
            self.session = bind
            engine = bind.get_bind()
            if not isinstance(engine, Engine):
                engine = engine.engine
            self.engine = engine
        else:
            raise ConfigurationError(
                f"bind must be a database URL, an Engine or a Session, not {type(bind).__name__}"
            )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        """Dispose of the engine if the store created it; a caller's engine is left alone."""
        if self._owns_engine:
            self.engine.dispose()

    @contextmanager
    def transaction(
        self, *, write: bool, conflicts: ConflictMap | None = None, snapshot: bool = False
    ) -> Iterator[Connection]:
        """A connection in a transaction that commits on success and rolls back on any error.

        With a `Session` bind the writes go into a savepoint of the caller's transaction, which
        is released (not committed) on success and rolled back on error. ``snapshot`` makes
        every read of a read transaction see one snapshot (PostgreSQL's REPEATABLE READ; a
        SQLite read transaction always does). Database errors come out as `WorkflowError`
        subclasses with the cause chained.
        """
        try:
            if self.session is not None:
                self.session.flush()
                if write:
                    with self.session.begin_nested():
                        yield self.session.connection()
                else:
                    yield self.session.connection()
                return
            with self.engine.connect() as conn:
                if write:
                    conn.execution_options(**{_WRITE: True})
                elif snapshot and self.dialect == "postgresql":
                    conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except DBAPIError as exc:
            raise _translate(exc, conflicts or {}) from DatabaseFailure.of(exc)
        except SQLAlchemyError as exc:
            failure = DatabaseFailure.of(exc)
            raise StorageError(f"database error: {failure}") from failure


class DatabaseFailure(Exception):
    """What the database or driver reported, without the statement's parameters or the
    values it quotes (they may be personal data). ``original`` keeps the full error."""

    original: BaseException

    @classmethod
    def of(cls, exc: SQLAlchemyError) -> DatabaseFailure:
        cause = getattr(exc, "orig", None) or exc
        # The first line: PostgreSQL puts the values in DETAIL lines, SQLite names columns only.
        first = str(cause).strip().splitlines()[0][:300] if str(cause).strip() else ""
        statement = " ".join(str(getattr(exc, "statement", "") or "").split()[:3])
        where = f" in {statement}" if statement else ""
        failure = cls(f"{type(cause).__name__}: {first}{where}")
        failure.original = exc
        return failure


def _translate(exc: DBAPIError, conflicts: ConflictMap) -> Exception:
    message = str(exc.orig)
    if isinstance(exc, IntegrityError):
        for needle, make in conflicts.items():
            if needle in message:
                return make()
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _RETRYABLE_SQLSTATES or "database is locked" in message:
        return ConcurrentUpdate("the database stayed busy or detected a conflict; retry")
    return StorageError(f"database error: {DatabaseFailure.of(exc)}")
