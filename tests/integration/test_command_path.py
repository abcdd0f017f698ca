"""The command path's statements go straight to the driver only when nothing could see them
go through SQLAlchemy; a host's instrumentation sees every one of them.

What the driver itself runs is recorded below SQLAlchemy, by a cursor class given to the
driver (sqlite3's connection ``factory``, psycopg's ``cursor_factory``) that notes each
statement it executes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

import workflow as wf
from tests.support import Clock, clerk, drive, form, postgres_url, producer, reviewer
from workflow.engine import store
from workflow.machines import REGISTRY

# What the library sends to the driver itself, on purpose and whoever listens: the
# transaction control and settings of SQLite (`workflow.engine.store._run_raw`).
CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA", "DELETE FROM idcard_command_requests WHERE 0")


def normal(statement: str) -> str:
    return " ".join(statement.split())


def recording(url: str, *, library: bool = False) -> tuple[sa.Engine, list[str]]:
    """An engine (the host's own, or the library's) whose driver notes every statement its
    connections' cursors run, below SQLAlchemy: a cursor class given to the driver."""
    seen: list[str] = []
    if url.startswith("sqlite"):
        import sqlite3

        class NotingCursor(sqlite3.Cursor):
            def execute(self, sql: str, *args: Any) -> Any:
                seen.append(normal(sql))
                return super().execute(sql, *args)

            def executemany(self, sql: str, *args: Any) -> Any:
                seen.append(normal(sql))
                return super().executemany(sql, *args)

        class Noting(sqlite3.Connection):
            def cursor(self, factory: Any = NotingCursor) -> Any:
                return super().cursor(factory)

        connect_args: dict[str, Any] = {"factory": Noting}
    else:
        import psycopg

        class NotingPsycopg(psycopg.Cursor[Any]):
            def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
                seen.append(normal(str(query)))
                return super().execute(query, *args, **kwargs)

            def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
                seen.append(normal(str(query)))
                return super().executemany(query, *args, **kwargs)

        connect_args = {"cursor_factory": NotingPsycopg}
    make = wf.create_engine if library else sa.create_engine
    return make(url, connect_args=connect_args), seen


def commands(flow: wf.Workflow, n: int) -> None:
    """One of each kind of write the library makes: a creation, a transition with and without
    a request id (and its retry), a refusal, a bulk command, a reaction between machines."""
    view = flow.submit(form(n=n), actor=clerk(), request_id=f"submit-{n}")
    flow.transmit(view.id, actor=clerk(), request_id=f"transmit-{n}")
    flow.transmit(view.id, actor=clerk(), request_id=f"transmit-{n}")
    flow.approve(view.id, actor=reviewer())
    with pytest.raises(wf.IllegalTransition):
        flow.approve(view.id, actor=reviewer())
    others = [flow.submit(form(n=n + k), actor=clerk()).id for k in (1, 2, 3)]
    flow.fire_many(others, "transmit", actor=clerk())
    flow.produce(view.id, actor=producer())
    flow.report_loss(form(n=n + 4).citizen_id, actor=clerk(), identity_checked=True)


@pytest.fixture
def host_engine(db_url: str) -> Iterator[sa.Engine]:
    """The host's own engine (not the library's `create_engine`)."""
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


