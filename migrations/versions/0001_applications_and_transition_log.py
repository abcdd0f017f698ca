"""Applications and the append-only transition log.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Table definitions are frozen here on purpose: a migration must build the same schema however
the live models change later.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from workflow.migrations.naming import name as n

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = "'submitted', 'transmitted', 'approved', 'rejected', 'produced', 'ready', 'collected'"
OPEN = "state NOT IN ('rejected', 'collected')"
AWAITING_CARD = "state IN ('submitted', 'transmitted', 'approved', 'produced')"
AWAITING_REVIEW = "state IN ('transmitted')"


def upgrade() -> None:
    op.create_table(
        n("applications"),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("citizen_id", sa.String(18), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("hukou_region", sa.String(6), nullable=False),
        sa.Column("acceptance_region", sa.String(6), nullable=False),
        sa.Column("documents", sa.JSON(), nullable=False),
        sa.Column("fee_paid", sa.Numeric(8, 2), nullable=False),
        sa.Column("fee_waiver", sa.String(32), nullable=True),
        sa.Column("receipt_no", sa.String(32), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("review_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rejection_ground", sa.String(32), nullable=True),
        sa.Column("rejection_note", sa.Text(), nullable=True),
        sa.Column("old_card_returned", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(n("pk_applications"))),
        sa.UniqueConstraint("receipt_no", name=op.f(n("uq_applications_receipt_no"))),
        sa.CheckConstraint(f"state IN ({STATES})", name=op.f(n("ck_applications_state"))),
        sa.CheckConstraint(
            "kind IN ('renewal', 'damaged_renewal', 'replacement')",
            name=op.f(n("ck_applications_kind")),
        ),
        sa.CheckConstraint(
            "fee_waiver IS NULL OR fee_waiver IN ('minimum_subsistence', 'rural_hardship')",
            name=op.f(n("ck_applications_fee_waiver")),
        ),
        sa.CheckConstraint(
            "rejection_ground IS NULL OR rejection_ground IN ('first_application', "
            "'identity_mismatch', 'appearance_changed', 'document_fraud_record', "
            "'bad_credit_record', 'other')",
            name=op.f(n("ck_applications_rejection_ground")),
        ),
        sa.CheckConstraint("version >= 1", name=op.f(n("ck_applications_version"))),
    )
    op.create_index(
        op.f(n("uq_applications_open_citizen")),
        n("applications"),
        ["citizen_id"],
        unique=True,
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )
    op.create_index(
        op.f(n("ix_applications_overdue")),
        n("applications"),
        ["due_at"],
        sqlite_where=sa.text(AWAITING_CARD),
        postgresql_where=sa.text(AWAITING_CARD),
    )
    op.create_index(
        op.f(n("ix_applications_overdue_review")),
        n("applications"),
        ["review_due_at"],
        sqlite_where=sa.text(AWAITING_REVIEW),
        postgresql_where=sa.text(AWAITING_REVIEW),
    )
    op.create_table(
        n("transition_log"),
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("machine", sa.String(32), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(32), nullable=True),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("actor_role", sa.String(32), nullable=False),
        sa.Column("actor_unit", sa.String(6), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(n("pk_transition_log"))),
        sa.UniqueConstraint(
            "machine", "record_id", "seq", name=op.f(n("uq_transition_log_machine_record_id_seq"))
        ),
        sa.CheckConstraint("seq >= 1", name=op.f(n("ck_transition_log_seq"))),
    )


def downgrade() -> None:
    op.drop_table(n("transition_log"))
    op.drop_index(n("ix_applications_overdue_review"), table_name=n("applications"))
    op.drop_index(n("ix_applications_overdue"), table_name=n("applications"))
    op.drop_index(n("uq_applications_open_citizen"), table_name=n("applications"))
    op.drop_table(n("applications"))
