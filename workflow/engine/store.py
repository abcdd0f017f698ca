"""The bind: engines, transactions, SQLite's durability and locking settings, database errors.

Generic: nothing here knows any particular table or machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
    UnboundExecutionError,
)
from sqlalchemy.orm import Session, scoped_session

from workflow.errors import (
    ConcurrentUpdate,
    ConfigurationError,
    ConnectionLost,
    NoDatabase,
    StorageError,
)

Bind = str | URL | Engine | Session | scoped_session[Session]
"""What the library runs on: a database URL, an `Engine`, or a caller's `Session` (a
`scoped_session`, such as Flask-SQLAlchemy's ``db.session``, is resolved at each command)."""

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite command waits for another writer before it gives up."""

POSTGRES_LOCK_TIMEOUT_MS = 30_000
"""How long a PostgreSQL command of the library waits for a row or advisory lock another
transaction holds before it gives up with `ConcurrentUpdate` (``lock_timeout``), where the
session has no lock timeout of its own. Read when a connection is set up (the library's own
engines) or a transaction begins (an engine the host made)."""

# SQLSTATEs on which PostgreSQL asks the client to retry the transaction.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})

# SQLSTATEs of a server that went away or can't take connections now: connection exceptions
# (class 08), an administrator's or a crash's shutdown, a server starting up or in recovery.
_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})

_SQLITE_SETTINGS = {
    "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
    "synchronous": 2,  # FULL: a command that returned survives a power cut
    "foreign_keys": 1,
}
"""What the library's own SQLite transactions run with; set per connection on the library's own
engines, and around each of its transactions (then put back) on an engine the host made."""


def create_engine(url: str | URL, **kwargs: Any) -> Engine:
    """A SQLAlchemy engine set up for the library.

    On SQLite every connection it opens runs in WAL mode with ``synchronous=FULL``, foreign
    keys on and a 30 s busy timeout. Its transactions are the driver's own, as with any engine,
    so a host may use it for its own sessions too. Errors and logs leave out the statements'
    parameters: they hold personal data.
    """
    kwargs.setdefault("hide_parameters", True)
    try:
        engine = sa.create_engine(url, **kwargs)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot open database URL: its driver is not installed ({exc.name or exc}); "
            "install it (for PostgreSQL: pip install 'idcard-workflow[postgres]')"
        ) from exc
    except (SQLAlchemyError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"cannot open database URL: {exc}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
    elif engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _postgres_connect)
    return engine


def _sqlite_connect(dbapi_connection: Any, record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode = WAL")
        for name, value in _SQLITE_SETTINGS.items():
            cursor.execute(f"PRAGMA {name} = {value}")
    finally:
        cursor.close()


def _postgres_settings(*, local: bool) -> str:
    """One statement that gives the session (or, ``local``, the transaction) a lock timeout
    where it has none, and ``synchronous_commit = on`` where it is ``off`` (the stronger
    ``local``, ``remote_write`` and ``remote_apply`` are left as they are). Settings the
    server, the database or the role give are read, not overridden, except for those two."""
    scope = "true" if local else "false"
    timeout = f"{int(POSTGRES_LOCK_TIMEOUT_MS)}ms"
    return (
        "SELECT CASE WHEN current_setting('lock_timeout') = '0' "
        f"THEN set_config('lock_timeout', '{timeout}', {scope}) END, "
        "CASE WHEN current_setting('synchronous_commit') = 'off' "
        f"THEN set_config('synchronous_commit', 'on', {scope}) END"
    )


SYNCHRONOUS_COMMIT_ON = (
    "SELECT CASE WHEN current_setting('synchronous_commit') = 'off' "
    "THEN set_config('synchronous_commit', 'on', true) END"
)
"""Raises ``synchronous_commit`` to ``on`` for the rest of the transaction where it is off."""


def _postgres_connect(dbapi_connection: Any, record: Any) -> None:
    # Once per connection, so the library's commands pay nothing for it. Committed, or the
    # settings would go with the transaction the statement began.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(_postgres_settings(local=False))
    finally:
        cursor.close()
    dbapi_connection.commit()


def is_library_engine(engine: Engine) -> bool:
    """Whether `create_engine` made this engine (its connections are set up already)."""
    return event.contains(engine, "connect", _sqlite_connect) or event.contains(
        engine, "connect", _postgres_connect
    )


def sqlite_file(url: URL) -> Path | None:
    """The file a SQLite URL names, or None for an in-memory database."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        return None
    if database.startswith("file:"):
        database = database[len("file:") :].split("?", 1)[0]
        if not database or database == ":memory:":
            return None
    return Path(database)


