"""`Workflow(bind, read_bind=...)` against a hot standby: queries read the replica, commands
and their checks run on the primary, and a replica that lags shows the past, never a wrong
present."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

import workflow as wf
from tests.ha.cluster import Cluster
from tests.support import clerk, form, reviewer

pytestmark = pytest.mark.slow


def replay(cluster: Cluster, *, paused: bool) -> None:
    """Pause or resume the standby's replay of the primary's WAL (it still receives it)."""
    assert cluster.standby is not None
    engine = sa.create_engine(cluster.standby.url(), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            call = "pg_wal_replay_pause" if paused else "pg_wal_replay_resume"
            conn.exec_driver_sql(f"SELECT {call}()")
    finally:
        engine.dispose()


@pytest.fixture
def replica(pair: Cluster) -> Iterator[tuple[Cluster, wf.Workflow, list[str]]]:
    """A workflow writing to the primary and reading the standby; the statements the standby
    was sent, in order."""
    assert pair.standby is not None
    reads = wf.create_engine(pair.read_url())  # target_session_attrs=prefer-standby
    sent: list[str] = []

    @sa.event.listens_for(reads, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(" ".join(statement.split()[:3]).upper())

    flow = wf.Workflow(pair.url(), read_bind=reads)
    try:
        yield pair, flow, sent
    finally:
        flow.close()
        reads.dispose()
        replay(pair, paused=False)


def test_queries_read_the_replica_and_commands_run_on_the_primary(
    replica: tuple[Cluster, wf.Workflow, list[str]],
) -> None:
    cluster, flow, sent = replica
    assert cluster.standby is not None
    with flow._reads.engine.connect() as conn:  # the read URL found the standby
        assert conn.exec_driver_sql("SELECT pg_is_in_recovery()").scalar_one() is True
    sent.clear()
    # A hot standby refuses every write: that the commands succeed proves they went to the
    # primary, and none of them sent the replica a statement.
    view = flow.submit(form(n=7001), actor=clerk())
    moved = flow.transmit(view.id, actor=clerk())
    assert sent == []
    cluster.wait_for_replay()
    assert flow.get(view.id) == moved
    assert [h.event for h in flow.history(view.id)] == ["submit", "transmit"]
    assert flow.applications.get(view.id) == moved
    assert any(o.possible for o in flow.explain(view.id, reviewer()).events)
    assert flow.is_reported_lost(view.citizen_id) is False
    later = moved.submitted_at + timedelta(days=365)
    assert view.id in {a.id for a in flow.overdue(as_of=later, limit=10_000)}
    assert view.id in {a.id for a in flow.overdue_reviews(as_of=later, limit=10_000)}
    pending = [e for e in flow.pending_events(limit=10_000) if e.record_id == view.id]
    assert [e.event for e in pending] == ["submit", "transmit"]
    report = flow.verify()
    assert report.ok, report.broken
    assert sent and all(s.startswith(("SELECT", "BEGIN", "SET", "WITH")) for s in sent), sent
    # Acknowledging is a command: on the primary, and the replica then catches up.
    reads_before = len(sent)
    assert flow.ack(e.id for e in pending) == 2
    assert len(sent) == reads_before
    cluster.wait_for_replay()
    assert not [e for e in flow.pending_events(limit=10_000) if e.record_id == view.id]


def test_a_lagging_replica_shows_the_past_and_commands_check_the_primary(
    replica: tuple[Cluster, wf.Workflow, list[str]],
) -> None:
    cluster, flow, _ = replica
    view = flow.submit(form(n=7002), actor=clerk())
    cluster.wait_for_replay()
    replay(cluster, paused=True)
    # The primary moves on; the replica still replays nothing.
    moved = flow.transmit(view.id, actor=clerk())
    assert moved.state == wf.State.TRANSMITTED
    assert flow.get(view.id).state == wf.State.SUBMITTED  # the past: a stale read
    assert len(flow.history(view.id)) == 1
    # The next command is checked against the primary, where the application is transmitted,
    # not against what the replica shows (there, approve would be illegal).
    approved = flow.approve(view.id, actor=reviewer())
    assert approved.version == 3
    # verify on a replica checks what the replica has: consistent, one step behind.
    stale = flow.verify(view.id)
    assert stale.ok and stale.rows == 1
    replay(cluster, paused=False)
    cluster.wait_for_replay()
    assert flow.get(view.id) == approved
    assert flow.verify(view.id).rows == 3
