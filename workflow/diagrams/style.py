"""How the diagrams look: one table of colours, shapes and fonts that every renderer reads.

As pytransitions keeps its diagram styles as data, nothing here is logic: change a colour in
`COLORS` and the Mermaid classes, the DOT attributes and the SVG's key all follow. The legend of
the generated page (`workflow.diagrams.markdown`) describes these choices in words.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

Attrs = Mapping[str, str | float]
"""Graphviz attributes: strings are quoted when written, numbers are not."""

FONT: Final = "Helvetica"

COLORS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "ink": "#111827",
        "guarded": "#b45309",  # amber: a transition that fires only when its guards hold
        "path": "#1d4ed8",  # blue: the path one record took
        "path_fill": "#bfdbfe",
        "path_text": "#1e3a8a",
        "faded": "#9ca3af",  # what the path did not touch
        "key": "#4b5563",
    }
)

MERMAID_CLASSES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "initial": "font-weight:bold,stroke-width:3px",
        "final": f"font-weight:bold,stroke:{COLORS['ink']},stroke-width:4px",
        "visited": (
            f"fill:{COLORS['path_fill']},stroke:{COLORS['path']},color:{COLORS['path_text']}"
        ),
    }
)
"""Mermaid ``classDef``s by class name; ``visited`` is declared only when a path is drawn."""

DOT: Final[Mapping[str, Attrs]] = MappingProxyType(
    {
        "graph": {
            "labelloc": "t",
            "fontname": FONT,
            "fontsize": 16,
            "rankdir": "TB",
            "nodesep": 0.6,
            "ranksep": 0.5,
            "pad": 0.3,
        },
        "node": {"shape": "box", "style": "rounded", "fontname": FONT, "fontsize": 13},
        "edge": {"fontname": FONT, "fontsize": 11},
        # An arrow between two states leaves from the bottom and enters at the top: the sides
        # stay free for the loops (an event that keeps the state) and their labels, which
        # Graphviz does not route other edges around.
        "between": {"tailport": "s", "headport": "n"},
        # The black dot the creation arrow leaves from.
        "start": {"shape": "point", "width": 0.22},
        # Added to a state's or an arrow's attributes, in this order, when the class applies.
        "final": {"shape": "doubleoctagon", "penwidth": 1.5},
        "initial": {"penwidth": 2.5},
        "guarded": {"style": "dashed"},
        "fired": {"penwidth": 3, "fontname": f"{FONT}-Bold"},
    }
)
"""Graphviz attributes: the graph's, the defaults of every node and edge, and per class."""

KEY_POINT_SIZE: Final = 11
KEY: Final = "bold border: initial · double octagon: final · dashed amber: guarded"
KEY_PATH: Final = " · blue, (n): step n of the path"
KEY_WHO: Final = "by role @ column: who may fire it (the actor's unit is the record's column)"
"""The key to the notation under the SVG's title (the SVG is looked at alone)."""

WHO_POINT_SIZE: Final = 9
"""The size of the line under each event that says who may fire it."""

LABEL_TABLE: Final = 'border="0" cellborder="0" cellspacing="0" cellpadding="3"'
"""The attributes of the table an edge's label is laid out in: no lines, a little air."""
