"""The pure decision step: one command checked against one loaded record, no I/O.

`decide` takes a machine's `Definition`, the record as loaded (with the facts its guards need
from other records), the event, the actor and the validated payload, and either raises the
refusal (`PermissionDenied`, `IllegalTransition`, `GuardFailed`, in that order) or returns the
`Move`: the compare-and-set, the chained history row and the record's new values. The runner
does the reading and writing around it; unit tests run it over every definition with no
database at all.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from pydantic import BaseModel

from workflow.engine.chain import entry_hash
from workflow.engine.definition import Columns, Definition
from workflow.errors import GuardFailed, IllegalTransition
from workflow.models.citizen_id import mask_citizen_id
from workflow.models.schemas import Actor


class Move(NamedTuple):
    """One record's checked transition: its compare-and-set, its history row, its new values."""

    cas: dict[str, Any]
    entry: dict[str, Any]
    result: dict[str, Any]


_CITIZEN_NUMBER = re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
"""A citizen number standing on its own (18 digits inside a hash are not one)."""


def shown(event: object) -> str:
    """An event name as logs and messages may show it: a plain name as it is, anything else
    quoted, escaped and cut short, so a crafted name can't forge or flood a log line, and with
    any citizen number in it masked (one passed by mistake for an event is personal data)."""
    if isinstance(event, str) and event.isascii() and event.isidentifier() and len(event) <= 32:
        return event
    text = _CITIZEN_NUMBER.sub(lambda m: mask_citizen_id(m.group().upper()), repr(event))
    return text if len(text) <= 40 else text[:37] + "..."


def decide(
    definition: Definition,
    record: Mapping[Any, Any],
    event: Any,
    actor: Actor,
    arguments: BaseModel | None,
    facts: Mapping[str, Any],
    now: datetime,
    *,
    key: bytes | None = None,
) -> Move:
    """Check ``event`` on ``record`` and work out its move, or raise the refusal.

    ``facts`` are what the machine's guards need from other records (empty for most events);
    guards read them like the record's columns. The history row records every guard's facts,
    and is hashed under ``key`` when the host configured a chain key.
    """
    d = definition
    state = str(record["state"])
    rule = d.events.get(event) if isinstance(event, str) else None
    if rule is None:
        raise IllegalTransition(shown(event), state)
    row = Columns({**record, **facts} if facts else record)
    rule.permission.require(event, actor, row)
    transition = d.transition(state, event)
    if transition is None:
        raise IllegalTransition(event, state)
    details: dict[str, Any] = {}
    for guard in transition.guards:
        found = guard.facts(row, arguments)
        if not guard.holds(row, found):
            raise GuardFailed(event, guard.name, guard.rule)
        details.update(found)
    version = int(record["version"])
    entry = history_row(
        d.name,
        record["id"],
        version + 1,
        event,
        state,
        transition.target,
        actor,
        now,
        details,
        previous=record["chain_head"],
        key=key,
    )
    changes = dict(rule.effect(row, arguments, now)) if rule.effect else {}
    changes["chain_head"] = entry["hash"]
    return Move(
        cas={
            "version": version,
            "state": state,
            "new_state": transition.target,
            "changes": changes,
        },
        entry=entry,
        result={**record, **changes, "state": transition.target, "version": version + 1},
    )


def history_row(
    machine: str,
    record_id: uuid.UUID,
    seq: int,
    event: str,
    from_state: str | None,
    to_state: str,
    actor: Actor,
    at: datetime,
    details: Mapping[str, Any],
    *,
    previous: str | None = None,
    key: bytes | None = None,
) -> dict[str, Any]:
    """A history row, chained to the row whose hash is ``previous`` (under the chain key, when
    there is one)."""
    entry = {
        "machine": machine,
        "record_id": record_id,
        "seq": seq,
        "event": event,
        "from_state": from_state,
        "to_state": to_state,
        "actor_id": actor.id,
        "actor_role": str(actor.role),
        "actor_unit": actor.unit,
        "at": at,
        "details": dict(details),
    }
    entry["hash"] = entry_hash(entry, previous, key)
    return entry
