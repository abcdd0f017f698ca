"""The names the migrations give what they create, and the hand-over of older databases.

Everything the library creates in a database is prefixed ``idcard_`` (tables, indexes,
constraints, triggers, sequences, functions), and its Alembic version table is
``idcard_alembic_version``, so it can share a database with a host's own tables and Alembic.

Databases created before the prefix (revisions 0001 to 0005 with unprefixed names and the
version row in ``alembic_version``) are brought over in place:

- `adopt_version_row` moves the library's row out of ``alembic_version`` into
  ``idcard_alembic_version`` before anything else runs (a row of anyone else's is left alone);
- while such a database is below revision 0006 the revisions it still needs create the names it
  already uses (`name` returns them unprefixed), then revision 0006 renames every object to its
  prefixed name, with its data, histories and hash chains untouched.

A fresh database only ever sees prefixed names. The rule is fixed: the prefixed name of an
object is ``idcard_`` followed by its unprefixed name. Frozen, like the revisions that use it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

PREFIX = "idcard_"
VERSION_TABLE = "idcard_alembic_version"
LEGACY_VERSION_TABLE = "alembic_version"
RENAMED_AT = "0006"
"""The revision that renames a database made before the prefix."""
LEGACY_REVISIONS = frozenset({"0001", "0002", "0003", "0004", "0005"})
"""Revisions a database made before the prefix can be at; its version row holds one."""

LEGACY_NAMES = "idcard_legacy_names"
"""Migration context option: this run starts on a database with unprefixed names."""
_RENAMED = "idcard_renamed"
"""Migration context option: revision 0006 renamed everything during this run."""


def name(legacy: str) -> str:
    """The name an object has in the database being migrated: ``idcard_`` + ``legacy``, except
    in a database made before the prefix that has not reached revision 0006 yet."""
    return legacy if legacy_names() else PREFIX + legacy


def legacy_names() -> bool:
    """Whether the migration running now works on a database that still has unprefixed names."""
    opts = op.get_context().opts
    return bool(opts.get(LEGACY_NAMES)) and not opts.get(_RENAMED)


def mark_renamed() -> None:
    """Revision 0006 has renamed every object: later revisions of this run use the prefix."""
    op.get_context().opts[_RENAMED] = True


def _version_table(table: str) -> sa.Table:
    # The shape Alembic gives its version table, primary key name included.
    return sa.Table(
        table,
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("version_num", name=f"{table}_pkc"),
    )


def _legacy_schema_revision(connection: Connection) -> str | None:
    """The revision a database made before the prefix is at, read from its schema, or None if
    the unprefixed tables are not the library's.

    A row in ``alembic_version`` says nothing alone: a host's Alembic may number its own
    revisions 0001, 0002, ... too. The library's unprefixed tables are recognised by their
    columns, and each revision by what it added.
    """
    inspector = sa.inspect(connection)
    tables = set(inspector.get_table_names())
    if not {"applications", "transition_log"} <= tables:
        return None
    log = {c["name"] for c in inspector.get_columns("transition_log")}
    apps = {c["name"] for c in inspector.get_columns("applications")}
    if not (
        {"machine", "record_id", "seq", "event", "from_state", "to_state", "actor_role"} <= log
        and {"receipt_no", "citizen_id", "hukou_region", "state", "version"} <= apps
    ):
        return None
    if "hash" not in log:
        return "0001"
    if "allowed_transitions" not in tables:
        return "0002"
    if "loss_reports" not in tables:
        return "0003"
    if connection.dialect.name == "sqlite":
        published = connection.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'transition_log_publish'"
        ).first()
    else:
        published = connection.exec_driver_sql(
            "SELECT 1 FROM pg_trigger WHERE tgname = 'transition_log_publish' "
            "AND tgrelid = 'transition_log'::regclass"
        ).first()
    return "0005" if published else "0004"


def legacy_revision(connection: Connection) -> str | None:
    """The library's revision recorded in ``alembic_version`` by a database made before the
    prefix, or None: only a row equal to what the unprefixed schema shows counts."""
    if not sa.inspect(connection).has_table(LEGACY_VERSION_TABLE):
        return None
    schema = _legacy_schema_revision(connection)
    if schema is None:
        return None
    legacy = _version_table(LEGACY_VERSION_TABLE)
    rows = {str(v) for (v,) in connection.execute(sa.select(legacy.c.version_num))}
    return schema if schema in rows else None


def adopt_version_row(connection: Connection) -> None:
    """Move the library's row from ``alembic_version`` into ``idcard_alembic_version``.

    Only a database that has no row of its own in ``idcard_alembic_version`` and whose
    unprefixed tables are the library's is handed over, and only the one row naming the
    revision its schema shows; any other row (a host's) is left alone. Runs in the migration's
    transaction, so it happens with the rest of the upgrade or not at all.
    """
    inspector = sa.inspect(connection)
    current = _version_table(VERSION_TABLE)
    if (
        inspector.has_table(VERSION_TABLE)
        and connection.execute(sa.select(current.c.version_num)).first()
    ):
        return
    ours = legacy_revision(connection)
    if ours is None:
        return
    current.create(connection, checkfirst=True)
    connection.execute(current.insert(), [{"version_num": ours}])
    legacy = _version_table(LEGACY_VERSION_TABLE)
    connection.execute(legacy.delete().where(legacy.c.version_num == ours))


def has_legacy_names(connection: Connection) -> bool:
    """Whether the library's objects in this database still have their unprefixed names: it
    has a library revision recorded but no ``idcard_transition_log`` (revision 0001 creates it,
    under one name or the other)."""
    inspector = sa.inspect(connection)
    if not inspector.has_table(VERSION_TABLE):
        return False
    table = _version_table(VERSION_TABLE)
    recorded = connection.execute(sa.select(table.c.version_num)).first()
    return recorded is not None and not inspector.has_table(PREFIX + "transition_log")
