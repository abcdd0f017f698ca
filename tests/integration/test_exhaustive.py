"""Every (state, event, role, unit) combination, against a table derived from the machine class.

The expectations are read from `ApplicationMachine` itself (its states, their transitions and
its ``rules``), so this test fails whenever the persisted engine disagrees with the class that
is the single source of truth: exactly the legal, permitted combinations succeed, and every
other one raises the documented error and changes nothing.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

import workflow as wf
from tests.support import OTHER_COUNTY, Clock, form

MACHINE = wf.ApplicationMachine
STATES: list[str] = [str(s.value) for s in MACHINE.states]
assert MACHINE.initial_state is not None
INITIAL = str(MACHINE.initial_state.value)
TRANSITIONS: dict[tuple[str, str], str] = {
    (str(t.source.value), e.id): str(t.target.value)
    for s in MACHINE.states
    for t in s.transitions
    for e in t.events
}
EVENTS: list[str] = list(MACHINE.rules)
PERMISSIONS = {event: rule.permission for event, rule in MACHINE.rules.items()}
ROLES: list[str] = [str(r) for r in wf.Role]
NOT_EVENTS = ("submit", "no_such_event")
"""Names `fire` refuses in every state: submit creates an application, it is no transition."""

FOREIGN_UNIT = {6: OTHER_COUNTY, 2: OTHER_COUNTY[:2]}
"""A county (6 digits) and a province (2 digits) the test application has nothing to do with."""


def _path(target: str) -> list[str]:
    """The shortest list of events that takes a new application to ``target``."""
    paths: dict[str, list[str]] = {INITIAL: []}
    queue = deque([INITIAL])
    while queue:
        state = queue.popleft()
        for (source, event), dest in TRANSITIONS.items():
            if source == state and dest not in paths:
                paths[dest] = [*paths[state], event]
                queue.append(dest)
    assert target in paths, f"{target} is not reachable from {INITIAL}"
    return paths[target]


PATHS = {state: _path(state) for state in STATES}


def _workplace(role: str) -> tuple[str | None, int]:
    """Which region of an application a role's unit is compared with, and how many digits."""
    places = {(p.unit_field, p.unit_digits) for p in PERMISSIONS.values() if p.role == role}
    assert len(places) == 1, f"{role} is matched against different regions: {places}"
    return places.pop()


def actor(role: str, view: wf.ApplicationView, *, own: bool) -> wf.Actor:
    """An actor of ``role`` working for the application's unit (``own``) or a foreign one."""
    field, digits = _workplace(role)
    home = str(getattr(view, field))[:digits] if field else None  # None: any unit will do
    assert home != FOREIGN_UNIT[digits]
    unit = home if own and home else FOREIGN_UNIT[digits]
    return wf.Actor(id=f"{role}-{unit}", role=role, unit=unit)


def valid_payload(event: str, view: wf.ApplicationView) -> dict[str, Any]:
    """Arguments with which the event's guards hold."""
    if event == "reject":
        return {"ground": wf.RejectionGround.IDENTITY_MISMATCH, "note": ""}
    if event == "collect":
        return {"receipt_no": view.receipt_no, "old_card_returned": True}
    return {}


def reach(flow: wf.Workflow, state: str) -> wf.ApplicationView:
    """A renewal (the kind with the most guards) driven along the legal path to ``state``."""
    submitter = wf.Actor(id="clerk", role=wf.Role.ACCEPTANCE_CLERK, unit=form().acceptance_region)
    view = flow.submit(form(wf.Kind.RENEWAL), actor=submitter)
    for event in PATHS[state]:
        who = actor(PERMISSIONS[event].role, view, own=True)
        view = flow.fire(view.id, event, actor=who, **valid_payload(event, view))
    assert view.state == state
    return view


def expected_error(
    state: str, event: str, role: str, *, own: bool
) -> type[wf.WorkflowError] | None:
    permission = PERMISSIONS[event]
    if role != permission.role or (permission.unit_field is not None and not own):
        return wf.PermissionDenied
    if (state, event) not in TRANSITIONS:
        return wf.IllegalTransition
    return None


CASES = [
    pytest.param(
        state, event, role, own, id=f"{state}-{event}-{role}-{'own' if own else 'foreign'}"
    )
    for state in STATES
    for event in EVENTS
    for role in ROLES
    for own in (True, False)
]


def test_the_table_covers_the_documented_process() -> None:
    assert len(STATES) == 7
    assert len(EVENTS) == 6
    assert set(EVENTS) == {e for _, e in TRANSITIONS}
    assert PATHS["rejected"][-1] == "reject"
    # Exactly one (state, event, role, own unit) combination is allowed per legal transition.
    allowed = [c for c in CASES if expected_error(*c.values[:3], own=c.values[3]) is None]
    assert len(allowed) == len(TRANSITIONS)


@pytest.mark.parametrize(("state", "event", "role", "own"), CASES)
def test_an_event_succeeds_exactly_when_the_definition_allows_it(
    flow: wf.Workflow, clock: Clock, state: str, event: str, role: str, own: bool
) -> None:
    view = reach(flow, state)
    who = actor(role, view, own=own)
    before_history = flow.history(view.id)
    clock.advance(hours=1)
    expected = expected_error(state, event, role, own=own)
    case = f"{event} by {role} of {who.unit} in {state}"

    if expected is None:
        after = flow.fire(view.id, event, actor=who, **valid_payload(event, view))
        target = TRANSITIONS[(state, event)]
        assert (after.state, after.version) == (target, view.version + 1), case
        assert flow.get(view.id) == after, case
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
        return

    with pytest.raises(wf.WorkflowError) as caught:
        flow.fire(view.id, event, actor=who, **valid_payload(event, view))
    error = caught.value
    assert type(error) is expected, f"{case}: expected {expected.__name__}, got {error!r}"
    assert error.event == event  # type: ignore[attr-defined]
    if isinstance(error, wf.PermissionDenied):
        assert error.role == role, case
    if isinstance(error, wf.IllegalTransition):
        assert error.state == state, case
    assert flow.get(view.id) == view, f"{case}: the application changed"
    assert flow.history(view.id) == before_history, f"{case}: the history changed"


@pytest.mark.parametrize("own", [True, False], ids=["own", "foreign"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", NOT_EVENTS)
@pytest.mark.parametrize("state", STATES)
def test_fire_refuses_names_that_are_not_events_in_every_state(
    flow: wf.Workflow, state: str, name: str, role: str, own: bool
) -> None:
    view = reach(flow, state)
    before_history = flow.history(view.id)
    with pytest.raises(wf.WorkflowError) as caught:
        flow.fire(view.id, name, actor=actor(role, view, own=own))
    error = caught.value
    assert type(error) is wf.IllegalTransition, f"{name} in {state}: got {error!r}"
    assert (error.event, error.state) == (name, state)
    assert flow.get(view.id) == view
    assert flow.history(view.id) == before_history
