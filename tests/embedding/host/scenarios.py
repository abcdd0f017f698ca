"""What the host does with the library, as scripts: ``python scenarios.py URL COMMAND ...``.

Run from the host project with the python of a virtual environment where the library is
installed from its wheel. The last line of output is JSON: for each command, what it saw (row
counts, errors, driver settings). The tests under ``tests/embedding`` decide what is right;
these scripts only report.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, scoped_session, sessionmaker

import models
import workflow as wf

ACCEPTANCE = "440305"
HUKOU = "110105"
OTHER_COUNTY = "310115"
LIBRARY_TABLES = ("idcard_applications", "idcard_transition_log", "idcard_outbox")
HOST_TABLES = ("applications", "transition_log", "outbox")

CLERK = wf.Actor(id="clerk-17", role="acceptance_clerk", unit=ACCEPTANCE)
OTHER_CLERK = wf.Actor(id="clerk-99", role="acceptance_clerk", unit=OTHER_COUNTY)


# -- building blocks ------------------------------------------------------------------------


def citizen_id(n: int) -> str:
    """A valid GB 11643 number, a different one for each ``n`` (ISO 7064 MOD 11-2)."""
    born = date(1950, 1, 1) + timedelta(days=n)
    first17 = f"{HUKOU}{born:%Y%m%d}{n % 1000:03d}"
    total = sum(int(d) * (2 ** (17 - i) % 11) for i, d in enumerate(first17))
    return first17 + "10X98765432"[total % 11]


_numbers = iter(range(1, 100_000))


def form() -> wf.SubmitApplication:
    return wf.SubmitApplication(
        kind="renewal",
        citizen_id=citizen_id(next(_numbers)),
        name="Wang Fang",
        hukou_region=HUKOU,
        acceptance_region=ACCEPTANCE,
        documents={"resident_id_card"},
        fee_paid=20,
    )


def host_row(applicant: str) -> models.Application:
    return models.Application(applicant=applicant, status="new")


class Observer:
    """Counts rows from connections of its own, as another process would see them."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url, poolclass=sa.NullPool)

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in (*LIBRARY_TABLES, "applications")
            }

    def close(self) -> None:
        self.engine.dispose()


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def emit(result: object) -> None:
    print(json.dumps(result, default=str))


# -- the engines a host makes ---------------------------------------------------------------


def plain_engine(url: str, **kwargs: Any) -> sa.Engine:
    return sa.create_engine(url, **kwargs)


def recipe_engine(url: str) -> sa.Engine:
    """SQLAlchemy's documented recipe for pysqlite: the driver's own transaction handling off,
    and an explicit BEGIN emitted by the engine."""
    engine = sa.create_engine(url)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


def sqlite_state(engine: sa.Engine, connections: int = 3) -> list[dict[str, Any]]:
    """PRAGMA foreign_keys, busy_timeout and the sqlite3 isolation_level of ``connections``
    of the engine's connections, checked out at once (so the pool's used ones are among them)."""
    raws = [engine.raw_connection() for _ in range(connections)]
    try:
        states = []
        for raw in raws:
            driver = raw.driver_connection
            assert isinstance(driver, sqlite3.Connection)
            cursor = driver.cursor()
            states.append(
                {
                    "foreign_keys": cursor.execute("PRAGMA foreign_keys").fetchone()[0],
                    "busy_timeout": cursor.execute("PRAGMA busy_timeout").fetchone()[0],
                    "isolation_level": driver.isolation_level,
                    "in_transaction": driver.in_transaction,
                }
            )
            cursor.close()
        return states
    finally:
        for raw in raws:
            raw.close()


# -- the sessions a host makes --------------------------------------------------------------


