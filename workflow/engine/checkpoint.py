"""Checkpoints: a small statement of the history as it stands, that a later history must extend.

`take` covers every history row up to the last one that can never be joined by an earlier one
(on PostgreSQL, sequence values commit out of order: it waits for the transactions that were
writing when it looked), and folds the covered rows' stored hashes, in a fixed order, into one
running digest. `compare` proves a later database still holds exactly those rows: it recomputes
the digest and checks every covered row against its own hash, then names the records that
gained rows since, which verification replays in full.

Why a running hash and not a Merkle tree: proving that nothing covered changed means reading
every covered row anyway (a Merkle proof helps to show one row to a third party, which is not
the question), and a running hash streams in constant memory in one pass. The checkpoint keeps
the digest at up to `ANCHORS` evenly spaced positions besides the final one, so a difference is
placed between two anchors; with fewer covered rows than anchors, exactly.

The order is (machine, record id, position), the order of the log's unique index, so one
streaming pass also checks each row's hash against its content and the previous row's hash.
The rows are read as the driver returns them (`workflow.engine.reading`). The anchors also cut
the covered rows into `segments`, each of which folds from one anchor's digest into the next's
on its own: `check_segment` checks one, so several processes can share a comparison.
Generic: knows the log table and the machines' definitions it is given, nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Connection

from workflow.engine.chain import entry_hash
from workflow.engine.reading import LogRows, Statement, Unusual, json_as_text, shown_id
from workflow.engine.store import Store
from workflow.errors import ConcurrentUpdate, ConfigurationError
from workflow.models.base import TransitionLog

FORMAT: Literal["idcard-workflow checkpoint 1"] = "idcard-workflow checkpoint 1"
"""The ``format`` of the checkpoints this version writes and reads."""

ANCHORS = 64
"""How many intermediate digests a checkpoint keeps, at most."""

WAIT_FOR_WRITERS_S = 60.0
"""How long `take` waits on PostgreSQL for transactions that were writing when it looked."""

_SEED = hashlib.sha256(FORMAT.encode()).digest()


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Anchor(_Frozen):
    """The running digest after the row at ``position`` (1-based), and that row."""

    position: int = Field(ge=1)
    machine: str
    record_id: uuid.UUID
    seq: int = Field(ge=1)
    digest: str


class Signature(_Frozen):
    """An Ed25519 signature over the checkpoint's canonical JSON without its signature."""

    algorithm: Literal["ed25519"] = "ed25519"
    public_key: str
    """The signer's raw public key, base64: which key signed, not proof of whose it is."""
    value: str
    """The signature, base64."""


class Checkpoint(_Frozen):
    """A statement of the history as it stood: keep it where the database's writers can't."""

    format: Literal["idcard-workflow checkpoint 1"] = FORMAT
    taken_at: datetime
    revision: str | None
    fingerprints: dict[str, str]
    """Each machine's definition fingerprint (`workflow.diagrams.fingerprint`)."""
    records: dict[str, int]
    """How many records of each machine have covered rows."""
    rows: int = Field(ge=0)
    last_row: int = Field(ge=0)
    """The largest history row id covered: every row with an id up to it, and no other."""
    digest: str
    anchors: list[Anchor]
    keyed: bool
    """Whether the checkpoint was taken with the chain key (each row then checked under it)."""
    intact: bool
    """Whether every covered row matched its own hash when the checkpoint was taken."""
    signature: Signature | None = None

    def statement(self) -> bytes:
        """The canonical bytes a signature covers: everything but the signature."""
        content = self.model_dump(mode="json", exclude={"signature"})
        return json.dumps(content, sort_keys=True, separators=(",", ":")).encode()

    def to_json(self) -> str:
        """The checkpoint as a JSON document (what `idcard-workflow checkpoint` writes)."""
        return self.model_dump_json(indent=2) + "\n"


SignatureCheck = Literal["valid", "valid, by the key in the file", "unsigned", "missing", "invalid"]
"""A checkpoint's signature: valid by the auditor's public key; valid by the key the file names
(no public key was given: proves the file unchanged, not who signed it); unsigned (and no key
given); missing (a key was given, the checkpoint has no signature); invalid."""


class Difference(_Frozen):
    """Where the current history first departs from a checkpoint."""

    problem: Literal["rewritten", "removed", "added", "unreadable"]
    message: str
    machine: str | None = None
    record_id: uuid.UUID | None = None
    seq: int | None = None


