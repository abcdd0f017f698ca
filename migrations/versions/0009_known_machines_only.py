"""The history takes rows of the library's machines only.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

A record's first history row (its creation) has no state before it, so the foreign key to
``idcard_allowed_transitions`` does not match it, and a writer could insert rows for a machine
the library does not know; the outbox trigger would even publish them. Such a row is now
refused: on PostgreSQL by the publishing function every row already runs through, on SQLite by
a trigger. Rows planted before stay, and `verify()` names them (``unknown_machine``); a
constraint validated here would make the upgrade of such a database fail instead, and one left
``NOT VALID`` breaks Alembic's autogenerate for the host.

The machines are listed here, frozen: a revision that adds a machine changes the list.
"""

from collections.abc import Sequence

from alembic import op

from workflow.migrations import enforcement
from workflow.migrations.enforcement import PREFIX
from workflow.migrations.naming import name as n

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MACHINES = ("application", "loss_report", "found_card")
MESSAGE = PREFIX + "the history takes rows of known machines only"


def _known() -> str:
    return "machine IN (" + ", ".join(f"'{m}'" for m in MACHINES) + ")"


def upgrade() -> None:
    log = n("transition_log")
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"CREATE TRIGGER {log}_known_machine BEFORE INSERT ON {log} "
            f"WHEN NOT (NEW.{_known()}) BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        )
        return
    enforcement.install_publish_function_for(MACHINES, MESSAGE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER {n('transition_log')}_known_machine")
        return
    enforcement.install_publish_function()
    schema = op.get_bind().exec_driver_sql("SELECT current_schema()").scalar()
    op.execute(f'ALTER FUNCTION idcard_publish() SET search_path = "{schema}", pg_temp')
