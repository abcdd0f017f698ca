"""Diagrams and tables generated from the definition: deterministic, fresh, and complete.

The SVG tests run Graphviz's ``dot``: it is a real dependency of the docs, so they fail (with
`GraphvizMissing` saying how to install it) rather than skip where it is missing.
"""

from __future__ import annotations

import html
import importlib
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from statemachine import State as SMState

import workflow as wf
from workflow import diagrams
from workflow.diagrams import (
    REGENERATE,
    GraphvizMissing,
    PathStep,
    document,
    dot,
    fingerprint,
    mermaid,
    path_of,
    svg,
    transition_table,
)
from workflow.diagrams.__main__ import main
from workflow.engine.definition import Definition, EventRule, Guard, Permission, ProcessMachine
from workflow.engine.registry import Machine
from workflow.machines import REACTIONS, REGISTRY
from workflow.machines.application import APPLICATION
from workflow.machines.found_card import FOUND_CARD
from workflow.machines.loss_report import LOSS_REPORT
from workflow.models.schemas import NoPayload

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOT_MODULE = importlib.import_module("workflow.diagrams.dot")
"""The renderer's module (``workflow.diagrams.dot`` is the function of that name)."""

HAPPY_PATH = (
    PathStep("submit", None, "submitted"),
    PathStep("transmit", "submitted", "transmitted"),
    PathStep("approve", "transmitted", "approved"),
    PathStep("produce", "approved", "produced"),
    PathStep("mark_ready", "produced", "ready"),
    PathStep("collect", "ready", "collected"),
)
REFUSED_PATH = (
    PathStep("submit", None, "submitted"),
    PathStep("transmit", "submitted", "transmitted"),
    PathStep("reject", "transmitted", "rejected"),
)


def who_tag(permission: Permission) -> str:
    """What a diagram must print for who may fire an arrow, worked out from the permission."""
    if permission.unit_field is None:
        return f"by {permission.role} @ any unit"
    area = {6: "", 2: "province of "}[permission.unit_digits]
    return f"by {permission.role} @ {area}{permission.unit_field}"


# ---------------------------------------------------------------------------------------------
# Throwaway machines: start -go-> middle -finish [form_complete]-> done, middle -drop-> dropped


def small(
    *,
    name: str = "small",
    rule: str = "the form is complete",
    guard_name: str = "form_complete",
    guarded: bool = True,
    swap_targets: bool = False,
    go_role: str = "acceptance_clerk",
    go_digits: int = 6,
    summary: str = "Moves on.",
) -> Definition:
    """A fresh machine class (new objects every call) compiled into a definition."""
    guard = Guard(guard_name, rule, facts=lambda r, p: {}, holds=lambda r, f: True)
    clerk = Permission("acceptance_clerk", "acceptance_region", description="a clerk")
    validators = [guard.validator] if guarded else []

    class Small(ProcessMachine):
        start = SMState(initial=True)
        middle = SMState()
        done = SMState(final=True)
        dropped = SMState(final=True)

        go = start.to(middle)
        if swap_targets:
            finish = middle.to(dropped, validators=validators)
            drop = middle.to(done)
        else:
            finish = middle.to(done, validators=validators)
            drop = middle.to(dropped)

        creation_event: ClassVar[str | None] = "create"
        creation: ClassVar[Permission | None] = clerk
        rules: ClassVar[dict[str, EventRule]] = {
            "go": EventRule(
                Permission(go_role, "acceptance_region", go_digits), NoPayload, None, summary
            ),
            "finish": EventRule(clerk, NoPayload, None, "Finishes."),
            "drop": EventRule(clerk, NoPayload, None, "Drops it."),
        }

    return Definition.of(Small, name=name)


# ---------------------------------------------------------------------------------------------
# Determinism and freshness

GENERATORS: dict[str, Callable[[Definition], str]] = {
    "mermaid": lambda d: mermaid(d),
    "dot": lambda d: dot(d),
    "svg": lambda d: svg(d),
    "mermaid_path": lambda d: mermaid(d, path=HAPPY_PATH),
    "dot_path": lambda d: dot(d, path=HAPPY_PATH),
    "svg_path": lambda d: svg(d, path=HAPPY_PATH),
    "table": transition_table,
    "document": lambda d: document(d, svg_file="state-machine.svg"),
}


