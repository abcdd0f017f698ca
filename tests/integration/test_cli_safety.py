"""The command line does not destroy a database by surprise, and says in one line why a
migration or a database failed: run as a real program on real SQLite files.

- ``demo`` (and ``python -m workflow.demo``) replaces only a file it created (marked with
  ``PRAGMA application_id``), unless ``--force``;
- ``db downgrade`` asks first, unless ``--yes``, and refuses when nobody can answer;
- a failed migration or a database that can't be read exits with 3, never with a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.util import CommandError

import workflow as wf
from workflow import cli
from workflow.demo import DEMO_MARKER

DB_VARIABLE = "IDCARD_WORKFLOW_DB"
USAGE, FAILED = 2, 3
CLOSED = object()
"""``stdin=CLOSED``: the program starts with no standard input at all (file descriptor 0
closed), as under some CI runners and daemons."""


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        """The lines of stderr that are error messages (a prompt may precede them)."""
        return [line for line in self.stderr.splitlines() if "idcard-workflow: error:" in line]


def run(
    *args: str,
    cwd: Path,
    db: Path | None = None,
    env_db: Path | None = None,
    stdin: str | object | None = None,
    module: str = "workflow",
) -> Run:
    """Run ``python -m MODULE ARGS`` with ``--db sqlite:///DB`` (or the environment variable
    set to ``ENV_DB``). ``stdin`` is the text typed in, or CLOSED; by default stdin is empty
    (``/dev/null``), never the terminal pytest runs on."""
    env = dict(os.environ)
    env.pop(DB_VARIABLE, None)
    if env_db is not None:
        env[DB_VARIABLE] = f"sqlite:///{env_db}"
    command = [sys.executable, "-m", module]
    if db is not None:
        command += ["--db", f"sqlite:///{db}" if module == "workflow" else str(db)]
    command += list(args)
    options: dict[str, object] = {}
    if stdin is CLOSED:
        options = {"stdin": subprocess.DEVNULL, "preexec_fn": lambda: os.close(0)}
    elif isinstance(stdin, str):
        options = {"input": stdin}
    else:
        options = {"stdin": subprocess.DEVNULL}
    result = subprocess.run(  # type: ignore[call-overload]
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=180,
        check=False,
        **options,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return Run(result.returncode, result.stdout, result.stderr)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def application_id(path: Path) -> int:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (value,) = connection.execute("PRAGMA application_id").fetchone()
    finally:
        connection.close()
    return int(value)


def schema(path: Path) -> set[tuple[str, str]]:
    """The (type, name) of every object in the SQLite file, read without the library."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT type, name FROM sqlite_master").fetchall()
    finally:
        connection.close()
    return {(str(kind), str(name)) for kind, name in rows}


def migrated(path: Path, revision: str = "head") -> Path:
    """A database at ``revision``, made through the library (not by the demo)."""
    url = f"sqlite:///{path}"
    wf.upgrade(url)
    if revision != "head":
        wf.downgrade(url, revision)
    return path


# -- demo ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["workflow", "workflow.demo"])
def test_demo_refuses_a_database_it_did_not_create(tmp_path: Path, module: str) -> None:
    real = migrated(tmp_path / "office.db")
    before = digest(real)
    assert application_id(real) != DEMO_MARKER

    args = ["demo"] if module == "workflow" else []
    result = run(*args, "--applications", "3", cwd=tmp_path, db=real, module=module)

    assert result.returncode == USAGE, result.stdout + result.stderr
    assert str(real) in result.stderr
    assert "--force" in result.stderr
    assert "was not created by the demo" in result.stderr
    assert digest(real) == before
    assert wf.current_revision(f"sqlite:///{real}") == wf.head_revision()


def test_demo_refuses_the_database_the_environment_names(tmp_path: Path) -> None:
    """An auditor's IDCARD_WORKFLOW_DB points at a real database; `demo` must not wipe it."""
    real = migrated(tmp_path / "audited.db")
    before = digest(real)

    result = run("demo", "--applications", "3", cwd=tmp_path, env_db=real)

    assert result.returncode == USAGE
    (line,) = result.error_lines
    assert str(real) in line and "--force" in line and DB_VARIABLE in line
    assert result.stdout == ""
    assert digest(real) == before


