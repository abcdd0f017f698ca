"""The diagram model: what every renderer draws, extracted once from a `Definition`.

As python-statemachine's ``contrib/diagram`` does, a definition is read once into plain data
(states, arrows with their guards and who may fire them, the creation arrow, the numbered path
of one record, the reactions between machines) and each format only renders that data. The
`fingerprint` is computed here too, over the definition itself: auditors compare it with the one
of the running code, so its value must never depend on how a diagram is drawn.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from workflow.engine.definition import Definition, Permission
from workflow.engine.registry import Reaction
from workflow.machines.reactions import REACTIONS

REGENERATE = "python -m workflow.diagrams"
"""The command that regenerates the committed diagrams and tables."""

DIVISION_CODE_DIGITS = 6
"""The digits of a county's division code: a unit rule on fewer digits names a larger area."""

AREAS = {2: "province", 4: "prefecture"}
"""What the first digits of a division code (GB/T 2260) name."""


# ---------------------------------------------------------------------------------------------
# The path one record took


class PathStep(NamedTuple):
    """One step of a record's history: ``event`` took it from ``from_state`` to ``to_state``.

    The creation event has ``from_state=None``. A `workflow.TransitionRecord` maps onto it with
    `PathStep.of` (or a whole history with `path_of`).
    """

    event: str
    from_state: str | None
    to_state: str

    @classmethod
    def of(cls, row: HistoryRow) -> PathStep:
        source = None if row.from_state is None else str(row.from_state)
        return cls(str(row.event), source, str(row.to_state))


class HistoryRow(Protocol):
    """Anything shaped like a row of the transition log (`workflow.TransitionRecord`)."""

    @property
    def event(self) -> str: ...
    @property
    def from_state(self) -> str | None: ...
    @property
    def to_state(self) -> str: ...


def path_of(history: Iterable[HistoryRow]) -> tuple[PathStep, ...]:
    """The steps of a history (oldest first, as `Workflow.history` returns it)."""
    return tuple(PathStep.of(row) for row in history)


# ---------------------------------------------------------------------------------------------
# Fingerprint


def _permission_facts(permission: Permission) -> dict[str, Any]:
    return {
        "role": str(permission.role),
        "unit_field": permission.unit_field,
        "unit_digits": permission.unit_digits,
    }


def canonical(definition: Definition) -> str:
    """The canonical JSON `fingerprint` hashes: what the process does, in a stable order.

    States, transitions (with their guards, in the order they are checked) and who may fire
    each event; not the prose summaries, whose wording does not change the process.
    """
    data = {
        "machine": definition.name,
        "states": [
            {"id": s, "initial": s == definition.initial, "final": s in definition.finals}
            for s in sorted(definition.states)
        ],
        "transitions": [
            {
                "event": t.event,
                "source": t.source,
                "target": t.target,
                "guards": [{"name": g.name, "rule": g.rule} for g in t.guards],
            }
            for _, t in sorted(definition.transitions.items())
        ],
        "events": {
            event: {"permission": _permission_facts(rule.permission)}
            for event, rule in sorted(definition.events.items())
        },
        "creation": {
            "event": definition.creation_event,
            "permission": _permission_facts(definition.creation),
            **(
                {"guards": [{"name": g.name, "rule": g.rule} for g in definition.creation_guards]}
                if definition.creation_guards
                else {}
            ),
        },
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(definition: Definition) -> str:
    """12 hex characters of SHA-256 over `canonical`: equal definitions, equal fingerprints."""
    return hashlib.sha256(canonical(definition).encode("utf-8")).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class Who:
    """Who may fire an arrow: the role, the unit rule, and the permission's own words."""

    role: str
    unit: str
    """"any unit", or which digits of which column the actor's unit must equal."""
    description: str
    where: str = "any unit"
    """The unit rule in a diagram's few words: the record's column the actor's unit must equal
    (``hukou_region``), the area its first digits name (``province of acceptance_region``), or
    ``any unit``."""

    @classmethod
    def of(cls, permission: Permission) -> Who:
        if permission.unit_field is None:
            unit = where = "any unit"
        else:
            unit = (
                f"actor's unit = first {permission.unit_digits} digits of the record's "
                f"`{permission.unit_field}`"
            )
            where = permission.unit_field
            if permission.unit_digits < DIVISION_CODE_DIGITS:
                area = AREAS.get(permission.unit_digits, f"first {permission.unit_digits} digits")
                where = f"{area} of {where}"
        return cls(str(permission.role), unit, permission.description, where)

    @property
    def tag(self) -> str:
        """Who may fire the arrow, as a diagram's label shows it: ``by hukou_reviewer @
        hukou_region``."""
        return f"by {self.role} @ {self.where}"


@dataclass(frozen=True)
class GuardNote:
    """A guard of an arrow: its name and its rule in words."""

    name: str
    rule: str


@dataclass(frozen=True)
class DiagramState:
    name: str
    initial: bool
    final: bool
    visited: bool
    """On the drawn path (always False when no path is drawn)."""


@dataclass(frozen=True)
class Arrow:
    """One arrow: ``event`` takes ``source`` (None: the record is created) to ``target``."""

    event: str
    source: str | None
    target: str
    guards: tuple[GuardNote, ...]
    who: Who
    summary: str
    steps: tuple[int, ...]
    """The numbers of the path's steps that took this arrow, in order."""

    @property
    def guard_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.guards)


