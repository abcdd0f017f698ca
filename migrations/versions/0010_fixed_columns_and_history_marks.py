"""Fixed columns never change, outbox events are only acknowledged, history marks.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

- A record's fixed columns (who it is for, what was applied for, where, when) are set when it
  is created and never change: an UPDATE that changes one is refused, on both databases. On
  SQLite this also refuses an ``UPDATE OR REPLACE`` that would take another record's receipt
  number and so delete that record.
- An outbox row changes only by being acknowledged (``acked_at``): a pending event can't be
  rewritten into another one before it is relayed.
- SQLite: an ``INSERT OR REPLACE`` that would replace a record through any of its unique keys
  (the receipt number, the citizen's one open application or active loss report), or an outbox
  row, is refused; revision 0008 refused it through the id only.
- ``idcard_history_marks`` keeps the last history row written before this revision: the
  library that needs it records, in every row after that one, the identity digest of a new
  record, the identity check of a loss report and the replacement check of a withdrawal, so a
  later row without them is not one the library wrote. The table is frozen.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from workflow.migrations.enforcement import PREFIX
from workflow.migrations.naming import name as n

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIXED = {
    "applications": (
        "id",
        "kind",
        "citizen_id",
        "name",
        "hukou_region",
        "acceptance_region",
        "documents",
        "fee_paid",
        "fee_waiver",
        "receipt_no",
        "submitted_at",
    ),
    "loss_reports": ("id", "citizen_id", "reported_unit", "application_id", "reported_at"),
    "found_cards": ("id", "citizen_id", "held_unit", "registered_at"),
}
OUTBOX_FIXED = ("id", "machine", "record_id", "seq", "event", "state", "at")
FIXED_MESSAGE = PREFIX + "the fixed columns of a record never change"
OUTBOX_MESSAGE = PREFIX + "an outbox event changes only by being acknowledged"
FROZEN_MESSAGE = PREFIX + "history marks are written by migrations only"
REPLACE_MESSAGE = PREFIX + "a record is never replaced"
# SQLite: the unique keys besides the id through which INSERT OR REPLACE could delete a row:
# (table, the key's column, when a row already holds the new row's key). Each refusal names
# the column as SQLite's own unique error does, so the library still reads a racing duplicate
# as the refusal it means (DuplicateApplication, ...).
REPLACED_THROUGH = (
    ("applications", "receipt_no", "o.receipt_no = NEW.receipt_no"),
    (
        "applications",
        "citizen_id",
        "o.citizen_id = NEW.citizen_id AND o.state NOT IN ('rejected', 'collected') "
        "AND NEW.state NOT IN ('rejected', 'collected')",
    ),
    (
        "loss_reports",
        "citizen_id",
        "o.citizen_id = NEW.citizen_id AND o.state = 'reported' AND NEW.state = 'reported'",
    ),
)


def _changed(columns: Sequence[str], sqlite: bool) -> str:
    if sqlite:
        return " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in columns)
    # json has no equality operator: compare its text.
    return " OR ".join(
        f"NEW.{c}::text IS DISTINCT FROM OLD.{c}::text"
        if c == "documents"
        else f"NEW.{c} IS DISTINCT FROM OLD.{c}"
        for c in columns
    )


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, columns in FIXED.items():
        _refuse_update(n(table), f"{n(table)}_fixed", columns, FIXED_MESSAGE, sqlite)
    _refuse_update(
        n("outbox"), f"{n('outbox')}_acknowledged_only", OUTBOX_FIXED, OUTBOX_MESSAGE, sqlite
    )
    if sqlite:
        for table, column, holds in REPLACED_THROUGH:
            t = n(table)
            op.execute(
                f"CREATE TRIGGER {t}_no_replace_by_{column} BEFORE INSERT ON {t} "
                f"WHEN EXISTS (SELECT 1 FROM {t} o WHERE {holds}) "
                f"BEGIN SELECT RAISE(ABORT, '{REPLACE_MESSAGE}: {t}.{column} is taken'); END"
            )
        outbox = n("outbox")
        op.execute(
            f"CREATE TRIGGER {outbox}_no_replace BEFORE INSERT ON {outbox} "
            f"WHEN EXISTS (SELECT 1 FROM {outbox} o WHERE o.id = NEW.id OR (o.machine = "
            "NEW.machine AND o.record_id = NEW.record_id AND o.seq = NEW.seq)) "
            f"BEGIN SELECT RAISE(ABORT, '{OUTBOX_MESSAGE}'); END"
        )
    marks = n("history_marks")
    op.create_table(
        marks,
        sa.Column("revision", sa.String(32), nullable=False),
        sa.Column("last_row", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("revision", name=n("pk_history_marks")),
    )
    op.execute(
        f"INSERT INTO {marks} (revision, last_row) "
        f"SELECT '0010', COALESCE(MAX(id), 0) FROM {n('transition_log')}"
    )
    if sqlite:
        for action in ("INSERT", "UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {marks}_no_{action.lower()} BEFORE {action} ON {marks} "
                f"BEGIN SELECT RAISE(ABORT, '{FROZEN_MESSAGE}'); END"
            )
    else:
        op.execute(
            f"CREATE TRIGGER {marks}_frozen BEFORE INSERT OR UPDATE OR DELETE ON {marks} "
            f"FOR EACH ROW EXECUTE FUNCTION idcard_refuse('{FROZEN_MESSAGE}')"
        )
        op.execute(
            f"CREATE TRIGGER {marks}_no_truncate BEFORE TRUNCATE ON {marks} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION idcard_refuse('{FROZEN_MESSAGE}')"
        )


def _refuse_update(
    table: str, trigger: str, columns: Sequence[str], message: str, sqlite: bool
) -> None:
    listed = ", ".join(columns)
    if sqlite:
        op.execute(
            f"CREATE TRIGGER {trigger} BEFORE UPDATE OF {listed} ON {table} "
            f"WHEN {_changed(columns, True)} BEGIN SELECT RAISE(ABORT, '{message}'); END"
        )
        return
    op.execute(
        f"CREATE TRIGGER {trigger} BEFORE UPDATE OF {listed} ON {table} FOR EACH ROW "
        f"WHEN ({_changed(columns, False)}) EXECUTE FUNCTION idcard_refuse('{message}')"
    )


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.drop_table(n("history_marks"))  # its triggers go with it
    for table in (*FIXED, "outbox"):
        t = n(table)
        trigger = f"{t}_acknowledged_only" if table == "outbox" else f"{t}_fixed"
        op.execute(f"DROP TRIGGER {trigger}" if sqlite else f"DROP TRIGGER {trigger} ON {t}")
    if sqlite:
        op.execute(f"DROP TRIGGER {n('outbox')}_no_replace")
        for table, column, _ in REPLACED_THROUGH:
            op.execute(f"DROP TRIGGER {n(table)}_no_replace_by_{column}")
