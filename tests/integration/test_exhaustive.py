"""Every (state, event, role, unit) combination of every machine, against tables derived from
the machine classes.

The expectations are read from each machine class itself (its states, their transitions and its
``rules``), so this test fails whenever the persisted engine disagrees with the class that is
the single source of truth: exactly the legal, permitted combinations succeed, and every other
one raises the documented error and changes nothing. One piece of code runs all three
machines; a `Subject` only says how to create a record, how to bring about what a step of its
path needs, and which command fires an event.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

import workflow as wf
from tests.support import (
    OTHER_COUNTY,
    Clock,
    clerk,
    drive,
    form,
)
from tests.support import SUBJECTS as SHARED
from workflow.engine.definition import Permission, ProcessMachine
from workflow.models.enums import UNIT_DIGITS

ROLES: list[str] = [str(r) for r in wf.Role]
FOREIGN_UNIT = {6: OTHER_COUNTY, 2: OTHER_COUNTY[:2]}
"""A county (6 digits) and a province (2 digits) the test records have nothing to do with."""
NO_SUCH_EVENT = "no_such_event"


# -- what the machine classes say ---------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """The lookup tables of one machine class, read with python-statemachine's introspection."""

    machine: type[ProcessMachine]
    states: tuple[str, ...]
    initial: str
    transitions: Mapping[tuple[str, str], str]
    """(state, event) -> target."""
    permissions: Mapping[str, Permission]
    paths: Mapping[str, tuple[str, ...]]
    """The shortest list of events that takes a new record to each state."""

    @classmethod
    def of(cls, machine: type[ProcessMachine]) -> Table:
        assert machine.initial_state is not None
        initial = str(machine.initial_state.value)
        transitions = {
            (str(t.source.value), e.id): str(t.target.value)
            for s in machine.states
            for t in s.transitions
            for e in t.events
        }
        paths: dict[str, tuple[str, ...]] = {initial: ()}
        queue = deque([initial])
        while queue:
            state = queue.popleft()
            for (source, event), dest in transitions.items():
                if source == state and dest not in paths:
                    paths[dest] = (*paths[state], event)
                    queue.append(dest)
        return cls(
            machine=machine,
            states=tuple(str(s.value) for s in machine.states),
            initial=initial,
            transitions=transitions,
            permissions={event: rule.permission for event, rule in machine.rules.items()},
            paths=paths,
        )

    @property
    def events(self) -> list[str]:
        return list(self.permissions)

    def steps(self, state: str, event: str) -> tuple[str, ...]:
        """The events fired to reach ``state`` and then, if it is legal there, ``event``."""
        legal = (state, event) in self.transitions
        return (*self.paths[state], event) if legal else self.paths[state]


# -- how the test drives each machine -----------------------------------------------------------

View = Any
"""An ApplicationView, LossReportView or FoundCardView."""


class Subject:
    """How the test drives one machine: the shared subject of `tests.support` (create, get,
    fire through the machine's handle), and what this test adds for the machine."""

    name: ClassVar[str]
    home: ClassVar[str]
    """The record's column naming the office it belongs to: what a role's own unit is when no
    event of the machine ties that role to a column."""
    counts: ClassVar[tuple[int, int]]
    """How many states and events the documents give the process."""

    def __init__(self) -> None:
        self.shared = SHARED[self.name]
        self.machine: type[ProcessMachine] = self.shared.machine.definition.machine
        self.table = Table.of(self.machine)

    def __repr__(self) -> str:
        return self.name

    def prepare(self, flow: wf.Workflow, steps: tuple[str, ...]) -> None:
        """Before the record exists: make the world one in which every step can succeed."""

    def create(self, flow: wf.Workflow) -> View:
        return self.shared.create(flow)

    def get(self, flow: wf.Workflow, record_id: uuid.UUID) -> View:
        return self.shared.get(flow, record_id)

    def fire(self, flow: wf.Workflow, view: View, event: str, actor: wf.Actor) -> View:
        """Fire ``event`` with arguments under which its guards hold."""
        return self.shared.fire(flow, view, event, actor)

    def fire_name(self, flow: wf.Workflow, view: View, name: str, actor: wf.Actor) -> View:
        """Fire any name, event or not."""
        return self.shared.fire(flow, view, name, actor, payload={})

    def advance(self, flow: wf.Workflow, view: View, event: str) -> View:
        """One step of the path to a state, by an actor allowed to take it."""
        return self.fire(flow, view, event, actor(self, self.table.permissions[event].role, view))

    @property
    def not_events(self) -> tuple[str, ...]:
        """Names that are no event of the machine: its creation and a made-up one."""
        creation = self.machine.creation_event
        assert creation is not None
        return (creation, NO_SUCH_EVENT)


