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


def legacy_revision(connection: Connection) -> str | None:
    """The library's revision recorded in ``alembic_version`` by a database made before the
    prefix, or None."""
    if not sa.inspect(connection).has_table(LEGACY_VERSION_TABLE):
        return None
    legacy = _version_table(LEGACY_VERSION_TABLE)
    for (version,) in connection.execute(sa.select(legacy.c.version_num)):
        if version in LEGACY_REVISIONS:
            return str(version)
    return None


def adopt_version_row(connection: Connection) -> None:
    """Move the library's row from ``alembic_version`` into ``idcard_alembic_version``.

    A row there is the library's when it names one of the revisions that used that table; any
    other row (a host's) is never read past its value, changed or deleted. Runs in the
    migration's transaction, so it happens with the rest of the upgrade or not at all.
    """
    inspector = sa.inspect(connection)
    if not inspector.has_table(LEGACY_VERSION_TABLE):
        return
    legacy = _version_table(LEGACY_VERSION_TABLE)
    ours = [
        v for (v,) in connection.execute(sa.select(legacy.c.version_num)) if v in LEGACY_REVISIONS
    ]
    if not ours:
        return
    current = _version_table(VERSION_TABLE)
    current.create(connection, checkfirst=True)
    if connection.execute(sa.select(sa.func.count()).select_from(current)).scalar_one() == 0:
        connection.execute(current.insert(), [{"version_num": v} for v in ours])
    connection.execute(legacy.delete().where(legacy.c.version_num.in_(ours)))


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
