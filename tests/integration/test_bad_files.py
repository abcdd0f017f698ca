"""A SQLite URL naming something that is not a usable database: every way in says so in one
line naming the file, as a `WorkflowError` from the library and with exit status 2 (a wrong
path) or 3 (a file that can't be used) from the command line, never a traceback or status 1.

The files: a text file, a PNG, an empty file, a directory, another program's SQLite database,
one opened read-only (``mode=ro``), and one on a read-only folder (a read-only bind mount when
the tests run as root, where permissions do not stop writes; ``chmod`` otherwise).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import workflow as wf
from tests.support import clerk, form
from workflow.demo import DEMO_MARKER

USAGE, FAILED = 2, 3
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, db: str, cwd: Path) -> Run:
    """The installed console script, run as a user would, on the database URL ``db``."""
    script = Path(sys.executable).with_name("idcard-workflow")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "workflow"]
    env = {k: v for k, v in os.environ.items() if k != "IDCARD_WORKFLOW_DB"}
    result = subprocess.run(
        [*command, "--db", db, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=180,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return Run(result.returncode, result.stdout, result.stderr)


def one_line_naming(run: Run, path: Path, code: int) -> str:
    assert run.returncode == code, (run.returncode, run.stderr)
    (line,) = run.stderr.splitlines()
    assert line.startswith("idcard-workflow: error: "), line
    assert path.name in line, line
    return line


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"


def database(path: Path, *, revision: str = "head", demo: bool = False) -> Path:
    """A library database at ``revision`` (marked as the demo's when ``demo``)."""
    if demo:
        connection = sqlite3.connect(path)
        connection.execute(f"PRAGMA application_id = {DEMO_MARKER}")
        connection.commit()
        connection.close()
    wf.upgrade(f"sqlite:///{path}", revision)
    return path


# -- files that are not a database of the library's -------------------------------------------


@pytest.mark.parametrize(
    "content", [b"minutes of the meeting\n" * 200, PNG], ids=["text file", "png"]
)
def test_a_file_that_is_not_a_sqlite_database(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "office.db"
    path.write_bytes(content)
    url = f"sqlite:///{path}"

    for attempt in (lambda: wf.Workflow(url), lambda: wf.current_revision(url)):
        with pytest.raises(wf.StorageError) as info:
            attempt()
        assert str(path) in str(info.value) and "not a SQLite database" in str(info.value)
    with pytest.raises(wf.MigrationError) as failed:
        wf.upgrade(url)
    assert str(path) in str(failed.value) and "not a SQLite database" in str(failed.value)

    for command in (["verify"], ["db", "upgrade"], ["db", "current"]):
        line = one_line_naming(cli(*command, db=url, cwd=tmp_path), path, FAILED)
        assert "not a SQLite database" in line, line
    demo = cli("demo", "--applications", "3", db=url, cwd=tmp_path)
    assert "was not created by the demo" in one_line_naming(demo, path, USAGE)
    assert path.read_bytes() == content


def test_an_empty_file_is_a_database_without_the_tables(tmp_path: Path) -> None:
    path = tmp_path / "office.db"
    path.touch()
    url = f"sqlite:///{path}"

    with pytest.raises(wf.SchemaOutOfDate) as info:
        wf.Workflow(url)
    assert info.value.current is None
    assert wf.current_revision(url) is None
    line = one_line_naming(cli("verify", db=url, cwd=tmp_path), path, USAGE)
    assert "db upgrade" in line
    assert cli("db", "current", db=url, cwd=tmp_path).returncode == 0
    assert wf.current_revision(url) is None  # reading it created no table


def test_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "office.db"
    path.mkdir()
    url = f"sqlite:///{path}"

    for attempt in (
        lambda: wf.Workflow(url),
        lambda: wf.current_revision(url),
        lambda: wf.upgrade(url),
    ):
        with pytest.raises(wf.ConfigurationError) as info:
            attempt()
        assert str(path) in str(info.value) and "directory" in str(info.value)

    for command in (["verify"], ["db", "upgrade"], ["db", "current"], ["demo"]):
        line = one_line_naming(cli(*command, db=url, cwd=tmp_path), path, USAGE)
        assert "directory" in line or "not a file" in line, line
    assert list(path.iterdir()) == []


def test_another_programs_sqlite_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE notes (body TEXT)")
    connection.execute("INSERT INTO notes VALUES ('call the printer')")
    connection.commit()
    connection.close()
    url = f"sqlite:///{path}"

    with pytest.raises(wf.SchemaOutOfDate) as info:
        wf.Workflow(url)
    assert info.value.current is None
    assert wf.current_revision(url) is None
    assert "db upgrade" in one_line_naming(cli("verify", db=url, cwd=tmp_path), path, USAGE)
    before = digest(path)
    demo = cli("demo", "--applications", "3", db=url, cwd=tmp_path)
    assert "was not created by the demo" in one_line_naming(demo, path, USAGE)
    assert digest(path) == before
    # The library's tables go in beside the other program's, which stay as they were.
    assert cli("db", "upgrade", db=url, cwd=tmp_path).returncode == 0
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT body FROM notes").fetchall() == [("call the printer",)]
    connection.close()


# -- read-only ----------------------------------------------------------------------------------


def test_a_database_opened_read_only_reads_and_refuses_writes_naming_the_file(
    tmp_path: Path,
) -> None:
    path = database(tmp_path / "office.db")
    behind = database(tmp_path / "behind.db", revision="0007")
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    behind_url = f"sqlite:///file:{behind}?mode=ro&uri=true"

    with wf.Workflow(url) as flow:  # an auditor's read-only look
        assert flow.verify().ok
        with pytest.raises(wf.StorageError) as info:
            flow.submit(form(), actor=clerk())
    assert str(path) in str(info.value) and "read-only" in str(info.value)
    assert wf.current_revision(url) == wf.head_revision()
    with pytest.raises(wf.MigrationError) as failed:
        wf.upgrade(behind_url)
    assert str(behind) in str(failed.value) and "read-only" in str(failed.value)

    assert cli("verify", db=url, cwd=tmp_path).returncode == 0
    assert cli("db", "current", db=url, cwd=tmp_path).returncode == 0
    line = one_line_naming(cli("db", "upgrade", db=behind_url, cwd=tmp_path), behind, FAILED)
    assert "read-only" in line
    assert cli("demo", db=url, cwd=tmp_path).returncode == USAGE  # not a plain file URL
    assert wf.current_revision(f"sqlite:///{behind}") == "0007"


@contextmanager
def read_only_folder(folder: Path) -> Iterator[Path]:
    """``folder`` as a read-only place: a read-only bind mount of it when running as root
    (permissions don't stop root), ``chmod`` otherwise."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in folder.iterdir()}
        for p in modes:
            p.chmod(0o444)
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
            for p, mode in modes.items():
                p.chmod(mode)
        return
    mount = folder.with_name(folder.name + "-ro")
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("running as root, where chmod does not stop writes, and no mount(8)")
    made = subprocess.run(["mount", "--bind", str(folder), str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(
            "running as root, where chmod does not stop writes, and a read-only bind mount "
            f"can't be made here: {made.stderr.decode(errors='replace').strip()}"
        )
    try:
        ro = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(mount)], capture_output=True, check=False
        )
        if ro.returncode != 0:
            pytest.skip(f"the bind mount can't be made read-only: {ro.stderr!r}")
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_database_on_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "office"
    folder.mkdir()
    database(folder / "office.db", demo=True)
    with read_only_folder(folder) as place:
        path = place / "office.db"
        url = f"sqlite:///{path}"
        before = digest(path)

        for attempt in (lambda: wf.Workflow(url), lambda: wf.current_revision(url)):
            with pytest.raises(wf.StorageError) as info:
                attempt()
            assert str(path) in str(info.value) and "read-only" in str(info.value)
        with pytest.raises(wf.MigrationError) as failed:
            wf.upgrade(url)
        assert str(path) in str(failed.value) and "read-only" in str(failed.value)

        for command in (["verify"], ["db", "upgrade"], ["db", "current"]):
            line = one_line_naming(cli(*command, db=url, cwd=tmp_path), path, FAILED)
            assert "read-only" in line, line
        # The demo may replace its own database, but not there.
        demo = cli("demo", "--applications", "3", db=url, cwd=tmp_path)
        one_line_naming(demo, path, FAILED)
        new = place / "new.db"
        one_line_naming(cli("db", "upgrade", db=f"sqlite:///{new}", cwd=tmp_path), new, FAILED)
        assert digest(path) == before and not new.exists()
