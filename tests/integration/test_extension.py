"""The statutory extension of the 60-day limit (`extend_deadline`), on a real database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

import workflow as wf
from tests.support import Clock, clerk, drive, producer, reviewer

REASON = "the mountain pass is closed by snow"


def test_the_clerk_extends_the_limit_once_and_the_state_stays(
    flow: wf.Workflow, clock: Clock
) -> None:
    app = drive(flow, "approved")
    extended = flow.extend_deadline(app.id, actor=clerk(), days=30, reason=REASON)
    assert extended.state == "approved" and extended.version == app.version + 1
    assert extended.due_at == app.due_at + timedelta(days=30)
    last = flow.history(app.id)[-1]
    assert (last.event, last.from_state, last.to_state) == (
        "extend_deadline",
        "approved",
        "approved",
    )
    assert last.details == {"days": 30, "reason": REASON, "extended_before": False}
    with pytest.raises(wf.GuardFailed) as again:
        flow.extend_deadline(app.id, actor=clerk(), days=1, reason=REASON)
    assert again.value.guard == "not_extended_before"
    assert flow.get(app.id) == extended
    assert flow.verify().broken == []


@pytest.mark.parametrize("days", [0, 31, -1])
def test_the_extension_is_1_to_30_days(flow: wf.Workflow, days: int) -> None:
    app = drive(flow, "submitted")
    with pytest.raises(ValidationError, match="days"):
        flow.extend_deadline(app.id, actor=clerk(), days=days, reason=REASON)
    assert flow.get(app.id) == app


def test_the_extension_states_a_reason(flow: wf.Workflow) -> None:
    app = drive(flow, "submitted")
    with pytest.raises(ValidationError, match="reason"):
        flow.extend_deadline(app.id, actor=clerk(), days=5, reason="   ")


@pytest.mark.parametrize("state", ["ready", "collected", "rejected"])
def test_no_extension_once_the_card_is_ready_or_the_application_closed(
    flow: wf.Workflow, state: str
) -> None:
    app = drive(flow, state)
    with pytest.raises(wf.IllegalTransition):
        flow.extend_deadline(app.id, actor=clerk(), days=5, reason=REASON)


def test_only_the_acceptance_points_clerk_extends(flow: wf.Workflow) -> None:
    app = drive(flow, "transmitted")
    for actor in (reviewer(), producer(), clerk(unit="310115")):
        with pytest.raises(wf.PermissionDenied):
            flow.extend_deadline(app.id, actor=actor, days=5, reason=REASON)


def test_overdue_counts_the_extension(flow: wf.Workflow, clock: Clock) -> None:
    late = drive(flow, "transmitted", n=1)
    extended = drive(flow, "transmitted", n=2)
    flow.extend_deadline(extended.id, actor=clerk(), days=20, reason=REASON)
    moment = late.due_at + timedelta(days=1)
    assert [v.id for v in flow.overdue(moment)] == [late.id]
    later = extended.due_at + timedelta(days=21)
    assert {v.id for v in flow.overdue(later)} == {late.id, extended.id}


def test_an_extension_in_bulk_is_checked_like_one(flow: wf.Workflow) -> None:
    first = drive(flow, "submitted", n=1)
    second = drive(flow, "produced", n=2)
    flow.extend_deadline(second.id, actor=clerk(), days=3, reason=REASON)
    report = flow.fire_many(
        [first.id, second.id], "extend_deadline", actor=clerk(), days=10, reason=REASON
    )
    assert report.succeeded == [first.id]
    assert [r.code for r in report.refused] == ["guard_failed"]
    assert flow.get(first.id).due_at == first.due_at + timedelta(days=10)


def test_a_database_with_extensions_cannot_go_below_revision_0007(
    flow: wf.Workflow, db_url: str
) -> None:
    app = drive(flow, "submitted")
    flow.extend_deadline(app.id, actor=clerk(), days=5, reason=REASON)
    with pytest.raises(wf.MigrationError) as refused:
        wf.downgrade(db_url, "0006")
    assert refused.value.revision == "0007" and "append-only" in str(refused.value)
    assert wf.current_revision(db_url) == wf.head_revision()
