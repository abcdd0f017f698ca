"""The pure decision step, tested over every registered machine with no database at all.

Hypothesis draws a record of the machine's own table (any state, any column values), an event
name (the machine's and some that aren't), an actor of any role and unit, a payload and the
facts from other records; `decide` must either refuse in the documented order or move exactly
as the definition says, with a history row chained to the record's head.
"""

from __future__ import annotations

import ast
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import workflow as wf
from workflow.engine.chain import entry_hash
from workflow.engine.decision import decide
from workflow.engine.registry import Machine
from workflow.machines import REGISTRY

UNITS = ("440305", "110105", "310115", "44", "11")
NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def _column_values(column: sa.Column[Any]) -> st.SearchStrategy[Any]:
    kind = column.type
    if isinstance(kind, sa.Uuid):
        return st.uuids()
    if isinstance(kind, sa.Boolean):
        return st.booleans()
    if isinstance(kind, sa.Numeric):
        return st.decimals(min_value=0, max_value=100, places=2)
    if isinstance(kind, sa.JSON):
        return st.lists(st.sampled_from(list(wf.Document)), max_size=3)
    if isinstance(kind, (sa.DateTime, sa.types.TypeDecorator)):
        return st.datetimes(
            min_value=datetime(2025, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
        )
    if isinstance(kind, sa.Integer):
        return st.integers(1, 50)
    if column.name.endswith(("region", "unit")):
        return st.sampled_from(UNITS[:3])
    if column.name == "kind":
        return st.sampled_from(list(wf.Kind))
    return st.text(max_size=20)


def records(machine: Machine[Any, Any]) -> st.SearchStrategy[dict[str, Any]]:
    table = machine.repository.table
    fields = {c.name: _column_values(c) for c in table.columns}
    fields["state"] = st.sampled_from(machine.definition.states)
    fields["chain_head"] = st.text("0123456789abcdef", min_size=64, max_size=64)
    return st.fixed_dictionaries(fields)


def payloads() -> st.SearchStrategy[dict[str, Any]]:
    # Every payload field of every machine, and values that pass or fail their rules.
    return st.fixed_dictionaries(
        {},
        optional={
            "ground": st.sampled_from([*wf.RejectionGround, "nonsense"]),
            "note": st.sampled_from(["", "  ", "moved abroad"]),
            "receipt_no": st.text(max_size=14),
            "old_card_returned": st.booleans(),
            "card_presented": st.booleans(),
            "identity_checked": st.booleans(),
            "days": st.integers(-2, 40),
            "reason": st.sampled_from(["", "road closed"]),
        },
    )


def actors() -> st.SearchStrategy[wf.Actor]:
    def build(role: wf.Role, unit: str) -> wf.Actor:
        digits = 2 if role is wf.Role.CARD_PRODUCER else 6
        return wf.Actor(id="actor-1", role=role, unit=unit[:digits].ljust(digits, "0"))

    return st.builds(build, st.sampled_from(list(wf.Role)), st.sampled_from(UNITS))


@pytest.mark.parametrize("machine", REGISTRY, ids=lambda m: m.name)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_decide_refuses_in_order_or_moves_as_the_definition_says(
    machine: Machine[Any, Any], data: st.DataObject
) -> None:
    d = machine.definition
    record = data.draw(records(machine))
    event = data.draw(st.sampled_from([*d.events, "submit", d.creation_event, "jump", 7]))
    actor = data.draw(actors())
    facts = data.draw(
        st.fixed_dictionaries(
            {"replacement_collected": st.booleans(), "replacement_since_loss": st.booleans()}
        )
    )
    rule = d.events.get(event) if isinstance(event, str) else None
    try:
        arguments = rule.payload.model_validate(data.draw(payloads())) if rule else None
    except ValidationError:
        return  # the runner refuses bad payloads before it reads anything
    state = record["state"]
    try:
        move = decide(d, record, event, actor, arguments, facts, NOW)
    except wf.PermissionDenied:
        assert rule is not None
        assert rule.permission.problems(event, actor, _columns(record, facts))
        return
    except wf.IllegalTransition as refused:
        assert rule is None or d.transition(state, event) is None
        assert refused.state == state
        return
    except wf.GuardFailed as refused:
        transition = d.transition(state, event)
        assert transition is not None and refused.guard in {g.name for g in transition.guards}
        return
    transition = d.transition(state, event)
    assert transition is not None and rule is not None
    assert not rule.permission.problems(event, actor, _columns(record, facts))
    assert move.cas["state"] == state and move.cas["new_state"] == transition.target
    assert move.cas["version"] == record["version"]
    entry = move.entry
    assert (entry["machine"], entry["record_id"], entry["seq"]) == (
        d.name,
        record["id"],
        record["version"] + 1,
    )
    assert (entry["from_state"], entry["to_state"], entry["at"]) == (state, transition.target, NOW)
    assert entry["hash"] == entry_hash(
        {k: v for k, v in entry.items() if k != "hash"}, record["chain_head"]
    )
    assert move.result["chain_head"] == entry["hash"]
    assert move.result["version"] == record["version"] + 1
    # The same predicate verify() uses accepts what the command recorded.
    row = _columns(record, facts)
    for guard in transition.guards:
        assert guard.holds(row, entry["details"])


def _columns(record: dict[str, Any], facts: dict[str, Any]) -> Any:
    from workflow.engine.definition import Columns

    return Columns({**record, **facts})


def test_a_deadline_is_extended_once_by_the_stated_days() -> None:
    (machine,) = [m for m in REGISTRY if m.name == "application"]
    submitted = NOW - timedelta(days=3)
    record = {
        "id": uuid.uuid4(),
        "state": "approved",
        "version": 3,
        "chain_head": "0" * 64,
        "acceptance_region": "440305",
        "hukou_region": "110105",
        "kind": "renewal",
        "submitted_at": submitted,
        "due_at": submitted + timedelta(days=60),
        "fee_paid": Decimal("20"),
    }
    clerk = wf.Actor(id="c", role=wf.Role.ACCEPTANCE_CLERK, unit="440305")
    payload = machine.definition.events["extend_deadline"].payload.model_validate(
        {"days": 30, "reason": "the ferry is not running"}
    )
    move = decide(machine.definition, record, "extend_deadline", clerk, payload, {}, NOW)
    assert move.cas["new_state"] == "approved"
    assert move.result["due_at"] == submitted + timedelta(days=90)
    with pytest.raises(wf.GuardFailed, match="not_extended_before"):
        decide(machine.definition, move.result, "extend_deadline", clerk, payload, {}, NOW)


ENGINE = Path(__file__).resolve().parents[2] / "workflow" / "engine"
FORBIDDEN = (
    "workflow.machines",
    "workflow.models.tables",
    "workflow.models.enums",
    "workflow.service",
    "workflow.cli",
    "workflow.demo",
    "workflow.diagrams",
)


@pytest.mark.parametrize("module", sorted(ENGINE.glob("*.py")), ids=lambda p: p.name)
def test_the_engine_imports_no_machine_table_or_enum(module: Path) -> None:
    imported: list[str] = []
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module)
            imported += [f"{node.module}.{alias.name}" for alias in node.names]
    wrong = [name for name in imported if name.startswith(FORBIDDEN) or name == "workflow.models"]
    assert wrong == [], f"{module.name} imports {wrong}"
