"""The library and the floor as variants of the peers phase: what `single.py` measures.

The library fires its commands through the public API; the floor sends the library's own
writes straight through the driver (`single.Floor`). Both work on the library's migrated
database, each on applications of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import workflow as wf

from ..common import Database
from ..single import Applications, Floor, run_library
from .process import PATH
from .variant import Variant

FLOOR_NUMBERS = 10_000_000
"""Where the floor's applications are numbered from, clear of the library's."""


class Library(Variant):
    packages = ("idcard-workflow", "sqlalchemy")

    def __init__(self, variant: str, url: str, path: str) -> None:
        db = Database(variant, url, Path(path) if variant != "postgres" else None)
        self.engine = db.engine()
        self.flow = wf.Workflow(self.engine)
        self.source = Applications(db)

    def prepare(self, count: int) -> None:
        self.apps = self.source.fresh(count)

    def run(self, event: str) -> int:
        return run_library(self.flow, self.apps, [event])

    def finish(self) -> dict[str, Any]:
        # The whole database: the floor's histories too, so the floor wrote what the library
        # writes.
        report = self.flow.verify()
        if not report.ok:
            raise RuntimeError(f"verify found damage after the rounds: {report.broken[:3]}")
        return {"verified_records": report.records}

    def close(self) -> None:
        self.source.close()
        self.flow.close()
        self.engine.dispose()


class Driver(Variant):
    """The floor: the library's writes through the driver, parameters computed untimed."""

    def __init__(self, variant: str, url: str, path: str) -> None:
        db = Database(variant, url, Path(path) if variant != "postgres" else None)
        self.floor = Floor(db)
        self.source = Applications(db)
        self.source.next = FLOOR_NUMBERS

    def prepare(self, count: int) -> None:
        plans = self.floor.plan(self.source.fresh(count), PATH)
        self.plans = dict(zip(PATH, plans, strict=True))

    def run(self, event: str) -> int:
        return self.floor.run([self.plans[event]])

    def close(self) -> None:
        self.source.close()
        self.floor.close()
