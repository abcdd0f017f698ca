"""The grants ``idcard-workflow db grants`` prints, run on a real PostgreSQL server.

A database owned by an owner role, migrated by it; the printed script run by it through psql;
then, as the application's role, every command of the library works, and every write the
grants are there to refuse is refused with "permission denied" (SQLSTATE 42501); the auditor's
role reads and nothing else. Skipped without PostgreSQL (``IDCARD_TEST_DATABASE_URL``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import workflow as wf
from tests.support import Clock, citizen_id, clerk, drive, form, postgres_url
from workflow import grants
from workflow.models.base import VERSION_TABLE

pytestmark = pytest.mark.skipif(postgres_url() is None, reason="PostgreSQL's roles and grants")

DENIED = "42501"  # insufficient_privilege


@dataclass(frozen=True)
class Deployment:
    database: str
    owner: str
    app: str
    auditor: str
    script: str

    def url(self, role: str) -> str:
        server = make_url(postgres_url() or "")
        return server.set(username=role, database=self.database).render_as_string(False)


def _psql() -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))
    return str(found[-1]) if found else shutil.which("psql")


def run_script(url: str, script: str) -> None:
    """Run the script as psql would (stopping at the first error); psycopg's simple protocol
    where there is no psql."""
    target = make_url(url)
    psql = _psql()
    if psql is not None:
        query = target.query
        command = [
            psql,
            "--no-psqlrc",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-h",
            str(query.get("host", "localhost")),
            "-p",
            str(query.get("port", "5432")),
            "-U",
            str(target.username),
            "-d",
            str(target.database),
        ]
        done = subprocess.run(command, input=script, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        return
    import psycopg

    with psycopg.connect(target.set(drivername="postgresql").render_as_string(False)) as conn:
        conn.autocommit = True
        conn.execute(script)  # type: ignore[call-overload]


def printed_grants(*args: str) -> str:
    script = Path(sys.executable).with_name("idcard-workflow")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "workflow"]
    done = subprocess.run(
        [*command, "db", "grants", *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    suffix = uuid.uuid4().hex[:8]
    names = Deployment(
        database=f"idcard_grants_{suffix}",
        owner=f"idcard_owner_{suffix}",
        app=f"idcard_app_{suffix}",
        auditor=f"idcard_auditor_{suffix}",
        script="",
    )
    server = sa.create_engine(postgres_url() or "", isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        for role in (names.owner, names.app, names.auditor):
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f"CREATE DATABASE {names.database} OWNER {names.owner}")
    try:
        wf.upgrade(names.url(names.owner))  # the owner migrates, at deploy time
        script = printed_grants(
            "--role", names.app, "--auditor", names.auditor, "--database", names.database
        )
        run_script(names.url(names.owner), script)
        yield Deployment(**{**names.__dict__, "script": script})
    finally:
        with server.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {names.database} WITH (FORCE)")
            for role in (names.app, names.auditor, names.owner):
                conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        server.dispose()


@pytest.fixture
def app_engine(deployment: Deployment) -> Iterator[sa.Engine]:
    engine = sa.create_engine(deployment.url(deployment.app))
    yield engine
    engine.dispose()


def refused(engine: sa.Engine, sql: str) -> None:
    """``sql`` is refused for lack of a privilege, and changes nothing."""
    with pytest.raises(sa.exc.DBAPIError) as info, engine.begin() as conn:
        conn.exec_driver_sql(sql)
    assert getattr(info.value.orig, "sqlstate", None) == DENIED, (sql, str(info.value.orig))


def test_the_script_is_the_one_the_library_writes(deployment: Deployment) -> None:
    assert deployment.script == grants.grants_sql(
        deployment.app, database=deployment.database, auditor=deployment.auditor
    )


def test_the_script_names_every_table_and_sequence_of_the_library(
    deployment: Deployment,
) -> None:
    engine = sa.create_engine(deployment.url(deployment.owner))
    try:
        with engine.connect() as conn:
            tables = conn.exec_driver_sql(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY relname"
            ).scalars()
            sequences = conn.exec_driver_sql(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'S' ORDER BY relname"
            ).scalars()
            assert list(tables) == grants.library_tables()
            assert list(sequences) == grants.library_sequences()
            # What the application's role may do on each table, as the server sees it.
            rows = conn.exec_driver_sql(
                "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                f"WHERE grantee = '{deployment.app}'"
            ).all()
            columns = conn.exec_driver_sql(
                "SELECT table_name, column_name FROM information_schema.column_privileges "
                f"WHERE grantee = '{deployment.app}' AND privilege_type = 'UPDATE'"
            ).all()
    finally:
        engine.dispose()
    table_grants: dict[str, set[str]] = {}
    for table, privilege in rows:
        table_grants.setdefault(table, set()).add(privilege)
    states = {t.name for t in grants.state_tables()}
    assert {VERSION_TABLE, "idcard_allowed_transitions"} <= set(grants.read_only_tables())
    assert table_grants == {
        **{name: {"SELECT"} for name in grants.read_only_tables()},
        **{name: {"SELECT", "INSERT"} for name in states},
        "idcard_transition_log": {"SELECT", "INSERT"},
        "idcard_command_requests": {"SELECT", "INSERT"},
        "idcard_outbox": {"SELECT", "INSERT"},
    }
    updatable: dict[str, set[str]] = {}
    for table, column in columns:
        updatable.setdefault(table, set()).add(column)
    assert updatable == {
        **{t.name: set(grants.moved_columns(t)) for t in grants.state_tables()},
        "idcard_outbox": {"acked_at"},
    }


def test_every_command_works_as_the_application_role(deployment: Deployment) -> None:
    clock = Clock()
    with wf.Workflow(deployment.url(deployment.app), clock=clock) as flow:
        renewal = drive(flow, "collected", n=1)
        rejected = drive(flow, "rejected", n=2)
        extended = flow.extend_deadline(
            drive(flow, "approved", n=3).id, actor=clerk(), days=10, reason="snowed in"
        )
        retried = [flow.transmit(drive(flow, "submitted", n=4).id, actor=clerk(), request_id="r-1")]
        retried.append(flow.transmit(retried[0].id, actor=clerk(), request_id="r-1"))
        assert retried[0] == retried[1]

        # A loss report, withdrawn when the card turns up and is handed back.
        lost = citizen_id(5)
        report = flow.report_loss(lost, actor=clerk(), identity_checked=True)
        card = flow.register_found_card(lost, actor=clerk())
        returned = flow.return_found_card(card.id, actor=clerk(), identity_checked=True)
        assert flow.get_loss_report(report.id).state == "withdrawn"

        # A replacement files a loss report; its collection closes it; the found card is
        # destroyed.
        replacement = flow.submit(form(wf.Kind.REPLACEMENT, n=6), actor=clerk())
        assert flow.is_reported_lost(replacement.citizen_id)
        found = flow.register_found_card(replacement.citizen_id, actor=clerk())
        destroyed = flow.destroy_found_card(found.id, actor=clerk())

        # A batch.
        batch = [flow.submit(form(n=n), actor=clerk()).id for n in range(10, 15)]
        report_many = flow.fire_many(batch, "transmit", actor=clerk())
        assert report_many.succeeded == sorted(batch) or set(report_many.succeeded) == set(batch)

        events = flow.pending_events(limit=1000)
        assert flow.ack(e.id for e in events) == len(events)
        assert flow.pending_events(limit=1000) == []
        assert flow.verify().ok
        assert [r.event for r in flow.history(renewal.id)][-1] == "collect"
        assert rejected.state == "rejected" and extended.state == "approved"
        assert returned.state == "returned" and destroyed.state == "destroyed"


ATTACKS = [
    "UPDATE idcard_outbox SET event = 'forged'",
    "UPDATE idcard_outbox SET state = 'collected', at = now()",
    "UPDATE idcard_transition_log SET actor_id = 'nobody'",
    "UPDATE idcard_applications SET name = 'Someone Else', state = state, version = version",
    "UPDATE idcard_applications SET citizen_id = '11010519491231002X'",
    "UPDATE idcard_applications SET receipt_no = 'PLANTED'",
    "UPDATE idcard_loss_reports SET citizen_id = '11010519491231002X'",
    "UPDATE idcard_found_cards SET held_unit = '110105'",
    "UPDATE idcard_command_requests SET response = '{}'",
    "UPDATE idcard_allowed_transitions SET to_state = 'collected'",
    f"UPDATE {VERSION_TABLE} SET version_num = '0001'",
    "INSERT INTO idcard_allowed_transitions (machine, event, from_state, to_state) "
    "VALUES ('application', 'jump', 'submitted', 'collected')",
    f"INSERT INTO {VERSION_TABLE} VALUES ('9999')",
    "CREATE TEMP TABLE idcard_allowed_transitions (machine text, event text, "
    "from_state text, to_state text)",
    "CREATE TABLE public.idcard_shadow (x int)",
    "CREATE FUNCTION public.idcard_shadow() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "SET session_replication_role = replica",
    *(f"DELETE FROM {table}" for table in grants.library_tables()),
    *(f"TRUNCATE {table}" for table in grants.library_tables()),
    *(f"ALTER TABLE {table} DISABLE TRIGGER ALL" for table in grants.library_tables()),
    *(f"DROP TABLE {table}" for table in grants.library_tables()),
    "DROP FUNCTION idcard_publish() CASCADE",
]


@pytest.mark.parametrize("sql", ATTACKS)
def test_the_application_role_is_refused(
    deployment: Deployment, app_engine: sa.Engine, sql: str
) -> None:
    with wf.Workflow(app_engine) as flow:
        if not flow.verify().records:
            drive(flow, "ready", n=900)  # something for every statement to hit
    refused(app_engine, sql)


def test_the_application_role_may_un_acknowledge_an_event(
    deployment: Deployment, app_engine: sa.Engine
) -> None:
    # By design: a relay acknowledges (and may take back an acknowledgement, which only
    # delivers the event again; receivers ignore duplicates). It changes nothing else.
    with wf.Workflow(app_engine) as flow:
        drive(flow, "transmitted", n=901)
        flow.ack(e.id for e in flow.pending_events(limit=1000))
    with app_engine.begin() as conn:
        again = conn.exec_driver_sql("UPDATE idcard_outbox SET acked_at = NULL").rowcount
    assert again > 0
    with wf.Workflow(app_engine) as flow:
        assert len(flow.pending_events(limit=1000)) == again
        assert flow.verify().ok


def test_the_auditor_reads_and_writes_nothing(deployment: Deployment) -> None:
    with wf.Workflow(deployment.url(deployment.app)) as flow:
        view = drive(flow, "ready", n=902)
    auditor = sa.create_engine(deployment.url(deployment.auditor))
    try:
        with wf.Workflow(auditor) as flow:
            assert flow.verify().ok
            assert flow.history(view.id)[-1].event == "mark_ready"
            assert flow.pending_events(limit=10) is not None
            with pytest.raises(wf.StorageError) as info:
                flow.transmit(view.id, actor=clerk())
            assert "permission denied" in str(info.value.__cause__).lower()
            with pytest.raises(wf.StorageError):
                flow.submit(form(n=903), actor=clerk())
            with pytest.raises(wf.StorageError):
                flow.ack(e.id for e in flow.pending_events(limit=10))
        for sql in (
            "UPDATE idcard_outbox SET acked_at = now()",
            "INSERT INTO idcard_command_requests (request_id) VALUES ('x')",
            "CREATE TEMP TABLE t (x int)",
            *(f"DELETE FROM {table}" for table in grants.library_tables()),
        ):
            refused(auditor, sql)
    finally:
        auditor.dispose()


def test_the_outbox_insert_is_the_publishing_triggers(deployment: Deployment) -> None:
    # The trigger that writes a history row's outbox row runs with the writer's privileges
    # (it is not SECURITY DEFINER): without INSERT on the outbox no command can take effect.
    owner = sa.create_engine(deployment.url(deployment.owner))
    try:
        with owner.begin() as conn:
            conn.exec_driver_sql(f"REVOKE INSERT ON idcard_outbox FROM {deployment.app}")
        with (
            wf.Workflow(deployment.url(deployment.app)) as flow,
            pytest.raises(wf.StorageError) as info,
        ):
            flow.submit(form(n=904), actor=clerk())
        assert "idcard_outbox" in str(info.value.__cause__)
    finally:
        run_script(deployment.url(deployment.owner), deployment.script)
        owner.dispose()


def test_the_cli_verifies_as_the_auditor(deployment: Deployment, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("idcard-workflow")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "workflow"]
    done = subprocess.run(
        [*command, "--db", deployment.url(deployment.auditor), "verify"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "all intact" in done.stdout
