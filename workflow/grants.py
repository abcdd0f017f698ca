"""The PostgreSQL grants a host gives the application's role and an auditor's role.

`grants_sql` writes the script (``idcard-workflow db grants`` prints it), from the library's own
table list: the application may read and write what the commands need and nothing more (no
DELETE, no TRUNCATE, no change of a history row, of an outbox row's event or of a record's fixed
columns); the auditor may only read. `docs/security.md` shows it, and a test runs it on a real
server and tries every write it refuses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from workflow.machines import REGISTRY
from workflow.models.base import (
    VERSION_TABLE,
    Base,
    CommandRequest,
    OutboxEvent,
    TransitionLog,
)

MOVED_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "idcard_applications": (
        "review_due_at",
        "rejection_ground",
        "rejection_note",
        "due_at",
        "old_card_returned",
    ),
    "idcard_loss_reports": ("ended_at",),
    "idcard_found_cards": ("ended_at",),
}
"""Per state table, the columns an event's effect sets (besides `StateRecord`'s state, version
and chain head): the only columns the application role may update. Everything else a record
holds is fixed at its creation. A test fires every event and checks the library updates no
other column."""

MOVED_BY_EVERY_EVENT = ("state", "version", "chain_head")
"""The `StateRecord` columns every transition sets."""

# Named parameters: a % in a name stays one (pyformat drivers would double it).
_PREPARER = postgresql.dialect(paramstyle="named").identifier_preparer  # type: ignore[no-untyped-call]


def quote(name: str) -> str:
    """``name`` as an SQL identifier: as it is when it is a plain lower-case one, else in
    double quotes. A name PostgreSQL can't hold (empty, a NUL, over 63 bytes) is refused."""
    if not name or "\x00" in name or len(name.encode("utf-8")) > 63:
        raise ValueError(f"{name!r} is not a PostgreSQL name (1 to 63 bytes, no NUL)")
    return str(_PREPARER.quote(name))


_TAG = "$grants$"


def state_tables() -> list[sa.Table]:
    """The tables of the registered machines' records, in the registry's order."""
    return [machine.repository.table for machine in REGISTRY]


def library_tables() -> list[str]:
    """Every table of the library's, the version table included, sorted."""
    return sorted({*Base.metadata.tables, VERSION_TABLE})


def written_tables() -> list[str]:
    """The tables the library's commands write: the records, the history, the request
    records and the outbox."""
    written = [t.name for t in state_tables()]
    return [*written, *(_table_of(m) for m in (TransitionLog, CommandRequest, OutboxEvent))]


def read_only_tables() -> list[str]:
    """The library's tables its commands only read (the version, the allowed transitions,
    the history marks: written by migrations alone), sorted."""
    return sorted(set(library_tables()) - set(written_tables()))


def library_sequences() -> list[str]:
    """The sequences PostgreSQL made for the library's auto-numbered keys (serial columns are
    named ``<table>_<column>_seq``), sorted."""
    found = []
    for table in Base.metadata.tables.values():
        column = table.autoincrement_column
        if column is not None:
            found.append(f"{table.name}_{column.name}_seq")
    return sorted(found)


def moved_columns(table: sa.Table) -> tuple[str, ...]:
    """The columns of a state table the application role may update."""
    try:
        effects = MOVED_COLUMNS[table.name]
    except KeyError:
        raise LookupError(
            f"no update grant is declared for {table.name}: add its effects' columns to "
            "workflow.grants.MOVED_COLUMNS"
        ) from None
    columns = (*MOVED_BY_EVERY_EVENT, *effects)
    for column in columns:
        assert column in table.c, f"{table.name} has no column {column}"
    return columns


def _table_of(model: type[Base]) -> str:
    table = model.__table__
    assert isinstance(table, sa.Table)
    return table.name


