"""The machines the library runs, one module each, and the one registry that lists them.

Everything that goes over the machines (history, verification, diagrams, the demo's counts,
the command line, the tests) iterates `REGISTRY`; the rules between them are the table in
`workflow.machines.reactions`. A new machine is a new module here, one line in `REGISTRY`, a
revision for its table and its allowed transitions, and its tests.
"""

from __future__ import annotations

from typing import Any

from workflow.engine.definition import Definition
from workflow.engine.registry import Machine, Reaction
from workflow.machines import application, found_card, loss_report
from workflow.machines.reactions import REACTIONS

REGISTRY: tuple[Machine[Any, Any], ...] = (
    application.MACHINE,
    loss_report.MACHINE,
    found_card.MACHINE,
)
"""Every machine, in the order the documents show them."""

MACHINES: tuple[Definition, ...] = tuple(m.definition for m in REGISTRY)
"""Every machine's compiled definition (`workflow.MACHINES`)."""


def machine(name: str) -> Machine[Any, Any]:
    """The registered machine of this name (``KeyError`` for an unknown one)."""
    return {m.name: m for m in REGISTRY}[name]


def reactions_to(name: str) -> tuple[Reaction, ...]:
    """The reactions that follow events of the machine ``name``."""
    return tuple(r for r in REACTIONS if r.machine == name)


__all__ = ["MACHINES", "REACTIONS", "REGISTRY", "machine", "reactions_to"]
