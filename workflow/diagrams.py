"""Diagrams and tables generated from a process definition, for auditors.

Everything here is derived from a compiled `Definition` and nothing else, so it works for any
machine of the library, and every artifact carries the definition's `fingerprint`: an auditor
compares the fingerprint printed on a diagram with the one of the running code to know that the
picture is the process that actually runs. All output is deterministic (byte-identical on every
call), so the generated files can be committed and a test can tell when they are stale.

Regenerate the committed files with ``python -m workflow.diagrams`` (needs Graphviz's ``dot``
for the SVG).
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from workflow.definition import Definition, Permission, Transition
from workflow.errors import WorkflowError

__all__ = [
    "REGENERATE",
    "Artifact",
    "GraphvizFailed",
    "GraphvizMissing",
    "HistoryRow",
    "PathStep",
    "artifacts",
    "canonical",
    "document",
    "dot",
    "fingerprint",
    "main",
    "mermaid",
    "path_of",
    "svg",
    "transition_table",
]

REGENERATE = "python -m workflow.diagrams"
"""The command that regenerates the committed diagrams and tables."""

INSTALL_GRAPHVIZ = (
    "install Graphviz: `apt-get install graphviz` on Debian/Ubuntu, "
    "`brew install graphviz` on macOS (or `make diagrams`, which installs it when run as root)"
)


class GraphvizMissing(WorkflowError):
    """Graphviz's ``dot`` program, needed to draw SVG, is not on the PATH."""

    code = "graphviz_missing"

    def __init__(self) -> None:
        super().__init__(f"Graphviz's `dot` program was not found on the PATH; {INSTALL_GRAPHVIZ}")


class GraphvizFailed(WorkflowError):
    """``dot`` ran but refused the generated graph; ``stderr`` says why."""

    code = "graphviz_failed"

    def __init__(self, returncode: int, stderr: str) -> None:
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"`dot -Tsvg` exited with status {returncode}: {stderr.strip()}")


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
        return cls(str(row.event), _opt_str(row.from_state), str(row.to_state))


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


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class _Highlight:
    """Which steps of a path used each edge and state; edge key ``(source or None, event)``."""

    steps: Mapping[tuple[str | None, str], tuple[int, ...]]
    visited: frozenset[str]
    length: int

    def numbers(self, source: str | None, event: str) -> tuple[int, ...]:
        return self.steps.get((source, event), ())


def _highlight(definition: Definition, path: Sequence[PathStep] | None) -> _Highlight | None:
    if path is None:
        return None
    steps: dict[tuple[str | None, str], list[int]] = {}
    visited: set[str] = set()
    for number, step in enumerate(path, start=1):
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
        steps.setdefault((source, event), []).append(number)
    return _Highlight(
        steps={key: tuple(numbers) for key, numbers in steps.items()},
        visited=frozenset(visited),
        length=len(path),
    )


def _steps(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"


def _step_label(event: str, numbers: Sequence[int]) -> str:
    # "(1) transmit", not "1. transmit": Mermaid reads a label starting "1." as a Markdown list.
    if not numbers:
        return event
    return f"({', '.join(str(n) for n in numbers)}) {event}"


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
        },
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(definition: Definition) -> str:
    """12 hex characters of SHA-256 over `canonical`: equal definitions, equal fingerprints."""
    return hashlib.sha256(canonical(definition).encode("utf-8")).hexdigest()[:12]


def _transitions(definition: Definition) -> list[Transition]:
    # The definition's own order (the machine class's declaration order) reads best; it is
    # fixed by the class, so the output stays deterministic.
    return list(definition.transitions.values())


# ---------------------------------------------------------------------------------------------
# Mermaid

_MERMAID_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MERMAID_RESERVED = frozenset({"state", "note", "class", "classDef", "style", "direction", "end"})


def _mermaid_ids(definition: Definition) -> dict[str, str]:
    ids: dict[str, str] = {}
    for index, state in enumerate(definition.states):
        plain = _MERMAID_ID.fullmatch(state) and state not in _MERMAID_RESERVED
        ids[state] = state if plain else f"state_{index}"
    return ids