class Binding:
    """How one kind of host makes its sessions; ``session()`` yields what it hands the library."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.app: Any = None
        self.registry: scoped_session[Session] | None = None
        if kind == "plain":
            self.engine = plain_engine(url)
        elif kind == "wf_engine":
            self.engine = wf.create_engine(url)
        elif kind == "recipe":
            self.engine = recipe_engine(url)
        elif kind == "scoped":
            self.engine = plain_engine(url)
            self.registry = scoped_session(sessionmaker(bind=self.engine))
        elif kind == "flask":
            from flask_app import create_app, db

            self.app = create_app(url)
            self.db = db
            with self.app.app_context():
                self.engine = db.engine
        else:
            raise SystemExit(f"unknown binding {kind}")

    @contextmanager
    def session(self) -> Iterator[Any]:
        if self.kind == "flask":
            with self.app.app_context():
                yield self.db.session
        elif self.registry is not None:
            try:
                yield self.registry
            finally:
                self.registry.remove()
        else:
            with Session(self.engine) as session:
                yield session

    def close(self) -> None:
        if self.kind != "flask":
            self.engine.dispose()


class Boom(Exception):
    """The host's own failure inside its transaction block."""


Scenario = Callable[[Any], dict[str, Any] | None]
SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


@scenario
def autobegin_commit(session: Any) -> dict[str, Any]:
    flow = wf.Workflow(session)
    app = flow.submit(form(), actor=CLERK)
    seen_before_commit = OBSERVER.counts()["idcard_applications"] - BEFORE["idcard_applications"]
    session.commit()
    return {"seen_before_commit": seen_before_commit, "found_after": found(app.id)}


@scenario
def autobegin_rollback(session: Any) -> dict[str, Any]:
    flow = wf.Workflow(session)
    app = flow.submit(form(), actor=CLERK)
    session.rollback()
    return {"found_after": found(app.id)}


@scenario
def begin_block_commit(session: Any) -> dict[str, Any]:
    with session.begin():
        flow = wf.Workflow(session)
        app = flow.submit(form(), actor=CLERK)
    return {"found_after": found(app.id)}


@scenario
def begin_block_raises(session: Any) -> dict[str, Any]:
    ids = []
    try:
        with session.begin():
            flow = wf.Workflow(session)
            ids.append(flow.submit(form(), actor=CLERK).id)
            raise Boom
    except Boom:
        pass
    return {"submitted": len(ids), "found_after": found(ids[0]) if ids else None}


@scenario
def begin_block_after_workflow_made(session: Any) -> dict[str, Any]:
    """The Workflow made before the host's ``with session.begin():`` block (as a host that
    makes it once per session does): making it must not leave a transaction begun."""
    flow = wf.Workflow(session)
    current = session() if isinstance(session, scoped_session) else session  # Flask's, too
    in_transaction = current.in_transaction()
    with session.begin():
        app = flow.submit(form(), actor=CLERK)
    return {"in_transaction_after_init": in_transaction, "found_after": found(app.id)}


@scenario
def host_write_rollback(session: Any) -> dict[str, Any]:
    flow = wf.Workflow(session)
    session.add(host_row("host rollback"))
    app = flow.submit(form(), actor=CLERK)
    session.rollback()
    return {"found_after": found(app.id)}


@scenario
def host_write_commit(session: Any) -> dict[str, Any]:
    flow = wf.Workflow(session)
    session.add(host_row("host commit"))
    app = flow.submit(form(), actor=CLERK)
    session.commit()
    return {"found_after": found(app.id)}


@scenario
def refused_command_host_commits(session: Any) -> dict[str, Any]:
    flow = wf.Workflow(session)
    session.add(host_row("before the refusal"))
    refused = None
    try:
        flow.submit(form(), actor=OTHER_CLERK)
    except wf.PermissionDenied as exc:
        refused = exc.code
    # The host's transaction is still usable: more of its own work, then its commit.
    session.add(host_row("after the refusal"))
    session.execute(sa.select(models.Application.id)).all()
    session.commit()
    return {"refused": refused}


@scenario
def refusals_after_a_command(session: Any) -> dict[str, Any]:
    """A command that succeeded, then refusals inside the same host transaction, one of them
    found by the database (the duplicate submission): only the first command commits."""
    flow = wf.Workflow(session)
    first = form()
    app = flow.submit(first, actor=CLERK)
    refused = []
    try:
        flow.transmit(app.id, actor=OTHER_CLERK)
    except wf.PermissionDenied as exc:
        refused.append(exc.code)
    try:
        flow.submit(first, actor=CLERK)
    except wf.DuplicateApplication as exc:
        refused.append(exc.code)
    session.add(host_row("after the refusals"))
    session.commit()
    with wf.Workflow(URL) as reader:
        state = reader.get(app.id).state
        history = [record.event for record in reader.history(app.id)]
    return {"refused": refused, "state": state, "history": history}


