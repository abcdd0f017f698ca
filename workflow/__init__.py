"""idcard-workflow: remote acceptance of resident identity cards as a persisted state machine.

The public API; see ``docs/embedding.md``.
"""

from workflow.aio import AsyncWorkflow
from workflow.engine.migrate import (
    current_revision,
    downgrade,
    head_revision,
    include_name,
    include_object,
    upgrade,
)
from workflow.engine.store import create_engine
from workflow.engine.verification import BrokenRecord, VerificationReport
from workflow.errors import (
    ConcurrentUpdate,
    ConfigurationError,
    ConnectionLost,
    DuplicateApplication,
    DuplicateLossReport,
    GuardFailed,
    IdempotencyConflict,
    IllegalTransition,
    MigrationError,
    NoDatabase,
    NotFound,
    PermissionDenied,
    SchemaOutOfDate,
    StorageError,
    WorkflowError,
)
from workflow.machines.application import APPLICATION, ApplicationMachine
from workflow.machines.found_card import FOUND_CARD, FoundCardMachine
from workflow.machines.loss_report import LOSS_REPORT, LossReportMachine
from workflow.models import Base
from workflow.models.enums import (
    Document,
    FeeWaiver,
    FoundCardState,
    Kind,
    LossReportState,
    RejectionGround,
    Role,
    State,
)
from workflow.models.schemas import (
    Actor,
    ApplicationView,
    BulkRefusal,
    BulkReport,
    Condition,
    EventOption,
    Explanation,
    ExtendPayload,
    FoundCardView,
    LossReportView,
    PendingEvent,
    Reason,
    ReportLoss,
    SubmitApplication,
    TransitionRecord,
)
from workflow.models.tables import TABLE_PREFIX, VERSION_TABLE
from workflow.service import MACHINES, Handle, Workflow

__all__ = [
    "APPLICATION",
    "FOUND_CARD",
    "LOSS_REPORT",
    "MACHINES",
    "TABLE_PREFIX",
    "VERSION_TABLE",
    "Actor",
    "ApplicationMachine",
    "ApplicationView",
    "AsyncWorkflow",
    "Base",
    "BrokenRecord",
    "BulkRefusal",
    "BulkReport",
    "ConcurrentUpdate",
    "Condition",
    "ConfigurationError",
    "ConnectionLost",
    "Document",
    "DuplicateApplication",
    "DuplicateLossReport",
    "EventOption",
    "Explanation",
    "ExtendPayload",
    "FeeWaiver",
    "FoundCardMachine",
    "FoundCardState",
    "FoundCardView",
    "GuardFailed",
    "Handle",
    "IdempotencyConflict",
    "IllegalTransition",
    "Kind",
    "LossReportMachine",
    "LossReportState",
    "LossReportView",
    "MigrationError",
    "NoDatabase",
    "NotFound",
    "PendingEvent",
    "PermissionDenied",
    "Reason",
    "RejectionGround",
    "ReportLoss",
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
    "include_name",
    "include_object",
    "upgrade",
]
