"""Random records and random events by random actors, for every machine, from the same code.

`MachineRun` is one `RuleBasedStateMachine`; a subclass per machine names a `Subject` that says
how to create a record and which command fires an event. What the run expects is read from the
machine's definition (transitions, who may fire each event, which guards it has), and a plain
dict tracks the state and version of every record it created: a command that succeeds moves
the record along the machine's transition, one that fails leaves it where it was. After every
step the stored records and their histories, hash chains and outbox rows are checked against
that model. `test_stateful.py` keeps its own, independent model of the application process.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
)

import workflow as wf
from tests.support import SUBJECTS as SHARED
from tests.support import Clock, Databases, citizen_id, drive, form
from workflow.engine.definition import Definition, Permission
from workflow.models.tables import OutboxEvent, TransitionLog

CLERK, REVIEWER, PRODUCER = (str(r) for r in wf.Role)
ACCEPTANCE_REGIONS = ("440305", "440106", "310115")
HUKOU_REGIONS = ("110105", "510104")
UNITS: dict[str, tuple[str, ...]] = {
    CLERK: (*ACCEPTANCE_REGIONS, "110105"),
    REVIEWER: (*HUKOU_REGIONS, "440305"),
    PRODUCER: ("44", "31", "11", "51"),
}
ACTOR_POOL: tuple[wf.Actor, ...] = tuple(
    wf.Actor(id=f"{role}-{unit}", role=role, unit=unit)
    for role, units in UNITS.items()
    for unit in units
)
CITIZENS = tuple(citizen_id(n) for n in range(1, 5))


def mostly(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` three times in four, else ``other``; shrinks towards ``usual``."""
    return st.integers(min_value=0, max_value=3).flatmap(lambda i: usual if i < 3 else other)


# -- fresh databases ----------------------------------------------------------------------------

_databases: Databases | None = None


