"""Loss reporting (挂失申报) as a state machine.

A loss can be reported at any police station or identity-card office in the country; applying
for a replacement counts as reporting it. The report is withdrawn when the holder comes back in
person with the found card, and closed for good when a replacement card is collected. The
machine class does no I/O: the fact it needs from other records (whether a replacement was
collected) is declared in `MACHINE` and computed by the engine in the command's transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

import sqlalchemy as sa
from pydantic import TypeAdapter
from sqlalchemy.engine import Connection, RowMapping
from statemachine import State

from workflow.engine.definition import Definition, EventRule, Guard, Permission, ProcessMachine
from workflow.engine.records import Repository
from workflow.engine.registry import Audit, Creation, Finding, Machine, Unique
from workflow.errors import DuplicateLossReport
from workflow.machines import application
from workflow.models.citizen_id import mask_citizen_id
from workflow.models.enums import LossReportState as S
from workflow.models.enums import Role
from workflow.models.schemas import (
    LossReportView,
    NoPayload,
    ReportLoss,
    WithdrawPayload,
)
from workflow.models.tables import ACTIVE_LOSS_CONDITION, LossReport

ANY_ACCEPTANCE_CLERK = Permission(
    Role.ACCEPTANCE_CLERK,
    unit_field=None,
    description="an acceptance clerk of any office in the country",
)

CARD_PRESENTED = Guard(
    name="card_presented",
    rule="the holder comes in person with the found card",
    facts=lambda record, payload: {"card_presented": payload.card_presented},
    holds=lambda record, facts: facts.get("card_presented") is True,
)

HOLDER_IN_PERSON = Guard(
    name="holder_in_person",
    rule="the cardholder reports the loss in person, identity checked",
    facts=lambda record, form: {"identity_checked": form.identity_checked},
    # A report recorded before the check was kept (revision 0010) has no such fact.
    holds=lambda record, facts: facts.get("identity_checked", True) is True,
    recorded_since="0010",
    keys=("identity_checked",),
)

NO_REPLACEMENT_IN_PROGRESS = Guard(
    name="no_replacement_in_progress",
    rule="no replacement for the citizen is in progress: the report stands until the "
    "replacement is collected (which closes it) or rejected",
    facts=lambda record, payload: {"replacement_in_progress": bool(record.replacement_in_progress)},
    # A withdrawal recorded before the rule was checked (revision 0010) has no such fact.
    holds=lambda record, facts: facts.get("replacement_in_progress", False) is False,
    recorded_since="0010",
    keys=("replacement_in_progress",),
)

REPLACEMENT_COLLECTED = Guard(
    name="replacement_collected",
    rule="a replacement card has been collected: the lost card stays invalid for good",
    facts=lambda record, payload: {"replacement_collected": bool(record.replacement_collected)},
    holds=lambda record, facts: facts.get("replacement_collected") is True,
)


def _report_facts(record: Any) -> Mapping[str, Any]:
    application = record.application_id
    return {
        "reported_unit": str(record.reported_unit),
        "application_id": str(application) if application else None,
    }


def end_now(record: Any, payload: Any, now: datetime) -> Mapping[str, Any]:
    """The effect of an event into a final state: the record's ``ended_at``."""
    return {"ended_at": now}


def ended_from_history(first: str) -> Any:
    """`ProcessMachine.history_columns` of a machine whose records end once: the creation's
    time in the column ``first``, the last row's time as ``ended_at`` once final."""

    def columns(rows: Sequence[Mapping[Any, Any]]) -> Mapping[str, Any]:
        ended = rows[-1]["at"] if len(rows) > 1 else None
        return {first: rows[0]["at"], "ended_at": ended}

    return staticmethod(columns)


class LossReportMachine(ProcessMachine):
    """One report that a citizen's identity card was lost. Withdrawn and closed are final."""

    reported = State("Reported", value=S.REPORTED, initial=True)
    withdrawn = State("Withdrawn", value=S.WITHDRAWN, final=True)
    closed = State("Closed", value=S.CLOSED, final=True)

    withdraw = reported.to(
        withdrawn,
        validators=[CARD_PRESENTED.validator, NO_REPLACEMENT_IN_PROGRESS.validator],
    )
    close = reported.to(closed, validators=[REPLACEMENT_COLLECTED.validator])

    creation_event: ClassVar[str | None] = "report"
    creation: ClassVar[Permission | None] = ANY_ACCEPTANCE_CLERK
    creation_facts = staticmethod(_report_facts)
    creation_guards = (HOLDER_IN_PERSON,)
    identity = ("citizen_id",)
    history_columns = ended_from_history("reported_at")
    rules: ClassVar[Mapping[str, EventRule]] = {
        "withdraw": EventRule(
            ANY_ACCEPTANCE_CLERK,
            WithdrawPayload,
            end_now,
            "The holder came back in person with the found card: the card is valid again. "
            "Refused while a replacement for the citizen is in progress.",
        ),
        "close": EventRule(
            ANY_ACCEPTANCE_CLERK,
            NoPayload,
            end_now,
            "A replacement card was collected: the lost card stays invalid for good.",
        ),
    }


