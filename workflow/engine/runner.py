"""Runs commands of any machine: one transaction per command, all of it or none of it.

Generic: a `Machine` (its definition, its queries, how its records are created), a reactor for
the rules between machines and a clock are all it needs. A command loads the record (locking it
where the database can), lets the pure decision step (`workflow.engine.decision`) check the
actor, the state and the guards in that order, moves the record with a compare-and-set on its
version, appends the history row with what the guards checked and runs the reactions, in one
transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field, Strict, StringConstraints, TypeAdapter
from pydantic_core import to_jsonable_python
from sqlalchemy.engine import Connection

from workflow.engine.chain import IDENTITY_FACT, identity_digest
from workflow.engine.decision import Move, decide, history_row, shown
from workflow.engine.definition import Columns
from workflow.engine.records import RequestRepository
from workflow.engine.registry import Machine
from workflow.engine.store import ConflictMap, Store, lock_value
from workflow.errors import (
    ConcurrentUpdate,
    ConfigurationError,
    ConnectionLost,
    GuardFailed,
    IdempotencyConflict,
    IllegalTransition,
    NotFound,
    StorageError,
    WorkflowError,
)
from workflow.models.schemas import (
    HIDDEN,
    Actor,
    BulkRefusal,
    BulkReport,
    Condition,
    EventOption,
    Explanation,
    Reason,
    TransitionRecord,
)

log = logging.getLogger("workflow")
"""Commands and refusals at INFO: ids, events, roles and units only, never personal data."""

Clock = Callable[[], datetime]
"""Returns the current time as an aware datetime."""

ViewT = TypeVar("ViewT", bound=BaseModel)

_RECORD_ID = TypeAdapter(uuid.UUID, config=HIDDEN)
_ACTOR = TypeAdapter(Actor)


def system_clock() -> datetime:
    """The real clock, in UTC."""
    return datetime.now(UTC)


def from_row(model: type[ViewT], row: Mapping[Any, Any]) -> ViewT:
    """A view built from the row's columns that the view has fields for."""
    return model.model_validate({name: row[name] for name in model.model_fields})


def as_actor(actor: Any) -> Actor:
    """A valid `Actor`, or a `ValidationError` naming what is wrong with it. An `Actor`
    instance is validated again: one built with ``model_construct`` skipped its rules."""
    return _ACTOR.validate_python(actor)


def as_record_id(value: Any) -> uuid.UUID:
    """A `uuid.UUID` (or its string form), or a `ValidationError`."""
    return value if isinstance(value, uuid.UUID) else _RECORD_ID.validate_python(value)


class _RequestTaken(Exception):
    """Another transaction recorded the same request id first."""


_REQUEST_TAKEN: ConflictMap = {
    "idcard_command_requests.request_id": _RequestTaken,
    "idcard_pk_command_requests": _RequestTaken,
}

_REQUEST_ID = TypeAdapter(
    Annotated[
        str,
        Strict(),
        StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$"),
    ],
    config=HIDDEN,
)
"""A request id: 1 to 128 printable ASCII characters, no spaces."""


class Request:
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
    ) -> Request | None:
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


