"""The statutory extension of the 60-day limit: extend_deadline, a self-transition.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Where transport is difficult the card's 60-day limit may be extended once, by at most 30 days.
The event keeps the application in its state (submitted, transmitted, approved or produced) and
moves ``due_at``; the database allows it as the rows added here.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from workflow.migrations import enforcement
from workflow.migrations.naming import name as n

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHILE_ON_ITS_WAY = ("submitted", "transmitted", "approved", "produced")


def _allowed() -> sa.TableClause:
    return sa.table(
        n("allowed_transitions"),
        sa.column("machine", sa.String(32)),
        sa.column("event", sa.String(32)),
        sa.column("from_state", sa.String(32)),
        sa.column("to_state", sa.String(32)),
    )


def upgrade() -> None:
    enforcement.unfreeze_allowed_transitions()
    op.bulk_insert(
        _allowed(),
        [
            {"machine": "application", "event": "extend_deadline", "from_state": s, "to_state": s}
            for s in WHILE_ON_ITS_WAY
        ],
    )
    enforcement.freeze_allowed_transitions()


def downgrade() -> None:
    used = (
        op.get_bind()
        .execute(
            sa.text(
                f"SELECT count(*) FROM {n('transition_log')} "
                "WHERE machine = 'application' AND event = 'extend_deadline'"
            )
        )
        .scalar()
    )
    if used:
        raise RuntimeError(
            f"{used} history rows record a deadline extension; the history is append-only, "
            "so this database can't go below revision 0007"
        )
    enforcement.unfreeze_allowed_transitions()
    op.execute(
        f"DELETE FROM {n('allowed_transitions')} "
        "WHERE machine = 'application' AND event = 'extend_deadline'"
    )
    enforcement.freeze_allowed_transitions()
