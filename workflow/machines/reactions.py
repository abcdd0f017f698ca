"""The rules that join the three systems, declared once.

Each `Reaction` says: after this event of this machine, do that, in the same transaction. The
engine runs them for every path (a named command, `fire`, `fire_many`), and the generated
documents and the auditor's guide list them from this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

from workflow.engine.registry import Reaction
from workflow.machines import loss_report
from workflow.models.enums import Kind
from workflow.models.schemas import Actor, NoPayload, ReportLoss, WithdrawPayload

if TYPE_CHECKING:
    from workflow.engine.runner import Runner


def _file_loss_report(
    runners: Mapping[str, Runner], conn: Connection, application: Mapping[str, Any], actor: Actor
) -> None:
    if application["kind"] != Kind.REPLACEMENT:
        return
    citizen = str(application["citizen_id"])
    if loss_report.REPOSITORY.active_for(conn, citizen) is not None:
        return
    now = application["submitted_at"]
    values = loss_report.loss_report_values(citizen, actor.unit, now, application["id"])
    # The replacement was applied for in person at the counter, identity checked.
    form = ReportLoss(citizen_id=citizen, identity_checked=True)
    runners[loss_report.LOSS_REPORT.name].create_in(
        conn, values, actor=actor, now=now, arguments=form
    )


def _close_loss_report(
    runners: Mapping[str, Runner], conn: Connection, application: Mapping[str, Any], actor: Actor
) -> None:
    if application["kind"] != Kind.REPLACEMENT:
        return
    report = loss_report.REPOSITORY.active_for(conn, str(application["citizen_id"]))
    if report is not None:
        runners[loss_report.LOSS_REPORT.name].fire_in(
            conn, report["id"], "close", actor=actor, arguments=NoPayload()
        )


def _withdraw_loss_report(
    runners: Mapping[str, Runner], conn: Connection, card: Mapping[str, Any], actor: Actor
) -> None:
    report = loss_report.REPOSITORY.active_for(conn, str(card["citizen_id"]))
    if report is not None:
        runners[loss_report.LOSS_REPORT.name].fire_in(
            conn,
            report["id"],
            "withdraw",
            actor=actor,
            arguments=WithdrawPayload(card_presented=True),
        )


REACTIONS: tuple[Reaction, ...] = (
    Reaction(
        machine="application",
        event="submit",
        when="the application is for a replacement",
        does="files a loss report for the citizen, unless one is active: applying for a "
        "replacement counts as reporting the loss",
        run=_file_loss_report,
    ),
    Reaction(
        machine="application",
        event="collect",
        when="the application is for a replacement",
        does="closes the citizen's active loss report: the lost card stays invalid for good",
        run=_close_loss_report,
    ),
    Reaction(
        machine="found_card",
        event="return_to_owner",
        when="the owner has an active loss report",
        does="withdraws it: the card is valid again",
        run=_withdraw_loss_report,
    ),
)
"""Every rule between machines: (machine, event) and what follows in the same transaction."""