@dataclass(frozen=True)
class ReactionNote:
    """A rule between machines that follows one of this machine's events, in plain words."""

    event: str
    when: str
    does: str


@dataclass(frozen=True)
class Diagram:
    """Everything a renderer draws of one machine; build it with `extract`."""

    name: str
    fingerprint: str
    states: tuple[DiagramState, ...]
    creation: Arrow
    arrows: tuple[Arrow, ...]
    """The transitions, in the machine class's declaration order (fixed, so deterministic)."""
    reactions: tuple[ReactionNote, ...]
    path_length: int | None
    """The number of steps of the drawn path; None when no path is drawn."""
    record_id: str | None = None
    """The id of the record whose path is drawn, shown on the diagram; None when not given."""

    @property
    def highlighted(self) -> bool:
        return self.path_length is not None

    @property
    def initial(self) -> DiagramState:
        return next(s for s in self.states if s.initial)

    @property
    def finals(self) -> tuple[DiagramState, ...]:
        return tuple(s for s in self.states if s.final)


def extract(
    definition: Definition,
    *,
    path: Sequence[PathStep] | None = None,
    record_id: object | None = None,
    reactions: Iterable[Reaction] = REACTIONS,
) -> Diagram:
    """The diagram of ``definition``; with ``path``, that path's steps numbered on its arrows,
    and with ``record_id`` (only with ``path``) the id of the record that took it.

    Of ``reactions`` (the library's table by default) it keeps those that follow this
    machine's events. Raises ``ValueError`` for a step of ``path`` that is not an arrow of the
    machine.
    """
    if record_id is not None and path is None:
        raise ValueError("record_id names the record whose path is drawn: give the path too")
    steps, visited = _walk(definition, path)
    creation = definition.creation_event
    return Diagram(
        name=definition.name,
        fingerprint=fingerprint(definition),
        states=tuple(
            DiagramState(s, s == definition.initial, s in definition.finals, visited=s in visited)
            for s in definition.states
        ),
        creation=Arrow(
            creation,
            None,
            definition.initial,
            tuple(GuardNote(g.name, g.rule) for g in definition.creation_guards),
            Who.of(definition.creation),
            f"Creates the record in its initial state `{definition.initial}`.",
            steps.get((None, creation), ()),
        ),
        arrows=tuple(
            Arrow(
                t.event,
                t.source,
                t.target,
                tuple(GuardNote(g.name, g.rule) for g in t.guards),
                Who.of(definition.events[t.event].permission),
                definition.events[t.event].summary,
                steps.get((t.source, t.event), ()),
            )
            for t in definition.transitions.values()
        ),
        reactions=tuple(
            ReactionNote(r.event, r.when, r.does) for r in reactions if r.machine == definition.name
        ),
        path_length=None if path is None else len(path),
        record_id=None if record_id is None else str(record_id),
    )


def _walk(
    definition: Definition, path: Sequence[PathStep] | None
) -> tuple[dict[tuple[str | None, str], tuple[int, ...]], frozenset[str]]:
    """Which step numbers took each arrow (keyed ``(source or None, event)``), and the states
    the path visited."""
    steps: dict[tuple[str | None, str], tuple[int, ...]] = {}
    visited: set[str] = set()
    for number, step in enumerate(path or (), start=1):
        event, source, target = step.event, step.from_state, step.to_state
        if source is None:
            fits = event == definition.creation_event and target == definition.initial
        else:
            t = definition.transition(source, event)
            fits = t is not None and t.target == target
            visited.add(source)
        if not fits:
            shown = "(new)" if source is None else source
            raise ValueError(
                f"step {number} ({event}: {shown} -> {target}) is not a transition of the "
                f"{definition.name} machine"
            )
        visited.add(target)
        steps[source, event] = (*steps.get((source, event), ()), number)
    return steps, frozenset(visited)


def steps_phrase(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"


def path_title(diagram: Diagram) -> str | None:
    """The line a path diagram carries under its title: whose path it is and how long, e.g.
    ``path of record 0b6f…: 6 steps``; None when no path is drawn."""
    if diagram.path_length is None:
        return None
    whose = (
        "one record's path" if diagram.record_id is None else f"path of record {diagram.record_id}"
    )
    return f"highlighted: {whose}, {steps_phrase(diagram.path_length)}"


def step_label(arrow: Arrow) -> str:
    """The event, led by the numbers of the path's steps that took it: ``(2, 4) hold``."""
    # "(1) transmit", not "1. transmit": Mermaid reads a label starting "1." as a Markdown list.
    if not arrow.steps:
        return arrow.event
    return f"({', '.join(str(n) for n in arrow.steps)}) {arrow.event}"
