"""A database failing in the middle of a command leaves nothing half-written."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import event

import workflow as wf
from tests.support import Clock, clerk, drive, form
from workflow.engine.store import DatabaseFailure


@pytest.fixture
def failing(db_url: str, clock: Clock) -> Iterator[tuple[wf.Workflow, list[str]]]:
    """A workflow whose database fails the first statement that writes a given table (its SQL
    holds the given words: on PostgreSQL one statement moves a record and appends its row)."""
    engine = wf.create_engine(db_url)
    fail_on: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _fail(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if fail_on and fail_on[0] in " ".join(statement.split()).upper():
            fail_on.clear()
            raise sa.exc.OperationalError(statement, parameters, RuntimeError("disk I/O error"))

    with wf.Workflow(engine, clock=clock) as flow:
        yield flow, fail_on
    engine.dispose()


def state_of(flow: wf.Workflow, view: wf.ApplicationView) -> tuple[object, ...]:
    return flow.get(view.id), tuple(flow.history(view.id)), tuple(flow.pending_events())


# The outbox row is written by the database in the log insert (migration 0005): a failure
# there is a failure of that insert.
@pytest.mark.parametrize(
    "statement", ["INSERT INTO IDCARD_TRANSITION_LOG", "UPDATE IDCARD_APPLICATIONS"]
)
def test_a_failure_mid_transition_changes_nothing(
    failing: tuple[wf.Workflow, list[str]], statement: str
) -> None:
    flow, fail_on = failing
    view = drive(flow, "submitted")
    before = state_of(flow, view)
    fail_on.append(statement)
    with pytest.raises(wf.StorageError) as info:
        flow.transmit(view.id, actor=clerk())
    assert info.value.code == "storage_error"
    cause = info.value.__cause__
    assert isinstance(cause, DatabaseFailure)
    assert "disk I/O error" in str(cause)
    assert isinstance(cause.original, sa.exc.OperationalError)
    assert state_of(flow, view) == before
    assert flow.transmit(view.id, actor=clerk()).version == 2
    assert flow.verify().ok


@pytest.mark.parametrize(
    "statement", ["INSERT INTO IDCARD_APPLICATIONS", "INSERT INTO IDCARD_TRANSITION_LOG"]
)
def test_a_failure_mid_submission_leaves_no_application(
    failing: tuple[wf.Workflow, list[str]], statement: str
) -> None:
    flow, fail_on = failing
    fail_on.append(statement)
    with pytest.raises(wf.StorageError):
        flow.submit(form(), actor=clerk())
    assert flow.pending_events() == []
    assert flow.verify().records == 0
    assert flow.submit(form(), actor=clerk()).version == 1
