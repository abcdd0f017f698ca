"""Triggers that a temporary table or INSERT OR REPLACE can't get round.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

- PostgreSQL: the trigger functions look tables up by name, and a session's temporary tables
  come first in its search path unless told otherwise, so a writer could shadow
  ``idcard_allowed_transitions`` or ``idcard_outbox`` with a TEMP table of its own. Each
  function now runs with a fixed search path: the schema it was created in, then ``pg_temp``
  last.
- SQLite: ``INSERT OR REPLACE`` deletes the row it replaces without firing its DELETE
  triggers, so it could rewrite a history row or rebuild a record under its own history.
  An insert that would replace a row of the log or of a state table is refused.
"""

from collections.abc import Sequence

from alembic import op

from workflow.migrations.enforcement import APPEND_ONLY, PREFIX
from workflow.migrations.naming import name as n

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTIONS = ("idcard_refuse()", "idcard_guard_record()", "idcard_publish()")
STATE_TABLES = ("applications", "loss_reports", "found_cards")


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
        for function in FUNCTIONS:
            op.execute(f'ALTER FUNCTION {function} SET search_path = "{schema}", pg_temp')
        return
    log = n("transition_log")
    op.execute(
        f"CREATE TRIGGER {log}_no_replace BEFORE INSERT ON {log} "
        f"WHEN EXISTS (SELECT 1 FROM {log} o WHERE o.id = NEW.id OR (o.machine = NEW.machine "
        "AND o.record_id = NEW.record_id AND o.seq = NEW.seq)) "
        f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
    )
    for table in map(n, STATE_TABLES):
        op.execute(
            f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "
            f"WHEN EXISTS (SELECT 1 FROM {table} o WHERE o.id = NEW.id) "
            f"BEGIN SELECT RAISE(ABORT, '{PREFIX}a record is never replaced'); END"
        )


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        for function in FUNCTIONS:
            op.execute(f"ALTER FUNCTION {function} RESET search_path")
        return
    for table in map(n, ("transition_log", *STATE_TABLES)):
        op.execute(f"DROP TRIGGER {table}_no_replace")
