"""Tables and schemas of idcard-workflow."""

from workflow.models.tables import (
    AllowedTransition,
    Application,
    Base,
    CommandRequest,
    FoundCard,
    LossReport,
    OutboxEvent,
    TransitionLog,
)

__all__ = [
    "AllowedTransition",
    "Application",
    "Base",
    "CommandRequest",
    "FoundCard",
    "LossReport",
    "OutboxEvent",
    "TransitionLog",
]
