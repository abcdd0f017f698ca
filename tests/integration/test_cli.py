"""The ``idcard-workflow`` command line, run as a real program on a real database."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import workflow as wf
from tests.support import drive
from workflow.models.enums import Kind
from workflow.models.tables import Application, TransitionLog

# A number standing on its own: 18 digits inside a hash are no citizen number.
FULL_CITIZEN_NUMBER = re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
DB_VARIABLE = "IDCARD_WORKFLOW_DB"
SCRIPT = Path(sys.executable).with_name("idcard-workflow")
AS_OF = "2026-06-01T08:00:00+08:00"
"""Three months after the test clock's start: every card not yet ready is overdue."""


@dataclass
class Cli:
    """Runs the command line in a scratch directory with a controlled environment."""

    cwd: Path
    secrets: list[str]
    """Strings that must never appear in any output (full citizen and receipt numbers)."""

    def __call__(
        self,
        *args: str,
        db: str | None = None,
        env_db: str | None = None,
        script: bool = False,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the program; ``input`` is what is typed in (stdin is empty otherwise, never
        the terminal the tests run on)."""
        env = dict(os.environ)
        env.pop(DB_VARIABLE, None)
        if env_db is not None:
            env[DB_VARIABLE] = env_db
        program = [str(SCRIPT)] if script else [sys.executable, "-m", "workflow"]
        command = [*program, *(["--db", db] if db else []), *args]
        result = subprocess.run(
            command,
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=120,
            check=False,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        output = result.stdout + result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        assert not FULL_CITIZEN_NUMBER.search(output), output
        assert not [s for s in self.secrets if s in output], output
        return result


@dataclass
class Office:
    """A database with an application in each interesting state."""

    url: str
    flow: wf.Workflow
    collected: wf.ApplicationView
    transmitted: wf.ApplicationView
    rejected: wf.ApplicationView
    approved: wf.ApplicationView


@pytest.fixture
def office(flow: wf.Workflow, db_url: str) -> Office:
    collected = drive(flow, "collected", Kind.RENEWAL, n=1)
    transmitted = drive(flow, "transmitted", Kind.DAMAGED_RENEWAL, n=2)
    rejected = drive(flow, "rejected", Kind.REPLACEMENT, n=3)
    approved = drive(flow, "approved", Kind.REPLACEMENT, n=4)
    return Office(db_url, flow, collected, transmitted, rejected, approved)


@pytest.fixture
def cli(tmp_path: Path, office: Office) -> Cli:
    views = [office.collected, office.transmitted, office.rejected, office.approved]
    return Cli(tmp_path, [v.citizen_id for v in views] + [v.receipt_no for v in views])


@pytest.fixture
def bare_cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path, [])


def tamper(url: str, statement: sa.Executable) -> None:
    """Run ``statement`` as someone with direct access to the database would, past the
    triggers that guard the tables (dropped on SQLite, disabled for the moment on PostgreSQL)."""
    tables = (Application.__tablename__, TransitionLog.__tablename__)  # whatever they're called
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                names = conn.execute(
                    sa.text(
                        "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                        "AND tbl_name IN (:a, :b)"
                    ),
                    {"a": tables[0], "b": tables[1]},
                ).scalars()
                for name in list(names):
                    conn.exec_driver_sql(f'DROP TRIGGER "{name}"')
                conn.execute(statement)
            else:
                for table in tables:
                    conn.exec_driver_sql(f'ALTER TABLE "{table}" DISABLE TRIGGER USER')
                conn.execute(statement)
                for table in tables:
                    conn.exec_driver_sql(f'ALTER TABLE "{table}" ENABLE TRIGGER USER')
    finally:
        engine.dispose()


# -- history ---------------------------------------------------------------------------------


def test_history_json_is_the_library_history(cli: Cli, office: Office) -> None:
    app_id = office.collected.id
    result = cli("history", str(app_id), "--json", db=office.url)

    assert result.returncode == 0, result.stderr
    records = [wf.TransitionRecord.model_validate(r) for r in json.loads(result.stdout)]
    assert records == office.flow.history(app_id)


def test_history_table_shows_every_transition_with_its_actor(cli: Cli, office: Office) -> None:
    result = cli("history", str(office.collected.id), db=office.url)

    assert result.returncode == 0, result.stderr
    for event in ("submit", "transmit", "approve", "produce", "mark_ready", "collect"):
        assert event in result.stdout
    assert "reviewer-1" in result.stdout
    assert "old_card_returned=true" in result.stdout
    assert office.collected.citizen_id[:6] + "********" in result.stdout


# -- verify -------------------------------------------------------------------------------------


def test_verify_passes_a_clean_database(cli: Cli, office: Office) -> None:
    expected = office.flow.verify()
    assert expected.records >= 4
    assert expected.ok

    text = cli("verify", db=office.url)
    assert text.returncode == 0, text.stderr
    summary = f"Checked {expected.records} records and {expected.rows} history rows: all intact."
    assert summary in text.stdout

    result = cli("verify", "--json", db=office.url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected.model_dump(mode="json")
    assert json.loads(result.stdout)["broken"] == []


def test_verify_names_a_tampered_guard_fact(cli: Cli, office: Office) -> None:
    app_id = office.collected.id
    tamper(
        office.url,
        sa.update(TransitionLog)
        .where(TransitionLog.record_id == app_id, TransitionLog.event == "collect")
        .values(details={"receipt_matches": True, "old_card_returned": False}),
    )

    text = cli("verify", db=office.url)
    assert text.returncode == 1, text.stderr
    row = next(line for line in text.stdout.splitlines() if str(app_id) in line)
    assert re.search(r"\b6\s+hash_mismatch\b", row), text.stdout
    assert "1 broken" in text.stdout

    result = cli("verify", "--json", db=office.url)
    assert result.returncode == 1
    (broken,) = json.loads(result.stdout)["broken"]
    assert (broken["record_id"], broken["seq"], broken["problem"]) == (
        str(app_id),
        6,
        "hash_mismatch",
    )
    # The other applications are intact, one by one.
    assert cli("verify", str(office.approved.id), db=office.url).returncode == 0


def test_verify_names_a_state_changed_behind_the_librarys_back(cli: Cli, office: Office) -> None:
    app_id = office.transmitted.id
    tamper(
        office.url,
        sa.update(Application).where(Application.id == app_id).values(state="collected"),
    )

    result = cli("verify", "--json", db=office.url)

    assert result.returncode == 1
    (broken,) = json.loads(result.stdout)["broken"]
    assert (broken["record_id"], broken["seq"], broken["problem"]) == (
        str(app_id),
        None,
        "state_mismatch",
    )
    assert "stored collected, replayed transmitted" in broken["message"]
    text = cli("verify", str(app_id), db=office.url)
    assert text.returncode == 1
    assert str(app_id) in text.stdout
    assert "state_mismatch" in text.stdout


# -- overdue, explain ---------------------------------------------------------------------------


def test_overdue_lists_late_cards_masked_and_without_receipts(cli: Cli, office: Office) -> None:
    as_of = datetime.fromisoformat(AS_OF)
    result = cli("overdue", "--as-of", AS_OF, "--json", db=office.url)

    assert result.returncode == 0, result.stderr
    late = json.loads(result.stdout)
    assert [row["id"] for row in late] == [str(v.id) for v in office.flow.overdue(as_of)]
    assert {row["id"] for row in late} == {str(office.transmitted.id), str(office.approved.id)}
    for row in late:
        assert "receipt_no" not in row
        assert row["citizen_id"].startswith("110105********")

    reviews = cli("overdue", "--reviews", "--as-of", AS_OF, "--json", db=office.url)
    assert [row["id"] for row in json.loads(reviews.stdout)] == [str(office.transmitted.id)]

    table = cli("overdue", "--as-of", AS_OF, "--limit", "1", db=office.url)
    assert table.returncode == 0, table.stderr
    assert office.transmitted.citizen_id[:6] + "********" in table.stdout
    assert "Cards not ready after 60 days: 1" in table.stdout


def test_explain_says_what_each_actor_may_do(cli: Cli, office: Office) -> None:
    app_id = str(office.transmitted.id)
    result = cli(
        "explain", app_id, "--role", "hukou_reviewer", "--unit", "110105", "--json", db=office.url
    )

    assert result.returncode == 0, result.stderr
    explanation = wf.Explanation.model_validate(json.loads(result.stdout))
    assert explanation.possible == ["approve", "reject"]
    assert explanation.state == "transmitted"

    text = cli("explain", app_id, "--role", "acceptance_clerk", "--unit", "440305", db=office.url)
    assert text.returncode == 0, text.stderr
    assert "only the role hukou_reviewer may approve" in text.stdout


# -- the database -------------------------------------------------------------------------------


def test_db_commands_migrate_an_empty_database_and_report_the_revision(
    bare_cli: Cli, empty_db_url: str
) -> None:
    upgraded = bare_cli("db", "upgrade", db=empty_db_url)
    assert upgraded.returncode == 0, upgraded.stderr

    result = bare_cli("db", "current", "--json", db=empty_db_url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "current": wf.head_revision(),
        "head": wf.head_revision(),
        "up_to_date": True,
    }

    wf.downgrade(empty_db_url, "-1")
    behind = bare_cli("verify", db=empty_db_url)
    assert behind.returncode == 2
    assert "schema_out_of_date" in behind.stderr
    assert "idcard-workflow db upgrade" in behind.stderr
    assert (
        json.loads(bare_cli("db", "current", "--json", db=empty_db_url).stdout)["up_to_date"]
        is False
    )


def test_the_environment_variable_names_the_database_and_db_overrides_it(
    cli: Cli, office: Office, tmp_path: Path
) -> None:
    result = cli("verify", "--json", env_db=office.url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["records"] == office.flow.verify().records

    missing = f"sqlite:///{tmp_path / 'nowhere.db'}"
    assert cli("verify", "--json", db=office.url, env_db=missing).returncode == 0
    refused = cli("verify", env_db=missing)
    assert refused.returncode == 2
    assert "nowhere.db does not exist" in refused.stderr
    assert not (tmp_path / "nowhere.db").exists()


def test_the_installed_script_works_on_the_default_database(bare_cli: Cli) -> None:
    assert SCRIPT.is_file(), "run `pip install -e .` to install the idcard-workflow script"
    assert "idcard-workflow db upgrade" in bare_cli("--help", script=True).stdout

    missing = bare_cli("verify", script=True)
    assert missing.returncode == 2
    assert "var/demo.db does not exist" in missing.stderr

    upgraded = bare_cli("db", "upgrade", script=True)
    assert upgraded.returncode == 0, upgraded.stderr
    assert (bare_cli.cwd / "var" / "demo.db").is_file()
    result = bare_cli("verify", "--json", script=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "records": 0,
        "rows": 0,
        "broken": [],
        "keyed": False,
        "checkpoint": None,
    }


def test_demo_fills_the_sqlite_file_it_is_given(bare_cli: Cli, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'office' / 'day.db'}"
    demo = bare_cli("demo", "--applications", "8", "--seed", "3", db=url)

    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert (tmp_path / "office" / "day.db").is_file()
    with wf.Workflow(url) as flow:
        report = flow.verify()
    assert report.ok
    assert report.records >= 8
    result = bare_cli("overdue", "--as-of", "2100-01-01T00:00Z", "--json", db=url)
    assert result.returncode == 0, result.stderr

    elsewhere = bare_cli("demo", db="postgresql+psycopg://clerk:secret@db.invalid/idcards")
    assert elsewhere.returncode == 2
    assert "SQLite file" in elsewhere.stderr
    assert "secret" not in elsewhere.stderr


# -- diagrams -----------------------------------------------------------------------------------


def test_diagram_draws_mermaid_with_an_applications_path(cli: Cli, office: Office) -> None:
    plain = cli("diagram", db=office.url)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith("stateDiagram-v2")
    assert "visited" not in plain.stdout

    path = cli("diagram", "--application", str(office.rejected.id), db=office.url)
    assert path.returncode == 0, path.stderr
    assert "(3) reject" in path.stdout
    assert "class submitted,transmitted,rejected visited" in path.stdout


def test_diagram_writes_markdown_and_svg_files(cli: Cli, office: Office, tmp_path: Path) -> None:
    page = tmp_path / "out" / "machine.md"
    md = cli("diagram", "--format", "md", "-o", str(page), db=office.url)
    assert md.returncode == 0, md.stderr
    assert md.stdout == ""
    assert "```mermaid" in page.read_text(encoding="utf-8")

    picture = tmp_path / "out" / "path.svg"
    drawn = cli(
        "diagram",
        "-f",
        "svg",
        "--application",
        str(office.collected.id),
        "-o",
        str(picture),
        db=office.url,
    )
    assert drawn.returncode == 0, drawn.stderr
    text = picture.read_text(encoding="utf-8")
    assert "<svg" in text
    assert "(6) collect" in text


# -- mistakes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["history", "not-a-uuid"], "uuid"),
        (["history", str(uuid.UUID(int=7))], "not_found"),
        (["verify", str(uuid.UUID(int=7))], "not_found"),
        (["explain", "{app}", "--role", "mayor", "--unit", "440305"], "--role"),
        (["explain", "{app}", "--role", "card_producer", "--unit", "440305"], "unit"),
        (["overdue", "--as-of", "2026-06-01T08:00:00"], "as_of"),
        (["overdue", "--as-of", "next tuesday"], "--as-of"),
        (["overdue", "--limit", "0"], "limit"),
        (["diagram", "--format", "md", "--application", "{app}"], "--application"),
        (["diagram", "--format", "png"], "--format"),
        (["diagram", "--machine", "no_such_machine"], "--machine"),
        (["db", "downgrade", "--yes", "no-such-revision"], "can't locate revision"),
    ],
)
def test_a_usage_error_exits_2_with_a_message_and_no_traceback(
    cli: Cli, office: Office, args: list[str], says: str
) -> None:
    args = [a.replace("{app}", str(office.approved.id)) for a in args]
    result = cli(*args, db=office.url)

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert says in result.stderr.lower()
    assert result.stdout == ""


def test_an_unmigrated_database_is_refused_with_exit_2(bare_cli: Cli, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    (tmp_path / "empty.db").touch()

    result = bare_cli("history", str(uuid.UUID(int=1)), db=url)

    assert result.returncode == 2
    assert "none (the library's tables are not installed)" in result.stderr
    assert "idcard-workflow db upgrade" in result.stderr


def test_an_unreachable_database_is_one_line_without_the_password(bare_cli: Cli) -> None:
    pytest.importorskip("psycopg")
    url = "postgresql+psycopg://clerk:secret@127.0.0.1:1/idcards"
    for command in (["db", "current"], ["db", "upgrade"], ["db", "downgrade", "-y", "base"]):
        result = bare_cli(*command, db=url)
        assert result.returncode == 3, result.stderr  # the operation failed, not the input
        assert result.stderr.count("\n") == 1, result.stderr
        assert "Connection refused" in result.stderr or "connection" in result.stderr.lower()
        assert "secret" not in result.stderr
        assert "postgresql+psycopg://clerk:***@127.0.0.1:1/idcards" in result.stderr
    result = bare_cli("verify", db=url)
    assert result.returncode == 3
    assert "connection" in result.stderr.lower()
    assert "secret" not in result.stderr


def test_time_stamps_in_json_are_aware_utc(cli: Cli, office: Office) -> None:
    result = cli("history", str(office.rejected.id), "--json", db=office.url)
    stamps = [datetime.fromisoformat(r["at"]) for r in json.loads(result.stdout)]
    assert stamps
    assert all(s.utcoffset() == timedelta(0) for s in stamps)


def test_the_command_list_gives_each_summary_as_one_unbroken_sentence(bare_cli: Cli) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "workflow", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = {line.strip(" │").split("  ")[0]: line for line in result.stdout.splitlines()}
    # Each summary spans several lines of its docstring: the list joins them into one.
    assert "with the three processes, the verification result" in lines["report"]
    assert "with --since, that nothing a checkpoint covers" in lines["verify"]
