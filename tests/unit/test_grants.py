"""The grants script is written from the library's own tables and effects."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.subjects import GOOD_PAYLOADS
from workflow import grants
from workflow.machines import REGISTRY
from workflow.models.base import UTCDateTime


def _stand_in(table: sa.Table) -> SimpleNamespace:
    """A record of ``table`` with a plausible value in every column."""
    values: dict[str, Any] = {}
    for column in table.c:
        kind = column.type
        if isinstance(kind, UTCDateTime):
            values[column.name] = datetime(2026, 5, 1, tzinfo=UTC)
        elif isinstance(kind, sa.Numeric):
            values[column.name] = Decimal("20")
        elif isinstance(kind, sa.Boolean):
            values[column.name] = False
        elif isinstance(kind, sa.Integer):
            values[column.name] = 1
        else:
            values[column.name] = None
    return SimpleNamespace(**values)


@pytest.mark.parametrize("machine", REGISTRY, ids=lambda m: m.name)
def test_every_effect_sets_only_columns_the_application_role_may_update(machine: Any) -> None:
    table = machine.repository.table
    allowed = set(grants.moved_columns(table))
    for event, rule in machine.definition.events.items():
        if rule.effect is None:
            continue
        arguments = dict(GOOD_PAYLOADS.get(event, {}))
        if event == "collect":
            arguments = {"receipt_no": "ABCDEFGHJKMN", "old_card_returned": True}
        payload = rule.payload.model_validate(arguments)
        changes = rule.effect(_stand_in(table), payload, datetime(2026, 5, 2, tzinfo=UTC))
        assert set(changes) <= allowed, (event, set(changes) - allowed)


def test_the_fixed_columns_are_not_updatable() -> None:
    for table in grants.state_tables():
        fixed = {"id", "citizen_id"} & set(table.c.keys())
        assert fixed and not fixed & set(grants.moved_columns(table)), table.name


def test_names_are_quoted_and_public_is_refused() -> None:
    script = grants.grants_sql("App Role", schema="Cards", auditor="select")
    assert 'TO "App Role";' in script and '"Cards".idcard_outbox' in script
    assert 'FROM "select";' in script
    assert "DO $grants$" in script  # the database it runs in
    for bad in ("public", "PUBLIC"):
        with pytest.raises(ValueError):
            grants.grants_sql(bad)
    with pytest.raises(ValueError):
        grants.grants_sql("a\x00b")
    with pytest.raises(ValueError):
        grants.grants_sql("x" * 64)


def test_a_role_name_can_not_break_out_of_the_do_block() -> None:
    with pytest.raises(ValueError):
        grants.grants_sql("a$grants$b")
    script = grants.grants_sql("o'brien%s")
    assert "FROM PUBLIC, \"o''brien%%s\"'" in script


def test_the_security_guide_shows_what_the_command_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shlex
    from pathlib import Path

    from workflow import cli

    guide = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    lines = [line.strip() for line in guide.splitlines()]
    (at,) = [i for i, line in enumerate(lines) if line.startswith("$ idcard-workflow db grants")]
    argv = shlex.split(lines[at].removeprefix("$ idcard-workflow "))
    start = lines.index("```sql", at) + 1
    shown = "\n".join(lines[start : lines.index("```", start)]) + "\n"

    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert shown == "\n".join(line.strip() for line in printed.splitlines()) + "\n"
