"""The `Workflow` facade: the commands and queries of the three systems.

Remote acceptance (applications), loss reporting (loss reports) and lost-and-found (found
cards) each have their own machine; they run on the same engine, log, enforcement and outbox.
The rules that join them (a replacement application files a loss report, collecting it closes
the report, returning a found card withdraws it) are carried out here, in the transaction of
the command that causes them.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from sqlalchemy.engine import Connection

from workflow.db import require_head, require_head_on
from workflow.definition import Definition
from workflow.engine import (
    Clock,
    Executor,
    Request,
    Runner,
    as_actor,
    as_record_id,
    from_row,
    shown,
    system_clock,
)
from workflow.errors import DuplicateApplication, DuplicateLossReport, NotFound
from workflow.found_card import FOUND_CARD
from workflow.loss_report import LOSS_REPORT
from workflow.machine import APPLICATION, ISSUE_WITHIN
from workflow.models.citizen_id import mask_citizen_id
from workflow.models.enums import Kind, RejectionGround
from workflow.models.schemas import (
    HIDDEN,
    Actor,
    ApplicationView,
    BulkRefusal,
    BulkReport,
    CitizenId,
    Explanation,
    FoundCardView,
    LossReportView,
    NoPayload,
    PendingEvent,
    ReturnPayload,
    SubmitApplication,
    TransitionRecord,
    WithdrawPayload,
)
from workflow.repository import (
    ApplicationRepository,
    FoundCardRepository,
    LossReportRepository,
    OutboxRepository,
    RequestRepository,
)
from workflow.store import Bind, Store
from workflow.verification import VerificationReport, merge, verify

RECEIPT_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""Receipt characters: no 0/O or 1/I, which are misread on paper."""
RECEIPT_LENGTH = 12
"""12 characters of 32: 60 bits, unguessable."""

MACHINES: tuple[Definition, ...] = (APPLICATION, LOSS_REPORT, FOUND_CARD)
"""Every machine the library runs."""

_FORM = TypeAdapter(SubmitApplication)
_CITIZEN = TypeAdapter(CitizenId, config=HIDDEN)
_LIMIT = TypeAdapter(Annotated[int, Field(strict=True, ge=1, le=10_000)], config=HIDDEN)
_EVENT_IDS = TypeAdapter(
    Annotated[
        list[Annotated[int, Field(strict=True, ge=1, le=2**63 - 1)]], Field(max_length=10_000)
    ],
    config=HIDDEN,
)
_IDS = TypeAdapter(Annotated[list[uuid.UUID], Field(max_length=1_000_000)], config=HIDDEN)
_BATCH = TypeAdapter(Annotated[int, Field(strict=True, ge=1, le=100_000)], config=HIDDEN)


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


def new_receipt_no() -> str:
    """A fresh receipt number from the operating system's secure random source."""
    return "".join(secrets.choice(RECEIPT_ALPHABET) for _ in range(RECEIPT_LENGTH))


