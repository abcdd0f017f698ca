"""Alembic environment for idcard-workflow.

The database comes from ``config.attributes["connection"]`` when that holds an `Engine` or a
`Connection` (how `workflow.upgrade`, Alembic's cookbook and pytest-alembic pass it), and from
the ``sqlalchemy.url`` option otherwise.

The library keeps its revision in its own version table, ``idcard_alembic_version``, so a host's
Alembic (``alembic_version``) can run on the same database in any order. A whole run is one
transaction, on SQLite too: a migration that fails leaves the database as it found it. A
database made before the prefix is handed over first (`naming.adopt_version_row`).
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy.engine import Connection, Engine

from workflow.engine.store import create_engine, is_library_engine, sqlite_transaction
from workflow.migrations import naming
from workflow.models import Base

config = context.config
target_metadata = Base.metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate compares the library's own tables only, never a host's beside them."""
    return type_ != "table" or (name or "").startswith(naming.PREFIX)


APPLIED = "idcard_applied"
"""``config.attributes`` key: the revisions this run applied (or undid), in order, so a caller
can tell which one failed."""


def _applied(ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
    config.attributes.setdefault(APPLIED, []).append(step.up_revision_id)


def _migrate(connection: Connection) -> None:
    naming.adopt_version_row(connection)
    options: dict[str, Any] = {naming.LEGACY_NAMES: naming.has_legacy_names(connection)}
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=naming.VERSION_TABLE,
        include_name=include_name,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        on_version_apply=_applied,
        **options,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    if connection.in_transaction():
        _migrate(connection)  # the caller's transaction: the caller commits
    elif connection.dialect.name == "sqlite":
        set_up = is_library_engine(connection.engine)
        with sqlite_transaction(connection, write=True, lock_table=None, set_up=set_up):
            _migrate(connection)
    else:
        with connection.begin():
            _migrate(connection)


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        version_table=naming.VERSION_TABLE,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run(given)
        return
    if isinstance(given, Engine):
        with given.connect() as connection:
            _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no database: pass an Engine or Connection in config.attributes['connection'] "
            "or set sqlalchemy.url"
        )
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