@pytest.mark.parametrize("generate", GENERATORS.values(), ids=GENERATORS.keys())
def test_every_format_is_byte_identical_on_every_call(
    generate: Callable[[Definition], str],
) -> None:
    first = generate(APPLICATION)
    assert first == generate(APPLICATION)
    assert first.endswith("\n")


@pytest.mark.parametrize("generate", GENERATORS.values(), ids=GENERATORS.keys())
def test_every_format_carries_the_fingerprint(generate: Callable[[Definition], str]) -> None:
    assert fingerprint(APPLICATION) in generate(APPLICATION)


def test_the_dot_text_embeds_no_object_ids() -> None:
    assert not re.search(r"\b\d{9,}\b|0x[0-9a-f]{6,}", dot(APPLICATION))


COMMITTED = [
    name
    for page in diagrams.artifacts(DOCS, with_svg=False)
    for name in (page.name, page.with_suffix(".svg").name)
]
"""Every machine of the registry's page and SVG under docs/."""


@pytest.mark.parametrize("name", COMMITTED)
def test_the_committed_docs_equal_freshly_generated_output(name: str) -> None:
    fresh = diagrams.artifacts(DOCS, with_svg=name.endswith(".svg"))
    path = DOCS / name
    assert path in fresh, f"{name} is not generated by `{REGENERATE}`"
    assert path.exists(), f"docs/{name} is missing: run `{REGENERATE}` (or `make diagrams`)"
    committed = path.read_text(encoding="utf-8")
    assert committed == fresh[path], (
        f"docs/{name} is stale (the machine changed, or it was edited by hand): "
        f"run `{REGENERATE}` (or `make diagrams`) and commit the result"
    )


