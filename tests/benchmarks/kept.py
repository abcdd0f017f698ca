"""Databases kept between benchmark runs: built once at a size, reused after.

A million applications take minutes to write, so the verify comparison keeps its databases: a
SQLite file in a folder of the caller's choosing, or a database on the PostgreSQL server named
by ``IDCARD_TEST_DATABASE_URL``. Each is built under a temporary name and renamed when it is
complete, so a build that was stopped half-way is never taken for a finished one.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

import workflow as wf

from . import data
from .common import POSTGRES_URL_VARIABLE, Database, libpq_url
from .queries import submitted_at


def kept_database(
    variant: str,
    size: int,
    folder: Path,
    *,
    log: Callable[[str], None] = print,
    name: str = "verify",
) -> Database:
    """The kept database of ``size`` applications in the queries phase's mix (built first if
    there is none)."""
    if variant == "postgres":
        return _kept_postgres(size, name, log)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{size}.db"
    if not path.exists():
        building = folder / f"{name}-{size}.building.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{building}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{building}"
        wf.upgrade(url)
        _build(Database(variant, url, building), size, log)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        os.replace(building, path)
    return Database(variant, f"sqlite:///{path}", path)


def _kept_postgres(size: int, name: str, log: Callable[[str], None]) -> Database:
    import psycopg

    server_url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not server_url:
        raise SystemExit(f"--db postgres needs {POSTGRES_URL_VARIABLE}")
    dbname = f"idcard_{name}_{size}"
    url = sa.engine.make_url(server_url).set(database=dbname).render_as_string(False)
    server = libpq_url(server_url)
    with psycopg.connect(server, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists:
            return Database("postgres", url)
        building = f"{dbname}_building"
        admin.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{building}"')
    building_url = sa.engine.make_url(server_url).set(database=building).render_as_string(False)
    wf.upgrade(building_url)
    db = Database("postgres", building_url)
    _build(db, size, log)
    conn = db.connect()
    conn.execute("VACUUM ANALYZE")
    conn.close()
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{building}" RENAME TO "{dbname}"')
    return Database("postgres", url)


def _build(db: Database, size: int, log: Callable[[str], None]) -> None:
    start = time.perf_counter()
    data.populate(
        db,
        size,
        final_state=data.mixed_state,
        submitted_at=submitted_at,
        batch_size=20_000,
        workers=1,
    )
    log(f"  {size:,} applications written in {time.perf_counter() - start:.0f} s")


def checkpoint_of(db: Database, folder: Path, *, log: Callable[[str], None] = print) -> Path:
    """A checkpoint file of the kept database ``db``, taken once and kept beside it (taken
    again if it is not of this database: a database built again has other record ids)."""
    name = db.path.stem if db.path is not None else sa.engine.make_url(db.url).database
    path = folder / f"{name}.checkpoint.json"
    with wf.Workflow(db.url) as flow:
        if path.exists() and _of_this_database(flow, path):
            return path
        start = time.perf_counter()
        checkpoint = flow.checkpoint()
        log(
            f"  checkpoint of {checkpoint.rows:,} rows taken in {time.perf_counter() - start:.0f} s"
        )
    path.write_text(checkpoint.to_json())
    return path


def _of_this_database(flow: wf.Workflow, path: Path) -> bool:
    from workflow.engine.checkpoint import load

    checkpoint = load(path.read_bytes())
    if not checkpoint.anchors:
        return False
    anchor = checkpoint.anchors[0]
    try:
        rows = flow.history(anchor.record_id)
    except wf.NotFound:
        return False
    return any(r.seq == anchor.seq for r in rows)


def changed_copy(
    db: Database,
    folder: Path,
    *,
    share: float = 0.01,
    log: Callable[[str], None] = print,
) -> Database:
    """A copy of the kept database ``db`` in which ``share`` of the applications moved on
    since (submitted ones transmitted, through the library): what `verify --since` replays.
    Made once and kept."""
    if db.sqlite:
        assert db.path is not None
        path = folder / f"{db.path.stem}-changed.db"
        if not path.exists():
            building = folder / f"{db.path.stem}-changed.building.db"
            shutil.copyfile(db.path, building)
            _move_some(f"sqlite:///{building}", share, log)
            engine = sa.create_engine(f"sqlite:///{building}")
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            engine.dispose()
            os.replace(building, path)
        return Database(db.variant, f"sqlite:///{path}", path)
    import psycopg

    url = sa.engine.make_url(db.url)
    assert url.database is not None
    name = f"{url.database}_changed"
    server = libpq_url(url.set(database="postgres").render_as_string(False))
    with psycopg.connect(server, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            building = f"{name}_building"
            admin.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{building}" TEMPLATE "{url.database}"')
            _move_some(url.set(database=building).render_as_string(False), share, log)
            admin.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
    return Database("postgres", url.set(database=name).render_as_string(False))


def _move_some(url: str, share: float, log: Callable[[str], None]) -> None:
    start = time.perf_counter()
    with wf.Workflow(url) as flow:
        with flow._store.transaction(write=False) as conn:
            total = conn.exec_driver_sql("SELECT count(*) FROM idcard_applications").scalar_one()
            ids = [
                uuid.UUID(str(i))
                for (i,) in conn.exec_driver_sql(
                    "SELECT id FROM idcard_applications WHERE state = 'submitted' ORDER BY id "
                    f"LIMIT {int(total * share)}"
                )
            ]
        clerk = wf.Actor(id=data.CLERK[0], role=data.CLERK[1], unit=data.CLERK[2])
        report = flow.fire_many(ids, "transmit", actor=clerk)
        if report.refused:
            raise RuntimeError(f"{len(report.refused)} applications refused the transmission")
    log(f"  {len(ids):,} applications transmitted in {time.perf_counter() - start:.0f} s")
