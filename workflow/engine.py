"""Runs commands of any machine: one transaction per command, all of it or none of it.

Generic: the machine's `Definition`, its `Repository` and a clock are all it needs. A command
loads the record (locking it where the database can), checks the actor, the state and the
guards in that order, moves the record with a compare-and-set on its version, and appends the
log row with what the guards checked, in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Strict, StringConstraints, TypeAdapter
from pydantic_core import to_jsonable_python

from models.schemas import Actor, Condition, EventOption, Explanation, Reason, TransitionRecord
from workflow.chain import entry_hash
from workflow.definition import Columns, Definition
from workflow.errors import (
    ConcurrentUpdate,
    ConfigurationError,
    GuardFailed,
    IdempotencyConflict,
    IllegalTransition,
    NotFound,
    WorkflowError,
)
from workflow.repository import Repository
from workflow.store import ConflictMap, Store

log = logging.getLogger("workflow")
"""Commands and refusals at INFO: ids, events, roles and units only, never personal data."""

Clock = Callable[[], datetime]
"""Returns the current time as an aware datetime."""

ViewT = TypeVar("ViewT", bound=BaseModel)

_RECORD_ID = TypeAdapter(uuid.UUID)
_ACTOR = TypeAdapter(Actor)


def system_clock() -> datetime:
    """The real clock, in UTC."""
    return datetime.now(UTC)


def from_row(model: type[ViewT], row: Mapping[Any, Any]) -> ViewT:
    """A view built from the row's columns that the view has fields for."""
    return model.model_validate({name: row[name] for name in model.model_fields})


def as_actor(actor: Any) -> Actor:
    """An `Actor`, or a `ValidationError` naming what is wrong with it."""
    return actor if isinstance(actor, Actor) else _ACTOR.validate_python(actor)


def as_record_id(value: Any) -> uuid.UUID:
    """A `uuid.UUID` (or its string form), or a `ValidationError`."""
    return value if isinstance(value, uuid.UUID) else _RECORD_ID.validate_python(value)


class _RequestTaken(Exception):
    """Another transaction recorded the same request id first."""


_REQUEST_TAKEN: ConflictMap = {
    "command_requests.request_id": _RequestTaken,
    "pk_command_requests": _RequestTaken,
}

_REQUEST_ID = TypeAdapter(
    Annotated[
        str,
        Strict(),
        StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$"),
    ]
)
"""A request id: 1 to 128 printable ASCII characters, no spaces."""


class _Request:
    """A command carrying a request id: its fingerprint, and how to answer a retry."""

    def __init__(self, request_id: str, machine: str, command: str, fingerprint: str) -> None:
        self.request_id = request_id
        self.machine = machine
        self.command = command
        self.fingerprint = fingerprint

    @classmethod
    def of(
        cls,
        request_id: str | None,
        machine: str,
        command: str,
        record_id: uuid.UUID | None,
        actor: Actor,
        arguments: Any,
    ) -> _Request | None:
        if request_id is None:
            return None
        request_id = _REQUEST_ID.validate_python(request_id)
        content = {
            "machine": machine,
            "command": command,
            "record_id": str(record_id) if record_id else None,
            "actor": actor.model_dump(mode="json"),
            "arguments": _canonical(arguments),
        }
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return cls(request_id, machine, command, hashlib.sha256(text.encode()).hexdigest())

    def row(self, record_id: uuid.UUID, result: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "machine": self.machine,
            "record_id": record_id,
            "command": self.command,
            "fingerprint": self.fingerprint,
            "response": to_jsonable_python(dict(result)),
            "at": now,
        }

    def replay(self, prior: Mapping[Any, Any]) -> dict[str, Any]:
        if prior["fingerprint"] != self.fingerprint:
            raise IdempotencyConflict(self.request_id, str(prior["command"]))
        return dict(prior["response"])


