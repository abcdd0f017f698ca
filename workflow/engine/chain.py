"""The hash chain over each record's history.

Each history row carries ``hash = SHA-256(canonical JSON of the row's content and the previous
row's hash)``; the record keeps the hash of its last row as ``chain_head``. Editing, deleting,
reordering or inserting any row changes a hash that a later row or the record depends on, so
`workflow.engine.verification` finds it.

With a chain key (a secret the host configures and never stores in the database) the hash is
HMAC-SHA-256 under the key instead: a writer with database access alone can then neither append
nor rewrite a row that verification with the key accepts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

CHAINED_FIELDS = (
    "machine",
    "record_id",
    "seq",
    "event",
    "from_state",
    "to_state",
    "actor_id",
    "actor_role",
    "actor_unit",
    "at",
    "details",
)
"""The columns of a history row that its hash covers (all but the surrogate id and the hash)."""


def canonical(
    entry: Mapping[str, Any], previous: str | None, *, moment: str | None = None
) -> bytes:
    """The bytes hashed for ``entry``: sorted-key compact JSON, times as UTC ISO 8601 with
    microseconds, ids as strings.

    ``moment`` is the row's time already in that form, when the caller read it so from the
    database (verification does): it must be what ``entry["at"]`` gives.

    Written out key by key in sorted order rather than as one sorted dict (verification hashes
    every row of the database): the bytes are those of `json.dumps` of the row's content with
    ``sort_keys=True, separators=(",", ":"), ensure_ascii=False``, for every value. A value of
    a type the library never writes takes that very call."""
    actor_id = entry["actor_id"]
    actor_role = entry["actor_role"]
    actor_unit = entry["actor_unit"]
    at = entry["at"]
    details = entry["details"]
    event = entry["event"]
    from_state = entry["from_state"]
    machine = entry["machine"]
    record_id = entry["record_id"]
    seq = entry["seq"]
    to_state = entry["to_state"]
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ValueError("a history row's time must be an aware datetime")
    if moment is None:
        moment = at.astimezone(UTC).isoformat(timespec="microseconds")
    identifier = str(record_id)
    before = previous or ""
    if (
        type(seq) is not int
        or not isinstance(before, str)
        or not (from_state is None or isinstance(from_state, str))
        or not isinstance(actor_id, str)
        or not isinstance(actor_role, str)
        or not isinstance(actor_unit, str)
        or not isinstance(event, str)
        or not isinstance(machine, str)
        or not isinstance(to_state, str)
    ):
        return _canonical_dict(entry, moment, identifier, before)
    # Who, what and which machine repeat from row to row: their JSON is written once.
    frame = _FRAMES.get((actor_id, actor_role, actor_unit, event, from_state, machine, to_state))
    if frame is None:
        frame = _frame(actor_id, actor_role, actor_unit, event, from_state, machine, to_state)
    head, middle, tail = frame
    return (
        f"{head}{_string(moment)},"
        f'"details":{_compact(details)}{middle}{_string(before)},'
        f'"record_id":{_string(identifier)},"seq":{int.__repr__(seq)}{tail}'
    ).encode()


_FRAMES: dict[tuple[str | None, ...], tuple[str, str, str]] = {}
"""The JSON around a row's time, details, previous hash, record id and position, by its other
fields (all str)."""

_FRAMES_AT_MOST = 10_000


def _frame(
    actor_id: str,
    actor_role: str,
    actor_unit: str,
    event: str,
    from_state: str | None,
    machine: str,
    to_state: str,
) -> tuple[str, str, str]:
    if len(_FRAMES) >= _FRAMES_AT_MOST:
        _FRAMES.clear()
    frame = (
        f'{{"actor_id":{_string(actor_id)},"actor_role":{_string(actor_role)},'
        f'"actor_unit":{_string(actor_unit)},"at":',
        f',"event":{_string(event)},'
        f'"from_state":{"null" if from_state is None else _string(from_state)},'
        f'"machine":{_string(machine)},"previous":',
        f',"to_state":{_string(to_state)}}}',
    )
    _FRAMES[(actor_id, actor_role, actor_unit, event, from_state, machine, to_state)] = frame
    return frame


_string: Callable[[str], str] = json.encoder.encode_basestring
"""A str as JSON with ``ensure_ascii=False``: the function `json.dumps` itself uses."""

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _compact(value: Any) -> str:
    """`json.dumps` with the canonical settings (`_ENCODER.encode`), without its Python-level
    set-up per call: the C encoder it makes, made here directly (a fresh one each time, as
    `json` makes it, so circular values are still refused the same way)."""
    if _make_encoder is None or isinstance(value, str):
        return _ENCODER.encode(value)
    return "".join(
        _make_encoder({}, _ENCODER.default, _string, None, ":", ",", True, False, True)(value, 0)
    )


_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)


def _canonical_dict(entry: Mapping[str, Any], moment: str, identifier: str, before: str) -> bytes:
    """`canonical` for values of types the library does not write: one sorted dict, so the
    bytes (or the error) are `json.dumps`'s whatever the values are."""
    content: dict[str, Any] = {name: entry[name] for name in CHAINED_FIELDS}
    content["at"] = moment
    content["record_id"] = identifier
    content["previous"] = before
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