class Executor:
    """Runs one command as one transaction, answering retries of requests that took effect.

    ``work(conn)`` does the command's steps (any number of records, of any machines) and
    returns ``(record_id, result)``; with a request, the request is recorded in the same
    transaction. A retry, or a racing duplicate that lost, gets the recorded result back.
    """

    def __init__(
        self,
        store: Store,
        requests: RequestRepository,
        clock: Clock,
        *,
        races: ConflictMap | None = None,
        chain_key: bytes | None = None,
    ) -> None:
        self.store = store
        self.requests = requests
        self._clock = clock
        self.chain_key = chain_key
        """The secret the history rows are hashed under (HMAC), or None for plain SHA-256."""
        self.races: ConflictMap = races or {}
        """Constraints a command may meet because another command got in first (a reaction
        filing the record another command just filed): `ConcurrentUpdate`, unless the
        command's own ``conflicts`` say otherwise."""
        self._conflicts: ConflictMap = {**self.races, **_REQUEST_TAKEN}

    def now(self) -> datetime:
        """The clock's reading in UTC; a clock that gives a naive datetime is a setup error."""
        value = self._clock()
        if not isinstance(value, datetime) or value.utcoffset() is None:
            raise ConfigurationError("the clock must return a timezone-aware datetime")
        return value.astimezone(UTC)

    def execute(
        self,
        request: Request | None,
        work: Callable[[Connection], tuple[uuid.UUID, dict[str, Any]]],
        *,
        conflicts: ConflictMap | None = None,
    ) -> dict[str, Any]:
        conflicts = {**self.races, **conflicts, **_REQUEST_TAKEN} if conflicts else self._conflicts
        try:
            with self.store.transaction(write=True, conflicts=conflicts) as conn:
                if request is not None:
                    prior = self.requests.find(conn, request.request_id)
                    if prior is not None:
                        return request.replay(prior)
                record_id, result = work(conn)
                if request is not None:
                    self.requests.record(conn, request.row(record_id, result, self.now()))
            return result
        except (_RequestTaken, WorkflowError) as exc:
            if request is None or isinstance(exc, IdempotencyConflict):
                raise
            # A racing retry with the same request id may have taken effect first, making this
            # one fail (a unique key, a moved state): answer as that one did.
            with self.store.transaction(write=False) as conn:
                prior = self.requests.find(conn, request.request_id)
            if prior is None:
                if isinstance(exc, _RequestTaken):  # pragma: no cover - the conflict says it exists
                    raise ConcurrentUpdate() from None
                raise
            return request.replay(prior)


Reactor = Callable[[Connection, str, str, Mapping[str, Any], Actor], None]
"""Runs the reactions to ``(machine, event)`` on the moved record, in the same transaction."""

_IDS = TypeAdapter(Annotated[list[uuid.UUID], Field(max_length=1_000_000)], config=HIDDEN)
_CHUNK = TypeAdapter(Annotated[int, Field(strict=True, ge=1, le=10_000)], config=HIDDEN)


def _no_reactions(
    conn: Connection, machine: str, event: str, record: Mapping[str, Any], actor: Actor
) -> None:
    return None


