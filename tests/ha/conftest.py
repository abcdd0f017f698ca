"""The failover and read-replica tests' cluster: a primary and a synchronous standby, started
once per session by the tests themselves (``make test-failover``), skipped without the server.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import workflow as wf
from tests.ha.cluster import Cluster, find_bindir


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL's server binaries (initdb, pg_basebackup) are not installed: "
            "apt-get install postgresql, or set IDCARD_PG_BINDIR"
        )
    # In /tmp, not pytest's folder: a unix socket's path must stay short, and the postgres
    # user must be able to reach it when the tests run as root.
    root = Path(tempfile.mkdtemp(prefix="idcard-ha.", dir="/tmp"))
    made: Cluster | None = None
    try:
        made = Cluster.create(root, bindir)
        wf.upgrade(made.primary.url())
        yield made
    finally:
        if made is not None:
            made.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pair(cluster: Cluster) -> Cluster:
    """The cluster with a running primary and a synchronous standby (rebuilt if a test left
    it without one)."""
    cluster.repair()
    return cluster
