"""Proving a database's histories: replay, guard facts, hash chain, stored state and version.

Generic: works on any machine's `Definition` and `Repository`. Records are read in batches (with
their histories), so memory stays flat however many there are.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import groupby
from typing import Any

from pydantic import BaseModel, ConfigDict

from workflow.engine.chain import entry_hash
from workflow.engine.definition import Columns, Definition
from workflow.engine.records import Repository
from workflow.engine.store import Store

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

    @property
    def ok(self) -> bool:
        """True when nothing is damaged."""
        return not self.broken


def merge(reports: Iterable[VerificationReport]) -> VerificationReport:
    """One report for several machines."""
    records = rows = 0
    broken: list[BrokenRecord] = []
    for report in reports:
        records += report.records
        rows += report.rows
        broken.extend(report.broken)
    return VerificationReport(records=records, rows=rows, broken=broken)


def verify(
    store: Store,
    definition: Definition,
    repository: Repository,
    *,
    record_id: uuid.UUID | None = None,
    batch_size: int = 1000,
) -> VerificationReport:
    """Check every record of the machine (or one) and return the report."""
    records = rows = 0
    broken: list[BrokenRecord] = []
    for record, history in _records_with_history(store, repository, record_id, batch_size):
        records += 1
        rows += len(history)
        try:
            found = check_record(definition, record, history)
        except Exception as exc:  # a planted value must name its record, not stop the audit
            found = None, "malformed_row", f"{type(exc).__name__} while checking it"
        if found is not None:
            seq, problem, detail = found
            broken.append(
                BrokenRecord(
                    machine=definition.name,
                    record_id=record["id"],
                    seq=seq,
                    problem=problem,
                    message=f"{PROBLEMS[problem]}{': ' + detail if detail else ''}",
                )
            )
    with store.transaction(write=False) as conn:
        orphans = repository.orphan_histories(conn, record_id)
    for orphan_id, first_seq in orphans:
        broken.append(
            BrokenRecord(
                machine=definition.name,
                record_id=orphan_id,
                seq=first_seq,
                problem="history_without_record",
                message=PROBLEMS["history_without_record"],
            )
        )
    return VerificationReport(records=records, rows=rows, broken=broken)


def _records_with_history(
    store: Store,
    repository: Repository,
    record_id: uuid.UUID | None,
    batch_size: int,
) -> Iterator[tuple[Mapping[Any, Any], Sequence[Mapping[Any, Any]]]]:
    after: uuid.UUID | None = None
    while True:
        with store.transaction(write=False, snapshot=True) as conn:
            if record_id is not None:
                one = repository.load(conn, record_id)
                batch = [one] if one is not None else []
            else:
                batch = list(repository.records_after(conn, after, batch_size))
            ids = [r["id"] for r in batch]
            histories = {
                key: list(group)
                for key, group in groupby(
                    repository.histories(conn, ids), key=lambda row: row["record_id"]
                )
            }
        for record in batch:
            yield record, histories.get(record["id"], [])
        if record_id is not None or len(batch) < batch_size:
            return
        after = ids[-1]


def check_record(
    definition: Definition, record: Mapping[Any, Any], history: Sequence[Mapping[Any, Any]]
) -> tuple[int | None, str, str] | None:
    """The first problem of one record and its history as ``(seq, problem, detail)``, or None.

    The history is replayed through the definition from the initial state: each row must be
    chained to the one before, be a legal step, and carry facts that prove its guards held.
    """
    if not history:
        return None, "missing_history", ""
    values = Columns(record)
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
        if row["hash"] != entry_hash(row, previous):
            return seq, "hash_mismatch", ""
        if position == 1:
            if (row["event"], row["from_state"], row["to_state"]) != (
                definition.creation_event,
                None,
                definition.initial,
            ):
                return seq, "bad_creation", f"{row['event']} to {row['to_state']}"
            expected = dict(definition.creation_facts(values))
            recorded = {k: row["details"].get(k) for k in expected}
            if recorded != expected:
                changed = sorted(k for k in expected if recorded[k] != expected[k])
                return seq, "creation_facts_changed", ", ".join(changed)
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
            for guard in transition.guards:
                if not guard.holds(values, row["details"]):
                    return seq, "guard_not_proven", guard.name
        state = row["to_state"]
        previous = row["hash"]
    last = int(history[-1]["seq"])
    version = int(record["version"])
    if version != last:
        # Rows missing at the end: the first bad row is the first one missing.
        missing = last + 1 if version > last else None
        return missing, "version_mismatch", f"stored {version}, history has {last}"
    if record["state"] != state:
        return None, "state_mismatch", f"stored {record['state']}, replayed {state}"
    if record["chain_head"] != previous:
        return None, "chain_head_mismatch", ""
    return None
