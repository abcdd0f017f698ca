"""Commands with a request_id: a retry returns the same result and changes nothing more."""

from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

import workflow as wf
from tests.support import clerk, drive, form, reviewer
from workflow.models.enums import Kind


def counts(db_url: str) -> dict[str, int]:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        result = {
            table: int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in (
                "idcard_applications",
                "idcard_transition_log",
                "idcard_outbox",
                "idcard_command_requests",
            )
        }
    engine.dispose()
    return result


def test_a_retried_submission_returns_the_same_application(flow: wf.Workflow, db_url: str) -> None:
    first = flow.submit(form(n=1), actor=clerk(), request_id="counter-7/0001")
    before = counts(db_url)
    again = flow.submit(form(n=1), actor=clerk(), request_id="counter-7/0001")
    assert again == first
    assert counts(db_url) == before


def test_a_retried_transition_returns_the_same_result_even_after_later_ones(
    flow: wf.Workflow, db_url: str
) -> None:
    view = drive(flow, "submitted")
    transmitted = flow.transmit(view.id, actor=clerk(), request_id="tx-1")
    approved = flow.approve(view.id, actor=reviewer())
    before = counts(db_url)
    assert flow.transmit(view.id, actor=clerk(), request_id="tx-1") == transmitted
    assert counts(db_url) == before
    assert flow.get(view.id) == approved


def test_a_request_id_reused_for_another_command_is_a_conflict(
    flow: wf.Workflow, db_url: str
) -> None:
    one = drive(flow, "submitted", n=1)
    two = drive(flow, "submitted", n=2)
    flow.transmit(one.id, actor=clerk(), request_id="r-1")
    before = counts(db_url)
    for other in (
        lambda: flow.transmit(two.id, actor=clerk(), request_id="r-1"),  # another application
        lambda: flow.transmit(one.id, actor=clerk(actor_id="clerk-2"), request_id="r-1"),
        lambda: flow.fire(one.id, "approve", actor=reviewer(), request_id="r-1"),
        lambda: flow.submit(form(n=3), actor=clerk(), request_id="r-1"),
    ):
        with pytest.raises(wf.IdempotencyConflict) as info:
            other()
        assert (info.value.code, info.value.request_id) == ("idempotency_conflict", "r-1")
    assert counts(db_url) == before


def test_different_arguments_under_one_request_id_are_a_conflict(flow: wf.Workflow) -> None:
    view = drive(flow, "transmitted")
    flow.reject(view.id, actor=reviewer(), ground="other", note="moved abroad", request_id="rej")
    with pytest.raises(wf.IdempotencyConflict):
        flow.reject(view.id, actor=reviewer(), ground="other", note="moved away", request_id="rej")
    assert (
        flow.reject(
            view.id, actor=reviewer(), ground="other", note="moved abroad", request_id="rej"
        ).state
        == "rejected"
    )


def test_a_refused_command_does_not_use_up_its_request_id(flow: wf.Workflow) -> None:
    view = drive(flow, "ready", Kind.RENEWAL)
    with pytest.raises(wf.GuardFailed):
        flow.collect(view.id, actor=clerk(), receipt_no=view.receipt_no, request_id="c-1")
    done = flow.collect(
        view.id, actor=clerk(), receipt_no=view.receipt_no, old_card_returned=True, request_id="c-1"
    )
    assert done.state == "collected"


def test_racing_retries_make_one_transition_and_agree(flow: wf.Workflow, db_url: str) -> None:
    views = [drive(flow, "transmitted", n=n) for n in range(1, 6)]
    results: dict[tuple[int, int], object] = {}
    start = threading.Barrier(4)

    def retry(worker: int) -> None:
        with wf.Workflow(db_url) as own:
            start.wait()
            for i, view in enumerate(views):
                try:
                    results[worker, i] = own.approve(
                        view.id, actor=reviewer(), request_id=f"ap-{i}"
                    )
                except wf.WorkflowError as exc:  # reported by the assertion below
                    results[worker, i] = exc

    threads = [threading.Thread(target=retry, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i, view in enumerate(views):
        answers = [results[w, i] for w in range(4)]
        assert all(isinstance(a, wf.ApplicationView) for a in answers), answers
        assert all(a == answers[0] for a in answers)
        assert len(flow.history(view.id)) == 3


def test_racing_retried_submissions_make_one_application(flow: wf.Workflow, db_url: str) -> None:
    start = threading.Barrier(4)
    answers: list[object] = []

    def retry() -> None:
        with wf.Workflow(db_url) as own:
            start.wait()
            try:
                answers.append(own.submit(form(n=42), actor=clerk(), request_id="sub-42"))
            except wf.WorkflowError as exc:
                answers.append(exc)

    threads = [threading.Thread(target=retry) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(isinstance(a, wf.ApplicationView) for a in answers), answers
    assert len({a.id for a in answers}) == 1  # type: ignore[union-attr]
    assert counts(db_url)["idcard_applications"] == 1


@pytest.mark.parametrize(
    "bad", ["", " spaced ", "x" * 129, "tab\there", "\u00e9t\u00e9", 17, b"bytes"]
)
def test_a_malformed_request_id_is_a_validation_error(
    flow: wf.Workflow, bad: object, db_url: str
) -> None:
    view = drive(flow, "submitted")
    before = counts(db_url)
    with pytest.raises(ValidationError):
        flow.transmit(view.id, actor=clerk(), request_id=bad)  # type: ignore[arg-type]
    assert counts(db_url) == before


def test_unknown_ids_with_a_request_id_are_not_found(flow: wf.Workflow) -> None:
    with pytest.raises(wf.NotFound):
        flow.transmit(uuid.uuid4(), actor=clerk(), request_id="nf")
