"""fire_many: one event to many applications set-based, exactly as single commands do it."""

from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

import workflow as wf
from tests.support import (
    OTHER_COUNTY,
    Clock,
    actor_for,
    citizen_id,
    clerk,
    drive,
    form,
    postgres_url,
    producer,
)
from workflow.models.enums import Kind


def comparable(history: list[wf.TransitionRecord]) -> list[tuple[object, ...]]:
    # Everything but the hash and the identity digest, which cover the record's own id.
    return [
        (
            h.seq,
            h.event,
            h.from_state,
            h.to_state,
            h.actor_id,
            h.actor_role,
            h.actor_unit,
            h.at,
            {k: v for k, v in h.details.items() if k != "identity"},
        )
        for h in history
    ]


def test_bulk_and_single_commands_write_identical_histories(
    flow: wf.Workflow, clock: Clock
) -> None:
    single = [drive(flow, "submitted", n=n) for n in range(1, 11)]
    bulk = [drive(flow, "submitted", n=n) for n in range(11, 21)]
    for event in ("transmit", "approve", "produce", "mark_ready"):
        for view in single:
            flow.fire(view.id, event, actor=actor_for(event, view))
        report = flow.fire_many([v.id for v in bulk], event, actor=actor_for(event, bulk[0]))
        assert report.succeeded == [v.id for v in bulk] and report.refused == []
    for a, b in zip(single, bulk, strict=True):
        assert comparable(flow.history(a.id)) == comparable(flow.history(b.id))
        left, right = flow.get(a.id), flow.get(b.id)
        assert (left.state, left.version, left.review_due_at) == (
            right.state,
            right.version,
            right.review_due_at,
        )
    events = flow.pending_events(limit=1000)
    assert len(events) == 20 * 5
    assert flow.verify().ok


def test_bulk_refuses_each_record_for_its_own_reason(flow: wf.Workflow) -> None:
    ready = [drive(flow, "submitted", n=n) for n in range(1, 6)]
    elsewhere = flow.submit(form(n=6, acceptance_region=OTHER_COUNTY), actor=clerk(OTHER_COUNTY))
    moved_on = drive(flow, "approved", n=7)
    missing = uuid.uuid4()
    ids = [ready[0].id, elsewhere.id, moved_on.id, missing, *[v.id for v in ready[1:]], ready[0].id]
    report = flow.fire_many(ids, "transmit", actor=clerk())
    assert report.event == "transmit"
    assert report.succeeded == [v.id for v in ready]
    assert {(r.record_id, r.code) for r in report.refused} == {
        (elsewhere.id, "permission_denied"),
        (moved_on.id, "illegal_transition"),
        (missing, "not_found"),
    }
    assert flow.get(elsewhere.id).version == 1 and flow.get(moved_on.id).version == 3


def test_bulk_checks_guards_per_record(flow: wf.Workflow) -> None:
    views = [drive(flow, "transmitted", n=n) for n in range(1, 4)]
    report = flow.fire_many(
        [v.id for v in views], "reject", actor=actor_for("reject", views[0]), ground="other"
    )
    assert report.succeeded == []
    assert {r.code for r in report.refused} == {"guard_failed"}
    report = flow.fire_many(
        [v.id for v in views],
        "reject",
        actor=actor_for("reject", views[0]),
        ground="other",
        note="moved abroad",
    )
    assert len(report.succeeded) == 3
    assert flow.history(views[0].id)[-1].details == {"ground": "other", "note": "moved abroad"}


def test_bulk_runs_in_chunks(flow: wf.Workflow) -> None:
    views = [drive(flow, "approved", n=n) for n in range(1, 31)]
    report = flow.fire_many([v.id for v in views], "produce", actor=producer(), chunk_size=7)
    assert len(report.succeeded) == 30
    assert all(flow.get(v.id).state == "produced" for v in views)
    assert flow.verify().ok


