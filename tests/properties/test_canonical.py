"""The hash chain's canonical bytes are those of the original definition, for every value.

`workflow.engine.chain.canonical` and `identity_digest` write their JSON key by key, in sorted
order, instead of building a dict and letting `json.dumps` sort it (verification hashes every
row of a database). Every hash already stored was made by the original functions, kept here
word for word as the reference: for any value, the library's must give the same bytes, or fail
with the same error, or a history written before would stop verifying (and a forged one could
start to).

The values are those the library writes (machine and event names, actor ids and units, facts
recorded as details, times from the clock) and hostile ones: any Unicode including lone
surrogates and control characters, floats that are NaN or infinite, huge and negative integers,
booleans where integers go, naive and far-away times, bytes, sets, nested and unsortable
details, str and int subclasses, and ids that are not UUIDs.
"""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflow.engine.chain import (
    CHAINED_FIELDS,
    canonical,
    entry_hash,
    identity_digest,
)
from workflow.machines import REGISTRY

# == The reference: the functions as they were first written =================================


def reference_canonical(entry: Mapping[str, Any], previous: str | None) -> bytes:
    content: dict[str, Any] = {name: entry[name] for name in CHAINED_FIELDS}
    at = content["at"]
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ValueError("a history row's time must be an aware datetime")
    content["at"] = at.astimezone(UTC).isoformat(timespec="microseconds")
    content["record_id"] = str(content["record_id"])
    content["previous"] = previous or ""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def reference_identity_digest(
    machine: str, record_id: Any, values: Mapping[str, Any], columns: Sequence[str]
) -> str:
    content = {
        "machine": machine,
        "record_id": str(record_id),
        "identity": {name: None if values[name] is None else str(values[name]) for name in columns},
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def same_outcome(new: Any, old: Any, *args: Any) -> None:
    """``new(*args)`` returns what ``old(*args)`` returns, or raises an error of its class."""
    try:
        expected = old(*args)
    except Exception as exc:  # the reference's error is the expectation
        try:
            got = new(*args)
        except Exception as mine:
            assert type(mine) is type(exc), f"{type(mine).__name__} != {type(exc).__name__}"
            return
        raise AssertionError(
            f"the reference raised {type(exc).__name__}, the library gave {got!r}"
        ) from exc
    assert new(*args) == expected


# == Values ====================================================================================


class Shade(enum.StrEnum):
    RED = "red"
    EMPTY = ""


class Level(enum.IntEnum):
    ONE = 1


class Text(str):
    pass


# Every code point: lone surrogates, control characters, bidi marks, fullwidth digits.
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=24)
LIBRARY_TEXT = st.text(st.characters(codec="utf-8"), max_size=24)

scalars = st.one_of(
    ANY_TEXT,
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([Shade.RED, Shade.EMPTY, Level.ONE, Text("x\u2028y"), "\ud800", "\x00"]),
)
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(ANY_TEXT, inner, max_size=4),
    ),
    max_leaves=12,
)
odd = st.one_of(
    st.binary(max_size=8),
    st.frozensets(st.integers(), max_size=3),
    st.decimals(allow_nan=False),
    st.uuids(),
    st.dictionaries(st.one_of(st.integers(), ANY_TEXT), scalars, max_size=3),  # unsortable keys
    st.dictionaries(st.integers(), scalars, max_size=3),
    st.tuples(scalars, scalars),
)
anything = st.one_of(scalars, json_like, odd, st.uuids())
"""Any value, scalars as often as containers (a recursive strategy alone draws few)."""

offsets = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)),
)
aware = st.datetimes(timezones=st.one_of(st.just(UTC), offsets))
clock_times = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
"""What the clock gives: aware UTC times (a host's clock may give other offsets: `aware`)."""
times = st.one_of(aware, st.datetimes(), st.dates(), ANY_TEXT, st.none(), st.integers())

machines = st.sampled_from([m.name for m in REGISTRY])
events = st.sampled_from(
    sorted({t.event for m in REGISTRY for t in m.definition.transitions.values()} | {"submit"})
)
states = st.sampled_from(sorted({s for m in REGISTRY for s in m.definition.states}))
ROLES = ["acceptance_clerk", "hukou_reviewer", "card_producer"]
units = st.from_regex(r"[0-9]{2}|[0-9]{6}", fullmatch=True)
facts = st.dictionaries(
    st.sampled_from(
        ["identity", "old_card_returned", "receipt_matches", "ground", "note", "days", "reason"]
    ),
    st.one_of(st.booleans(), LIBRARY_TEXT, st.integers(1, 30), st.none()),
    max_size=4,
)
hashes = st.one_of(st.none(), st.just(""), st.text("0123456789abcdef", min_size=64, max_size=64))


