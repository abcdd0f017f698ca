"""Writers with Session binds queue on SQLite instead of failing with "database is locked".

Each thread is a host request: its own `Session` on one shared engine (the host's plain
`sqlalchemy.create_engine` or `wf.create_engine`), a `Workflow` on that session, a command,
and the host's commit.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import workflow as wf
from tests.support import clerk, form

THREADS = 8
ROUNDS = 6

Engines = Callable[[str], sa.Engine]


@pytest.fixture(params=["host's create_engine", "wf.create_engine"])
def make_engine(request: pytest.FixtureRequest) -> Engines:
    if request.param == "wf.create_engine":
        return wf.create_engine
    return sa.create_engine


def _in_threads(work: Callable[[int], None]) -> list[BaseException]:
    failures: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def run(n: int) -> None:
        start.wait()
        try:
            work(n)
        except BaseException as exc:  # reported below, with its type
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def test_session_writers_on_different_applications_all_succeed(
    db_url: str, make_engine: Engines
) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock")
    engine = make_engine(db_url)

    def work(n: int) -> None:
        for r in range(ROUNDS):
            with Session(engine) as session:
                flow = wf.Workflow(session)
                view = flow.submit(form(wf.Kind.RENEWAL, 1 + n * ROUNDS + r), actor=clerk())
                flow.transmit(view.id, actor=clerk())
                session.commit()

    try:
        failures = _in_threads(work)
        assert failures == [], Counter(f"{type(f).__name__}: {f}" for f in failures)
        with engine.connect() as conn:
            states = conn.exec_driver_sql("SELECT state FROM idcard_applications").scalars()
            assert Counter(states.all()) == {"transmitted": THREADS * ROUNDS}
        with wf.Workflow(engine) as flow:
            assert flow.verify().broken == []
    finally:
        engine.dispose()


def test_session_writers_racing_on_one_application_give_one_winner(
    db_url: str, make_engine: Engines
) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock")
    engine = make_engine(db_url)
    with Session(engine) as session:
        ids = [
            wf.Workflow(session).submit(form(wf.Kind.RENEWAL, 500 + i), actor=clerk()).id
            for i in range(ROUNDS)
        ]
        session.commit()
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def work(n: int) -> None:
        for app_id in ids:
            with Session(engine) as session:
                try:
                    wf.Workflow(session).transmit(app_id, actor=clerk(actor_id=f"clerk-{n}"))
                    session.commit()
                    outcome = "won"
                except (wf.IllegalTransition, wf.ConcurrentUpdate) as lost:
                    session.rollback()
                    outcome = type(lost).__name__
            with lock:
                outcomes[outcome] += 1

    try:
        failures = _in_threads(work)
        assert failures == [], Counter(f"{type(f).__name__}: {f}" for f in failures)
        assert outcomes["won"] == ROUNDS
        assert sum(outcomes.values()) == THREADS * ROUNDS
        with wf.Workflow(engine) as flow:
            for app_id in ids:
                assert [r.seq for r in flow.history(app_id)] == [1, 2]
            assert flow.verify().broken == []
    finally:
        engine.dispose()


def test_a_session_that_read_first_still_queues_for_the_lock(db_url: str) -> None:
    """A host request that reads through the session before the command (the usual order):
    with the driver's own transaction handling the read holds no snapshot, so the command
    still waits for the lock."""
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock")
    engine = sa.create_engine(db_url)

    def work(n: int) -> None:
        with Session(engine) as session:
            session.execute(sa.text("SELECT count(*) FROM idcard_applications")).scalar()
            wf.Workflow(session).submit(form(wf.Kind.RENEWAL, 900 + n), actor=clerk())
            session.commit()

    try:
        assert _in_threads(work) == []
        with engine.connect() as conn:
            count = conn.exec_driver_sql("SELECT count(*) FROM idcard_applications").scalar()
        assert count == THREADS
    finally:
        engine.dispose()


def test_a_rolled_back_session_on_a_host_engine_keeps_nothing(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        with Session(engine) as session:
            view = wf.Workflow(session).submit(form(), actor=clerk())
            session.rollback()
        with engine.connect() as conn:
            for table in ("idcard_applications", "idcard_transition_log", "idcard_outbox"):
                assert conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 0
        with wf.Workflow(engine) as flow, pytest.raises(wf.NotFound):
            flow.get(view.id)
    finally:
        engine.dispose()


def test_a_host_engine_keeps_its_own_settings_after_commands(db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite settings")
    engine = sa.create_engine(db_url)

    def settings() -> tuple[object, ...]:
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            return (
                conn.exec_driver_sql("PRAGMA foreign_keys").scalar(),
                conn.exec_driver_sql("PRAGMA busy_timeout").scalar(),
                conn.exec_driver_sql("PRAGMA synchronous").scalar(),
                raw.isolation_level,
            )

    try:
        before = settings()
        with wf.Workflow(engine) as flow:
            flow.transmit(flow.submit(form(), actor=clerk()).id, actor=clerk())
        with Session(engine) as session:
            wf.Workflow(session).submit(form(n=2), actor=clerk())
            session.commit()
        assert settings() == before
        # The host's own writes still roll back as the driver does them.
        with engine.connect() as conn:
            conn.exec_driver_sql("DELETE FROM idcard_command_requests")
            conn.rollback()
            assert not conn.in_transaction()
    finally:
        engine.dispose()


def test_an_autocommit_engine_keeps_every_command(db_url: str) -> None:
    engine = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        with wf.Workflow(engine) as flow:
            view = flow.submit(form(), actor=clerk())
            flow.transmit(view.id, actor=clerk())
        with wf.Workflow(db_url) as fresh:
            assert fresh.get(view.id).state == "transmitted"
            assert [r.seq for r in fresh.history(view.id)] == [1, 2]
    finally:
        engine.dispose()


def test_a_scoped_session_is_resolved_for_each_command(db_url: str) -> None:
    from sqlalchemy.orm import scoped_session, sessionmaker

    engine = sa.create_engine(db_url)
    scoped = scoped_session(sessionmaker(engine))
    try:
        flow = wf.Workflow(scoped)
        view = flow.submit(form(), actor=clerk())
        scoped.rollback()
        scoped.remove()
        again = flow.submit(form(), actor=clerk())
        scoped.commit()
        scoped.remove()
        with wf.Workflow(db_url) as fresh:
            assert fresh.get(again.id).id == again.id
            with pytest.raises(wf.NotFound):
                fresh.get(view.id)
    finally:
        scoped.remove()
        engine.dispose()