def grants_sql(
    role: str,
    *,
    schema: str = "public",
    database: str | None = None,
    auditor: str | None = None,
) -> str:
    """The SQL script that gives ``role`` (the application's) exactly what the library's
    commands need on the tables in ``schema``, ``auditor`` (if given) read access only, and
    takes temporary tables away from everyone in ``database`` (default: the database the script
    runs in). Run it as the owner of the tables and the database (or a superuser), after the
    migrations, and again after every upgrade; it revokes first, so it also narrows broader
    grants given before."""
    for name in (role, auditor):
        if name is not None and name.lower() == "public":
            raise ValueError("PUBLIC is every role, not one: name the application's own role")
    app, s = quote(role), quote(schema)

    def tables(names: Sequence[str]) -> str:
        """The tables, with the spaces around them: on lines of their own when many."""
        listed = [f"{s}.{quote(n)}" for n in names]
        if len(listed) < 3:
            return f" {', '.join(listed)} "
        return "\n    " + ",\n    ".join(listed) + "\n"

    everything = library_tables()
    sequences = ", ".join(f"{s}.{quote(n)}" for n in library_sequences())
    if not sequences:
        raise LookupError("the library's tables have no sequence")
    log, requests = _table_of(TransitionLog), _table_of(CommandRequest)
    outbox = _table_of(OutboxEvent)
    states = state_tables()
    lines = [
        "-- idcard-workflow: PostgreSQL grants (generated by `idcard-workflow db grants`).",
        "-- Run as the owner of the tables and the database, after every upgrade.",
        "BEGIN;",
        "",
        f"-- {role}, the application's role: owns nothing, deletes nothing, rewrites no history.",
        f"REVOKE ALL ON TABLE{tables(everything)}FROM {app};",
        f"REVOKE ALL ON SEQUENCE {sequences} FROM {app};",
        f"GRANT USAGE ON SCHEMA {s} TO {app};",
        "-- The version, the allowed transitions and every other table migrations alone write.",
        f"GRANT SELECT ON TABLE{tables(read_only_tables())}TO {app};",
        f"GRANT SELECT, INSERT ON TABLE{tables([t.name for t in states])}TO {app};",
        "-- A record's state moves, and an event sets the columns of its effect; nothing else.",
    ]
    for table in states:
        columns = ", ".join(map(quote, moved_columns(table)))
        lines.append(f"GRANT UPDATE ({columns})\n    ON TABLE{tables([table.name])}TO {app};")
    lines += [
        f"GRANT SELECT, INSERT ON TABLE{tables([log, requests])}TO {app};",
        "-- The outbox: written by the history's trigger, which runs as the writer of the",
        "-- history (INSERT); a relay acknowledges an event (acked_at) and changes nothing else.",
        f"GRANT SELECT, INSERT, UPDATE (acked_at) ON TABLE{tables([outbox])}TO {app};",
        f"GRANT USAGE ON SEQUENCE {sequences} TO {app};",
    ]
    roles = [app]
    if auditor is not None:
        audit = quote(auditor)
        roles.append(audit)
        lines += [
            "",
            f"-- {auditor}, the auditor's role: reads, and nothing else.",
            f"REVOKE ALL ON TABLE{tables(everything)}FROM {audit};",
            f"REVOKE ALL ON SEQUENCE {sequences} FROM {audit};",
            f"GRANT USAGE ON SCHEMA {s} TO {audit};",
            f"GRANT SELECT ON TABLE{tables(everything)}TO {audit};",
        ]
    lines += [
        "",
        "-- No temporary tables, and no new objects in the schema, for anyone but the owner.",
    ]
    who = ", ".join(["PUBLIC", *roles])
    if database is not None:
        lines.append(f"REVOKE TEMPORARY ON DATABASE {quote(database)} FROM {who};")
    else:  # the database the script runs in, whatever its name
        if _TAG in who:
            raise ValueError(f"a role's name may not hold {_TAG}")
        literal = who.replace("%", "%%").replace("'", "''")
        lines.append(
            f"DO {_TAG} BEGIN EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM {literal}', "
            f"current_database()); END {_TAG};"
        )
    lines += [f"REVOKE CREATE ON SCHEMA {s} FROM {who};", "", "COMMIT;"]
    return "\n".join(lines) + "\n"


__all__ = [
    "MOVED_COLUMNS",
    "grants_sql",
    "library_sequences",
    "library_tables",
    "moved_columns",
    "quote",
    "read_only_tables",
    "state_tables",
    "written_tables",
]
