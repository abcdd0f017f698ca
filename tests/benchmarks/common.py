"""The databases the benchmarks run on, their raw driver connections, and timing helpers.

Three variants: SQLite on a RAM disk (``/dev/shm``), SQLite on disk (under ``var/bench`` of
the checkout, which is on the same disk as the code) and PostgreSQL (the server named by
``IDCARD_TEST_DATABASE_URL``, as ``.ci/with-postgres`` sets it). Every phase gets a fresh,
migrated database: a new SQLite file, or a new PostgreSQL database on the same server.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import workflow as wf

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("sqlite-ram", "sqlite-disk", "postgres")
LABELS = {
    "sqlite-ram": "SQLite, RAM disk",
    "sqlite-disk": "SQLite, disk",
    "postgres": "PostgreSQL",
}
POSTGRES_URL_VARIABLE = "IDCARD_TEST_DATABASE_URL"


def mount_of(path: str | Path) -> dict[str, str]:
    """The mount (device, file system type) that holds ``path``."""
    target = os.path.realpath(path)
    best = {"mount": "/", "device": "?", "fstype": "?"}
    with open("/proc/mounts") as mounts:
        for line in mounts:
            device, mount, fstype = line.split()[:3]
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best["mount"]):
                best = {"mount": mount, "device": device, "fstype": fstype}
    return best


@dataclass
class Database:
    """One fresh, migrated database of a variant."""

    variant: str
    url: str
    path: Path | None = None
    """The SQLite file (None on PostgreSQL)."""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def sqlite(self) -> bool:
        return self.variant != "postgres"

    def engine(self) -> sa.Engine:
        """A library-prepared engine (SQLite: WAL, synchronous=FULL, BEGIN IMMEDIATE)."""
        return wf.create_engine(self.url)

    def workflow(self, **kwargs: Any) -> wf.Workflow:
        return wf.Workflow(self.engine(), **kwargs)

    def connect(self, *, durable: bool = True) -> Any:
        """A raw driver connection (sqlite3 or psycopg 3) in autocommit mode: the caller issues
        BEGIN and COMMIT itself. ``durable=False`` is for generating data only (SQLite:
        synchronous=OFF and a large cache; PostgreSQL: synchronous_commit=off)."""
        if self.sqlite:
            assert self.path is not None
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'OFF'}")
            conn.execute("PRAGMA foreign_keys = ON")
            if not durable:
                conn.execute("PRAGMA cache_size = -1000000")
            return conn
        import psycopg

        conn = psycopg.connect(libpq_url(self.url), autocommit=True)
        if not durable:
            conn.execute("SET synchronous_commit = off")
        return conn

    def publishes_log(self) -> bool:
        """Whether the schema's own trigger writes each log row's outbox row (migration 0005)."""
        conn = self.connect()
        try:
            if self.sqlite:
                query = "SELECT 1 FROM sqlite_master WHERE type='trigger' AND name=?"
                return (
                    conn.execute(query, ("idcard_transition_log_publish",)).fetchone() is not None
                )
            query = "SELECT 1 FROM pg_trigger WHERE tgname = %s"
            return conn.execute(query, ("idcard_transition_log_publish",)).fetchone() is not None
        finally:
            conn.close()


def libpq_url(url: str) -> str:
    """The libpq connection URI of a SQLAlchemy ``postgresql+psycopg://`` URL."""
    parsed = sa.engine.make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


class Databases:
    """Hands out fresh databases of one variant and removes them afterwards."""

    def __init__(self, variant: str, *, keep: bool = False, revision: str = "head") -> None:
        if variant not in VARIANTS:
            raise SystemExit(f"unknown database variant {variant!r}; one of {VARIANTS}")
        self.variant = variant
        self.keep = keep
        self.revision = revision
        """The schema revision the fresh databases are migrated to."""
        self._count = 0
        self.server_url = None
        if variant == "postgres":
            self.server_url = os.environ.get(POSTGRES_URL_VARIABLE)
            if not self.server_url:
                raise SystemExit(
                    f"--db postgres needs {POSTGRES_URL_VARIABLE}; run through .ci/with-postgres"
                )
            self.root = None
        elif variant == "sqlite-ram":
            if not Path("/dev/shm").is_dir():
                raise SystemExit("sqlite-ram needs a RAM disk at /dev/shm")
            self.root = Path(tempfile.mkdtemp(prefix="idcard-bench-", dir="/dev/shm"))
        else:
            base = ROOT / "var" / "bench"
            base.mkdir(parents=True, exist_ok=True)
            self.root = Path(tempfile.mkdtemp(prefix="disk-", dir=base))

    def close(self) -> None:
        if self.root is not None and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def location(self) -> dict[str, str]:
        """Where the data lives: mount, device and file system type."""
        if self.root is not None:
            return {"path": str(self.root), **mount_of(self.root)}
        assert self.server_url is not None
        import psycopg

        with psycopg.connect(libpq_url(self.server_url), autocommit=True) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        data = row[0] if row else "?"
        return {"path": data, **mount_of(data)}

    @contextmanager
    def fresh(self, name: str) -> Iterator[Database]:
        """A new migrated database for one phase; dropped afterwards."""
        self._count += 1
        if self.root is not None:
            path = self.root / f"{self._count:02d}-{name}.db"
            url = f"sqlite:///{path}"
            wf.upgrade(url, self.revision)
            try:
                yield Database(self.variant, url, path)
            finally:
                if not self.keep:
                    for suffix in ("", "-wal", "-shm"):
                        Path(f"{path}{suffix}").unlink(missing_ok=True)
            return
        import psycopg

        assert self.server_url is not None
        dbname = f"bench_{self._count:02d}_{name}_{uuid.uuid4().hex[:6]}"
        server = libpq_url(self.server_url)
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{dbname}"')
        url = sa.engine.make_url(self.server_url).set(database=dbname)
        url_text = url.render_as_string(hide_password=False)
        wf.upgrade(url_text, self.revision)
        try:
            yield Database(self.variant, url_text)
        finally:
            with psycopg.connect(server, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def record_round(
    results: list[dict[str, Any]],
    timings: dict[str, float],
    per_round: int,
    first: str,
    *,
    rounds: int,
    label: str,
    log: Any,
    against: str = "floor",
    cpu: dict[str, float] | None = None,
) -> None:
    """Append one round's library/floor rates and ratio (and, given ``cpu``, each one's CPU
    time per transition in this process, in µs), and log them."""
    results.append(
        {
            "library_tps": per_round / timings["library"],
            "floor_tps": per_round / timings["floor"],
            "ratio": timings["library"] / timings["floor"],
            "first": first,
        }
    )
    if cpu is not None:
        results[-1]["library_cpu_us"] = cpu["library"] / per_round * 1e6
        results[-1]["floor_cpu_us"] = cpu["floor"] / per_round * 1e6
    r = results[-1]
    log(
        f"  round {len(results)}/{rounds}: {label} {r['library_tps']:,.0f}/s, "
        f"{against} {r['floor_tps']:,.0f}/s, ratio {r['ratio']:.2f}"
    )


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, minimum and maximum."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_kib() -> int:
    """The process's resident set size now, in KiB."""
    return _status_kib("VmRSS")


def peak_rss_kib() -> int:
    """The process's peak resident set size so far, in KiB: VmHWM, which (unlike
    getrusage's ru_maxrss) does not inherit the peak of the parent that started it."""
    return _status_kib("VmHWM")
