"""The `Workflow` facade: the application process's commands and queries."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter
from sqlalchemy.engine import Connection

from models.citizen_id import mask_citizen_id
from models.enums import RejectionGround
from models.schemas import (
    ApplicationView,
    Explanation,
    PendingEvent,
    SubmitApplication,
    TransitionRecord,
)
from workflow.db import require_head
from workflow.engine import Clock, Runner, as_actor, as_record_id, from_row, system_clock
from workflow.errors import DuplicateApplication
from workflow.machine import APPLICATION, ISSUE_WITHIN
from workflow.repository import ApplicationRepository, OutboxRepository
from workflow.store import Bind, Store
from workflow.verification import VerificationReport, verify

RECEIPT_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""Receipt characters: no 0/O or 1/I, which are misread on paper."""
RECEIPT_LENGTH = 12
"""12 characters of 32: 60 bits, unguessable."""

_FORM = TypeAdapter(SubmitApplication)
_LIMIT = TypeAdapter(Annotated[int, Field(strict=True, ge=1, le=10_000)])
_EVENT_IDS = TypeAdapter(
    Annotated[list[Annotated[int, Field(strict=True, ge=1)]], Field(max_length=10_000)]
)
_BATCH = TypeAdapter(Annotated[int, Field(strict=True, ge=1, le=100_000)])


class OverdueQuery(BaseModel):
    """The arguments of the overdue queries: an aware ``as_of`` and a bounded ``limit``."""

    model_config = ConfigDict(frozen=True, strict=True, hide_input_in_errors=True)

    as_of: AwareDatetime | None = None
    limit: Annotated[int, Field(ge=1, le=10_000)] = 100


def new_receipt_no() -> str:
    """A fresh receipt number from the operating system's secure random source."""
    return "".join(secrets.choice(RECEIPT_ALPHABET) for _ in range(RECEIPT_LENGTH))


