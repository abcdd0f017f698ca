"""The examples in the README and the guides run, so they can't go stale."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

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


def test_the_auditors_guide_explains_every_problem_and_guard() -> None:
    from workflow.machine import APPLICATION
    from workflow.verification import PROBLEMS

    guide = (ROOT / "docs" / "auditing.md").read_text()
    for problem in PROBLEMS:
        assert f"`{problem}`" in guide, problem
    for transition in APPLICATION.transitions.values():
        for guard in transition.guards:
            assert f"`{guard.name}`" in guide and guard.rule in guide, guard.name