IDENTITY_FACT = "identity"
"""The key of the first history row's details that holds the record's identity digest."""

IDENTITY_SINCE = "0010"
"""The revision from which every record's first row binds its identity."""


MIN_KEY_BYTES = 32
"""A chain key is at least 256 bits."""


def check_key(key: object) -> bytes | None:
    """The chain key as bytes (None for no key), or ValueError saying what is wrong."""
    if key is None:
        return None
    if not isinstance(key, bytes):
        raise ValueError(f"the chain key must be bytes, not {type(key).__name__}")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"the chain key must be at least {MIN_KEY_BYTES} bytes (256 bits), got {len(key)}"
        )
    return key


def identity_digest(
    machine: str,
    record_id: Any,
    values: Mapping[str, Any],
    columns: Sequence[str],
    key: bytes | None = None,
) -> str:
    """The digest that binds a record's identity columns to its history: SHA-256 over the
    machine, the record's id and the columns' values, as canonical JSON (``sha256:…``), or
    HMAC-SHA-256 under the chain key (``hmac-sha256:…``).

    The record's id makes it differ for every record, so equal identities give unequal
    digests. Unkeyed, anyone holding a record's history can test a guess of the values, so it
    proves identity and hides nothing from a reader who may read the record; keyed, nobody
    without the key can.
    """
    text = _identity_text(machine, str(record_id), {name: _text(values[name]) for name in columns})
    if key is not None:
        return "hmac-sha256:" + hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _identity_text(machine: str, identifier: str, identity: dict[str, str | None]) -> str:
    """The canonical JSON of an identity digest's content, written out in sorted key order:
    `json.dumps` of ``{"machine", "record_id", "identity"}`` with ``sort_keys=True``, compact,
    ``ensure_ascii=False``, for every value."""
    if isinstance(machine, str):
        try:
            fields = ",".join(
                [
                    _string(name) + ":" + ("null" if value is None else _string(value))
                    for name, value in sorted(identity.items())
                ]
            )
        except TypeError:  # a name that is no str: json.dumps says what it makes of it
            pass
        else:
            return (
                f'{{"identity":{{{fields}}},"machine":{_string(machine)},'
                f'"record_id":{_string(identifier)}}}'
            )
    content = {"machine": machine, "record_id": identifier, "identity": identity}
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def entry_hash(
    entry: Mapping[str, Any],
    previous: str | None,
    key: bytes | None = None,
    *,
    moment: str | None = None,
) -> str:
    """The hash of a history row that follows the row whose hash is ``previous``: SHA-256, or
    HMAC-SHA-256 under the chain key. Both are 64 hex digits. ``moment``: see `canonical`."""
    if key is not None:
        return hmac.new(key, canonical(entry, previous, moment=moment), hashlib.sha256).hexdigest()
    return hashlib.sha256(canonical(entry, previous, moment=moment)).hexdigest()