def test_collecting_replacements_in_bulk_closes_their_reports(flow: wf.Workflow) -> None:
    views = [drive(flow, "ready", Kind.REPLACEMENT, n=n) for n in range(1, 4)]
    # Every receipt differs, so a bulk collect can only succeed for the one it names.
    report = flow.fire_many(
        [v.id for v in views], "collect", actor=clerk(), receipt_no=views[0].receipt_no
    )
    assert report.succeeded == [views[0].id]
    assert [r.code for r in report.refused] == ["guard_failed", "guard_failed"]
    assert not flow.is_reported_lost(views[0].citizen_id)
    assert flow.is_reported_lost(views[1].citizen_id)
    assert flow.verify().ok


def test_bulk_and_single_commands_racing_have_one_winner_each(
    flow: wf.Workflow, db_url: str
) -> None:
    views = [drive(flow, "submitted", n=n) for n in range(1, 41)]
    ids = [v.id for v in views]
    results: dict[str, object] = {}

    def bulk() -> None:
        with wf.Workflow(db_url) as own:
            results["bulk"] = own.fire_many(ids, "transmit", actor=clerk(), chunk_size=10)

    def single() -> None:
        won = 0
        with wf.Workflow(db_url) as own:
            for i in reversed(ids):
                try:
                    own.transmit(i, actor=clerk())
                    won += 1
                except (wf.IllegalTransition, wf.ConcurrentUpdate):
                    pass
        results["single"] = won

    threads = [threading.Thread(target=bulk), threading.Thread(target=single)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    report = results["bulk"]
    assert isinstance(report, wf.BulkReport)
    assert len(report.succeeded) + int(results["single"]) == 40  # type: ignore[call-overload]
    assert all(len(flow.history(i)) == 2 for i in ids)
    assert flow.verify().ok


@pytest.mark.parametrize("bad", [["not-a-uuid"], "abc", 5, None])
def test_bulk_refuses_bad_ids(flow: wf.Workflow, bad: object) -> None:
    with pytest.raises(ValidationError):
        flow.fire_many(bad, "transmit", actor=clerk())  # type: ignore[arg-type]


def test_bulk_with_an_unknown_event_refuses_every_record(flow: wf.Workflow) -> None:
    view = drive(flow, "submitted")
    report = flow.fire_many([view.id], "teleport", actor=clerk())
    assert [r.code for r in report.refused] == ["illegal_transition"]


@pytest.mark.skipif(postgres_url() is None, reason="PostgreSQL runs writers side by side")
def test_a_record_whose_reaction_loses_a_race_is_one_refusal_and_the_rest_go_on(
    db_url: str, clock: Clock
) -> None:
    """Three found cards handed back in one bulk run; the loss report the second one's return
    must withdraw is held by another transaction, past the lock timeout. The chunk is tried
    again record by record: the second is refused as a retryable ConcurrentUpdate, the others
    go through, and the second goes through once the other transaction ends."""
    engine = sa.create_engine(db_url, connect_args={"options": "-c lock_timeout=300"})
    holder = sa.create_engine(db_url)
    try:
        with wf.Workflow(engine, clock=clock) as flow:
            cards, reports = [], []
            for n in (51, 52, 53):
                citizen = citizen_id(n)
                reports.append(flow.report_loss(citizen, actor=clerk(), identity_checked=True))
                cards.append(flow.register_found_card(citizen, actor=clerk()).id)
            with holder.connect() as conn, conn.begin():
                conn.execute(
                    sa.text("SELECT 1 FROM idcard_loss_reports WHERE id = :id FOR UPDATE"),
                    {"id": reports[1].id},
                )
                report = flow.found_cards.fire_many(
                    cards, "return_to_owner", actor=clerk(), identity_checked=True
                )
            assert report.succeeded == [cards[0], cards[2]]
            ((refusal),) = report.refused
            assert (refusal.record_id, refusal.code) == (cards[1], "concurrent_update")
            assert [flow.get_loss_report(r.id).state for r in reports] == [
                "withdrawn",
                "reported",
                "withdrawn",
            ]
            again = flow.found_cards.fire_many(
                [cards[1]], "return_to_owner", actor=clerk(), identity_checked=True
            )
            assert again.succeeded == [cards[1]] and again.refused == []
            assert flow.get_loss_report(reports[1].id).state == "withdrawn"
            assert flow.verify().ok
    finally:
        engine.dispose()
        holder.dispose()
