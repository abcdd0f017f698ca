"""Graphviz DOT of a `Diagram`, and the SVG Graphviz's ``dot`` draws from it.

The DOT is written here, statement by statement, rather than by a graph library, so that it is
byte-identical on every call (no object ids) and the committed SVGs change only when the
process does. Every value goes through `quote` (or is an HTML-like label, built with
``html.escape``): there is no other escaping in this module.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess

from workflow.diagrams.model import (
    REGENERATE,
    Arrow,
    Diagram,
    DiagramState,
    path_title,
    step_label,
)
from workflow.diagrams.style import (
    COLORS,
    DOT,
    KEY,
    KEY_PATH,
    KEY_POINT_SIZE,
    KEY_WHO,
    LABEL_TABLE,
    WHO_POINT_SIZE,
    Attrs,
)
from workflow.errors import WorkflowError

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
# Writing DOT


class Html(str):
    """A Graphviz HTML-like label: written between ``<`` and ``>``, not quoted."""


def quote(text: str) -> str:
    """A DOT double-quoted string (backslashes and quotes escaped, newlines as ``\\n``)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _attrs(attrs: Attrs) -> str:
    def shown(value: str | float) -> str:
        if isinstance(value, Html):
            return f"<{value}>"
        return quote(value) if isinstance(value, str) else f"{value:g}"

    return "[" + ", ".join(f"{key}={shown(value)}" for key, value in attrs.items()) + "]"


def _statement(subject: str, attrs: Attrs) -> str:
    return f"    {subject} {_attrs(attrs)};"


# ---------------------------------------------------------------------------------------------
# The parts of the graph


def _ids(diagram: Diagram) -> dict[str, str]:
    # Graphviz keeps backslashes in a quoted node name as they are: awkward names get a plain
    # id, and every node shows its state in an explicit label.
    return {
        s.name: s.name if re.fullmatch(r"[A-Za-z0-9_]+", s.name) else f"state_{index}"
        for index, s in enumerate(diagram.states)
    }


def _title(diagram: Diagram) -> Html:
    lines = [f"{diagram.name} state machine", f"fingerprint {diagram.fingerprint}"]
    key = KEY
    path = path_title(diagram)
    if path is not None:
        lines.append(path)
        key += KEY_PATH
    body = "<br/>".join(html.escape(line) for line in lines)
    font = f'<font point-size="{KEY_POINT_SIZE}" color="{COLORS["key"]}">'
    keys = "<br/>".join(html.escape(line) for line in (key, KEY_WHO))
    return Html(f"{body}<br/>{font}{keys}</font>")


def _state(state: DiagramState, highlighted: bool) -> Attrs:
    attrs: dict[str, str | float] = {"label": state.name}
    classes = [c for c, on in (("initial", state.initial), ("final", state.final)) if on]
    for c in ("final", "initial"):  # a state both initial and final keeps the initial's pen
        if c in classes:
            attrs.update(DOT[c])
    styles = [] if state.final else ["rounded"]
    if state.initial or state.final:
        styles.append("bold")
    color = COLORS["ink"]
    faded = highlighted and not state.visited
    if state.visited:
        classes.append("visited")
        color = COLORS["path"]
        styles.append("filled")
        attrs["fillcolor"] = COLORS["path_fill"]
    elif faded:
        color = COLORS["faded"]
    attrs["style"] = ",".join(styles)
    attrs["color"] = color
    attrs["fontcolor"] = color if faded else COLORS["ink"]
    attrs["class"] = " ".join(["state", *classes])
    attrs["tooltip"] = state.name
    return attrs


def edge_label(arrow: Arrow) -> Html:
    """The event (with the path's step numbers), who may fire it in smaller type, then the
    guards, one a line: ``collect / by acceptance_clerk @ acceptance_region /
    [receipt_matches, / old_card_handed_back]``.

    The lines sit in a borderless table whose padding keeps every edge, the label's own
    included, off the text (Graphviz draws an HTML-like label's text flush with its box)."""
    lines = [html.escape(step_label(arrow))]
    lines.append(f'<font point-size="{WHO_POINT_SIZE}">{html.escape(arrow.who.tag)}</font>')
    names = arrow.guard_names
    for i, name in enumerate(names):
        line = ("[" if i == 0 else "") + name + ("]" if i == len(names) - 1 else ",")
        lines.append(html.escape(line))
    rows = "".join(f"<tr><td>{line}</td></tr>" for line in lines)
    return Html(f"<table {LABEL_TABLE}>{rows}</table>")


def _arrow(arrow: Arrow, highlighted: bool) -> Attrs:
    attrs: dict[str, str | float] = {"label": edge_label(arrow)}
    classes = ["transition"]
    color = COLORS["ink"]
    if arrow.guards:
        classes.append("guarded")
        attrs.update(DOT["guarded"])
        color = COLORS["guarded"]
    if arrow.steps:
        classes.append("fired")
        attrs.update(DOT["fired"])
        color = COLORS["path"]
    elif highlighted:
        color = COLORS["faded"]
    attrs["color"] = color
    attrs["fontcolor"] = color
    attrs["class"] = " ".join(classes)
    return attrs


def render(diagram: Diagram) -> str:
    """Every arrow carries its event, who may fire it and its guards (`edge_label`). The
    initial state has a bold border and an arrow from a black dot labelled with the creation
    event; final states are double octagons; guarded transitions are dashed amber. Along a
    path, the states visited are filled blue, the transitions fired are bold blue and numbered
    in order, and everything else is greyed."""
    ids = _ids(diagram)
    start = "__start__"
    while start in ids.values():  # the black dot must not merge with a state of that name
        start += "_"
    highlighted = diagram.highlighted
    creation = diagram.creation
    lines = [
        f"// {diagram.name} machine: generated by `{REGENERATE}`; do not edit",
        f"// fingerprint: {diagram.fingerprint}",
        f"digraph {quote(diagram.name)} {{",
        _statement("graph", {"label": _title(diagram), **DOT["graph"]}),
        _statement("node", DOT["node"]),
        _statement("edge", DOT["edge"]),
        *(_statement(quote(ids[s.name]), _state(s, highlighted)) for s in diagram.states),
        _statement(
            quote(start),
            {
                **DOT["start"],
                "color": COLORS["path"] if creation.steps else COLORS["ink"],
                "label": "",
                "tooltip": f"{creation.event} creates the record",
            },
        ),
    ]
    for arrow in (creation, *diagram.arrows):
        source = start if arrow.source is None else ids[arrow.source]
        edge = f"{quote(source)} -> {quote(ids[arrow.target])}"
        attrs = _arrow(arrow, highlighted)
        if arrow.source != arrow.target:
            attrs = {**attrs, **DOT["between"]}
        lines.append(_statement(edge, attrs))
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Drawing it

_GRAPHVIZ_VERSION_COMMENT = re.compile(r"<!-- Generated by graphviz version .*?-->\n", re.DOTALL)


def draw(text: str) -> str:
    """SVG drawn by Graphviz (``dot -Tsvg``) from DOT ``text``, without the comment naming the
    Graphviz version, so it depends only on the graph and the layout."""
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