class Applications(Subject):
    name = "application"
    home = "acceptance_region"
    counts = (7, 7)


class LossReports(Subject):
    name = "loss_report"
    home = "reported_unit"
    counts = (3, 2)

    def prepare(self, flow: wf.Workflow, steps: tuple[str, ...]) -> None:
        if steps == ("close",):
            # `close` is fired on a report in 'reported' only if a replacement was collected;
            # collecting one closes the active report, so it is collected before this one exists.
            drive(flow, "collected", wf.Kind.REPLACEMENT)

    def advance(self, flow: wf.Workflow, view: View, event: str) -> View:
        if event == "close":
            # The public way to close a report: the citizen collects a replacement.
            drive(flow, "collected", wf.Kind.REPLACEMENT)
            return self.get(flow, view.id)
        return super().advance(flow, view, event)


class FoundCards(Subject):
    name = "found_card"
    home = "held_unit"
    counts = (3, 2)

    def prepare(self, flow: wf.Workflow, steps: tuple[str, ...]) -> None:
        if "destroy" in steps:
            # A card is destroyed only when its owner applied for a replacement; applied for
            # before the card is handed in, it counts through the loss report it files.
            flow.submit(form(wf.Kind.REPLACEMENT), actor=clerk(form().acceptance_region))


SUBJECTS: list[Subject] = [Applications(), LossReports(), FoundCards()]
assert [s.name for s in SUBJECTS] == list(SHARED), "one subject per registered machine"


def _workplace(subject: Subject, role: str) -> tuple[str, int]:
    """Which column of a record a role's unit is compared with, and how many digits."""
    places = {
        (p.unit_field, p.unit_digits)
        for p in subject.table.permissions.values()
        if p.role == role and p.unit_field is not None
    }
    assert len(places) <= 1, f"{role} is matched against different columns: {places}"
    return places.pop() if places else (subject.home, UNIT_DIGITS[wf.Role(role)])


def actor(subject: Subject, role: str, view: View, *, own: bool = True) -> wf.Actor:
    """An actor of ``role`` working for the record's unit (``own``) or a foreign one."""
    field, digits = _workplace(subject, role)
    home = str(getattr(view, field))[:digits]
    assert home != FOREIGN_UNIT[digits]
    unit = home if own else FOREIGN_UNIT[digits]
    return wf.Actor(id=f"{role}-{unit}", role=role, unit=unit)


def reach(flow: wf.Workflow, subject: Subject, state: str, then: str) -> View:
    """A new record driven along the legal path to ``state``, in a world where ``then`` (if it
    is legal there) can succeed."""
    subject.prepare(flow, subject.table.steps(state, then))
    view = subject.create(flow)
    for event in subject.table.paths[state]:
        view = subject.advance(flow, view, event)
    assert (view.state, view.version) == (state, len(subject.table.paths[state]) + 1)
    return view


def expected_error(
    subject: Subject, state: str, event: str, role: str, *, own: bool
) -> type[wf.WorkflowError] | None:
    permission = subject.table.permissions[event]
    if role != permission.role or (permission.unit_field is not None and not own):
        return wf.PermissionDenied
    if (state, event) not in subject.table.transitions:
        return wf.IllegalTransition
    return None


def _case_id(subject: Subject, *parts: object) -> str:
    return "-".join([subject.name, *(str(p) for p in parts)])


CASES = [
    pytest.param(
        subject,
        state,
        event,
        role,
        own,
        id=_case_id(subject, state, event, role, "own" if own else "foreign"),
    )
    for subject in SUBJECTS
    for state in subject.table.states
    for event in subject.table.events
    for role in ROLES
    for own in (True, False)
]


def _transitions_so_far(flow: wf.Workflow) -> int:
    """How many transitions of any record were written: none were acknowledged."""
    return len(flow.pending_events(10_000))


