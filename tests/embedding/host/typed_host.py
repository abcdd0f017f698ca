"""Host code written against the README's API; the tests run ``mypy --strict`` on it with the
library installed from its wheel, so everything here is typed through the shipped py.typed."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy.orm import Session

import workflow as wf


def counter_clerk(unit: str) -> wf.Actor:
    return wf.Actor(id="clerk-17", role=wf.Role.ACCEPTANCE_CLERK, unit=unit)


def accept(flow: wf.Workflow, citizen_id: str, name: str) -> wf.ApplicationView:
    form = wf.SubmitApplication(
        kind=wf.Kind.RENEWAL,
        citizen_id=citizen_id,
        name=name,
        hukou_region="110105",
        acceptance_region="440305",
        documents={wf.Document.RESIDENT_ID_CARD},
        fee_paid=Decimal(20),
    )
    app = flow.submit(form, actor=counter_clerk("440305"), request_id="counter-7/000123")
    state: wf.State = app.state
    version: int = app.version
    receipt: str | None = app.receipt_no
    assert state == wf.State.SUBMITTED and version == 1 and receipt
    return app


def move_along(flow: wf.Workflow, app_id: uuid.UUID) -> list[wf.TransitionRecord]:
    clerk = counter_clerk("440305")
    reviewer = wf.Actor(id="rev-3", role=wf.Role.HUKOU_REVIEWER, unit="110105")
    producer = wf.Actor(id="prod-1", role=wf.Role.CARD_PRODUCER, unit="44")
    app = flow.transmit(app_id, actor=clerk)
    app = flow.fire(app.id, "approve", actor=reviewer)
    app = flow.produce(app.id, actor=producer)
    app = flow.mark_ready(app.id, actor=clerk)
    try:
        flow.collect(app.id, actor=clerk, receipt_no=app.receipt_no or "")
    except wf.GuardFailed as refused:
        code: str = refused.code
        assert code == "guard_failed"
    app = flow.collect(app.id, actor=clerk, receipt_no=app.receipt_no or "", old_card_returned=True)
    return flow.history(app.id)


def refuse(flow: wf.Workflow, app_id: uuid.UUID) -> wf.ApplicationView | None:
    reviewer = wf.Actor(id="rev-3", role=wf.Role.HUKOU_REVIEWER, unit="110105")
    try:
        return flow.reject(app_id, actor=reviewer, ground=wf.RejectionGround.OTHER, note="x")
    except wf.WorkflowError as error:
        print(error.code)
        return None


def overdue(flow: wf.Workflow) -> list[uuid.UUID]:
    return [view.id for view in flow.overdue(limit=10) + flow.overdue_reviews(limit=10)]


def main(url: str) -> None:
    wf.upgrade(url)
    with wf.Workflow(url) as flow:
        app = accept(flow, "11010519491231002X", "Wang Fang")
        records = move_along(flow, app.id)
        print([(r.seq, r.event, r.to_state, r.actor_id) for r in records], overdue(flow))
    engine = wf.create_engine(url)
    with Session(engine) as session:
        in_session = wf.Workflow(session)
        refuse(in_session, app.id)
        session.commit()
    engine.dispose()
