"""idcard-workflow: remote acceptance of resident identity cards as a persisted state machine.

The public API; see ``docs/embedding.md``.
"""

from models import Base
from models.enums import Document, FeeWaiver, Kind, RejectionGround, Role, State
from models.schemas import (
    Actor,
    ApplicationView,
    Condition,
    EventOption,
    Explanation,
    PendingEvent,
    Reason,
    SubmitApplication,
    TransitionRecord,
)
from workflow.db import current_revision, downgrade, head_revision, upgrade
from workflow.errors import (
    ConcurrentUpdate,
    ConfigurationError,
    DuplicateApplication,
    GuardFailed,
    IdempotencyConflict,
    IllegalTransition,
    NotFound,
    PermissionDenied,
    SchemaOutOfDate,
    StorageError,
    WorkflowError,
)
from workflow.machine import APPLICATION, ApplicationMachine
from workflow.service import Workflow
from workflow.store import create_engine
from workflow.verification import BrokenRecord, VerificationReport

__all__ = [
    "APPLICATION",
    "Actor",
    "ApplicationMachine",
    "ApplicationView",
    "Base",
    "BrokenRecord",
    "ConcurrentUpdate",
    "Condition",
    "ConfigurationError",
    "Document",
    "DuplicateApplication",
    "EventOption",
    "Explanation",
    "FeeWaiver",
    "GuardFailed",
    "IdempotencyConflict",
    "IllegalTransition",
    "Kind",
    "NotFound",
    "PendingEvent",
    "PermissionDenied",
    "Reason",
    "RejectionGround",
    "Role",
    "SchemaOutOfDate",
    "State",
    "StorageError",
    "SubmitApplication",
    "TransitionRecord",
    "VerificationReport",
    "Workflow",
    "WorkflowError",
    "create_engine",
    "current_revision",
    "downgrade",
    "head_revision",
    "upgrade",
]