def _representable(moment: datetime) -> bool:
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


@st.composite
def library_rows(draw: st.DrawFn) -> tuple[dict[str, Any], str | None]:
    """A history row as the library writes it, and the hash of the row before."""
    seq = draw(st.integers(1, 10_000))
    row = {
        "machine": draw(machines),
        "record_id": draw(st.uuids()),
        "seq": seq,
        "event": draw(events),
        "from_state": None if seq == 1 else draw(states),
        "to_state": draw(states),
        "actor_id": draw(LIBRARY_TEXT),
        "actor_role": draw(st.sampled_from(ROLES)),
        "actor_unit": draw(units),
        "at": draw(st.one_of(clock_times, aware.filter(_representable))),
        "details": draw(facts),
    }
    return row, None if seq == 1 else draw(hashes)


@st.composite
def hostile_rows(draw: st.DrawFn) -> tuple[dict[str, Any], Any]:
    """A history row with any value in one to three fields, the others as the library writes
    them (so that each hostile value reaches as far as it can), as a planted row reads back."""
    row, previous = draw(library_rows())
    for name in draw(st.lists(st.sampled_from(CHAINED_FIELDS), min_size=1, max_size=3)):
        row[name] = draw(times if name == "at" else st.one_of(anything, aware))
    if draw(st.booleans()):
        previous = draw(anything)
    return row, previous


SETTINGS = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# == The properties ============================================================================


@SETTINGS
@given(library_rows())
def test_rows_the_library_writes_hash_to_the_same_bytes(case: tuple[dict[str, Any], Any]) -> None:
    row, previous = case
    assert canonical(row, previous) == reference_canonical(row, previous)
    expected = hashlib.sha256(reference_canonical(row, previous)).hexdigest()
    assert entry_hash(row, previous) == expected


@SETTINGS
@given(hostile_rows())
def test_hostile_rows_give_the_same_bytes_or_the_same_error(
    case: tuple[dict[str, Any], Any],
) -> None:
    row, previous = case
    same_outcome(canonical, reference_canonical, row, previous)


@SETTINGS
@given(
    st.one_of(machines, ANY_TEXT, st.integers()),
    st.one_of(st.uuids(), ANY_TEXT, st.integers()),
    st.dictionaries(
        st.one_of(st.sampled_from(["citizen_id", "name", "receipt_no"]), ANY_TEXT, st.integers()),
        st.one_of(st.none(), LIBRARY_TEXT, ANY_TEXT, st.decimals(), anything),
        max_size=4,
    ),
    st.data(),
)
def test_identity_digests_are_the_same_for_any_values(
    machine: Any, record_id: Any, values: dict[Any, Any], data: st.DataObject
) -> None:
    names = sorted(values, key=repr)
    columns = data.draw(st.lists(st.sampled_from(names), max_size=5)) if names else []
    same_outcome(identity_digest, reference_identity_digest, machine, record_id, values, columns)


def test_a_row_of_every_shape_the_library_writes_is_covered() -> None:
    """The reference is real: the two agree on a hand-made row and on a hand-computed hash."""
    row = {
        "machine": "application",
        "record_id": uuid.UUID(int=1),
        "seq": 2,
        "event": "reject",
        "from_state": "transmitted",
        "to_state": "rejected",
        "actor_id": "审核员-1",
        "actor_role": "hukou_reviewer",
        "actor_unit": "110105",
        "at": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=8))),
        "details": {"note": "照片\u2028不符", "ground": "other"},
    }
    expected = (
        '{"actor_id":"审核员-1","actor_role":"hukou_reviewer","actor_unit":"110105",'
        '"at":"2026-01-01T19:04:05.000006+00:00","details":{"ground":"other","note":"照片\u2028不符"},'
        '"event":"reject","from_state":"transmitted","machine":"application","previous":"h",'
        '"record_id":"00000000-0000-0000-0000-000000000001","seq":2,"to_state":"rejected"}'
    ).encode()
    assert canonical(row, "h") == reference_canonical(row, "h") == expected