class Comparison(_Frozen):
    """What `verify(since=...)` found about the checkpoint itself."""

    taken_at: datetime
    last_row: int
    digest: str
    extends: bool
    """True when every covered row is still there, unchanged, and no row joined them."""
    signature: SignatureCheck
    difference: Difference | None = None
    new_rows: int = 0
    changed_records: int = 0
    notes: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The history extends the checkpoint, and no signature check failed."""
        return self.extends and self.signature not in ("invalid", "missing")


@dataclass(frozen=True)
class Scan:
    """One pass over the covered rows."""

    rows: int
    records: dict[str, int]
    digest: str
    anchors: list[Anchor]
    bad_row: tuple[str, uuid.UUID, int] | None
    """The first covered row whose hash does not match its content, if any."""
    segment: tuple[str, uuid.UUID, int] | None
    """The first row after the last anchor passed (where a stopped pass found a difference)."""


def _log() -> sa.Table:
    return TransitionLog.__table__  # type: ignore[return-value]


def _fold(digest: bytes, machine: str, record_id: Any, seq: int, row_hash: str) -> bytes:
    step = f"{machine}\x1f{record_id}\x1f{seq}\x1f{row_hash}".encode()
    return hashlib.sha256(digest + step).digest()


def _hex(digest: bytes) -> str:
    return "sha256:" + digest.hex()


def stable_last_row(store: Store, *, wait: float = WAIT_FOR_WRITERS_S) -> int:
    """The largest history row id that no transaction can still add an earlier row below.

    PostgreSQL hands out row ids when a row is inserted and commits in any order, so a row
    with a smaller id may still be committed after a larger one is visible. Every such row
    belongs to a transaction in progress when the larger one was read: this waits until those
    have ended. SQLite has one writer at a time, so the largest id is stable at once."""
    log = _log()
    with store.transaction(write=False, snapshot=True) as conn:
        last = conn.execute(sa.select(sa.func.coalesce(sa.func.max(log.c.id), 0))).scalar_one()
        writers: list[str] = []
        if conn.dialect.name == "postgresql":
            writers = [
                str(x)
                for (x,) in conn.exec_driver_sql(
                    "SELECT pg_snapshot_xip(pg_current_snapshot())::text"
                )
            ]
    deadline = time.monotonic() + wait
    while writers:
        with store.transaction(write=False) as conn:
            writers = [
                x
                for x in writers
                if conn.exec_driver_sql("SELECT pg_xact_status(%(x)s::xid8)", {"x": x}).scalar()
                == "in progress"
            ]
        if writers and time.monotonic() > deadline:
            raise ConcurrentUpdate(
                f"{len(writers)} transaction(s) open for more than {wait:.0f} s kept the "
                "checkpoint from knowing which rows it covers; retry"
            )
        if writers:
            time.sleep(0.05)
    return int(last)


def _covered(
    conn: Connection, last_row: int, batch: int = 5000
) -> Generator[tuple[str, Any, int, str, Mapping[Any, Any], str | None], None, None]:
    """The covered rows in the digest's order, read through SQLAlchemy (the reference)."""
    log = _log()
    query = (
        sa.select(log)
        .where(log.c.id <= last_row)
        .order_by(log.c.machine, log.c.record_id, log.c.seq)
        .execution_options(yield_per=batch)
    )
    # Streamed (a server-side cursor on PostgreSQL), and closed however the pass ends.
    with conn.execute(query) as result:
        for row in result.mappings():
            yield str(row["machine"]), row["record_id"], int(row["seq"]), row["hash"], row, None


@dataclass(frozen=True)
class Bounds:
    """A stretch of the covered rows in the digest's order: those after the row ``after``
    (``(machine, record id, position)``; None: from the first) up to and including the row
    ``through`` (None: to the last)."""

    after: tuple[str, uuid.UUID, int] | None = None
    through: tuple[str, uuid.UUID, int] | None = None


_READING: dict[tuple[str, bool, bool, bool], tuple[Statement, LogRows]] = {}


