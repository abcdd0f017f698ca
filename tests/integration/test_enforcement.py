"""The database itself refuses illegal transitions, whoever writes to it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

import workflow as wf
from tests.support import Clock, clerk, drive, form, postgres_url
from workflow.machines import REGISTRY


@pytest.fixture
def raw(db_url: str) -> Iterator[sa.Engine]:
    """A plain engine: another writer of the tables, with no library in between."""
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


def key(view: wf.ApplicationView, engine: sa.Engine) -> object:
    return view.id.hex if engine.dialect.name == "sqlite" else view.id


def snapshot(engine: sa.Engine) -> dict[str, list[tuple[object, ...]]]:
    with engine.connect() as conn:
        return {
            table: sorted(
                tuple(map(str, row)) for row in conn.execute(sa.text(f"SELECT * FROM {table}"))
            )
            for table in (
                "idcard_applications",
                "idcard_transition_log",
                "idcard_outbox",
                "idcard_allowed_transitions",
            )
        }


def refused(engine: sa.Engine, sql: str, **params: object) -> str:
    """Run ``sql`` and return the database's refusal; fail if it was accepted or changed
    anything."""
    before = snapshot(engine)
    with pytest.raises(sa.exc.IntegrityError) as info, engine.begin() as conn:
        conn.execute(sa.text(sql), params)
    assert snapshot(engine) == before
    return str(info.value.orig)


def test_the_allowed_transitions_table_equals_the_definition(raw: sa.Engine) -> None:
    with raw.connect() as conn:
        rows = set(
            conn.execute(
                sa.text(
                    "SELECT machine, event, from_state, to_state FROM idcard_allowed_transitions"
                )
            )
        )
    expected = {
        (m.name, t.event, t.source, t.target)
        for m in REGISTRY
        for t in m.definition.transitions.values()
    }
    assert rows == expected


def test_jumping_a_state_is_refused(flow: wf.Workflow, raw: sa.Engine) -> None:
    view = drive(flow, "submitted")
    message = refused(
        raw,
        "UPDATE idcard_applications SET state = 'collected', version = version + 1 WHERE id = :id",
        id=key(view, raw),
    )
    assert "allowed transition" in message
    refused(
        raw, "UPDATE idcard_applications SET state = 'collected' WHERE id = :id", id=key(view, raw)
    )


def test_a_change_that_does_not_bump_the_version_is_refused(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    view = drive(flow, "submitted")
    refused(
        raw,
        "UPDATE idcard_applications SET state = 'transmitted' WHERE id = :id",
        id=key(view, raw),
    )
    refused(
        raw,
        "UPDATE idcard_applications SET name = 'Someone Else' WHERE id = :id",
        id=key(view, raw),
    )
    refused(
        raw,
        "UPDATE idcard_applications SET version = version + 2, state = 'transmitted' "
        "WHERE id = :id",
        id=key(view, raw),
    )


def test_leaving_a_final_state_is_refused(flow: wf.Workflow, raw: sa.Engine) -> None:
    view = drive(flow, "rejected")
    refused(
        raw,
        "UPDATE idcard_applications SET state = 'approved', version = version + 1 WHERE id = :id",
        id=key(view, raw),
    )


def test_an_allowed_step_with_a_version_bump_passes_the_table_check(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    # The triggers check the pair and the version; the missing history row is verify()'s to find.
    view = drive(flow, "submitted")
    with raw.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE idcard_applications SET state = 'transmitted', version = version + 1 "
                "WHERE id = :id"
            ),
            {"id": key(view, raw)},
        )
    (broken,) = flow.verify().broken
    assert broken.problem == "version_mismatch"


def test_a_new_record_must_start_at_the_beginning(flow: wf.Workflow, raw: sa.Engine) -> None:
    view = drive(flow, "submitted")
    row = {
        **flow.get(view.id).model_dump(),
        "id": uuid.uuid4(),
        "receipt_no": "OTHER",
        "chain_head": "0" * 64,
    }
    row["documents"] = sorted(row["documents"])
    row["citizen_id"] = "11010519491231002X"
    table = wf.Base.metadata.tables["idcard_applications"]
    for state, version in (("ready", 1), ("submitted", 4)):
        with pytest.raises(sa.exc.IntegrityError, match="start in submitted"), raw.begin() as conn:
            conn.execute(sa.insert(table).values(**{**row, "state": state, "version": version}))


def test_the_log_is_append_only(flow: wf.Workflow, raw: sa.Engine) -> None:
    view = drive(flow, "collected")
    assert "append-only" in refused(
        raw,
        "UPDATE idcard_transition_log SET actor_id = 'nobody' WHERE record_id = :id",
        id=key(view, raw),
    )
    assert "append-only" in refused(
        raw,
        "DELETE FROM idcard_transition_log WHERE record_id = :id AND seq = 6",
        id=key(view, raw),
    )
    refused(raw, "DELETE FROM idcard_transition_log")


@pytest.mark.skipif(postgres_url() is None, reason="TRUNCATE is PostgreSQL's")
def test_the_log_cannot_be_truncated(flow: wf.Workflow, raw: sa.Engine) -> None:
    drive(flow, "ready")
    refused(raw, "TRUNCATE idcard_transition_log")
    refused(raw, "TRUNCATE idcard_allowed_transitions CASCADE")


def test_a_log_row_with_an_illegal_pair_is_refused(flow: wf.Workflow, raw: sa.Engine) -> None:
    view = drive(flow, "submitted")
    log = wf.Base.metadata.tables["idcard_transition_log"]
    with raw.connect() as conn:
        first = dict(
            conn.execute(sa.select(log).where(log.c.record_id == view.id)).mappings().one()
        )
    del first["id"]
    forged = {
        **first,
        "seq": 2,
        "event": "collect",
        "from_state": "submitted",
        "to_state": "collected",
    }
    before = snapshot(raw)
    with pytest.raises(sa.exc.IntegrityError), raw.begin() as conn:
        conn.execute(sa.insert(log).values(**forged))
    with pytest.raises(sa.exc.IntegrityError), raw.begin() as conn:
        conn.execute(
            sa.insert(log)
            .values(**{**forged, "seq": 1, "from_state": None, "event": "collect"})
            .values(record_id=uuid.uuid4(), seq=2)
        )
    assert snapshot(raw) == before


def test_the_allowed_transitions_are_changed_by_migrations_only(raw: sa.Engine) -> None:
    message = refused(
        raw,
        "INSERT INTO idcard_allowed_transitions (machine, event, from_state, to_state) "
        "VALUES ('application', 'shortcut', 'submitted', 'collected')",
    )
    assert "migrations" in message
    refused(
        raw, "UPDATE idcard_allowed_transitions SET to_state = 'collected' WHERE event = 'transmit'"
    )
    refused(raw, "DELETE FROM idcard_allowed_transitions")


def test_downgrading_leaves_no_trigger_or_function_behind(empty_db_url: str) -> None:
    wf.upgrade(empty_db_url)
    wf.downgrade(empty_db_url, "base")
    engine = sa.create_engine(empty_db_url)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            left = conn.execute(
                sa.text(
                    "SELECT type, name FROM sqlite_master "
                    "WHERE name NOT LIKE 'sqlite_%' AND name != 'idcard_alembic_version'"
                )
            ).all()
        else:
            left = conn.execute(
                sa.text(
                    "SELECT 'function', proname FROM pg_proc WHERE proname LIKE 'idcard_%' "
                    "UNION ALL SELECT 'trigger', tgname FROM pg_trigger WHERE NOT tgisinternal "
                    "UNION ALL SELECT 'table', tablename FROM pg_tables "
                    "WHERE schemaname = 'public' AND tablename != 'idcard_alembic_version'"
                )
            ).all()
    engine.dispose()
    assert left == []


def test_insert_or_replace_can_not_rewrite_history_or_rebuild_a_record(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    if raw.dialect.name != "sqlite":
        pytest.skip("INSERT OR REPLACE is SQLite's")
    view = drive(flow, "transmitted")
    for sql in (
        "INSERT OR REPLACE INTO idcard_transition_log SELECT * FROM idcard_transition_log "
        "WHERE seq = 2",
        "REPLACE INTO idcard_transition_log SELECT * FROM idcard_transition_log WHERE seq = 1",
        "INSERT OR REPLACE INTO idcard_applications SELECT * FROM idcard_applications",
    ):
        message = refused(raw, sql)
        assert "idcard-workflow" in message, sql
    assert flow.verify().broken == [] and flow.get(view.id) == view


@pytest.mark.skipif(postgres_url() is None, reason="PostgreSQL's temporary tables")
def test_a_temporary_table_can_not_shadow_the_allowed_transitions(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    view = drive(flow, "submitted")
    with raw.connect() as conn:
        conn.exec_driver_sql(
            "CREATE TEMP TABLE idcard_allowed_transitions "
            "(machine text, event text, from_state text, to_state text)"
        )
        conn.exec_driver_sql(
            "INSERT INTO idcard_allowed_transitions "
            "VALUES ('application', 'jump', 'submitted', 'collected')"
        )
        conn.commit()
        with pytest.raises(sa.exc.IntegrityError, match="idcard-workflow"):
            conn.exec_driver_sql(
                "UPDATE idcard_applications SET state = 'collected', version = version + 1 "
                f"WHERE id = '{view.id}'"
            )
        conn.rollback()
    assert flow.get(view.id) == view


@pytest.mark.skipif(postgres_url() is None, reason="PostgreSQL's temporary tables")
def test_a_temporary_outbox_does_not_swallow_an_event(db_url: str, clock: Clock) -> None:
    from sqlalchemy.orm import Session

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(
                "CREATE TEMP TABLE idcard_outbox (id bigint, machine text, record_id uuid, "
                "seq int, event text, state text, at timestamptz, acked_at timestamptz)"
            )
            conn.commit()
            with Session(bind=conn) as session:
                view = wf.Workflow(session, clock=clock).submit(form(n=77), actor=clerk())
                session.commit()
            shadow = conn.exec_driver_sql("SELECT count(*) FROM pg_temp.idcard_outbox").scalar()
        assert shadow == 0
        with wf.Workflow(db_url, clock=clock) as flow:
            events = [e for e in flow.pending_events(limit=1000) if e.record_id == view.id]
        assert [(e.event, e.seq) for e in events] == [("submit", 1)]
    finally:
        engine.dispose()
