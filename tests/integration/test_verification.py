"""verify() proves a history and names tampering; explain() tells an actor what it can do."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

import workflow as wf
from tests.support import Clock, citizen_id, clerk, drive, producer, reviewer, tampering
from workflow.models.enums import Kind


@pytest.fixture
def raw(db_url: str) -> Iterator[sa.Engine]:
    """An engine that writes to the tables behind the library's back, past the triggers."""
    with tampering(db_url) as engine:
        yield engine


@pytest.fixture
def apps(flow: wf.Workflow) -> dict[str, wf.ApplicationView]:
    return {
        "collected": drive(flow, "collected", Kind.RENEWAL, n=1),
        "rejected": drive(flow, "rejected", n=2),
        "ready": drive(flow, "ready", n=3),
        "submitted": drive(flow, "submitted", n=4),
        "replacement": drive(flow, "collected", Kind.REPLACEMENT, n=5),
    }


def execute(engine: sa.Engine, sql: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def only_broken(flow: wf.Workflow) -> wf.BrokenRecord:
    report = flow.verify()
    assert not report.ok
    assert len(report.broken) == 1, report.broken
    return report.broken[0]


def test_a_clean_database_verifies(flow: wf.Workflow, apps: dict[str, wf.ApplicationView]) -> None:
    report = flow.verify()
    assert report.ok and report.broken == []
    # Five applications, and the loss report the replacement filed (reported, then closed).
    assert report.records == 6
    assert report.rows == sum(v.version for v in apps.values()) + 2
    assert flow.verify(apps["ready"].id).records == 1


def test_verify_reads_in_batches_smaller_than_the_table(
    flow: wf.Workflow, apps: dict[str, wf.ApplicationView], raw: sa.Engine
) -> None:
    assert flow.verify(batch_size=2).records == 6
    execute(
        raw,
        "UPDATE idcard_applications SET state = 'ready' WHERE id = :id",
        id=apps["submitted"].id.hex,
    )
    report = flow.verify(batch_size=2)
    assert [b.record_id for b in report.broken] == [apps["submitted"].id]


def _id(view: wf.ApplicationView, db_url: str) -> object:
    # sa.Uuid stores a 32-character hex string on SQLite and a native uuid on PostgreSQL.
    return view.id.hex if db_url.startswith("sqlite") else view.id


def test_editing_a_logged_fact_is_detected(
    flow: wf.Workflow, apps: dict[str, wf.ApplicationView], raw: sa.Engine, db_url: str
) -> None:
    target = apps["collected"]
    execute(
        raw,
        "UPDATE idcard_transition_log SET details = :d WHERE record_id = :id AND seq = 6",
        d=json.dumps({"receipt_matches": True, "old_card_returned": False}),
        id=_id(target, db_url),
    )
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (target.id, 6, "hash_mismatch")


def rehash_last_row(raw: sa.Engine, record_id: uuid.UUID, details: object) -> None:
    """Rewrite the record's last history row with ``details`` and a correct hash, and the
    record's chain head with it: what an attacker who knows the hashing rule can do."""
    from workflow.engine.chain import entry_hash

    log = wf.Base.metadata.tables["idcard_transition_log"]
    records = wf.Base.metadata.tables["idcard_applications"]
    with raw.begin() as conn:
        rows = (
            conn.execute(sa.select(log).where(log.c.record_id == record_id).order_by(log.c.seq))
            .mappings()
            .all()
        )
        digest = entry_hash({**rows[-1], "details": details}, rows[-2]["hash"])
        conn.execute(
            # None is stored as the JSON value null.
            sa.update(log).where(log.c.id == rows[-1]["id"]).values(details=details, hash=digest)
        )
        conn.execute(sa.update(records).where(records.c.id == record_id).values(chain_head=digest))


def test_a_forged_history_whose_hashes_are_recomputed_still_fails_its_guards(
    flow: wf.Workflow, apps: dict[str, wf.ApplicationView], raw: sa.Engine
) -> None:
    # The collect row rewritten without the old card.
    forged = {"receipt_matches": True, "old_card_returned": False}
    rehash_last_row(raw, apps["collected"].id, forged)
    broken = only_broken(flow)
    assert (broken.seq, broken.problem) == (6, "guard_not_proven")
    assert "old_card_handed_back" in broken.message


@pytest.mark.parametrize("planted", [[], None, 42, "text"], ids=repr)
def test_a_correctly_hashed_row_with_malformed_details_is_named_not_a_crash(
    flow: wf.Workflow, apps: dict[str, wf.ApplicationView], raw: sa.Engine, planted: object
) -> None:
    target = apps["ready"]
    rehash_last_row(raw, target.id, planted)
    report = flow.verify()
    assert report.records == len(apps) + 1  # the replacement's loss report too
    ((broken),) = report.broken
    assert (broken.record_id, broken.seq, broken.problem) == (target.id, 5, "malformed_row")


def test_deleting_a_row_in_the_middle_is_detected(
    flow: wf.Workflow, apps: dict[str, wf.ApplicationView], raw: sa.Engine, db_url: str
) -> None:
    execute(
        raw,
        "DELETE FROM idcard_transition_log WHERE record_id = :id AND seq = 3",
        id=_id(apps["ready"], db_url),
    )
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (
        apps["ready"].id,
        4,
        "sequence_broken",
    )


def test_deleting_the_last_row_is_detected(
    flow: wf.Workflow, apps: dict[str, wf.ApplicationView], raw: sa.Engine, db_url: str
) -> None:
    execute(
        raw,
        "DELETE FROM idcard_transition_log WHERE record_id = :id AND seq = 5",
        id=_id(apps["ready"], db_url),
    )
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (
        apps["ready"].id,
        5,
        "version_mismatch",
    )


def test_reordering_rows_is_detected(
    flow: wf.Workflow, apps: dict[str, wf.ApplicationView], raw: sa.Engine, db_url: str
) -> None:
    target = _id(apps["ready"], db_url)
    execute(
        raw,
        "UPDATE idcard_transition_log SET seq = 100 WHERE record_id = :id AND seq = 2",
        id=target,
    )
    execute(
        raw, "UPDATE idcard_transition_log SET seq = 2 WHERE record_id = :id AND seq = 3", id=target
    )
    execute(
        raw,
        "UPDATE idcard_transition_log SET seq = 3 WHERE record_id = :id AND seq = 100",
        id=target,
    )
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (apps["ready"].id, 2, "hash_mismatch")


def test_inserting_a_row_is_detected(
    flow: wf.Workflow, apps: dict[str, wf.ApplicationView], raw: sa.Engine, db_url: str
) -> None:
    # A forged 'mark_ready' appended to a submitted application, the record moved to match.
    target = apps["submitted"]
    log = wf.Base.metadata.tables["idcard_transition_log"]
    table = wf.Base.metadata.tables["idcard_applications"]
    with raw.begin() as conn:
        first = conn.execute(sa.select(log).where(log.c.record_id == target.id)).mappings().one()
        conn.execute(
            sa.insert(log)
            .values(
                **{k: v for k, v in first.items() if k != "id"},
            )
            .values(
                seq=2, event="mark_ready", from_state="produced", to_state="ready", hash="f" * 64
            )
        )
        conn.execute(
            sa.update(table)
            .where(table.c.id == target.id)
            .values(state="ready", version=2, chain_head="f" * 64)
        )
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (target.id, 2, "hash_mismatch")


def test_changing_the_state_column_is_detected(
    flow: wf.Workflow, apps: dict[str, wf.ApplicationView], raw: sa.Engine, db_url: str
) -> None:
    execute(
        raw,
        "UPDATE idcard_applications SET state = 'collected' WHERE id = :id",
        id=_id(apps["submitted"], db_url),
    )
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (
        apps["submitted"].id,
        None,
        "state_mismatch",
    )


def test_changing_a_fixed_column_is_detected(
    flow: wf.Workflow, apps: dict[str, wf.ApplicationView], raw: sa.Engine, db_url: str
) -> None:
    # Turning a renewal into a replacement would excuse a missing old card.
    execute(
        raw,
        "UPDATE idcard_applications SET kind = 'replacement' WHERE id = :id",
        id=_id(apps["collected"], db_url),
    )
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (
        apps["collected"].id,
        1,
        "creation_facts_changed",
    )
    assert "kind" in broken.message


def test_a_deleted_record_with_history_is_detected(
    flow: wf.Workflow, apps: dict[str, wf.ApplicationView], raw: sa.Engine, db_url: str
) -> None:
    execute(raw, "DELETE FROM idcard_applications WHERE id = :id", id=_id(apps["rejected"], db_url))
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (
        apps["rejected"].id,
        1,
        "history_without_record",
    )
    assert flow.verify(apps["rejected"].id).broken[0].problem == "history_without_record"


def test_a_record_without_history_is_detected(
    flow: wf.Workflow, apps: dict[str, wf.ApplicationView], raw: sa.Engine, db_url: str
) -> None:
    execute(
        raw,
        "DELETE FROM idcard_transition_log WHERE record_id = :id",
        id=_id(apps["submitted"], db_url),
    )
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (
        apps["submitted"].id,
        None,
        "missing_history",
    )


def test_verifying_an_unknown_id_is_not_found(flow: wf.Workflow) -> None:
    with pytest.raises(wf.NotFound):
        flow.verify(uuid.uuid4())


def test_explain_tells_the_right_actor_what_it_can_do(flow: wf.Workflow, clock: Clock) -> None:
    view = drive(flow, "transmitted")
    explanation = flow.explain(view.id, reviewer())
    assert explanation.state == "transmitted"
    assert explanation.possible == ["approve", "reject"]
    reject = next(e for e in explanation.events if e.event == "reject")
    assert [c.guard for c in reject.conditions] == ["reasons_given"]
    produce = next(e for e in explanation.events if e.event == "produce")
    assert {r.kind for r in produce.reasons} == {"role", "unit", "state"}


def test_explain_gives_every_reason_for_a_foreign_actor(flow: wf.Workflow) -> None:
    view = drive(flow, "ready")
    explanation = flow.explain(view.id, clerk("310115"))
    collect = next(e for e in explanation.events if e.event == "collect")
    assert not collect.possible
    assert [r.kind for r in collect.reasons] == ["unit"]
    assert [c.guard for c in collect.conditions] == ["receipt_matches", "old_card_handed_back"]
    assert flow.explain(view.id, clerk()).possible == ["collect"]
    assert flow.explain(view.id, producer()).possible == []


def test_explain_of_an_unknown_application_is_not_found(flow: wf.Workflow) -> None:
    with pytest.raises(wf.NotFound):
        flow.explain(uuid.uuid4(), clerk())


# -- forgeries the database's own checks let through (issue 11) ---------------------------------

LOG = wf.Base.metadata.tables["idcard_transition_log"]
APPLICATIONS = wf.Base.metadata.tables["idcard_applications"]


def test_a_record_rebuilt_with_another_identity_under_its_own_history_is_detected(
    flow: wf.Workflow, apps: dict[str, wf.ApplicationView], db_url: str
) -> None:
    """Deleted, re-inserted in its initial state with another citizen, name and receipt, and
    walked forward along its existing history: every step is one the database's own checks
    allow (they stay on here), and every hash still matches."""
    target = apps["ready"]
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            row = dict(
                conn.execute(sa.select(APPLICATIONS).where(APPLICATIONS.c.id == target.id))
                .mappings()
                .one()
            )
            history = (
                conn.execute(sa.select(LOG).where(LOG.c.record_id == target.id).order_by(LOG.c.seq))
                .mappings()
                .all()
            )
            conn.execute(sa.delete(APPLICATIONS).where(APPLICATIONS.c.id == target.id))
            planted = {
                **row,
                "citizen_id": citizen_id(40),
                "name": "冒名顶替",
                "receipt_no": "PLANTED-0001",
                "state": history[0]["to_state"],
                "version": 1,
                "chain_head": history[0]["hash"],
            }
            conn.execute(sa.insert(APPLICATIONS).values(planted))
            for step in history[1:]:
                conn.execute(
                    sa.update(APPLICATIONS)
                    .where(APPLICATIONS.c.id == target.id)
                    .values(state=step["to_state"], version=step["seq"], chain_head=step["hash"])
                )
    finally:
        engine.dispose()
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (target.id, 1, "identity_changed")
    assert "citizen_id, name, receipt_no" in broken.message
    assert citizen_id(40) not in broken.message


def append_forged_step(
    db_url: str, record_id: uuid.UUID, event: str, to_state: str, actor: wf.Actor
) -> None:
    """Append a correctly hashed history row and move the record to match, as a writer who
    knows the hashing rule can, with the database's own checks on."""
    from workflow.engine.decision import history_row

    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            record = (
                conn.execute(sa.select(APPLICATIONS).where(APPLICATIONS.c.id == record_id))
                .mappings()
                .one()
            )
            entry = history_row(
                "application",
                record_id,
                record["version"] + 1,
                event,
                record["state"],
                to_state,
                actor,
                record["submitted_at"],
                {},
                previous=record["chain_head"],
            )
            conn.execute(sa.insert(LOG).values(entry))
            conn.execute(
                sa.update(APPLICATIONS)
                .where(APPLICATIONS.c.id == record_id)
                .values(state=to_state, version=entry["seq"], chain_head=entry["hash"])
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "actor",
    [producer(), reviewer("320102")],
    ids=["card producer", "reviewer of another county"],
)
def test_a_step_fired_by_an_actor_without_the_permission_is_detected(
    flow: wf.Workflow, db_url: str, actor: wf.Actor
) -> None:
    view = drive(flow, "transmitted", n=9)
    append_forged_step(db_url, view.id, "approve", "approved", actor)
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (view.id, 3, "not_permitted")
    assert actor.unit in broken.message


def test_a_creation_by_an_actor_without_the_permission_is_detected(
    flow: wf.Workflow, apps: dict[str, wf.ApplicationView], raw: sa.Engine, db_url: str
) -> None:
    from workflow.engine.chain import entry_hash

    target = apps["submitted"]
    with raw.begin() as conn:
        (first,) = conn.execute(sa.select(LOG).where(LOG.c.record_id == target.id)).mappings()
        forged = {**first, "actor_unit": "320102"}  # a clerk of another county
        digest = entry_hash(forged, None)
        conn.execute(
            sa.update(LOG).where(LOG.c.id == first["id"]).values(actor_unit="320102", hash=digest)
        )
        conn.execute(
            sa.update(APPLICATIONS).where(APPLICATIONS.c.id == target.id).values(chain_head=digest)
        )
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (target.id, 1, "not_permitted")


def ghost_row(record_id: uuid.UUID) -> dict[str, object]:
    from workflow.engine.decision import history_row

    return history_row("ghost", record_id, 1, "haunt", None, "here", clerk(), datetime.now(UTC), {})


def test_the_database_refuses_history_rows_of_unknown_machines(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sa.insert(LOG).values(ghost_row(uuid.uuid4())))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM idcard_outbox")).scalar() == 0
    finally:
        engine.dispose()


def test_history_rows_of_unknown_machines_are_named(
    flow: wf.Workflow, apps: dict[str, wf.ApplicationView], raw: sa.Engine
) -> None:
    ghost = uuid.uuid4()
    with raw.begin() as conn:  # past the database's checks
        conn.execute(sa.insert(LOG).values(ghost_row(ghost)))
    broken = only_broken(flow)
    assert (broken.machine, broken.record_id, broken.seq) == ("ghost", ghost, 1)
    assert broken.problem == "unknown_machine"
    assert flow.verify(ghost).broken[0].problem == "unknown_machine"


def test_values_sqlite_cannot_read_back_are_named_not_a_crash(
    flow: wf.Workflow, apps: dict[str, wf.ApplicationView], raw: sa.Engine, db_url: str
) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's column types refuse such values")
    execute(
        raw,
        "UPDATE idcard_transition_log SET at = 'garbage' WHERE record_id = :id AND seq = 2",
        id=apps["ready"].id.hex,
    )
    execute(
        raw,
        "UPDATE idcard_applications SET fee_paid = 'forty' WHERE id = :id",
        id=apps["submitted"].id.hex,
    )
    for size in (1000, 2):
        report = flow.verify(batch_size=size)
        assert report.records == len(apps) + 1
        found = {
            (b.record_id, b.seq, b.problem, b.message.rsplit(": ", 1)[-1]) for b in report.broken
        }
        assert found == {
            (apps["ready"].id, 2, "malformed_row", "unreadable at"),
            (apps["submitted"].id, None, "malformed_row", "unreadable fee_paid"),
        }


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 3, 2, 9, 0, tzinfo=UTC),  # no microseconds
        datetime(2026, 3, 2, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=8))),
        datetime(1, 1, 2, 0, 0, 0, 1, tzinfo=UTC),
        datetime(999, 12, 31, 12, 0, tzinfo=timezone(timedelta(hours=-11, minutes=-30))),
        datetime(9999, 10, 1, 0, 0, tzinfo=UTC),
    ],
    ids=["whole second", "east of UTC", "year 1", "year 999 west of UTC", "year 9999"],
)
def test_histories_written_at_any_time_verify_with_the_time_as_the_database_gives_it(
    db_url: str, moment: datetime
) -> None:
    """Verification hashes each row with its time as the database renders it (SQLite's stored
    text, PostgreSQL's to_char): it must be the text the library hashed when it wrote the row."""
    from workflow.engine.reading import MachineReader
    from workflow.engine.store import Store
    from workflow.machines.application import REPOSITORY

    with wf.Workflow(db_url, clock=Clock(moment)) as flow:
        view = drive(flow, "collected", n=31)
        report = flow.verify()
        assert report.ok, report.broken
        assert report.rows == view.version
    store = Store(db_url)
    try:
        with store.transaction(write=False) as conn:
            batch = MachineReader(REPOSITORY).some(conn, [view.id])
            [(_, rows, moments)] = list(batch.items())
    finally:
        store.close()
    assert moments == [r["at"].isoformat(timespec="microseconds") for r in rows]