def test_the_subjects_are_every_machine_the_library_runs() -> None:
    assert [s.machine for s in SUBJECTS] == [d.machine for d in wf.MACHINES]
    assert [s.name for s in SUBJECTS] == [d.name for d in wf.MACHINES]


@pytest.mark.parametrize("subject", SUBJECTS, ids=repr)
def test_the_table_covers_the_documented_process(subject: Subject) -> None:
    table = subject.table
    assert (len(table.states), len(table.events)) == subject.counts
    assert set(table.events) == {e for _, e in table.transitions}
    assert set(table.paths) == set(table.states), "every state is reachable"
    # One (state, event, role, own unit) combination is allowed per legal transition, and a
    # foreign unit too where the event allows any unit.
    allowed = [
        c
        for c in CASES
        if c.values[0] is subject and expected_error(*c.values[:4], own=c.values[4]) is None
    ]
    per_transition = {
        key: 1 if table.permissions[key[1]].unit_field else 2 for key in table.transitions
    }
    assert len(allowed) == sum(per_transition.values())


@pytest.mark.parametrize(("subject", "state", "event", "role", "own"), CASES)
def test_an_event_succeeds_exactly_when_the_definition_allows_it(
    flow: wf.Workflow,
    clock: Clock,
    subject: Subject,
    state: str,
    event: str,
    role: str,
    own: bool,
) -> None:
    view = reach(flow, subject, state, then=event)
    who = actor(subject, role, view, own=own)
    before_history = flow.history(view.id)
    before_transitions = _transitions_so_far(flow)
    clock.advance(hours=1)
    expected = expected_error(subject, state, event, role, own=own)
    case = f"{subject.name}: {event} by {role} of {who.unit} in {state}"

    if expected is None:
        after = subject.fire(flow, view, event, who)
        target = subject.table.transitions[(state, event)]
        assert (after.state, after.version) == (target, view.version + 1), case
        assert subject.get(flow, view.id) == after, case
        history = flow.history(view.id)
        assert history[:-1] == before_history, case
        last = history[-1]
        assert (last.seq, last.event, last.from_state, last.to_state) == (
            view.version + 1,
            event,
            state,
            target,
        ), case
        assert (last.actor_id, last.actor_role, last.actor_unit, last.at) == (
            who.id,
            who.role,
            who.unit,
            clock.now,
        ), case
        assert flow.verify(view.id).ok, case
        return

    with pytest.raises(wf.WorkflowError) as caught:
        subject.fire(flow, view, event, who)
    error = caught.value
    assert type(error) is expected, f"{case}: expected {expected.__name__}, got {error!r}"
    assert error.event == event  # type: ignore[attr-defined]
    if isinstance(error, wf.PermissionDenied):
        assert error.role == role, case
    if isinstance(error, wf.IllegalTransition):
        assert error.state == state, case
    assert subject.get(flow, view.id) == view, f"{case}: the record changed"
    assert flow.history(view.id) == before_history, f"{case}: the history changed"
    assert _transitions_so_far(flow) == before_transitions, f"{case}: something else moved"


NAME_CASES = [
    pytest.param(subject, state, name, role, own, id=_case_id(subject, state, name, role, own_id))
    for subject in SUBJECTS
    for state in subject.table.states
    for name in subject.not_events
    for role in ROLES
    for own, own_id in ((True, "own"), (False, "foreign"))
]


@pytest.mark.parametrize(("subject", "state", "name", "role", "own"), NAME_CASES)
def test_fire_refuses_names_that_are_not_events_in_every_state(
    flow: wf.Workflow, subject: Subject, state: str, name: str, role: str, own: bool
) -> None:
    view = reach(flow, subject, state, then=name)
    before_history = flow.history(view.id)
    before_transitions = _transitions_so_far(flow)
    with pytest.raises(wf.WorkflowError) as caught:
        subject.fire_name(flow, view, name, actor(subject, role, view, own=own))
    error = caught.value
    assert type(error) is wf.IllegalTransition, f"{name} in {state}: got {error!r}"
    assert (error.event, error.state) == (name, state)
    assert subject.get(flow, view.id) == view
    assert flow.history(view.id) == before_history
    assert _transitions_so_far(flow) == before_transitions
