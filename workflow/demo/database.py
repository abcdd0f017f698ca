"""The demo's own SQLite file: marked as the demo's when created, replaced only when it is the
demo's (or empty), and read back straight from the tables to check the replay's ledger.

Nothing here goes through the library: the mark is in the file's header, the counts are plain
``SELECT``s, so that the check does not trust the code it checks.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from workflow.demo.data import DEMO_MARKER
from workflow.machines import REGISTRY
from workflow.models.tables import TransitionLog

_SQLITE_MAGIC = b"SQLite format 3\x00"
_APPLICATION_ID_OFFSET = 68
"""Where a SQLite file's header keeps ``PRAGMA application_id`` (4 bytes, big-endian)."""


def is_demo_database(path: Path) -> bool:
    """Whether ``path`` is a SQLite file the demo created: its header carries `DEMO_MARKER`.

    Only the file's first 72 bytes are read; the file is not opened as a database."""
    try:
        with path.open("rb") as file:
            header = file.read(_APPLICATION_ID_OFFSET + 4)
    except OSError:
        return False
    return (
        header.startswith(_SQLITE_MAGIC)
        and len(header) == _APPLICATION_ID_OFFSET + 4
        and int.from_bytes(header[_APPLICATION_ID_OFFSET:], "big") == DEMO_MARKER
    )


def refusal(path: Path, *, elsewhere: str = "choose another file with --db") -> str | None:
    """Why the demo must not delete ``path``, or None when it may: the file is missing or
    empty, or it is a database the demo created (`is_demo_database`). ``elsewhere`` says how
    to choose another file."""
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_file():
        return f"{path} exists and is not a file; {elsewhere}"
    if path.stat().st_size == 0 or is_demo_database(path):
        return None
    return (
        f"{path} exists and was not created by the demo, which deletes and recreates the "
        f"database it runs on; pass --force to replace it (its data is lost), or {elsewhere}"
    )


def recreate(path: Path) -> str:
    """Delete ``path`` (and its journals) and create it again, empty and marked as the demo's;
    return its URL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    # Marked before the library opens it (in WAL mode), so the mark is in the file's header.
    connection = sqlite3.connect(path)
    try:
        connection.execute(f"PRAGMA application_id = {DEMO_MARKER}")
        connection.commit()
    finally:
        connection.close()
    return f"sqlite:///{path}"


@dataclass(frozen=True)
class Counts:
    """Records per state of each machine and transition-log rows of each machine; a state
    nobody reached, or a machine with no rows, is left out."""

    states: dict[str, dict[str, int]]
    rows: dict[str, int]


def stored_counts(url: str) -> Counts:
    """What the database holds, read straight from each registered machine's table."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            states = {}
            for machine in REGISTRY:
                column = machine.repository.table.c.state
                query = sa.select(column, sa.func.count()).group_by(column)
                states[machine.name] = {str(s): int(n) for s, n in conn.execute(query)}
            machines = sa.select(TransitionLog.machine, sa.func.count())
            query = machines.group_by(TransitionLog.machine)
            rows = {str(m): int(n) for m, n in conn.execute(query)}
    finally:
        engine.dispose()
    return Counts(states, rows)