def require_existing_database(engine: Engine) -> None:
    """Raise `NoDatabase` for a SQLite engine whose file does not exist, before any connection
    could create an empty one, and `ConfigurationError` for one that names a directory."""
    path = sqlite_file(engine.url)
    if path is not None and not path.exists():
        raise NoDatabase(str(path))
    refuse_a_directory(engine)


def refuse_a_directory(engine: Engine) -> None:
    """Raise `ConfigurationError` for a SQLite engine whose file is a directory."""
    path = sqlite_file(engine.url)
    if path is not None and path.is_dir():
        raise ConfigurationError(
            f"the SQLite database {path} is a directory, not a file; "
            "name a file (sqlite:///folder/name.db)"
        )


def sqlite_trouble(url: URL, exc: BaseException) -> str | None:
    """What is wrong with the file of a SQLite database, in words naming it, for a driver
    error that says the file could not be used; None for other errors and databases."""
    path = sqlite_file(url)
    if path is None:
        return None
    cause = getattr(exc, "orig", None) or exc
    said = _first_line_of(str(cause))
    text = said.lower()
    if "database is locked" in text:
        return None  # busy, not broken: ConcurrentUpdate
    subject = f"the SQLite database {path}"
    if path.is_dir():
        subject, what = f"{path}", "is a directory, not a database file"
    elif "file is not a database" in text:
        subject = f"the file {path}"
        what = "is not a SQLite database (a file of another kind, or a damaged one)"
    elif "readonly" in text or "read-only" in text:
        what = (
            "is read-only (opened read-only, or the file, its folder or its file system can't "
            "be written), and this command writes to it"
        )
    elif "unable to open" in text:
        what = _why_not_opened(path)
    elif "malformed" in text:
        what = "is damaged (its pages are malformed)"
    elif "disk i/o error" in text:
        what = "could not be read or written (disk I/O error)"
    elif "disk is full" in text:
        what = "can't grow: the disk is full"
    else:
        return None
    return f"{subject} {what} ({type(cause).__name__}: {said})"


def _why_not_opened(path: Path) -> str:
    folder = path.parent
    if not folder.is_dir():
        return f"can't be opened: its folder {folder} does not exist"
    if path.exists() and not os.access(path, os.R_OK):
        return "can't be opened: permission denied"
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return (
            "can't be opened: the file or its folder is read-only (or on a read-only file "
            "system), and SQLite needs to write the database's -wal and -shm files beside it "
            "(open it with a sqlite:///file:PATH?mode=ro&uri=true URL to read it there)"
        )
    return "can't be opened"


def describe_failure(url: URL, exc: SQLAlchemyError) -> str:
    """A database error in one line without its parameters, naming the SQLite file and what
    is wrong with it where the file is the trouble."""
    return sqlite_trouble(url, exc) or str(DatabaseFailure.of(exc))