def _canonical(arguments: Any) -> Any:
    # Sets have no order: sort them so equal arguments give equal fingerprints everywhere.
    if isinstance(arguments, BaseModel):
        arguments = arguments.model_dump(mode="python")
    if isinstance(arguments, Mapping):
        return {str(k): _canonical(v) for k, v in arguments.items()}
    if isinstance(arguments, (set, frozenset)):
        return sorted(_canonical(v) for v in arguments)
    if isinstance(arguments, (list, tuple)):
        return [_canonical(v) for v in arguments]
    return to_jsonable_python(arguments)


def _who(actor: Actor) -> str:
    return f"{actor.role}@{actor.unit} ({actor.id})"


class Runner:
    """Fires events of one machine against its table, through a `Store`."""

    def __init__(
        self, store: Store, definition: Definition, repository: Repository, clock: Clock
    ) -> None:
        self.store = store
        self.definition = definition
        self.repository = repository
        self._clock = clock

    def now(self) -> datetime:
        """The clock's reading in UTC; a clock that gives a naive datetime is a setup error."""
        value = self._clock()
        if not isinstance(value, datetime) or value.utcoffset() is None:
            raise ConfigurationError("the clock must return a timezone-aware datetime")
        return value.astimezone(UTC)

    def create(
        self,
        values: Mapping[str, Any],
        *,
        actor: Actor,
        now: datetime,
        arguments: Any,
        check: Callable[[Any], None] | None = None,
        conflicts: ConflictMap | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Create a record in the initial state with version 1 and its first log row.

        ``check(conn)`` runs inside the transaction before the insert (e.g. a duplicate check).
        ``arguments`` are the command's own (for the request fingerprint).
        """
        d = self.definition
        command = d.creation_event
        request = _Request.of(request_id, d.name, command, None, actor, arguments)
        d.creation.require(command, actor, Columns(values))
        record_id = uuid.uuid4()
        facts = d.creation_facts(Columns(values))
        entry = self._entry(record_id, 1, command, None, d.initial, actor, now, facts)
        row = {
            **values,
            "id": record_id,
            "state": d.initial,
            "version": 1,
            "chain_head": entry["hash"],
        }
        try:
            with self.store.transaction(
                write=True, conflicts={**(conflicts or {}), **_REQUEST_TAKEN}
            ) as conn:
                if request is not None:
                    prior = self.repository.find_request(conn, request.request_id)
                    if prior is not None:
                        return request.replay(prior)
                    # First, so that a racing retry stops here and replays this one's result.
                    self.repository.record_request(conn, request.row(record_id, row, now))
                if check is not None:
                    check(conn)
                self.repository.insert(conn, row)
                self.repository.append(conn, entry)
        except _RequestTaken:
            assert request is not None
            return self._replay_after_race(request)
        log.info("%s %s: %s by %s", d.name, record_id, command, _who(actor))
        return row

    def fire(
        self,
        record_id: Any,
        event: Any,
        *,
        actor: Any,
        payload: Mapping[str, Any],
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Apply ``event`` to the record; return the record's new column values."""
        record_id = as_record_id(record_id)
        actor = as_actor(actor)
        d = self.definition
        rule = d.events.get(event) if isinstance(event, str) else None
        arguments: BaseModel | None = rule.payload.model_validate(payload) if rule else None
        request = _Request.of(request_id, d.name, str(event), record_id, actor, arguments)
        try:
            with self.store.transaction(write=True, conflicts=_REQUEST_TAKEN) as conn:
                record = self.repository.load(conn, record_id, lock=True)
                if record is None:
                    raise NotFound(record_id, machine=d.name)
                if request is not None:
                    prior = self.repository.find_request(conn, request.request_id)
                    if prior is not None:
                        return request.replay(prior)
                state = str(record["state"])
                if rule is None:
                    raise IllegalTransition(str(event), state)
                row = Columns(record)
                rule.permission.require(event, actor, row)
                transition = d.transition(state, event)
                if transition is None:
                    raise IllegalTransition(event, state)
                details: dict[str, Any] = {}
                for guard in transition.guards:
                    if not guard.check(row, arguments):
                        raise GuardFailed(event, guard.name, guard.rule)
                    details.update(guard.facts(row, arguments))
                now = self.now()
                version = int(record["version"])
                entry = self._entry(
                    record_id,
                    version + 1,
                    event,
                    state,
                    transition.target,
                    actor,
                    now,
                    details,
                    previous=record["chain_head"],
                )
                changes = dict(rule.effect(row, arguments, now)) if rule.effect else {}
                changes["chain_head"] = entry["hash"]
                moved = self.repository.compare_and_set(
                    conn,
                    record_id,
                    version=version,
                    state=state,
                    new_state=transition.target,
                    changes=changes,
                )
                if not moved:
                    raise ConcurrentUpdate()
                self.repository.append(conn, entry)
                result = {**record, **changes, "state": transition.target, "version": version + 1}
                if request is not None:
                    self.repository.record_request(conn, request.row(record_id, result, now))
        except _RequestTaken:
            assert request is not None
            return self._replay_after_race(request)
        except WorkflowError as refused:
            log.info(
                "%s %s: %s by %s refused: %s", d.name, record_id, event, _who(actor), refused.code
            )
            raise
        log.info(
            "%s %s: %s by %s, %s -> %s",
            d.name,
            record_id,
            event,
            _who(actor),
            state,
            transition.target,
        )
        return result

    def _replay_after_race(self, request: _Request) -> dict[str, Any]:
        # A racing retry with the same request id committed first: answer as it did.
        with self.store.transaction(write=False) as conn:
            prior = self.repository.find_request(conn, request.request_id)
        if prior is None:  # pragma: no cover - the conflict says it exists
            raise ConcurrentUpdate()
        return request.replay(prior)

    def _entry(
        self,
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
    ) -> dict[str, Any]:
        """A history row, chained to the row whose hash is ``previous``."""
        entry = {
            "machine": self.definition.name,
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
        entry["hash"] = entry_hash(entry, previous)
        return entry

    def explain(self, record_id: Any, actor: Any) -> Explanation:
        """Every event of the machine as ``actor`` sees it on the record now."""
        record_id = as_record_id(record_id)
        actor = as_actor(actor)
        d = self.definition
        record = self.get(record_id)
        state = str(record["state"])
        row = Columns(record)
        options = []
        for event, rule in d.events.items():
            reasons = [
                Reason(kind=kind, message=message)
                for kind, message in rule.permission.problems(event, actor, row)
            ]
            transition = d.transition(state, event)
            if transition is None:
                sources = sorted(s for s, e in d.transitions if e == event)
                reasons.append(
                    Reason(
                        kind="state",
                        message=f"{event} is allowed only in {', '.join(sources)}, not in {state}",
                    )
                )
                conditions: list[Condition] = []
            else:
                conditions = [Condition(guard=g.name, rule=g.rule) for g in transition.guards]
            options.append(
                EventOption(
                    event=event, possible=not reasons, reasons=reasons, conditions=conditions
                )
            )
        return Explanation(
            machine=d.name, record_id=record_id, state=state, actor=actor, events=options
        )

    def get(self, record_id: Any) -> dict[str, Any]:
        record_id = as_record_id(record_id)
        with self.store.transaction(write=False) as conn:
            record = self.repository.load(conn, record_id)
        if record is None:
            raise NotFound(record_id, machine=self.definition.name)
        return dict(record)

    def history(self, record_id: Any) -> list[TransitionRecord]:
        record_id = as_record_id(record_id)
        with self.store.transaction(write=False) as conn:
            if self.repository.load(conn, record_id) is None:
                raise NotFound(record_id, machine=self.definition.name)
            rows = self.repository.history(conn, record_id)
        return [from_row(TransitionRecord, r) for r in rows]
