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
import uuid
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


def canonical(entry: Mapping[str, Any], previous: str | None) -> bytes:
    """The bytes hashed for ``entry``: sorted-key compact JSON, times as UTC ISO 8601 with
    microseconds, ids as strings."""
    at = entry["at"]
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ValueError("a history row's time must be an aware datetime")
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    record_id, from_state, details = entry["record_id"], entry["from_state"], entry["details"]
    if (
        type(record_id) is uuid.UUID
        and type(entry["seq"]) is int
        and (from_state is None or type(from_state) is str)
        and type(entry["actor_id"]) is str
        and type(entry["actor_role"]) is str
        and type(entry["actor_unit"]) is str
        and type(entry["event"]) is str
        and type(entry["machine"]) is str
        and type(entry["to_state"]) is str
    ):
        # What json.dumps below writes, written out for the types the engine writes rows
        # with: the keys are fixed and in sorted order, a UUID and an ISO time need no
        # escaping, and the strings and the details go through the same encoder. Other types
        # (a row read back with odd values) take the general way.
        s = _string
        written = None if details else _EMPTY.get(type(details))
        if written is None:
            written = _encode(details)
        return (
            f'{{"actor_id":{s(entry["actor_id"])},"actor_role":{s(entry["actor_role"])},'
            f'"actor_unit":{s(entry["actor_unit"])},'
            f'"at":"{at.isoformat(timespec="microseconds")}",'
            f'"details":{written},'
            f'"event":{s(entry["event"])},'
            f'"from_state":{"null" if from_state is None else s(from_state)},'
            f'"machine":{s(entry["machine"])},"previous":{s(previous or "")},'
            f'"record_id":"{record_id}","seq":{int.__repr__(entry["seq"])},'
            f'"to_state":{s(entry["to_state"])}}}'
        ).encode()
    content: dict[str, Any] = {name: entry[name] for name in CHAINED_FIELDS}
    content["at"] = at.isoformat(timespec="microseconds")
    content["record_id"] = str(record_id)
    content["previous"] = previous or ""
    return _encode(content).encode()


_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
"""``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``."""
_string: Callable[[str], str] = json.encoder.encode_basestring
"""A string as that encoder writes it."""
_EMPTY: dict[type, str] = {dict: "{}", list: "[]"}
"""What the encoder writes for an empty dict or list (the usual details: none)."""


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
    content = {
        "machine": machine,
        "record_id": str(record_id),
        "identity": {name: _text(values[name]) for name in columns},
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if key is not None:
        return "hmac-sha256:" + hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def entry_hash(entry: Mapping[str, Any], previous: str | None, key: bytes | None = None) -> str:
    """The hash of a history row that follows the row whose hash is ``previous``: SHA-256, or
    HMAC-SHA-256 under the chain key. Both are 64 hex digits."""
    if key is not None:
        return hmac.new(key, canonical(entry, previous), hashlib.sha256).hexdigest()
    return hashlib.sha256(canonical(entry, previous)).hexdigest()
