"""Loss reports and found cards, and the rules that join them to applications."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

import workflow as wf
from tests.support import OTHER_COUNTY, Clock, citizen_id, clerk, drive, form, reviewer
from workflow.models.enums import Kind


def test_a_loss_is_reported_by_any_clerk_anywhere(flow: wf.Workflow, clock: Clock) -> None:
    report = flow.report_loss(citizen_id(1), actor=clerk(OTHER_COUNTY), identity_checked=True)
    assert (report.state, report.version, report.reported_unit) == ("reported", 1, OTHER_COUNTY)
    assert report.reported_at == clock.now and report.application_id is None
    assert flow.is_reported_lost(citizen_id(1))
    assert not flow.is_reported_lost(citizen_id(2))
    assert [h.event for h in flow.history(report.id)] == ["report"]
    assert citizen_id(1) not in repr(report)


def test_only_clerks_report_losses(flow: wf.Workflow) -> None:
    with pytest.raises(wf.PermissionDenied):
        flow.report_loss(citizen_id(1), actor=reviewer(), identity_checked=True)


def test_a_second_active_report_is_refused(flow: wf.Workflow) -> None:
    first = flow.report_loss(citizen_id(1), actor=clerk(), identity_checked=True)
    with pytest.raises(wf.DuplicateLossReport) as info:
        flow.report_loss(citizen_id(1), actor=clerk(OTHER_COUNTY), identity_checked=True)
    assert info.value.code == "duplicate_loss_report"
    assert citizen_id(1) not in str(info.value)
    flow.withdraw_loss_report(first.id, actor=clerk(), card_presented=True)
    assert flow.report_loss(citizen_id(1), actor=clerk(), identity_checked=True).state == "reported"


def test_withdrawing_needs_the_card(flow: wf.Workflow, clock: Clock) -> None:
    report = flow.report_loss(citizen_id(1), actor=clerk(), identity_checked=True)
    with pytest.raises(wf.GuardFailed) as info:
        flow.withdraw_loss_report(report.id, actor=clerk(), card_presented=False)
    assert info.value.guard == "card_presented"
    clock.advance(days=3)
    done = flow.withdraw_loss_report(report.id, actor=clerk(OTHER_COUNTY), card_presented=True)
    assert (done.state, done.version, done.ended_at) == ("withdrawn", 2, clock.now)
    assert not flow.is_reported_lost(citizen_id(1))
    with pytest.raises(wf.IllegalTransition):
        flow.withdraw_loss_report(report.id, actor=clerk(), card_presented=True)


def test_a_replacement_application_counts_as_reporting_the_loss(flow: wf.Workflow) -> None:
    app = flow.submit(form(Kind.REPLACEMENT, n=3), actor=clerk())
    assert flow.is_reported_lost(citizen_id(3))
    (event,) = [e for e in flow.pending_events() if e.machine == "loss_report"]
    report = flow.get_loss_report(event.record_id)
    assert report.application_id == app.id
    assert report.reported_unit == app.acceptance_region


def test_a_replacement_reuses_an_active_report(flow: wf.Workflow) -> None:
    earlier = flow.report_loss(citizen_id(3), actor=clerk(OTHER_COUNTY), identity_checked=True)
    flow.submit(form(Kind.REPLACEMENT, n=3), actor=clerk())
    assert [e.record_id for e in flow.pending_events() if e.machine == "loss_report"] == [
        earlier.id
    ]


def test_a_renewal_files_no_loss_report(flow: wf.Workflow) -> None:
    flow.submit(form(Kind.RENEWAL, n=3), actor=clerk())
    assert not flow.is_reported_lost(citizen_id(3))


def test_collecting_a_replacement_closes_the_report(flow: wf.Workflow) -> None:
    report = flow.report_loss(citizen_id(1), actor=clerk(OTHER_COUNTY), identity_checked=True)
    view = drive(flow, "ready", Kind.REPLACEMENT, n=1)
    assert flow.is_reported_lost(citizen_id(1))
    flow.collect(view.id, actor=clerk(), receipt_no=view.receipt_no)
    closed = flow.get_loss_report(report.id)
    assert (closed.state, closed.version) == ("closed", 2)
    assert flow.history(report.id)[-1].details == {"replacement_collected": True}
    assert not flow.is_reported_lost(citizen_id(1))
    assert flow.verify().ok


def test_a_rejected_replacement_leaves_the_report_active(flow: wf.Workflow) -> None:
    drive(flow, "rejected", Kind.REPLACEMENT, n=1)
    assert flow.is_reported_lost(citizen_id(1))


def test_a_found_card_is_returned_to_its_owner_and_the_report_withdrawn(
    flow: wf.Workflow,
) -> None:
    report = flow.report_loss(citizen_id(1), actor=clerk(OTHER_COUNTY), identity_checked=True)
    card = flow.register_found_card(citizen_id(1), actor=clerk())
    assert (card.state, card.held_unit) == ("held", clerk().unit)
    with pytest.raises(wf.GuardFailed) as info:
        flow.return_found_card(card.id, actor=clerk(), identity_checked=False)
    assert info.value.guard == "identity_checked"
    with pytest.raises(wf.PermissionDenied):
        flow.return_found_card(card.id, actor=clerk(OTHER_COUNTY), identity_checked=True)
    returned = flow.return_found_card(card.id, actor=clerk(), identity_checked=True)
    assert returned.state == "returned"
    assert flow.get_loss_report(report.id).state == "withdrawn"
    assert flow.history(report.id)[-1].details == {
        "card_presented": True,
        "replacement_in_progress": False,
    }
    assert not flow.is_reported_lost(citizen_id(1))
    assert flow.verify().ok


def test_a_found_card_whose_owner_applied_for_a_replacement_is_destroyed(
    flow: wf.Workflow, clock: Clock
) -> None:
    card = flow.register_found_card(citizen_id(1), actor=clerk())
    with pytest.raises(wf.GuardFailed) as info:
        flow.destroy_found_card(card.id, actor=clerk())
    assert info.value.guard == "replacement_exists"
    clock.advance(days=1)
    flow.submit(form(Kind.REPLACEMENT, n=1), actor=clerk(), request_id="r")
    with pytest.raises(wf.GuardFailed) as refused:
        flow.return_found_card(card.id, actor=clerk(), identity_checked=True)
    assert refused.value.guard == "no_replacement"
    destroyed = flow.destroy_found_card(card.id, actor=clerk())
    assert destroyed.state == "destroyed"
    assert flow.history(card.id)[-1].details == {"replacement_since_loss": True}
    assert flow.is_reported_lost(citizen_id(1))  # the replacement's own report stays active


def test_a_card_found_after_its_replacement_was_collected_is_destroyed(
    flow: wf.Workflow, clock: Clock
) -> None:
    # The replacement closed the report: the lost card stays invalid for good.
    flow.report_loss(citizen_id(1), actor=clerk(OTHER_COUNTY), identity_checked=True)
    clock.advance(days=1)
    view = drive(flow, "ready", Kind.REPLACEMENT, n=1)
    flow.collect(view.id, actor=clerk(), receipt_no=view.receipt_no)
    clock.advance(days=30)
    card = flow.register_found_card(citizen_id(1), actor=clerk())
    with pytest.raises(wf.GuardFailed) as refused:
        flow.return_found_card(card.id, actor=clerk(), identity_checked=True)
    assert refused.value.guard == "no_replacement"
    assert flow.destroy_found_card(card.id, actor=clerk()).state == "destroyed"


def test_a_replacement_before_the_loss_was_reported_does_not_count(
    flow: wf.Workflow, clock: Clock
) -> None:
    # A replacement collected years ago for an earlier lost card says nothing about this one.
    old = drive(flow, "ready", Kind.REPLACEMENT, n=1)
    flow.collect(old.id, actor=clerk(), receipt_no=old.receipt_no)
    clock.advance(days=400)
    flow.report_loss(citizen_id(1), actor=clerk(), identity_checked=True)
    card = flow.register_found_card(citizen_id(1), actor=clerk())
    assert flow.return_found_card(card.id, actor=clerk(), identity_checked=True).state == "returned"


def test_a_rejected_replacement_does_not_make_a_found_card_destroyed(
    flow: wf.Workflow,
) -> None:
    card = flow.register_found_card(citizen_id(1), actor=clerk())
    view = flow.submit(form(Kind.REPLACEMENT, n=1), actor=clerk())
    flow.transmit(view.id, actor=clerk())
    flow.reject(view.id, actor=reviewer(), ground="identity_mismatch")
    assert flow.return_found_card(card.id, actor=clerk(), identity_checked=True).state == "returned"


def test_history_and_verify_cover_every_machine(flow: wf.Workflow) -> None:
    report = flow.report_loss(citizen_id(1), actor=clerk(), identity_checked=True)
    card = flow.register_found_card(citizen_id(2), actor=clerk())
    assert flow.history(report.id)[0].event == "report"
    assert flow.history(card.id)[0].event == "register"
    assert flow.verify(card.id).records == 1
    with pytest.raises(wf.NotFound):
        flow.history(uuid.uuid4())
    with pytest.raises(wf.NotFound):
        flow.get_found_card(report.id)


def test_idempotent_loss_and_found_commands(flow: wf.Workflow) -> None:
    first = flow.report_loss(
        citizen_id(1), actor=clerk(), identity_checked=True, request_id="loss-1"
    )
    assert (
        flow.report_loss(citizen_id(1), actor=clerk(), identity_checked=True, request_id="loss-1")
        == first
    )
    card = flow.register_found_card(citizen_id(2), actor=clerk(), request_id="card-1")
    assert flow.register_found_card(citizen_id(2), actor=clerk(), request_id="card-1") == card
    with pytest.raises(wf.IdempotencyConflict):
        flow.register_found_card(citizen_id(3), actor=clerk(), request_id="card-1")


@pytest.mark.parametrize("bad", ["110105194912310021", "", 12, None, "x" * 10_000])
def test_bad_citizen_numbers_are_validation_errors(flow: wf.Workflow, bad: object) -> None:
    with pytest.raises(ValidationError):
        flow.report_loss(bad, actor=clerk(), identity_checked=True)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        flow.register_found_card(bad, actor=clerk())  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        flow.is_reported_lost(bad)  # type: ignore[arg-type]


# -- the rules closed by issue 11 ---------------------------------------------------------------


def test_a_loss_is_reported_only_in_person_with_the_identity_checked(flow: wf.Workflow) -> None:
    with pytest.raises(wf.GuardFailed) as refused:
        flow.report_loss(citizen_id(1), actor=clerk(), identity_checked=False)
    assert (refused.value.event, refused.value.guard) == ("report", "holder_in_person")
    assert not flow.is_reported_lost(citizen_id(1))
    assert flow.verify().records == 0  # nothing was written
    report = flow.report_loss(citizen_id(1), actor=clerk(), identity_checked=True)
    (created,) = flow.history(report.id)
    assert created.details["identity_checked"] is True
    assert created.details["identity"].startswith("sha256:")  # bound, not the number itself
    assert citizen_id(1) not in str(created.details)


def test_the_report_a_replacement_filed_is_not_withdrawn_while_it_is_in_progress(
    flow: wf.Workflow,
) -> None:
    for state in ("submitted", "transmitted", "approved", "produced", "ready"):
        n = {"submitted": 1, "transmitted": 2, "approved": 3, "produced": 4, "ready": 5}[state]
        drive(flow, state, Kind.REPLACEMENT, n=n)
        (event,) = [
            e
            for e in flow.pending_events(limit=1000)
            if e.machine == "loss_report"
            and e.seq == 1
            and flow.get_loss_report(e.record_id).citizen_id == citizen_id(n)
        ]
        with pytest.raises(wf.GuardFailed) as refused:
            flow.withdraw_loss_report(event.record_id, actor=clerk(), card_presented=True)
        assert refused.value.guard == "no_replacement_in_progress", state
        assert flow.get_loss_report(event.record_id).state == "reported"


def test_no_report_is_withdrawn_while_a_replacement_for_the_citizen_is_in_progress(
    flow: wf.Workflow,
) -> None:
    # Reported first by the holder; the replacement applied for after reuses the report.
    report = flow.report_loss(citizen_id(1), actor=clerk(OTHER_COUNTY), identity_checked=True)
    view = drive(flow, "ready", Kind.REPLACEMENT, n=1)
    with pytest.raises(wf.GuardFailed):
        flow.withdraw_loss_report(report.id, actor=clerk(), card_presented=True)
    # So collecting the replacement closes it, and the old card, found, is destroyed.
    flow.collect(view.id, actor=clerk(), receipt_no=view.receipt_no)
    assert flow.get_loss_report(report.id).state == "closed"
    card = flow.register_found_card(citizen_id(1), actor=clerk())
    assert flow.destroy_found_card(card.id, actor=clerk()).state == "destroyed"
    assert flow.verify().ok


def test_after_a_rejected_replacement_the_holder_may_withdraw_the_report(
    flow: wf.Workflow,
) -> None:
    drive(flow, "rejected", Kind.REPLACEMENT, n=1)
    report_id = next(
        e.record_id for e in flow.pending_events(limit=1000) if e.machine == "loss_report"
    )
    withdrawn = flow.withdraw_loss_report(report_id, actor=clerk(), card_presented=True)
    assert withdrawn.state == "withdrawn"
    assert flow.history(report_id)[-1].details == {
        "card_presented": True,
        "replacement_in_progress": False,
    }
    assert flow.verify().ok


def test_explain_names_the_replacement_in_progress(flow: wf.Workflow) -> None:
    drive(flow, "submitted", Kind.REPLACEMENT, n=1)
    report_id = next(
        e.record_id for e in flow.pending_events(limit=1000) if e.machine == "loss_report"
    )
    (withdraw,) = [
        o for o in flow.loss_reports.explain(report_id, clerk()).events if o.event == "withdraw"
    ]
    assert "no_replacement_in_progress" in [c.guard for c in withdraw.conditions]
