"""Proving a database's histories: replay, guard facts, hash chain, stored state and version.

Generic: works on any machine's `Definition` and `Repository`. Records are read in batches (with
their histories), so memory stays flat however many there are: as the driver returns them
(`workflow.engine.reading`), and a batch holding a value of a shape the library never writes
the ordinary way, through SQLAlchemy's rows, whose reading names what can't be read back
(`malformed_row`). `verify_since` proves a history against a checkpoint and replays only what
changed after it; `with_database_checks` adds the checks over the whole database.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import Connection

from workflow.engine.chain import IDENTITY_FACT, IDENTITY_SINCE, entry_hash, identity_digest
from workflow.engine.checkpoint import Checkpoint, Comparison, Segment, compare, covered_records
from workflow.engine.decision import shown
from workflow.engine.definition import Definition, Guard
from workflow.engine.reading import MachineReader, Unusual
from workflow.engine.records import Repository
from workflow.engine.registry import Machine
from workflow.engine.store import Store
from workflow.models.base import HistoryMark, TransitionLog

PROBLEMS: Mapping[str, str] = {
    "missing_history": "the record has no history",
    "sequence_broken": "history positions are not 1, 2, 3, … (a row was deleted or inserted)",
    "hash_mismatch": "the row's hash does not match its content and the previous row's hash",
    "bad_creation": "the first row is not the record's creation in the initial state",
    "creation_facts_changed": "the record's fixed columns differ from those recorded at creation",
    "illegal_step": "the row is not a transition the definition allows from the replayed state",
    "guard_not_proven": "the row's recorded facts do not show that a guard held",
    "state_mismatch": "the stored state is not the state the history replays to",
    "version_mismatch": "the stored version is not the number of history rows",
    "chain_head_mismatch": "the record's chain head is not the hash of its last history row",
    "history_without_record": "history rows exist for a record that does not",
    "malformed_row": "a stored value is not of the shape the library writes (planted by hand)",
    "identity_changed": "the record's citizen number, name or receipt is not the one its "
    "history was created for (the record was rebuilt under another's history)",
    "not_permitted": "the row's actor (role and unit) may not fire its event on this record",
    "unknown_machine": "history rows of a machine the library does not know",
    "unkeyed_row": "the row is hashed without the chain key although the database uses one "
    "(written by someone without the key)",
    "facts_contradicted": "the row's recorded facts contradict what the record's own earlier "
    "rows, or the other records, show at that time",
    "columns_changed": "a column an event sets (a deadline, a refusal's ground, an end time) "
    "differs from what the record's history says",
}
"""Every problem verification names, with what it means."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BrokenRecord(_Frozen):
    """One damaged record: the first bad history row (``seq``; None when the record itself is
    at fault) and what is wrong with it."""

    machine: str
    record_id: uuid.UUID
    seq: int | None
    problem: str
    message: str


class VerificationReport(_Frozen):
    """What `Workflow.verify` found: how much it checked and every damaged record."""

    records: int
    rows: int
    broken: list[BrokenRecord]
    keyed: bool = False
    """Whether the hashes were checked under a chain key (HMAC) rather than as plain SHA-256."""
    checkpoint: Comparison | None = None
    """With ``verify(since=...)``: whether the history still extends the checkpoint."""

    @property
    def ok(self) -> bool:
        """True when nothing is damaged (and the history extends the checkpoint, if given)."""
        return not self.broken and (self.checkpoint is None or self.checkpoint.ok)


def merge(reports: Iterable[VerificationReport]) -> VerificationReport:
    """One report for several machines (checked all with a key, or all without)."""
    records = rows = 0
    keyed = False
    broken: list[BrokenRecord] = []
    for report in reports:
        records += report.records
        rows += report.rows
        keyed = keyed or report.keyed
        broken.extend(report.broken)
    return VerificationReport(records=records, rows=rows, broken=broken, keyed=keyed)