def _mermaid_text(text: str) -> str:
    # Mermaid's entity codes keep characters its grammar would read as syntax.
    return "".join(f"#{ord(c)};" if c in '#;:"<>{}\n' else c for c in text)


def mermaid(definition: Definition, *, path: Sequence[PathStep] | None = None) -> str:
    """A Mermaid ``stateDiagram-v2`` of the definition; with ``path``, that path highlighted.

    Guarded transitions carry their guards in brackets (``collect [receipt_matches, ...]``);
    final states get the ``final`` class; along a path, states visited get ``visited`` and the
    transitions fired are numbered in order (``(2) transmit``).
    """
    hl = _highlight(definition, path)
    ids = _mermaid_ids(definition)
    lines = [
        "stateDiagram-v2",
        f"    %% {definition.name} machine: generated by `{REGENERATE}`; do not edit",
        f"    %% fingerprint: {fingerprint(definition)}",
    ]
    if hl is not None:
        lines.append(f"    %% highlighted: one record's path, {_steps(hl.length)}")
    lines += [
        "    classDef initial font-weight:bold,stroke-width:3px",
        "    classDef final font-weight:bold,stroke:#111827,stroke-width:4px",
    ]
    if hl is not None:
        lines.append("    classDef visited fill:#bfdbfe,stroke:#1d4ed8,color:#1e3a8a")
    for state in definition.states:
        if ids[state] != state:
            lines.append(f'    state "{_mermaid_text(state)}" as {ids[state]}')
    creation = definition.creation_event
    numbers = hl.numbers(None, creation) if hl else ()
    lines.append(f"    [*] --> {ids[definition.initial]} : {_step_label(creation, numbers)}")
    for t in _transitions(definition):
        numbers = hl.numbers(t.source, t.event) if hl else ()
        label = _step_label(t.event, numbers)
        if t.guards:
            label += f" [{', '.join(g.name for g in t.guards)}]"
        lines.append(f"    {ids[t.source]} --> {ids[t.target]} : {_mermaid_text(label)}")
    finals = [s for s in definition.states if s in definition.finals]
    lines += [f"    {ids[s]} --> [*]" for s in finals]
    lines.append(f"    class {ids[definition.initial]} initial")
    if finals:
        lines.append(f"    class {','.join(ids[s] for s in finals)} final")
    if hl is not None:
        visited = [ids[s] for s in definition.states if s in hl.visited]
        lines.append(f"    class {','.join(visited)} visited")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Graphviz

_FONT = "Helvetica"
_INK = "#111827"
_GUARD = "#b45309"  # amber: a transition that fires only when its guards hold
_PATH = "#1d4ed8"  # blue: the path one record took
_PATH_FILL = "#bfdbfe"
_FADED = "#9ca3af"  # what the path did not touch
_KEY = "#4b5563"


