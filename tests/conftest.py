from __future__ import annotations

from collections.abc import Iterator

import pytest

import workflow as wf
from tests.support import Clock, Databases


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Databases:
    return Databases(tmp_path_factory.mktemp("databases"))


@pytest.fixture
def db_url(databases: Databases) -> str:
    """An empty database migrated to head."""
    return databases.fresh()


@pytest.fixture
def empty_db_url(databases: Databases) -> Iterator[str]:
    """A database with no tables."""
    yield from databases.empty()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def flow(db_url: str, clock: Clock) -> Iterator[wf.Workflow]:
    flow = wf.Workflow(db_url, clock=clock)
    yield flow
    flow.close()