def _covered_fast(
    conn: Connection, last_row: int, bounds: Bounds, batch: int = 5000
) -> Generator[tuple[str, Any, int, str, Mapping[Any, Any], str | None], None, None]:
    """The covered rows within ``bounds``, read as the driver returns them
    (`workflow.engine.reading`); `Unusual` for a record id not of the library's shape. The row
    just before the stretch (``bounds.after``) comes first, with its position as None: the
    first row of the stretch is chained to it."""
    dialect, text_json = conn.dialect.name, json_as_text(conn)
    shape = (dialect, text_json, bounds.after is not None, bounds.through is not None)
    found = _READING.get(shape)
    if found is None:
        log = _log()
        rows = LogRows(log, dialect, text_json=text_json)
        query = (
            sa.select(*rows.columns)
            .where(log.c.id <= sa.bindparam("last_row"))
            .order_by(log.c.machine, log.c.record_id, log.c.seq)
        )
        order = sa.tuple_(log.c.machine, log.c.record_id, log.c.seq)
        if bounds.after is not None:
            query = query.where(order >= _key_binds("after"))
        if bounds.through is not None:
            query = query.where(order <= _key_binds("through"))
        found = _READING[shape] = (rows.statement(query), rows)
    statement, rows = found
    params: dict[str, Any] = {"last_row": last_row}
    for name, key in (("after", bounds.after), ("through", bounds.through)):
        if key is not None:
            params.update({f"{name}_machine": key[0], f"{name}_id": key[1], f"{name}_seq": key[2]})
    if dialect == "postgresql":
        conn = conn.execution_options(stream_results=True)
    machine_at, id_at, seq_at, hash_at = 1, 2, 3, 12
    shown: dict[Any, str] = {}
    for chunk in statement.chunks(conn, params, batch):
        if rows.at is None:
            rows.bind(statement, conn.dialect)
        for values in chunk:
            stored = values[id_at]
            record_id = shown.get(stored)
            if record_id is None:
                if len(shown) > 10_000:
                    shown.clear()
                record_id = shown[stored] = shown_id(stored, dialect)
            row = rows.row(values, record_id)
            yield (
                str(values[machine_at]),
                record_id,
                int(values[seq_at]),
                values[hash_at],
                row,
                (rows.moment(values)),
            )


def _key_binds(name: str) -> Any:
    log = _log()
    return sa.tuple_(
        sa.bindparam(f"{name}_machine", type_=log.c.machine.type),
        sa.bindparam(f"{name}_id", type_=log.c.record_id.type),
        sa.bindparam(f"{name}_seq", type_=log.c.seq.type),
    )


