"""Diagrams and tables generated from a process definition, for auditors.

Everything here is derived from a compiled `Definition` (and, for the page of a machine, the
table of reactions between machines), so it works for any machine of the library. As in
python-statemachine's ``contrib/diagram``, a definition is read once into a diagram model
(`workflow.diagrams.model.extract`) that one renderer per format draws: `mermaid`, `dot` (and
`svg`, drawn by Graphviz's ``dot``), `transition_table` and `document`; how they look is the one
table in `workflow.diagrams.style`. Every artifact carries the definition's `fingerprint`: an
auditor compares the fingerprint printed on a diagram with the one of the running code to know
that the picture is the process that actually runs. All output is deterministic (byte-identical
on every call), so the generated files can be committed and a test can tell when they are stale.

Regenerate the committed files with ``python -m workflow.diagrams`` (needs Graphviz's ``dot``
for the SVG).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from workflow.diagrams import dot as _dot
from workflow.diagrams import markdown as _markdown
from workflow.diagrams import mermaid as _mermaid
from workflow.diagrams.dot import GraphvizFailed, GraphvizMissing
from workflow.diagrams.model import (
    REGENERATE,
    HistoryRow,
    PathStep,
    canonical,
    extract,
    fingerprint,
    path_of,
)
from workflow.engine.definition import Definition
from workflow.machines import REGISTRY

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
    "mermaid",
    "path_of",
    "svg",
    "transition_table",
]


def mermaid(
    definition: Definition,
    *,
    path: Sequence[PathStep] | None = None,
    record_id: object | None = None,
) -> str:
    """A Mermaid ``stateDiagram-v2`` of the definition; with ``path``, that path highlighted.

    Every arrow says who may fire it (``by role @ column``); guarded transitions carry their
    guards in brackets (``collect [receipt_matches, ...]``); final states get the ``final``
    class; along a path, states visited get ``visited`` and the transitions fired are numbered
    in order (``(2) transmit``); ``record_id`` (with ``path``) names the record on the diagram.
    """
    return _mermaid.render(extract(definition, path=path, record_id=record_id))


def dot(
    definition: Definition,
    *,
    path: Sequence[PathStep] | None = None,
    record_id: object | None = None,
) -> str:
    """Graphviz DOT of the definition, written here (no object ids), so it is deterministic.

    Every arrow is labelled with its event, who may fire it (``by role @ column``) and its
    guards. The initial state has a bold border and an arrow from a black dot labelled with the
    creation event; final states are double octagons; guarded transitions are dashed amber.
    With ``path``, the states visited are filled blue, the transitions fired are bold blue and
    numbered in order, and everything else is greyed; with ``record_id`` the title names the
    record whose path it is, under the fingerprint.
    """
    return _dot.render(extract(definition, path=path, record_id=record_id))


def svg(
    definition: Definition,
    *,
    path: Sequence[PathStep] | None = None,
    record_id: object | None = None,
) -> str:
    """The `dot` graph drawn by Graphviz (``dot -Tsvg``), as SVG text.

    Raises `GraphvizMissing` when ``dot`` is not installed. The comment naming the Graphviz
    version is removed, so the text depends only on the graph and the layout.
    """
    return _dot.draw(dot(definition, path=path, record_id=record_id))


def transition_table(definition: Definition) -> str:
    """A Markdown table: one row for the creation event, then one per transition."""
    return _markdown.table(extract(definition))


def document(definition: Definition, *, svg_file: str | None = None) -> str:
    """The Markdown page of one machine: diagram, transition table, the reactions between
    machines that follow its events, legend.

    ``svg_file`` is the name of the SVG drawn beside it, linked from the page when given.
    """
    return _markdown.document(extract(definition), svg_file=svg_file)


# ---------------------------------------------------------------------------------------------
# The committed files


@dataclass(frozen=True)
class Artifact:
    """A machine whose page and SVG are committed as ``docs/<stem>.md`` and ``.svg``."""

    stem: str
    definition: Definition


def _registered() -> tuple[Artifact, ...]:
    # The first machine of the registry, the application process the library is about, keeps
    # its page's historic name; every other page is named after its machine's noun.
    return tuple(
        Artifact("state-machine" if i == 0 else m.noun.replace(" ", "-"), m.definition)
        for i, m in enumerate(REGISTRY)
    )


def artifacts(
    docs: Path, machines: Sequence[Artifact] | None = None, *, with_svg: bool = True
) -> dict[Path, str]:
    """The files ``python -m workflow.diagrams`` writes under ``docs``, path -> text: a page
    and an SVG for each machine of the registry (or of ``machines``)."""
    files: dict[Path, str] = {}
    for artifact in _registered() if machines is None else machines:
        svg_file = f"{artifact.stem}.svg"
        files[docs / f"{artifact.stem}.md"] = document(artifact.definition, svg_file=svg_file)
        if with_svg:
            files[docs / svg_file] = svg(artifact.definition)
    return files
