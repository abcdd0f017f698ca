"""The hash chain over each record's history.

Each history row carries ``hash = SHA-256(canonical JSON of the row's content and the previous
row's hash)``; the record keeps the hash of its last row as ``chain_head``. Editing, deleting,
reordering or inserting any row changes a hash that a later row or the record depends on, so
`workflow.engine.verification` finds it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
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
    content: dict[str, Any] = {name: entry[name] for name in CHAINED_FIELDS}
    at = content["at"]
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ValueError("a history row's time must be an aware datetime")
    content["at"] = at.astimezone(UTC).isoformat(timespec="microseconds")
    content["record_id"] = str(content["record_id"])
    content["previous"] = previous or ""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


IDENTITY_FACT = "identity"
"""The key of the first history row's details that holds the record's identity digest."""


def identity_digest(
    machine: str, record_id: Any, values: Mapping[str, Any], columns: Sequence[str]
) -> str:
    """The digest that binds a record's identity columns to its history: SHA-256 over the
    machine, the record's id and the columns' values, as canonical JSON.

    The record's id makes it differ for every record, so equal identities give unequal
    digests. It is not keyed: anyone holding a record's history can test a guess of the
    values, so it proves identity and hides nothing from a reader who may read the record.
    """
    content = {
        "machine": machine,
        "record_id": str(record_id),
        "identity": {name: _text(values[name]) for name in columns},
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def entry_hash(entry: Mapping[str, Any], previous: str | None) -> str:
    """The hash of a history row that follows the row whose hash is ``previous``."""
    return hashlib.sha256(canonical(entry, previous)).hexdigest()
