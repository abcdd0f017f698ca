"""Red team for the command path that sends its statements straight to the driver, and for
revision 0011's statement-level checks: what hosts configure and hostile writers do.

Each scenario runs on the direct path (nothing listens to the engine) and through SQLAlchemy
(a listener that does nothing), and must come out the same: the same `WorkflowError`, the
same rows. An attack the library withstands is a regression test; one it does not is
``xfail(strict=True)`` with the hole in its reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

import workflow as wf
from tests.integration.test_red_team import app_engine
from tests.support import Clock, clerk, drive, form, postgres_url, reviewer
from workflow.engine import store

__all__ = ["app_engine"]  # the application role's engine, a fixture of the red team's

on_postgres = pytest.mark.skipif(postgres_url() is None, reason="PostgreSQL only")

PATHS = ["direct", "listened"]


def _quiet(*args: Any, **kwargs: Any) -> None:
    return None


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine(db_url: str, path: str) -> Iterator[sa.Engine]:
    """The library's engine, with nothing listening (the driver is used directly) or with a
    listener that does nothing (every statement goes through SQLAlchemy)."""
    engine = wf.create_engine(db_url)
    if path == "listened":
        event.listen(engine, "before_cursor_execute", _quiet)
    with engine.connect() as conn:
        assert (store.direct(conn) is not None) is (path == "direct")
    yield engine
    engine.dispose()


def _failure(run: Any) -> tuple[str, str]:
    """The class and first line of what ``run()`` raised."""
    with pytest.raises(Exception) as info:
        run()
    return type(info.value).__name__, str(info.value).splitlines()[0]


# == 1. What the driver can't read ==============================================================


@on_postgres
def test_a_value_the_driver_can_not_read_is_a_storage_error_on_both_paths(
    app_engine: sa.Engine, engine: sa.Engine, clock: Clock
) -> None:
    """The application role may set ``due_at`` in a legal move, to a time PostgreSQL keeps
    and Python can't (``infinity``, a year past 9999). The next command reads the record:
    psycopg fails while reading the row, after the statement ran. Through SQLAlchemy that
    is a `StorageError`; on the direct path it must be too, never psycopg's own error."""
    with wf.Workflow(engine, clock=clock) as flow:
        views = [flow.submit(form(n=n), actor=clerk()) for n in (1, 2)]
        with app_engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE idcard_applications SET state = 'transmitted', "
                    "version = version + 1, due_at = 'infinity' WHERE id = ANY(:ids)"
                ),
                {"ids": [v.id for v in views]},
            )
        one = _failure(lambda: flow.approve(views[0].id, actor=reviewer()))
        many = _failure(lambda: flow.fire_many([views[1].id], "approve", actor=reviewer()))
        assert (
            one
            == many
            == (
                "StorageError",
                "database error: DataError: timestamp too large (after year 10K): 'infinity'",
            )
        )
        # Nothing moved, and the engine's connections still work.
        with engine.connect() as conn:
            states = conn.execute(
                sa.text("SELECT state, version FROM idcard_applications ORDER BY id")
            ).all()
        assert [tuple(s) for s in states] == [("transmitted", 2)] * 2
        other = flow.submit(form(n=3), actor=clerk())
        assert flow.transmit(other.id, actor=clerk()).version == 2


# == 2. What a host configures ===================================================================


def _counts(db_url: str) -> tuple[int, ...]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return tuple(
                int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())
                for table in ("idcard_applications", "idcard_transition_log", "idcard_outbox")
            )
    finally:
        engine.dispose()


