"""The remote-acceptance process: the machine, its queries, its creation, its registration.

States, events, guards and who may fire each event are declared in `ApplicationMachine` and
nowhere else; the engine, the tests and the documentation read them through `APPLICATION`.
The class does no I/O; `ApplicationRepository` holds the application table's own queries, and
`MACHINE` is what the registry (`workflow.machines`) hands the engine.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import sqlalchemy as sa
from pydantic import TypeAdapter
from sqlalchemy.engine import Connection, RowMapping
from statemachine import State

from workflow.engine.definition import Definition, EventRule, Guard, Permission, ProcessMachine
from workflow.engine.records import Repository
from workflow.engine.registry import Creation, Machine, Unique
from workflow.errors import DuplicateApplication
from workflow.models.citizen_id import mask_citizen_id
from workflow.models.enums import RENEWALS, Kind, RejectionGround, Role
from workflow.models.enums import State as S
from workflow.models.schemas import (
    Actor,
    ApplicationView,
    CollectPayload,
    ExtendPayload,
    NoPayload,
    RejectPayload,
    SubmitApplication,
)
from workflow.models.tables import (
    AWAITING_CARD_CONDITION,
    AWAITING_REVIEW_CONDITION,
    OPEN_CONDITION,
    Application,
)

ISSUE_WITHIN = timedelta(days=60)
"""The card must be issued within 60 days of the registration form being submitted."""

REVIEW_WITHIN = timedelta(days=5)
"""The household-registration county must decide within 5 days of the transmission."""

EXTENSION_AT_MOST = timedelta(days=30)
"""Where transport is difficult the 60-day limit may be extended, once, by at most 30 days."""

# Who may act, by role and unit: the unit is matched against the application's regions.
CLERK_OF_ACCEPTANCE_POINT = Permission(
    Role.ACCEPTANCE_CLERK,
    unit_field="acceptance_region",
    description="an acceptance clerk of the acceptance county",
)
REVIEWER_OF_HUKOU_COUNTY = Permission(
    Role.HUKOU_REVIEWER,
    unit_field="hukou_region",
    description="a reviewer of the household-registration county",
)
PRODUCER_OF_ACCEPTANCE_PROVINCE = Permission(
    Role.CARD_PRODUCER,
    unit_field="acceptance_region",
    unit_digits=2,
    description="a card producer of the acceptance province",
)


def _receipt_matches(record: Any, payload: CollectPayload) -> Mapping[str, Any]:
    # Constant time: a wrong receipt must not reveal how much of it was right. Recorded as
    # whether it matched: the receipt itself is never logged.
    matches = hmac.compare_digest(payload.receipt_no.encode(), str(record.receipt_no).encode())
    return {"receipt_matches": matches}


RECEIPT_MATCHES = Guard(
    name="receipt_matches",
    rule="the applicant presents the receipt issued at submission",
    facts=_receipt_matches,
    holds=lambda record, facts: facts.get("receipt_matches") is True,
)

OLD_CARD_HANDED_BACK = Guard(
    name="old_card_handed_back",
    rule="renewal: the old card must be handed back when the new one is received",
    facts=lambda record, payload: {"old_card_returned": payload.old_card_returned},
    holds=lambda record, facts: (
        record.kind not in RENEWALS or facts.get("old_card_returned") is True
    ),
)

REASONS_GIVEN = Guard(
    name="reasons_given",
    rule="a refusal states its ground; the ground 'other' needs a written note",
    facts=lambda record, payload: {"ground": str(payload.ground), "note": payload.note},
    holds=lambda record, facts: (
        facts.get("ground") in set(RejectionGround)
        and (facts.get("ground") != RejectionGround.OTHER or bool(str(facts.get("note")).strip()))
    ),
)


NOT_EXTENDED_BEFORE = Guard(
    name="not_extended_before",
    rule="the 60-day limit is extended at most once",
    facts=lambda record, payload: {
        "days": payload.days,
        "reason": payload.reason,
        "extended_before": record.due_at > record.submitted_at + ISSUE_WITHIN,
    },
    holds=lambda record, facts: (
        facts.get("extended_before") is False
        and isinstance(facts.get("days"), int)
        and 1 <= facts["days"] <= EXTENSION_AT_MOST.days
        and bool(str(facts.get("reason") or "").strip())
    ),
)


def _submission_facts(record: Any) -> Mapping[str, Any]:
    # What the acceptance point checked and what decides who may act later: kept in the first
    # history row so that a changed kind, region or fee in the stored record is detected.
    return {
        "kind": str(record.kind),
        "documents": sorted(str(d) for d in record.documents),
        "fee_paid": f"{Decimal(record.fee_paid):.2f}",
        "fee_waiver": str(record.fee_waiver) if record.fee_waiver else None,
        "hukou_region": str(record.hukou_region),
        "acceptance_region": str(record.acceptance_region),
    }


def _columns_from_history(rows: Sequence[Mapping[Any, Any]]) -> Mapping[str, Any]:
    # What the effects of the events in these rows set, in the order they took place.
    submitted = rows[0]["at"]
    columns: dict[str, Any] = {
        "submitted_at": submitted,
        "due_at": submitted + ISSUE_WITHIN,
        "review_due_at": None,
        "rejection_ground": None,
        "rejection_note": None,
        "old_card_returned": False,
    }
    for row in rows[1:]:
        details, event = row["details"], row["event"]
        if event == "transmit":
            columns["review_due_at"] = row["at"] + REVIEW_WITHIN
        elif event == "extend_deadline":
            columns["due_at"] += timedelta(days=int(details.get("days", 0)))
        elif event == "reject":
            columns["rejection_ground"] = details.get("ground")
            columns["rejection_note"] = details.get("note")
        elif event == "collect":
            columns["old_card_returned"] = details.get("old_card_returned")
    return columns


def _facts_from_history(event: str, earlier: Sequence[Mapping[Any, Any]]) -> Mapping[str, Any]:
    if event == "extend_deadline":
        return {"extended_before": any(r["event"] == "extend_deadline" for r in earlier)}
    return {}


def _start_review_clock(record: Any, payload: Any, now: datetime) -> Mapping[str, Any]:
    return {"review_due_at": now + REVIEW_WITHIN}


def _record_refusal(record: Any, payload: RejectPayload, now: datetime) -> Mapping[str, Any]:
    return {"rejection_ground": str(payload.ground), "rejection_note": payload.note}


def _extend_due_date(record: Any, payload: ExtendPayload, now: datetime) -> Mapping[str, Any]:
    return {"due_at": record.due_at + timedelta(days=payload.days)}


def _record_hand_over(record: Any, payload: CollectPayload, now: datetime) -> Mapping[str, Any]:
    return {"old_card_returned": payload.old_card_returned}


class ApplicationMachine(ProcessMachine):
    """Remote acceptance of one application for a resident identity card.

    Rejected and collected are final. Submission creates the record in ``submitted``; it is
    the ``creation_event``, not a transition.
    """

    submitted = State("Submitted", value=S.SUBMITTED, initial=True)
    transmitted = State("Transmitted", value=S.TRANSMITTED)
    approved = State("Approved", value=S.APPROVED)
    rejected = State("Rejected", value=S.REJECTED, final=True)
    produced = State("Produced", value=S.PRODUCED)
    ready = State("Ready", value=S.READY)
    collected = State("Collected", value=S.COLLECTED, final=True)

    transmit = submitted.to(transmitted)
    approve = transmitted.to(approved)
    reject = transmitted.to(rejected, validators=[REASONS_GIVEN.validator])
    produce = approved.to(produced)
    mark_ready = produced.to(ready)
    collect = ready.to(
        collected, validators=[RECEIPT_MATCHES.validator, OLD_CARD_HANDED_BACK.validator]
    )
    # While the card is still on its way the limit may be extended; the state stays.
    extend_deadline = (
        submitted.to(submitted, validators=[NOT_EXTENDED_BEFORE.validator])
        | transmitted.to(transmitted, validators=[NOT_EXTENDED_BEFORE.validator])
        | approved.to(approved, validators=[NOT_EXTENDED_BEFORE.validator])
        | produced.to(produced, validators=[NOT_EXTENDED_BEFORE.validator])
    )

    creation_event: ClassVar[str | None] = "submit"
    creation_facts = staticmethod(_submission_facts)
    identity = ("citizen_id", "name", "receipt_no")
    history_columns = staticmethod(_columns_from_history)
    history_facts = staticmethod(_facts_from_history)
    creation: ClassVar[Permission | None] = CLERK_OF_ACCEPTANCE_POINT
    rules: ClassVar[Mapping[str, EventRule]] = {
        "transmit": EventRule(
            CLERK_OF_ACCEPTANCE_POINT,
            NoPayload,
            _start_review_clock,
            "The acceptance point sends the application to the household-registration county; "
            "the 5-day review period starts.",
        ),
        "approve": EventRule(
            REVIEWER_OF_HUKOU_COUNTY,
            NoPayload,
            None,
            "The household-registration county signs off: the details match the register.",
        ),
        "reject": EventRule(
            REVIEWER_OF_HUKOU_COUNTY,
            RejectPayload,
            _record_refusal,
            "The household-registration county refuses, with its ground; the applicant must "
            "apply at home instead.",
        ),
        "produce": EventRule(
            PRODUCER_OF_ACCEPTANCE_PROVINCE,
            NoPayload,
            None,
            "The card is produced and checked.",
        ),
        "mark_ready": EventRule(
            CLERK_OF_ACCEPTANCE_POINT,
            NoPayload,
            None,
            "The card has reached the acceptance point, is verified, and the applicant is told.",
        ),
        "collect": EventRule(
            CLERK_OF_ACCEPTANCE_POINT,
            CollectPayload,
            _record_hand_over,
            "The applicant collects the card with the receipt; on renewal the old card is "
            "handed back.",
        ),
        "extend_deadline": EventRule(
            CLERK_OF_ACCEPTANCE_POINT,
            ExtendPayload,
            _extend_due_date,
            "Where transport is difficult, the acceptance point extends the 60-day limit once, "
            "by 1 to 30 days, with the reason; the application stays where it is.",
        ),
    }


APPLICATION = Definition.of(ApplicationMachine, name="application")
"""The compiled definition the engine runs the application process with."""


class ApplicationRepository(Repository):
    """The application table's own queries: open applications, overdue ones, replacements."""

    def __init__(self) -> None:
        super().__init__(Application.__table__, machine="application")  # type: ignore[arg-type]

    def replacement_since(self, conn: Connection, citizen_id: str, since: datetime) -> bool:
        """Whether the citizen applied for a replacement (not refused) at or after ``since``."""
        t = self.table
        query = sa.select(t.c.id).where(
            t.c.citizen_id == citizen_id,
            t.c.kind == Kind.REPLACEMENT,
            t.c.state != S.REJECTED,
            t.c.submitted_at >= since,
        )
        return conn.execute(query.limit(1)).first() is not None

    def replacement_in_progress(self, conn: Connection, citizen_id: str) -> bool:
        """Whether the citizen has a replacement application neither rejected nor collected."""
        t = self.table
        query = sa.select(t.c.id).where(
            t.c.citizen_id == citizen_id,
            t.c.kind == Kind.REPLACEMENT,
            sa.text(OPEN_CONDITION),
        )
        return conn.execute(query.limit(1)).first() is not None

    def during_a_replacement(
        self, conn: Connection, records: sa.Table, machine: str, event: str, after: int
    ) -> list[tuple[Any, int]]:
        """``(record_id, seq)`` of the rows of ``event`` on ``machine``'s records (``records``,
        with a ``citizen_id``) taken while a replacement application of the citizen stood:
        submitted before, not yet rejected or collected. Rows with ids above ``after`` only:
        commands on one citizen happen one after the other, so their rows' ids follow the order
        in which they took effect."""
        a, log = self.table, self.log
        start = log.alias("submitted")
        end = log.alias("ended")
        row = log.alias("row")
        ended_before = (
            sa.select(end.c.id)
            .where(
                end.c.machine == "application",
                end.c.record_id == a.c.id,
                end.c.to_state.in_([S.REJECTED, S.COLLECTED]),
                end.c.id < row.c.id,
            )
            .exists()
        )
        query = (
            sa.select(row.c.record_id, row.c.seq)
            .select_from(
                row.join(records, records.c.id == row.c.record_id)
                .join(
                    a, sa.and_(a.c.citizen_id == records.c.citizen_id, a.c.kind == Kind.REPLACEMENT)
                )
                .join(
                    start,
                    sa.and_(
                        start.c.machine == "application",
                        start.c.record_id == a.c.id,
                        start.c.seq == 1,
                        start.c.id < row.c.id,
                    ),
                )
            )
            .where(row.c.machine == machine, row.c.event == event, row.c.id > after, ~ended_before)
            .distinct()
            .order_by(row.c.record_id)
        )
        return [(record_id, int(seq)) for record_id, seq in conn.execute(query)]

    def replacement_collected(self, conn: Connection, citizen_id: str) -> bool:
        """Whether a replacement card was collected by the citizen."""
        t = self.table
        query = sa.select(t.c.id).where(
            t.c.citizen_id == citizen_id,
            t.c.kind == Kind.REPLACEMENT,
            t.c.state == S.COLLECTED,
        )
        return conn.execute(query.limit(1)).first() is not None

    def has_open(self, conn: Connection, citizen_id: str) -> bool:
        t = self.table
        query = sa.select(t.c.id).where(t.c.citizen_id == citizen_id, sa.text(OPEN_CONDITION))
        return conn.execute(query.limit(1)).first() is not None

    def overdue(self, conn: Connection, as_of: datetime, limit: int) -> Sequence[RowMapping]:
        """Cards still on their way after ``due_at``: the partial index of the 60-day limit."""
        return self._due(conn, AWAITING_CARD_CONDITION, self.table.c.due_at, as_of, limit)

    def overdue_reviews(
        self, conn: Connection, as_of: datetime, limit: int
    ) -> Sequence[RowMapping]:
        """Reviews still undecided after ``review_due_at``: the partial index of the 5 days."""
        return self._due(conn, AWAITING_REVIEW_CONDITION, self.table.c.review_due_at, as_of, limit)

    def _due(
        self,
        conn: Connection,
        condition: str,
        due: sa.Column[Any],
        as_of: datetime,
        limit: int,
    ) -> Sequence[RowMapping]:
        # The condition word for word as the index has it, so the index answers the query.
        query = (
            sa.select(self.table)
            .where(sa.text(condition), due < as_of)
            .order_by(due, self.table.c.id)
            .limit(limit)
        )
        return conn.execute(query).mappings().all()