class Workflow:
    """The remote-acceptance process on one database.

    ``bind`` is a database URL or an `Engine` (each command is its own committed transaction) or
    a `Session` (each command joins the caller's transaction and the caller commits). The
    database must be at the latest revision (`workflow.upgrade`). ``clock`` returns the current
    time as an aware datetime (default: the real clock).
    """

    def __init__(self, bind: Bind, *, clock: Clock | None = None) -> None:
        self._store = Store(bind)
        try:
            require_head(self._store)
        except BaseException:
            self._store.close()
            raise
        self._repository = ApplicationRepository()
        self._outbox = OutboxRepository()
        self._runner = Runner(self._store, APPLICATION, self._repository, clock or system_clock)

    def close(self) -> None:
        """Release the connections of an engine the workflow opened from a URL."""
        self._store.close()

    def __enter__(self) -> Workflow:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- commands ---------------------------------------------------------------------------

    def submit(
        self, cmd: SubmitApplication, *, actor: Any, request_id: str | None = None
    ) -> ApplicationView:
        """Accept an application at the acceptance point: (new) → submitted."""
        cmd = cmd if isinstance(cmd, SubmitApplication) else _FORM.validate_python(cmd)
        actor = as_actor(actor)
        now = self._runner.now()
        values = {
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

        def duplicate() -> DuplicateApplication:
            return DuplicateApplication(mask_citizen_id(cmd.citizen_id))

        def refuse_duplicate(conn: Connection) -> None:
            if self._repository.has_open(conn, cmd.citizen_id):
                raise duplicate()

        row = self._runner.create(
            values,
            actor=actor,
            now=now,
            arguments=cmd,
            check=refuse_duplicate,
            # A racing submission that passed the check above meets the partial unique index.
            conflicts={
                "uq_applications_open_citizen": duplicate,
                "applications.citizen_id": duplicate,
            },
            request_id=request_id,
        )
        return _view(row)

    def transmit(
        self, app_id: uuid.UUID, *, actor: Any, request_id: str | None = None
    ) -> ApplicationView:
        """Send the application to the household-registration county: submitted → transmitted."""
        return self.fire(app_id, "transmit", actor=actor, request_id=request_id)

    def approve(
        self, app_id: uuid.UUID, *, actor: Any, request_id: str | None = None
    ) -> ApplicationView:
        """The household-registration county signs off: transmitted → approved."""
        return self.fire(app_id, "approve", actor=actor, request_id=request_id)

    def reject(
        self,
        app_id: uuid.UUID,
        *,
        actor: Any,
        ground: RejectionGround | str,
        note: str = "",
        request_id: str | None = None,
    ) -> ApplicationView:
        """The household-registration county refuses, with its ground: transmitted → rejected."""
        return self.fire(
            app_id, "reject", actor=actor, request_id=request_id, ground=ground, note=note
        )

    def produce(
        self, app_id: uuid.UUID, *, actor: Any, request_id: str | None = None
    ) -> ApplicationView:
        """The card is produced and checked: approved → produced."""
        return self.fire(app_id, "produce", actor=actor, request_id=request_id)

    def mark_ready(
        self, app_id: uuid.UUID, *, actor: Any, request_id: str | None = None
    ) -> ApplicationView:
        """The card is at the acceptance point and verified: produced → ready."""
        return self.fire(app_id, "mark_ready", actor=actor, request_id=request_id)

    def collect(
        self,
        app_id: uuid.UUID,
        *,
        actor: Any,
        receipt_no: str,
        old_card_returned: bool = False,
        request_id: str | None = None,
    ) -> ApplicationView:
        """The applicant takes the card, with the receipt (and old card): ready → collected."""
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
        actor: Any,
        request_id: str | None = None,
        **payload: Any,
    ) -> ApplicationView:
        """Apply any event but submit by name; ``payload`` is that command's keyword arguments.

        With a ``request_id``, a retry of a command that took effect returns the same result
        and changes nothing; the same id used for another command raises `IdempotencyConflict`.
        """
        return _view(
            self._runner.fire(app_id, event, actor=actor, payload=payload, request_id=request_id)
        )

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
        now = self._runner.now()
        with self._store.transaction(write=True) as conn:
            return self._outbox.ack(conn, ids, now)

    # -- queries ----------------------------------------------------------------------------

    def get(self, app_id: uuid.UUID) -> ApplicationView:
        """The application as it is now."""
        return _view(self._runner.get(app_id))

    def history(self, app_id: uuid.UUID) -> list[TransitionRecord]:
        """Every transition of the application, oldest first; the first is the submission."""
        return self._runner.history(app_id)

    def explain(self, app_id: uuid.UUID, actor: Any) -> Explanation:
        """The events ``actor`` could fire on the application now and, for each one it can't,
        every reason (role, unit, state); each event's guards are listed as conditions."""
        return self._runner.explain(app_id, actor)

    def verify(
        self, app_id: uuid.UUID | None = None, *, batch_size: int = 1000
    ) -> VerificationReport:
        """Check every application's history (or one's): replayed through the definition from
        the initial state, each step legal with its guard facts recorded, stored state and
        version equal to the replay's, and the hash chain intact. Reads in batches."""
        record_id = None if app_id is None else as_record_id(app_id)
        size = _BATCH.validate_python(batch_size)
        return verify(
            self._store, APPLICATION, self._repository, record_id=record_id, batch_size=size
        )

    def overdue(self, as_of: datetime | None = None, *, limit: int = 100) -> list[ApplicationView]:
        """Applications whose card is still on its way after ``due_at``, earliest first."""
        query = OverdueQuery(as_of=as_of, limit=limit)
        moment = self._runner.now() if query.as_of is None else query.as_of
        with self._store.transaction(write=False) as conn:
            rows = self._repository.overdue(conn, moment, query.limit)
        return [_view(r) for r in rows]

    def overdue_reviews(
        self, as_of: datetime | None = None, *, limit: int = 100
    ) -> list[ApplicationView]:
        """Transmitted applications still undecided after ``review_due_at``, earliest first."""
        query = OverdueQuery(as_of=as_of, limit=limit)
        moment = self._runner.now() if query.as_of is None else query.as_of
        with self._store.transaction(write=False) as conn:
            rows = self._repository.overdue_reviews(conn, moment, query.limit)
        return [_view(r) for r in rows]


def _view(row: Mapping[Any, Any]) -> ApplicationView:
    return from_row(ApplicationView, row)


__all__ = ["Workflow"]
