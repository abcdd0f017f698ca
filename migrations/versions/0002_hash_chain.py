"""Hash chain over each record's history: transition_log.hash and applications.chain_head.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Rows already in the log are chained in seq order by the same rule as `workflow.engine.chain`, frozen
here so that this revision computes the same hashes whatever the library does later.
"""

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from workflow.migrations.naming import name as n

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIELDS = (
    "machine",
    "record_id",
    "seq",
    "event",
    "from_state",
    "to_state",
    "actor_id",
    "actor_role",
    "actor_unit",
    "at",
    "details",
)


def _log() -> sa.TableClause:
    return sa.table(
        n("transition_log"),
        sa.column("id", sa.Integer()),
        *(sa.column(name) for name in FIELDS if name not in {"at", "details", "record_id"}),
        sa.column("record_id", sa.Uuid()),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("details", sa.JSON()),
        sa.column("hash", sa.String(64)),
    )


def _applications() -> sa.TableClause:
    return sa.table(
        n("applications"), sa.column("id", sa.Uuid()), sa.column("chain_head", sa.String(64))
    )


def _hash(row: dict[str, object], previous: str) -> str:
    content = {name: row[name] for name in FIELDS}
    at = content["at"]
    assert isinstance(at, datetime)
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    content["at"] = at.isoformat(timespec="microseconds")
    content["record_id"] = str(content["record_id"])
    content["previous"] = previous
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table(n("transition_log")) as batch:
        batch.add_column(sa.Column("hash", sa.String(64), nullable=True))
    with op.batch_alter_table(n("applications")) as batch:
        batch.add_column(sa.Column("chain_head", sa.String(64), nullable=True))

    conn = op.get_bind()
    log, applications = _log(), _applications()
    heads: dict[tuple[str, object], str] = {}
    rows = (
        conn.execute(sa.select(log).order_by(log.c.machine, log.c.record_id, log.c.seq))
        .mappings()
        .all()
    )
    for row in rows:
        key = (row["machine"], row["record_id"])
        digest = _hash(dict(row), heads.get(key, ""))
        heads[key] = digest
        conn.execute(sa.update(log).where(log.c.id == row["id"]).values(hash=digest))
    for (machine, record_id), digest in heads.items():
        if machine == "application":
            conn.execute(
                sa.update(applications)
                .where(applications.c.id == record_id)
                .values(chain_head=digest)
            )

    with op.batch_alter_table(n("transition_log")) as batch:
        batch.alter_column("hash", existing_type=sa.String(64), nullable=False)
    with op.batch_alter_table(n("applications")) as batch:
        batch.alter_column("chain_head", existing_type=sa.String(64), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table(n("applications")) as batch:
        batch.drop_column("chain_head")
    with op.batch_alter_table(n("transition_log")) as batch:
        batch.drop_column("hash")
