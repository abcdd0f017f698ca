"""Loss reports and found cards, on the same log, enforcement and outbox as applications.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from workflow.migrations import enforcement
from workflow.migrations.naming import name as n

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRANSITIONS = [
    ("loss_report", "withdraw", "reported", "withdrawn"),
    ("loss_report", "close", "reported", "closed"),
    ("found_card", "return_to_owner", "held", "returned"),
    ("found_card", "destroy", "held", "destroyed"),
]


def _allowed() -> sa.TableClause:
    return sa.table(
        n("allowed_transitions"),
        sa.column("machine", sa.String(32)),
        sa.column("event", sa.String(32)),
        sa.column("from_state", sa.String(32)),
        sa.column("to_state", sa.String(32)),
    )


def upgrade() -> None:
    op.create_table(
        n("loss_reports"),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("chain_head", sa.String(64), nullable=False),
        sa.Column("citizen_id", sa.String(18), nullable=False),
        sa.Column("reported_unit", sa.String(6), nullable=False),
        sa.Column("application_id", sa.Uuid(), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f(n("pk_loss_reports"))),
        sa.CheckConstraint(
            "state IN ('reported', 'withdrawn', 'closed')", name=op.f(n("ck_loss_reports_state"))
        ),
        sa.CheckConstraint("version >= 1", name=op.f(n("ck_loss_reports_version"))),
    )
    op.create_index(
        op.f(n("uq_loss_reports_active_citizen")),
        n("loss_reports"),
        ["citizen_id"],
        unique=True,
        sqlite_where=sa.text("state IN ('reported')"),
        postgresql_where=sa.text("state IN ('reported')"),
    )
    op.create_table(
        n("found_cards"),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("chain_head", sa.String(64), nullable=False),
        sa.Column("citizen_id", sa.String(18), nullable=False),
        sa.Column("held_unit", sa.String(6), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f(n("pk_found_cards"))),
        sa.CheckConstraint(
            "state IN ('held', 'returned', 'destroyed')", name=op.f(n("ck_found_cards_state"))
        ),
        sa.CheckConstraint("version >= 1", name=op.f(n("ck_found_cards_version"))),
    )
    op.create_index(op.f(n("ix_found_cards_citizen_id")), n("found_cards"), ["citizen_id"])
    op.create_index(op.f(n("ix_applications_citizen_id")), n("applications"), ["citizen_id"])

    enforcement.unfreeze_allowed_transitions()
    op.bulk_insert(
        _allowed(),
        [{"machine": m, "event": e, "from_state": f, "to_state": t} for m, e, f, t in TRANSITIONS],
    )
    enforcement.freeze_allowed_transitions()
    enforcement.guard_records("loss_reports", "loss_report", "reported")
    enforcement.guard_records("found_cards", "found_card", "held")


def downgrade() -> None:
    enforcement.unguard_records("found_cards")
    enforcement.unguard_records("loss_reports")
    # The records go with their tables, and so do their history, outbox and request rows.
    machines = "('loss_report', 'found_card')"
    enforcement.unguard_log()
    for table in ("transition_log", "outbox", "command_requests"):
        op.execute(f"DELETE FROM {n(table)} WHERE machine IN {machines}")
    enforcement.guard_log()
    enforcement.unfreeze_allowed_transitions()
    op.execute(f"DELETE FROM {n('allowed_transitions')} WHERE machine IN {machines}")
    enforcement.freeze_allowed_transitions()
    op.drop_index(op.f(n("ix_applications_citizen_id")), table_name=n("applications"))
    op.drop_index(op.f(n("ix_found_cards_citizen_id")), table_name=n("found_cards"))
    op.drop_table(n("found_cards"))
    op.drop_index(op.f(n("uq_loss_reports_active_citizen")), table_name=n("loss_reports"))
    op.drop_table(n("loss_reports"))
