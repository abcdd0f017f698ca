"""The outbox: one event per transition, written with it, delivered in order until acked."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session

import workflow as wf
from tests.support import Clock, clerk, drive, form, reviewer


def test_every_transition_leaves_one_pending_event_in_order(flow: wf.Workflow) -> None:
    one = drive(flow, "approved", n=1)
    two = drive(flow, "transmitted", n=2)
    events = flow.pending_events()
    assert [(e.record_id, e.seq, e.event, e.state) for e in events] == [
        (one.id, 1, "submit", "submitted"),
        (one.id, 2, "transmit", "transmitted"),
        (one.id, 3, "approve", "approved"),
        (two.id, 1, "submit", "submitted"),
        (two.id, 2, "transmit", "transmitted"),
    ]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert all(e.machine == "application" for e in events)
    history = flow.history(one.id)
    assert [e.at for e in events[:3]] == [h.at for h in history]


def test_acknowledged_events_are_not_delivered_again(flow: wf.Workflow, clock: Clock) -> None:
    drive(flow, "ready")
    first = flow.pending_events(limit=2)
    assert len(first) == 2
    assert flow.ack(e.id for e in first) == 2
    assert flow.ack([first[0].id]) == 0  # acknowledging twice is harmless
    rest = flow.pending_events()
    assert [e.seq for e in rest] == [3, 4, 5]
    assert flow.ack([e.id for e in rest] + [10_000_000]) == 3
    assert flow.pending_events() == []


def test_a_refused_command_leaves_no_event(flow: wf.Workflow) -> None:
    view = drive(flow, "submitted")
    with pytest.raises(wf.PermissionDenied):
        flow.transmit(view.id, actor=reviewer())
    with pytest.raises(wf.DuplicateApplication):
        flow.submit(form(), actor=clerk())
    assert len(flow.pending_events()) == 1


def test_events_written_in_a_callers_session_share_its_fate(db_url: str, clock: Clock) -> None:
    engine = wf.create_engine(db_url)
    with Session(engine) as session:
        wf.Workflow(session, clock=clock).submit(form(), actor=clerk())
        session.rollback()
    with wf.Workflow(engine) as flow:
        assert flow.pending_events() == []
    engine.dispose()


@pytest.mark.parametrize("bad", [0, -3, 10_001, "10", None])
def test_pending_events_refuses_an_unreasonable_limit(flow: wf.Workflow, bad: object) -> None:
    with pytest.raises(ValidationError):
        flow.pending_events(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["1,2", [0], [-1], ["1"], [1.5], 7, None])
def test_ack_refuses_what_is_not_a_list_of_event_ids(flow: wf.Workflow, bad: object) -> None:
    with pytest.raises(ValidationError):
        flow.ack(bad)  # type: ignore[arg-type]


def test_the_database_writes_the_event_whoever_writes_the_log(
    flow: wf.Workflow, db_url: str
) -> None:
    import sqlalchemy as sa

    view = drive(flow, "submitted")
    log = wf.Base.metadata.tables["idcard_transition_log"]
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        first = dict(
            conn.execute(sa.select(log).where(log.c.record_id == view.id)).mappings().one()
        )
        del first["id"]
        conn.execute(
            sa.insert(log).values(
                {
                    **first,
                    "seq": 2,
                    "event": "transmit",
                    "from_state": "submitted",
                    "to_state": "transmitted",
                }
            )
        )
    engine.dispose()
    assert [(e.seq, e.event, e.state) for e in flow.pending_events()] == [
        (1, "submit", "submitted"),
        (2, "transmit", "transmitted"),
    ]
