"""The examples in the README and the guides run, so they can't go stale."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from workflow.engine.registry import Machine, Reaction
from workflow.machines import REACTIONS, REGISTRY

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_the_examples_in_the_document_run(
    document: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the examples create their database in the working directory
    result = doctest.testfile(
        str(document),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
        report=True,
    )
    assert result.failed == 0, f"{result.failed} example(s) in {document.name} failed; see above"


def test_the_auditors_guide_explains_every_problem() -> None:
    from workflow.engine.verification import PROBLEMS

    guide = (ROOT / "docs" / "auditing.md").read_text()
    for problem in PROBLEMS:
        assert f"`{problem}`" in guide, problem


@pytest.mark.parametrize("machine", REGISTRY, ids=lambda m: m.name)
def test_the_auditors_guide_explains_every_guard_of_every_machine(machine: Machine) -> None:
    guide = (ROOT / "docs" / "auditing.md").read_text()
    for transition in machine.definition.transitions.values():
        for guard in transition.guards:
            assert f"`{guard.name}`" in guide and guard.rule in guide, guard.name


@pytest.mark.parametrize("reaction", REACTIONS, ids=lambda r: f"{r.machine}.{r.event}")
def test_the_auditors_guide_lists_every_reaction_between_machines(reaction: Reaction) -> None:
    guide = (ROOT / "docs" / "auditing.md").read_text()
    row = next(
        (
            line
            for line in guide.splitlines()
            if f"`{reaction.event}`" in line and reaction.does in line
        ),
        None,
    )
    assert row is not None and reaction.when in row, reaction
