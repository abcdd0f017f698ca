"""Every command, guard, permission rule and error on a real SQLite file (or PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

import workflow as wf
from tests.support import (
    ACCEPTANCE,
    HUKOU,
    OTHER_COUNTY,
    Clock,
    actor_for,
    citizen_id,
    clerk,
    drive,
    form,
    good_payload,
    producer,
    reviewer,
)
from workflow.models.enums import Kind, RejectionGround


def snapshot(
    flow: wf.Workflow, app_id: uuid.UUID
) -> tuple[wf.ApplicationView, list[wf.TransitionRecord]]:
    return flow.get(app_id), flow.history(app_id)


def test_submit_issues_a_receipt_and_starts_the_sixty_day_clock(
    flow: wf.Workflow, clock: Clock
) -> None:
    view = flow.submit(form(Kind.REPLACEMENT), actor=clerk())
    assert view.state == wf.State.SUBMITTED
    assert view.version == 1
    assert view.submitted_at == clock.now
    assert view.due_at == clock.now + timedelta(days=60)
    assert view.review_due_at is None
    assert len(view.receipt_no) >= 8
    assert view.fee_paid == Decimal("40")
    assert view.documents == {wf.Document.HOUSEHOLD_REGISTER}
    assert view.submitted_at.tzinfo is not None and view.submitted_at.utcoffset() == timedelta(0)
    (entry,) = flow.history(view.id)
    assert (entry.seq, entry.event, entry.from_state, entry.to_state) == (
        1,
        "submit",
        None,
        "submitted",
    )
    assert (entry.actor_id, entry.actor_role, entry.actor_unit) == (
        "clerk-1",
        "acceptance_clerk",
        ACCEPTANCE,
    )
    assert entry.details["documents"] == ["household_register"]


def test_receipts_are_unguessable_and_distinct(flow: wf.Workflow) -> None:
    receipts = {flow.submit(form(n=n), actor=clerk()).receipt_no for n in range(1, 40)}
    assert len(receipts) == 39
    assert all(len(r) == 12 for r in receipts)


def test_a_lowercase_x_is_stored_as_uppercase(flow: wf.Workflow) -> None:
    view = flow.submit(form(citizen_id="11010519491231002x"), actor=clerk())
    assert flow.get(view.id).citizen_id == "11010519491231002X"


def test_the_whole_process_for_a_renewal(flow: wf.Workflow, clock: Clock) -> None:
    view = flow.submit(form(Kind.RENEWAL), actor=clerk())
    clock.advance(days=1)
    view = flow.transmit(view.id, actor=clerk())
    assert view.review_due_at == clock.now + timedelta(days=5)
    clock.advance(days=2)
    view = flow.approve(view.id, actor=reviewer())
    view = flow.produce(view.id, actor=producer())
    view = flow.mark_ready(view.id, actor=clerk())
    view = flow.collect(view.id, actor=clerk(), receipt_no=view.receipt_no, old_card_returned=True)
    assert view.state == wf.State.COLLECTED
    assert view.version == 6
    assert view.old_card_returned is True
    assert flow.get(view.id) == view
    history = flow.history(view.id)
    assert [h.event for h in history] == [
        "submit",
        "transmit",
        "approve",
        "produce",
        "mark_ready",
        "collect",
    ]
    assert [h.seq for h in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1].details == {"receipt_matches": True, "old_card_returned": True}
    assert history[2].at == clock.now - timedelta(days=0) and history[
        1
    ].at == clock.now - timedelta(days=2)


def test_a_renewal_cannot_be_collected_without_the_old_card(flow: wf.Workflow) -> None:
    for kind in (Kind.RENEWAL, Kind.DAMAGED_RENEWAL):
        view = drive(flow, "ready", kind, n=1 if kind is Kind.RENEWAL else 2)
        before = snapshot(flow, view.id)
        with pytest.raises(wf.GuardFailed) as info:
            flow.collect(view.id, actor=clerk(), receipt_no=view.receipt_no)
        assert (info.value.event, info.value.guard, info.value.code) == (
            "collect",
            "old_card_handed_back",
            "guard_failed",
        )
        assert "old card" in str(info.value)
        assert snapshot(flow, view.id) == before


def test_a_replacement_is_collected_without_an_old_card(flow: wf.Workflow) -> None:
    view = drive(flow, "ready", Kind.REPLACEMENT)
    view = flow.collect(view.id, actor=clerk(), receipt_no=view.receipt_no)
    assert view.state == wf.State.COLLECTED
    assert flow.history(view.id)[-1].details == {
        "receipt_matches": True,
        "old_card_returned": False,
    }


def test_a_wrong_receipt_is_refused(flow: wf.Workflow) -> None:
    view = drive(flow, "ready")
    before = snapshot(flow, view.id)
    for wrong in ("", view.receipt_no.lower(), view.receipt_no[:-1], "X" * 64):
        with pytest.raises(wf.GuardFailed) as info:
            flow.collect(view.id, actor=clerk(), receipt_no=wrong, old_card_returned=True)
        assert info.value.guard == "receipt_matches"
    assert snapshot(flow, view.id) == before


@pytest.mark.parametrize("ground", list(RejectionGround))
def test_a_rejection_records_its_ground(flow: wf.Workflow, ground: RejectionGround) -> None:
    view = drive(flow, "transmitted")
    note = "no fingerprints on file" if ground is RejectionGround.OTHER else ""
    view = flow.reject(view.id, actor=reviewer(), ground=ground, note=note)
    assert view.state == wf.State.REJECTED
    assert (view.rejection_ground, view.rejection_note) == (ground, note)
    assert flow.history(view.id)[-1].details == {"ground": str(ground), "note": note}


def test_the_ground_other_needs_a_note(flow: wf.Workflow) -> None:
    view = drive(flow, "transmitted")
    for note in ("", "   "):
        with pytest.raises(wf.GuardFailed) as info:
            flow.reject(view.id, actor=reviewer(), ground="other", note=note)
        assert info.value.guard == "reasons_given"
    assert flow.get(view.id).state == wf.State.TRANSMITTED


def test_an_unknown_ground_is_a_validation_error(flow: wf.Workflow) -> None:
    view = drive(flow, "transmitted")
    with pytest.raises(ValidationError, match="ground"):
        flow.reject(view.id, actor=reviewer(), ground="too_tall")


@pytest.mark.parametrize(
    ("event", "state", "wrong"),
    [
        ("transmit", "submitted", reviewer()),
        ("transmit", "submitted", clerk(OTHER_COUNTY)),
        ("approve", "transmitted", clerk()),
        ("approve", "transmitted", reviewer(OTHER_COUNTY)),
        ("reject", "transmitted", reviewer(ACCEPTANCE)),
        ("produce", "approved", producer("31")),
        ("produce", "approved", clerk()),
        ("mark_ready", "produced", producer()),
        ("collect", "ready", clerk(HUKOU)),
    ],
)
def test_only_the_right_role_of_the_right_unit_may_fire(
    flow: wf.Workflow, event: str, state: str, wrong: wf.Actor
) -> None:
    view = drive(flow, state)
    before = snapshot(flow, view.id)
    payload = {
        "reject": {"ground": "bad_credit_record"},
        "collect": {"receipt_no": view.receipt_no, "old_card_returned": True},
    }
    with pytest.raises(wf.PermissionDenied) as info:
        flow.fire(view.id, event, actor=wrong, **payload.get(event, {}))
    assert (info.value.event, info.value.role, info.value.code) == (
        event,
        wrong.role,
        "permission_denied",
    )
    assert snapshot(flow, view.id) == before


def test_only_a_clerk_of_the_acceptance_county_may_submit(flow: wf.Workflow) -> None:
    for wrong in (clerk(OTHER_COUNTY), reviewer(), producer()):
        with pytest.raises(wf.PermissionDenied):
            flow.submit(form(), actor=wrong)
    assert flow.overdue(datetime(2100, 1, 1, tzinfo=UTC)) == []


def test_permission_is_checked_before_the_state(flow: wf.Workflow) -> None:
    view = drive(flow, "collected")
    with pytest.raises(wf.PermissionDenied):
        flow.approve(view.id, actor=clerk())
    with pytest.raises(wf.IllegalTransition) as info:
        flow.approve(view.id, actor=reviewer())
    assert (info.value.event, info.value.state, info.value.code) == (
        "approve",
        "collected",
        "illegal_transition",
    )


def test_the_state_is_checked_before_the_guards(flow: wf.Workflow) -> None:
    view = drive(flow, "produced")
    with pytest.raises(wf.IllegalTransition):
        flow.collect(view.id, actor=clerk(), receipt_no="WRONG")


def test_an_unknown_application_is_not_found_first(flow: wf.Workflow) -> None:
    missing = uuid.uuid4()
    with pytest.raises(wf.NotFound) as info:
        flow.approve(missing, actor=clerk())
    assert info.value.code == "not_found"
    for call in (
        lambda: flow.get(missing),
        lambda: flow.history(missing),
        lambda: flow.fire(missing, "nonsense", actor=clerk()),
    ):
        with pytest.raises(wf.NotFound):
            call()


def test_an_unknown_event_name_is_an_illegal_transition(flow: wf.Workflow) -> None:
    view = drive(flow, "submitted")
    for name in ("submit", "teleport", "", "TRANSMIT", "__init__", "state"):
        with pytest.raises(wf.IllegalTransition) as info:
            flow.fire(view.id, name, actor=clerk())
        assert info.value.state == "submitted"


def test_final_states_accept_no_event(flow: wf.Workflow) -> None:
    rejected = drive(flow, "rejected", n=1)
    collected = drive(flow, "collected", n=2)
    for view in (rejected, collected):
        for event in ("transmit", "approve", "reject", "produce", "mark_ready", "collect"):
            with pytest.raises(wf.IllegalTransition):
                flow.fire(view.id, event, actor=actor_for(event, view), **good_payload(event, view))


def test_a_second_open_application_for_a_citizen_is_refused(flow: wf.Workflow) -> None:
    first = flow.submit(form(n=5), actor=clerk())
    with pytest.raises(wf.DuplicateApplication) as info:
        flow.submit(form(Kind.REPLACEMENT, n=5), actor=clerk())
    assert info.value.code == "duplicate_application"
    assert citizen_id(5) not in str(info.value)
    assert citizen_id(5)[:6] in str(info.value)
    flow.transmit(first.id, actor=clerk())
    flow.reject(first.id, actor=reviewer(), ground="first_application")
    again = flow.submit(form(Kind.REPLACEMENT, n=5), actor=clerk())
    assert again.state == wf.State.SUBMITTED


def test_the_database_itself_refuses_a_second_open_application(
    db_url: str, flow: wf.Workflow
) -> None:
    import sqlalchemy as sa

    view = flow.submit(form(n=9), actor=clerk())
    engine = sa.create_engine(db_url)
    row = {
        **flow.get(view.id).model_dump(mode="python"),
        "id": uuid.uuid4(),
        "receipt_no": "OTHERRECEIPT",
    }
    row["documents"] = sorted(row["documents"])
    row["chain_head"] = "0" * 64
    table = wf.Base.metadata.tables["idcard_applications"]
    refusal = pytest.raises(sa.exc.IntegrityError, match=r"citizen_id|open_citizen")
    with refusal, engine.begin() as conn:
        conn.execute(sa.insert(table).values(**row))
    # The same row for another citizen goes in: it was the open application that was refused.
    with engine.begin() as conn:
        conn.execute(sa.insert(table).values(**{**row, "citizen_id": citizen_id(10)}))
    engine.dispose()


def test_overdue_lists_late_cards_earliest_first(flow: wf.Workflow, clock: Clock) -> None:
    early = flow.submit(form(n=1), actor=clerk())
    clock.advance(days=3)
    late = flow.submit(form(n=2), actor=clerk())
    done = drive(flow, "ready", n=3)
    rejected = drive(flow, "rejected", n=4)
    assert flow.overdue() == []
    clock.advance(days=70)
    assert [v.id for v in flow.overdue()] == [early.id, late.id]
    assert [v.id for v in flow.overdue(limit=1)] == [early.id]
    assert flow.overdue(early.due_at) == []
    assert [v.id for v in flow.overdue(early.due_at + timedelta(seconds=1))] == [early.id]
    assert done.id not in {v.id for v in flow.overdue()} and rejected.id not in {
        v.id for v in flow.overdue()
    }


def test_overdue_reviews_lists_undecided_transmissions(flow: wf.Workflow, clock: Clock) -> None:
    waiting = drive(flow, "transmitted", n=1)
    decided = drive(flow, "approved", n=2)
    drive(flow, "submitted", n=3)
    assert flow.overdue_reviews() == []
    clock.advance(days=5, seconds=1)
    assert [v.id for v in flow.overdue_reviews()] == [waiting.id]
    assert decided.id not in {v.id for v in flow.overdue_reviews()}


@pytest.mark.parametrize("bad", [datetime(2026, 1, 1), "yesterday", 12])
def test_overdue_refuses_a_naive_or_non_datetime(flow: wf.Workflow, bad: object) -> None:
    with pytest.raises(ValidationError, match="as_of"):
        flow.overdue(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [0, -1, 10_001])
def test_overdue_refuses_an_unreasonable_limit(flow: wf.Workflow, limit: int) -> None:
    with pytest.raises(ValidationError, match="limit"):
        flow.overdue(limit=limit)


def test_bad_ids_and_actors_are_validation_errors(flow: wf.Workflow) -> None:
    view = drive(flow, "submitted")
    with pytest.raises(ValidationError):
        flow.transmit("not-a-uuid", actor=clerk())  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        flow.transmit(view.id, actor={"id": "x", "role": "king", "unit": "440305"})
    with pytest.raises(ValidationError):
        flow.collect(view.id, actor=clerk(), receipt_no=12345)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        flow.fire(view.id, "transmit", actor=clerk(), surprise=True)
    assert flow.transmit(str(view.id), actor=clerk().model_dump()).state == "transmitted"  # type: ignore[arg-type]


def test_a_naive_clock_is_a_configuration_error(db_url: str) -> None:
    flow = wf.Workflow(db_url, clock=lambda: datetime(2026, 1, 1))
    with pytest.raises(wf.ConfigurationError, match="timezone-aware"):
        flow.submit(form(), actor=clerk())
    flow.close()


def test_a_clock_in_another_zone_is_stored_as_utc(db_url: str) -> None:
    beijing = datetime(2026, 5, 1, 8, 0, tzinfo=UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Asia/Shanghai")
    )
    with wf.Workflow(db_url, clock=lambda: beijing) as flow:
        view = flow.submit(form(), actor=clerk())
    assert view.submitted_at == datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    assert view.submitted_at.tzinfo is UTC


def test_a_bad_bind_is_a_configuration_error() -> None:
    with pytest.raises(wf.ConfigurationError, match="URL, an Engine or a Session"):
        wf.Workflow(42)  # type: ignore[arg-type]
    with pytest.raises(wf.ConfigurationError, match="URL"):
        wf.Workflow("not a url")


def test_views_mask_the_citizen_number_in_their_repr(flow: wf.Workflow) -> None:
    view = flow.submit(form(n=3), actor=clerk())
    assert view.citizen_id == citizen_id(3)
    assert citizen_id(3) not in repr(view) and citizen_id(3) not in str(view)
    assert citizen_id(3)[:6] + "********" + citizen_id(3)[-4:] in repr(view)
