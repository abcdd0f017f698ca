"""A process definition compiled from a python-statemachine `StateMachine` class.

Generic: nothing here knows the application process. A machine class declares its states and
transitions with python-statemachine, its guards as validators built from `Guard`, and who may
fire each event in a ``rules`` class attribute. `Definition.of` reads all of that once, at import
time, into plain lookup tables the engine uses on every command, so no machine instance is built
per command. `Definition.replay` runs a history through a real machine instance instead, which is
how tests and verification prove the two agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel
from statemachine import StateMachine

from workflow.errors import GuardFailed, PermissionDenied

Record = Any
"""A stored record with attribute access to its columns (`Columns`, or any object)."""


class Columns:
    """Attribute access to a mapping of column values, as guards and permissions read them."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[Any, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None


Payload = BaseModel


@dataclass(frozen=True)
class Guard:
    """A condition an event must meet, with the business rule in words for auditors.

    One predicate decides it: ``facts(record, payload)`` is what the command establishes (and
    the history row records), and ``holds(record, facts)`` decides on those facts and the
    record's fixed columns alone. The engine decides a command with it and `verify()` re-checks
    a stored history with the very same predicate, so the two cannot disagree. Facts never hold
    a secret: a receipt is recorded as whether it matched, never as itself.
    """

    name: str
    rule: str
    facts: Callable[[Record, Any], Mapping[str, Any]]
    holds: Callable[[Record, Mapping[str, Any]], bool]
    recorded_since: str | None = None
    """For a guard added to an event that existed before: the revision from which every row of
    its event records its facts (``keys``). Older rows have none and are taken as they were
    allowed then; a later row without them is no row the library wrote."""
    keys: tuple[str, ...] = ()
    validator: Callable[..., None] = field(init=False, repr=False, compare=False)

    def allows(self, record: Record, payload: Any) -> bool:
        """Whether the guard holds for this payload on this record."""
        return self.holds(record, self.facts(record, payload))

    def __post_init__(self) -> None:
        guard = self

        # python-statemachine calls validators with the event's keyword arguments and the bound
        # model; whatever a validator raises reaches the caller unchanged.
        def validator(*args: Any, **kwargs: Any) -> None:
            event = kwargs.get("event")
            event_id = str(getattr(event, "id", event))
            if not guard.allows(kwargs["record"], kwargs.get("payload")):
                raise GuardFailed(event_id, guard.name, guard.rule)

        validator.__name__ = validator.__qualname__ = f"guard_{self.name}"
        validator.guard = self  # type: ignore[attr-defined]
        object.__setattr__(self, "validator", validator)


@dataclass(frozen=True)
class Permission:
    """Which role may fire an event, and which unit it must belong to.

    The actor's unit must equal the first ``unit_digits`` characters of the record's
    ``unit_field`` (a division code); ``unit_field=None`` means any unit.
    """

    role: str
    unit_field: str | None
    unit_digits: int = 6
    description: str = ""

    def problems(self, event: str, actor: Any, record: Record) -> list[tuple[str, str]]:
        """Every reason ``actor`` may not fire ``event`` on ``record``: ``(kind, message)`` with
        kind ``"role"`` or ``"unit"``; empty if it may."""
        found: list[tuple[str, str]] = []
        if actor.role != self.role:
            found.append(("role", f"only the role {self.role} may {event}"))
        if self.unit_field is not None:
            value = str(getattr(record, self.unit_field))
            expected = value[: self.unit_digits]
            if actor.unit != expected:
                whose = (
                    f"the record's {self.unit_field} {value}"
                    if expected == value
                    else f"the province {expected} of the record's {self.unit_field} {value}"
                )
                found.append(("unit", f"actor's unit {actor.unit} is not {whose}"))
        return found

    def require(self, event: str, actor: Any, record: Record) -> None:
        """Raise `PermissionDenied` unless ``actor`` may fire ``event`` on ``record``."""
        found = self.problems(event, actor, record)
        if found:
            raise PermissionDenied(event, str(actor.role), "; ".join(m for _, m in found))


@dataclass(frozen=True)
class EventRule:
    """What an event needs besides its transitions: who fires it, its payload, its effect.

    ``effect(record, payload, now)`` returns the columns to set besides state and version.
    """

    permission: Permission
    payload: type[BaseModel]
    effect: Callable[[Record, Any, datetime], Mapping[str, Any]] | None = None
    summary: str = ""


@dataclass(frozen=True)
class Transition:
    """One arrow of the machine: ``event`` takes ``source`` to ``target`` if all guards hold."""

    event: str
    source: str
    target: str
    guards: tuple[Guard, ...]


class DefinitionError(Exception):
    """A machine class is not a complete definition (raised at import time)."""


