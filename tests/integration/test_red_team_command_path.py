"""Red team for the command path that sends its statements straight to the driver, and for
revision 0011's statement-level checks: what hosts configure and hostile writers do.

Each scenario runs on the direct path (nothing listens to the engine) and through SQLAlchemy
(a listener that does nothing), and must come out the same: the same `WorkflowError`, the
same rows. An attack the library withstands is a regression test; one it does not is
``xfail(strict=True)`` with the hole in its reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

import workflow as wf
from tests.integration.test_red_team import app_engine
from tests.support import Clock, clerk, form, postgres_url, reviewer
from workflow.engine import store

__all__ = ["app_engine"]  # the application role's engine, a fixture of the red team's

on_postgres = pytest.mark.skipif(postgres_url() is None, reason="PostgreSQL only")

PATHS = ["direct", "listened"]


def _quiet(*args: Any, **kwargs: Any) -> None:
    return None


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine(db_url: str, path: str) -> Iterator[sa.Engine]:
    """The library's engine, with nothing listening (the driver is used directly) or with a
    listener that does nothing (every statement goes through SQLAlchemy)."""
    engine = wf.create_engine(db_url)
    if path == "listened":
        event.listen(engine, "before_cursor_execute", _quiet)
    with engine.connect() as conn:
        assert (store.direct(conn) is not None) is (path == "direct")
    yield engine
    engine.dispose()


def _failure(run: Any) -> tuple[str, str]:
    """The class and first line of what ``run()`` raised."""
    with pytest.raises(Exception) as info:
        run()
    return type(info.value).__name__, str(info.value).splitlines()[0]


# == 1. What the driver can't read ==============================================================


@on_postgres
def test_a_value_the_driver_can_not_read_is_a_storage_error_on_both_paths(
    app_engine: sa.Engine, engine: sa.Engine, clock: Clock
) -> None:
    """The application role may set ``due_at`` in a legal move, to a time PostgreSQL keeps
    and Python can't (``infinity``, a year past 9999). The next command reads the record:
    psycopg fails while reading the row, after the statement ran. Through SQLAlchemy that
    is a `StorageError`; on the direct path it must be too, never psycopg's own error."""
    with wf.Workflow(engine, clock=clock) as flow:
        views = [flow.submit(form(n=n), actor=clerk()) for n in (1, 2)]
        with app_engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE idcard_applications SET state = 'transmitted', "
                    "version = version + 1, due_at = 'infinity' WHERE id = ANY(:ids)"
                ),
                {"ids": [v.id for v in views]},
            )
        one = _failure(lambda: flow.approve(views[0].id, actor=reviewer()))
        many = _failure(lambda: flow.fire_many([views[1].id], "approve", actor=reviewer()))
        assert one == many == (
            "StorageError",
            "database error: DataError: timestamp too large (after year 10K): 'infinity'",
        )
        # Nothing moved, and the engine's connections still work.
        with engine.connect() as conn:
            states = conn.execute(
                sa.text("SELECT state, version FROM idcard_applications ORDER BY id")
            ).all()
        assert [tuple(s) for s in states] == [("transmitted", 2)] * 2
        other = flow.submit(form(n=3), actor=clerk())
        assert flow.transmit(other.id, actor=clerk()).version == 2
