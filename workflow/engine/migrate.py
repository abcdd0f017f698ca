"""Run the shipped Alembic migrations from code, refuse a database that is behind, and keep a
host's Alembic from seeing the library's tables."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from workflow.engine.store import (
    DatabaseFailure,
    create_engine,
    describe_failure,
    refuse_a_directory,
    require_existing_database,
)
from workflow.errors import (
    ConfigurationError,
    MigrationError,
    SchemaOutOfDate,
    StorageError,
    WorkflowError,
)
from workflow.migrations import naming
from workflow.models.base import VERSION_TABLE

if TYPE_CHECKING:
    from workflow.engine.store import Store


def alembic_config(bind: Engine | Connection | None = None) -> Config:
    """An Alembic `Config` for the shipped migrations, built in code with an absolute path."""
    config = Config()
    config.set_main_option("script_location", str(files("workflow.migrations")))
    if bind is not None:
        config.attributes["connection"] = bind
    return config


@cache
def head_revision() -> str:
    """The latest revision of the shipped migrations."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _library_tables() -> frozenset[str]:
    # Read here, not at import: the engine imports no table module of its own accord.
    from workflow.models.base import Base

    return frozenset(Base.metadata.tables) | {VERSION_TABLE}


def is_library_table(name: str | None) -> bool:
    """Whether a table of this name is one of the library's (its tables and version table).
    A host's own table that happens to start with ``idcard_`` is not."""
    return name in _library_tables()


def include_name(name: str | None, type_: str, parent_names: Mapping[str, Any]) -> bool:
    """Alembic's ``include_name`` hook for a host: leaves the library's tables out of the
    host's autogenerate and ``alembic check``, keeps everything else.

    ``context.configure(..., include_name=workflow.include_name)`` in the host's ``env.py``.
    """
    return not (type_ == "table" and is_library_table(name))


def include_object(
    object: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's ``include_object`` hook for a host, for hosts that filter objects rather
    than names: leaves out the library's tables and everything on them."""
    if type_ == "table":
        return not is_library_table(name)
    table = getattr(object, "table", None)
    return not (table is not None and is_library_table(getattr(table, "name", None)))


@contextmanager
def _engine(bind: str | URL | Engine, *, create: bool = False) -> Iterator[Engine]:
    """The bind as an engine; a SQLite file must exist unless ``create`` (only `upgrade`
    makes one), and an asyncio engine or driver is refused with the fix."""
    if not isinstance(bind, (str, URL, Engine)):
        kind = type(bind).__name__
        raise ConfigurationError(
            f"migrations run on a database URL or a (synchronous) Engine, not {kind}: for an "
            "AsyncEngine pass its URL with the synchronous driver (sqlite:///…, "
            "postgresql+psycopg://…)"
        )
    engine = bind if isinstance(bind, Engine) else create_engine(bind)
    try:
        if engine.dialect.is_async:
            raise ConfigurationError(
                f"migrations run on a synchronous driver, not {engine.dialect.driver}: use the "
                "same URL with the synchronous driver (sqlite:///…, postgresql+psycopg://…)"
            )
        if create:
            refuse_a_directory(engine)
        else:
            require_existing_database(engine)
        yield engine
    finally:
        if engine is not bind:
            engine.dispose()


def _current(conn: Connection) -> str | None:
    current = MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()
    return current if current is not None else naming.legacy_revision(conn)


def _migrate(bind: str | URL | Engine, direction: str, revision: str) -> None:
    start: str | None = None
    reached = False
    with _engine(bind, create=direction == "upgrade") as engine:
        config = alembic_config(engine)
        try:
            with engine.connect() as conn:
                start = _current(conn)
                conn.rollback()
            reached = True
            getattr(command, direction)(config, revision)
        except WorkflowError:
            raise
        except Exception as exc:  # a revision may raise anything: name it and its cause
            if isinstance(exc, SQLAlchemyError):
                cause = describe_failure(engine.url, exc)
            else:
                cause = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            applied = list(config.attributes.get("idcard_applied", []))
            # A database that could not even be read failed no revision in particular.
            failed = _failed_revision(direction, start, revision, applied) if reached else None
            raise MigrationError(failed, cause) from exc


def _failed_revision(
    direction: str, start: str | None, target: str, applied: list[str]
) -> str | None:
    """The revision that failed: the first on the way from ``start`` to ``target`` that the
    run did not get through (the whole run was rolled back, so the database is at ``start``)."""
    script = ScriptDirectory.from_config(alembic_config())
    try:
        if direction == "upgrade":
            path = [s.revision for s in reversed(list(script.iterate_revisions(target, start)))]
        else:
            path = [s.revision for s in script.iterate_revisions(start, target)]
    except (CommandError, RevisionError):
        return None
    for revision in path:
        if revision not in applied:
            return revision
    return None


def upgrade(bind: str | URL | Engine, revision: str = "head") -> None:
    """Migrate the database up to ``revision`` (default: the latest); works on an empty one,
    and on one a host's own Alembic manages too. The whole run is one transaction: on failure
    `MigrationError` names the revision and the cause, and the database is as it was."""
    _migrate(bind, "upgrade", revision)


def downgrade(bind: str | URL | Engine, revision: str) -> None:
    """Migrate the database down to ``revision`` (``"base"`` removes every table of the
    library's; a host's tables are never touched). One transaction, like `upgrade`."""
    _migrate(bind, "downgrade", revision)


def current_revision(bind: str | URL | Engine) -> str | None:
    """The revision the database is at, or None for a database without the library's tables.

    A database made before the prefix reports the revision in its ``alembic_version`` row
    until `upgrade` hands it over."""
    with _engine(bind) as engine:
        try:
            with engine.connect() as conn:
                return _current(conn)
        except SQLAlchemyError as exc:
            failure = DatabaseFailure.of(exc)
            cause = describe_failure(engine.url, exc)
            raise StorageError(f"cannot read the schema revision: {cause}") from failure


def current_revision_on(conn: Connection) -> str | None:
    """The revision of the connection's database (see `current_revision`)."""
    return _current(conn)


def require_head(store: Store) -> None:
    """Raise `SchemaOutOfDate` unless the store's database is at the latest revision."""
    with store.transaction(write=False) as conn:
        require_head_on(conn)


def require_head_on(conn: Connection) -> None:
    """Raise `SchemaOutOfDate` unless the connection's database is at the latest revision."""
    current = _current(conn)
    if current != head_revision():
        raise SchemaOutOfDate(current, head_revision())
