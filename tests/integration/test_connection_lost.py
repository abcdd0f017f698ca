"""A connection lost mid-command is `ConnectionLost`: retryable, and safe to retry with the
command's request id whether or not the commit reached the server.

The failover itself (a primary killed, its standby promoted) is in ``tests/ha``; here the
connection is lost on one server: by a driver error SQLAlchemy reads as a disconnect, by the
answer to a commit going missing, and on PostgreSQL by the server ending the backend.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

import workflow as wf
from tests.support import Clock, clerk, drive, form, postgres_url
from workflow.engine.store import _translate


def lost(message: str = "server closed the connection unexpectedly") -> sa.exc.OperationalError:
    return sa.exc.OperationalError(
        "SELECT", None, RuntimeError(message), connection_invalidated=True
    )


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = wf.create_engine(db_url)
    yield engine
    engine.dispose()


def test_connection_lost_is_a_retryable_database_failure() -> None:
    error = wf.ConnectionLost()
    assert error.code == "connection_lost"
    # Retry loops written for ConcurrentUpdate retry it; alerts on StorageError still fire.
    assert isinstance(error, wf.ConcurrentUpdate)
    assert isinstance(error, wf.StorageError)
    assert "request_id" in str(error)


class _Driver(Exception):
    """A driver error as psycopg raises it: with a SQLSTATE, or None for a failed connect."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "dialect", "expected"),
    [
        ("08006", "postgresql", wf.ConnectionLost),  # connection failure
        ("57P01", "postgresql", wf.ConnectionLost),  # terminated by an administrator
        ("57P02", "postgresql", wf.ConnectionLost),  # crash shutdown
        ("57P03", "postgresql", wf.ConnectionLost),  # starting up, in recovery
        (None, "postgresql", wf.ConnectionLost),  # no (writable) server to connect to
        ("40001", "postgresql", wf.ConcurrentUpdate),
        ("53100", "postgresql", wf.StorageError),  # disk full: not a lost connection
        (None, "sqlite", wf.StorageError),
    ],
)
def test_what_reads_as_a_lost_connection(
    sqlstate: str | None, dialect: str, expected: type[Exception]
) -> None:
    error = sa.exc.OperationalError("SELECT", None, _Driver("failed", sqlstate))
    translated = _translate(error, {}, dialect)
    assert type(translated) is expected


def test_a_statement_on_a_dead_connection_raises_connection_lost(
    engine: sa.Engine, clock: Clock
) -> None:
    fail: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _drop(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if fail and fail[0] in " ".join(statement.split()).upper():
            fail.clear()
            raise lost()

    with wf.Workflow(engine, clock=clock) as flow:
        view = drive(flow, "submitted")
        fail.append("INSERT INTO IDCARD_TRANSITION_LOG")
        with pytest.raises(wf.ConnectionLost) as info:
            flow.transmit(view.id, actor=clerk(), request_id="counter-1/7")
        assert info.value.__cause__ is not None
        # Nothing changed; the retry with the same request id runs the command, once.
        assert flow.get(view.id).version == 1
        moved = flow.transmit(view.id, actor=clerk(), request_id="counter-1/7")
        again = flow.transmit(view.id, actor=clerk(), request_id="counter-1/7")
        assert moved == again
        assert [h.event for h in flow.history(view.id)] == ["submit", "transmit"]
        assert flow.verify().ok


def test_an_answer_lost_after_the_commit_is_answered_from_the_record(
    engine: sa.Engine, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit reached the database and its answer was lost: the command's own retry of
    the request finds it recorded and answers with it, and so does the host's retry."""
    real = engine.dialect.do_commit
    failing: list[bool] = []

    def commit_then_lose(dbapi_connection: Any) -> None:
        real(dbapi_connection)
        if failing:
            failing.clear()
            if engine.dialect.name == "sqlite":
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            import psycopg

            raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(engine.dialect, "do_commit", commit_then_lose)
    with wf.Workflow(engine, clock=clock) as flow:
        first = flow.submit(form(n=3), actor=clerk(), request_id="counter-2/1")
        failing.append(True)
        moved = flow.transmit(first.id, actor=clerk(), request_id="counter-2/2")
        assert moved.version == 2 and not failing
        assert flow.transmit(first.id, actor=clerk(), request_id="counter-2/2") == moved
        # The same command without its request id is refused: the transition took place.
        with pytest.raises(wf.IllegalTransition):
            flow.transmit(first.id, actor=clerk())
        assert [h.event for h in flow.history(first.id)] == ["submit", "transmit"]


def test_a_lost_connection_in_a_bulk_command_is_raised_not_refused(
    engine: sa.Engine, clock: Clock
) -> None:
    """A chunk whose connection was lost may have committed: it is not a lost race to run
    again record by record (that would report moved records as refused)."""
    fail: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _drop(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if fail and fail[0] in " ".join(statement.split()).upper():
            fail.clear()
            raise lost()

    with wf.Workflow(engine, clock=clock) as flow:
        views = [flow.submit(form(n=n), actor=clerk()) for n in range(10, 13)]
        fail.append("INSERT INTO IDCARD_TRANSITION_LOG")
        with pytest.raises(wf.ConnectionLost):
            flow.fire_many([v.id for v in views], "transmit", actor=clerk())
        report = flow.fire_many([v.id for v in views], "transmit", actor=clerk())
        assert len(report.succeeded) == 3 and not report.refused


@pytest.mark.skipif(postgres_url() is None, reason="the server ends a backend: PostgreSQL's")
def test_a_backend_the_server_ends_mid_command_is_connection_lost(
    engine: sa.Engine, clock: Clock
) -> None:
    killer = sa.create_engine(str(postgres_url()), isolation_level="AUTOCOMMIT")
    fail: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _terminate(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if fail and fail[0] in " ".join(statement.split()).upper():
            fail.clear()
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with killer.connect() as other:
                other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)}, 10000)")

    try:
        with wf.Workflow(engine, clock=clock) as flow:
            view = drive(flow, "submitted")
            fail.append("INSERT INTO IDCARD_TRANSITION_LOG")
            with pytest.raises(wf.ConnectionLost):
                flow.transmit(view.id, actor=clerk(), request_id="counter-3/1")
            assert flow.get(view.id).version == 1
            assert flow.transmit(view.id, actor=clerk(), request_id="counter-3/1").version == 2
            assert len(flow.history(view.id)) == 2
    finally:
        killer.dispose()