def test_a_schema_translate_map_for_the_librarys_tables_is_refused(
    db_url: str, clock: Clock
) -> None:
    """``schema_translate_map={None: "tenant"}`` renders every table without a schema in
    ``tenant``: SQLAlchemy's statements honour it, the command path's (rendered once, sent as
    text) do not, so a command would write one schema and read another. Refused with a
    `ConfigurationError` naming the option, whether the engine, the host's later update of
    it or a `Session`'s connection carries it; a map that leaves the library's tables alone is
    the host's business."""
    before = _counts(db_url)
    engine = wf.create_engine(db_url)
    try:
        translated = engine.execution_options(schema_translate_map={None: "tenant"})
        with pytest.raises(wf.ConfigurationError, match="schema_translate_map"):
            wf.Workflow(translated, clock=clock)
        with wf.Workflow(engine, clock=clock) as flow:
            view = drive(flow, "submitted", n=1)
            engine.update_execution_options(schema_translate_map={None: "tenant"})
            with pytest.raises(wf.ConfigurationError, match="schema_translate_map"):
                flow.transmit(view.id, actor=clerk())
            engine.update_execution_options(schema_translate_map={"reports": "reports_2026"})
            assert flow.transmit(view.id, actor=clerk()).version == 2
        with Session(engine) as session:
            session.connection(execution_options={"schema_translate_map": {None: "tenant"}})
            flow = wf.Workflow(session, clock=clock)
            with pytest.raises(wf.ConfigurationError, match="schema_translate_map"):
                flow.submit(form(n=2), actor=clerk())
            session.commit()
    finally:
        engine.dispose()
    applications, history, outbox = before
    assert _counts(db_url) == (applications + 1, history + 2, outbox + 2)


def _every_kind_of_write(flow: wf.Workflow, n: int) -> list[Any]:
    """A creation and a move with request ids, a bulk move, a reaction between machines:
    each statement the command path sends, and the library's others."""
    view = flow.submit(form(n=n), actor=clerk(), request_id=f"submit-{n}")
    moved = flow.transmit(view.id, actor=clerk(), request_id=f"transmit-{n}")
    others = [flow.submit(form(n=n + k), actor=clerk()).id for k in (1, 2)]
    report = flow.fire_many(others, "transmit", actor=clerk())
    replacement = flow.submit(form(wf.Kind.REPLACEMENT, n=n + 3), actor=clerk())
    return [moved.state, len(report.succeeded), flow.is_reported_lost(replacement.citizen_id)]


@pytest.mark.parametrize(
    "options", [{"stream_results": True}, {"yield_per": 10}], ids=["stream_results", "yield_per"]
)
def test_a_host_that_streams_its_results_runs_commands_on_both_paths(
    engine: sa.Engine, clock: Clock, options: dict[str, Any]
) -> None:
    """``stream_results`` (or ``yield_per``) set on the host's engine asks SQLAlchemy for a
    server-side cursor for every statement, an INSERT's too, which PostgreSQL refuses
    ("DECLARE ... CURSOR FOR INSERT"). The direct path never streams: without a listener the
    commands worked, and the host's instrumentation switched on made every one of them fail.
    The library's own transactions don't stream, on either path; the host's Session keeps
    its option."""
    streaming = engine.execution_options(**options)
    with wf.Workflow(streaming, clock=clock) as flow:
        assert _every_kind_of_write(flow, 10) == ["transmitted", 2, True]
        assert flow.verify().ok
    with Session(engine) as session:
        session.connection(execution_options=options)
        flow = wf.Workflow(session, clock=clock)
        assert _every_kind_of_write(flow, 20) == ["transmitted", 2, True]
        assert session.connection().get_execution_options().items() >= options.items()
        session.commit()
    with wf.Workflow(engine, clock=clock) as flow:
        assert flow.verify().records == 10  # five records each: three, a replacement, its report


@on_postgres
def test_a_hosts_own_uuid_loader_does_not_make_records_not_found(
    engine: sa.Engine, clock: Clock
) -> None:
    """A host that has psycopg load UUIDs as text on its connections (a loader registered
    when a connection opens: a pool event, so the driver is still used directly) gets
    strings where SQLAlchemy would hand UUIDs. A bulk command looked its records up by the
    ids the host gave: every one of them came out ``not_found``."""
    from psycopg.types.string import TextLoader

    @event.listens_for(engine, "connect")
    def _uuids_as_text(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.adapters.register_loader("uuid", TextLoader)

    engine.dispose()  # connections from now on load UUIDs as text
    with wf.Workflow(engine, clock=clock) as flow:
        ids = [flow.submit(form(n=n), actor=clerk()).id for n in (1, 2, 3)]
        assert flow.transmit(ids[0], actor=clerk()).state == "transmitted"
        report = flow.fire_many([*ids[1:], uuid.uuid4()], "transmit", actor=clerk())
        assert sorted(report.succeeded) == sorted(ids[1:])
        assert [r.code for r in report.refused] == ["not_found"]
        assert {flow.get(i).state for i in ids} == {"transmitted"}
        assert flow.verify().ok
