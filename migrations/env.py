"""Alembic environment for idcard-workflow.

The database comes from ``config.attributes["connection"]`` when that holds an `Engine` or a
`Connection` (how `workflow.upgrade`, Alembic's cookbook and pytest-alembic pass it), and from
the ``sqlalchemy.url`` option otherwise.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection, Engine

from workflow.models import Base
from workflow.store import create_engine, prepare_engine

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
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
        prepare_engine(given)
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
