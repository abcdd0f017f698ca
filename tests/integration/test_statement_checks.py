"""Statements that change many rows at once meet the same refusals as one row at a time.

On PostgreSQL, since revision 0011, a state table's updates are checked, and the history's
rows published, once per statement over every row it changed (triggers with transition
tables); SQLite checks each row. Either way one bad row refuses the whole statement.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

import workflow as wf
from tests.integration.test_enforcement import key, refused
from tests.support import Clock, clerk, drive, form, postgres_url

on_postgres = pytest.mark.skipif(postgres_url() is None, reason="PostgreSQL only")


@pytest.fixture
def raw(db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


def published(engine: sa.Engine) -> list[tuple[str, int]]:
    """The outbox in its order: (record id, seq)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT record_id, seq FROM idcard_outbox ORDER BY id")).all()
    return [(str(r), int(s)) for r, s in rows]


def test_one_illegal_move_among_many_refuses_the_whole_update(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    legal = [drive(flow, "submitted", n=n) for n in (1, 2, 3)]
    illegal = drive(flow, "approved", n=4)
    ids = ", ".join(f"'{key(v, raw)}'" for v in [*legal, illegal])
    message = refused(
        raw,
        "UPDATE idcard_applications SET state = 'transmitted', version = version + 1 "
        f"WHERE id IN ({ids})",
    )
    assert "allowed transition" in message
    assert "approved -> transmitted" in message or raw.dialect.name == "sqlite"
    # And one move that skips a version among many that don't.
    message = refused(
        raw,
        "UPDATE idcard_applications SET state = 'transmitted', "
        f"version = version + CASE WHEN id = '{key(legal[0], raw)}' THEN 2 ELSE 1 END "
        f"WHERE id IN ({', '.join(repr(str(key(v, raw))) for v in legal)})",
    )
    assert "allowed transition" in message


def test_many_legal_moves_in_one_update_pass(flow: wf.Workflow, raw: sa.Engine) -> None:
    views = [drive(flow, "submitted", n=n) for n in (1, 2, 3)]
    with raw.begin() as conn:
        moved = conn.execute(
            sa.text(
                "UPDATE idcard_applications SET state = 'transmitted', version = version + 1 "
                "WHERE state = 'submitted'"
            )
        ).rowcount
    assert moved == 3
    assert {flow.get(v.id).state for v in views} == {"transmitted"}


def test_rows_added_by_one_insert_are_published_in_their_order(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    views = [drive(flow, "submitted", n=n) for n in (1, 2, 3)]
    before = published(raw)
    with raw.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO idcard_transition_log (machine, record_id, seq, event, "
                "from_state, to_state, actor_id, actor_role, actor_unit, at, details, hash) "
                "SELECT machine, record_id, 2, 'transmit', 'submitted', 'transmitted', "
                "actor_id, actor_role, actor_unit, at, details, hash "
                "FROM idcard_transition_log WHERE seq = 1 ORDER BY id DESC"
            )
        )
    added = published(raw)[len(before) :]
    with raw.connect() as conn:
        in_log = [
            (str(r), int(s))
            for r, s in conn.execute(
                sa.text(
                    "SELECT record_id, seq FROM idcard_transition_log WHERE seq = 2 ORDER BY id"
                )
            )
        ]
    assert added == in_log
    assert [r for r, _ in added] == [str(key(v, raw)) for v in reversed(views)]


def test_one_row_of_an_unknown_machine_refuses_the_whole_insert(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    drive(flow, "submitted")
    ghost = uuid.uuid4().hex if raw.dialect.name == "sqlite" else str(uuid.uuid4())
    message = refused(
        raw,
        "INSERT INTO idcard_transition_log (machine, record_id, seq, event, from_state, "
        "to_state, actor_id, actor_role, actor_unit, at, details, hash) "
        "SELECT machine, record_id, 2, 'transmit', 'submitted', 'transmitted', actor_id, "
        "actor_role, actor_unit, at, details, hash FROM idcard_transition_log "
        "UNION ALL SELECT 'ghost', :ghost, 1, 'haunt', NULL, 'here', 'x', 'x', 'x', "
        "'2026-01-01 00:00:00', '{}', 'h'",
        ghost=ghost,
    )
    assert "known machines only" in message


@on_postgres
def test_merge_can_not_move_a_record_past_its_guard(flow: wf.Workflow, raw: sa.Engine) -> None:
    view = drive(flow, "submitted")
    message = refused(
        raw,
        "MERGE INTO idcard_applications a USING (SELECT CAST(:id AS uuid) AS id) s "
        "ON a.id = s.id WHEN MATCHED THEN UPDATE SET state = 'collected', "
        "version = a.version + 1",
        id=str(view.id),
    )
    assert "submitted -> collected refused" in message


def _statement_level(engine: sa.Engine) -> set[str]:
    """PostgreSQL: the library's triggers that run once per statement."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgtype & 1 = 0 "
            "AND tgname LIKE 'idcard_%%'"
        ).all()
    return {name for (name,) in rows}


def _outbox_is_the_history(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        history = conn.exec_driver_sql(
            "SELECT machine, record_id, seq FROM idcard_transition_log ORDER BY id"
        ).all()
        outbox = conn.exec_driver_sql(
            "SELECT machine, record_id, seq FROM idcard_outbox ORDER BY id"
        ).all()
    assert outbox == history


def _work(url: str, clock: Clock, start: int) -> None:
    with wf.Workflow(url, clock=clock) as flow:
        views = [drive(flow, "submitted", n=n) for n in range(start, start + 4)]
        flow.transmit(views[0].id, actor=clerk())
        report = flow.fire_many([v.id for v in views[1:]], "transmit", actor=clerk())
        assert len(report.succeeded) == 3
        replacement = flow.submit(form(wf.Kind.REPLACEMENT, n=start + 10), actor=clerk())
        assert flow.is_reported_lost(replacement.citizen_id)
        assert flow.verify().ok


def test_revision_0011_goes_down_and_up_on_a_database_with_data(
    empty_db_url: str, clock: Clock
) -> None:
    engine = sa.create_engine(empty_db_url)
    postgres = engine.dialect.name == "postgresql"
    statement_level = {
        "idcard_transition_log_publish",
        "idcard_applications_moves",
        "idcard_loss_reports_moves",
        "idcard_found_cards_moves",
    }
    try:
        wf.upgrade(empty_db_url, "0010")
        wf.upgrade(empty_db_url)
        _work(empty_db_url, clock, 20)
        if postgres:
            assert _statement_level(engine) >= statement_level
        _still_enforced(engine)
        wf.downgrade(empty_db_url, "0010")
        if postgres:
            # Back to the row-level triggers: only TRUNCATE's refusals run per statement.
            assert not _statement_level(engine) & statement_level
        _still_enforced(engine)
        _outbox_is_the_history(engine)
        wf.upgrade(empty_db_url)
        _work(empty_db_url, clock, 40)
        _still_enforced(engine)
        _outbox_is_the_history(engine)
        with wf.Workflow(empty_db_url, clock=clock) as flow:
            report = flow.verify()
            assert report.ok and report.records >= 12
    finally:
        engine.dispose()


def _still_enforced(engine: sa.Engine) -> None:
    """With the rows already there: a legal step is taken and published, an illegal one
    refused (each in a transaction rolled back, so the histories stay the library's)."""
    with engine.connect() as conn:
        with conn.begin() as tx:
            added = conn.exec_driver_sql(
                "INSERT INTO idcard_transition_log (machine, record_id, seq, event, "
                "from_state, to_state, actor_id, actor_role, actor_unit, at, details, hash) "
                "SELECT 'application', id, version + 1, 'approve', 'transmitted', 'approved', "
                "'x', 'hukou_reviewer', hukou_region, submitted_at, '{}', 'h' "
                "FROM idcard_applications WHERE state = 'transmitted'"
            ).rowcount
            assert added >= 1
            count = "SELECT count(*) FROM idcard_outbox WHERE event = 'approve'"
            assert conn.exec_driver_sql(count).scalar() == added
            tx.rollback()
        with pytest.raises(sa.exc.IntegrityError), conn.begin():
            conn.exec_driver_sql(
                "UPDATE idcard_applications SET state = 'collected', version = version + 1"
            )


@on_postgres
def test_temporary_tables_named_like_the_transition_tables_change_nothing(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    """The statement checks read the rows a statement changed by name; a writer's temporary
    tables of the same names (empty, so that nothing would look wrong) are not what they
    read."""
    view = drive(flow, "submitted")
    with raw.connect() as conn:
        for name in ("idcard_moved_from", "idcard_moved_to", "idcard_added_rows"):
            conn.exec_driver_sql(
                f"CREATE TEMP TABLE {name} (id uuid, state text, version int, machine text)"
            )
        conn.commit()
        with pytest.raises(sa.exc.IntegrityError, match="allowed transition"), conn.begin():
            conn.exec_driver_sql(
                "UPDATE idcard_applications SET state = 'collected', version = version + 1 "
                f"WHERE id = '{view.id}'"
            )
        with pytest.raises(sa.exc.IntegrityError, match="known machines only"), conn.begin():
            conn.exec_driver_sql(
                "INSERT INTO idcard_transition_log (machine, record_id, seq, event, "
                "from_state, to_state, actor_id, actor_role, actor_unit, at, details, hash) "
                "VALUES ('ghost', gen_random_uuid(), 1, 'haunt', NULL, 'here', 'x', 'x', 'x', "
                "now(), '{}', 'h')"
            )
    assert flow.get(view.id).state == "submitted"
