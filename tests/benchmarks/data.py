"""Applications with valid histories, written fast and legally through the database driver.

Every row satisfies the schema's triggers exactly as the library's own writes do: each
application is inserted in ``submitted`` at version 1 with its creation row (``from_state``
NULL, ``seq`` 1), then moved along allowed transitions by set-based UPDATEs that bump the
version by one per step, with the log rows of those steps. The hash chain is computed with
`workflow.engine.chain.entry_hash`, so `Workflow.verify` accepts every history (the benchmarks check
that it does). Nothing disables a trigger; the outbox rows are whatever the schema writes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from workflow.engine.chain import entry_hash, identity_digest
from workflow.engine.records import LOG_KEYS
from workflow.models.citizen_id import check_character

from .common import Database

ACCEPTANCE = "440305"  # Nanshan District, Shenzhen
HUKOU = "110105"  # Chaoyang District, Beijing
MACHINE = "application"
IDENTITY = ("citizen_id", "name", "receipt_no")
CLERK = ("bench-clerk", "acceptance_clerk", ACCEPTANCE)
REVIEWER = ("bench-reviewer", "hukou_reviewer", HUKOU)
PRODUCER = ("bench-producer", "card_producer", ACCEPTANCE[:2])
ISSUE_WITHIN = timedelta(days=60)
REVIEW_WITHIN = timedelta(days=5)
RECEIPT_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

# event: (from, to, actor, delay after submission, column changes, guard facts)
EVENTS: dict[str, tuple[str, str, tuple[str, str, str], timedelta]] = {
    "transmit": ("submitted", "transmitted", CLERK, timedelta(days=1)),
    "approve": ("transmitted", "approved", REVIEWER, timedelta(days=2)),
    "reject": ("transmitted", "rejected", REVIEWER, timedelta(days=2)),
    "produce": ("approved", "produced", PRODUCER, timedelta(days=10)),
    "mark_ready": ("produced", "ready", CLERK, timedelta(days=20)),
    "collect": ("ready", "collected", CLERK, timedelta(days=25)),
}
PATH_TO: dict[str, tuple[str, ...]] = {
    "submitted": (),
    "transmitted": ("transmit",),
    "approved": ("transmit", "approve"),
    "rejected": ("transmit", "reject"),
    "produced": ("transmit", "approve", "produce"),
    "ready": ("transmit", "approve", "produce", "mark_ready"),
    "collected": ("transmit", "approve", "produce", "mark_ready", "collect"),
}
SINGLE_PATH = ("transmit", "approve", "produce", "mark_ready")
"""The commands the single-command benchmark runs on each application, in order."""

APP_COLUMNS = (
    "id",
    "kind",
    "state",
    "version",
    "citizen_id",
    "name",
    "hukou_region",
    "acceptance_region",
    "documents",
    "fee_paid",
    "fee_waiver",
    "receipt_no",
    "submitted_at",
    "due_at",
    "review_due_at",
    "rejection_ground",
    "rejection_note",
    "old_card_returned",
    "chain_head",
)
LOG_COLUMNS = LOG_KEYS
STEP_COLUMNS = (
    "seq",
    "id",
    "state",
    "chain_head",
    "review_due_at",
    "rejection_ground",
    "rejection_note",
    "old_card_returned",
)


def citizen_id(n: int) -> str:
    """A valid GB 11643 number, different for every ``n`` below 20 million."""
    born = date(1950, 1, 1) + timedelta(days=(n // 1000) % 20_000)
    first17 = f"{HUKOU}{born:%Y%m%d}{n % 1000:03d}"
    return first17 + check_character(first17)


def receipt_no(n: int, salt: int) -> str:
    """A unique 12-character receipt number for application ``n``."""
    value = n * 7919 + salt * 10**12
    chars = []
    for _ in range(12):
        value, digit = divmod(value, 32)
        chars.append(RECEIPT_ALPHABET[digit])
    return "".join(chars)


def entry(
    record_id: uuid.UUID,
    seq: int,
    event: str,
    from_state: str | None,
    to_state: str,
    actor: tuple[str, str, str],
    at: datetime,
    details: dict[str, Any],
    previous: str | None,
) -> dict[str, Any]:
    """A history row as the library writes it, with its chained hash."""
    row: dict[str, Any] = {
        "machine": MACHINE,
        "record_id": record_id,
        "seq": seq,
        "event": event,
        "from_state": from_state,
        "to_state": to_state,
        "actor_id": actor[0],
        "actor_role": actor[1],
        "actor_unit": actor[2],
        "at": at,
        "details": details,
    }
    row["hash"] = entry_hash(row, previous)
    return row


@dataclass
class Batch:
    """Applications to write, as driver-ready tuples: their rows (state submitted, version 1),
    every history row, and the steps (one per history row after the first) that move them to
    their final states. ``steps_per_seq`` counts the steps of each position."""

    apps: list[tuple[Any, ...]]
    logs: list[tuple[Any, ...]]
    steps: list[tuple[Any, ...]]
    steps_per_seq: dict[int, int]


def build(
    start: int,
    count: int,
    *,
    sqlite: bool,
    salt: int,
    final_state: Callable[[int], str],
    submitted_at: Callable[[int], datetime],
) -> Batch:
    """Applications ``start`` … ``start + count - 1`` with valid histories, in the driver's
    terms (SQLite: hex ids, SQLAlchemy's datetime text; PostgreSQL: uuid and datetime)."""
    uid: Callable[[uuid.UUID], Any] = (lambda u: u.hex) if sqlite else (lambda u: u)
    ts: Callable[[datetime | None], Any] = sqlite_time if sqlite else (lambda t: t)
    documents = json.dumps(["resident_id_card"])
    apps: list[tuple[Any, ...]] = []
    logs: list[tuple[Any, ...]] = []
    steps: list[tuple[Any, ...]] = []
    per_seq: dict[int, int] = {}
    for n in range(start, start + count):
        record_id = uuid.uuid4()
        rid = uid(record_id)
        at = submitted_at(n)
        kind, fee = ("damaged_renewal", "40.00") if n % 5 == 4 else ("renewal", "20.00")
        facts = {
            "kind": kind,
            "documents": ["resident_id_card"],
            "fee_paid": fee,
            "fee_waiver": None,
            "hukou_region": HUKOU,
            "acceptance_region": ACCEPTANCE,
        }
        who = {"citizen_id": citizen_id(n), "name": "Wang Fang", "receipt_no": receipt_no(n, salt)}
        facts["identity"] = identity_digest(MACHINE, record_id, who, IDENTITY)
        first = entry(record_id, 1, "submit", None, "submitted", CLERK, at, facts, None)
        logs.append(_log_tuple(first, rid, ts))
        apps.append(
            (
                rid,
                kind,
                "submitted",
                1,
                citizen_id(n),
                "Wang Fang",
                HUKOU,
                ACCEPTANCE,
                documents,
                fee,
                None,
                receipt_no(n, salt),
                ts(at),
                ts(at + ISSUE_WITHIN),
                None,
                None,
                None,
                0 if sqlite else False,
                first["hash"],
            )
        )
        previous = first["hash"]
        for seq, event in enumerate(PATH_TO[final_state(n)], start=2):
            source, target, actor, delay = EVENTS[event]
            when = at + delay
            details, ch = step_changes(event, when)
            row = entry(record_id, seq, event, source, target, actor, when, details, previous)
            logs.append(_log_tuple(row, rid, ts))
            returned = ch["old_card_returned"]
            steps.append(
                (
                    seq,
                    rid,
                    target,
                    row["hash"],
                    ts(ch["review_due_at"]),
                    ch["rejection_ground"],
                    ch["rejection_note"],
                    int(returned) if sqlite and returned is not None else returned,
                )
            )
            per_seq[seq] = per_seq.get(seq, 0) + 1
            previous = row["hash"]
    apps.sort(key=lambda r: r[0])
    logs.sort(key=lambda r: (r[1], r[2]))
    steps.sort(key=lambda r: (r[0], r[1]))
    return Batch(apps, logs, steps, per_seq)


def _log_tuple(row: dict[str, Any], rid: Any, ts: Callable[[datetime], Any]) -> tuple[Any, ...]:
    return (
        MACHINE,
        rid,
        row["seq"],
        row["event"],
        row["from_state"],
        row["to_state"],
        row["actor_id"],
        row["actor_role"],
        row["actor_unit"],
        ts(row["at"]),
        json.dumps(row["details"]),
        row["hash"],
    )


def step_changes(event: str, when: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The guard facts an event records and the columns it changes besides state/version."""
    changes: dict[str, Any] = {
        "review_due_at": None,
        "rejection_ground": None,
        "rejection_note": None,
        "old_card_returned": None,
    }
    details: dict[str, Any] = {}
    if event == "transmit":
        changes["review_due_at"] = when + REVIEW_WITHIN
    elif event == "reject":
        details = {"ground": "identity_mismatch", "note": ""}
        changes["rejection_ground"] = "identity_mismatch"
        changes["rejection_note"] = ""
    elif event == "collect":
        details = {"receipt_matches": True, "old_card_returned": True}
        changes["old_card_returned"] = True
    return details, changes


# -- writing --------------------------------------------------------------------------------


def sqlite_time(value: datetime | None) -> str | None:
    """SQLAlchemy's SQLite storage format of an aware datetime (naive UTC, microseconds)."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def insert_sql(sqlite: bool, table: str, columns: Sequence[str]) -> str:
    marks = ", ".join("?" if sqlite else "%s" for _ in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"


_STEP_UPDATE = (
    "UPDATE idcard_applications SET state = s.state, version = idcard_applications.version + 1, "
    "chain_head = s.chain_head, "
    "review_due_at = COALESCE(s.review_due_at, idcard_applications.review_due_at), "
    "rejection_ground = COALESCE(s.rejection_ground, idcard_applications.rejection_ground), "
    "rejection_note = COALESCE(s.rejection_note, idcard_applications.rejection_note), "
    "old_card_returned = COALESCE(s.old_card_returned, idcard_applications.old_card_returned) "
    "FROM gen_steps s WHERE s.seq = {mark} AND s.id = idcard_applications.id"
)


def write(db: Database, conn: Any, batch: Batch) -> None:
    """Write one batch in one transaction: applications, history rows, then the steps."""
    if db.sqlite:
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS gen_steps (seq INTEGER, id TEXT, state TEXT, "
            "chain_head TEXT, review_due_at TEXT, rejection_ground TEXT, rejection_note TEXT, "
            "old_card_returned INTEGER, PRIMARY KEY (seq, id)) WITHOUT ROWID"
        )
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert_sql(True, "idcard_applications", APP_COLUMNS), batch.apps)
        conn.executemany(insert_sql(True, "idcard_transition_log", LOG_COLUMNS), batch.logs)
        conn.executemany(insert_sql(True, "temp.gen_steps", STEP_COLUMNS), batch.steps)
        _run_steps(conn, batch, "?")
        conn.execute("DELETE FROM temp.gen_steps")
        conn.execute("COMMIT")
        return
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS gen_steps (seq integer, id uuid, state text, "
        "chain_head text, review_due_at timestamptz, rejection_ground text, "
        "rejection_note text, old_card_returned boolean, PRIMARY KEY (seq, id))"
    )
    with conn.transaction():
        cur = conn.cursor()
        for table, rows, columns in (
            ("idcard_applications", batch.apps, APP_COLUMNS),
            ("idcard_transition_log", batch.logs, LOG_COLUMNS),
            ("gen_steps", batch.steps, STEP_COLUMNS),
        ):
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        _run_steps(conn, batch, "%s")
        conn.execute("TRUNCATE gen_steps")


def _run_steps(conn: Any, batch: Batch, mark: str) -> None:
    statement = _STEP_UPDATE.format(mark=mark)
    for seq, expected in sorted(batch.steps_per_seq.items()):
        moved = conn.execute(statement, (seq,)).rowcount
        if moved != expected:
            raise RuntimeError(f"step {seq}: moved {moved} of {expected} applications")


def _build_job(
    args: tuple[int, int, bool, int, Callable[[int], str], Callable[[int], datetime]],
) -> Batch:
    start, count, sqlite, salt, final_state, submitted_at = args
    return build(
        start, count, sqlite=sqlite, salt=salt, final_state=final_state, submitted_at=submitted_at
    )


def populate(
    db: Database,
    count: int,
    *,
    start: int = 0,
    final_state: Callable[[int], str] = lambda n: "submitted",
    submitted_at: Callable[[int], datetime] | None = None,
    batch_size: int = 20_000,
    workers: int = 0,
) -> None:
    """Write applications ``start`` … ``start + count - 1`` with valid histories.

    With ``workers``, other processes compute the rows and hashes while this one writes (the
    callables must then be picklable: module-level functions)."""
    when = submitted_at or _now
    jobs = [
        (first, min(batch_size, start + count - first), db.sqlite, 1, final_state, when)
        for first in range(start, start + count, batch_size)
    ]
    conn = db.connect(durable=False)
    try:
        if workers and len(jobs) > 1:
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for batch in pool.imap(_build_job, jobs):
                    write(db, conn, batch)
        else:
            for job in jobs:
                write(db, conn, _build_job(job))
    finally:
        conn.close()


def _now(n: int) -> datetime:
    return datetime.now(UTC)


# The mix of a working acceptance system: most applications still on their way.
_MIX = (
    ("submitted", 40),
    ("transmitted", 25),
    ("approved", 10),
    ("produced", 10),
    ("ready", 5),
    ("collected", 7),
    ("rejected", 3),
)
_BUCKETS = [state for state, share in _MIX for _ in range(share)]


def mixed_state(n: int) -> str:
    """The final state of application ``n`` in the benchmark's mix (out of every 100: 40
    submitted, 25 transmitted, 10 approved, 10 produced, 5 ready, 7 collected, 3 rejected)."""
    return _BUCKETS[(n * 37) % 100]