def scan(
    store: Store,
    last_row: int,
    *,
    key: bytes | None,
    anchors_every: int | None = None,
    stop_at: Callable[[int, bytes], bool] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Scan:
    """Fold the covered rows into the digest and check each against its own hash.

    ``anchors_every`` spaces the anchors (None: chosen from the number of rows, which costs a
    count first). ``stop_at(position, digest)`` may end the pass early (a comparison that has
    found its first difference). The rows are read as the driver returns them; a record id
    not of the library's shape (planted on SQLite) makes the pass start again through
    SQLAlchemy's rows, whose reading is the reference."""
    log = _log()
    if anchors_every is None:
        with store.transaction(write=False) as conn:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(log).where(log.c.id <= last_row)
            ).scalar_one()
        anchors_every = max(1, -(-int(total) // ANCHORS))
    try:
        return _scan(store, last_row, key, anchors_every, stop_at, fast=True, progress=progress)
    except Unusual:
        return _scan(store, last_row, key, anchors_every, stop_at, fast=False, progress=progress)


def _scan(
    store: Store,
    last_row: int,
    key: bytes | None,
    anchors_every: int,
    stop_at: Callable[[int, bytes], bool] | None,
    *,
    fast: bool,
    bounds: Bounds = Bounds(),
    seed: bytes = _SEED,
    progress: Callable[[int], None] | None = None,
) -> Scan:
    digest = seed
    rows = 0
    records: dict[str, int] = {}
    anchors: list[Anchor] = []
    bad: tuple[str, uuid.UUID, int] | None = None
    previous: tuple[str, Any, str] | None = None
    segment: tuple[str, uuid.UUID, int] | None = None
    with store.transaction(write=False, snapshot=True) as conn:
        covered = _covered_fast(conn, last_row, bounds) if fast else _covered(conn, last_row)
        with closing(covered):
            for machine, record_id, seq, row_hash, row, moment in covered:
                if (
                    rows == 0
                    and previous is None
                    and bounds.after == (machine, _uuid(record_id), seq)
                ):
                    # The row before the stretch: only what its first row chains to.
                    previous = (machine, record_id, str(row_hash))
                    continue
                rows += 1
                if rows % anchors_every == 1 or anchors_every == 1:
                    segment = (machine, _uuid(record_id), seq)
                same_record = previous is not None and previous[:2] == (machine, record_id)
                if not same_record:
                    records[machine] = records.get(machine, 0) + 1
                before = previous[2] if same_record and previous is not None else None
                if bad is None and not _matches(row, before, key, moment):
                    bad = (machine, _uuid(record_id), seq)
                digest = _fold(digest, machine, record_id, seq, str(row_hash))
                if rows % anchors_every == 0:
                    anchors.append(
                        Anchor(
                            position=rows,
                            machine=machine,
                            record_id=record_id,
                            seq=seq,
                            digest=_hex(digest),
                        )
                    )
                previous = (machine, record_id, str(row_hash))
                if progress is not None and rows % _PROGRESS_EVERY == 0:
                    progress(rows)
                if stop_at is not None and stop_at(rows, digest):
                    break
    if progress is not None:
        progress(rows)
    return Scan(rows, records, _hex(digest), anchors, bad, segment)


_PROGRESS_EVERY = 5000
"""How many rows a pass checks between two calls of its progress callback."""


def _uuid(record_id: Any) -> uuid.UUID:
    return record_id if isinstance(record_id, uuid.UUID) else uuid.UUID(record_id)


def _matches(
    row: Mapping[Any, Any], previous: str | None, key: bytes | None, moment: str | None = None
) -> bool:
    try:
        if row["hash"] == entry_hash(row, previous, key, moment=moment):
            return True
        # Rows written before the move to a key are plain; the checkpoint covers them as such.
        return key is not None and row["hash"] == entry_hash(row, previous, moment=moment)
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Segment:
    """The covered rows between two of a checkpoint's anchors (or before the first, or after
    the last), which can be checked on their own: from the running digest at the anchor before
    them, they must fold into the digest at the anchor that ends them, with every row matching
    its own hash."""

    bounds: Bounds
    seed: str
    """The running digest before the segment's first row."""
    rows: int
    digest: str
    """The running digest after its last row."""


def segments(checkpoint: Checkpoint) -> list[Segment] | None:
    """The checkpoint's covered rows cut at its anchors, in the digest's order; None when its
    anchors are not strictly in order (a file made by hand: only one pass over all the rows
    can then be compared with it)."""
    found: list[Segment] = []
    after: Anchor | None = None
    for anchor in [*checkpoint.anchors, None]:
        start = 0 if after is None else after.position
        end = checkpoint.rows if anchor is None else anchor.position
        if end < start or (anchor is not None and after is not None and not _before(after, anchor)):
            return None
        found.append(
            Segment(
                Bounds(
                    after=None if after is None else _key(after),
                    through=None if anchor is None else _key(anchor),
                ),
                seed=_hex(_SEED) if after is None else after.digest,
                rows=end - start,
                digest=checkpoint.digest if anchor is None else anchor.digest,
            )
        )
        after = anchor
    return found


def _key(anchor: Anchor) -> tuple[str, uuid.UUID, int]:
    return anchor.machine, anchor.record_id, anchor.seq


def _before(first: Anchor, second: Anchor) -> bool:
    return first.position < second.position and _key(first) < _key(second)


def check_segment(store: Store, last_row: int, segment: Segment, key: bytes | None) -> bool:
    """Whether the segment's rows are still exactly those the checkpoint covered: as many, each
    matching its own hash, folding from its seed into its digest. False for anything else,
    including a value that can't be read back (one pass over every row then says what)."""
    if not segment.seed.startswith("sha256:"):
        return False
    try:
        found = _scan(
            store,
            last_row,
            key,
            anchors_every=segment.rows + 1,
            stop_at=None,
            fast=True,
            bounds=segment.bounds,
            seed=bytes.fromhex(segment.seed.removeprefix("sha256:")),
        )
    except (Unusual, TypeError, ValueError, ArithmeticError):
        return False
    return found.bad_row is None and found.rows == segment.rows and found.digest == segment.digest


def take(
    store: Store,
    *,
    revision: str | None,
    fingerprints: Mapping[str, str],
    key: bytes | None,
    clock: Callable[[], datetime],
    signer: Any = None,
) -> Checkpoint:
    """A checkpoint of the history now; signed when ``signer`` (an Ed25519 private key of the
    ``cryptography`` package) is given."""
    last_row = stable_last_row(store)
    found = scan(store, last_row, key=key)
    checkpoint = Checkpoint(
        taken_at=clock().astimezone(UTC),
        revision=revision,
        fingerprints=dict(fingerprints),
        records=found.records,
        rows=found.rows,
        last_row=last_row,
        digest=found.digest,
        anchors=found.anchors,
        keyed=key is not None,
        intact=found.bad_row is None,
    )
    return sign(checkpoint, signer) if signer is not None else checkpoint


def sign(checkpoint: Checkpoint, signer: Any) -> Checkpoint:
    """The checkpoint with an Ed25519 signature by ``signer``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if not isinstance(signer, Ed25519PrivateKey):
        raise ConfigurationError("a checkpoint is signed with an Ed25519 private key")
    public = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    value = signer.sign(checkpoint.statement())
    return checkpoint.model_copy(
        update={
            "signature": Signature(
                public_key=base64.b64encode(public).decode(),
                value=base64.b64encode(value).decode(),
            )
        }
    )


def check_signature(checkpoint: Checkpoint, public_key: Any = None) -> SignatureCheck:
    """Whether the checkpoint's signature is valid: by ``public_key`` (an Ed25519 public key of
    the ``cryptography`` package: the auditor's own), or else by the key the file names."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if checkpoint.signature is None:
        return "missing" if public_key is not None else "unsigned"
    try:
        named = base64.b64decode(checkpoint.signature.public_key, validate=True)
        value = base64.b64decode(checkpoint.signature.value, validate=True)
    except ValueError:
        return "invalid"
    if public_key is not None:
        if not isinstance(public_key, Ed25519PublicKey):
            raise ConfigurationError("a checkpoint's signature is checked with an Ed25519 key")
        if public_key.public_bytes(Encoding.Raw, PublicFormat.Raw) != named:
            return "invalid"
        verifier = public_key
    else:
        try:
            verifier = Ed25519PublicKey.from_public_bytes(named)
        except ValueError:
            return "invalid"
    try:
        verifier.verify(value, checkpoint.statement())
    except InvalidSignature:
        return "invalid"
    return "valid" if public_key is not None else "valid, by the key in the file"


def compare(
    store: Store,
    checkpoint: Checkpoint,
    *,
    key: bytes | None,
    fingerprints: Mapping[str, str],
    revision: str | None,
    public_key: Any = None,
    in_segments: Callable[[list[Segment]], bool] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> tuple[Comparison, list[tuple[str, uuid.UUID]]]:
    """Prove the current history extends ``checkpoint``; the comparison and the records that
    gained rows after it (``(machine, record_id)``, for verification to replay in full).

    ``in_segments`` checks the covered rows a segment at a time (`segments`, `check_segment`:
    side by side, in several processes) and says whether every one holds. When it says so,
    the history extends the checkpoint; otherwise, one pass over every covered row, in order,
    says where it first departs, as it does without ``in_segments``. ``progress`` is called
    with the number of covered rows checked so far and the number covered, every few
    thousand rows."""
    signature = check_signature(checkpoint, public_key)
    cut = segments(checkpoint) if in_segments is not None else None
    if in_segments is not None and cut is not None and in_segments(cut):
        difference = None
    else:
        try:
            found, last_good = _scan_to_first_difference(store, checkpoint, key, progress)
        except (TypeError, ValueError, ArithmeticError) as exc:  # SQLite keeps anything
            comparison = Comparison(
                taken_at=checkpoint.taken_at,
                last_row=checkpoint.last_row,
                digest=checkpoint.digest,
                extends=False,
                signature=signature,
                difference=Difference(
                    problem="unreadable",
                    message=f"a covered row can't be read back ({type(exc).__name__}): "
                    "run a full verify to name it",
                ),
            )
            return comparison, []
        difference = _difference(store, checkpoint, found, last_good)
    notes = _notes(checkpoint, fingerprints, revision, key)
    changed = _changed_records(store, checkpoint.last_row)
    new_rows = _new_rows(store, checkpoint.last_row)
    comparison = Comparison(
        taken_at=checkpoint.taken_at,
        last_row=checkpoint.last_row,
        digest=checkpoint.digest,
        extends=difference is None,
        signature=signature,
        difference=difference,
        new_rows=new_rows,
        changed_records=len(changed),
        notes=notes,
    )
    return comparison, changed


def _scan_to_first_difference(
    store: Store,
    checkpoint: Checkpoint,
    key: bytes | None,
    progress: Callable[[int, int | None], None] | None,
) -> tuple[Scan, Anchor | None]:
    """One pass over every covered row in order, stopped at the first anchor whose digest
    differs; and the last anchor that matched."""
    every = checkpoint.anchors[0].position if checkpoint.anchors else max(1, checkpoint.rows)
    expected = {a.position: a for a in checkpoint.anchors}
    last_good: list[Anchor | None] = [None]

    def stop_at(position: int, digest: bytes) -> bool:
        anchor = expected.get(position)
        if anchor is None:
            return False
        if anchor.digest != _hex(digest):
            return True
        last_good[0] = anchor
        return False

    found = scan(
        store,
        checkpoint.last_row,
        key=key,
        anchors_every=every,
        stop_at=stop_at,
        progress=None if progress is None else lambda n: progress(n, checkpoint.rows),
    )
    return found, last_good[0]


def _difference(
    store: Store, checkpoint: Checkpoint, found: Scan, last_good: Anchor | None
) -> Difference | None:
    """How the scanned history departs from the checkpoint, or None if it does not."""
    if found.bad_row is not None:
        machine, record_id, seq = found.bad_row
        return Difference(
            problem="rewritten",
            message=f"a covered row was changed: {machine} {record_id} row {seq} no longer "
            "matches its own hash",
            machine=machine,
            record_id=record_id,
            seq=seq,
        )
    if found.digest == checkpoint.digest and found.rows == checkpoint.rows:
        return None
    log = _log()
    with store.transaction(write=False) as conn:
        count = int(
            conn.execute(
                sa.select(sa.func.count()).select_from(log).where(log.c.id <= checkpoint.last_row)
            ).scalar_one()
        )
    after = (
        f"after {last_good.machine} {last_good.record_id} row {last_good.seq}"
        if last_good is not None
        else "from the first covered row on"
    )
    if count < checkpoint.rows:
        problem, what = "removed", f"{checkpoint.rows - count} covered row(s) are gone"
    elif count > checkpoint.rows:
        problem, what = "added", f"{count - checkpoint.rows} row(s) joined the covered ids"
    else:
        problem, what = "rewritten", "covered rows were rewritten with valid hashes"
    where = found.segment
    message = f"{what}, {after}"
    if where is not None:
        message += f" (the first candidate: {where[0]} {where[1]} row {where[2]})"
    return Difference(
        problem=problem,
        message=message,
        machine=where[0] if where else None,
        record_id=where[1] if where else None,
        seq=where[2] if where else None,
    )


def _notes(
    checkpoint: Checkpoint, fingerprints: Mapping[str, str], revision: str | None, key: bytes | None
) -> list[str]:
    notes = []
    if checkpoint.revision != revision:
        notes.append(
            f"the schema moved from revision {checkpoint.revision} to {revision} since the "
            "checkpoint"
        )
    changed = sorted(
        m
        for m in {*checkpoint.fingerprints, *fingerprints}
        if checkpoint.fingerprints.get(m) != fingerprints.get(m)
    )
    if changed:
        notes.append(
            "the definitions of " + ", ".join(changed) + " changed since the checkpoint "
            "(a new library version): the history is replayed through the current ones"
        )
    if not checkpoint.intact:
        notes.append("the checkpoint was taken over a history with damaged rows")
    if checkpoint.keyed and key is None:
        notes.append("the checkpoint was taken with the chain key; this check ran without it")
    return notes


def _changed_records(store: Store, last_row: int) -> list[tuple[str, uuid.UUID]]:
    log = _log()
    query = (
        sa.select(log.c.machine, log.c.record_id)
        .where(log.c.id > last_row)
        .group_by(log.c.machine, log.c.record_id)
        .order_by(log.c.machine, log.c.record_id)
    )
    with store.transaction(write=False) as conn:
        return [(str(m), r) for m, r in conn.execute(query)]


def _new_rows(store: Store, last_row: int) -> int:
    log = _log()
    with store.transaction(write=False) as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(log).where(log.c.id > last_row)
            ).scalar_one()
        )


def load(text: str | bytes) -> Checkpoint:
    """A checkpoint from its JSON; a pydantic ``ValidationError`` names what is wrong."""
    return Checkpoint.model_validate_json(text)


def covered_records(changed: Sequence[tuple[str, uuid.UUID]]) -> dict[str, list[uuid.UUID]]:
    """The changed records by machine."""
    by_machine: dict[str, list[uuid.UUID]] = {}
    for machine, record_id in changed:
        by_machine.setdefault(machine, []).append(record_id)
    return by_machine