def test_demo_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("minutes of the meeting\n" * 200, encoding="utf-8")
    before = digest(notes)

    result = run("demo", "--applications", "3", cwd=tmp_path, db=notes)

    assert result.returncode == USAGE
    assert str(notes) in result.stderr
    assert digest(notes) == before


def test_demo_marks_its_database_and_replaces_it_on_a_rerun(tmp_path: Path) -> None:
    path = tmp_path / "var" / "demo.db"  # missing: created as before, and marked
    first = run("demo", "--applications", "4", "--seed", "1", cwd=tmp_path, db=path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert application_id(path) == DEMO_MARKER
    with wf.Workflow(f"sqlite:///{path}") as flow:
        records = flow.verify().records

    again = run("demo", "--applications", "12", "--seed", "2", cwd=tmp_path, db=path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert application_id(path) == DEMO_MARKER
    fresh = tmp_path / "fresh.db"
    alone = run("demo", "--applications", "12", "--seed", "2", cwd=tmp_path, db=fresh)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    with wf.Workflow(f"sqlite:///{path}") as flow, wf.Workflow(f"sqlite:///{fresh}") as other:
        report, expected = flow.verify(), other.verify()
    assert report.ok
    # The file holds the new run alone, as a fresh file would: the old run's data is gone.
    assert (report.records, report.rows) == (expected.records, expected.rows)
    assert report.records != records

    # python -m workflow.demo, with its default file, replaces it too.
    default = run("--applications", "3", cwd=tmp_path, module="workflow.demo")
    assert default.returncode == 0, default.stdout + default.stderr
    assert application_id(path) == DEMO_MARKER


def test_demo_force_replaces_a_database_it_did_not_create(tmp_path: Path) -> None:
    real = migrated(tmp_path / "office.db")
    empty = tmp_path / "empty.db"
    empty.touch()

    forced = run("demo", "--force", "--applications", "3", cwd=tmp_path, db=real)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert application_id(real) == DEMO_MARKER
    # An empty file holds nothing to lose: it is used without --force.
    plain = run("--applications", "3", cwd=tmp_path, db=empty, module="workflow.demo")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert application_id(empty) == DEMO_MARKER


def test_python_m_workflow_demo_takes_a_sqlite_url_as_well_as_a_path(tmp_path: Path) -> None:
    by_url = run(
        "--db", "sqlite:///office.db", "--applications", "3", cwd=tmp_path, module="workflow.demo"
    )
    assert by_url.returncode == 0, by_url.stdout + by_url.stderr
    assert application_id(tmp_path / "office.db") == DEMO_MARKER
    assert not (tmp_path / "sqlite:").exists()

    by_path = run("--db", "plain.db", "--applications", "3", cwd=tmp_path, module="workflow.demo")
    assert by_path.returncode == 0, by_path.stdout + by_path.stderr
    assert application_id(tmp_path / "plain.db") == DEMO_MARKER


@pytest.mark.parametrize(
    ("db", "says"),
    [
        ("postgresql+psycopg://clerk:secret@db.invalid/idcards", "SQLite file"),
        ("sqlite://", "SQLite file"),
        ("sqlite:office.db", "not a database URL"),
    ],
    ids=["postgresql", "in-memory", "malformed"],
)
def test_python_m_workflow_demo_refuses_a_url_that_is_not_a_sqlite_file(
    tmp_path: Path, db: str, says: str
) -> None:
    result = run("--db", db, "--applications", "3", cwd=tmp_path, module="workflow.demo")

    assert result.returncode == USAGE, result.stdout + result.stderr
    assert says in result.stderr
    assert "secret" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("module", ["workflow", "workflow.demo"])
@pytest.mark.parametrize("applications", ["0", "100001"])
def test_the_demo_bounds_the_number_of_applications(
    tmp_path: Path, module: str, applications: str
) -> None:
    args = ["demo"] if module == "workflow" else []
    result = run(*args, "--applications", applications, cwd=tmp_path, module=module)

    assert result.returncode == USAGE, result.stdout + result.stderr
    assert "--applications" in result.stderr
    assert applications == "0" or "100000" in result.stderr
    assert not (tmp_path / "var").exists()


def test_a_command_run_alone_returns_its_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cli.main` with ``command`` is what ``python -m workflow.demo`` runs: it returns the
    status, usage errors included, and never raises `SystemExit`."""
    assert cli.main(["--applications", "0"], command="demo", prog_name="demo") == USAGE
    assert "--applications" in capsys.readouterr().err
    assert cli.main(["--help"], command="demo", prog_name="python -m workflow.demo") == 0
    assert "python -m workflow.demo [OPTIONS]" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0


# -- db downgrade -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdin", "why"),
    [
        (None, "no confirmation"),  # stdin empty: CI
        (CLOSED, "no terminal"),
        ("n\n", "not confirmed"),
        ("\n", "not confirmed"),  # the default is no
    ],
    ids=["empty-stdin", "closed-stdin", "no", "enter"],
)
def test_downgrade_without_yes_refuses_unless_confirmed(
    tmp_path: Path, stdin: str | object | None, why: str
) -> None:
    path = migrated(tmp_path / "office.db")
    objects = schema(path)

    result = run("db", "downgrade", "base", cwd=tmp_path, db=path, stdin=stdin)

    assert result.returncode == USAGE, result.stdout + result.stderr
    (line,) = result.error_lines
    assert why in line
    assert "--yes" in line
    assert f"sqlite:///{path}" in line and "revision base" in line
    assert result.stdout == ""
    assert wf.current_revision(f"sqlite:///{path}") == wf.head_revision()
    assert schema(path) == objects


def test_downgrade_asks_naming_the_database_and_the_revision(tmp_path: Path) -> None:
    path = migrated(tmp_path / "office.db")
    head = wf.head_revision()

    result = run("db", "downgrade", "base", cwd=tmp_path, db=path, stdin="y\n")

    assert result.returncode == 0, result.stderr
    prompt = result.stderr
    assert f"Downgrade sqlite:///{path} from revision {head} to base?" in prompt
    assert "[y/N]" in prompt
    assert result.error_lines == []
    assert "is at revision none (the library's tables are not installed)" in result.stdout
    assert wf.current_revision(f"sqlite:///{path}") is None


@pytest.mark.parametrize("flag", ["--yes", "-y"])
def test_downgrade_with_yes_does_not_ask(tmp_path: Path, flag: str) -> None:
    path = migrated(tmp_path / "office.db")
    url = f"sqlite:///{path}"
    head = wf.head_revision()
    wf.downgrade(url, "-1")
    previous = wf.current_revision(url)
    wf.upgrade(url)

    result = run("db", "downgrade", flag, "--", "-1", cwd=tmp_path, db=path)

    assert result.returncode == 0, result.stderr
    assert "Downgrade" not in result.stderr
    assert previous is not None and previous != head
    assert wf.current_revision(url) == previous
    assert f"is at revision {previous}" in result.stdout


# -- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["db", "upgrade"], ["db", "current"], ["db", "downgrade", "--yes", "base"], ["verify"]],
    ids=" ".join,
)
def test_a_file_that_is_not_a_database_fails_in_one_line_with_exit_3(
    tmp_path: Path, command: list[str]
) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"not a SQLite file, whatever its name says\n" * 100)
    before = digest(path)

    result = run(*command, cwd=tmp_path, db=path)

    assert result.returncode == FAILED, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("idcard-workflow: error: ")
    assert "file is not a database" in result.stderr
    assert result.stdout == ""
    assert digest(path) == before


def _a_migration_and_what_it_creates(scratch: Path) -> tuple[str, set[tuple[str, str]]]:
    """The latest migration that creates something: the revision before it (``"base"`` for
    none) and the (type, name) of what it creates, found by stepping a database down from the
    latest revision and comparing (no names written down here)."""
    path = migrated(scratch / "probe.db")
    url = f"sqlite:///{path}"
    later = schema(path)
    while wf.current_revision(url) is not None:
        wf.downgrade(url, "-1")
        earlier = schema(path)
        created = {
            (kind, name)
            for kind, name in later - earlier
            if not name.startswith("sqlite_") and kind in {"table", "index", "trigger", "view"}
        }
        if created:
            return wf.current_revision(url) or "base", created
        later = earlier
    raise AssertionError("no migration creates anything this test can stand in the way of")


def test_a_migration_that_fails_is_one_line_naming_the_cause_with_exit_3(
    tmp_path: Path,
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    start, created = _a_migration_and_what_it_creates(scratch)
    kind, name = sorted(created)[0]
    path = migrated(tmp_path / "office.db", start)
    url = f"sqlite:///{path}"
    previous = wf.current_revision(url)
    # Someone created an object by the name the migration needs, straight in the database.
    connection = sqlite3.connect(path)
    try:
        connection.execute("CREATE TABLE stand_in (x INTEGER)")
        statement = {
            "table": f'CREATE TABLE "{name}" (x INTEGER)',
            "view": f'CREATE VIEW "{name}" AS SELECT 1',
            "index": f'CREATE INDEX "{name}" ON stand_in (x)',
            "trigger": f'CREATE TRIGGER "{name}" AFTER INSERT ON stand_in BEGIN SELECT 1; END',
        }[kind]
        connection.execute(statement)
        connection.commit()
    finally:
        connection.close()

    result = run("db", "upgrade", cwd=tmp_path, db=path)

    assert result.returncode == FAILED, result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"idcard-workflow: error: sqlite:///{path}: ")
    assert name in line, line
    assert "already" in line, line
    assert result.stdout == ""
    assert wf.current_revision(url) == previous

    status = run("db", "current", "--json", cwd=tmp_path, db=path)
    assert status.returncode == 0, status.stderr
    assert f'"current": {json.dumps(previous)}' in status.stdout


def test_an_unknown_revision_is_a_usage_error_and_a_missing_file_too(tmp_path: Path) -> None:
    path = migrated(tmp_path / "office.db")
    unknown = run("db", "upgrade", "no-such-revision", cwd=tmp_path, db=path)
    assert unknown.returncode == USAGE
    assert "no-such-revision" in unknown.stderr

    missing = tmp_path / "nowhere.db"
    for command in (["db", "current"], ["db", "downgrade", "--yes", "base"]):
        result = run(*command, cwd=tmp_path, db=missing)
        assert result.returncode == USAGE, result.stderr
        assert "nowhere.db" in result.stderr
        assert not missing.exists()


# -- the library's errors, as the migrations raise them -------------------------------------------


def _raising(exc: Exception) -> object:
    def migrate(*_args: object, **_kwargs: object) -> None:
        raise exc

    return migrate


def _migration_error(cause: BaseException | None) -> wf.MigrationError:
    error = wf.MigrationError("0005", "(sqlite3.OperationalError) table t already exists\n[SQL: x]")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("command", "error", "code", "says"),
    [
        (["db", "upgrade"], _migration_error(None), FAILED, "revision 0005 failed: "),
        (["db", "downgrade", "-y", "base"], _migration_error(None), FAILED, "[migration_failed]"),
        (
            ["db", "upgrade", "nope"],
            _migration_error(CommandError("Can't locate revision identified by 'nope'")),
            USAGE,
            "revision: Can't locate revision",
        ),
        (["db", "current"], wf.NoDatabase("/nowhere.db"), USAGE, "[no_database]"),
        (["db", "upgrade"], wf.StorageError("the database failed"), FAILED, "[storage_error]"),
    ],
    ids=["upgrade", "downgrade", "unknown-revision", "no-database", "storage"],
)
def test_the_librarys_migration_errors_are_one_line_with_their_exit_code(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    error: Exception,
    code: int,
    says: str,
) -> None:
    """`wf.upgrade`, `wf.downgrade` and `wf.current_revision` raise `wf.MigrationError` (or
    `wf.NoDatabase`): the command line reports them in one line, in process."""
    path = migrated(tmp_path / "office.db")
    for name in ("upgrade", "downgrade") if command[1] != "current" else ("current_revision",):
        monkeypatch.setattr(wf, name, _raising(error))

    status = cli.main(["--db", f"sqlite:///{path}", *command])

    out, err = capsys.readouterr()
    assert status == code, err
    assert err.count("\n") == 1, err
    assert err.startswith("idcard-workflow: error: ")
    assert says in err
    assert "Traceback" not in err and "[SQL" not in err
    assert out == ""
