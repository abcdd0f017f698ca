"""Tables and schemas of idcard-workflow."""

from models.tables import Application, Base, TransitionLog

__all__ = ["Application", "Base", "TransitionLog"]
