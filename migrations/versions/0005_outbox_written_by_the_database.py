"""The database writes each history row's outbox row itself.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

An AFTER INSERT trigger on transition_log inserts the outbox row, so no writer of the log can
leave an event out, and a command makes one statement fewer.
"""

from collections.abc import Sequence

from workflow.migrations import enforcement

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    enforcement.publish_log()


def downgrade() -> None:
    enforcement.unpublish_log()
