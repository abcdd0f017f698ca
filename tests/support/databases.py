"""Test databases: empty, migrated ones handed out quickly, and an engine that tampers."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import workflow as wf

POSTGRES_URL_VARIABLE = "IDCARD_TEST_DATABASE_URL"


@contextmanager
def tampering(url: str) -> Iterator[sa.Engine]:
    """An engine that writes behind the library's back and past the database's own refusals,
    as someone with full rights over the database could: on SQLite the triggers are dropped,
    on PostgreSQL each connection takes the replica role, which skips triggers and foreign keys."""
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            names = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            for (name,) in names.all():
                conn.exec_driver_sql(f"DROP TRIGGER {name}")
    else:

        @sa.event.listens_for(engine, "connect")
        def _replica(dbapi_connection: Any, record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("SET session_replication_role = replica")
            cursor.close()

    try:
        yield engine
    finally:
        engine.dispose()


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_URL_VARIABLE) or None


class Databases:
    """Hands out empty, migrated databases quickly: a copied SQLite template, or PostgreSQL
    tables emptied in place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.postgres = postgres_url()
        self.template = root / "template.db"
        if self.postgres:
            wf.upgrade(self.postgres)
        else:
            wf.upgrade(f"sqlite:///{self.template}")
        self._count = 0

    def fresh(self) -> str:
        if self.postgres:
            engine = sa.create_engine(self.postgres)
            with engine.begin() as conn:
                # The log's triggers refuse TRUNCATE; a superuser's replica role skips triggers.
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
                tables = sorted(set(wf.Base.metadata.tables) - {"idcard_allowed_transitions"})
                conn.exec_driver_sql(f"TRUNCATE {', '.join(tables)}")
            engine.dispose()
            return self.postgres
        self._count += 1
        path = self.root / f"db{self._count}.db"
        shutil.copyfile(self.template, path)
        return f"sqlite:///{path}"

    def empty(self) -> Iterator[str]:
        """A database with no tables at all (for migration tests)."""
        if self.postgres:
            if wf.current_revision(self.postgres) == wf.head_revision():
                self.fresh()  # no history the downgrade would refuse to drop (revision 0007)
            wf.downgrade(self.postgres, "base")
            try:
                yield self.postgres
            finally:
                wf.upgrade(self.postgres)
            return
        self._count += 1
        path = self.root / f"empty{self._count}.db"
        sqlite3.connect(path).close()  # an empty database file, as a host would create it
        yield f"sqlite:///{path}"
