"""Run the shipped Alembic migrations from code, and refuse a database that is behind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Engine

from workflow.errors import SchemaOutOfDate
from workflow.store import create_engine, prepare_engine

if TYPE_CHECKING:
    from workflow.store import Store


def alembic_config(bind: Engine | None = None) -> Config:
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


@contextmanager
def _engine(bind: str | URL | Engine) -> Iterator[Engine]:
    if isinstance(bind, Engine):
        prepare_engine(bind)
        yield bind
        return
    engine = create_engine(bind)
    try:
        yield engine
    finally:
        engine.dispose()


def upgrade(bind: str | URL | Engine, revision: str = "head") -> None:
    """Migrate the database up to ``revision`` (default: the latest); works on an empty one."""
    with _engine(bind) as engine:
        command.upgrade(alembic_config(engine), revision)


def downgrade(bind: str | URL | Engine, revision: str) -> None:
    """Migrate the database down to ``revision`` (``"base"`` removes every table)."""
    with _engine(bind) as engine:
        command.downgrade(alembic_config(engine), revision)


def current_revision(bind: str | URL | Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with _engine(bind) as engine, engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def require_head(store: Store) -> None:
    """Raise `SchemaOutOfDate` unless the store's database is at the latest revision."""
    with store.transaction(write=False) as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current != head_revision():
        raise SchemaOutOfDate(current, head_revision())