@scenario
def two_commands_rollback(session: Any) -> dict[str, Any]:
    flow = wf.Workflow(session)
    app = flow.submit(form(), actor=CLERK)
    flow.transmit(app.id, actor=CLERK)
    other = flow.submit(form(), actor=CLERK)
    session.rollback()
    return {"found_after": [found(app.id), found(other.id)]}


def found(app_id: Any) -> bool:
    with wf.Workflow(URL) as reader:
        try:
            reader.get(app_id)
        except wf.NotFound:
            return False
        return True


def shared_flow(binding: Binding) -> dict[str, Any]:
    """One Workflow made once on the scoped session (as a Flask app would, at start-up) and used
    by later requests, each with its own session: commit in one, rollback in the next."""
    with binding.session() as session:
        flow = wf.Workflow(session)
        session.commit()
    before = OBSERVER.counts()
    with binding.session() as session:
        committed = flow.submit(form(), actor=CLERK)
        session.commit()
    with binding.session() as session:
        rolled_back = flow.submit(form(), actor=CLERK)
        session.rollback()
    after = OBSERVER.counts()
    return {
        "delta": {k: after[k] - before[k] for k in after},
        "found": [found(committed.id), found(rolled_back.id)],
    }


# -- commands -------------------------------------------------------------------------------

URL = ""
OBSERVER: Observer
BEFORE: dict[str, int] = {}


def transactions(kind: str) -> dict[str, Any]:
    """Every scenario on a fresh session of one binding; the counts each one changed."""
    global BEFORE
    binding = Binding(kind, URL)
    sqlite = binding.engine.dialect.name == "sqlite"
    result: dict[str, Any] = {}
    if sqlite:
        result["engine_before"] = sqlite_state(binding.engine)
    for name, run in SCENARIOS.items():
        BEFORE = OBSERVER.counts()
        outcome: dict[str, Any] = {"error": None}
        try:
            with binding.session() as session:
                outcome.update(run(session) or {})
        except Exception as exc:
            outcome["error"] = describe(exc)
            outcome["traceback"] = traceback.format_exc()
        after = OBSERVER.counts()
        outcome["delta"] = {k: after[k] - BEFORE[k] for k in after}
        result[name] = outcome
    if kind in ("scoped", "flask"):
        try:
            result["shared_flow"] = {"error": None, **shared_flow(binding)}
        except Exception as exc:
            result["shared_flow"] = {"error": describe(exc), "traceback": traceback.format_exc()}
    if sqlite:
        result["engine_after"] = sqlite_state(binding.engine)
    if kind == "recipe":
        result["recipe_after"] = recipe_still_works(binding.engine)
    binding.close()
    return result


def recipe_still_works(engine: sa.Engine) -> dict[str, Any]:
    """The explicit-BEGIN recipe's own promises on the engine after the library used it:
    a rolled-back transaction leaves nothing, a committed one stays, savepoints work."""
    table = models.Application
    outcome: dict[str, Any] = {"error": None}
    try:
        before = OBSERVER.counts()["applications"]
        with engine.connect() as conn:
            conn.begin()
            conn.execute(sa.insert(table).values(applicant="recipe rollback", status="new"))
            conn.rollback()
            with conn.begin():
                conn.execute(sa.insert(table).values(applicant="recipe commit", status="new"))
                nested = conn.begin_nested()
                conn.execute(sa.insert(table).values(applicant="recipe savepoint", status="new"))
                nested.rollback()
        outcome["applications_delta"] = OBSERVER.counts()["applications"] - before
    except Exception as exc:
        outcome["error"] = describe(exc)
        outcome["traceback"] = traceback.format_exc()
    return outcome


