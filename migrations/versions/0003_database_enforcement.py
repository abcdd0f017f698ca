"""The database refuses illegal transitions; idempotent requests; the outbox.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

- allowed_transitions, filled with the application machine's transitions as literal rows;
- the log's (machine, event, from, to) references it; triggers make the log append-only,
  refuse a log row that is not an allowed transition, and refuse any change to an application
  that is not an allowed (from, to) pair bumping the version by one;
- command_requests for commands carrying a request_id, and the outbox.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from workflow.migrations import enforcement
from workflow.migrations.naming import name as n

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPLICATION_TRANSITIONS = [
    ("application", "transmit", "submitted", "transmitted"),
    ("application", "approve", "transmitted", "approved"),
    ("application", "reject", "transmitted", "rejected"),
    ("application", "produce", "approved", "produced"),
    ("application", "mark_ready", "produced", "ready"),
    ("application", "collect", "ready", "collected"),
]


def upgrade() -> None:
    allowed = op.create_table(
        n("allowed_transitions"),
        sa.Column("machine", sa.String(32), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(32), nullable=False),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint(
            "machine", "event", "from_state", "to_state", name=op.f(n("pk_allowed_transitions"))
        ),
    )
    op.bulk_insert(
        allowed,
        [
            {"machine": m, "event": e, "from_state": f, "to_state": t}
            for m, e, f, t in APPLICATION_TRANSITIONS
        ],
    )
    with op.batch_alter_table(n("transition_log")) as batch:
        batch.create_check_constraint(
            op.f(n("ck_transition_log_creation_first")), "(seq = 1) = (from_state IS NULL)"
        )
        batch.create_foreign_key(
            n("fk_transition_log_allowed_transitions"),
            n("allowed_transitions"),
            ["machine", "event", "from_state", "to_state"],
            ["machine", "event", "from_state", "to_state"],
        )
    op.create_table(
        n("command_requests"),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("machine", sa.String(32), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("command", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f(n("pk_command_requests"))),
    )
    op.create_table(
        n("outbox"),
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
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f(n("pk_outbox"))),
        sa.UniqueConstraint(
            "machine", "record_id", "seq", name=op.f(n("uq_outbox_machine_record_id_seq"))
        ),
    )
    op.create_index(
        op.f(n("ix_outbox_pending")),
        n("outbox"),
        ["id"],
        sqlite_where=sa.text("acked_at IS NULL"),
        postgresql_where=sa.text("acked_at IS NULL"),
    )
    # Transitions recorded before this revision reach the outbox as already delivered.
    op.execute(
        f"INSERT INTO {n('outbox')} (machine, record_id, seq, event, state, at, acked_at) "
        f"SELECT machine, record_id, seq, event, to_state, at, at FROM {n('transition_log')}"
    )
    enforcement.install_functions()
    enforcement.freeze_allowed_transitions()
    enforcement.guard_log()
    enforcement.guard_records("applications", "application", "submitted")


def downgrade() -> None:
    enforcement.unguard_records("applications")
    enforcement.unguard_log()
    enforcement.unfreeze_allowed_transitions()
    enforcement.drop_functions()
    op.drop_index(op.f(n("ix_outbox_pending")), table_name=n("outbox"))
    op.drop_table(n("outbox"))
    op.drop_table(n("command_requests"))
    with op.batch_alter_table(n("transition_log")) as batch:
        batch.drop_constraint(n("fk_transition_log_allowed_transitions"), type_="foreignkey")
        batch.drop_constraint(op.f(n("ck_transition_log_creation_first")), type_="check")
    op.drop_table(n("allowed_transitions"))