def verify(
    store: Store,
    definition: Definition,
    repository: Repository,
    *,
    record_id: uuid.UUID | None = None,
    batch_size: int = 1000,
    id_range: tuple[uuid.UUID | None, uuid.UUID | None] = (None, None),
    key: bytes | None = None,
    plain_through: int | None = None,
    marks: Mapping[str, int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerificationReport:
    """Check every record of the machine (or one, or those whose id is in ``id_range``: from
    the first bound, included, to the second, excluded; None is open) and return the report.
    Disjoint ranges that cover every id verify the whole machine between them. ``progress``
    is called with the number of records checked since its last call, once per batch."""
    records = rows = 0
    broken: list[BrokenRecord] = []
    marks = history_marks(store) if marks is None else marks
    for item in _records_with_history(store, repository, record_id, batch_size, id_range):
        records += 1
        if progress is not None and records % batch_size == 0:
            progress(batch_size)
        rows += _checked(definition, item, broken, key, plain_through, marks)
    if progress is not None and records % batch_size:
        progress(records % batch_size)
    with store.transaction(write=False) as conn:
        orphans = repository.orphan_histories(conn, record_id, id_range=id_range)
    broken.extend(_orphan(definition.name, orphan_id, seq) for orphan_id, seq in orphans)
    return VerificationReport(records=records, rows=rows, broken=broken, keyed=key is not None)


def _checked(
    definition: Definition,
    item: Item | _Unreadable,
    broken: list[BrokenRecord],
    key: bytes | None,
    plain_through: int | None,
    marks: Mapping[str, int],
) -> int:
    """Check one record read for verification, add what is wrong with it to ``broken``, and
    return how many history rows it has."""
    found: tuple[int | None, str, str] | None
    rows = 0
    if isinstance(item, _Unreadable):
        which, found = item.record_id, (item.seq, "malformed_row", item.detail)
    else:
        record, history, moments = item
        which = record["id"]
        rows = len(history)
        try:
            found = check_record(
                definition,
                record,
                history,
                key=key,
                plain_through=plain_through,
                marks=marks,
                moments=moments,
            )
        except Exception as exc:  # a planted value must name its record, not stop the audit
            found = None, "malformed_row", f"{type(exc).__name__} while checking it"
    if found is not None:
        seq, problem, detail = found
        broken.append(
            BrokenRecord(
                machine=definition.name,
                record_id=which,
                seq=seq,
                problem=problem,
                message=f"{PROBLEMS[problem]}{': ' + detail if detail else ''}",
            )
        )
    return rows


def _orphan(machine: str, record_id: uuid.UUID, seq: int) -> BrokenRecord:
    return BrokenRecord(
        machine=machine,
        record_id=record_id,
        seq=seq,
        problem="history_without_record",
        message=PROBLEMS["history_without_record"],
    )


def verify_records(
    store: Store,
    definition: Definition,
    repository: Repository,
    record_ids: Sequence[uuid.UUID],
    *,
    batch_size: int = 1000,
    key: bytes | None = None,
    plain_through: int | None = None,
    marks: Mapping[str, int],
    orphans: Mapping[uuid.UUID, int],
) -> VerificationReport:
    """Check the records with these ids, in this order, ``batch_size`` at a time: one query
    for a batch's records and one for their histories, in one read transaction. An id with no
    record but history rows (``orphans``: their first position by record id) is named
    ``history_without_record``; one with neither is left out."""
    records = rows = 0
    broken: list[BrokenRecord] = []
    reader = _reader(repository)
    for start in range(0, len(record_ids), batch_size):
        chunk = list(record_ids[start : start + batch_size])
        found: dict[uuid.UUID, Item | _Unreadable] = {}
        with store.transaction(write=False, snapshot=True) as conn:
            try:
                for item in reader.some(conn, chunk).items():
                    found[uuid.UUID(item[0]["id"])] = item
            except (Unusual, *_UNREADABLE):
                # A value not of the library's shape: each record read the ordinary way.
                found = {}
                for one in chunk:
                    for ordinary in _ordinary_batch(conn, repository, one, None, 1, (None, None))[
                        2
                    ]:
                        found[one] = ordinary
        for one in chunk:
            got = found.get(one)
            if got is not None:
                records += 1
                rows += _checked(definition, got, broken, key, plain_through, marks)
            elif one in orphans:
                broken.append(_orphan(definition.name, one, orphans[one]))
    return VerificationReport(records=records, rows=rows, broken=broken, keyed=key is not None)


def verify_since(
    store: Store,
    machines: Sequence[Machine[Any, Any]],
    checkpoint: Checkpoint,
    *,
    key: bytes | None,
    fingerprints: Mapping[str, str],
    revision: str | None,
    public_key: Any = None,
    batch_size: int = 1000,
    in_segments: Callable[[list[Segment]], bool] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> VerificationReport:
    """Prove the history extends ``checkpoint`` (`workflow.engine.checkpoint.compare`, its
    covered rows a segment at a time with ``in_segments``), then check in full, in batches,
    the records that changed after it: those that gained rows, those whose stored state,
    version or chain head no longer ends where their covered rows end, and the one where the
    history departs from the checkpoint; name every history without a record. The report
    counts every record and row of the database, and holds the comparison. ``progress``: see
    `workflow.engine.checkpoint.compare`."""
    comparison, changed = compare(
        store,
        checkpoint,
        key=key,
        fingerprints=fingerprints,
        revision=revision,
        public_key=public_key,
        in_segments=in_segments,
        progress=progress,
    )
    departs = comparison.difference
    if departs is not None and departs.record_id is not None:
        # Where the history departs from the checkpoint: that record is checked in full too.
        changed = [*changed, (str(departs.machine), departs.record_id)]
    by_machine = covered_records(changed)
    marks = history_marks(store)
    reports = []
    for machine in machines:
        ids = dict.fromkeys(by_machine.get(machine.name, []))
        off = off_their_history(store, machine.repository, up_to=checkpoint.last_row)
        ids.update(dict.fromkeys(off))
        with store.transaction(write=False) as conn:
            orphans = list(machine.repository.orphan_histories(conn))
        replayed = verify_records(
            store,
            machine.definition,
            machine.repository,
            list(ids),
            batch_size=batch_size,
            key=key,
            plain_through=checkpoint.last_row,
            marks=marks,
            orphans=dict(orphans),
        )
        reports.append(replayed)
        rest = [_orphan(machine.name, o, seq) for o, seq in orphans if o not in ids]
        reports.append(VerificationReport(records=0, rows=0, broken=rest))
    return merge(reports).model_copy(
        update={
            "records": count_records(store, machines),
            "rows": checkpoint.rows + comparison.new_rows,
            "keyed": key is not None,
            "checkpoint": comparison,
        }
    )


def count_records(store: Store, machines: Iterable[Machine[Any, Any]]) -> int:
    """How many records the machines have."""
    with store.transaction(write=False) as conn:
        return sum(
            int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(m.repository.table)
                ).scalar_one()
            )
            for m in machines
        )


def with_database_checks(
    store: Store,
    machines: Sequence[Machine[Any, Any]],
    report: VerificationReport,
    *,
    record_id: uuid.UUID | None = None,
) -> VerificationReport:
    """The report with the checks over the whole database added after its records: the
    machines' audits (each record they find named once, unless the report names it already)
    and the rows of unknown machines; with ``record_id``, for that record only."""
    strays = unknown_machines(store, (m.name for m in machines), record_id=record_id)
    named = [(b.machine, b.record_id) for b in report.broken]
    found = audit(store, machines, marks=history_marks(store), skip=named, record_id=record_id)
    if not strays and not found:
        return report
    return report.model_copy(update={"broken": [*report.broken, *found, *strays]})


SERIALISED_SINCE = "0010"
"""The revision from which commands on one citizen's records happen one after the other."""


def audit(
    store: Store,
    machines: Iterable[Machine[Any, Any]],
    *,
    marks: Mapping[str, int],
    skip: Iterable[tuple[str, uuid.UUID]] = (),
    record_id: uuid.UUID | None = None,
) -> list[BrokenRecord]:
    """Run every machine's audits (its records against the other machines'), and name each
    record they find as ``facts_contradicted``; records in ``skip`` (already named) are left
    out, and with ``record_id`` only that record is kept."""
    after = marks.get(SERIALISED_SINCE, 0)
    named = set(skip)
    found: list[BrokenRecord] = []
    with store.transaction(write=False) as conn:
        for machine in machines:
            for check in machine.audits:
                for found_id, seq, detail in check.run(conn, after):
                    key = (machine.name, found_id)
                    if key in named or (record_id is not None and found_id != record_id):
                        continue
                    named.add(key)
                    found.append(
                        BrokenRecord(
                            machine=machine.name,
                            record_id=found_id,
                            seq=seq,
                            problem="facts_contradicted",
                            message=f"{PROBLEMS['facts_contradicted']}: {detail}",
                        )
                    )
    return found


def history_marks(store: Store) -> dict[str, int]:
    """The database's history marks: each revision that began recording facts, and the last
    history row written before it."""
    table: sa.Table = HistoryMark.__table__  # type: ignore[assignment]
    with store.transaction(write=False) as conn:
        return {
            str(r): int(n) for r, n in conn.execute(sa.select(table.c.revision, table.c.last_row))
        }


def off_their_history(store: Store, repository: Repository, *, up_to: int) -> list[uuid.UUID]:
    """Records whose stored state, version or chain head is not where their history rows with
    ids up to ``up_to`` end (or that have no row at their version): one query, for records
    `verify(since=...)` does not replay in full."""
    t, log = repository.table, repository.log
    query = (
        sa.select(t.c.id)
        .select_from(
            t.outerjoin(
                log,
                sa.and_(
                    log.c.machine == repository.machine,
                    log.c.record_id == t.c.id,
                    log.c.seq == t.c.version,
                    log.c.id <= up_to,
                ),
            )
        )
        .where(
            sa.or_(
                log.c.id.is_(None),
                log.c.hash != t.c.chain_head,
                log.c.to_state != t.c.state,
            )
        )
        .order_by(t.c.id)
    )
    with store.transaction(write=False) as conn:
        return [record_id for (record_id,) in conn.execute(query)]


def unknown_machines(
    store: Store, known: Iterable[str], *, record_id: uuid.UUID | None = None
) -> list[BrokenRecord]:
    """One `BrokenRecord` per record of a machine not in ``known`` that has history rows.

    Such rows were planted past the library (the database refuses them since revision 0009);
    the machine's name is shown escaped, and a record id that is no UUID as the nil UUID."""
    log: sa.Table = TransitionLog.__table__  # type: ignore[assignment]
    record = sa.type_coerce(log.c.record_id, sa.String)
    query = (
        sa.select(log.c.machine, record, sa.func.min(log.c.seq))
        .where(log.c.machine.not_in(sorted(known)))
        .group_by(log.c.machine, record)
        .order_by(log.c.machine, record)
    )
    if record_id is not None:
        query = query.where(log.c.record_id == record_id)
    with store.transaction(write=False) as conn:
        rows = conn.execute(query).all()
    found = []
    for machine, stored_id, first_seq in rows:
        try:
            parsed = uuid.UUID(str(stored_id))
            where = ""
        except ValueError:
            parsed, where = uuid.UUID(int=0), " (its record id is no UUID)"
        found.append(
            BrokenRecord(
                machine=shown(machine),
                record_id=parsed,
                seq=int(first_seq) if isinstance(first_seq, int) else None,
                problem="unknown_machine",
                message=f"{PROBLEMS['unknown_machine']}: {shown(machine)}{where}",
            )
        )
    return found


_UNREADABLE = (TypeError, ValueError, ArithmeticError)
"""What converting a stored value can raise when the value is not one the library wrote (SQLite
keeps any value in any column): a decimal, a time, a JSON document, a UUID."""


@dataclass(frozen=True)
class _Unreadable:
    """A record, or its history, with a stored value that can't be read back."""

    record_id: uuid.UUID
    seq: int | None
    detail: str


def _records_with_history(
    store: Store,
    repository: Repository,
    record_id: uuid.UUID | None,
    batch_size: int,
    id_range: tuple[uuid.UUID | None, uuid.UUID | None] = (None, None),
) -> Iterator[Item | _Unreadable]:
    """Every record in id order (or the one) with its history, batch by batch, each batch in
    one read transaction, its records yielded as they are converted."""
    after: uuid.UUID | str | None = None
    reader = _reader(repository)
    low, high = id_range
    while True:
        with store.transaction(write=False, snapshot=True) as conn:
            try:
                if isinstance(after, str):
                    raise Unusual("the last id read is no UUID")
                if record_id is not None:
                    batch = reader.some(conn, [record_id])
                else:
                    batch = reader.page(conn, after, batch_size, low, high)
            except (Unusual, *_UNREADABLE):
                # A value not of the library's shape in the batch: read it the ordinary way,
                # which names what it can't read.
                count, last, found = _ordinary_batch(
                    conn, repository, record_id, after, batch_size, id_range
                )
                yield from found
            else:
                count, last = batch.count, batch.last
                done = 0
                items = batch.items()
                while True:
                    try:
                        item = next(items)
                    except StopIteration:
                        break
                    except _UNREADABLE:
                        # A value that can't be read back: the ordinary way would have read
                        # the batch record by record, so the rest of it is read so.
                        rest = uuid.UUID(batch.ids[done - 1]) if done else after
                        _, _, found = _batch_one_by_one(
                            conn, repository, record_id, rest, batch_size - done, id_range
                        )
                        yield from found
                        break
                    done += 1
                    yield item
        if record_id is not None or count < batch_size or last is None:
            return
        after = last


def _ordinary_batch(
    conn: Connection,
    repository: Repository,
    record_id: uuid.UUID | None,
    after: uuid.UUID | str | None,
    batch_size: int,
    id_range: tuple[uuid.UUID | None, uuid.UUID | None],
) -> tuple[int, uuid.UUID | str | None, Found]:
    """A batch read through SQLAlchemy's rows and types; if a value can't be read back, record
    by record, so the records that can be read are checked and the others named."""
    try:
        if isinstance(after, str):
            raise ValueError("the last id read is no UUID")
        return _batch(conn, repository, record_id, after, batch_size, id_range)
    except _UNREADABLE:
        return _batch_one_by_one(conn, repository, record_id, after, batch_size, id_range)


_READERS: dict[int, tuple[Repository, MachineReader]] = {}


def _reader(repository: Repository) -> MachineReader:
    """The repository's reader (its statements are rendered once per process)."""
    found = _READERS.get(id(repository))
    if found is None or found[0] is not repository:
        found = _READERS[id(repository)] = (repository, MachineReader(repository))
    return found[1]


Item = tuple[Mapping[Any, Any], Sequence[Mapping[Any, Any]], Sequence[str | None] | None]
"""A record, its history rows, and each row's time as the hash chain writes it (None: to be
formatted from the row)."""

Found = list[Item | _Unreadable]
"""A batch as verification reads it: each record with its history, or what made it unreadable."""


def _batch(
    conn: Connection,
    repository: Repository,
    record_id: uuid.UUID | None,
    after: uuid.UUID | None,
    batch_size: int,
    id_range: tuple[uuid.UUID | None, uuid.UUID | None],
) -> tuple[int, uuid.UUID | None, Found]:
    """The next batch of records with their histories: how many, the last id, the batch."""
    if record_id is not None:
        one = repository.load(conn, record_id)
        batch = [one] if one is not None else []
    else:
        low, high = id_range
        batch = list(repository.records_after(conn, after, batch_size, at_least=low, before=high))
    ids = [r["id"] for r in batch]
    histories = {
        key: list(group)
        for key, group in groupby(repository.histories(conn, ids), key=lambda row: row["record_id"])
    }
    found: Found = [(record, histories.get(record["id"], []), None) for record in batch]
    return len(batch), ids[-1] if ids else None, found


def _batch_one_by_one(
    conn: Connection,
    repository: Repository,
    record_id: uuid.UUID | None,
    after: uuid.UUID | str | None,
    batch_size: int,
    id_range: tuple[uuid.UUID | None, uuid.UUID | None],
) -> tuple[int, uuid.UUID | str | None, Found]:
    """`_batch`, one record at a time. Ids are read as stored, so paging goes on past an id
    that is no UUID (only SQLite can hold one, and compares ids as the text it stores)."""
    t, log = repository.table, repository.log
    stored_id = sa.type_coerce(t.c.id, sa.String)
    query = sa.select(stored_id).order_by(t.c.id).limit(batch_size)
    if record_id is not None:
        query = query.where(t.c.id == record_id)
    elif isinstance(after, str):
        query = query.where(stored_id > after)
    elif after is not None:
        query = query.where(t.c.id > after)
    low, high = id_range
    if record_id is None and low is not None:
        query = query.where(t.c.id >= low)
    if record_id is None and high is not None:
        query = query.where(t.c.id < high)
    stored = [value for (value,) in conn.execute(query)]
    found: Found = []
    last: uuid.UUID | str | None = None
    for value in stored:
        try:
            key = value if isinstance(value, uuid.UUID) else uuid.UUID(hex=str(value))
        except ValueError:
            last = str(value)
            found.append(_Unreadable(uuid.UUID(int=0), None, "the record's id is no UUID"))
            continue
        last = key
        try:
            record = repository.load(conn, key)
        except _UNREADABLE:
            found.append(_Unreadable(key, None, _bad_columns(conn, t, t.c.id == key)))
            continue
        rows = sa.and_(log.c.machine == repository.machine, log.c.record_id == key)
        try:
            history = repository.history(conn, key)
        except _UNREADABLE:
            found.append(
                _Unreadable(key, _first_bad_seq(conn, log, rows), _bad_columns(conn, log, rows))
            )
            continue
        if record is not None:
            found.append((record, history, None))
    return len(stored), last, found


def _bad_columns(conn: Connection, table: sa.Table, where: Any) -> str:
    """Which columns of the rows ``where`` selects hold a value that can't be read back."""
    bad = []
    for column in table.columns:
        try:
            conn.execute(sa.select(column).where(where)).all()
        except _UNREADABLE:
            bad.append(column.name)
    return f"unreadable {', '.join(bad) or 'values'}"


def _first_bad_seq(conn: Connection, log: sa.Table, rows: Any) -> int | None:
    for (seq,) in conn.execute(sa.select(log.c.seq).where(rows).order_by(log.c.seq)):
        try:
            conn.execute(sa.select(log).where(rows, log.c.seq == seq)).all()
        except _UNREADABLE:
            return int(seq)
    return None


class _Actor:
    """The actor a history row records, as permissions read one."""

    __slots__ = ("id", "role", "unit")

    def __init__(self, row: Mapping[Any, Any]) -> None:
        self.id = row["actor_id"]
        self.role = row["actor_role"]
        self.unit = row["actor_unit"]


def _creation_problem(
    definition: Definition,
    values: Any,
    record: Mapping[Any, Any],
    row: Mapping[Any, Any],
    actor: _Actor,
    key: bytes | None,
    marks: Mapping[str, int] | None,
) -> tuple[str, str] | None:
    """What is wrong with a record's first history row: its creator, its fixed facts, its
    guards or its identity digest; None if nothing."""
    details = row["details"]
    refused = definition.creation.problems(definition.creation_event, actor, values)
    if refused:
        return "not_permitted", "; ".join(message for _, message in refused)
    expected = dict(definition.creation_facts(values))
    recorded = {k: details.get(k) for k in expected}
    if recorded != expected:
        changed = sorted(k for k in expected if recorded[k] != expected[k])
        return "creation_facts_changed", ", ".join(changed)
    for guard in definition.creation_guards:
        if not _proves(guard, values, row, marks):
            return "guard_not_proven", guard.name
    if not definition.identity:
        return None
    digest = details.get(IDENTITY_FACT)
    if digest is None:
        # Rows written before the revision bind no identity; every later one does.
        if _after(row, IDENTITY_SINCE, marks):
            return "identity_changed", "the first row binds no identity"
        return None
    keyed = str(digest).startswith("hmac-")
    if keyed and key is None:
        return None  # only the key can check it; the row's own hash already needs the key
    bound = identity_digest(
        definition.name, record["id"], record, definition.identity, key if keyed else None
    )
    if digest != bound:
        return "identity_changed", ", ".join(definition.identity)
    return None


def _after(row: Mapping[Any, Any], revision: str, marks: Mapping[str, int] | None) -> bool:
    """Whether the row was written after ``revision`` began recording its facts."""
    if marks is None or revision not in marks:
        return True
    row_id = row.get("id")
    return row_id is None or int(row_id) > marks[revision]


def _proves(
    guard: Guard, values: Any, row: Mapping[Any, Any], marks: Mapping[str, int] | None
) -> bool:
    """Whether the row's recorded facts show the guard held (and, for a row written after the
    guard's revision, that they are all there)."""
    details = row["details"]
    since = guard.recorded_since
    if (
        since is not None
        and _after(row, since, marks)
        and any(k not in details for k in guard.keys)
    ):
        return False
    return guard.holds(values, details)


def _hash_problem(
    row: Mapping[Any, Any],
    previous: str | None,
    key: bytes | None,
    plain_through: int | None,
    moment: str | None = None,
) -> tuple[str, str] | None:
    if row["hash"] == entry_hash(row, previous, key, moment=moment):
        return None
    if key is None:
        return "hash_mismatch", ""
    if row["hash"] == entry_hash(row, previous, moment=moment):
        if plain_through is not None and int(row["id"]) <= plain_through:
            return None  # written before the move to the key, and covered by the checkpoint
        return "unkeyed_row", ""
    return "hash_mismatch", "under the chain key"


def check_record(
    definition: Definition,
    record: Mapping[Any, Any],
    history: Sequence[Mapping[Any, Any]],
    *,
    key: bytes | None = None,
    plain_through: int | None = None,
    marks: Mapping[str, int] | None = None,
    moments: Sequence[str | None] | None = None,
) -> tuple[int | None, str, str] | None:
    """The first problem of one record and its history as ``(seq, problem, detail)``, or None.

    ``marks`` (revision: the last row written before it) say which rows must carry the facts
    that revision began recording; without them, every row must. ``moments``: each row's time
    as the hash chain writes it, when it was read so (`workflow.engine.reading`).

    The history is replayed through the definition from the initial state: each row must be
    chained to the one before (under the chain ``key`` when given; rows whose id is at most
    ``plain_through``, covered by a checkpoint taken before the move to the key, may be plain),
    be a legal step by an actor its permission allows, and carry facts that prove its guards
    held.
    """
    if not history:
        return None, "missing_history", ""
    # The record's columns as attributes, for guards, permissions and facts: a namespace
    # (`Columns` looks each one up through __getattr__, several times per record).
    values = SimpleNamespace(**record)
    state: str | None = None
    previous: str | None = None
    for position, row in enumerate(history, start=1):
        seq = int(row["seq"])
        if not isinstance(row["details"], dict):
            return (
                seq,
                "malformed_row",
                f"details is {type(row['details']).__name__}, not an object",
            )
        if seq != position:
            return seq, "sequence_broken", f"expected position {position}"
        moment = None if moments is None else moments[position - 1]
        if row["hash"] != entry_hash(row, previous, key, moment=moment):
            found = _hash_problem(row, previous, key, plain_through, moment)
            if found is not None:
                return seq, *found
        actor = _Actor(row)
        if position == 1:
            if (row["event"], row["from_state"], row["to_state"]) != (
                definition.creation_event,
                None,
                definition.initial,
            ):
                return seq, "bad_creation", f"{row['event']} to {row['to_state']}"
            found = _creation_problem(definition, values, record, row, actor, key, marks)
            if found is not None:
                return seq, *found
        else:
            transition = definition.transition(str(state), row["event"])
            if (
                transition is None
                or row["from_state"] != state
                or row["to_state"] != transition.target
            ):
                return (
                    seq,
                    "illegal_step",
                    f"{row['event']}: {row['from_state']} → {row['to_state']}",
                )
            permission = definition.events[transition.event].permission
            refused = permission.problems(transition.event, actor, values)
            if refused:
                return seq, "not_permitted", "; ".join(message for _, message in refused)
            for guard in transition.guards:
                if not _proves(guard, values, row, marks):
                    return seq, "guard_not_proven", guard.name
            if definition.history_facts is not None:
                derived = definition.history_facts(transition.event, history[: position - 1])
                if derived:
                    details = row["details"]
                    wrong = sorted(k for k, v in derived.items() if details.get(k) != v)
                    if wrong:
                        return seq, "facts_contradicted", ", ".join(wrong)
        state = row["to_state"]
        previous = row["hash"]
    last = int(history[-1]["seq"])
    version = record["version"]
    if not isinstance(version, int) or isinstance(version, bool):
        return None, "malformed_row", f"version is {type(version).__name__}, not an integer"
    if version != last:
        # Rows missing at the end: the first bad row is the first one missing.
        missing = last + 1 if version > last else None
        return missing, "version_mismatch", f"stored {version}, history has {last}"
    if record["state"] != state:
        return None, "state_mismatch", f"stored {record['state']}, replayed {state}"
    if record["chain_head"] != previous:
        return None, "chain_head_mismatch", ""
    if definition.history_columns is not None:
        expected = definition.history_columns(history)
        changed = [k for k, v in expected.items() if record[k] != v]
        if changed:
            return None, "columns_changed", ", ".join(sorted(changed))
    return None
