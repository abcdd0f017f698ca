"""Errors raised by the library. All derive from `WorkflowError` and carry a stable ``code``.

After any of them but `ConnectionLost`, nothing in the database has changed; after
`ConnectionLost` the command may have taken effect, and a retry with the same ``request_id``
says which.
"""

from __future__ import annotations

from typing import ClassVar


class WorkflowError(Exception):
    """Root of every error the library raises on purpose."""

    code: ClassVar[str] = "workflow_error"


class NotFound(WorkflowError):
    """No record with that id."""

    code = "not_found"

    def __init__(self, record_id: object, *, machine: str = "application") -> None:
        self.record_id = record_id
        self.machine = machine
        super().__init__(f"no {machine} with id {record_id}")


class PermissionDenied(WorkflowError):
    """The actor's role may not fire this event, or its unit is not the record's."""

    code = "permission_denied"

    def __init__(self, event: str, role: str, reason: str) -> None:
        self.event = event
        self.role = role
        self.reason = reason
        super().__init__(f"{role} may not {event}: {reason}")


class IllegalTransition(WorkflowError):
    """The event is not allowed from the current state (or is no event of the machine)."""

    code = "illegal_transition"

    def __init__(self, event: str, state: str) -> None:
        self.event = event
        self.state = state
        super().__init__(f"{event!r} is not allowed in state {state!r}")


class GuardFailed(WorkflowError):
    """A condition of the event is not met; ``guard`` names it and ``rule`` says it in words."""

    code = "guard_failed"

    def __init__(self, event: str, guard: str, rule: str) -> None:
        self.event = event
        self.guard = guard
        self.rule = rule
        super().__init__(f"{event}: {guard} failed ({rule})")


class ConcurrentUpdate(WorkflowError):
    """Another writer changed the record first, or the database stayed busy; safe to retry."""

    code = "concurrent_update"

    def __init__(self, message: str = "another writer changed the record first; retry") -> None:
        super().__init__(message)


class DuplicateApplication(WorkflowError):
    """The citizen already has an application that is neither rejected nor collected."""

    code = "duplicate_application"

    def __init__(self, masked_citizen_id: str) -> None:
        self.masked_citizen_id = masked_citizen_id
        super().__init__(
            f"citizen {masked_citizen_id} already has an open application; "
            "it must be rejected or collected before another is submitted"
        )


class DuplicateLossReport(WorkflowError):
    """The citizen already has an active (reported) loss report."""

    code = "duplicate_loss_report"

    def __init__(self, masked_citizen_id: str) -> None:
        self.masked_citizen_id = masked_citizen_id
        super().__init__(f"citizen {masked_citizen_id} already has an active loss report")


class IdempotencyConflict(WorkflowError):
    """A ``request_id`` was reused for a different command (or target, actor or arguments)."""

    code = "idempotency_conflict"

    def __init__(self, request_id: str, command: str) -> None:
        self.request_id = request_id
        self.command = command
        super().__init__(
            f"request id {request_id!r} was already used for a different {command} command; "
            "use a new request id for a new command"
        )


NO_REVISION = "none (the library's tables are not installed)"
"""How a database without the library's revision is named: empty, or holding only other
programs' tables."""


class SchemaOutOfDate(WorkflowError):
    """The database is not at the revision this version of the library needs."""

    code = "schema_out_of_date"

    def __init__(self, current: str | None, head: str) -> None:
        self.current = current
        self.head = head
        super().__init__(
            f"the database is at revision {current or NO_REVISION}, this library needs {head}; "
            "run workflow.upgrade(<url or engine>) (or `idcard-workflow db upgrade`, or your "
            "Alembic pointed at the workflow.migrations package) first"
        )


class StorageError(WorkflowError):
    """The database failed in a way the library can't interpret; the cause is chained."""

    code = "storage_error"


class ConnectionLost(ConcurrentUpdate, StorageError):
    """The connection to the database was lost mid-command, or no writable server could be
    reached (a failover under way, a server restarting). Retry it, as any `ConcurrentUpdate`,
    once a server is back; but the command may have taken effect (its commit reached the
    server and the answer was lost), so retry it with the same ``request_id``: that returns
    the recorded answer instead of running it twice. A `StorageError` too, as database
    failures are, so a host that alerts on those still sees it."""

    code = "connection_lost"

    def __init__(
        self,
        message: str = "lost the connection to the database; the command may have taken "
        "effect: retry it with the same request_id",
    ) -> None:
        super().__init__(message)


class ConfigurationError(WorkflowError):
    """The library was set up wrongly (bind, clock); the message says how to fix it."""

    code = "configuration_error"


class NoDatabase(ConfigurationError):
    """The bind names a SQLite file that does not exist; nothing was created."""

    code = "no_database"

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"no database file at {path!r}: check the path, or create the database with "
            "workflow.upgrade(<url>) (`idcard-workflow db upgrade`) first"
        )


class MigrationError(WorkflowError):
    """A migration failed; the database was left at the revision it had before the command.

    Carries ``revision`` (the revision being applied, when known) and ``cause`` (what the
    database or Alembic reported, without statement parameters)."""

    code = "migration_failed"

    def __init__(self, revision: str | None, cause: str) -> None:
        self.revision = revision
        self.cause = cause
        where = f"revision {revision}" if revision else "the migration"
        super().__init__(f"{where} failed: {cause}; the database is unchanged")