class Workflow:
    """The three systems on one database.

    ``bind`` is a database URL or an `Engine` (each command is its own committed transaction) or
    a `Session` (each command joins the caller's transaction and the caller commits). The
    database must be at the latest revision (`workflow.upgrade`). ``clock`` returns the current
    time as an aware datetime (default: the real clock).
    """

    def __init__(self, bind: Bind, *, clock: Clock | None = None) -> None:
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
        self._executor = Executor(self._store, RequestRepository(), clock or system_clock)
        self._applications = ApplicationRepository()
        self._loss_reports = LossReportRepository()
        self._found_cards = FoundCardRepository()
        self._outbox = OutboxRepository()
        self._runner = Runner(self._executor, APPLICATION, self._applications)
        self._loss = Runner(self._executor, LOSS_REPORT, self._loss_reports)
        self._found = Runner(self._executor, FOUND_CARD, self._found_cards)

    def close(self) -> None:
        """Release the connections of an engine the workflow opened from a URL."""
        self._store.close()

    def __enter__(self) -> Workflow:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- applications -----------------------------------------------------------------------

    def submit(
        self, cmd: SubmitApplication, *, actor: Actor, request_id: str | None = None
    ) -> ApplicationView:
        """Accept an application at the acceptance point: (new) → submitted.

        A replacement also files a loss report for the citizen in the same transaction, unless
        one is active already: applying for a replacement counts as reporting the loss.
        """
        cmd = _FORM.validate_python(cmd)
        actor = as_actor(actor)
        request = Request.of(request_id, APPLICATION.name, "submit", None, actor, cmd)

        def duplicate() -> DuplicateApplication:
            return DuplicateApplication(mask_citizen_id(cmd.citizen_id))

        def work(conn: Connection) -> tuple[uuid.UUID, dict[str, Any]]:
            now = self._executor.now()
            values = _application_values(cmd, now)
            self._runner.may_create(actor, values)
            if self._applications.has_open(conn, cmd.citizen_id):
                raise duplicate()
            row = self._runner.create_in(conn, values, actor=actor, now=now)
            if cmd.kind is Kind.REPLACEMENT and not self._loss_reports.active_for(
                conn, cmd.citizen_id
            ):
                self._loss.create_in(
                    conn,
                    _loss_report_values(cmd.citizen_id, actor.unit, now, row["id"]),
                    actor=actor,
                    now=now,
                )
            return row["id"], row

        row = self._executor.execute(
            request,
            work,
            # A racing submission that passed the check above meets the partial unique index.
            conflicts={
                "idcard_uq_applications_open_citizen": duplicate,
                "idcard_applications.citizen_id": duplicate,
            },
        )
        return _view(row)

    def transmit(
        self, app_id: uuid.UUID, *, actor: Actor, request_id: str | None = None
    ) -> ApplicationView:
        """Send the application to the household-registration county: submitted → transmitted."""
        return self.fire(app_id, "transmit", actor=actor, request_id=request_id)

    def approve(
        self, app_id: uuid.UUID, *, actor: Actor, request_id: str | None = None
    ) -> ApplicationView:
        """The household-registration county signs off: transmitted → approved."""
        return self.fire(app_id, "approve", actor=actor, request_id=request_id)

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
        return self.fire(
            app_id, "reject", actor=actor, request_id=request_id, ground=ground, note=note
        )

    def produce(
        self, app_id: uuid.UUID, *, actor: Actor, request_id: str | None = None
    ) -> ApplicationView:
        """The card is produced and checked: approved → produced."""
        return self.fire(app_id, "produce", actor=actor, request_id=request_id)

    def mark_ready(
        self, app_id: uuid.UUID, *, actor: Actor, request_id: str | None = None
    ) -> ApplicationView:
        """The card is at the acceptance point and verified: produced → ready."""
        return self.fire(app_id, "mark_ready", actor=actor, request_id=request_id)

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

        Collecting a replacement closes the citizen's active loss report in the same
        transaction: the lost card stays invalid for good.
        """
        return self.fire(
            app_id,
            "collect",
            actor=actor,
            request_id=request_id,
            receipt_no=receipt_no,
            old_card_returned=old_card_returned,
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
        record_id = as_record_id(app_id)
        actor = as_actor(actor)
        arguments = self._runner.arguments(event, payload)
        request = Request.of(
            request_id, APPLICATION.name, shown(event), record_id, actor, arguments
        )

        def work(conn: Connection) -> tuple[uuid.UUID, dict[str, Any]]:
            result = self._runner.fire_in(conn, record_id, event, actor=actor, arguments=arguments)
            if event == "collect" and result["kind"] == Kind.REPLACEMENT:
                self._close_loss_report(conn, str(result["citizen_id"]), actor)
            return record_id, result

        return _view(self._executor.execute(request, work))

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
        permissions, states, guards, history, hash chain and outbox), in a few statements per
        chunk. The report lists the applications moved and, for each one refused, the reason.
        """
        ids = list(dict.fromkeys(_IDS.validate_python(app_ids)))
        size = _LIMIT.validate_python(chunk_size)
        actor = as_actor(actor)
        arguments = self._runner.arguments(event, payload)
        succeeded: list[uuid.UUID] = []
        refused: list[BulkRefusal] = []
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            with self._store.transaction(write=True) as conn:
                moved, not_moved = self._runner.fire_many_in(
                    conn, chunk, event, actor=actor, arguments=arguments
                )
                for result in moved:
                    if event == "collect" and result["kind"] == Kind.REPLACEMENT:
                        self._close_loss_report(conn, str(result["citizen_id"]), actor)
            succeeded.extend(r["id"] for r in moved)
            refused.extend(not_moved)
        return BulkReport(event=shown(event), succeeded=succeeded, refused=refused)

    def _close_loss_report(self, conn: Connection, citizen_id: str, actor: Actor) -> None:
        report = self._loss_reports.active_for(conn, citizen_id)
        if report is None:
            return

        def collected(conn: Connection, record: Mapping[str, Any]) -> Mapping[str, Any]:
            citizen = str(record["citizen_id"])
            return {
                "replacement_collected": self._applications.replacement_collected(conn, citizen)
            }

        self._loss.fire_in(
            conn, report["id"], "close", actor=actor, arguments=NoPayload(), context=collected
        )

    # -- loss reports -----------------------------------------------------------------------

    def report_loss(
        self, citizen_id: str, *, actor: Actor, request_id: str | None = None
    ) -> LossReportView:
        """Record that the citizen's card was lost; any acceptance clerk, anywhere.

        At most one report per citizen is active (`DuplicateLossReport`), which the database
        enforces too.
        """
        citizen = _CITIZEN.validate_python(citizen_id)
        actor = as_actor(actor)
        request = Request.of(request_id, LOSS_REPORT.name, "report", None, actor, citizen)

        def duplicate() -> DuplicateLossReport:
            return DuplicateLossReport(mask_citizen_id(citizen))

        def work(conn: Connection) -> tuple[uuid.UUID, dict[str, Any]]:
            now = self._executor.now()
            values = _loss_report_values(citizen, actor.unit, now, None)
            self._loss.may_create(actor, values)
            if self._loss_reports.active_for(conn, citizen) is not None:
                raise duplicate()
            row = self._loss.create_in(conn, values, actor=actor, now=now)
            return row["id"], row

        row = self._executor.execute(
            request,
            work,
            conflicts={
                "idcard_uq_loss_reports_active_citizen": duplicate,
                "idcard_loss_reports.citizen_id": duplicate,
            },
        )
        return from_row(LossReportView, row)

    def withdraw_loss_report(
        self,
        report_id: uuid.UUID,
        *,
        actor: Actor,
        card_presented: bool,
        request_id: str | None = None,
    ) -> LossReportView:
        """The holder came back in person with the found card: reported → withdrawn."""
        row = self._loss.fire(
            report_id,
            "withdraw",
            actor=actor,
            payload={"card_presented": card_presented},
            request_id=request_id,
        )
        return from_row(LossReportView, row)

    def is_reported_lost(self, citizen_id: str) -> bool:
        """Whether the citizen's card is reported lost now: the answer and nothing else."""
        citizen = _CITIZEN.validate_python(citizen_id)
        with self._store.transaction(write=False) as conn:
            return self._loss_reports.active_for(conn, citizen) is not None

    def get_loss_report(self, report_id: uuid.UUID) -> LossReportView:
        """The loss report as it is now."""
        return from_row(LossReportView, self._loss.get(report_id))

    # -- found cards ------------------------------------------------------------------------

    def register_found_card(
        self, citizen_id: str, *, actor: Actor, request_id: str | None = None
    ) -> FoundCardView:
        """A found card is handed in; the clerk's office holds it: (new) → held."""
        citizen = _CITIZEN.validate_python(citizen_id)
        actor = as_actor(actor)
        request = Request.of(request_id, FOUND_CARD.name, "register", None, actor, citizen)

        def work(conn: Connection) -> tuple[uuid.UUID, dict[str, Any]]:
            now = self._executor.now()
            values = {
                "citizen_id": citizen,
                "held_unit": actor.unit,
                "registered_at": now,
                "ended_at": None,
            }
            row = self._found.create_in(conn, values, actor=actor, now=now)
            return row["id"], row

        return from_row(FoundCardView, self._executor.execute(request, work))

    def return_found_card(
        self,
        card_id: uuid.UUID,
        *,
        actor: Actor,
        identity_checked: bool,
        request_id: str | None = None,
    ) -> FoundCardView:
        """Hand the card back to its owner in person: held → returned.

        Refused when the owner applied for a replacement since the card was reported lost or
        found (the card must be destroyed instead). Withdraws the owner's active loss report in
        the same transaction.
        """
        record_id = as_record_id(card_id)
        actor = as_actor(actor)
        arguments = ReturnPayload.model_validate({"identity_checked": identity_checked})
        request = Request.of(
            request_id, FOUND_CARD.name, "return_to_owner", record_id, actor, arguments
        )

        def work(conn: Connection) -> tuple[uuid.UUID, dict[str, Any]]:
            result = self._found.fire_in(
                conn,
                record_id,
                "return_to_owner",
                actor=actor,
                arguments=arguments,
                context=self._replacement_context,
            )
            report = self._loss_reports.active_for(conn, str(result["citizen_id"]))
            if report is not None:
                self._loss.fire_in(
                    conn,
                    report["id"],
                    "withdraw",
                    actor=actor,
                    arguments=WithdrawPayload(card_presented=True),
                )
            return record_id, result

        return from_row(FoundCardView, self._executor.execute(request, work))

    def destroy_found_card(
        self, card_id: uuid.UUID, *, actor: Actor, request_id: str | None = None
    ) -> FoundCardView:
        """Destroy a found card whose owner applied for or received a replacement, and record
        the destruction: held → destroyed."""
        row = self._found.fire(
            card_id,
            "destroy",
            actor=actor,
            payload={},
            request_id=request_id,
            context=self._replacement_context,
        )
        return from_row(FoundCardView, row)

    def get_found_card(self, card_id: uuid.UUID) -> FoundCardView:
        """The found card as it is now."""
        return from_row(FoundCardView, self._found.get(card_id))

    def _replacement_context(self, conn: Connection, card: Mapping[Any, Any]) -> Mapping[str, Any]:
        # "Since the card was reported lost or found": from the citizen's latest loss report
        # that was not withdrawn (a withdrawn one ended with the card found; a closed one with
        # a replacement, leaving the lost card invalid for good), or from the hand-in if that
        # was earlier or there is no such report.
        citizen = str(card["citizen_id"])
        since = card["registered_at"]
        report = self._loss_reports.latest_not_withdrawn(conn, citizen)
        if report is not None and report["reported_at"] < since:
            since = report["reported_at"]
        replaced = self._applications.replacement_since(conn, citizen, since)
        return {"replacement_since_loss": replaced}

    # -- queries ----------------------------------------------------------------------------

    def get(self, app_id: uuid.UUID) -> ApplicationView:
        """The application as it is now."""
        return _view(self._runner.get(app_id))

    def history(self, record_id: uuid.UUID) -> list[TransitionRecord]:
        """Every transition of any record (application, loss report or found card), oldest
        first; the first is its creation."""
        record_id = as_record_id(record_id)
        for runner in (self._runner, self._loss, self._found):
            try:
                return runner.history(record_id)
            except NotFound:
                continue
        raise NotFound(record_id, machine="record")

    def explain(self, app_id: uuid.UUID, actor: Actor) -> Explanation:
        """The events ``actor`` could fire on the application now and, for each one it can't,
        every reason (role, unit, state); each event's guards are listed as conditions."""
        return self._runner.explain(app_id, actor)

    def verify(
        self, record_id: uuid.UUID | None = None, *, batch_size: int = 1000
    ) -> VerificationReport:
        """Check every record's history (or one's), of every machine: replayed through its
        definition from the initial state, each step legal with its guard facts recorded,
        stored state and version equal to the replay's, and the hash chain intact. Reads in
        batches. An id that names no record and no history raises `NotFound`."""
        one = None if record_id is None else as_record_id(record_id)
        size = _BATCH.validate_python(batch_size)
        report = merge(
            verify(
                self._store, runner.definition, runner.repository, record_id=one, batch_size=size
            )
            for runner in (self._runner, self._loss, self._found)
        )
        if one is not None and report.records == 0 and not report.broken:
            raise NotFound(one, machine="record")
        return report

    def overdue(self, as_of: datetime | None = None, *, limit: int = 100) -> list[ApplicationView]:
        """Applications whose card is still on its way after ``due_at``, earliest first."""
        query = OverdueQuery(as_of=as_of, limit=limit)
        moment = self._executor.now() if query.as_of is None else query.as_of
        with self._store.transaction(write=False) as conn:
            rows = self._applications.overdue(conn, moment, query.limit)
        return [_view(r) for r in rows]

    def overdue_reviews(
        self, as_of: datetime | None = None, *, limit: int = 100
    ) -> list[ApplicationView]:
        """Transmitted applications still undecided after ``review_due_at``, earliest first."""
        query = OverdueQuery(as_of=as_of, limit=limit)
        moment = self._executor.now() if query.as_of is None else query.as_of
        with self._store.transaction(write=False) as conn:
            rows = self._applications.overdue_reviews(conn, moment, query.limit)
        return [_view(r) for r in rows]

    # -- the outbox -------------------------------------------------------------------------

    def pending_events(self, limit: int = 100) -> list[PendingEvent]:
        """Transitions not yet acknowledged, oldest first (so in order for each record).

        A host relays them and then acknowledges them with `ack`; delivery is at least once.
        """
        size = _LIMIT.validate_python(limit)
        with self._store.transaction(write=False) as conn:
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


def _application_values(cmd: SubmitApplication, now: datetime) -> dict[str, Any]:
    return {
        "kind": str(cmd.kind),
        "citizen_id": cmd.citizen_id,
        "name": cmd.name,
        "hukou_region": cmd.hukou_region,
        "acceptance_region": cmd.acceptance_region,
        "documents": sorted(str(d) for d in cmd.documents),
        "fee_paid": cmd.fee_paid,
        "fee_waiver": str(cmd.fee_waiver) if cmd.fee_waiver else None,
        "receipt_no": new_receipt_no(),
        "submitted_at": now,
        "due_at": now + ISSUE_WITHIN,
        "review_due_at": None,
        "rejection_ground": None,
        "rejection_note": None,
        "old_card_returned": False,
    }


def _loss_report_values(
    citizen_id: str, unit: str, now: datetime, application_id: uuid.UUID | None
) -> dict[str, Any]:
    return {
        "citizen_id": citizen_id,
        "reported_unit": unit,
        "application_id": application_id,
        "reported_at": now,
        "ended_at": None,
    }


def _view(row: Mapping[Any, Any]) -> ApplicationView:
    return from_row(ApplicationView, row)


__all__ = ["MACHINES", "Workflow"]