def _first_line_of(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip()[:300] if lines else ""


_DIRECT_DRIVERS = frozenset({("sqlite", "pysqlite"), ("postgresql", "psycopg")})
"""The drivers the command path may send its statements to directly (see `direct`)."""


def direct(connection: Connection) -> Any | None:
    """The driver's connection under ``connection``, when the library may send the statements
    of its command path to it directly; None when they must go through SQLAlchemy.

    They go through SQLAlchemy whenever anything could observe them there: a listener on the
    connection, its engine or its dialect (a host's instrumentation: ``before_cursor_execute``,
    ``after_cursor_execute``, ``handle_error``, ``begin``, ``commit``, ...), or an engine that
    logs its statements (``echo``). Checked at every statement, so a listener added at any time
    sees the next one. Otherwise SQLAlchemy's per-statement machinery (result and execution
    context, event dispatch) would be most of a command's cost and serve nobody. Only for the
    drivers the library is tested with (sqlite3, psycopg 3), never for an asyncio adapter.
    """
    dialect = connection.dialect
    if (
        connection._has_events
        or connection.engine._has_events
        or dialect._has_events
        or connection._echo
        or dialect.is_async
        or (dialect.name, dialect.driver) not in _DIRECT_DRIVERS
    ):
        return None
    return connection.connection.dbapi_connection


def driver_failed(
    connection: Connection,
    exc: BaseException,
    statement: str | None,
    parameters: Any,
    cursor: Any,
) -> NoReturn:
    """Raise a driver error of a statement sent directly as SQLAlchemy raises its own: wrapped
    in its `DBAPIError` subclass, and with a lost connection invalidated (and the pool's older
    connections with it), so the next checkout gets a new one. It is SQLAlchemy's own handling
    of the statements it sends."""
    connection._handle_dbapi_exception(exc, statement, parameters, cursor, None)


def _raw(connection: Connection) -> Any:
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    return dbapi


def _driver_error(connection: Connection, statement: str, exc: Exception) -> DBAPIError:
    # As SQLAlchemy would have wrapped it, so a busy database still reads as one.
    wrapped = DBAPIError.instance(statement, None, exc, connection.dialect.loaded_dbapi.Error)
    assert isinstance(wrapped, DBAPIError)
    return wrapped


def _run_raw(connection: Connection, statement: str) -> list[Any]:
    """Run one statement straight on the driver: no events, no parameters, no statement cache.
    The library's transaction control and settings only; driver errors come out wrapped."""
    cursor = _raw(connection).cursor()
    try:
        cursor.execute(statement)
        return list(cursor.fetchall()) if cursor.description else []
    except connection.dialect.loaded_dbapi.Error as exc:
        raise _driver_error(connection, statement, exc) from exc
    finally:
        cursor.close()


def _in_transaction(connection: Connection) -> bool:
    """Whether SQLite has a transaction open on this connection (its autocommit flag is off)."""
    dbapi = _raw(connection)
    state = getattr(dbapi, "in_transaction", None)
    if state is None:  # the asyncio adapter keeps the sqlite3 connection inside
        state = dbapi._connection.in_transaction
    return bool(state)


@contextmanager
def _sqlite_settings(connection: Connection, names: Sequence[str]) -> Iterator[None]:
    """The library's values of these settings for the duration of the block, then the
    connection's own values back: a host's connection is left as the host set it."""
    changed: dict[str, Any] = {}
    for name in names:
        (current,) = _run_raw(connection, f"PRAGMA {name}")[0]
        if current != _SQLITE_SETTINGS[name]:
            changed[name] = current
            _run_raw(connection, f"PRAGMA {name} = {_SQLITE_SETTINGS[name]}")
    try:
        yield
    finally:
        for name, value in changed.items():
            _run_raw(connection, f"PRAGMA {name} = {value}")


def _lock_for_writing(connection: Connection, lock_table: str | None) -> None:
    """Take SQLite's write lock now, queueing behind other writers for the busy timeout.

    Taken before the command's first read, so it never has to upgrade a read snapshot to a
    write (which SQLite refuses at once with "database is locked" when another writer got in
    between). Outside a transaction that is ``BEGIN IMMEDIATE``; inside one the caller began
    (a host's session) it is a write that changes nothing, which takes the same lock and,
    where the driver begins transactions itself, begins it as the driver would."""
    if not _in_transaction(connection):
        _run_raw(connection, "BEGIN IMMEDIATE")
    elif lock_table is not None:
        _run_raw(connection, f"DELETE FROM {lock_table} WHERE 0 = 1")


ConflictMap = Mapping[str, Callable[[], Exception]]
"""Constraint names (or SQLite's ``table.column`` wording of them) to the error they mean."""


@contextmanager
def sqlite_transaction(
    connection: Connection, *, write: bool, lock_table: str | None, set_up: bool
) -> Iterator[None]:
    """The library's own transaction on a SQLite connection, of its engine or a host's.

    The driver would begin it too late (at the first write, after the reads) and never
    IMMEDIATE, so it is begun here, and the driver then commits or rolls back what was begun.
    On a host's engine the library's settings hold for this transaction only; ``set_up``
    says the engine is the library's own (`is_library_engine`, which the caller knows).
    """
    if set_up:
        # Its connections carry the settings already: nothing to set or put back.
        with connection.begin():
            _begin_sqlite(connection, write=write, lock_table=lock_table)
            yield
        return
    with _sqlite_settings(connection, tuple(_SQLITE_SETTINGS)), connection.begin():
        _begin_sqlite(connection, write=write, lock_table=lock_table)
        yield


def _begin_sqlite(connection: Connection, *, write: bool, lock_table: str | None) -> None:
    if write:
        _lock_for_writing(connection, lock_table)
    elif not _in_transaction(connection):
        _run_raw(connection, "BEGIN")


class Store:
    """Opens one transaction per command, or joins the transaction of a caller's `Session`."""

    lock_table = "idcard_command_requests"
    """A table of the library's that a no-op write locks (SQLite); no trigger fires on it."""

    check_first: Callable[[Connection], None] | None = None
    """Run on the connection of the next transaction, until it passes once (a deferred check
    of the schema, for binds whose transaction is the caller's)."""

    def __init__(self, bind: Bind) -> None:
        self._session: Session | scoped_session[Session] | None = None
        self._owns_engine = isinstance(bind, (str, URL))
        if isinstance(bind, (str, URL)):
            self.engine = create_engine(bind)
        elif isinstance(bind, Engine):
            self.engine = bind
        elif isinstance(bind, (Session, scoped_session)):
            self._session = bind
            self.engine = _engine_of(bind)
        else:
            raise ConfigurationError(_wrong_bind(bind))
        try:
            _refuse_asyncio_driver(self.engine)
            refuse_schema_translation(self.engine.get_execution_options())
            require_existing_database(self.engine)
        except ConfigurationError:
            self.close()
            raise
        # Whether the engine's connections carry the library's settings already.
        self._set_up = is_library_engine(self.engine)
        self._sqlite = self.engine.dialect.name == "sqlite"

    @property
    def session(self) -> Session | None:
        """The caller's session now (a scoped session's current one), or None."""
        if self._session is None:
            return None
        return self._session() if isinstance(self._session, scoped_session) else self._session

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
        is released (not committed) on success and rolled back on error; the caller's commit or
        rollback decides. ``snapshot`` makes every read of a read transaction see one snapshot
        (PostgreSQL's REPEATABLE READ; a SQLite read transaction always does). Database errors
        come out as `WorkflowError` subclasses with the cause chained.
        """
        try:
            session = self.session
            if session is not None:
                with self._joined(session, write=write) as conn:
                    if self.check_first is not None:
                        self.check_first(conn)
                        self.check_first = None
                    yield conn
                return
            with self.engine.connect() as conn:
                _library_options(conn)  # this Connection is the library's: nothing to put back
                if self._sqlite:
                    with sqlite_transaction(
                        conn, write=write, lock_table=self.lock_table, set_up=self._set_up
                    ):
                        yield conn
                    return
                if snapshot and not write and self.dialect == "postgresql":
                    conn.execution_options(isolation_level="REPEATABLE READ")
                elif _autocommits(conn):
                    # An engine made with isolation_level="AUTOCOMMIT" would run the command's
                    # statements one by one: this connection gets a real transaction (the pool
                    # puts the engine's level back when it is returned).
                    conn.execution_options(isolation_level="READ COMMITTED")
                with conn.begin():
                    if write and self.dialect == "postgresql" and not self._set_up:
                        # The library's settings for this transaction only (a host's engine
                        # keeps its own): one round trip; the library's engines need none.
                        conn.exec_driver_sql(_postgres_settings(local=True))
                    yield conn
        except DBAPIError as exc:
            raise _translate(
                exc, conflicts or {}, self.dialect, self.engine.url
            ) from DatabaseFailure.of(exc)
        except SQLAlchemyError as exc:
            failure = DatabaseFailure.of(exc)
            raise StorageError(f"database error: {failure}") from failure

    @contextmanager
    def _joined(self, session: Session, *, write: bool) -> Iterator[Connection]:
        # The caller's transaction: never begun, committed or rolled back here. A write runs in
        # a savepoint, so a refused command leaves the caller's transaction as it was.
        session.flush()
        conn = session.connection()
        if self.dialect != "sqlite" and _autocommits(conn):
            raise ConfigurationError(
                "the Session's connection is in AUTOCOMMIT mode, so the library's writes would "
                "commit at once whatever the host does; give the Session an engine or "
                "connection with a transaction isolation level (the default)"
            )
        hosts = _library_options(conn)
        try:
            if not write:
                yield conn
                return
            if self.dialect == "sqlite":
                # Only the wait for the lock is the library's: busy_timeout is put back at once.
                with _sqlite_settings(conn, ("busy_timeout",)):
                    _lock_for_writing(conn, self.lock_table)
            elif self.dialect == "postgresql":
                # The host's transaction now carries the library's writes: its commit must
                # reach the disk. Raised for that transaction only, outside the savepoint so a
                # refused command does not take it back; the host's lock timeout stays the
                # host's.
                conn.exec_driver_sql(SYNCHRONOUS_COMMIT_ON)
            with session.begin_nested():
                yield conn
        finally:
            if hosts:
                conn.execution_options(**hosts)


LOCK_PREFIX = "idcard:"
"""Put before a value to make the key of its lock (`lock_value`): other programs' advisory
locks on the same database stay clear of the library's."""


def lock_value(connection: Connection, value: str) -> None:
    """Hold a lock on ``value`` until the transaction ends; a second transaction locking the
    same value waits. PostgreSQL's transaction-scoped advisory lock (taken again by the same
    transaction, it is already held) on ``hashtextextended(LOCK_PREFIX || value, 0)``, as the
    command path's reads take it too; SQLite has one writer at a time and needs none."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(
            "SELECT pg_advisory_xact_lock(hashtextextended(%(value)s, 0))",
            {"value": LOCK_PREFIX + value},
        )


_STREAMING = ("stream_results", "yield_per")
"""Execution options that ask SQLAlchemy for a server-side cursor for every statement."""


def _library_options(connection: Connection) -> dict[str, Any]:
    """Check the execution options of the connection the library is about to use, and turn
    off for it those its statements can't run with; the host's values of those, to put back
    on a connection that is the host's (empty when none was changed, as on most engines).

    A ``schema_translate_map`` for the library's tables is refused (`refuse_schema_translation`).
    ``stream_results`` and ``yield_per`` would make SQLAlchemy open a server-side cursor for
    each of the library's statements, its INSERTs and UPDATEs too, which PostgreSQL refuses;
    the command path's statements sent directly to the driver would run, so a command would
    work or fail depending on whether anything listens."""
    options = connection.get_execution_options()
    if not options:
        return {}
    refuse_schema_translation(options)
    streaming = {name: options[name] for name in _STREAMING if options.get(name)}
    if streaming:
        connection.execution_options(stream_results=False, yield_per=None)
    return streaming


def refuse_schema_translation(options: Mapping[str, Any]) -> None:
    """Raise `ConfigurationError` for execution options whose ``schema_translate_map`` puts
    the library's tables (which have no schema) in another schema. SQLAlchemy renders the
    statements it compiles with the map; the command path's statements and the library's
    transaction control are rendered once and sent as text, so a command would read one
    schema and write another."""
    translated = (options.get("schema_translate_map") or {}).get(None)
    if translated is not None:
        raise ConfigurationError(
            f"schema_translate_map sends the library's tables to schema {translated!r}, "
            "which the library's own statements do not follow: name the schema in the "
            "connection's search path instead (PostgreSQL: connect_args={'options': "
            f"'-csearch_path={translated}'}}), and run workflow.upgrade there"
        )


def _autocommits(connection: Connection) -> bool:
    """Whether the driver runs each statement as its own transaction (PostgreSQL drivers)."""
    dbapi = connection.connection.dbapi_connection
    return getattr(dbapi, "autocommit", False) is True


def _engine_of(session: Session | scoped_session[Session]) -> Engine:
    try:
        bind = session.get_bind()
    except UnboundExecutionError:
        raise ConfigurationError(
            "the Session has no bind: make it with Session(engine) (or sessionmaker(engine)); "
            "the library's tables must be reachable through session.get_bind()"
        ) from None
    engine = bind if isinstance(bind, Engine) else bind.engine
    return engine


def _wrong_bind(bind: object) -> str:
    kind = type(bind).__name__
    if _is_asyncio_bind(bind):
        return f"{kind} is an asyncio bind: use workflow.AsyncWorkflow"
    if isinstance(bind, Connection):
        return "bind must be a URL, an Engine or a Session; for a Connection, use Session(conn)"
    return f"bind must be a database URL, an Engine or a Session, not {kind}"


def _is_asyncio_bind(bind: object) -> bool:
    try:
        from sqlalchemy.ext import asyncio as aio
    except ImportError:  # without greenlet there is no asyncio bind to be had
        return False
    kinds = (
        aio.AsyncEngine,
        aio.AsyncConnection,
        aio.AsyncSession,
        aio.async_scoped_session,
        aio.async_sessionmaker,
    )
    return isinstance(bind, kinds)


def _refuse_asyncio_driver(engine: Engine) -> None:
    # AsyncWorkflow runs this very code inside SQLAlchemy's greenlet bridge; anywhere else an
    # asyncio driver fails at its first statement with an error that says nothing useful.
    from sqlalchemy.util.concurrency import in_greenlet

    if engine.dialect.is_async and not in_greenlet():
        raise ConfigurationError(
            f"{engine.dialect.driver} is an asyncio driver: use "
            "workflow.AsyncWorkflow(create_async_engine(url))"
        )


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


def _translate(
    exc: DBAPIError, conflicts: ConflictMap, dialect: str = "", url: URL | None = None
) -> Exception:
    message = str(exc.orig)
    if isinstance(exc, IntegrityError):
        for needle, make in conflicts.items():
            if needle in message:
                return make()
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _RETRYABLE_SQLSTATES or "database is locked" in message:
        return ConcurrentUpdate(
            "the database stayed busy, a lock was held too long or a conflict was detected; retry"
        )
    if _connection_lost(exc, sqlstate, dialect):
        return ConnectionLost(
            f"lost the connection to the database, or reached no writable server "
            f"({DatabaseFailure.of(exc)}); the command may have taken effect: retry it with "
            "the same request_id"
        )
    trouble = None if url is None else sqlite_trouble(url, exc)
    if trouble is not None:
        return StorageError(trouble)
    return StorageError(f"database error: {DatabaseFailure.of(exc)}")


def _connection_lost(exc: DBAPIError, sqlstate: str | None, dialect: str) -> bool:
    """Whether the error says the server is gone or unreachable (not what a statement did)."""
    if exc.connection_invalidated:  # SQLAlchemy's own verdict: the connection is dead
        return True
    if sqlstate is not None:
        return sqlstate.startswith("08") or sqlstate in _LOST_SQLSTATES
    # psycopg reports a failed connection attempt (no server at any host, or none writable
    # under target_session_attrs=read-write) as its OperationalError with no SQLSTATE.
    driver_error = hasattr(exc.orig, "sqlstate")
    return dialect == "postgresql" and isinstance(exc, OperationalError) and driver_error
