"""The host's Alembic history and the library's on one database, in either order."""

from __future__ import annotations

from typing import Any

import pytest

from tests.embedding.conftest import HOST_HEAD, Databases, HostProject


def names(snapshot: dict[str, Any]) -> set[tuple[str, str]]:
    return {(kind, name) for kind, found in snapshot["objects"].items() for name in found}


def not_the_librarys(objects: set[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted(
        (kind, name)
        for kind, name in objects
        if not name.startswith("idcard_") and not name.startswith("sqlite_autoindex_idcard_")
    )


def assert_no_difference(host: HostProject, url: str) -> None:
    """The host's ``alembic check`` passes and autogenerate writes an empty revision."""
    out = host.alembic("check", url=url, check=False)
    assert "No new upgrade operations detected" in out, out
    host.alembic("revision", "--autogenerate", "-m", "probe", "--rev-id", "probe01", url=url)
    (probe,) = (host.folder / "migrations" / "versions").glob("probe01_*.py")
    text = probe.read_text()
    body = text.split("def upgrade() -> None:")[1]
    upgrade, downgrade = body.split("def downgrade() -> None:")
    assert "op." not in upgrade and "pass" in upgrade, text
    assert "op." not in downgrade and "pass" in downgrade, text
    probe.unlink()


@pytest.mark.parametrize("order", ["host_first", "library_first"])
def test_both_histories_upgrade_in_either_order(
    own_host: HostProject, empty_url: str, order: str
) -> None:
    host, url = own_host, empty_url
    if order == "host_first":
        host.alembic("upgrade", "head", url=url)
        _, before = host.chain(url, "seed", "inspect")
        assert before["idcard_alembic_version"] is None
        assert before["alembic_version"] == [[HOST_HEAD]]
        upgraded = host.scenario("library_upgrade", url)
        assert upgraded["error"] is None, upgraded.get("traceback")
        host.alembic("upgrade", "head", url=url)  # nothing left to do for the host either
        _, after, got = host.chain(url, "library_submit", "inspect", "library_get")
        added = names(after) - names(before)
        assert added, after
        assert not_the_librarys(added) == [], after["objects"]
        assert names(before) <= names(after)
        assert after["host_rows"] == before["host_rows"]
    else:
        upgraded, submitted, alone = host.chain(url, "library_upgrade", "library_submit", "inspect")
        assert upgraded["error"] is None, upgraded.get("traceback")
        assert not_the_librarys(names(alone)) == [], alone["objects"]
        assert alone["alembic_version"] is None  # the library never makes the host's table
        host.alembic("upgrade", "head", url=url)
        _, again, after, got = host.chain(
            url, "seed", "library_upgrade", "inspect", f"library_get:{submitted['id']}"
        )
        assert again["error"] is None, again.get("traceback")
        assert names(alone) <= names(after)
    head = upgraded["head"]
    assert upgraded["current"] == head
    host_rows = after["host_rows"]
    assert [row[1:] for row in host_rows["applications"]] == [["Li Lei", "new"]]
    assert [row[2] for row in host_rows["transition_log"]] == ["host note"]
    assert [row[1] for row in host_rows["outbox"]] == ["host.topic"]
    assert after["alembic_version"] == [[HOST_HEAD]]
    assert after["idcard_alembic_version"] == [[head]]
    assert {"applications", "outbox", "transition_log"} <= set(after["objects"]["table"])
    assert got == {"state": "submitted", "verified": True}
    assert_no_difference(host, url)


_both: dict[str, str] = {}


@pytest.fixture
def both_histories(host: HostProject, databases: Databases, database: str) -> str:
    """A database with the host's history then the library's (one per database kind, left
    unchanged by the tests that use it)."""
    if database not in _both:
        url = databases.empty(database)
        host.alembic("upgrade", "head", url=url)
        upgraded = host.scenario("library_upgrade", url)
        assert upgraded["error"] is None, upgraded.get("traceback")
        _both[database] = url
    return _both[database]


@pytest.mark.parametrize("which", ["name", "object"])
def test_either_filter_alone_hides_the_librarys_tables(
    host: HostProject, both_histories: str, which: str
) -> None:
    out = host.alembic("check", url=both_histories, check=False, HOST_ALEMBIC_FILTER=which)
    assert "No new upgrade operations detected" in out, out


def test_without_the_filters_the_hosts_check_sees_the_librarys_tables(
    host: HostProject, both_histories: str
) -> None:
    """The control: the filters are what hide the library's tables."""
    out = host.alembic("check", url=both_histories, check=False, HOST_ALEMBIC_FILTER="none")
    assert "New upgrade operations detected" in out, out
    assert "idcard_applications" in out, out


def test_with_the_filters_the_hosts_check_still_sees_the_hosts_own_changes(
    host: HostProject, both_histories: str
) -> None:
    out = host.alembic("check", url=both_histories, check=False, HOST_EXTRA_MODEL="1")
    assert "New upgrade operations detected" in out, out
    assert "counter_notes" in out and "idcard_" not in out, out


def test_a_failed_library_upgrade_leaves_the_database_as_it_was(
    host: HostProject, empty_url: str
) -> None:
    host.alembic("upgrade", "head", url=empty_url)
    result = host.scenario("clashing_upgrade", empty_url)
    assert result["error"] is not None
    assert result["workflow_error"] and result["code"] == "migration_failed", result["error"]
    assert result["after"] == result["before"], result["error"]
    # The table is one that revision 0004 creates: the error names that revision.
    assert result["revision"] == "0004", result["error"]
