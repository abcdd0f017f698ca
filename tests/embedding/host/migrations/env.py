"""The host's Alembic environment, as a host following docs/embedding.md writes it.

The library's tables live in the same database under their own prefix and version table; the
library's filters keep them out of the host's autogenerate and ``alembic check``.
HOST_ALEMBIC_FILTER picks the filters ("both", the default; "name"; "object"; "none" for the
tests' control run without them).
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any

import sqlalchemy as sa
from alembic import context

import workflow as wf
from models import Base

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

target_metadata = Base.metadata


def filters() -> dict[str, Any]:
    which = os.environ.get("HOST_ALEMBIC_FILTER", "both")
    chosen: dict[str, Any] = {}
    if which in ("both", "name"):
        chosen["include_name"] = wf.include_name
    if which in ("both", "object"):
        chosen["include_object"] = wf.include_object
    return chosen


def run_migrations_online() -> None:
    engine = sa.create_engine(os.environ["HOST_DATABASE_URL"])
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                **filters(),
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("the host runs its migrations online only")
run_migrations_online()
