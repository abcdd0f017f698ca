"""The bytes a history row's hash covers are the same whichever way they are written.

`canonical` writes the JSON of a row with the usual types out by hand (the command path's
speed); any other row goes through ``json.dumps``. Every history already stored was hashed
over ``json.dumps``' bytes, so the two must agree on every row, odd strings and details
included, or verification would call good rows forged.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from workflow.engine.chain import CHAINED_FIELDS, canonical

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))])


def reference(entry: dict[str, Any], previous: str | None) -> bytes:
    """The canonical bytes as the chain has always written them."""
    content = {name: entry[name] for name in CHAINED_FIELDS}
    content["at"] = entry["at"].astimezone(UTC).isoformat(timespec="microseconds")
    content["record_id"] = str(content["record_id"])
    content["previous"] = previous or ""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@st.composite
def entries(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "machine": draw(st.sampled_from(["application", "loss_report"]) | st.text()),
        "record_id": draw(st.uuids() | st.text()),
        "seq": draw(st.integers(min_value=-(2**40), max_value=2**40) | st.booleans()),
        "event": draw(st.text()),
        "from_state": draw(st.none() | st.text()),
        "to_state": draw(st.text()),
        "actor_id": draw(st.text()),
        "actor_role": draw(st.text()),
        "actor_unit": draw(st.text()),
        "at": draw(st.datetimes(timezones=ZONES)),
        "details": draw(st.dictionaries(st.text(), JSON, max_size=4) | JSON),
    }


@given(entries(), st.none() | st.text())
def test_the_canonical_bytes_are_json_dumps_bytes(
    entry: dict[str, Any], previous: str | None
) -> None:
    assert canonical(entry, previous) == reference(entry, previous)


def test_a_row_as_the_engine_writes_it_gives_json_dumps_bytes() -> None:
    entry = {
        "machine": "application",
        "record_id": uuid.UUID("8c1f5a3e-0d9b-4c1e-9f7a-2b6d8e4f1a0c"),
        "seq": 2,
        "event": "transmit",
        "from_state": "submitted",
        "to_state": "transmitted",
        "actor_id": 'clerk "7"\u2028\\',
        "actor_role": "acceptance_clerk",
        "actor_unit": "440305",
        "at": datetime(2026, 6, 1, 8, 0, 0, 5, tzinfo=UTC),
        "details": {"receipt_matches": True, "note": "\u00e9\x00", "days": 3},
    }
    assert canonical(entry, "ab" * 32) == reference(entry, "ab" * 32)
    assert canonical({**entry, "from_state": None}, None) == reference(
        {**entry, "from_state": None}, None
    )