def _q(text: str) -> str:
    """A DOT double-quoted string (backslashes and quotes escaped, newlines as ``\\n``)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class _Html(str):
    """A Graphviz HTML-like label: written between ``<`` and ``>``, not quoted."""


def _attrs(**attrs: str | float) -> str:
    parts = []
    for key, value in attrs.items():
        if isinstance(value, _Html):
            shown = f"<{value}>"
        elif isinstance(value, str):
            shown = _q(value)
        else:
            shown = f"{value:g}"
        parts.append(f"{key}={shown}")
    return "[" + ", ".join(parts) + "]"


def _title_label(lines: Sequence[str], *, path: bool) -> _Html:
    # The SVG is also looked at on its own, so it carries a one-line key to its notation.
    key = "bold border: initial · double octagon: final · dashed amber: guarded"
    if path:
        key += " · blue, (n): step n of the path"
    body = "<br/>".join(html.escape(line) for line in lines)
    return _Html(f'{body}<br/><font point-size="11" color="{_KEY}">{html.escape(key)}</font>')


def _dot_ids(definition: Definition) -> dict[str, str]:
    # Graphviz keeps backslashes in a quoted node name as they are: awkward names get a plain
    # id, and every node shows its state in an explicit label.
    return {
        state: state if re.fullmatch(r"[A-Za-z0-9_]+", state) else f"state_{index}"
        for index, state in enumerate(definition.states)
    }


def _edge_label(event: str, numbers: Sequence[int], guards: Sequence[str]) -> str:
    label = _step_label(event, numbers)
    if guards:
        label += "\n[" + ",\n".join(guards) + "]"
    return label


def dot(definition: Definition, *, path: Sequence[PathStep] | None = None) -> str:
    """Graphviz DOT of the definition, written here (no object ids), so it is deterministic.

    The initial state has a bold border and an arrow from a black dot labelled with the creation
    event; final states are double octagons; guarded transitions are dashed amber with their
    guards under the event. With ``path``, the states visited are filled blue, the transitions
    fired are bold blue and numbered in order, and everything else is greyed.
    """
    hl = _highlight(definition, path)
    fp = fingerprint(definition)
    ids = _dot_ids(definition)
    start = "__start__"
    while start in ids.values():  # the black dot must not merge with a state of that name
        start += "_"
    title = [f"{definition.name} state machine", f"fingerprint {fp}"]
    if hl is not None:
        title.append(f"highlighted: one record's path, {_steps(hl.length)}")
    lines = [
        f"// {definition.name} machine: generated by `{REGENERATE}`; do not edit",
        f"// fingerprint: {fp}",
        f"digraph {_q(definition.name)} {{",
        "    "
        + "graph "
        + _attrs(
            label=_title_label(title, path=hl is not None),
            labelloc="t",
            fontname=_FONT,
            fontsize=16,
            rankdir="TB",
            nodesep=0.6,
            ranksep=0.5,
            pad=0.3,
        )
        + ";",
        f"    node {_attrs(shape='box', style='rounded', fontname=_FONT, fontsize=13)};",
        f"    edge {_attrs(fontname=_FONT, fontsize=11)};",
    ]

    def state_attrs(state: str) -> dict[str, str | float]:
        initial, final = state == definition.initial, state in definition.finals
        classes = [c for c, on in (("initial", initial), ("final", final)) if on]
        attrs: dict[str, str | float] = {"label": state}
        styles = ["rounded"]
        if final:
            attrs["shape"] = "doubleoctagon"
            styles = []
        if initial or final:
            styles.append("bold")
            attrs["penwidth"] = 2.5 if initial else 1.5
        color, fill = _INK, ""
        if hl is not None:
            if state in hl.visited:
                classes.append("visited")
                color, fill = _PATH, _PATH_FILL
            else:
                color = _FADED
        if fill:
            styles.append("filled")
            attrs["fillcolor"] = fill
        attrs["style"] = ",".join(styles)
        attrs["color"] = color
        attrs["fontcolor"] = color if hl is not None and state not in hl.visited else _INK
        attrs["class"] = " ".join(["state", *classes])
        attrs["tooltip"] = state
        return attrs

    for state in definition.states:
        lines.append(f"    {_q(ids[state])} {_attrs(**state_attrs(state))};")

    def edge_attrs(event: str, source: str | None, guards: Sequence[str]) -> str:
        numbers = hl.numbers(source, event) if hl else ()
        attrs: dict[str, str | float] = {"label": _edge_label(event, numbers, guards)}
        classes = ["transition"]
        color = _GUARD if guards else _INK
        if guards:
            classes.append("guarded")
            attrs["style"] = "dashed"
        if numbers:
            classes.append("fired")
            color = _PATH
            attrs["penwidth"] = 3
            attrs["fontname"] = f"{_FONT}-Bold"
        elif hl is not None:
            color = _FADED
        attrs["color"] = color
        attrs["fontcolor"] = color
        attrs["class"] = " ".join(classes)
        return _attrs(**attrs)

    start_color = _PATH if hl is not None and hl.numbers(None, definition.creation_event) else _INK
    lines.append(
        f"    {_q(start)} "
        + _attrs(
            shape="point",
            width=0.22,
            color=start_color,
            label="",
            tooltip=f"{definition.creation_event} creates the record",
        )
        + ";"
    )
    lines.append(
        f"    {_q(start)} -> {_q(ids[definition.initial])} "
        f"{edge_attrs(definition.creation_event, None, ())};"
    )
    for t in _transitions(definition):
        guards = [g.name for g in t.guards]
        lines.append(
            f"    {_q(ids[t.source])} -> {_q(ids[t.target])} "
            f"{edge_attrs(t.event, t.source, guards)};"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


_GRAPHVIZ_VERSION_COMMENT = re.compile(r"<!-- Generated by graphviz version .*?-->\n", re.DOTALL)


def svg(definition: Definition, *, path: Sequence[PathStep] | None = None) -> str:
    """The `dot` graph drawn by Graphviz (``dot -Tsvg``), as SVG text.

    Raises `GraphvizMissing` when ``dot`` is not installed. The comment naming the Graphviz
    version is removed, so the text depends only on the graph and the layout.
    """
    text = dot(definition, path=path)
    program = shutil.which("dot")
    if program is None:
        raise GraphvizMissing()
    try:
        done = subprocess.run(
            [program, "-Tsvg"],
            input=text,
            capture_output=True,
            text=True,
            encoding="utf-8",
            check=False,
        )
    except FileNotFoundError as exc:  # removed between the lookup and the call
        raise GraphvizMissing() from exc
    if done.returncode != 0:
        raise GraphvizFailed(done.returncode, done.stderr)
    out = _GRAPHVIZ_VERSION_COMMENT.sub("", done.stdout.replace("\r\n", "\n"), count=1)
    return out if out.endswith("\n") else out + "\n"


# ---------------------------------------------------------------------------------------------
# Markdown


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")


def _who(permission: Permission) -> str:
    role = f"role `{permission.role}`"
    if permission.unit_field is None:
        unit = "any unit"
    else:
        unit = (
            f"actor's unit = first {permission.unit_digits} digits of the record's "
            f"`{permission.unit_field}`"
        )
    if permission.description:
        return f"{permission.description} ({role}; {unit})"
    return f"{role}; {unit}"


def transition_table(definition: Definition) -> str:
    """A Markdown table: one row for the creation event, then one per transition."""
    fp = fingerprint(definition)
    lines = [
        f"Transitions of the `{definition.name}` machine (fingerprint `{fp}`).",
        "",
        "| Event | From | To | Who may fire it | Guards (all must hold, checked in this order) "
        "| What it means |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines.append(
        "| "
        + " | ".join(
            [
                f"`{definition.creation_event}`",
                "(new)",
                f"`{definition.initial}`",
                _cell(_who(definition.creation)),
                "none",
                _cell(f"Creates the record in its initial state `{definition.initial}`."),
            ]
        )
        + " |"
    )
    for t in _transitions(definition):
        rule = definition.events[t.event]
        guards = "<br>".join(f"`{g.name}`: {_cell(g.rule)}" for g in t.guards) or "none"
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{t.event}`",
                    f"`{t.source}`",
                    f"`{t.target}`",
                    _cell(_who(rule.permission)),
                    guards,
                    _cell(rule.summary),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def document(definition: Definition, *, svg_file: str | None = None) -> str:
    """The Markdown page of one machine: diagram, transition table, legend.

    ``svg_file`` is the name of the SVG drawn beside it, linked from the page when given.
    """
    fp = fingerprint(definition)
    finals = ", ".join(f"`{s}`" for s in definition.states if s in definition.finals) or "none"
    drawn = f" The same diagram drawn by Graphviz: [{svg_file}]({svg_file})." if svg_file else ""
    lines = [
        f"# The `{definition.name}` state machine",
        "",
        f"<!-- Generated by `{REGENERATE}` from the machine definition; do not edit. -->",
        "",
        f"Generated from the machine definition by `{REGENERATE}`: do not edit this file, change "
        "the machine class and run that command again (`make diagrams` installs Graphviz first "
        "if needed). `tests/unit/test_diagrams.py` fails while this file is stale.",
        "",
        f"**Fingerprint: `{fp}`**: the first 12 hex digits of a SHA-256 over the states, the "
        "transitions with their guards and the permissions (`workflow.diagrams.fingerprint`). "
        "The same fingerprint means the same process; "
        f"`{REGENERATE} --fingerprints` prints those of the installed code.",
        "",
        "## Diagram",
        "",
        f"Initial state: `{definition.initial}`, created by `{definition.creation_event}`. "
        f"Final states: {finals}.{drawn}",
        "",
        "```mermaid",
        mermaid(definition).rstrip("\n"),
        "```",
        "",
        "## Transitions",
        "",
        transition_table(definition).rstrip("\n"),
        "",
        "## Legend",
        "",
        "- **Initial state**: `[*] --> state`, the arrow from the black dot, labelled with the "
        "creation event; in the SVG the initial state also has a bold border.",
        "- **Final state**: `state --> [*]`, an arrow into the ringed dot and a bold thick border; "
        "in the SVG a double octagon. Nothing leaves a final state.",
        "- **Guarded transition**: `event [guard, ...]` fires only when every guard listed holds, "
        "checked in that order; a refusal names the guard that failed (`GuardFailed`). In the "
        "SVG guarded transitions are dashed amber. The table above gives each guard's rule.",
        "- **Path of one record**: a diagram drawn for one record's history (`path=`, see below) "
        "fills the states it visited and numbers the transitions it took in order, "
        "`(1) submit`, `(2) transmit`, ...; in the SVG they are bold blue and the rest is grey.",
        "",
        "To draw the path one application took (a `Workflow` as `flow`):",
        "",
        "```python",
        "from workflow import APPLICATION",
        "from workflow.diagrams import path_of, svg",
        "",
        "picture = svg(APPLICATION, path=path_of(flow.history(app_id)))",
        "```",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The committed files


@dataclass(frozen=True)
class Artifact:
    """A machine whose page and SVG are committed as ``docs/<stem>.md`` and ``.svg``."""

    stem: str
    definition: Definition


def _default_artifacts() -> tuple[Artifact, ...]:
    # Imported here: the generators stay generic, and only the command knows the machines.
    from workflow.found_card import FOUND_CARD
    from workflow.loss_report import LOSS_REPORT
    from workflow.machine import APPLICATION

    return (
        Artifact("state-machine", APPLICATION),
        Artifact("loss-report", LOSS_REPORT),
        Artifact("found-card", FOUND_CARD),
    )


def artifacts(
    docs: Path, machines: Sequence[Artifact] | None = None, *, with_svg: bool = True
) -> dict[Path, str]:
    """The files `main` writes under ``docs``, path -> text."""
    files: dict[Path, str] = {}
    for artifact in _default_artifacts() if machines is None else machines:
        svg_file = f"{artifact.stem}.svg"
        files[docs / f"{artifact.stem}.md"] = document(artifact.definition, svg_file=svg_file)
        if with_svg:
            files[docs / svg_file] = svg(artifact.definition)
    return files


DOCS = Path(__file__).resolve().parents[1] / "docs"


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with ``--check``, compare) the generated files; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=REGENERATE, description="Regenerate the state-machine diagrams and tables in docs/."
    )
    parser.add_argument(
        "--docs", type=Path, default=DOCS, help="folder to write (default: %(default)s)"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is stale"
    )
    parser.add_argument(
        "--fingerprints",
        action="store_true",
        help="write nothing; print each machine's name and fingerprint",
    )
    args = parser.parse_args(argv)
    if args.fingerprints:
        for artifact in _default_artifacts():
            print(f"{artifact.definition.name} {fingerprint(artifact.definition)}")
        return 0
    try:
        files = artifacts(args.docs)
    except GraphvizMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stale = []
    for path, text in files.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            print(f"unchanged {path}")
            continue
        stale.append(path)
        if args.check:
            print(f"stale     {path}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text.encode("utf-8"))
            print(f"wrote     {path}")
    if args.check and stale:
        print(f"run `{REGENERATE}` to regenerate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