def run_commands(flow: wf.Workflow) -> dict[str, Any]:
    app = flow.submit(form(), actor=CLERK)
    app = flow.transmit(app.id, actor=CLERK)
    try:
        flow.transmit(app.id, actor=CLERK)
    except wf.IllegalTransition as exc:
        refused = exc.code
    history = [record.event for record in flow.history(app.id)]
    return {"id": str(app.id), "state": app.state, "history": history, "refused": refused}


def engine_bind() -> dict[str, Any]:
    """A plain host engine handed to the library as an Engine bind (SQLite): the host's own
    connections before and after, and the host's own raw-connection transaction."""
    engine = plain_engine(URL)
    result: dict[str, Any] = {"before": sqlite_state(engine)}
    before = OBSERVER.counts()
    with wf.Workflow(engine) as flow:
        result["commands"] = run_commands(flow)
    after = OBSERVER.counts()
    result["delta"] = {k: after[k] - before[k] for k in after}
    result["after"] = sqlite_state(engine)
    # The host's own transaction on a raw DBAPI connection: the sqlite3 driver begins it
    # implicitly before the INSERT, and rollback() undoes it.
    start = OBSERVER.counts()["applications"]
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("INSERT INTO applications (applicant, status) VALUES ('raw', 'new')")
        cursor.close()
        raw.rollback()
    finally:
        raw.close()
    result["raw_rollback_delta"] = OBSERVER.counts()["applications"] - start
    # And through SQLAlchemy's Connection.
    with engine.connect() as conn:
        conn.execute(sa.insert(models.Application).values(applicant="sa", status="new"))
        conn.rollback()
    result["connection_rollback_delta"] = OBSERVER.counts()["applications"] - start
    engine.dispose()
    return result


def autocommit_engine() -> dict[str, Any]:
    """An engine in AUTOCOMMIT handed to the library: every command's writes are kept."""
    engine = plain_engine(URL, isolation_level="AUTOCOMMIT")
    before = OBSERVER.counts()
    result: dict[str, Any] = {"error": None}
    try:
        with wf.Workflow(engine) as flow:
            result["commands"] = run_commands(flow)
    except Exception as exc:
        result["error"] = describe(exc)
        result["traceback"] = traceback.format_exc()
    after = OBSERVER.counts()
    result["delta"] = {k: after[k] - before[k] for k in after}
    if "commands" in result:
        with wf.Workflow(URL) as reader:
            result["seen"] = reader.get(result["commands"]["id"]).state
    engine.dispose()
    return result


def recipe_engine_bind() -> dict[str, Any]:
    """The explicit-BEGIN recipe engine handed over as an Engine bind (SQLite)."""
    engine = recipe_engine(URL)
    before = OBSERVER.counts()
    result: dict[str, Any] = {"error": None}
    try:
        with wf.Workflow(engine) as flow:
            result["commands"] = run_commands(flow)
    except Exception as exc:
        result["error"] = describe(exc)
        result["traceback"] = traceback.format_exc()
    after = OBSERVER.counts()
    result["delta"] = {k: after[k] - before[k] for k in after}
    result["engine_after"] = sqlite_state(engine)
    result["recipe_after"] = recipe_still_works(engine)
    engine.dispose()
    return result


def seed() -> dict[str, Any]:
    """The host's own data, written with the host's models."""
    engine = plain_engine(URL)
    with Session(engine) as session, session.begin():
        application = host_row("Li Lei")
        session.add(application)
        session.flush()
        session.add(models.TransitionLog(application_id=application.id, note="host note"))
        session.add(
            models.Outbox(
                topic="host.topic", payload="{}", created_at=datetime(2026, 3, 1, tzinfo=UTC)
            )
        )
    engine.dispose()
    return {"seeded": True}


def library_upgrade() -> dict[str, Any]:
    """The host's deploy step for the library: twice (the second run has nothing to do)."""
    result: dict[str, Any] = {"error": None}
    try:
        wf.upgrade(URL)
        wf.upgrade(URL)
        result["current"] = wf.current_revision(URL)
        result["head"] = wf.head_revision()
    except Exception as exc:
        result["error"] = describe(exc)
        result["traceback"] = traceback.format_exc()
    return result


