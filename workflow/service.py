"""The `Workflow` facade: the commands and queries of the three systems.

Remote acceptance (applications), loss reporting (loss reports) and lost-and-found (found
cards) each have their own machine (`workflow.machines`); they run on the same engine, log,
enforcement and outbox. The facade holds one typed `Handle` per machine (``applications``,
``loss_reports``, ``found_cards``: create, fire, fire many, get, history, explain); the named
commands are one-line wrappers around them. The rules that join the machines are the engine's
to run (`workflow.machines.reactions`), whichever command or path fires the event.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar, cast

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from sqlalchemy.engine import Connection

from workflow.diagrams.model import fingerprint
from workflow.engine import checkpoint as checkpoints
from workflow.engine import parallel
from workflow.engine.chain import check_key
from workflow.engine.checkpoint import Checkpoint
from workflow.engine.definition import Definition
from workflow.engine.migrate import current_revision_on, require_head, require_head_on
from workflow.engine.records import OutboxRepository, RequestRepository
from workflow.engine.registry import Machine
from workflow.engine.runner import (
    Clock,
    Executor,
    Runner,
    as_record_id,
    from_row,
    system_clock,
)
from workflow.engine.store import Bind, Store
from workflow.engine.verification import (
    VerificationReport,
    merge,
    verify,
    verify_since,
    with_database_checks,
)
from workflow.errors import ConfigurationError, NotFound
from workflow.machines import MACHINES, REGISTRY, application, loss_report
from workflow.machines.reactions import REACTIONS
from workflow.models.enums import RejectionGround
from workflow.models.schemas import (
    HIDDEN,
    Actor,
    ApplicationView,
    BulkReport,
    CitizenId,
    Explanation,
    FoundCardView,
    LossReportView,
    PendingEvent,
    ReportLoss,
    SubmitApplication,
    TransitionRecord,
)

A = TypeVar("A")
V = TypeVar("V", bound=BaseModel)

_CITIZEN = TypeAdapter(CitizenId, config=HIDDEN)
_LIMIT = TypeAdapter(Annotated[int, Field(strict=True, ge=1, le=10_000)], config=HIDDEN)
_EVENT_IDS = TypeAdapter(
    Annotated[
        list[Annotated[int, Field(strict=True, ge=1, le=2**63 - 1)]], Field(max_length=10_000)
    ],
    config=HIDDEN,
)
_BATCH = TypeAdapter(Annotated[int, Field(strict=True, ge=1, le=100_000)], config=HIDDEN)
_WORKERS = TypeAdapter(
    Annotated[int, Field(strict=True, ge=1, le=64)],
    config=ConfigDict(hide_input_in_errors=True, title="workers"),
)


class OverdueQuery(BaseModel):
    """The arguments of the overdue queries: an aware ``as_of`` and a bounded ``limit``."""

    model_config = ConfigDict(frozen=True, strict=True, hide_input_in_errors=True)

    as_of: AwareDatetime | None = None
    limit: Annotated[int, Field(ge=1, le=10_000)] = 100

    @field_validator("as_of")
    @classmethod
    def _representable_in_utc(cls, value: datetime | None) -> datetime | None:
        try:
            return None if value is None else value.astimezone(UTC)
        except OverflowError:
            raise ValueError("must be an instant that can be expressed in UTC") from None


class Handle(Generic[A, V]):
    """The commands and queries of one machine, typed by what creates a record (``A``) and
    the view its records come back as (``V``)."""

    def __init__(
        self, runner: Runner, machine: Machine[A, V], reader: Runner | None = None
    ) -> None:
        self._runner = runner
        self._reader = reader or runner
        """Answers the queries: the runner on the workflow's ``read_bind``, if it has one."""
        self.machine = machine
        self.definition: Definition = machine.definition

    def _view(self, row: Mapping[Any, Any]) -> V:
        return from_row(self.machine.view, row)

    def create(self, argument: A, *, actor: Actor, request_id: str | None = None) -> V:
        """Create a record in the initial state (the machine's creation event)."""
        return self._view(self._runner.create(argument, actor=actor, request_id=request_id))

    def fire(
        self,
        record_id: uuid.UUID,
        event: str,
        *,
        actor: Actor,
        request_id: str | None = None,
        **payload: Any,
    ) -> V:
        """Apply ``event`` by name; ``payload`` is the event's arguments. An unknown event
        raises `IllegalTransition`. With a ``request_id``, a retry of a command that took
        effect returns the same result and changes nothing."""
        row = self._runner.fire(
            record_id, event, actor=actor, payload=payload, request_id=request_id
        )
        return self._view(row)

    def fire_many(
        self,
        record_ids: Iterable[uuid.UUID],
        event: str,
        *,
        actor: Actor,
        chunk_size: int = 1000,
        **payload: Any,
    ) -> BulkReport:
        """Apply one event to many records set-based, a chunk per transaction: each checked
        exactly as a single command checks it; the report lists the moved and the refused."""
        return self._runner.fire_many(
            record_ids, event, actor=actor, payload=payload, chunk_size=chunk_size
        )

    def get(self, record_id: uuid.UUID) -> V:
        """The record as it is now."""
        return self._view(self._reader.get(record_id))

    def history(self, record_id: uuid.UUID) -> list[TransitionRecord]:
        """Every transition of the record, oldest first; the first is its creation."""
        return self._reader.history(record_id)

    def explain(self, record_id: uuid.UUID, actor: Actor) -> Explanation:
        """The events ``actor`` could fire on the record now and, for each one it can't, every
        reason (role, unit, state); each event's guards are listed as conditions."""
        return self._reader.explain(record_id, actor)