class Runner:
    """The commands of one machine on its table: create, fire, fire many, and its queries.

    Each command checks its record with the pure decision step, writes with a compare-and-set,
    appends the history row, and then runs the reactions of other machines to what it did,
    all in one transaction; the facts its guards need from other records are computed here.
    """

    def __init__(
        self, executor: Executor, machine: Machine[Any, Any], reactor: Reactor | None = None
    ) -> None:
        self.executor = executor
        self.store = executor.store
        self.machine = machine
        self.definition = machine.definition
        self.repository = machine.repository
        self.react: Reactor = reactor or _no_reactions

    def now(self) -> datetime:
        return self.executor.now()

    def arguments(self, event: Any, payload: Mapping[str, Any]) -> BaseModel | None:
        """The event's validated payload (a `ValidationError` names what is wrong), or None for
        a name that is no event of the machine."""
        rule = self.definition.events.get(event) if isinstance(event, str) else None
        return rule.payload.model_validate(payload) if rule else None

    def may_create(self, actor: Actor, values: Mapping[str, Any]) -> None:
        """Raise `PermissionDenied` unless ``actor`` may create a record with these values."""
        d = self.definition
        d.creation.require(d.creation_event, actor, Columns(values))

    # -- writing, inside a caller's transaction ---------------------------------------------

    def create_in(
        self,
        conn: Connection,
        values: Mapping[str, Any],
        *,
        actor: Actor,
        now: datetime,
        arguments: Any = None,
    ) -> dict[str, Any]:
        """Insert a record in the initial state with version 1, and its first history row;
        then the reactions to its creation.

        Checks the actor, then the creation's guards on the new columns and ``arguments`` (the
        creation command's validated argument). The first row records the fixed facts, the
        guards' facts and the digest that binds the record's identity to its history.
        """
        d = self.definition
        columns = Columns(values)
        self.may_create(actor, values)
        facts = dict(d.creation_facts(columns))
        for guard in d.creation_guards:
            found = guard.facts(columns, arguments)
            if not guard.holds(columns, found):
                raise GuardFailed(d.creation_event, guard.name, guard.rule)
            facts.update(found)
        record_id = uuid.uuid4()
        if d.identity:
            facts[IDENTITY_FACT] = identity_digest(
                d.name, record_id, values, d.identity, self.executor.chain_key
            )
        entry = history_row(
            d.name,
            record_id,
            1,
            d.creation_event,
            None,
            d.initial,
            actor,
            now,
            facts,
            key=self.executor.chain_key,
        )
        row = {
            **values,
            "id": record_id,
            "state": d.initial,
            "version": 1,
            "chain_head": entry["hash"],
        }
        self.repository.insert(conn, row)
        self.repository.append(conn, entry)
        log.info("%s %s: %s by %s", d.name, record_id, d.creation_event, _who(actor))
        self.react(conn, d.name, d.creation_event, row, actor)
        return row

    def _serialise(self, conn: Connection, record: Mapping[Any, Any]) -> None:
        column = self.machine.serialised_by
        if column is not None:
            lock_value(conn, str(record[column]))

    def _load_serialised(self, conn: Connection, record_id: uuid.UUID) -> Mapping[Any, Any] | None:
        # The value's lock first, the record's row lock second, in every command: so two
        # commands on one citizen never hold the two in opposite orders.
        return self.repository.load_to_change(
            conn, record_id, serialised_by=self.machine.serialised_by
        )

    def facts(self, conn: Connection, event: Any, record: Mapping[Any, Any]) -> Mapping[str, Any]:
        """The facts the event's guards need from other records (declared by the machine)."""
        compute = self.machine.facts.get(event) if isinstance(event, str) else None
        return compute(conn, record) if compute is not None else {}

    def fire_in(
        self,
        conn: Connection,
        record_id: uuid.UUID,
        event: Any,
        *,
        actor: Actor,
        arguments: BaseModel | None,
    ) -> dict[str, Any]:
        """Apply ``event`` to the record; return the record's new column values.

        Checks, in order: the record exists, the actor may fire the event, the event is
        allowed in the record's state, every guard holds. Then it moves the record with a
        compare-and-set on its version, appends the history row with the facts checked, and
        runs the reactions to the event.
        """
        d = self.definition
        try:
            record = self._load_serialised(conn, record_id)
            if record is None:
                raise NotFound(record_id, machine=d.name)
            move = decide(
                d,
                record,
                event,
                actor,
                arguments,
                self.facts(conn, event, record),
                self.now(),
                key=self.executor.chain_key,
            )
            if not self.repository.move_and_append(conn, record_id, move.entry, **move.cas):
                raise ConcurrentUpdate()
        except WorkflowError as refused:
            log.info(
                "%s %s: %s by %s refused: %s",
                d.name,
                record_id,
                shown(event),
                _who(actor),
                refused.code,
            )
            raise
        log.info(
            "%s %s: %s by %s, %s -> %s",
            d.name,
            record_id,
            event,
            _who(actor),
            move.cas["state"],
            move.cas["new_state"],
        )
        self.react(conn, d.name, event, move.result, actor)
        return move.result

    def fire_many_in(
        self,
        conn: Connection,
        record_ids: Sequence[uuid.UUID],
        event: str,
        *,
        actor: Actor,
        arguments: BaseModel | None,
    ) -> tuple[list[dict[str, Any]], list[BulkRefusal]]:
        """Apply ``event`` to many records set-based: one locking read, one guarded update,
        one insert of the history rows (whose outbox rows the database writes). Each record
        is checked exactly as `fire_in` checks it, and the reactions run for each one moved;
        a record that fails a check is refused and the rest go on. Returns the moved records'
        new values and the refusals, in the order given."""
        d = self.definition
        # Every value of the chunk locked first, in one order, then the rows.
        records = self.repository.load_many_to_change(
            conn, record_ids, serialised_by=self.machine.serialised_by
        )
        now = self.now()
        moves: list[Move] = []
        refused: list[BulkRefusal] = []
        for record_id in record_ids:
            try:
                record = records.get(record_id)
                if record is None:
                    raise NotFound(record_id, machine=d.name)
                facts = self.facts(conn, event, record)
                moves.append(
                    decide(
                        d, record, event, actor, arguments, facts, now, key=self.executor.chain_key
                    )
                )
            except WorkflowError as exc:
                refused.append(BulkRefusal(record_id=record_id, code=exc.code, message=str(exc)))
        cas = [{"record_id": m.entry["record_id"], **m.cas} for m in moves]
        if moves and not self.repository.move_many_and_append(conn, cas, [m.entry for m in moves]):
            raise ConcurrentUpdate()
        log.info(
            "%s: %s by %s for %d records, %d refused",
            d.name,
            shown(event),
            _who(actor),
            len(moves),
            len(refused),
        )
        for move in moves:
            self.react(conn, d.name, event, move.result, actor)
        return [m.result for m in moves], refused

    # -- commands, each its own transaction -------------------------------------------------

    def create(self, argument: Any, *, actor: Any, request_id: str | None = None) -> dict[str, Any]:
        """One command that creates a record from ``argument`` (validated by the machine)."""
        creation = self.machine.creation
        value = creation.argument.validate_python(argument)
        actor = as_actor(actor)
        request = Request.of(
            request_id, self.definition.name, self.definition.creation_event, None, actor, value
        )

        def work(conn: Connection) -> tuple[uuid.UUID, dict[str, Any]]:
            values = creation.values(value, actor, self.now())
            self.may_create(actor, values)
            self._serialise(conn, values)
            # The time is read once the lock is held: history times then follow the order in
            # which commands on one citizen took effect.
            now = self.now()
            values = creation.values(value, actor, now)
            if creation.unique is not None:
                creation.unique.refuse(conn, value)
            row = self.create_in(conn, values, actor=actor, now=now, arguments=value)
            return row["id"], row

        conflicts = creation.unique.conflicts(value) if creation.unique is not None else None
        return self.executor.execute(request, work, conflicts=conflicts)

    def fire(
        self,
        record_id: Any,
        event: Any,
        *,
        actor: Any,
        payload: Mapping[str, Any],
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """One command that applies ``event`` to one record, in its own transaction."""
        record_id = as_record_id(record_id)
        actor = as_actor(actor)
        arguments = self.arguments(event, payload)
        request = Request.of(
            request_id, self.definition.name, shown(event), record_id, actor, arguments
        )

        def work(conn: Connection) -> tuple[uuid.UUID, dict[str, Any]]:
            result = self.fire_in(conn, record_id, event, actor=actor, arguments=arguments)
            return record_id, result

        return self.executor.execute(request, work)

    def fire_many(
        self,
        record_ids: Iterable[Any],
        event: Any,
        *,
        actor: Any,
        payload: Mapping[str, Any],
        chunk_size: int = 1000,
    ) -> BulkReport:
        """Apply one event to many records set-based, a chunk per transaction."""
        ids = list(dict.fromkeys(_IDS.validate_python(record_ids)))
        size = _CHUNK.validate_python(chunk_size)
        actor = as_actor(actor)
        arguments = self.arguments(event, payload)
        succeeded: list[uuid.UUID] = []
        refused: list[BulkRefusal] = []
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            try:
                with self.store.transaction(write=True) as conn:
                    moved, not_moved = self.fire_many_in(
                        conn, chunk, event, actor=actor, arguments=arguments
                    )
            except ConnectionLost:
                raise  # the chunk may have committed: no lost race to run again one by one
            except (ConcurrentUpdate, IllegalTransition, NotFound, GuardFailed) as exc:
                # Another writer got to a record of the chunk, or to a record a reaction moves,
                # between the checks and the writes: nothing of the chunk was kept. Each record
                # goes again in its own transaction, so one lost race is one refusal.
                log.info(
                    "%s: %s chunk of %d records lost a race (%s); one by one",
                    self.definition.name,
                    shown(event),
                    len(chunk),
                    exc.code,
                )
                moved, not_moved = self._fire_each(chunk, event, actor, arguments)
            succeeded.extend(r["id"] for r in moved)
            refused.extend(not_moved)
        return BulkReport(event=shown(event), succeeded=succeeded, refused=refused)

    def _fire_each(
        self,
        record_ids: Sequence[uuid.UUID],
        event: str,
        actor: Actor,
        arguments: BaseModel | None,
    ) -> tuple[list[dict[str, Any]], list[BulkRefusal]]:
        moved: list[dict[str, Any]] = []
        refused: list[BulkRefusal] = []
        for record_id in record_ids:
            try:
                with self.store.transaction(write=True) as conn:
                    moved.append(
                        self.fire_in(conn, record_id, event, actor=actor, arguments=arguments)
                    )
            except WorkflowError as exc:
                if isinstance(exc, (ConfigurationError, StorageError)):
                    raise
                refused.append(BulkRefusal(record_id=record_id, code=exc.code, message=str(exc)))
        return moved, refused

    # -- queries ----------------------------------------------------------------------------

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
