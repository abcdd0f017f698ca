"""The host's transaction is the host's, and the host's engine stays the host's.

Each binding (how the host makes its sessions) runs every scenario of ``host/scenarios.py`` in
one process on a database of its own; the tests below judge what each scenario saw.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.embedding.conftest import DATABASES, Databases, HostProject

BINDINGS = ["plain", "wf_engine", "flask", "scoped"]
ONE = {"idcard_applications": 1, "idcard_transition_log": 1, "idcard_outbox": 1}
NONE = {"idcard_applications": 0, "idcard_transition_log": 0, "idcard_outbox": 0}

# scenario: (library rows it leaves, host rows it leaves, other facts it must report)
EXPECTED: dict[str, tuple[dict[str, int], int, dict[str, Any]]] = {
    "autobegin_commit": (ONE, 0, {"seen_before_commit": 0, "found_after": True}),
    "autobegin_rollback": (NONE, 0, {"found_after": False}),
    "begin_block_commit": (ONE, 0, {"found_after": True}),
    "begin_block_raises": (NONE, 0, {"submitted": 1, "found_after": False}),
    "begin_block_after_workflow_made": (
        ONE,
        0,
        {"in_transaction_after_init": False, "found_after": True},
    ),
    "host_write_rollback": (NONE, 0, {"found_after": False}),
    "host_write_commit": (ONE, 1, {"found_after": True}),
    "refused_command_host_commits": (NONE, 2, {"refused": "permission_denied"}),
    "refusals_after_a_command": (
        ONE,
        1,
        {
            "refused": ["permission_denied", "duplicate_application"],
            "state": "submitted",
            "history": ["submit"],
        },
    ),
    "two_commands_rollback": (NONE, 0, {"found_after": [False, False]}),
}


class Runs:
    """Each (database, binding) run once per test session, on a database made for it from a
    template that holds both histories."""

    def __init__(self, host: HostProject, databases: Databases) -> None:
        self.host = host
        self.databases = databases
        self.templates: dict[str, str] = {}
        self.results: dict[tuple[str, str], Any] = {}

    def url(self, database: str) -> str:
        if database not in self.templates:
            template = self.databases.empty(database)
            self.host.alembic("upgrade", "head", url=template)
            upgraded = self.host.scenario("library_upgrade", template)
            assert upgraded["error"] is None, upgraded.get("traceback")
            self.templates[database] = template
        return self.databases.empty(database, template=self.templates[database])

    def __call__(self, database: str, command: str, *args: str) -> Any:
        key = (database, command, *args)
        if key not in self.results:
            self.results[key] = self.host.scenario(command, self.url(database), *args)
        return self.results[key]


@pytest.fixture(scope="session")
def runs(host: HostProject, databases: Databases) -> Runs:
    return Runs(host, databases)


def check(outcome: dict[str, Any], library: dict[str, int], host_rows: int, facts: Any) -> None:
    assert outcome["error"] is None, outcome.get("traceback")
    delta = outcome["delta"]
    assert {k: v for k, v in delta.items() if k != "applications"} == library, outcome
    assert delta["applications"] == host_rows, outcome
    for fact, value in facts.items():
        assert outcome[fact] == value, (fact, outcome)


@pytest.mark.parametrize("scenario", list(EXPECTED))
@pytest.mark.parametrize("binding", BINDINGS)
@pytest.mark.parametrize("database", DATABASES)
def test_session_scenario(runs: Runs, database: str, binding: str, scenario: str) -> None:
    check(runs(database, "transactions", binding)[scenario], *EXPECTED[scenario])


@pytest.mark.parametrize("binding", ["flask", "scoped"])
@pytest.mark.parametrize("database", DATABASES)
def test_one_workflow_on_a_scoped_session_follows_each_requests_session(
    runs: Runs, database: str, binding: str
) -> None:
    outcome = runs(database, "transactions", binding)["shared_flow"]
    check(outcome, ONE, 0, {"found": [True, False]})


@pytest.mark.parametrize("binding", ["plain", "flask", "scoped"])
def test_a_session_bind_leaves_the_hosts_sqlite_connections_as_they_were(
    runs: Runs, binding: str
) -> None:
    result = runs("sqlite", "transactions", binding)
    assert result["engine_after"] == result["engine_before"]
    assert result["engine_before"][0]["foreign_keys"] == 0


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_explicit_begin_recipe_session_scenario(runs: Runs, scenario: str) -> None:
    check(runs("sqlite", "transactions", "recipe")[scenario], *EXPECTED[scenario])


def test_explicit_begin_recipe_still_works_after_the_library_ran_in_its_sessions(
    runs: Runs,
) -> None:
    result = runs("sqlite", "transactions", "recipe")
    assert result["recipe_after"] == {"error": None, "applications_delta": 1}, result
    assert result["engine_after"] == result["engine_before"]
    assert {state["isolation_level"] for state in result["engine_after"]} == {None}


COMMANDS = {
    "state": "transmitted",
    "history": ["submit", "transmit"],
    "refused": "illegal_transition",
}
TWO = {"idcard_applications": 1, "idcard_transition_log": 2, "idcard_outbox": 2, "applications": 0}


def test_an_engine_bind_leaves_the_hosts_sqlite_engine_as_it_was(runs: Runs) -> None:
    result = runs("sqlite", "engine_bind")
    assert {k: v for k, v in result["commands"].items() if k != "id"} == COMMANDS
    assert result["delta"] == TWO
    before, after = result["before"], result["after"]
    assert after == before
    assert before[0] == {
        "foreign_keys": 0,
        "busy_timeout": 5000,
        "isolation_level": "",
        "in_transaction": False,
    }
    assert result["raw_rollback_delta"] == 0
    assert result["connection_rollback_delta"] == 0


def test_the_explicit_begin_recipe_engine_as_an_engine_bind(runs: Runs) -> None:
    result = runs("sqlite", "recipe_engine_bind")
    assert result["error"] is None, result.get("traceback")
    assert {k: v for k, v in result["commands"].items() if k != "id"} == COMMANDS
    assert result["delta"] == TWO
    assert {state["isolation_level"] for state in result["engine_after"]} == {None}
    assert result["recipe_after"] == {"error": None, "applications_delta": 1}, result


@pytest.mark.parametrize("database", DATABASES)
def test_an_autocommit_engine_keeps_every_commands_writes(runs: Runs, database: str) -> None:
    result = runs(database, "autocommit_engine")
    assert result["error"] is None, result.get("traceback")
    assert {k: v for k, v in result["commands"].items() if k != "id"} == COMMANDS
    assert result["delta"] == TWO
    assert result["seen"] == "transmitted"