def test_a_hosts_listeners_see_every_statement_the_driver_runs(db_url: str, clock: Clock) -> None:
    host_engine, driver = recording(db_url)
    seen: list[str] = []
    after: list[str] = []
    begun: list[object] = []
    committed: list[object] = []
    rolled_back: list[object] = []

    @event.listens_for(host_engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(normal(statement))

    @event.listens_for(host_engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        after.append(normal(statement))

    event.listen(host_engine, "begin", begun.append)
    event.listen(host_engine, "commit", committed.append)
    event.listen(host_engine, "rollback", rolled_back.append)
    with wf.Workflow(host_engine, clock=clock) as flow:
        flow.verify()  # the first connection's own set-up is over
        driver.clear()
        for noted in (seen, after, begun, committed, rolled_back):
            noted.clear()
        commands(flow, 10)
    host_engine.dispose()
    sent = [s for s in driver if not s.startswith(CONTROL)]
    assert seen == after == sent
    # Every write the commands make was seen: they are not taken on trust from the count.
    for table in ("idcard_applications", "idcard_transition_log", "idcard_command_requests"):
        assert any(table in s and ("INSERT" in s or "UPDATE" in s) for s in seen), table
    # Each command's transaction began and ended where the host saw it: the refused one
    # rolled back (and so did the read-only ones, which SQLAlchemy ends by rolling back).
    assert len(begun) == len(committed) + len(rolled_back)
    assert len(committed) >= 8


@pytest.mark.parametrize(
    "instrument",
    [
        "before_cursor_execute",
        "after_cursor_execute",
        "handle_error",
        "begin",
        "commit",
        "do_execute",
        "class_listener",
        "echo",
    ],
)
def test_the_driver_is_used_directly_only_when_nothing_listens(
    host_engine: sa.Engine, instrument: str, caplog: pytest.LogCaptureFixture
) -> None:
    with host_engine.connect() as conn:
        assert store.direct(conn) is not None

    def listener(*args: Any, **kwargs: Any) -> None:
        return None

    try:
        if instrument == "class_listener":
            event.listen(sa.Engine, "before_cursor_execute", listener)
        elif instrument == "echo":
            host_engine.echo = True
        else:
            event.listen(host_engine, instrument, listener)
        with host_engine.connect() as conn:
            assert store.direct(conn) is None
    finally:
        if instrument == "class_listener":
            event.remove(sa.Engine, "before_cursor_execute", listener)
            sa.Engine._has_events = False  # SQLAlchemy never lowers the flag itself
        elif instrument == "echo":
            host_engine.echo = False
            logging.getLogger("sqlalchemy.engine.Engine").setLevel(logging.WARNING)


def test_a_listener_added_later_sees_the_next_command(db_url: str, clock: Clock) -> None:
    engine = wf.create_engine(db_url)
    try:
        with wf.Workflow(engine, clock=clock) as flow:
            view = drive(flow, "submitted")
            seen: list[str] = []

            @event.listens_for(engine, "before_cursor_execute")
            def _before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                seen.append(normal(statement))

            flow.transmit(view.id, actor=clerk())
            assert any(s.startswith("UPDATE idcard_applications") or "moved AS" in s for s in seen)
            assert any("INSERT INTO idcard_transition_log" in s for s in seen)
    finally:
        engine.dispose()


def test_with_nothing_listening_the_hot_statements_skip_sqlalchemy(
    db_url: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, driver = recording(db_url, library=True)
    through: list[str] = []
    real = sa.Connection.exec_driver_sql

    def counted(self: sa.Connection, statement: str, *args: Any, **kwargs: Any) -> Any:
        through.append(normal(statement))
        return real(self, statement, *args, **kwargs)

    try:
        with wf.Workflow(engine, clock=clock) as flow:
            view = drive(flow, "submitted")
            monkeypatch.setattr(sa.Connection, "exec_driver_sql", counted)
            driver.clear()
            flow.transmit(view.id, actor=clerk())
            assert through == []
            assert any("idcard_transition_log" in s for s in driver)
            assert flow.history(view.id)[-1].event == "transmit"
            assert flow.verify().ok
    finally:
        engine.dispose()


def test_the_direct_read_gives_what_sqlalchemy_reads(flow: wf.Workflow, db_url: str) -> None:
    """Every column of every machine's records, with the same values and types, NULLs and
    decimals and times included."""
    drive(flow, "collected", kind=wf.Kind.REPLACEMENT)  # and its loss report, closed
    drive(flow, "rejected", n=2)
    flow.register_found_card(form(n=7).citizen_id, actor=clerk())
    flow.report_loss(form(n=8).citizen_id, actor=clerk(), identity_checked=True)
    engine = wf.create_engine(db_url)
    try:
        with engine.begin() as conn:
            assert store.direct(conn) is not None
            for machine in REGISTRY:
                repository = machine.repository
                ids = list(conn.execute(sa.select(repository.table.c.id)).scalars())
                assert ids, machine.name
                for record_id in ids:
                    core = dict(repository.load(conn, record_id) or {})
                    direct = repository.load_to_change(conn, record_id) or {}
                    assert direct == core
                    assert {k: type(v) for k, v in direct.items()} == {
                        k: type(v) for k, v in core.items()
                    }
                many = repository.load_many_to_change(
                    conn, ids, serialised_by=machine.serialised_by
                )
                assert many == {i: dict(repository.load(conn, i) or {}) for i in ids}
    finally:
        engine.dispose()


def test_a_driver_error_on_the_direct_path_changes_nothing(flow: wf.Workflow, db_url: str) -> None:
    """A statement the database refuses (a trigger of the host's, here) is a `StorageError`
    with the driver's error as its cause, as through SQLAlchemy, and the command left
    nothing behind."""
    view = drive(flow, "submitted")
    engine = sa.create_engine(db_url)
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        if sqlite:
            conn.exec_driver_sql(
                "CREATE TRIGGER host_refuses BEFORE INSERT ON idcard_transition_log "
                "BEGIN SELECT RAISE(ABORT, 'the host says no'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION host_refuses() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION 'the host says no'; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER host_refuses BEFORE INSERT ON idcard_transition_log "
                "FOR EACH ROW EXECUTE FUNCTION host_refuses()"
            )
    try:
        with pytest.raises(wf.StorageError) as info:
            flow.transmit(view.id, actor=clerk())
        assert "the host says no" in str(info.value.__cause__)
        assert isinstance(info.value.__cause__.original, sa.exc.DBAPIError)  # type: ignore[union-attr]
        assert flow.get(view.id).version == 1
        assert [h.event for h in flow.history(view.id)] == ["submit"]
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "DROP TRIGGER host_refuses"
                if sqlite
                else "DROP TRIGGER host_refuses ON idcard_transition_log"
            )
            if not sqlite:
                conn.exec_driver_sql("DROP FUNCTION host_refuses()")
        engine.dispose()
    assert flow.transmit(view.id, actor=clerk()).version == 2
    assert flow.verify().ok


@pytest.mark.skipif(postgres_url() is None, reason="the server ends a backend: PostgreSQL's")
def test_a_backend_ended_mid_statement_on_the_direct_path_is_connection_lost(
    db_url: str, clock: Clock
) -> None:
    """Nothing listens, so the command's statements go straight to psycopg; the server ends
    the backend in the middle of the move (a trigger that terminates its own backend)."""
    engine = wf.create_engine(db_url)
    admin = sa.create_engine(db_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION host_ends_me() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); "
            "RETURN NEW; END $$"
        )
    try:
        with wf.Workflow(engine, clock=clock) as flow:
            view = drive(flow, "submitted")
            with admin.begin() as conn:
                conn.exec_driver_sql(
                    "CREATE TRIGGER host_ends_me BEFORE INSERT ON idcard_transition_log "
                    "FOR EACH ROW EXECUTE FUNCTION host_ends_me()"
                )
            with engine.connect() as conn:
                assert store.direct(conn) is not None
            try:
                with pytest.raises(wf.ConnectionLost):
                    flow.transmit(view.id, actor=clerk(), request_id="lost-1")
            finally:
                with admin.begin() as conn:
                    conn.exec_driver_sql("DROP TRIGGER host_ends_me ON idcard_transition_log")
            assert flow.get(view.id).version == 1
            moved = flow.transmit(view.id, actor=clerk(), request_id="lost-1")
            assert moved.version == 2
            assert flow.transmit(view.id, actor=clerk(), request_id="lost-1") == moved
            assert [h.event for h in flow.history(view.id)] == ["submit", "transmit"]
            assert flow.verify().ok
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql("DROP FUNCTION host_ends_me()")
        admin.dispose()
        engine.dispose()


def test_bulk_commands_take_the_same_path(flow: wf.Workflow) -> None:
    ids = [flow.submit(form(n=n), actor=clerk()).id for n in range(30, 40)]
    ids.append(uuid.uuid4())
    report = flow.fire_many(ids, "transmit", actor=clerk(), chunk_size=4)
    assert len(report.succeeded) == 10
    assert [r.code for r in report.refused] == ["not_found"]
    assert all(flow.get(i).state == "transmitted" for i in ids[:-1])
    assert flow.verify().ok


def test_an_asyncio_driver_is_never_used_directly(db_url: str) -> None:
    """`AsyncWorkflow` runs the command path through SQLAlchemy's greenlet bridge; the driver
    under it is an asyncio adapter, whatever the dialect's driver name (psycopg's is
    "psycopg" for both)."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from tests.integration.test_async import async_url

    async def check() -> object:
        engine = create_async_engine(async_url(db_url))
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(store.direct)
        finally:
            await engine.dispose()

    assert asyncio.run(check()) is None
