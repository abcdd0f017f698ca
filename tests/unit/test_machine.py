"""The definition, with no database: what the machine class says and what is compiled from it."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from statemachine import State as SMState
from statemachine.exceptions import TransitionNotAllowed

import workflow as wf
from workflow.engine.definition import (
    Definition,
    DefinitionError,
    EventRule,
    Permission,
    ProcessMachine,
)
from workflow.machines.application import APPLICATION, ISSUE_WITHIN, ApplicationMachine
from workflow.models.schemas import CollectPayload, ExtendPayload, NoPayload, RejectPayload
from workflow.models.tables import AWAITING_CARD_STATES, CLOSED_STATES

EVENTS = (
    "transmit",
    "approve",
    "reject",
    "produce",
    "mark_ready",
    "collect",
    "extend_deadline",
)


SUBMITTED_AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def record(kind: str = "renewal", receipt_no: str = "ABCDEFGH2345") -> Any:
    return SimpleNamespace(
        kind=kind,
        receipt_no=receipt_no,
        submitted_at=SUBMITTED_AT,
        due_at=SUBMITTED_AT + ISSUE_WITHIN,
    )


def payload_for(event: str, **overrides: Any) -> Any:
    if event == "extend_deadline":
        return ExtendPayload(**{"days": 10, "reason": "the road is closed", **overrides})
    if event == "reject":
        return RejectPayload(**{"ground": "identity_mismatch", **overrides})
    if event == "collect":
        return CollectPayload(
            **{"receipt_no": "ABCDEFGH2345", "old_card_returned": True, **overrides}
        )
    return NoPayload()


def test_the_state_enum_names_exactly_the_machines_states() -> None:
    assert {s.value for s in ApplicationMachine.states} == set(wf.State)
    assert APPLICATION.initial == wf.State.SUBMITTED


def test_rejected_and_collected_are_the_final_states() -> None:
    assert APPLICATION.finals == {wf.State.REJECTED, wf.State.COLLECTED}
    assert set(CLOSED_STATES) == APPLICATION.finals


def test_the_awaiting_card_states_are_those_from_which_ready_is_still_reachable() -> None:
    graph: dict[str, set[str]] = {}
    for (source, _), t in APPLICATION.transitions.items():
        graph.setdefault(source, set()).add(t.target)

    def reaches_ready(state: str, seen: frozenset[str] = frozenset()) -> bool:
        nexts = graph.get(state, set())
        return "ready" in nexts or any(reaches_ready(n, seen | {state}) for n in nexts - seen)

    assert {s for s in APPLICATION.states if reaches_ready(s)} == set(AWAITING_CARD_STATES)


def test_the_machine_has_the_seven_events_of_the_process() -> None:
    assert {e for _, e in APPLICATION.transitions} == set(EVENTS)
    assert set(APPLICATION.events) == set(EVENTS)
    assert APPLICATION.creation_event == "submit"


def test_every_event_says_its_business_rule_and_who_fires_it() -> None:
    for event, rule in APPLICATION.events.items():
        assert rule.summary, event
        assert rule.permission.description, event


@pytest.mark.parametrize("state", list(wf.State))
@pytest.mark.parametrize("event", EVENTS)
def test_the_compiled_table_agrees_with_a_real_machine(state: str, event: str) -> None:
    class Row:
        pass

    row = Row()
    row.state = state  # type: ignore[attr-defined]
    machine = ApplicationMachine(row)
    expected = APPLICATION.transition(state, event)
    if expected is None:
        with pytest.raises(TransitionNotAllowed):
            machine.send(event, record=record(), payload=payload_for(event))
        assert row.state == state  # type: ignore[attr-defined]
    else:
        machine.send(event, record=record(), payload=payload_for(event))
        assert row.state == expected.target  # type: ignore[attr-defined]


def test_a_renewal_is_not_collected_without_the_old_card_by_the_real_machine() -> None:
    path = [
        ("transmit", record(), NoPayload()),
        ("approve", record(), NoPayload()),
        ("produce", record(), NoPayload()),
        ("mark_ready", record(), NoPayload()),
        ("collect", record(), payload_for("collect", old_card_returned=False)),
    ]
    with pytest.raises(wf.GuardFailed) as info:
        APPLICATION.replay(path)
    assert info.value.guard == "old_card_handed_back"
    path[-1] = (
        "collect",
        record(kind="replacement"),
        payload_for("collect", old_card_returned=False),
    )
    assert APPLICATION.replay(path) == wf.State.COLLECTED


def test_a_wrong_receipt_is_refused_before_the_old_card_is_asked_for() -> None:
    transition = APPLICATION.transition("ready", "collect")
    assert transition is not None
    assert [g.name for g in transition.guards] == ["receipt_matches", "old_card_handed_back"]
    wrong = payload_for("collect", receipt_no="WRONG", old_card_returned=False)
    assert not transition.guards[0].allows(record(), wrong)


def test_the_ground_other_needs_a_note() -> None:
    transition = APPLICATION.transition("transmitted", "reject")
    assert transition is not None
    (guard,) = transition.guards
    assert not guard.allows(record(), RejectPayload(ground="other", note="   "))
    assert guard.allows(record(), RejectPayload(ground="other", note="moved abroad"))
    assert guard.allows(record(), RejectPayload(ground="bad_credit_record"))
    assert guard.facts(record(), RejectPayload(ground="other", note="x")) == {
        "ground": "other",
        "note": "x",
    }


def test_permissions_check_role_and_unit() -> None:
    rule = APPLICATION.events["produce"].permission
    row = SimpleNamespace(acceptance_region="440305", hukou_region="110105")
    rule.require("produce", wf.Actor(id="p", role="card_producer", unit="44"), row)
    with pytest.raises(wf.PermissionDenied, match="unit 11"):
        rule.require("produce", wf.Actor(id="p", role="card_producer", unit="11"), row)
    with pytest.raises(wf.PermissionDenied, match="only the role card_producer"):
        rule.require("produce", wf.Actor(id="c", role="acceptance_clerk", unit="440305"), row)


def test_a_machine_without_rules_for_every_event_is_refused() -> None:
    class Incomplete(ProcessMachine):
        a = SMState(initial=True)
        b = SMState(final=True)
        go = a.to(b)
        creation_event: ClassVar[str | None] = "create"
        creation: ClassVar[Permission | None] = Permission("acceptance_clerk", None)

    with pytest.raises(DefinitionError, match="must name exactly the events"):
        Definition.of(Incomplete, name="incomplete")


def test_a_machine_with_an_anonymous_condition_is_refused() -> None:
    anyone = Permission("acceptance_clerk", None)

    class Conditional(ProcessMachine):
        a = SMState(initial=True)
        b = SMState(final=True)
        go = a.to(b, cond="is_ok")
        creation_event: ClassVar[str | None] = "create"
        creation: ClassVar[Permission | None] = anyone
        rules: ClassVar[dict[str, EventRule]] = {"go": EventRule(anyone, NoPayload)}

        def is_ok(self) -> bool:
            return True

    with pytest.raises(DefinitionError, match="Guard validators"):
        Definition.of(Conditional, name="conditional")
