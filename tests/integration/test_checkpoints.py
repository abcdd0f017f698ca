"""Checkpoints: a later history must extend them, and verify(since=...) says whether it does."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

import workflow as wf
from tests.support import Clock, actor_for, clerk, drive, postgres_url, tampering
from workflow.engine.chain import entry_hash
from workflow.engine.checkpoint import Checkpoint, load
from workflow.models.enums import Kind

LOG = wf.Base.metadata.tables["idcard_transition_log"]
APPLICATIONS = wf.Base.metadata.tables["idcard_applications"]


@pytest.fixture
def apps(flow: wf.Workflow) -> list[wf.ApplicationView]:
    return [
        drive(flow, state, kind, n=n)
        for n, (state, kind) in enumerate(
            [
                ("collected", Kind.RENEWAL),
                ("ready", Kind.REPLACEMENT),
                ("rejected", Kind.RENEWAL),
                ("submitted", Kind.RENEWAL),
                ("approved", Kind.REPLACEMENT),
            ],
            start=1,
        )
    ]


@pytest.fixture
def raw(db_url: str) -> Iterator[sa.Engine]:
    with tampering(db_url) as engine:
        yield engine


def rows_of(conn: sa.Connection, record_id: uuid.UUID) -> list[dict[str, Any]]:
    query = sa.select(LOG).where(LOG.c.record_id == record_id).order_by(LOG.c.seq)
    return [dict(r) for r in conn.execute(query).mappings()]


def test_a_checkpoint_states_the_history_and_round_trips_as_json(
    flow: wf.Workflow, apps: list[wf.ApplicationView]
) -> None:
    checkpoint = flow.checkpoint()
    assert checkpoint.rows == sum(a.version for a in apps) + 2  # two replacements' reports
    assert checkpoint.records == {"application": 5, "loss_report": 2}
    assert checkpoint.revision == wf.head_revision()
    assert set(checkpoint.fingerprints) == {"application", "loss_report", "found_card"}
    assert checkpoint.intact and not checkpoint.keyed and checkpoint.signature is None
    assert checkpoint.digest.startswith("sha256:") and len(checkpoint.digest) == 71
    assert load(checkpoint.to_json()) == checkpoint


def test_a_checkpoint_then_nothing_verifies(
    flow: wf.Workflow, apps: list[wf.ApplicationView]
) -> None:
    checkpoint = flow.checkpoint()
    report = flow.verify(since=checkpoint)
    assert report.ok and report.broken == []
    assert report.checkpoint is not None
    assert (report.checkpoint.extends, report.checkpoint.signature) == (True, "unsigned")
    assert (report.checkpoint.new_rows, report.checkpoint.changed_records) == (0, 0)


def test_a_checkpoint_then_new_commands_verifies_and_replays_only_what_changed(
    flow: wf.Workflow, apps: list[wf.ApplicationView]
) -> None:
    checkpoint = flow.checkpoint()
    submitted = apps[3]
    flow.transmit(submitted.id, actor=actor_for("transmit", submitted))
    drive(flow, "transmitted", n=9)
    report = flow.verify(since=checkpoint)
    assert report.ok, report
    assert report.checkpoint is not None
    assert report.checkpoint.new_rows == 3  # one transmission, and a submission and its own
    assert report.checkpoint.changed_records == 2


def test_a_row_edited_in_place_is_named(
    flow: wf.Workflow, apps: list[wf.ApplicationView], raw: sa.Engine
) -> None:
    checkpoint = flow.checkpoint()
    target = apps[0]
    with raw.begin() as conn:
        conn.execute(
            sa.update(LOG)
            .where(LOG.c.record_id == target.id, LOG.c.seq == 3)
            .values(actor_id="someone-else")
        )
    report = flow.verify(since=checkpoint)
    assert not report.ok and report.checkpoint is not None
    difference = report.checkpoint.difference
    assert difference is not None and difference.problem == "rewritten"
    assert (difference.record_id, difference.seq) == (target.id, 3)
    assert [(b.record_id, b.seq, b.problem) for b in report.broken] == [
        (target.id, 3, "hash_mismatch")
    ]


def test_a_deleted_record_is_named(
    flow: wf.Workflow, apps: list[wf.ApplicationView], raw: sa.Engine
) -> None:
    checkpoint = flow.checkpoint()
    with raw.begin() as conn:
        conn.execute(sa.delete(APPLICATIONS).where(APPLICATIONS.c.id == apps[2].id))
    report = flow.verify(since=checkpoint)
    assert not report.ok
    assert report.checkpoint is not None and report.checkpoint.extends  # the log is untouched
    assert [(b.record_id, b.problem) for b in report.broken] == [
        (apps[2].id, "history_without_record")
    ]


def test_a_deleted_history_is_named_as_removed(
    flow: wf.Workflow, apps: list[wf.ApplicationView], raw: sa.Engine
) -> None:
    checkpoint = flow.checkpoint()
    with raw.begin() as conn:
        conn.execute(sa.delete(LOG).where(LOG.c.record_id == apps[2].id))
        conn.execute(sa.delete(APPLICATIONS).where(APPLICATIONS.c.id == apps[2].id))
    report = flow.verify(since=checkpoint)
    assert not report.ok and report.checkpoint is not None
    difference = report.checkpoint.difference
    assert difference is not None and difference.problem == "removed"
    assert f"{apps[2].version} covered row(s) are gone" in difference.message


def rewrite_history(raw: sa.Engine, record_id: uuid.UUID, seq: int, **changes: Any) -> None:
    """Rewrite the record's history from row ``seq`` on with valid hashes, and its chain head:
    what someone with full rights who knows the hashing rule can do."""
    with raw.begin() as conn:
        rows = rows_of(conn, record_id)
        previous = rows[seq - 2]["hash"] if seq > 1 else None
        for row in rows[seq - 1 :]:
            if row["seq"] == seq:
                row.update(changes)
            row["hash"] = entry_hash(row, previous)
            conn.execute(
                sa.update(LOG)
                .where(LOG.c.id == row["id"])
                .values(**{k: row[k] for k in ("hash", *changes)})
            )
            previous = row["hash"]
        conn.execute(
            sa.update(APPLICATIONS)
            .where(APPLICATIONS.c.id == record_id)
            .values(chain_head=previous)
        )


def test_a_whole_history_rewritten_with_valid_hashes_is_named(
    flow: wf.Workflow, apps: list[wf.ApplicationView], raw: sa.Engine
) -> None:
    checkpoint = flow.checkpoint()
    target = apps[1]
    rewrite_history(raw, target.id, 2, actor_id="a-clerk-who-never-did-it")
    assert flow.verify().ok  # a full verify can't see it: every hash is valid
    report = flow.verify(since=checkpoint)
    assert not report.ok and report.checkpoint is not None
    difference = report.checkpoint.difference
    assert difference is not None and difference.problem == "rewritten"
    # Fewer covered rows than anchors: the checkpoint places the difference exactly.
    assert (difference.record_id, difference.seq) == (target.id, 2)


def test_a_rehashed_row_appended_among_the_covered_ids_is_named(
    flow: wf.Workflow, apps: list[wf.ApplicationView], raw: sa.Engine
) -> None:
    checkpoint = flow.checkpoint()
    target = apps[3]  # submitted: a forged transmission slipped in under a covered id
    with raw.begin() as conn:
        (first,) = rows_of(conn, target.id)
        forged = {
            **first,
            "id": 0,
            "seq": 2,
            "event": "transmit",
            "from_state": "submitted",
            "to_state": "transmitted",
        }
        forged["hash"] = entry_hash(forged, first["hash"])
        conn.execute(sa.insert(LOG).values(forged))
        conn.execute(
            sa.update(APPLICATIONS)
            .where(APPLICATIONS.c.id == target.id)
            .values(state="transmitted", version=2, chain_head=forged["hash"])
        )
    report = flow.verify(since=checkpoint)
    assert report.checkpoint is not None and not report.ok
    difference = report.checkpoint.difference
    assert difference is not None and difference.problem == "added"


def test_signatures(flow: wf.Workflow, apps: list[wf.ApplicationView]) -> None:
    auditor = Ed25519PrivateKey.generate()
    signed = flow.checkpoint(signing_key=auditor)
    assert signed.signature is not None
    assert load(signed.to_json()) == signed

    def check(checkpoint: Checkpoint, key: Any) -> str:
        report = flow.verify(since=checkpoint, public_key=key)
        assert report.checkpoint is not None
        return report.checkpoint.signature

    assert check(signed, auditor.public_key()) == "valid"
    assert check(signed, None) == "valid, by the key in the file"
    # (f) a forged statement: the numbers changed after signing
    forged = signed.model_copy(update={"rows": signed.rows - 1})
    assert check(forged, auditor.public_key()) == "invalid"
    assert not flow.verify(since=forged, public_key=auditor.public_key()).ok
    # re-signed by someone else, who put their own key in the file
    other = Ed25519PrivateKey.generate()
    resigned = wf.Workflow.checkpoint(flow, signing_key=other)
    assert check(resigned, auditor.public_key()) == "invalid"
    assert check(resigned, None) == "valid, by the key in the file"
    unsigned = flow.checkpoint()
    assert check(unsigned, auditor.public_key()) == "missing"


def test_verify_since_refuses_a_record_id_too(
    flow: wf.Workflow, apps: list[wf.ApplicationView]
) -> None:
    with pytest.raises(ValueError, match="not both"):
        flow.verify(apps[0].id, since=flow.checkpoint())


# -- checkpoints taken while commands run ----------------------------------------------------


def test_checkpoints_taken_under_concurrent_writers_are_never_contradicted(
    db_url: str, clock: Clock
) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(n0: int) -> None:
        with wf.Workflow(db_url, clock=clock) as mine:
            n = n0
            while not stop.is_set():
                try:
                    drive(mine, "ready", n=n)
                except wf.ConcurrentUpdate:
                    continue
                except BaseException as exc:  # reported below
                    errors.append(exc)
                    return
                n += 2

    writers = [threading.Thread(target=write, args=(start,)) for start in (100, 101)]
    for w in writers:
        w.start()
    taken: list[Checkpoint] = []
    try:
        with wf.Workflow(db_url, clock=clock) as auditor:
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                taken.append(auditor.checkpoint())
                time.sleep(0.05)
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=30)
    assert not errors, errors
    assert len(taken) >= 3 and taken[-1].rows > taken[0].rows
    with wf.Workflow(db_url, clock=clock) as later:
        for checkpoint in taken:
            report = later.verify(since=checkpoint)
            assert report.ok, (checkpoint.last_row, report.checkpoint, report.broken[:3])


@pytest.mark.skipif(postgres_url() is None, reason="PostgreSQL commits row ids out of order")
def test_a_checkpoint_waits_for_a_writer_holding_an_earlier_row_id(
    db_url: str, clock: Clock
) -> None:
    """A transaction takes row id k and stays open; another commits k + 1. A checkpoint that
    covered up to k + 1 now would later gain row k: it waits for the first to end."""
    engine = sa.create_engine(db_url)
    outcome: dict[str, Any] = {}
    try:
        with wf.Workflow(db_url, clock=clock) as flow:
            drive(flow, "submitted", n=61)
            with Session(engine) as session:
                wf.Workflow(session, clock=clock).submit(
                    _form(62), actor=clerk()
                )  # row k, not committed
                drive(flow, "submitted", n=63)  # row k + 1, committed

                def checkpoint() -> None:
                    outcome["checkpoint"] = flow.checkpoint()

                taking = threading.Thread(target=checkpoint)
                taking.start()
                taking.join(timeout=1.5)
                assert taking.is_alive(), outcome  # waiting for the open transaction
                session.commit()
            taking.join(timeout=30)
            taken: Checkpoint = outcome["checkpoint"]
            assert taken.records["application"] == 3
            assert flow.verify(since=taken).ok
    finally:
        engine.dispose()


def _form(n: int) -> wf.SubmitApplication:
    from tests.support import form

    return form(Kind.RENEWAL, n=n)


# -- the chain key ---------------------------------------------------------------------------

KEY = b"k" * 32


def test_a_keyed_chain_is_checked_under_its_key(db_url: str, clock: Clock) -> None:
    with wf.Workflow(db_url, clock=clock, chain_key=KEY) as keyed:
        view = drive(keyed, "ready", n=1)
        report = keyed.verify()
        assert report.ok and report.keyed
        (first, *_) = keyed.history(view.id)
        assert first.details["identity"].startswith("hmac-sha256:")
    with wf.Workflow(db_url, clock=clock) as plain:
        report = plain.verify()
        assert not report.keyed
        assert {b.problem for b in report.broken} == {"hash_mismatch"}
    with wf.Workflow(db_url, clock=clock, chain_key=b"x" * 32) as wrong:
        assert {b.problem for b in wrong.verify().broken} == {"hash_mismatch"}


def test_a_writer_without_the_key_cannot_append_a_step_the_key_accepts(
    db_url: str, clock: Clock
) -> None:
    with wf.Workflow(db_url, clock=clock, chain_key=KEY) as keyed:
        view = drive(keyed, "transmitted", n=1)
    with wf.Workflow(db_url, clock=clock) as intruder:  # database access, no key
        intruder.approve(view.id, actor=actor_for("approve", view))
    with wf.Workflow(db_url, clock=clock, chain_key=KEY) as keyed:
        ((broken),) = keyed.verify().broken
        assert (broken.record_id, broken.seq, broken.problem) == (view.id, 3, "unkeyed_row")


def test_moving_a_database_to_a_key_goes_through_a_checkpoint(db_url: str, clock: Clock) -> None:
    with wf.Workflow(db_url, clock=clock) as before:
        old = drive(before, "transmitted", n=1)
        moved_at = before.checkpoint()
    with wf.Workflow(db_url, clock=clock, chain_key=KEY) as after:
        after.approve(old.id, actor=actor_for("approve", old))
        drive(after, "ready", n=2)
        # Without the checkpoint, the rows from before the key are unkeyed ...
        assert {b.problem for b in after.verify().broken} == {"unkeyed_row"}
        # ... and with it they are proven, and every row after it must be keyed.
        report = after.verify(since=moved_at)
        assert report.ok and report.keyed, report
    with wf.Workflow(db_url, clock=clock) as intruder:
        intruder.produce(old.id, actor=actor_for("produce", old))
    with wf.Workflow(db_url, clock=clock, chain_key=KEY) as after:
        report = after.verify(since=moved_at)
        assert [(b.record_id, b.seq, b.problem) for b in report.broken] == [
            (old.id, 4, "unkeyed_row")
        ]


@pytest.mark.parametrize("key", [b"short", "a string key of more than 32 chars....", 42])
def test_a_bad_chain_key_is_a_configuration_error(db_url: str, key: Any) -> None:
    with pytest.raises(wf.ConfigurationError, match="chain key"):
        wf.Workflow(db_url, chain_key=key)


# -- the covered rows in several processes, the changed records in batches -------------------


def _damaged(case: str, flow: wf.Workflow, apps: list[wf.ApplicationView], raw: sa.Engine) -> None:
    """One of the checkpoint scenarios, applied after the checkpoint."""
    if case == "new commands":
        flow.transmit(apps[3].id, actor=actor_for("transmit", apps[3]))
        drive(flow, "transmitted", n=90)
    elif case == "an edited row":
        with raw.begin() as conn:
            conn.execute(
                sa.update(LOG)
                .where(LOG.c.record_id == apps[0].id, LOG.c.seq == 3)
                .values(actor_id="someone-else")
            )
    elif case == "a deleted record":
        with raw.begin() as conn:
            conn.execute(sa.delete(APPLICATIONS).where(APPLICATIONS.c.id == apps[2].id))
    elif case == "a deleted history":
        with raw.begin() as conn:
            conn.execute(sa.delete(LOG).where(LOG.c.record_id == apps[2].id))
            conn.execute(sa.delete(APPLICATIONS).where(APPLICATIONS.c.id == apps[2].id))
    elif case == "a rewritten history":
        rewrite_history(raw, apps[1].id, 2, actor_id="a-clerk-who-never-did-it")


@pytest.mark.parametrize(
    "case",
    [
        "nothing",
        "new commands",
        "an edited row",
        "a deleted record",
        "a deleted history",
        "a rewritten history",
    ],
)
def test_verify_since_in_processes_gives_the_report_of_one_process(
    flow: wf.Workflow,
    apps: list[wf.ApplicationView],
    raw: sa.Engine,
    case: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With workers, the covered rows are checked a stretch between two anchors at a time in
    other processes; whatever the history, the report is the one a single process makes."""
    from workflow.engine import parallel

    for n in range(40, 80):  # more covered rows than anchors: stretches of several rows
        drive(flow, "approved", n=n)
    checkpoint = flow.checkpoint()
    assert 1 < checkpoint.anchors[0].position < checkpoint.rows
    _damaged(case, flow, apps, raw)
    held: list[bool] = []
    real = parallel.segments_hold

    def spied(*args: Any, **kwargs: Any) -> bool:
        held.append(real(*args, **kwargs))
        return held[-1]

    monkeypatch.setattr(parallel, "segments_hold", spied)
    alone = flow.verify(since=checkpoint)
    together = flow.verify(since=checkpoint, workers=2)
    assert together.model_dump() == alone.model_dump()
    # The stretches held exactly when the history extends the checkpoint (otherwise one pass
    # in order said where it departs).
    assert held == [alone.checkpoint is not None and alone.checkpoint.extends]