class Workflow:
    """The three systems on one database.

    ``bind`` is a database URL or an `Engine` (each command is its own committed transaction) or
    a `Session` (each command joins the caller's transaction and the caller commits). The
    database must be at the latest revision (`workflow.upgrade`). ``clock`` returns the current
    time as an aware datetime (default: the real clock). ``chain_key`` (at least 32 bytes, kept
    out of the database) makes every new history row's hash an HMAC under it, and `verify`
    check under it; every writer and verifier of the database must then be given the same key.

    ``read_bind`` (a URL, `Engine` or `Session` of a read replica, such as a hot standby) makes
    the queries read there: `get`, `history`, `explain`, `overdue`, `overdue_reviews`,
    `is_reported_lost`, `pending_events` and `verify`, and the handles' queries. Commands, and
    every check a command makes, always run on ``bind``. A replica may lag behind the primary:
    a query there may not yet see a command that has returned (docs/deployment.md).
    """

    applications: Handle[SubmitApplication, ApplicationView]
    loss_reports: Handle[ReportLoss, LossReportView]
    found_cards: Handle[str, FoundCardView]

    def __init__(
        self,
        bind: Bind,
        *,
        clock: Clock | None = None,
        chain_key: bytes | None = None,
        read_bind: Bind | None = None,
    ) -> None:
        try:
            key = check_key(chain_key)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self._store = Store(bind)
        if self._store.session is None:
            try:
                require_head(self._store)
            except BaseException:
                self._store.close()
                raise
        else:
            # A Session is the host's: making the workflow must not begin its transaction
            # (a host may make it first and open `with session.begin():` after). The schema is
            # checked in the first command's own transaction instead.
            self._store.check_first = require_head_on
        races = {
            key: lost
            for m in REGISTRY
            if m.creation.unique is not None
            for key, lost in m.creation.unique.races().items()
        }
        self._executor = Executor(
            self._store, RequestRepository(), clock or system_clock, races=races, chain_key=key
        )
        self._outbox = OutboxRepository()
        self._runners: dict[str, Runner] = {}
        for machine in REGISTRY:
            self._runners[machine.name] = Runner(self._executor, machine, self._react)
        # The queries' store and runners: the replica's when there is one. They never write.
        self._reads = self._store
        self._readers = self._runners
        if read_bind is not None:
            try:
                self._reads = Store(read_bind)
            except BaseException:
                self._store.close()
                raise
            reads = Executor(self._reads, RequestRepository(), clock or system_clock, chain_key=key)
            self._readers = {m.name: Runner(reads, m) for m in REGISTRY}
        self._handles: dict[str, Handle[Any, Any]] = {
            m.name: Handle(self._runners[m.name], m, self._readers[m.name]) for m in REGISTRY
        }
        self.applications = cast(
            Handle[SubmitApplication, ApplicationView], self._handles[application.APPLICATION.name]
        )
        self.loss_reports = cast(
            Handle[ReportLoss, LossReportView], self._handles[loss_report.LOSS_REPORT.name]
        )
        self.found_cards = cast(Handle[str, FoundCardView], self._handles["found_card"])

    def handle(self, machine: str) -> Handle[Any, Any]:
        """The handle of the registered machine of this name."""
        try:
            return self._handles[machine]
        except KeyError:
            raise KeyError(f"no machine {machine!r}; machines: {sorted(self._handles)}") from None

    def _react(
        self, conn: Connection, machine: str, event: str, record: Mapping[str, Any], actor: Actor
    ) -> None:
        for reaction in REACTIONS:
            if reaction.machine == machine and reaction.event == event:
                reaction.run(self._runners, conn, record, actor)

    def close(self) -> None:
        """Release the connections of an engine the workflow opened from a URL."""
        self._store.close()
        if self._reads is not self._store:
            self._reads.close()

    def __enter__(self) -> Workflow:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- applications -----------------------------------------------------------------------

    def submit(
        self, cmd: SubmitApplication, *, actor: Actor, request_id: str | None = None
    ) -> ApplicationView:
        """Accept an application at the acceptance point: (new) → submitted. A replacement
        also files a loss report for the citizen, unless one is active already."""
        return self.applications.create(cmd, actor=actor, request_id=request_id)

    def transmit(
        self, app_id: uuid.UUID, *, actor: Actor, request_id: str | None = None
    ) -> ApplicationView:
        """Send the application to the household-registration county: submitted → transmitted."""
        return self.applications.fire(app_id, "transmit", actor=actor, request_id=request_id)

    def approve(
        self, app_id: uuid.UUID, *, actor: Actor, request_id: str | None = None
    ) -> ApplicationView:
        """The household-registration county signs off: transmitted → approved."""
        return self.applications.fire(app_id, "approve", actor=actor, request_id=request_id)

    def reject(
        self,
        app_id: uuid.UUID,
        *,
        actor: Actor,
        ground: RejectionGround | str,
        note: str = "",
        request_id: str | None = None,
    ) -> ApplicationView:
        """The household-registration county refuses, with its ground: transmitted → rejected."""
        return self.applications.fire(
            app_id, "reject", actor=actor, request_id=request_id, ground=ground, note=note
        )

    def produce(
        self, app_id: uuid.UUID, *, actor: Actor, request_id: str | None = None
    ) -> ApplicationView:
        """The card is produced and checked: approved → produced."""
        return self.applications.fire(app_id, "produce", actor=actor, request_id=request_id)

    def mark_ready(
        self, app_id: uuid.UUID, *, actor: Actor, request_id: str | None = None
    ) -> ApplicationView:
        """The card is at the acceptance point and verified: produced → ready."""
        return self.applications.fire(app_id, "mark_ready", actor=actor, request_id=request_id)

    def collect(
        self,
        app_id: uuid.UUID,
        *,
        actor: Actor,
        receipt_no: str,
        old_card_returned: bool = False,
        request_id: str | None = None,
    ) -> ApplicationView:
        """The applicant takes the card, with the receipt (and old card): ready → collected.
        Collecting a replacement closes the citizen's active loss report."""
        return self.applications.fire(
            app_id,
            "collect",
            actor=actor,
            request_id=request_id,
            receipt_no=receipt_no,
            old_card_returned=old_card_returned,
        )

    def extend_deadline(
        self,
        app_id: uuid.UUID,
        *,
        actor: Actor,
        days: int,
        reason: str,
        request_id: str | None = None,
    ) -> ApplicationView:
        """The statutory extension where transport is difficult: ``due_at`` moves by 1 to 30
        days, at most once, with the stated reason, before the card is ready; the state stays."""
        return self.applications.fire(
            app_id, "extend_deadline", actor=actor, request_id=request_id, days=days, reason=reason
        )

    def fire(
        self,
        app_id: uuid.UUID,
        event: str,
        *,
        actor: Actor,
        request_id: str | None = None,
        **payload: Any,
    ) -> ApplicationView:
        """Apply any event but submit by name; ``payload`` is that command's keyword arguments.

        With a ``request_id``, a retry of a command that took effect returns the same result
        and changes nothing; the same id used for another command raises `IdempotencyConflict`.
        """
        return self.applications.fire(app_id, event, actor=actor, request_id=request_id, **payload)

    def fire_many(
        self,
        app_ids: Iterable[uuid.UUID],
        event: str,
        *,
        actor: Actor,
        chunk_size: int = 1000,
        **payload: Any,
    ) -> BulkReport:
        """Apply one event to many applications set-based, a chunk per transaction.

        The nightly transmission of an acceptance point, a production centre marking a batch
        produced: each application is checked exactly as a single command checks it (the same
        permissions, states, guards, history, hash chain, outbox and reactions), in a few
        statements per chunk. The report lists the applications moved and, for each one
        refused, the reason.
        """
        return self.applications.fire_many(
            app_ids, event, actor=actor, chunk_size=chunk_size, **payload
        )

    # -- loss reports -----------------------------------------------------------------------

    def report_loss(
        self,
        citizen_id: str,
        *,
        actor: Actor,
        identity_checked: bool,
        request_id: str | None = None,
    ) -> LossReportView:
        """Record that the citizen's card was lost; any acceptance clerk, anywhere. Only the
        holder reports it, in person, identity checked: refused (`GuardFailed`,
        ``holder_in_person``) unless ``identity_checked``, which the history records. At most
        one report per citizen is active (`DuplicateLossReport`), which the database enforces
        too."""
        form = ReportLoss(citizen_id=citizen_id, identity_checked=identity_checked)
        return self.loss_reports.create(form, actor=actor, request_id=request_id)

    def withdraw_loss_report(
        self,
        report_id: uuid.UUID,
        *,
        actor: Actor,
        card_presented: bool,
        request_id: str | None = None,
    ) -> LossReportView:
        """The holder came back in person with the found card: reported → withdrawn. Refused
        (`GuardFailed`, ``no_replacement_in_progress``) while a replacement for the citizen is
        in progress: the report a replacement filed stands until it is collected or rejected."""
        return self.loss_reports.fire(
            report_id,
            "withdraw",
            actor=actor,
            request_id=request_id,
            card_presented=card_presented,
        )

    def is_reported_lost(self, citizen_id: str) -> bool:
        """Whether the citizen's card is reported lost now: the answer and nothing else."""
        citizen = _CITIZEN.validate_python(citizen_id)
        with self._reads.transaction(write=False) as conn:
            return loss_report.REPOSITORY.active_for(conn, citizen) is not None

    def get_loss_report(self, report_id: uuid.UUID) -> LossReportView:
        """The loss report as it is now."""
        return self.loss_reports.get(report_id)

    # -- found cards ------------------------------------------------------------------------

    def register_found_card(
        self, citizen_id: str, *, actor: Actor, request_id: str | None = None
    ) -> FoundCardView:
        """A found card is handed in; the clerk's office holds it: (new) → held."""
        return self.found_cards.create(citizen_id, actor=actor, request_id=request_id)

    def return_found_card(
        self,
        card_id: uuid.UUID,
        *,
        actor: Actor,
        identity_checked: bool,
        request_id: str | None = None,
    ) -> FoundCardView:
        """Hand the card back to its owner in person: held → returned. Refused when the owner
        applied for a replacement since the card was reported lost or found (it must be
        destroyed instead); withdraws the owner's active loss report."""
        return self.found_cards.fire(
            card_id,
            "return_to_owner",
            actor=actor,
            request_id=request_id,
            identity_checked=identity_checked,
        )

    def destroy_found_card(
        self, card_id: uuid.UUID, *, actor: Actor, request_id: str | None = None
    ) -> FoundCardView:
        """Destroy a found card whose owner applied for or received a replacement, and record
        the destruction: held → destroyed."""
        return self.found_cards.fire(card_id, "destroy", actor=actor, request_id=request_id)

    def get_found_card(self, card_id: uuid.UUID) -> FoundCardView:
        """The found card as it is now."""
        return self.found_cards.get(card_id)

    # -- queries ----------------------------------------------------------------------------

    def get(self, app_id: uuid.UUID) -> ApplicationView:
        """The application as it is now."""
        return self.applications.get(app_id)

    def history(self, record_id: uuid.UUID) -> list[TransitionRecord]:
        """Every transition of any record (of any machine), oldest first; the first is its
        creation."""
        record_id = as_record_id(record_id)
        for runner in self._readers.values():
            try:
                return runner.history(record_id)
            except NotFound:
                continue
        raise NotFound(record_id, machine="record")

    def explain(self, app_id: uuid.UUID, actor: Actor) -> Explanation:
        """The events ``actor`` could fire on the application now and, for each one it can't,
        every reason (role, unit, state); each event's guards are listed as conditions."""
        return self.applications.explain(app_id, actor)

    def verify(
        self,
        record_id: uuid.UUID | None = None,
        *,
        batch_size: int = 1000,
        since: Checkpoint | None = None,
        public_key: Any = None,
        workers: int = 1,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> VerificationReport:
        """Check every record's history (or one's), of every machine: replayed through its
        definition from the initial state, each step legal, fired by an actor its permission
        allows, with its guard facts recorded, stored state and version equal to the replay's,
        and the hash chain intact (under the chain key, when the workflow has one). Reads in
        batches. An id that names no record and no history raises `NotFound`.

        With ``since`` (a `Checkpoint`), proves instead that the history extends it (every
        covered row still there and unchanged, none added among them, the signature valid: by
        ``public_key``, an Ed25519 public key, when given), then replays in full only the
        records that changed after it; the report's ``checkpoint`` says how it compares.

        ``workers`` (1 to 64) above 1 verifies the whole database in that many processes,
        each over its own ranges of record ids, with the same report (`workflow.engine.
        parallel`); with ``since``, the rows the checkpoint covers are checked so, a stretch
        between two of its anchors at a time. A `Session` bind, a SQLite in-memory database
        or one record is verified in this process. ``progress`` is called as records (with
        ``since``: covered rows) are checked, with the number checked so far and the number
        there are (None if unknown)."""
        size = _BATCH.validate_python(batch_size)
        processes = _WORKERS.validate_python(workers)
        if since is not None and record_id is not None:
            raise ValueError("verify takes a record id or a checkpoint (since=), not both")
        one = None if record_id is None else as_record_id(record_id)
        key = self._executor.chain_key
        in_processes = processes > 1 and not parallel.runs_in_process(self._reads)
        if since is not None:
            in_segments = None
            if in_processes:

                def in_segments(cut: list[checkpoints.Segment]) -> bool:
                    return parallel.segments_hold(
                        self._reads,
                        since.last_row,
                        cut,
                        workers=processes,
                        key=key,
                        progress=progress,
                    )

            report = verify_since(
                self._reads,
                REGISTRY,
                since,
                key=key,
                fingerprints=self._fingerprints(),
                revision=self._revision(self._reads),
                public_key=public_key,
                batch_size=size,
                in_segments=in_segments,
                progress=progress,
            )
        elif one is None and in_processes:
            report = parallel.verify_parallel(
                self._reads,
                REGISTRY,
                "workflow.machines:REGISTRY",
                workers=processes,
                batch_size=size,
                key=key,
                progress=progress,
            )
        elif one is None:
            report = parallel.verify_all(
                self._reads, REGISTRY, batch_size=size, key=key, progress=progress
            )
        else:
            report = merge(
                verify(
                    self._reads,
                    m.definition,
                    m.repository,
                    record_id=one,
                    batch_size=size,
                    key=key,
                )
                for m in REGISTRY
            )
        report = with_database_checks(self._reads, REGISTRY, report, record_id=one)
        if one is not None and report.records == 0 and not report.broken:
            raise NotFound(one, machine="record")
        return report

    def checkpoint(self, *, signing_key: Any = None) -> Checkpoint:
        """A checkpoint of the history as it stands: when, the schema revision, each machine's
        definition fingerprint, how many records and rows, the last row covered, and one digest
        over the covered rows' hashes (see `workflow.engine.checkpoint`). Signed when
        ``signing_key`` (an Ed25519 private key of the ``cryptography`` package) is given.

        Taken while commands run, it covers a prefix that can never gain a row: on PostgreSQL
        it waits for the transactions that were writing when it looked (at most a minute)."""
        return checkpoints.take(
            self._store,
            revision=self._revision(),
            fingerprints=self._fingerprints(),
            key=self._executor.chain_key,
            clock=self._executor.now,
            signer=signing_key,
        )

    def _revision(self, store: Store | None = None) -> str | None:
        with (store or self._store).transaction(write=False) as conn:
            return current_revision_on(conn)

    @staticmethod
    def _fingerprints() -> dict[str, str]:
        return {m.name: fingerprint(m.definition) for m in REGISTRY}

    def overdue(self, as_of: datetime | None = None, *, limit: int = 100) -> list[ApplicationView]:
        """Applications whose card is still on its way after ``due_at`` (which counts any
        extension), earliest first."""
        return self._overdue(application.REPOSITORY.overdue, as_of, limit)

    def overdue_reviews(
        self, as_of: datetime | None = None, *, limit: int = 100
    ) -> list[ApplicationView]:
        """Transmitted applications still undecided after ``review_due_at``, earliest first."""
        return self._overdue(application.REPOSITORY.overdue_reviews, as_of, limit)

    def _overdue(
        self,
        query: Any,
        as_of: datetime | None,
        limit: int,
    ) -> list[ApplicationView]:
        checked = OverdueQuery(as_of=as_of, limit=limit)
        moment = self._executor.now() if checked.as_of is None else checked.as_of
        with self._reads.transaction(write=False) as conn:
            rows: Sequence[Mapping[str, Any]] = query(conn, moment, checked.limit)
        return [from_row(ApplicationView, r) for r in rows]

    # -- the outbox -------------------------------------------------------------------------

    def pending_events(self, limit: int = 100) -> list[PendingEvent]:
        """Transitions not yet acknowledged, oldest first (so in order for each record).

        A host relays them and then acknowledges them with `ack`; delivery is at least once.
        """
        size = _LIMIT.validate_python(limit)
        with self._reads.transaction(write=False) as conn:
            rows = self._outbox.pending(conn, size)
        return [from_row(PendingEvent, r) for r in rows]

    def ack(self, event_ids: Iterable[int]) -> int:
        """Mark these outbox events delivered; returns how many were pending until now."""
        ids = _EVENT_IDS.validate_python(event_ids)
        if not ids:
            return 0
        now = self._executor.now()
        with self._store.transaction(write=True) as conn:
            return self._outbox.ack(conn, ids, now)


__all__ = ["MACHINES", "Handle", "Workflow"]