LOSS_REPORT = Definition.of(LossReportMachine, name="loss_report")
"""The compiled definition of loss reports."""


class LossReportRepository(Repository):
    """Loss reports: the citizen's active one."""

    def __init__(self) -> None:
        super().__init__(LossReport.__table__, machine="loss_report")  # type: ignore[arg-type]

    def active_for(self, conn: Connection, citizen_id: str) -> RowMapping | None:
        t = self.table
        query = sa.select(t).where(t.c.citizen_id == citizen_id, sa.text(ACTIVE_LOSS_CONDITION))
        return conn.execute(query).mappings().first()

    def latest_not_withdrawn(self, conn: Connection, citizen_id: str) -> RowMapping | None:
        """The citizen's most recent report that is active or closed (not withdrawn)."""
        t = self.table
        query = (
            sa.select(t)
            .where(t.c.citizen_id == citizen_id, t.c.state != S.WITHDRAWN)
            .order_by(t.c.reported_at.desc())
            .limit(1)
        )
        return conn.execute(query).mappings().first()


REPOSITORY = LossReportRepository()


def loss_report_values(
    citizen_id: str, unit: str, now: datetime, application_id: uuid.UUID | None = None
) -> dict[str, Any]:
    """The columns of a new loss report, filed at ``unit`` (by an application, or not)."""
    return {
        "citizen_id": citizen_id,
        "reported_unit": unit,
        "application_id": application_id,
        "reported_at": now,
        "ended_at": None,
    }


def _replacement_collected(conn: Connection, report: Mapping[Any, Any]) -> Mapping[str, Any]:
    citizen = str(report["citizen_id"])
    return {"replacement_collected": application.REPOSITORY.replacement_collected(conn, citizen)}


def _replacement_in_progress(conn: Connection, report: Mapping[Any, Any]) -> Mapping[str, Any]:
    citizen = str(report["citizen_id"])
    return {
        "replacement_in_progress": application.REPOSITORY.replacement_in_progress(conn, citizen)
    }


def _withdrawn_during_a_replacement(conn: Connection, after: int) -> list[Finding]:
    rows = application.REPOSITORY.during_a_replacement(
        conn, REPOSITORY.table, "loss_report", "withdraw", after
    )
    return [
        (r, seq, "withdrawn while a replacement for the citizen was in progress") for r, seq in rows
    ]


def _filed_by_no_replacement_of_the_citizen(conn: Connection, after: int) -> list[Finding]:
    r = REPOSITORY.table
    a = application.REPOSITORY.table
    query = (
        sa.select(r.c.id)
        .select_from(r.outerjoin(a, a.c.id == r.c.application_id))
        .where(
            r.c.application_id.is_not(None),
            sa.or_(a.c.id.is_(None), a.c.citizen_id != r.c.citizen_id, a.c.kind != "replacement"),
        )
        .order_by(r.c.id)
    )
    return [
        (record_id, 1, "its application_id names no replacement application of the citizen")
        for (record_id,) in conn.execute(query)
    ]


AUDITS = (
    Audit(
        "withdrawn_during_a_replacement",
        "no report is withdrawn while a replacement for the citizen is in progress",
        _withdrawn_during_a_replacement,
    ),
    Audit(
        "filed_by_a_replacement_of_the_citizen",
        "a report filed by an application was filed by a replacement of the same citizen",
        _filed_by_no_replacement_of_the_citizen,
    ),
)


MACHINE: Machine[ReportLoss, LossReportView] = Machine(
    definition=LOSS_REPORT,
    repository=REPOSITORY,
    view=LossReportView,
    creation=Creation(
        argument=TypeAdapter(ReportLoss),
        values=lambda form, actor, now: loss_report_values(form.citizen_id, actor.unit, now),
        unique=Unique(
            exists=lambda conn, form: REPOSITORY.active_for(conn, form.citizen_id) is not None,
            refusal=lambda form: DuplicateLossReport(mask_citizen_id(form.citizen_id)),
            index="idcard_uq_loss_reports_active_citizen",
            column="idcard_loss_reports.citizen_id",
        ),
    ),
    serialised_by="citizen_id",
    noun="loss report",
    facts={"close": _replacement_collected, "withdraw": _replacement_in_progress},
    audits=AUDITS,
)
"""The loss-report machine as the engine runs it."""