def test_the_command_reports_fresh_docs_and_writes_a_new_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--check"]) == 0
    assert main(["--check", "--docs", str(tmp_path)]) == 1
    assert REGENERATE in capsys.readouterr().err
    assert main(["--docs", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "found-card.md",
        "found-card.svg",
        "loss-report.md",
        "loss-report.svg",
        "state-machine.md",
        "state-machine.svg",
    ]
    assert (tmp_path / "state-machine.md").read_text(encoding="utf-8") == document(
        APPLICATION, svg_file="state-machine.svg"
    )


def test_every_registered_machine_gets_a_page() -> None:
    fresh = diagrams.artifacts(DOCS, with_svg=False)
    pages = {text.splitlines()[0]: path.name for path, text in fresh.items()}
    assert len(pages) == len(REGISTRY)
    for machine in REGISTRY:
        assert f"# The `{machine.name}` state machine" in pages


@pytest.mark.parametrize("machine", REGISTRY, ids=lambda m: m.name)
def test_the_page_of_a_machine_lists_its_reactions_between_machines_in_words(
    machine: Machine[Any, Any],
) -> None:
    text = document(machine.definition)
    section = text.split("## Reactions between machines\n", 1)[1].split("\n## ", 1)[0]
    own = [r for r in REACTIONS if r.machine == machine.name]
    for reaction in own:
        assert f"- **`{reaction.event}`**, when {reaction.when}: {reaction.does}." in section
    assert section.count("\n- ") == len(own)
    if not own:
        assert f"No event of the `{machine.name}` machine sets off another machine" in section


def test_the_reactions_are_words_on_the_page_not_arrows_of_the_diagram() -> None:
    # The reactions are words on the page, not arrows: the pictures depend on the definition only.
    assert "Reactions" not in mermaid(APPLICATION) + dot(APPLICATION)


def test_the_command_prints_the_fingerprint_of_the_installed_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--fingerprints"]) == 0
    assert capsys.readouterr().out == (
        f"application {fingerprint(APPLICATION)}\n"
        f"loss_report {fingerprint(LOSS_REPORT)}\n"
        f"found_card {fingerprint(FOUND_CARD)}\n"
    )


def test_no_line_of_the_document_looks_like_a_doctest() -> None:
    # tests/test_docs.py runs doctest over every docs/*.md.
    assert not [
        line for line in document(APPLICATION).splitlines() if line.lstrip().startswith(">>>")
    ]


# ---------------------------------------------------------------------------------------------
# Fingerprint


def test_the_fingerprint_is_twelve_hex_digits() -> None:
    assert re.fullmatch(r"[0-9a-f]{12}", fingerprint(APPLICATION))


def test_an_equal_definition_built_twice_has_the_same_fingerprint() -> None:
    assert small() is not small()
    assert fingerprint(small()) == fingerprint(small())


@pytest.mark.parametrize(
    "change",
    [
        {"rule": "the form is complete and signed"},
        {"guard_name": "form_signed"},
        {"guarded": False},
        {"swap_targets": True},
        {"go_role": "hukou_reviewer"},
        {"go_digits": 2},
        {"name": "other"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_a_changed_guard_transition_or_role_changes_the_fingerprint(change: dict[str, Any]) -> None:
    assert fingerprint(small(**change)) != fingerprint(small())


def test_the_wording_of_a_summary_does_not_change_the_fingerprint() -> None:
    assert fingerprint(small(summary="Moves on to the middle.")) == fingerprint(small())


# ---------------------------------------------------------------------------------------------
# Content


def test_the_mermaid_has_every_state_and_transition() -> None:
    text = mermaid(APPLICATION)
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert f"    %% fingerprint: {fingerprint(APPLICATION)}" in lines
    assert "    [*] --> submitted : submit by acceptance_clerk @ acceptance_region" in lines
    for t in APPLICATION.transitions.values():
        label = t.event + (f" [{', '.join(g.name for g in t.guards)}]" if t.guards else "")
        who = who_tag(APPLICATION.events[t.event].permission)
        assert f"    {t.source} --> {t.target} : {label} {who}" in lines
    edges = [line for line in lines if " --> " in line]
    assert len(edges) == 1 + len(APPLICATION.transitions) + len(APPLICATION.finals)
    for state in APPLICATION.finals:
        assert f"    {state} --> [*]" in lines
    assert (
        "    ready --> collected : collect [receipt_matches, old_card_handed_back] "
        "by acceptance_clerk @ acceptance_region"
    ) in lines
    assert "    class rejected,collected final" in lines
    assert set(re.findall(r"\b[a-z_]+\b", "\n".join(edges))) >= set(APPLICATION.states)


def test_the_dot_marks_initial_final_and_guarded() -> None:
    text = dot(APPLICATION)
    assert '"__start__" [shape="point"' in text
    assert '"__start__" -> "submitted" [label=<<table' in text
    assert "<tr><td>submit</td></tr>" in edge_line(text, "__start__", "submitted")
    assert re.search(r'"submitted" \[[^]]*style="rounded,bold"', text)
    for state in APPLICATION.states:
        shape = 'shape="doubleoctagon"' in node_line(text, state)
        assert shape == (state in APPLICATION.finals), state
    assert edge_line(text, "ready", "collected").count('style="dashed"') == 1
    assert (
        "<tr><td>collect</td></tr>"
        '<tr><td><font point-size="9">by acceptance_clerk @ acceptance_region</font></td></tr>'
        "<tr><td>[receipt_matches,</td></tr><tr><td>old_card_handed_back]</td></tr>"
    ) in edge_line(text, "ready", "collected")
    assert "style" not in edge_line(text, "approved", "produced")
    assert f"fingerprint {fingerprint(APPLICATION)}" in text


def test_the_table_has_the_creation_row_and_one_row_per_transition() -> None:
    text = transition_table(APPLICATION)
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == 1 + len(APPLICATION.transitions)
    assert rows[0].startswith("| `submit` | (new) | `submitted` | an acceptance clerk")
    for t in APPLICATION.transitions.values():
        (row,) = [r for r in rows if r.startswith(f"| `{t.event}` | `{t.source}` | `{t.target}` |")]
        rule = APPLICATION.events[t.event]
        assert rule.summary in row
        assert rule.permission.description in row
        assert f"role `{rule.permission.role}`" in row
        for guard in t.guards:
            assert f"`{guard.name}`: {guard.rule}" in row
    assert "first 2 digits of the record's `acceptance_region`" in text
    assert fingerprint(APPLICATION) in text.splitlines()[0]


def test_the_document_has_the_command_the_diagram_the_table_and_a_legend() -> None:
    text = document(APPLICATION, svg_file="state-machine.svg")
    assert f"`{REGENERATE}`" in text
    assert f"```mermaid\n{mermaid(APPLICATION)}```" in text
    assert transition_table(APPLICATION) in text
    assert "## Legend" in text
    assert "[state-machine.svg](state-machine.svg)" in text
    assert fingerprint(APPLICATION) in text


def test_a_table_cell_cannot_break_the_table() -> None:
    text = transition_table(small(rule="a | b"))
    assert "a \\| b" in text


def test_awkward_state_names_are_quoted_and_escaped() -> None:
    class Awkward(ProcessMachine):
        begin = SMState(initial=True, value='say "hi"\\')
        end = SMState(final=True, value="end")
        go = begin.to(end)
        creation_event: ClassVar[str | None] = "create"
        creation: ClassVar[Permission | None] = Permission("acceptance_clerk", None)
        rules: ClassVar[dict[str, EventRule]] = {
            "go": EventRule(Permission("acceptance_clerk", None), NoPayload)
        }

    definition = Definition.of(Awkward, name="awkward")
    text = dot(definition)
    assert '    "state_0" [label="say \\"hi\\"\\\\", ' in text
    assert "<tr><td>go</td></tr>" in edge_line(text, "state_0", "end")
    drawn = svg(definition)
    assert ">say &quot;hi&quot;\\</text>" in drawn
    text = mermaid(definition)
    assert '    state "say #34;hi#34;\\" as state_0' in text
    assert "    state_0 --> state_1 : go by acceptance_clerk @ any unit" in text  # `end`: keyword


# ---------------------------------------------------------------------------------------------
# The path one application took


def node_line(text: str, state: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(f'    "{state}" [')]
    return line


def edge_line(text: str, source: str, target: str) -> str:
    (line,) = [line for line in text.splitlines() if f'"{source}" -> "{target}" [' in line]
    return line


@pytest.mark.parametrize("path", [HAPPY_PATH, REFUSED_PATH], ids=["collected", "rejected"])
def test_the_path_is_highlighted_exactly_in_mermaid(path: tuple[PathStep, ...]) -> None:
    text = mermaid(APPLICATION, path=path)
    numbered = re.findall(r"^    (\S+) --> (\S+) : \((\d+)\) (\w+)", text, re.MULTILINE)
    expected = [
        ("[*]" if s.from_state is None else s.from_state, s.to_state, str(n), s.event)
        for n, s in enumerate(path, start=1)
    ]
    assert numbered == expected
    visited = {s.to_state for s in path}
    assert f"    class {','.join(s for s in APPLICATION.states if s in visited)} visited" in text
    assert "visited" not in mermaid(APPLICATION)


@pytest.mark.parametrize("path", [HAPPY_PATH, REFUSED_PATH], ids=["collected", "rejected"])
def test_the_path_is_highlighted_exactly_in_dot_and_svg(path: tuple[PathStep, ...]) -> None:
    text = dot(APPLICATION, path=path)
    fired = {
        (m[1], m[2], m[3])
        for m in re.finditer(r'"(\w+)" -> "(\w+)" \[label=<<table [^>]*><tr><td>\((\d+)\) ', text)
        if "fired" in m.string[m.start() : m.string.index("\n", m.start())]
    }
    expected = {
        ("__start__" if s.from_state is None else s.from_state, s.to_state, str(n))
        for n, s in enumerate(path, start=1)
    }
    assert fired == expected
    assert text.count("fired") == len(path)
    visited = {s.to_state for s in path}
    for state in APPLICATION.states:
        assert ("visited" in node_line(text, state)) == (state in visited), state
    drawn = svg(APPLICATION, path=path)
    assert drawn.count('class="edge transition fired') + drawn.count(
        'class="edge transition guarded fired'
    ) == len(path)
    assert drawn.count("visited") == len(visited)


def test_a_transition_fired_twice_carries_both_step_numbers() -> None:
    class Loop(ProcessMachine):
        open_ = SMState(initial=True, value="open")
        held = SMState(value="held")
        closed = SMState(final=True, value="closed")
        hold = open_.to(held)
        release = held.to(open_)
        close = open_.to(closed)
        creation_event: ClassVar[str | None] = "create"
        creation: ClassVar[Permission | None] = Permission("acceptance_clerk", None)
        rules: ClassVar[dict[str, EventRule]] = {
            e: EventRule(Permission("acceptance_clerk", None), NoPayload)
            for e in ("hold", "release", "close")
        }

    definition = Definition.of(Loop, name="loop")
    path = [
        PathStep("create", None, "open"),
        PathStep("hold", "open", "held"),
        PathStep("release", "held", "open"),
        PathStep("hold", "open", "held"),
    ]
    assert "    open --> held : (2, 4) hold by acceptance_clerk @ any unit" in mermaid(
        definition, path=path
    )
    assert "<tr><td>(2, 4) hold</td></tr>" in dot(definition, path=path)


@pytest.mark.parametrize(
    "step",
    [
        PathStep("collect", "submitted", "collected"),
        PathStep("approve", "transmitted", "rejected"),
        PathStep("submit", None, "ready"),
        PathStep("create", None, "submitted"),
    ],
)
def test_a_step_the_machine_does_not_have_is_refused(step: PathStep) -> None:
    with pytest.raises(ValueError, match=r"step 2 \(.*\) is not a transition of the application"):
        mermaid(APPLICATION, path=[HAPPY_PATH[0], step])


def test_an_applications_history_maps_onto_path_steps() -> None:
    at = datetime(2024, 5, 6, 9, 30, tzinfo=UTC)
    # Built without validation: only the three columns a path needs matter here.
    rows: list[dict[str, Any]] = [
        {
            "seq": n,
            "event": s.event,
            "from_state": s.from_state,
            "to_state": s.to_state,
            "actor_id": "clerk-17",
            "actor_role": wf.Role.ACCEPTANCE_CLERK,
            "actor_unit": "440305",
            "at": at,
            "details": {},
        }
        for n, s in enumerate(REFUSED_PATH, start=1)
    ]
    history: list[wf.TransitionRecord] = [wf.TransitionRecord.model_construct(**r) for r in rows]
    assert path_of(history) == REFUSED_PATH
    assert mermaid(APPLICATION, path=path_of(history)) == mermaid(APPLICATION, path=REFUSED_PATH)


# ---------------------------------------------------------------------------------------------
# Graphviz


def test_the_svg_is_drawn_by_graphviz_without_its_version() -> None:
    text = svg(APPLICATION)
    assert text.startswith("<?xml")
    assert "<svg" in text
    assert "Generated by graphviz" not in text
    assert f"fingerprint {fingerprint(APPLICATION)}" in text


def test_a_missing_graphviz_is_reported_with_install_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GraphvizMissing) as info:
        svg(APPLICATION)
    assert isinstance(info.value, wf.WorkflowError)
    assert info.value.code == "graphviz_missing"
    assert "apt-get install graphviz" in str(info.value)
    assert "brew install graphviz" in str(info.value)
    assert mermaid(APPLICATION)  # the text formats need no Graphviz
    assert dot(APPLICATION)


# ---------------------------------------------------------------------------------------------
# Who may fire each arrow; whose path it is


@pytest.mark.parametrize("machine", REGISTRY, ids=lambda m: m.name)
def test_every_arrow_of_every_diagram_says_who_may_fire_it(machine: Machine[Any, Any]) -> None:
    definition = machine.definition
    arrows = [
        (None, definition.initial, definition.creation_event, definition.creation),
        *(
            (t.source, t.target, t.event, definition.events[t.event].permission)
            for t in definition.transitions.values()
        ),
    ]
    text, graph, drawn = mermaid(definition), dot(definition), svg(definition)
    for source, target, event, permission in arrows:
        who = who_tag(permission)
        start = "[*]" if source is None else source
        (line,) = [
            line
            for line in text.splitlines()
            if line.startswith(f"    {start} --> {target} : {event}")
        ]
        assert line.endswith(f" {who}"), line
        line = edge_line(graph, "__start__" if source is None else source, target)
        assert f">{who}</font>" in line, line
        assert f">{who}</text>" in html.unescape(drawn)
    assert "by role @ column" in drawn  # the key says how to read it


def test_a_path_diagram_carries_the_record_id_and_the_fingerprint() -> None:
    record = "0b6f5c2e-1d2a-4c3b-9e8f-7a6b5c4d3e2f"
    for text in (
        mermaid(APPLICATION, path=HAPPY_PATH, record_id=record),
        dot(APPLICATION, path=HAPPY_PATH, record_id=record),
        html.unescape(svg(APPLICATION, path=HAPPY_PATH, record_id=record)),
    ):
        assert f"path of record {record}, 6 steps" in text
        assert fingerprint(APPLICATION) in text
    assert "path of record" not in svg(APPLICATION, path=HAPPY_PATH)
    with pytest.raises(ValueError, match="give the path too"):
        dot(APPLICATION, record_id=record)


# ---------------------------------------------------------------------------------------------
# Edge labels stay clear of the edges: measured on Graphviz's own layout

Box = tuple[float, float, float, float]
"""left, bottom, right, top, in points (Graphviz's coordinates: y grows upwards)."""

CLEARANCE = 2.0
"""How far (points) every edge must stay from the text of every label, its own included."""


def layout(graph: str) -> dict[str, Any]:
    """Graphviz's layout of DOT ``graph`` (``dot -Tjson``): the coordinates the SVG is drawn
    with."""
    program = shutil.which("dot")
    if program is None:
        raise GraphvizMissing()
    done = subprocess.run(
        [program, "-Tjson"], input=graph, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def text_box(ops: Sequence[dict[str, Any]]) -> Box | None:
    """The box around the text an xdot drawing draws (``F`` sets the size, ``T`` writes)."""
    size = 14.0
    boxes: list[Box] = []
    for op in ops:
        if op["op"] == "F":
            size = float(op["size"])
        elif op["op"] == "T":
            x, y = (float(v) for v in op["pt"])
            width = float(op["width"])
            left = {"l": x, "c": x - width / 2, "r": x - width}[op["align"]]
            boxes.append((left, y - 0.25 * size, left + width, y + 0.8 * size))  # descent, ascent
    if not boxes:
        return None
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def stroke_points(
    ops: Sequence[dict[str, Any]], samples: int = 32
) -> Iterator[tuple[float, float]]:
    """Points along what an xdot drawing strokes: each cubic Bézier sampled, polygon corners
    (the arrowheads) as they are."""
    for op in ops:
        points = [(float(x), float(y)) for x, y in op.get("points", ())]
        if op["op"] in {"b", "B"}:
            for i in range(0, len(points) - 3, 3):
                p0, p1, p2, p3 = points[i : i + 4]
                for k in range(samples + 1):
                    t = k / samples
                    u = 1 - t
                    yield (
                        u**3 * p0[0] + 3 * u * u * t * p1[0] + 3 * u * t * t * p2[0] + t**3 * p3[0],
                        u**3 * p0[1] + 3 * u * u * t * p1[1] + 3 * u * t * t * p2[1] + t**3 * p3[1],
                    )
        elif op["op"] in {"p", "P", "L"}:
            yield from points


def inside(point: tuple[float, float], box: Box, margin: float) -> bool:
    return (
        box[0] - margin < point[0] < box[2] + margin
        and box[1] - margin < point[1] < box[3] + margin
    )


def overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def label_collisions(graph: str) -> list[str]:
    """Every edge label whose text an edge (its own included) comes within `CLEARANCE` of, or
    that overlaps another label or a state."""
    drawn = layout(graph)
    objects = drawn.get("objects", [])
    edges = drawn.get("edges", [])

    def name(edge: dict[str, Any]) -> str:
        return (
            f"{objects[edge['tail']]['name']} -> {objects[edge['head']]['name']} #{edge['_gvid']}"
        )

    labels = [(e, text_box(e.get("_ldraw_", []))) for e in edges]
    found: list[str] = []
    for edge, box in labels:
        if box is None:
            continue
        for other in edges:
            strokes = stroke_points([*other.get("_draw_", []), *other.get("_hdraw_", [])])
            if any(inside(p, box, CLEARANCE) for p in strokes):
                found.append(f"the label of {name(edge)} touches the edge {name(other)}")
        for node in objects:
            node_box = text_box(node.get("_ldraw_", []))
            outline = list(stroke_points(node.get("_draw_", [])))
            if outline:
                xs, ys = [p[0] for p in outline], [p[1] for p in outline]
                node_box = (min(xs), min(ys), max(xs), max(ys))
            if node_box is not None and overlaps(box, node_box):
                found.append(f"the label of {name(edge)} overlaps the state {node['name']}")
    for i, (edge, box) in enumerate(labels):
        for other, other_box in labels[i + 1 :]:
            if box and other_box and overlaps(box, other_box):
                found.append(f"the labels of {name(edge)} and {name(other)} overlap")
    return found


DRAWN = [
    *((a.stem, a.definition, None) for a in diagrams._registered()),
    ("state-machine, collected path", APPLICATION, HAPPY_PATH),
    ("state-machine, rejected path", APPLICATION, REFUSED_PATH),
]


@pytest.mark.parametrize(("definition", "path"), [d[1:] for d in DRAWN], ids=[d[0] for d in DRAWN])
def test_no_edge_label_touches_an_edge_a_state_or_another_label(
    definition: Definition, path: tuple[PathStep, ...] | None
) -> None:
    assert label_collisions(dot(definition, path=path, record_id="r-1" if path else None)) == []


@pytest.mark.parametrize("artifact", diagrams._registered(), ids=lambda a: a.stem)
def test_the_committed_svg_is_drawn_from_the_layout_checked_above(
    artifact: diagrams.Artifact,
) -> None:
    # The SVG's edges are the layout's Béziers (y flipped): the layout the collision test
    # measured is the one committed.
    drawn = layout(dot(artifact.definition))
    committed = ET.parse(DOCS / f"{artifact.stem}.svg").getroot()
    ns = {"svg": "http://www.w3.org/2000/svg"}
    paths = [
        g.find("svg:path", ns)
        for g in committed.iter("{http://www.w3.org/2000/svg}g")
        if "edge" in (g.get("class") or "").split()
    ]
    assert len(paths) == len(drawn["edges"])
    for element, edge in zip(paths, drawn["edges"], strict=True):  # both in the graph's order
        assert element is not None
        numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", element.get("d", ""))]
        (bezier,) = [op for op in edge["_draw_"] if op["op"] == "b"]
        expected = [c for x, y in bezier["points"] for c in (float(x), -float(y))]
        assert numbers == pytest.approx(expected, abs=0.011)


def test_the_collision_check_catches_labels_drawn_flush_with_their_edges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without the table's padding Graphviz draws a label's text flush with its edge.
    monkeypatch.setattr(DOT_MODULE, "LABEL_TABLE", 'border="0" cellborder="0" cellpadding="0"')
    found = label_collisions(dot(APPLICATION))
    assert any("touches the edge" in f for f in found), found


def test_the_collision_check_catches_a_label_laid_over_another_edge() -> None:
    # neato with fixed positions puts the label of a -> b right on the edge c -> d.
    graph = """digraph {
        layout=neato; node [shape=box];
        a [pos="0,0!"]; b [pos="4,0!"]; c [pos="2,-1!"]; d [pos="2,1!"];
        a -> b [label="a long label across"]; c -> d;
    }"""
    assert any("touches the edge c -> d" in f for f in label_collisions(graph))