SUBMITTED: list[str] = []


def library_submit() -> dict[str, Any]:
    with wf.Workflow(URL) as flow:
        app = flow.submit(form(), actor=CLERK)
    SUBMITTED.append(str(app.id))
    return {"id": str(app.id)}


def library_get(app_id: str = "") -> dict[str, Any]:
    """The application (default: the one submitted last by this process) and ``verify()``."""
    with wf.Workflow(URL) as flow:
        view = flow.get(uuid.UUID(app_id or SUBMITTED[-1]))
        return {"state": view.state, "verified": flow.verify().ok}


def clashing_upgrade() -> dict[str, Any]:
    """``wf.upgrade`` on a database that already has a table of a name the library's revision
    0004 creates: the failure, and every object before and after it."""
    engine = plain_engine(URL)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE idcard_found_cards (id INTEGER PRIMARY KEY)")
    engine.dispose()
    before = inspect_database()
    result: dict[str, Any] = {"error": None}
    try:
        wf.upgrade(URL)
    except Exception as exc:
        result.update(
            error=describe(exc),
            workflow_error=isinstance(exc, wf.WorkflowError),
            code=getattr(exc, "code", None),
            revision=getattr(exc, "revision", None),
        )
    result.update(before=before, after=inspect_database())
    return result


def inspect_database() -> dict[str, Any]:
    """Every named object in the database, both version tables, and the host's rows."""
    engine = plain_engine(URL)
    objects: dict[str, list[str]] = {}
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("SELECT type, name FROM sqlite_master").all()
            for kind, name in rows:
                objects.setdefault(kind, []).append(name)
        else:
            queries = {
                "class": "SELECT c.relkind::text, c.relname FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = current_schema()",
                "trigger": "SELECT 'trigger', t.tgname FROM pg_trigger t JOIN pg_class c "
                "ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND NOT t.tgisinternal",
                "function": "SELECT 'function', p.proname FROM pg_proc p JOIN pg_namespace n "
                "ON n.oid = p.pronamespace WHERE n.nspname = current_schema()",
                "type": "SELECT 'type', t.typname FROM pg_type t JOIN pg_namespace n "
                "ON n.oid = t.typnamespace WHERE n.nspname = current_schema() "
                "AND t.typtype IN ('e', 'd', 'c') AND t.typrelid = 0",
            }
            kinds = {"r": "table", "i": "index", "S": "sequence", "v": "view", "m": "view"}
            for query in queries.values():
                for kind, name in conn.exec_driver_sql(query).all():
                    objects.setdefault(kinds.get(kind, kind), []).append(name)
        tables = set(sa.inspect(conn).get_table_names())

        def rows_of(table: str) -> list[list[Any]] | None:
            if table not in tables:
                return None
            result = conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1")
            return [list(row) for row in result.all()]

        result = {
            "objects": {kind: sorted(names) for kind, names in objects.items()},
            "alembic_version": rows_of("alembic_version"),
            "idcard_alembic_version": rows_of("idcard_alembic_version"),
            "host_rows": {table: rows_of(table) for table in HOST_TABLES},
        }
    engine.dispose()
    return result


def main(argv: list[str]) -> None:
    """``scenarios.py URL COMMAND[:ARG] ...``: the commands in order, in this one process
    (starting a python for each would make the suite slow); prints the list of their results."""
    global URL, OBSERVER
    URL, *chain = argv
    OBSERVER = Observer(URL)
    commands: dict[str, Callable[..., dict[str, Any]]] = {
        "transactions": transactions,
        "engine_bind": engine_bind,
        "autocommit_engine": autocommit_engine,
        "recipe_engine_bind": recipe_engine_bind,
        "seed": seed,
        "library_upgrade": library_upgrade,
        "library_submit": library_submit,
        "library_get": library_get,
        "inspect": inspect_database,
        "clashing_upgrade": clashing_upgrade,
    }
    results = []
    for item in chain:
        command, _, arg = item.partition(":")
        results.append(commands[command](*([arg] if arg else [])))
    OBSERVER.close()
    emit(results)


if __name__ == "__main__":
    main(sys.argv[1:])
