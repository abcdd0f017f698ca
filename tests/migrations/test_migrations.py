"""The shipped migrations: one head, up from empty, equal to the models, down and up again."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import workflow as wf
from workflow.engine.migrate import alembic_config

ROOT = Path(__file__).resolve().parents[2]


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    names = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    return names


def schema_differences(url: str) -> list[object]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": wf.VERSION_TABLE}
        )
        diff = compare_metadata(context, wf.Base.metadata)
    engine.dispose()
    return list(diff)


def test_there_is_a_single_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert heads == [wf.head_revision()]


def test_upgrade_from_empty_builds_the_tables(empty_db_url: str) -> None:
    assert wf.current_revision(empty_db_url) is None
    wf.upgrade(empty_db_url)
    assert {"idcard_applications", "idcard_transition_log"} <= tables(empty_db_url)
    assert wf.current_revision(empty_db_url) == wf.head_revision()


def test_the_migrated_schema_equals_the_models(empty_db_url: str) -> None:
    wf.upgrade(empty_db_url)
    assert schema_differences(empty_db_url) == []


def test_downgrade_to_base_removes_everything_and_upgrade_restores_it(empty_db_url: str) -> None:
    wf.upgrade(empty_db_url)
    wf.downgrade(empty_db_url, "base")
    assert tables(empty_db_url) <= {"idcard_alembic_version"}
    assert wf.current_revision(empty_db_url) is None
    wf.upgrade(empty_db_url)
    assert schema_differences(empty_db_url) == []


def test_each_revision_goes_down_and_up_again(empty_db_url: str) -> None:
    script = ScriptDirectory.from_config(alembic_config())
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    for revision in revisions:
        wf.upgrade(empty_db_url, revision)
        assert wf.current_revision(empty_db_url) == revision
    for revision in reversed(revisions):
        wf.downgrade(empty_db_url, f"{revision}-1" if revision != revisions[0] else "base")
    assert wf.current_revision(empty_db_url) is None


def test_a_hosts_alembic_can_pass_a_connection_an_engine_or_a_url(empty_db_url: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(files("workflow.migrations")))
    engine = wf.create_engine(empty_db_url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    assert wf.current_revision(empty_db_url) == wf.head_revision()
    config.attributes["connection"] = engine
    command.downgrade(config, "base")
    assert wf.current_revision(empty_db_url) is None
    engine.dispose()
    by_url = Config()
    by_url.set_main_option("script_location", str(files("workflow.migrations")))
    by_url.set_main_option("sqlalchemy.url", empty_db_url)
    command.upgrade(by_url, "head")
    assert wf.current_revision(empty_db_url) == wf.head_revision()


@pytest.mark.slow
def test_the_wheel_ships_the_migrations(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("idcard_workflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"workflow"}
    assert "workflow/migrations/env.py" in names
    assert "workflow/migrations/script.py.mako" in names
    assert any(n.startswith("workflow/migrations/versions/0006_") for n in names)
    assert "workflow/models/tables.py" in names and "workflow/py.typed" in names


def test_the_migrated_indexes_and_checks_are_the_models_word_for_word(empty_db_url: str) -> None:
    # Alembic's comparison skips CHECK constraints and partial-index conditions; compare the DDL.
    if not empty_db_url.startswith("sqlite"):
        pytest.skip("reads SQLite's stored DDL")
    wf.upgrade(empty_db_url)
    engine = sa.create_engine(empty_db_url)
    with engine.connect() as conn:
        stored = {
            name: " ".join((sql or "").split())
            for name, sql in conn.execute(sa.text("SELECT name, sql FROM sqlite_master"))
        }
    dialect = engine.dialect
    for table in wf.Base.metadata.tables.values():
        for index in table.indexes:
            expected = " ".join(str(sa.schema.CreateIndex(index).compile(dialect=dialect)).split())
            assert stored[index.name] == expected
        for check in (c for c in table.constraints if isinstance(c, sa.CheckConstraint)):
            assert f"CONSTRAINT {check.name} CHECK ({check.sqltext})" in stored[table.name]
    engine.dispose()


def test_upgrading_a_database_with_history_chains_the_rows_already_stored(
    empty_db_url: str,
) -> None:
    from tests.support import drive

    wf.upgrade(empty_db_url)
    with wf.Workflow(empty_db_url) as flow:
        views = [drive(flow, state, n=n) for n, state in enumerate(("collected", "rejected"), 1)]
        before = [flow.history(v.id) for v in views]
    wf.downgrade(empty_db_url, "0001")
    wf.upgrade(empty_db_url)
    with wf.Workflow(empty_db_url) as flow:
        assert flow.verify().ok
        assert [flow.history(v.id) for v in views] == before


@pytest.fixture
def host_versions(empty_db_url: str) -> Iterator[str]:
    """The empty database, whose host table alembic_version is dropped afterwards."""
    yield empty_db_url
    engine = sa.create_engine(empty_db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    engine.dispose()


def _host_version_table(url: str, *versions: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS alembic_version "
            "(version_num VARCHAR(32) NOT NULL PRIMARY KEY)"
        )
        for version in versions:
            conn.exec_driver_sql(f"INSERT INTO alembic_version VALUES ('{version}')")
    engine.dispose()


def _host_versions(url: str) -> list[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = [v for (v,) in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]
    engine.dispose()
    return rows


@pytest.mark.parametrize("host_revision", ["0001", "0003", "0005"])
def test_a_host_whose_revisions_are_numbered_like_ours_installs_the_library(
    host_versions: str, host_revision: str
) -> None:
    empty_db_url = host_versions
    # The host's own Alembic numbers its revisions 0001, 0002, ...: its row is not ours.
    _host_version_table(empty_db_url, host_revision)
    assert wf.current_revision(empty_db_url) is None
    wf.upgrade(empty_db_url)
    assert wf.current_revision(empty_db_url) == wf.head_revision()
    assert _host_versions(empty_db_url) == [host_revision]
    wf.upgrade(empty_db_url)  # and the next deploy leaves it alone too
    assert _host_versions(empty_db_url) == [host_revision]


def test_a_host_row_stamped_after_the_library_is_never_taken(host_versions: str) -> None:
    empty_db_url = host_versions
    wf.upgrade(empty_db_url)
    _host_version_table(empty_db_url, "0002")
    wf.upgrade(empty_db_url)
    assert _host_versions(empty_db_url) == ["0002"]
    assert wf.current_revision(empty_db_url) == wf.head_revision()


def test_a_host_table_that_starts_with_the_prefix_is_the_hosts() -> None:
    assert not wf.include_name("idcard_applications", "table", {})
    assert not wf.include_name(wf.VERSION_TABLE, "table", {})
    assert wf.include_name("idcard_scans", "table", {})
    assert wf.include_name("applications", "table", {})
    scans = sa.Table("idcard_scans", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    assert wf.include_object(scans, "idcard_scans", "table", False, None)
    ours = wf.Base.metadata.tables["idcard_outbox"]
    assert not wf.include_object(ours, ours.name, "table", False, None)
    assert not wf.include_object(ours.c.acked_at, "acked_at", "column", False, None)
