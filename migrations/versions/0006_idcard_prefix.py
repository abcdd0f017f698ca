"""Every object the library creates is prefixed idcard_, so it can share a host's database.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

A database created by this version of the library already has prefixed names from revision
0001 on, and this revision does nothing to it. A database created before the prefix (its
version row was in ``alembic_version``; `naming.adopt_version_row` has moved it) is renamed in
place here: tables, their constraints and indexes, PostgreSQL's sequences, and the triggers and
trigger functions, which are created again from the same DDL a fresh database gets. Rows,
histories and hash chains are kept as they are.

SQLite has no way to rename a constraint or an index, so each table is created again under its
new name from its own stored DDL with the names replaced, and its rows are copied across.
"""

import re
from collections.abc import Sequence

from alembic import op
from sqlalchemy.engine import Connection

from workflow.migrations import enforcement, naming

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "allowed_transitions",
    "applications",
    "loss_reports",
    "found_cards",
    "transition_log",
    "command_requests",
    "outbox",
)
"""The library's tables before the prefix; a table comes after every table it refers to."""

SERIAL_TABLES = ("transition_log", "outbox")
"""Tables whose ``id`` draws from a sequence (PostgreSQL's bigserial)."""

STATE_TABLES = (
    ("applications", "application", "submitted"),
    ("loss_reports", "loss_report", "reported"),
    ("found_cards", "found_card", "held"),
)


def _drop_triggers() -> None:
    # Under their old names, as revisions 0003 to 0005 created them.
    enforcement.unpublish_log()
    for table, _, _ in STATE_TABLES:
        enforcement.unguard_records(table)
    enforcement.unguard_log()
    enforcement.unfreeze_allowed_transitions()


def _create_triggers() -> None:
    # Under the new names, exactly as a fresh database gets them.
    enforcement.install_functions()
    enforcement.freeze_allowed_transitions()
    enforcement.guard_log()
    for table, machine, initial in STATE_TABLES:
        enforcement.guard_records(table, machine, initial)
    enforcement.publish_log()


def _renamer(names: set[str]) -> re.Pattern[str]:
    ordered = sorted(names, key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(re.escape(n) for n in ordered) + r")\b")


def _rename_sqlite(conn: Connection) -> None:
    listed = ", ".join(f"'{t}'" for t in TABLES)
    rows = conn.exec_driver_sql(
        f"SELECT type, name, sql FROM sqlite_master WHERE tbl_name IN ({listed})"
    ).all()
    tables = {name: sql for kind, name, sql in rows if kind == "table"}
    indexes = [sql for kind, _, sql in rows if kind == "index" and sql is not None]
    names = set(tables) | {name for kind, name, sql in rows if kind == "index" and sql}
    for sql in tables.values():
        names.update(re.findall(r"CONSTRAINT\s+\"?(\w+)", sql))
    pattern = _renamer(names)

    def renamed(sql: str) -> str:
        return pattern.sub(lambda m: naming.PREFIX + m.group(1), sql)

    for table in TABLES:
        conn.exec_driver_sql(renamed(tables[table]))
        conn.exec_driver_sql(f"INSERT INTO {naming.PREFIX}{table} SELECT * FROM {table}")
    for table in reversed(TABLES):
        conn.exec_driver_sql(f"DROP TABLE {table}")
    for sql in indexes:
        conn.exec_driver_sql(renamed(sql))


def _rename_postgresql(conn: Connection) -> None:
    prefix = naming.PREFIX
    for table in TABLES:
        conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {prefix}{table}")
        # A primary key's or unique constraint's index is renamed with its constraint.
        constraints = conn.exec_driver_sql(
            "SELECT conname FROM pg_constraint WHERE conrelid = %(t)s::regclass",
            {"t": prefix + table},
        ).scalars()
        for name in constraints.all():
            if not name.startswith(prefix):
                conn.exec_driver_sql(
                    f"ALTER TABLE {prefix}{table} RENAME CONSTRAINT {name} TO {prefix}{name}"
                )
        indexes = conn.exec_driver_sql(
            "SELECT indexname FROM pg_indexes "
            "WHERE schemaname = current_schema() AND tablename = %(t)s",
            {"t": prefix + table},
        ).scalars()
        for name in indexes.all():
            if not name.startswith(prefix):
                conn.exec_driver_sql(f"ALTER INDEX {name} RENAME TO {prefix}{name}")
        if table not in SERIAL_TABLES:
            continue
        sequence = conn.exec_driver_sql(
            "SELECT pg_get_serial_sequence(%(t)s, 'id')", {"t": prefix + table}
        ).scalar()
        if sequence is not None:
            name = sequence.rpartition(".")[2].strip('"')
            if not name.startswith(prefix):
                conn.exec_driver_sql(f"ALTER SEQUENCE {sequence} RENAME TO {prefix}{name}")


def upgrade() -> None:
    if not naming.legacy_names():
        return
    conn = op.get_bind()
    _drop_triggers()
    if conn.dialect.name == "sqlite":
        _rename_sqlite(conn)
    else:
        _rename_postgresql(conn)
    naming.mark_renamed()
    _create_triggers()


def downgrade() -> None:
    """Nothing: a database keeps its prefixed names below this revision too."""
