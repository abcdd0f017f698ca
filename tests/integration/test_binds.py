"""Binds: URL, Engine and a caller's Session; durability settings; a schema that is behind."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import workflow as wf
import workflow.machines.application
from tests.support import Clock, clerk, drive, form, postgres_url


def count(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
    engine.dispose()
    return int(n)


def test_an_engine_bind_commits_each_command(db_url: str, clock: Clock) -> None:
    engine = wf.create_engine(db_url)
    view = wf.Workflow(engine, clock=clock).submit(form(), actor=clerk())
    assert count(db_url, "idcard_applications") == 1
    with wf.Workflow(db_url) as other:
        assert other.get(view.id) == view
    engine.dispose()


def test_a_session_bind_joins_the_callers_transaction_and_never_commits(
    db_url: str, clock: Clock
) -> None:
    engine = wf.create_engine(db_url)
    with Session(engine) as session:
        flow = wf.Workflow(session, clock=clock)
        view = flow.submit(form(), actor=clerk())
        flow.transmit(view.id, actor=clerk())
        assert flow.get(view.id).version == 2
        assert session.in_transaction()
        session.rollback()
    assert count(db_url, "idcard_applications") == 0
    assert count(db_url, "idcard_transition_log") == 0
    with Session(engine) as session:
        flow = wf.Workflow(session, clock=clock)
        view = flow.submit(form(), actor=clerk())
        session.commit()
    assert count(db_url, "idcard_applications") == 1
    engine.dispose()


def test_a_refused_command_in_a_session_leaves_the_callers_transaction_usable(
    db_url: str, clock: Clock
) -> None:
    engine = wf.create_engine(db_url)
    with Session(engine) as session:
        flow = wf.Workflow(session, clock=clock)
        first = flow.submit(form(n=1), actor=clerk())
        with pytest.raises(wf.DuplicateApplication):
            flow.submit(form(n=1), actor=clerk())
        with pytest.raises(wf.IllegalTransition):
            flow.approve(first.id, actor=wf.Actor(id="r", role="hukou_reviewer", unit="110105"))
        second = flow.submit(form(n=2), actor=clerk())
        session.commit()
    with wf.Workflow(db_url) as flow:
        assert {flow.get(first.id).version, flow.get(second.id).version} == {1}
        assert len(flow.history(first.id)) == 1
    engine.dispose()


def test_a_racing_duplicate_that_reaches_the_index_is_a_duplicate_application(
    db_url: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two sessions both see no open application, both insert: the partial unique index decides.
    engine = wf.create_engine(db_url)
    with Session(engine) as one:
        wf.Workflow(one, clock=clock).submit(form(n=4), actor=clerk())
        one.commit()
    flow = wf.Workflow(engine, clock=clock)
    monkeypatch.setattr(
        workflow.machines.application.ApplicationRepository, "has_open", lambda *args: False
    )
    with pytest.raises(wf.DuplicateApplication):
        flow.submit(form(n=4), actor=clerk())
    assert count(db_url, "idcard_applications") == 1
    assert count(db_url, "idcard_transition_log") == 1
    engine.dispose()


@pytest.mark.skipif(postgres_url() is not None, reason="SQLite settings")
def test_sqlite_runs_in_wal_mode_with_full_synchronous_commits(db_url: str) -> None:
    engine = wf.create_engine(db_url)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert int(conn.execute(sa.text("PRAGMA busy_timeout")).scalar() or 0) >= 10_000
    engine.dispose()


@pytest.mark.skipif(postgres_url() is None, reason="PostgreSQL settings")
def test_postgresql_commits_synchronously(db_url: str) -> None:
    engine = wf.create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SHOW synchronous_commit")).scalar() == "on"
    engine.dispose()


def test_a_database_behind_the_library_is_refused_with_the_fix(empty_db_url: str) -> None:
    if empty_db_url.startswith("sqlite"):
        sqlite3.connect(empty_db_url.removeprefix("sqlite:///")).close()  # an empty file
    with pytest.raises(wf.SchemaOutOfDate) as info:
        wf.Workflow(empty_db_url)
    assert info.value.code == "schema_out_of_date"
    assert "workflow.upgrade" in str(info.value)
    assert info.value.current is None and info.value.head == wf.head_revision()
    wf.upgrade(empty_db_url)
    with wf.Workflow(empty_db_url) as flow:
        assert drive(flow, "approved").state == "approved"


def test_a_sqlite_path_that_does_not_exist_is_refused_and_no_file_is_made(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "idcards.db"
    for bind in (f"sqlite:///{missing}", wf.create_engine(f"sqlite:///{missing}")):
        with pytest.raises(wf.NoDatabase) as info:
            wf.Workflow(bind)
        assert info.value.code == "no_database" and str(missing) in str(info.value)
        assert isinstance(info.value, wf.ConfigurationError)
    assert not missing.exists() and not missing.parent.exists()
    (tmp_path / "typo").mkdir()
    with pytest.raises(wf.NoDatabase):
        wf.Workflow(f"sqlite:///{missing}")
    assert list((tmp_path / "typo").iterdir()) == []