RECEIPT_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""Receipt characters: no 0/O or 1/I, which are misread on paper."""
RECEIPT_LENGTH = 12
"""12 characters of 32: 60 bits, unguessable."""


def new_receipt_no() -> str:
    """A fresh receipt number from the operating system's secure random source."""
    return "".join(secrets.choice(RECEIPT_ALPHABET) for _ in range(RECEIPT_LENGTH))


def application_values(cmd: SubmitApplication, actor: Actor, now: datetime) -> dict[str, Any]:
    """The columns of a new application: the form, a receipt, and the 60-day limit."""
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


REPOSITORY = ApplicationRepository()


MACHINE: Machine[SubmitApplication, ApplicationView] = Machine(
    definition=APPLICATION,
    repository=REPOSITORY,
    view=ApplicationView,
    creation=Creation(
        argument=TypeAdapter(SubmitApplication),
        values=application_values,
        unique=Unique(
            exists=lambda conn, cmd: REPOSITORY.has_open(conn, cmd.citizen_id),
            refusal=lambda cmd: DuplicateApplication(mask_citizen_id(cmd.citizen_id)),
            index="idcard_uq_applications_open_citizen",
            column="idcard_applications.citizen_id",
        ),
    ),
    serialised_by="citizen_id",
    noun="application",
)
"""The application machine as the engine runs it."""
