"""A database made before the idcard_ prefix is renamed in place by `wf.upgrade`.

The database is made by the library as it was released then (its last landed commit before the
prefix, taken from this repository's history), holding a demo day of all three machines, at
revision 0005 with its version row in ``alembic_version``.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import workflow as wf
from tests.support import Databases, postgres_url

BEFORE_THE_PREFIX = "df75188"
"""The last commit whose library used unprefixed names and ``alembic_version``."""
ROOT = Path(__file__).resolve().parents[2]
TABLES = (
    "applications",
    "transition_log",
    "outbox",
    "command_requests",
    "loss_reports",
    "found_cards",
    "allowed_transitions",
)
ORDER = {"transition_log": "id", "outbox": "id", "command_requests": "request_id"}

MAKE_LEGACY_DAY = """
import random, sys
from datetime import UTC, datetime
import workflow as wf
from workflow import demo
url = sys.argv[1]
wf.upgrade(url)
clock = demo.SimulatedClock(datetime(2026, 11, 1, tzinfo=UTC))
with wf.Workflow(url, clock=clock) as flow:
    summary = demo.run_day(flow, applications=40, rng=random.Random(7), clock=clock)
    report = flow.verify()
print(report.records, report.rows, len(report.broken))
"""


@pytest.fixture(scope="module")
def legacy_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The library's source as it was before the prefix, from git."""
    where = tmp_path_factory.mktemp("before-prefix")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", BEFORE_THE_PREFIX],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    return where


@pytest.fixture
def legacy_url(legacy_library: Path, tmp_path: Path, databases: Databases) -> Iterator[str]:
    """A database at revision 0005 holding a demo day, made by the library of then."""
    url = postgres_url() or f"sqlite:///{tmp_path / 'before-prefix.db'}"
    if postgres_url():
        _drop_everything(url)
    made = subprocess.run(
        [sys.executable, "-c", MAKE_LEGACY_DAY, url],
        env={"PYTHONPATH": str(legacy_library), "PATH": "/usr/bin:/bin"},
        cwd=legacy_library,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    records, rows, broken = map(int, made.stdout.split())
    assert records > 40 and rows > records and broken == 0
    yield url
    if postgres_url():
        _drop_everything(url)
        wf.upgrade(url)  # the shared test database, as the other tests expect it


def _drop_everything(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        # As PostgreSQL 15 makes it: owned by the database owner, usable by everyone, so the
        # tests that log in as other roles still find the tables.
        conn.exec_driver_sql("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
        conn.exec_driver_sql("GRANT USAGE ON SCHEMA public TO PUBLIC")
    engine.dispose()


def _snapshot(url: str, prefix: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        taken = {
            table: [
                tuple(row)
                for row in conn.exec_driver_sql(
                    f"SELECT * FROM {prefix}{table} ORDER BY {ORDER.get(table, 'id')}"
                    if table != "allowed_transitions"
                    else f"SELECT * FROM {prefix}{table} ORDER BY machine, event, from_state"
                )
            ]
            for table in TABLES
        }
    engine.dispose()
    return taken


def _names(url: str) -> set[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_autoindex_%'"
            )
        else:
            rows = conn.exec_driver_sql(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() "
                "UNION ALL SELECT conname FROM pg_constraint c JOIN pg_namespace n "
                "ON n.oid = c.connamespace WHERE n.nspname = current_schema() "
                "UNION ALL SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                "UNION ALL SELECT proname FROM pg_proc p JOIN pg_namespace n "
                "ON n.oid = p.pronamespace WHERE n.nspname = current_schema()"
            )
        names = {name for (name,) in rows}
    engine.dispose()
    return names


def test_a_database_from_before_the_prefix_is_renamed_with_its_history_intact(
    legacy_url: str,
) -> None:
    before = _snapshot(legacy_url, "")
    assert wf.current_revision(legacy_url) == "0005"
    with pytest.raises(wf.SchemaOutOfDate) as behind:
        wf.Workflow(legacy_url)
    assert behind.value.current == "0005"

    wf.upgrade(legacy_url)

    assert wf.current_revision(legacy_url) == wf.head_revision()
    after = _snapshot(legacy_url, wf.TABLE_PREFIX)
    # Later revisions may allow more transitions; nothing else differs.
    assert set(before.pop("allowed_transitions")) <= set(after.pop("allowed_transitions"))
    assert after == before
    names = _names(legacy_url)
    # What is left unprefixed is the emptied alembic_version table (and its key), which the
    # library may not own alone; nothing else of the library's.
    assert {n for n in names if not n.startswith(wf.TABLE_PREFIX)} <= {
        "alembic_version",
        "alembic_version_pkc",
    }
    engine = sa.create_engine(legacy_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT * FROM alembic_version").all() == []
        assert conn.exec_driver_sql(f"SELECT * FROM {wf.VERSION_TABLE}").all() == [
            (wf.head_revision(),)
        ]
    engine.dispose()
    with wf.Workflow(legacy_url) as flow:
        report = flow.verify()
        assert report.broken == [] and report.records == len(
            before["applications"] + before["loss_reports"] + before["found_cards"]
        )
        assert report.rows == len(before["transition_log"])
        for row in before["applications"][:5]:
            history = flow.history(_uuid(row[0]))
            assert (
                history[0].event == "submit"
                and history[-1].to_state == flow.get(_uuid(row[0])).state
            )


def test_a_renamed_database_has_the_schema_of_a_fresh_one(
    legacy_url: str, empty_db_url: str
) -> None:
    wf.upgrade(legacy_url)
    if not legacy_url.startswith("sqlite"):
        # One PostgreSQL database serves both fixtures here: the names were checked above.
        return
    wf.upgrade(empty_db_url)

    def ddl(url: str) -> dict[str, list[str]]:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            stored = {
                name: sorted(line.strip().rstrip(",") for line in (sql or "").splitlines())
                for name, sql in conn.exec_driver_sql(
                    "SELECT name, sql FROM sqlite_master WHERE name LIKE 'idcard_%'"
                )
            }
        engine.dispose()
        return stored

    # The same statements up to the order of a table's constraints (SQLite's batch rebuilds
    # list them in reflection order).
    assert ddl(legacy_url) == ddl(empty_db_url)


def test_commands_work_on_a_renamed_database_and_its_triggers_still_refuse(
    legacy_url: str,
) -> None:
    wf.upgrade(legacy_url)
    engine = sa.create_engine(legacy_url)
    with engine.connect() as conn:
        (app_id,) = conn.exec_driver_sql(
            "SELECT id FROM idcard_applications WHERE state = 'submitted'"
        ).first() or pytest.fail("the demo day left no submitted application")
    with pytest.raises(sa.exc.DBAPIError, match="idcard-workflow"), engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE idcard_applications SET state = 'collected', version = version + 1 "
            f"WHERE id = '{app_id}'"
        )
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM idcard_transition_log")
    engine.dispose()


def _uuid(value: object) -> uuid.UUID:
    # SQLite stores the id as 32 hex digits, PostgreSQL as a uuid.
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
