"""The host project under ``host/``, run as a user would run it: the library's wheel built from
this checkout and installed into a virtual environment of its own, every host script run with
that environment's python from the host project's folder (never the dev venv's editable
install)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[2]
HOST_SOURCE = Path(__file__).resolve().parent / "host"
HOST_HEAD = "8e4b7d2c5a60"
POSTGRES_URL = os.environ.get("IDCARD_TEST_DATABASE_URL") or None
DATABASES = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(not POSTGRES_URL, reason="IDCARD_TEST_DATABASE_URL is not set"),
    ),
]
_SKIP_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", ".*_cache", ".hypothesis", "tests",
    "__pycache__", "*.db", "*.db-wal", "*.db-shm", "var",
)  # fmt: skip


@dataclass
class Wheel:
    path: Path
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def names(self) -> list[str]:
        with zipfile.ZipFile(self.path) as archive:
            return archive.namelist()


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Wheel:
    """The library's wheel, built from a copy of this checkout (so the shared tree gets no
    build/ output), installed with the host's own dependencies into a fresh venv."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=_SKIP_SOURCE)
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), "."],
         cwd=source)  # fmt: skip
    (built,) = dist.glob("*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    _run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", str(built), "flask-sqlalchemy", "psycopg[binary]", "mypy"]
    )  # fmt: skip
    return Wheel(built, venv)


class HostProject:
    """A copy of ``host/`` in a folder of its own, with the wheel's venv."""

    def __init__(self, wheel: Wheel, folder: Path) -> None:
        self.wheel = wheel
        self.folder = folder
        shutil.copytree(HOST_SOURCE, folder, ignore=shutil.ignore_patterns("__pycache__"))

    def env(self, url: str | None = None, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH"}
        }
        env["PATH"] = f"{self.wheel.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        if url is not None:
            env["HOST_DATABASE_URL"] = url
        env.update(extra)
        return env

    def process(
        self, *args: str, url: str | None = None, check: bool = True, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """Run a program of the venv (``python``, ``alembic``, ``mypy``) in the host project."""
        program = str(self.wheel.venv / "bin" / args[0])
        done = subprocess.run(
            [program, *args[1:]],
            cwd=self.folder,
            env=self.env(url, **extra),
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done

    def chain(self, url: str, *commands: str) -> list[Any]:
        """``python scenarios.py URL COMMAND[:ARG] ...``: what each command reported."""
        done = self.process("python", "scenarios.py", url, *commands)
        results: list[Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return results

    def scenario(self, command: str, url: str, *args: str) -> Any:
        """One command of ``scenarios.py``."""
        (result,) = self.chain(url, ":".join([command, *args]))
        return result

    def alembic(self, *args: str, url: str, check: bool = True, **extra: str) -> str:
        done = self.process("alembic", *args, url=url, check=check, **extra)
        return done.stdout + done.stderr


@pytest.fixture(scope="session")
def host(wheel: Wheel, tmp_path_factory: pytest.TempPathFactory) -> HostProject:
    """The host project shared by tests that do not change its files."""
    return HostProject(wheel, tmp_path_factory.mktemp("host") / "counter")


@pytest.fixture
def own_host(wheel: Wheel, tmp_path: Path) -> HostProject:
    """A copy of the host project for a test that writes into it (autogenerate)."""
    return HostProject(wheel, tmp_path / "counter")


_numbers = itertools.count(1)


class Databases:
    """Empty databases: a file in the test's tmp folder, or a PostgreSQL database of its own
    (created on the server of IDCARD_TEST_DATABASE_URL and dropped at the end of the run)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.created: list[str] = []

    def empty(self, kind: str, template: str | None = None) -> str:
        n = next(_numbers)
        if kind == "sqlite":
            path = self.root / f"host{n}.db"
            if template is not None:
                shutil.copyfile(sa.make_url(template).database or "", path)
            return f"sqlite:///{path}"
        assert POSTGRES_URL is not None
        name = f"idcard_embedding_{os.getpid()}_{n}"
        with self._admin() as conn:
            source = f" TEMPLATE {sa.make_url(template).database}" if template else ""
            conn.exec_driver_sql(f"CREATE DATABASE {name}{source}")
        self.created.append(name)
        return sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    @staticmethod
    def _admin() -> Any:
        assert POSTGRES_URL is not None
        engine = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        return engine.connect()

    def drop_all(self) -> None:
        if not self.created:
            return

        def drop(name: str) -> None:
            with self._admin() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

        # At once: each DROP waits for a checkpoint, and concurrent ones share it.
        with ThreadPoolExecutor(max_workers=len(self.created)) as pool:
            list(pool.map(drop, self.created))


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    made = Databases(tmp_path_factory.mktemp("host-databases"))
    yield made
    made.drop_all()


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def empty_url(databases: Databases, database: str) -> str:
    return databases.empty(database)