def fresh_database() -> tuple[str, bool]:
    """An empty, migrated database for one example: its URL, and whether it is PostgreSQL."""
    global _databases
    if _databases is None:
        root = Path(tempfile.mkdtemp(prefix="idcard-machines-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _databases = Databases(root)
    return _databases.fresh(), bool(_databases.postgres)


def remove_database(url: str, postgres: bool) -> None:
    if not postgres:
        path = url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(path + suffix).unlink()


# -- the machines -------------------------------------------------------------------------------

View = Any
"""An ApplicationView, LossReportView or FoundCardView."""


@dataclass(frozen=True)
class Creation:
    """A drawn creation command: for which citizen, the columns who may create it depends on,
    and the command itself."""

    citizen: str
    columns: Mapping[str, Any]
    command: Callable[[wf.Workflow, wf.Actor], View]


class Subject:
    """How the run drives one machine."""

    definition: ClassVar[Definition]
    table: ClassVar[str]
    duplicate: ClassVar[type[wf.WorkflowError] | None] = None
    """The error creation raises while the citizen has a record that is not final, if any."""
    has_world: ClassVar[bool] = False
    """Whether `world` does anything."""

    def setup(self, flow: wf.Workflow) -> None:
        """The world before the run's first step."""

    def creation(self, data: st.DataObject) -> Creation:
        raise NotImplementedError

    def get(self, flow: wf.Workflow, record_id: uuid.UUID) -> View:
        return SHARED[self.definition.name].get(flow, record_id)

    def payload(self, event: str, view: View, data: st.DataObject) -> dict[str, Any]:
        """Arguments for ``event``, mostly ones under which its guards hold."""
        return {}

    def fire(
        self, flow: wf.Workflow, view: View, event: str, actor: wf.Actor, payload: dict[str, Any]
    ) -> View:
        """Through the machine's handle, as the shared subject drives every machine."""
        return SHARED[self.definition.name].fire(flow, view, event, actor, payload)

    def world(self, flow: wf.Workflow, data: st.DataObject, memory: dict[str, Any]) -> None:
        """Something happening elsewhere that the machine's guards depend on; ``memory`` is
        the run's own, for what it needs to remember between steps."""


class Applications(Subject):
    definition = wf.APPLICATION
    table = "idcard_applications"
    duplicate = wf.DuplicateApplication

    def creation(self, data: st.DataObject) -> Creation:
        kind = data.draw(st.sampled_from(wf.Kind), label="kind")
        citizen = data.draw(st.sampled_from(CITIZENS), label="citizen")
        columns = {
            "acceptance_region": data.draw(st.sampled_from(ACCEPTANCE_REGIONS), label="at"),
            "hukou_region": data.draw(st.sampled_from(HUKOU_REGIONS), label="hukou"),
        }
        cmd = form(kind, citizen_id=citizen, **columns)
        return Creation(citizen, columns, lambda flow, actor: flow.submit(cmd, actor=actor))

    def payload(self, event: str, view: View, data: st.DataObject) -> dict[str, Any]:
        if event == "reject":
            ground = data.draw(mostly(st.just("identity_mismatch"), st.just("other")))
            return {"ground": ground, "note": data.draw(st.sampled_from(["", "no match"]))}
        if event == "collect":
            receipt = data.draw(mostly(st.just(view.receipt_no), st.just("NOT-THE-RECEIPT")))
            returned = data.draw(mostly(st.just(True), st.just(False)))
            return {"receipt_no": receipt, "old_card_returned": returned}
        if event == "extend_deadline":
            # Valid arguments: the second extension is what the guard refuses.
            return {"days": data.draw(st.integers(1, 30)), "reason": "snow on the pass"}
        return {}


class LossReports(Subject):
    definition = wf.LOSS_REPORT
    table = "idcard_loss_reports"
    duplicate = wf.DuplicateLossReport

    def setup(self, flow: wf.Workflow) -> None:
        # The first citizen collected a replacement before the run, so `close` can hold for
        # the reports filed for them during it.
        drive(flow, "collected", wf.Kind.REPLACEMENT, n=1)
        assert CITIZENS[0] == citizen_id(1)

    def creation(self, data: st.DataObject) -> Creation:
        citizen = data.draw(st.sampled_from(CITIZENS), label="citizen")
        return Creation(
            citizen,
            {},
            lambda flow, actor: flow.report_loss(citizen, actor=actor, identity_checked=True),
        )

    def payload(self, event: str, view: View, data: st.DataObject) -> dict[str, Any]:
        if event == "withdraw":
            return {"card_presented": data.draw(mostly(st.just(True), st.just(False)))}
        return {}


class FoundCards(Subject):
    definition = wf.FOUND_CARD
    table = "idcard_found_cards"
    has_world = True

    def creation(self, data: st.DataObject) -> Creation:
        citizen = data.draw(st.sampled_from(CITIZENS), label="citizen")
        return Creation(
            citizen, {}, lambda flow, actor: flow.register_found_card(citizen, actor=actor)
        )

    def payload(self, event: str, view: View, data: st.DataObject) -> dict[str, Any]:
        if event == "return_to_owner":
            return {"identity_checked": data.draw(mostly(st.just(True), st.just(False)))}
        return {}

    def world(self, flow: wf.Workflow, data: st.DataObject, memory: dict[str, Any]) -> None:
        # An owner applies for a replacement, or has it refused: whether a found card is
        # returned or destroyed depends on it.
        citizen = data.draw(st.sampled_from(CITIZENS), label="owner")
        clerk = wf.Actor(id="clerk", role=CLERK, unit=ACCEPTANCE_REGIONS[0])
        if citizen in memory:
            refused = memory.pop(citizen)
            flow.transmit(refused, actor=clerk)
            reviewer = wf.Actor(id="reviewer", role=REVIEWER, unit=HUKOU_REGIONS[0])
            flow.reject(refused, actor=reviewer, ground="identity_mismatch")
        else:
            cmd = form(wf.Kind.REPLACEMENT, citizen_id=citizen, acceptance_region=clerk.unit)
            memory[citizen] = flow.submit(cmd, actor=clerk).id


SUBJECTS = {"application": Applications(), "loss_report": LossReports(), "found_card": FoundCards()}
assert list(SUBJECTS) == list(SHARED), "one subject per registered machine"


# -- what the definition says -------------------------------------------------------------------


def permitted(permission: Permission, actor: wf.Actor, columns: Mapping[str, Any]) -> bool:
    """Whether ``actor`` has the role, and works in the unit, that ``permission`` names."""
    if actor.role != permission.role:
        return False
    unit = permission.unit_field
    return unit is None or actor.unit == str(columns[unit])[: permission.unit_digits]


def allowed_actor(permission: Permission, columns: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Actors ``permission`` lets act on a record with these columns."""
    role, unit = permission.role, permission.unit_field
    units = (str(columns[unit])[: permission.unit_digits],) if unit else UNITS[str(role)]
    return st.sampled_from([wf.Actor(id=f"{role}-{u}", role=role, unit=u) for u in units])


@dataclass
class Modelled:
    """What the model knows of one record: who it belongs to, where it is, how often it moved."""

    citizen: str
    columns: dict[str, Any]
    state: str
    version: int = 1


class MachineRun(RuleBasedStateMachine):
    """Random commands on one machine's records; subclasses name the `Subject`."""

    subject: ClassVar[Subject]
    records = Bundle("records")

    def __init__(self) -> None:
        super().__init__()
        self.definition = self.subject.definition
        self.url, self.postgres = fresh_database()
        self.clock = Clock()
        self.flow = wf.Workflow(self.url, clock=self.clock)
        self.raw = sa.create_engine(self.url)
        self.subject.setup(self.flow)
        # Rows the setup wrote are not the model's: the counts below start from them.
        self.baseline = self.counts()
        self.model: dict[uuid.UUID, Modelled] = {}
        self.memory: dict[str, Any] = {}
        self._generation = 0
        self._verified = 0
        self._touched: set[uuid.UUID] = set()
        self._snapshot: tuple[int, dict[uuid.UUID, Any]] | None = None

    def teardown(self) -> None:
        self.flow.close()
        self.raw.dispose()
        remove_database(self.url, self.postgres)

    # -- reading the database ------------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """Rows in the machine's table, and its rows in the transition log."""
        log: sa.Table = TransitionLog.__table__  # type: ignore[assignment]
        with self.raw.connect() as conn:
            records = conn.execute(
                sa.select(sa.func.count()).select_from(sa.table(self.subject.table))
            ).scalar_one()
            rows = conn.execute(
                sa.select(sa.func.count()).where(log.c.machine == self.definition.name)
            ).scalar_one()
        return records, rows

    def outbox(self) -> dict[uuid.UUID, list[tuple[int, str, str, Any]]]:
        """The machine's outbox rows by record, in order."""
        t: sa.Table = OutboxEvent.__table__  # type: ignore[assignment]
        query = (
            sa.select(t.c.record_id, t.c.seq, t.c.event, t.c.state, t.c.at)
            .where(t.c.machine == self.definition.name)
            .order_by(t.c.record_id, t.c.seq)
        )
        rows: dict[uuid.UUID, list[tuple[int, str, str, Any]]] = defaultdict(list)
        with self.raw.connect() as conn:
            for record_id, seq, event, state, at in conn.execute(query):
                rows[record_id].append((seq, event, state, at))
        return rows

    def stored(self) -> dict[uuid.UUID, tuple[View, list[wf.TransitionRecord]]]:
        """Every modelled record's view and history, read once per step."""
        if self._snapshot is None or self._snapshot[0] != self._generation:
            data = {
                record_id: (self.subject.get(self.flow, record_id), self.flow.history(record_id))
                for record_id in self.model
            }
            self._snapshot = (self._generation, data)
        return self._snapshot[1]

    # -- rules ---------------------------------------------------------------------------------

    @rule(minutes=st.integers(min_value=0, max_value=10 * 24 * 60))
    def time_passes(self, minutes: int) -> None:
        self.clock.advance(minutes=minutes)

    @precondition(lambda self: self.subject.has_world)
    @rule(data=st.data())
    def elsewhere(self, data: st.DataObject) -> None:
        self._generation += 1
        self.subject.world(self.flow, data, self.memory)

    @rule(target=records, data=st.data())
    def create(self, data: st.DataObject) -> Any:
        self._generation += 1
        creation = self.subject.creation(data)
        permission = self.definition.creation
        who = mostly(allowed_actor(permission, creation.columns), st.sampled_from(ACTOR_POOL))
        actor = data.draw(who, label="creator")
        expected: type[wf.WorkflowError] | None = None
        if not permitted(permission, actor, creation.columns):
            expected = wf.PermissionDenied
        elif self.subject.duplicate and any(
            r.citizen == creation.citizen and r.state not in self.definition.finals
            for r in self.model.values()
        ):
            expected = self.subject.duplicate
        before = self.counts()
        if expected is not None:
            with pytest.raises(wf.WorkflowError) as caught:
                creation.command(self.flow, actor)
            assert type(caught.value) is expected, f"expected {expected.__name__}: {caught.value!r}"
            assert self.counts() == before
            return multiple()
        view = creation.command(self.flow, actor)
        assert (view.state, view.version, view.citizen_id) == (
            self.definition.initial,
            1,
            creation.citizen,
        )
        assert self.counts() == (before[0] + 1, before[1] + 1)
        columns = view.model_dump()
        self.model[view.id] = Modelled(creation.citizen, columns, self.definition.initial)
        self._touched.add(view.id)
        return view.id

    @rule(record_id=records, data=st.data())
    def fire_anything(self, record_id: uuid.UUID, data: st.DataObject) -> None:
        """Any event, by an actor allowed to fire it or anyone."""
        event = data.draw(st.sampled_from(list(self.definition.events)), label="event")
        self.fire(record_id, event, data)

    @rule(record_id=records, data=st.data())
    def fire_the_next_step(self, record_id: uuid.UUID, data: st.DataObject) -> None:
        """An event legal now (if there is one): without this steer few records would get far."""
        state = self.model[record_id].state
        legal_now = [e for (s, e) in self.definition.transitions if s == state]
        event = data.draw(st.sampled_from(legal_now or list(self.definition.events)))
        self.fire(record_id, event, data)

    def fire(self, record_id: uuid.UUID, event: str, data: st.DataObject) -> None:
        """Fire ``event``, mostly by an actor allowed to, and check the outcome."""
        self._generation += 1
        self._touched.add(record_id)
        record = self.model[record_id]
        permission = self.definition.events[event].permission
        who = mostly(allowed_actor(permission, record.columns), st.sampled_from(ACTOR_POOL))
        actor = data.draw(who, label="actor")
        before_view = self.subject.get(self.flow, record_id)
        payload = self.subject.payload(event, before_view, data)
        before_history = self.flow.history(record_id)
        before_counts = self.counts()
        transition = self.definition.transition(record.state, event)
        case = f"{event} by {actor.role}/{actor.unit} in {record.state}"

        try:
            view = self.subject.fire(self.flow, before_view, event, actor, payload)
        except wf.WorkflowError as error:
            if not permitted(permission, actor, record.columns):
                assert type(error) is wf.PermissionDenied, f"{case}: {error!r}"
                assert error.role == actor.role
            elif transition is None:
                assert type(error) is wf.IllegalTransition, f"{case}: {error!r}"
                assert error.state == record.state
            else:
                assert type(error) is wf.GuardFailed, f"{case}: {error!r}"
                assert error.guard in {g.name for g in transition.guards}, case
            assert error.event == event  # type: ignore[attr-defined]
            assert self.subject.get(self.flow, record_id) == before_view, case
            assert self.flow.history(record_id) == before_history, case
            assert self.counts() == before_counts, case
            return

        assert permitted(permission, actor, record.columns), f"{case} succeeded"
        assert transition is not None, f"{case} succeeded"
        assert (view.state, view.version) == (transition.target, record.version + 1), case
        assert self.counts() == (before_counts[0], before_counts[1] + 1), case
        record.state = transition.target
        record.version += 1

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def stored_state_and_version_equal_the_models(self) -> None:
        for record_id, (view, _) in self.stored().items():
            record = self.model[record_id]
            assert (view.state, view.version) == (record.state, record.version), record_id
            assert view.citizen_id == record.citizen

    @invariant()
    def the_database_holds_exactly_the_modelled_rows(self) -> None:
        records, rows = self.baseline
        assert self.counts() == (
            records + len(self.model),
            rows + sum(r.version for r in self.model.values()),
        )

    @invariant()
    def histories_are_numbered_legal_steps_from_the_creation(self) -> None:
        d = self.definition
        for view, history in self.stored().values():
            assert len(history) == view.version
            assert [r.seq for r in history] == list(range(1, len(history) + 1))
            first = history[0]
            assert (first.event, first.from_state, first.to_state) == (
                d.creation_event,
                None,
                d.initial,
            )
            for previous, row in pairwise(history):
                assert row.from_state == previous.to_state
                transition = d.transition(str(row.from_state), row.event)
                assert transition is not None and transition.target == row.to_state, row
            assert history[-1].to_state == view.state

    @invariant()
    def every_history_verifies(self) -> None:
        if self._verified == self._generation:
            return
        self._verified = self._generation
        # The record the step touched on its own, then the whole database (the records of the
        # other machines too), which verifies every other record in a few queries.
        for record_id in self._touched:
            report = self.flow.verify(record_id)
            assert report.ok, report.broken
            assert (report.records, report.rows) == (1, self.model[record_id].version)
        self._touched.clear()
        everything = self.flow.verify()
        assert everything.ok, everything.broken

    @invariant()
    def the_outbox_holds_one_row_per_history_row(self) -> None:
        outbox = self.outbox()
        for record_id, (_, history) in self.stored().items():
            assert outbox[record_id] == [(r.seq, r.event, r.to_state, r.at) for r in history]


SETTINGS = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # The explain phase re-runs a failing example under coverage: minutes on this machine.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)


class ApplicationRun(MachineRun):
    subject = SUBJECTS["application"]


class LossReportRun(MachineRun):
    subject = SUBJECTS["loss_report"]


class FoundCardRun(MachineRun):
    subject = SUBJECTS["found_card"]


RUNS: list[type[MachineRun]] = [ApplicationRun, LossReportRun, FoundCardRun]


def test_every_machine_has_a_run() -> None:
    assert [run.subject.definition for run in RUNS] == list(wf.MACHINES)


for _run in RUNS:
    _run.TestCase.settings = SETTINGS
TestApplications = ApplicationRun.TestCase
TestLossReports = LossReportRun.TestCase
TestFoundCards = FoundCardRun.TestCase
