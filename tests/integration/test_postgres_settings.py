"""The library's PostgreSQL transactions give up on a held lock, and commit durably, whatever
the role's settings; a host's own sessions keep theirs.

- A command blocked by another transaction's row lock or advisory lock raises
  `ConcurrentUpdate` after ``store.POSTGRES_LOCK_TIMEOUT_MS`` instead of waiting forever.
- A role with ``ALTER ROLE ... SET synchronous_commit = off`` still gets its commands committed
  with ``synchronous_commit = on``.

Skipped without PostgreSQL (``IDCARD_TEST_DATABASE_URL``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import workflow as wf
from tests.support import Clock, clerk, drive, form, postgres_url
from workflow.engine import store

pytestmark = pytest.mark.skipif(postgres_url() is None, reason="PostgreSQL's settings")

BINDS = ["url", "engine", "session"]


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "POSTGRES_LOCK_TIMEOUT_MS", 300)


@pytest.fixture
def lazy_role(db_url: str) -> Iterator[str]:
    """The URL of a role whose sessions start with ``synchronous_commit = off``."""
    role = f"idcard_lazy_{uuid.uuid4().hex[:8]}"
    server = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f"ALTER ROLE {role} SET synchronous_commit = off")
        conn.exec_driver_sql(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        conn.exec_driver_sql(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    try:
        yield make_url(db_url).set(username=role).render_as_string(False)
    finally:
        with server.connect() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
        server.dispose()


class Bound:
    """A workflow on one kind of bind, and the engine under it."""

    def __init__(self, kind: str, url: str, clock: Clock) -> None:
        self.kind = kind
        self.session: Session | None = None
        if kind == "url":
            self.flow = wf.Workflow(url, clock=clock)
            self.engine = self.flow._store.engine
        else:
            self.engine = sa.create_engine(url)
            if kind == "engine":
                self.flow = wf.Workflow(self.engine, clock=clock)
            else:
                self.session = Session(self.engine)
                self.flow = wf.Workflow(self.session, clock=clock)

    def commit(self) -> None:
        if self.session is not None:
            self.session.commit()

    def close(self) -> None:
        if self.session is not None:
            self.session.rollback()
            self.session.close()
        self.flow.close()
        if self.kind != "url":
            self.engine.dispose()


@pytest.fixture
def bound(request: pytest.FixtureRequest, db_url: str, clock: Clock) -> Iterator[Bound]:
    made = Bound(request.param, db_url, clock)
    yield made
    made.close()


@pytest.mark.parametrize("bound", ["url", "engine"], indirect=True)
def test_a_command_gives_up_on_a_held_row_lock(
    short_timeout: None, bound: Bound, db_url: str
) -> None:
    view = drive(bound.flow, "submitted")
    holder = sa.create_engine(db_url)
    try:
        with holder.connect() as conn:
            conn.exec_driver_sql(
                f"SELECT 1 FROM idcard_applications WHERE id = '{view.id}' FOR UPDATE"
            )
            with pytest.raises(wf.ConcurrentUpdate):
                bound.flow.transmit(view.id, actor=clerk())
            conn.rollback()
        assert bound.flow.transmit(view.id, actor=clerk()).state == "transmitted"
    finally:
        holder.dispose()


@pytest.mark.parametrize("bound", ["url", "engine"], indirect=True)
def test_a_command_gives_up_on_a_held_citizen_lock(
    short_timeout: None, bound: Bound, db_url: str
) -> None:
    citizen = form(n=31).citizen_id
    holder = sa.create_engine(db_url)
    try:
        with holder.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(hashtextextended(%(value)s, 0))",
                {"value": "idcard:" + citizen},
            )
            with pytest.raises(wf.ConcurrentUpdate):
                bound.flow.report_loss(citizen, actor=clerk(), identity_checked=True)
            conn.rollback()
        assert (
            bound.flow.report_loss(citizen, actor=clerk(), identity_checked=True).state
            == "reported"
        )
    finally:
        holder.dispose()


@pytest.mark.parametrize("bound", ["session"], indirect=True)
def test_a_hosts_session_keeps_its_own_lock_timeout(short_timeout: None, bound: Bound) -> None:
    assert bound.session is not None
    bound.session.execute(sa.text("SET LOCAL lock_timeout = '7s'"))
    bound.flow.submit(form(n=32), actor=clerk())
    setting = bound.session.execute(sa.text("SHOW lock_timeout")).scalar()
    assert setting == "7s"
    bound.commit()
    assert bound.session.execute(sa.text("SHOW lock_timeout")).scalar() == "0"


def test_a_lock_timeout_the_role_has_is_kept(db_url: str, clock: Clock) -> None:
    engine = sa.create_engine(db_url, connect_args={"options": "-c lock_timeout=5s"})
    seen = watch(engine, "lock_timeout")
    try:
        with wf.Workflow(engine, clock=clock) as flow:
            flow.submit(form(n=33), actor=clerk())
        assert seen and set(seen) == {"5s"}
    finally:
        engine.dispose()


def watch(engine: sa.Engine, setting: str) -> list[str]:
    """The value of ``setting`` on the connection right after each history row is written, in
    the command's own transaction."""
    seen: list[str] = []

    @sa.event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # The statement that appends the history (on PostgreSQL a transition's one statement
        # moves the record and appends its row).
        if "INSERT INTO IDCARD_TRANSITION_LOG" in " ".join(statement.split()).upper():
            probe = conn.connection.dbapi_connection.cursor()
            probe.execute(f"SELECT current_setting('{setting}')")
            seen.append(probe.fetchone()[0])
            probe.close()

    return seen


@pytest.mark.parametrize("kind", BINDS)
def test_synchronous_commit_off_for_the_role_is_raised_for_the_librarys_writes(
    lazy_role: str, clock: Clock, kind: str
) -> None:
    made = Bound(kind, lazy_role, clock)
    seen = watch(made.engine, "synchronous_commit")
    try:
        view = made.flow.submit(form(n=40), actor=clerk())
        made.flow.fire_many([view.id], "transmit", actor=clerk())
        made.commit()
        assert len(seen) == 2 and set(seen) == {"on"}, seen
        # The host's own sessions on that engine keep the role's setting.
        if kind != "url":
            with made.engine.connect() as conn:
                assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
    finally:
        made.close()


def test_a_stronger_synchronous_commit_is_kept(db_url: str, clock: Clock) -> None:
    engine = sa.create_engine(
        db_url, connect_args={"options": "-c synchronous_commit=remote_apply"}
    )
    seen = watch(engine, "synchronous_commit")
    try:
        with wf.Workflow(engine, clock=clock) as flow:
            flow.submit(form(n=41), actor=clerk())
        assert seen == ["remote_apply"]
    finally:
        engine.dispose()


def test_the_librarys_engine_sets_its_connections_up_once(db_url: str) -> None:
    engine = wf.create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "30s"
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    finally:
        engine.dispose()
