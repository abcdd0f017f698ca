"""Diagrams and tables generated from the definition: deterministic, fresh, and complete.

The SVG tests run Graphviz's ``dot``: it is a real dependency of the docs, so they fail (with
`GraphvizMissing` saying how to install it) rather than skip where it is missing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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
    assert "    [*] --> submitted : submit" in lines
    for t in APPLICATION.transitions.values():
        label = t.event + (f" [{', '.join(g.name for g in t.guards)}]" if t.guards else "")
        assert f"    {t.source} --> {t.target} : {label}" in lines
    edges = [line for line in lines if " --> " in line]
    assert len(edges) == 1 + len(APPLICATION.transitions) + len(APPLICATION.finals)
    for state in APPLICATION.finals:
        assert f"    {state} --> [*]" in lines
    assert "    ready --> collected : collect [receipt_matches, old_card_handed_back]" in lines
    assert "    class rejected,collected final" in lines
    assert set(re.findall(r"\b[a-z_]+\b", "\n".join(edges))) >= set(APPLICATION.states)


def test_the_dot_marks_initial_final_and_guarded() -> None:
    text = dot(APPLICATION)
    assert '"__start__" [shape="point"' in text
    assert '"__start__" -> "submitted" [label="submit"' in text
    assert re.search(r'"submitted" \[[^]]*style="rounded,bold"', text)
    for state in APPLICATION.states:
        shape = 'shape="doubleoctagon"' in node_line(text, state)
        assert shape == (state in APPLICATION.finals), state
    assert edge_line(text, "ready", "collected").count('style="dashed"') == 1
    assert 'label="collect\\n[receipt_matches,\\nold_card_handed_back]"' in text
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
    assert '    "state_0" -> "end" [label="go"' in text
    drawn = svg(definition)
    assert ">say &quot;hi&quot;\\</text>" in drawn
    text = mermaid(definition)
    assert '    state "say #34;hi#34;\\" as state_0' in text
    assert "    state_0 --> state_1 : go" in text  # `end` is a Mermaid keyword


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
        for m in re.finditer(r'"(\w+)" -> "(\w+)" \[label="\((\d+)\) ', text)
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
    assert "    open --> held : (2, 4) hold" in mermaid(definition, path=path)
    assert 'label="(2, 4) hold"' in dot(definition, path=path)


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
