"""PostgreSQL checks and publishes once per statement, not once per row.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

The same rules, refused with the same messages, but run once per statement over every row it
changed (a trigger with transition tables) instead of once per row:

- the history's publishing trigger checks that every row added is of a known machine, then
  writes their outbox rows in one INSERT, in the rows' order;
- a state table's UPDATE is checked as a whole: every row changed keeps its id, bumps its
  version by one and makes an allowed transition. New records are still checked row by row.

A bulk command moves a chunk of records with one statement and appends their history with
another, so each check now runs twice per chunk rather than twice per record. SQLite has no
statement-level triggers: its triggers are unchanged.
"""

from collections.abc import Sequence

from alembic import op

from workflow.migrations import enforcement
from workflow.migrations.enforcement import PREFIX

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here, as in revision 0009: the machines, their tables and initial states.
MACHINES = ("application", "loss_report", "found_card")
UNKNOWN_MACHINE = PREFIX + "the history takes rows of known machines only"
STATE_TABLES = (
    ("applications", "application", "submitted"),
    ("loss_reports", "loss_report", "reported"),
    ("found_cards", "found_card", "held"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    enforcement.install_statement_functions(MACHINES, UNKNOWN_MACHINE)
    enforcement.publish_added()
    for table, machine, initial in STATE_TABLES:
        enforcement.guard_moves(table, machine, initial)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, machine, initial in STATE_TABLES:
        enforcement.guard_each_move(table, machine, initial)
    enforcement.publish_each_row(MACHINES, UNKNOWN_MACHINE)
    enforcement.drop_statement_functions()