@dataclass(frozen=True)
class Definition:
    """The lookup tables of one machine class; build it with `Definition.of`."""

    name: str
    machine: type[StateMachine]
    states: tuple[str, ...]
    initial: str
    finals: frozenset[str]
    transitions: Mapping[tuple[str, str], Transition]
    events: Mapping[str, EventRule]
    creation: Permission
    creation_event: str
    creation_facts: Callable[[Record], Mapping[str, Any]]
    creation_guards: tuple[Guard, ...] = ()
    identity: tuple[str, ...] = ()
    history_columns: Callable[[Sequence[Mapping[Any, Any]]], Mapping[str, Any]] | None = None
    history_facts: Callable[[str, Sequence[Mapping[Any, Any]]], Mapping[str, Any]] | None = None

    @classmethod
    def of(cls, machine: type[StateMachine], *, name: str) -> Definition:
        rules: Mapping[str, EventRule] = getattr(machine, "rules", {})
        creation: Permission | None = getattr(machine, "creation", None)
        creation_event: str | None = getattr(machine, "creation_event", None)
        creation_facts = getattr(machine, "creation_facts", None) or _no_facts
        creation_guards = tuple(getattr(machine, "creation_guards", ()))
        if not all(isinstance(g, Guard) for g in creation_guards):
            raise DefinitionError(f"{machine.__name__}.creation_guards must be Guards")
        if creation is None or creation_event is None:
            raise DefinitionError(f"{machine.__name__} must set `creation` and `creation_event`")
        transitions: dict[tuple[str, str], Transition] = {}
        for state in machine.states:
            for t in state.transitions:
                guards = tuple(_guard_of(v, machine) for v in t.validators)
                if list(t.cond):
                    raise DefinitionError(
                        f"{machine.__name__}: use Guard validators, not cond/unless, so a "
                        "refusal can name the rule that failed"
                    )
                for event in t.events:
                    key = (str(t.source.value), event.id)
                    if key in transitions:
                        raise DefinitionError(f"{machine.__name__}: two transitions for {key}")
                    transitions[key] = Transition(
                        event.id, str(t.source.value), str(t.target.value), guards
                    )
        event_ids = {e for _, e in transitions}
        if set(rules) != event_ids:
            raise DefinitionError(
                f"{machine.__name__}.rules must name exactly the events {sorted(event_ids)}, "
                f"got {sorted(rules)}"
            )
        if creation_event in event_ids:
            raise DefinitionError(f"{machine.__name__}: {creation_event!r} is also an event")
        initial = machine.initial_state
        assert initial is not None
        return cls(
            name=name,
            machine=machine,
            states=tuple(str(s.value) for s in machine.states),
            initial=str(initial.value),
            finals=frozenset(str(s.value) for s in machine.final_states),
            transitions=transitions,
            events=dict(rules),
            creation=creation,
            creation_event=creation_event,
            creation_facts=creation_facts,
            creation_guards=creation_guards,
            identity=tuple(getattr(machine, "identity", ())),
            history_columns=getattr(machine, "history_columns", None),
            history_facts=getattr(machine, "history_facts", None),
        )

    def transition(self, state: str, event: str) -> Transition | None:
        """The transition ``event`` takes from ``state``, or None if it is not allowed there."""
        return self.transitions.get((state, event))

    def replay(self, steps: Iterable[tuple[str, Record, Any]]) -> str:
        """Run ``(event, record, payload)`` steps through a real machine from the initial state.

        Returns the state reached; raises python-statemachine's ``TransitionNotAllowed`` for an
        illegal step and `GuardFailed` for a guard that does not hold.
        """
        holder = _StateHolder(self.initial)
        machine = self.machine(holder)
        for event, record, payload in steps:
            machine.send(event, record=record, payload=payload)
        return holder.state


class _StateHolder:
    """The model a replaying machine binds to; it holds the state and nothing a callback could
    be mistaken for (the bound model is also a listener)."""

    def __init__(self, state: str) -> None:
        self.state = state


def _no_facts(record: Record) -> Mapping[str, Any]:
    return {}


def _guard_of(spec: Any, machine: type[StateMachine]) -> Guard:
    guard = getattr(spec.func, "guard", None)
    if not isinstance(guard, Guard):
        raise DefinitionError(f"{machine.__name__}: validator {spec!r} is not built from a Guard")
    return guard


class ProcessMachine(StateMachine):
    """Base of the library's machines: what a machine class must declare besides its graph."""

    rules: ClassVar[Mapping[str, EventRule]] = {}
    """Who may fire each event, its payload model and its effect on the record's columns."""
    creation: ClassVar[Permission | None] = None
    """Who may create a record (it starts in the initial state)."""
    creation_event: ClassVar[str | None] = None
    """The name the creation has in the history (it is not a transition)."""
    creation_facts: ClassVar[staticmethod[[Record], Mapping[str, Any]] | None] = None
    """The facts about a new record that its first history row keeps (a staticmethod);
    verification compares them with the stored record, so a changed fixed column is detected."""
    creation_guards: ClassVar[tuple[Guard, ...]] = ()
    """Conditions the creation must meet, decided on the new record's columns and the creation
    command's validated argument; their facts go into the first history row."""
    identity: ClassVar[tuple[str, ...]] = ()
    """The fixed columns that say whose record it is (a citizen number, a name, a receipt).
    The first history row keeps a digest of them, never the values, so a record rebuilt with
    another identity under an existing history is detected."""
    history_columns: ClassVar[
        staticmethod[[Sequence[Mapping[Any, Any]]], Mapping[str, Any]] | None
    ] = None
    """The columns the events set (a deadline, a refusal's ground, an end time), as the
    record's history rows say they must be (a staticmethod): verification compares them with
    the stored record, so a column changed behind the history is detected."""
    history_facts: ClassVar[
        staticmethod[[str, Sequence[Mapping[Any, Any]]], Mapping[str, Any]] | None
    ] = None
    """Facts an event's row records that the record's own earlier rows decide (whether the
    deadline was extended before), from the event and those rows (a staticmethod):
    verification re-derives them, so a row that records them otherwise is detected."""
