"""What every variant of the peers phase is: prepared, run and checked by commands.

`Variant` is the interface the coordinator drives (`tests.benchmarks.peers.bench`); `Peer` runs
the rounds and the refusal checks for a framework, given its unit of work.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from typing import Any

from .process import CLERK_ELSEWHERE, OFFICERS, Officer


class Variant:
    """One way of running the workload: prepared, run and checked by commands."""

    packages: Sequence[str] = ()
    """The distributions whose versions the results name."""

    def describe(self) -> dict[str, Any]:
        return {"versions": {name: importlib.metadata.version(name) for name in self.packages}}

    def check(self) -> dict[str, str]:
        """Untimed, before the rounds: that the variant refuses what it must."""
        return {}

    def prepare(self, count: int) -> None:
        """Untimed: ``count`` fresh applications in ``submitted`` for the next round."""
        raise NotImplementedError

    def run(self, event: str) -> int:
        """The timed part: ``event`` on every prepared application, one transaction per
        transition (the events of the path come in order). Returns the number of transitions."""
        raise NotImplementedError

    def finish(self) -> dict[str, Any]:
        """Untimed, after the rounds: what the database holds, for the coordinator to check."""
        return {}

    def close(self) -> None:
        pass


class Peer(Variant):
    """A framework's own unit of work per transition, on its own tables.

    A subclass says how its users fire one event on one application in one transaction
    (`fire`), how they create applications (`create`), and how to read back a state and a
    history (`state_and_history`, `totals`); this class runs the rounds and the checks.
    """

    refused: tuple[type[BaseException], ...] = ()
    """What `fire` raises when the framework refuses an event."""

    def __init__(self) -> None:
        self.ids: list[Any] = []
        self.created = 0

    def officer(self, officer: Officer) -> Any:
        """The framework's idea of who acts (Django: a user); by default the officer itself."""
        return officer

    def fire(self, event: str, app_id: Any, who: Any) -> None:
        raise NotImplementedError

    def create(self, count: int) -> list[Any]:
        raise NotImplementedError

    def state_and_history(self, app_id: Any) -> tuple[str, int]:
        """The application's stored state and how many history rows it has."""
        raise NotImplementedError

    def totals(self) -> tuple[dict[str, int], int]:
        """Applications per state, and history rows, in the whole database."""
        raise NotImplementedError

    def check(self) -> dict[str, str]:
        # Runs first: it also looks up who fires each event, as a host's login would.
        self.who = {event: self.officer(officer) for event, officer in OFFICERS.items()}
        elsewhere = self.officer(CLERK_ELSEWHERE)
        (app_id,) = self.create(1)
        self.created += 1
        cases: list[tuple[str, str, Any]] = [
            ("a reviewer transmits (a clerk's event)", "transmit", self.who["approve"]),
            ("a clerk of another county transmits", "transmit", elsewhere),
            ("a producer produces before approval", "produce", self.who["produce"]),
        ]
        seen: dict[str, str] = {}
        for what, event, who in cases:
            try:
                self.fire(event, app_id, who)
            except self.refused as error:
                seen[what] = f"refused: {type(error).__name__}"
            else:
                raise AssertionError(f"{type(self).__name__} did not refuse: {what}")
        if self.state_and_history(app_id) != ("submitted", 0):
            raise AssertionError("a refused event changed the application or its history")
        self.fire("transmit", app_id, self.who["transmit"])
        if self.state_and_history(app_id) != ("transmitted", 1):
            raise AssertionError("transmit did not move the application and record it")
        seen["the clerk of the acceptance county transmits"] = "done, one history row"
        return seen

    def prepare(self, count: int) -> None:
        self.ids = self.create(count)
        self.created += count

    def run(self, event: str) -> int:
        fire, who = self.fire, self.who[event]
        for app_id in self.ids:
            fire(event, app_id, who)
        return len(self.ids)

    def finish(self) -> dict[str, Any]:
        states, history = self.totals()
        return {"applications": states, "history_rows": history}
