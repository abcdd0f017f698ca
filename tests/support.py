"""Builders shared by the tests: valid citizen numbers, actors, forms, a controllable clock."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import workflow as wf
from workflow.models.citizen_id import check_character
from workflow.models.enums import NATIONAL_FEE, Document, Kind, Role

POSTGRES_URL_VARIABLE = "IDCARD_TEST_DATABASE_URL"
ACCEPTANCE = "440305"  # Nanshan District, Shenzhen
HUKOU = "110105"  # Chaoyang District, Beijing
OTHER_COUNTY = "310115"  # Pudong New Area, Shanghai


def citizen_id(n: int = 1, *, region: str = HUKOU) -> str:
    """A valid GB 11643 number; ``n`` below 25,000 gives each a different birth date."""
    born = date(1950, 1, 1) + timedelta(days=n)
    first17 = f"{region}{born:%Y%m%d}{n % 1000:03d}"
    return first17 + check_character(first17)


def clerk(unit: str = ACCEPTANCE, actor_id: str = "clerk-1") -> wf.Actor:
    return wf.Actor(id=actor_id, role=Role.ACCEPTANCE_CLERK, unit=unit)


def reviewer(unit: str = HUKOU, actor_id: str = "reviewer-1") -> wf.Actor:
    return wf.Actor(id=actor_id, role=Role.HUKOU_REVIEWER, unit=unit)


def producer(unit: str = ACCEPTANCE[:2], actor_id: str = "producer-1") -> wf.Actor:
    return wf.Actor(id=actor_id, role=Role.CARD_PRODUCER, unit=unit)


DOCUMENTS = {
    Kind.RENEWAL: {Document.RESIDENT_ID_CARD},
    Kind.DAMAGED_RENEWAL: {Document.RESIDENT_ID_CARD},
    Kind.REPLACEMENT: {Document.HOUSEHOLD_REGISTER},
}


def form(kind: Kind = Kind.RENEWAL, n: int = 1, **changes: object) -> wf.SubmitApplication:
    """A valid registration form for ``kind``; ``changes`` override any field."""
    fields: dict[str, object] = {
        "kind": kind,
        "citizen_id": citizen_id(n),
        "name": "Wang Fang",
        "hukou_region": HUKOU,
        "acceptance_region": ACCEPTANCE,
        "documents": DOCUMENTS[kind],
        "fee_paid": NATIONAL_FEE[kind],
    }
    fields.update(changes)
    return wf.SubmitApplication.model_validate(fields)


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: datetime = field(default_factory=lambda: datetime(2026, 3, 2, 9, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@contextmanager
def tampering(url: str) -> Iterator[sa.Engine]:
    """An engine that writes behind the library's back and past the database's own refusals,
    as someone with full rights over the database could: on SQLite the triggers are dropped,
    on PostgreSQL each connection takes the replica role, which skips triggers and foreign keys."""
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            names = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            for (name,) in names.all():
                conn.exec_driver_sql(f"DROP TRIGGER {name}")
    else:

        @sa.event.listens_for(engine, "connect")
        def _replica(dbapi_connection: Any, record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("SET session_replication_role = replica")
            cursor.close()

    try:
        yield engine
    finally:
        engine.dispose()


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_URL_VARIABLE) or None


class Databases:
    """Hands out empty, migrated databases quickly: a copied SQLite template, or PostgreSQL
    tables emptied in place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.postgres = postgres_url()
        self.template = root / "template.db"
        if self.postgres:
            wf.upgrade(self.postgres)
        else:
            wf.upgrade(f"sqlite:///{self.template}")
        self._count = 0

    def fresh(self) -> str:
        if self.postgres:
            engine = sa.create_engine(self.postgres)
            with engine.begin() as conn:
                # The log's triggers refuse TRUNCATE; a superuser's replica role skips triggers.
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
                tables = sorted(set(wf.Base.metadata.tables) - {"idcard_allowed_transitions"})
                conn.exec_driver_sql(f"TRUNCATE {', '.join(tables)}")
            engine.dispose()
            return self.postgres
        self._count += 1
        path = self.root / f"db{self._count}.db"
        shutil.copyfile(self.template, path)
        return f"sqlite:///{path}"

    def empty(self) -> Iterator[str]:
        """A database with no tables at all (for migration tests)."""
        if self.postgres:
            self.fresh()  # no history the downgrade would refuse to drop (revision 0007)
            wf.downgrade(self.postgres, "base")
            try:
                yield self.postgres
            finally:
                wf.upgrade(self.postgres)
            return
        self._count += 1
        path = self.root / f"empty{self._count}.db"
        sqlite3.connect(path).close()  # an empty database file, as a host would create it
        yield f"sqlite:///{path}"


PATH_TO: dict[str, list[str]] = {
    "submitted": [],
    "transmitted": ["transmit"],
    "approved": ["transmit", "approve"],
    "rejected": ["transmit", "reject"],
    "produced": ["transmit", "approve", "produce"],
    "ready": ["transmit", "approve", "produce", "mark_ready"],
    "collected": ["transmit", "approve", "produce", "mark_ready", "collect"],
}
"""The events that take a new application to each state."""


def actor_for(event: str, view: wf.ApplicationView) -> wf.Actor:
    """The actor who may fire ``event`` on the application."""
    if event in {"approve", "reject"}:
        return reviewer(view.hukou_region)
    if event == "produce":
        return producer(view.acceptance_region[:2])
    return clerk(view.acceptance_region)


def good_payload(event: str, view: wf.ApplicationView) -> dict[str, object]:
    """Arguments with which ``event``'s guards hold."""
    if event == "reject":
        return {"ground": "identity_mismatch"}
    if event == "collect":
        return {"receipt_no": view.receipt_no, "old_card_returned": True}
    if event == "extend_deadline":
        return {"days": 10, "reason": "the mountain road is closed by snow"}
    return {}


def drive(
    flow: wf.Workflow, state: str, kind: Kind = Kind.RENEWAL, n: int = 1
) -> wf.ApplicationView:
    """Submit a valid application and move it along the legal path to ``state``."""
    view = flow.submit(form(kind, n), actor=clerk())
    for event in PATH_TO[state]:
        view = flow.fire(view.id, event, actor=actor_for(event, view), **good_payload(event, view))
    assert view.state == state
    return view