def test_a_hand_made_checkpoint_with_anchors_out_of_order_is_compared_in_one_pass(
    flow: wf.Workflow, apps: list[wf.ApplicationView]
) -> None:
    checkpoint = flow.checkpoint()
    shuffled = checkpoint.model_copy(update={"anchors": checkpoint.anchors[::-1]})
    report = flow.verify(since=shuffled, workers=2)
    assert report.ok and report.model_dump() == flow.verify(since=shuffled).model_dump()


def test_verify_since_reads_the_changed_records_in_one_query_per_batch(
    flow: wf.Workflow, apps: list[wf.ApplicationView]
) -> None:
    """The records that changed after the checkpoint are read a batch at a time (their rows
    and their histories, one query each), not one record per transaction."""
    checkpoint = flow.checkpoint()

    def statements(changed: int) -> int:
        for n in range(changed):
            drive(flow, "submitted", n=200 + 100 * changed + n)
        seen: list[str] = []

        def count(*args: Any) -> None:
            seen.append(str(args[2]))

        engine = flow._reads.engine
        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            report = flow.verify(since=checkpoint)
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
        assert report.ok and report.checkpoint is not None
        return sum("idcard_applications" in s and "idcard_transition_log" not in s for s in seen)

    one, twenty = statements(1), statements(20)
    assert one == twenty  # 21 changed records, read with as many statements as one
