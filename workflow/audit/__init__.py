"""The audit report: one self-contained HTML page an auditor opens in a browser.

`build_report` gathers it from a database (`workflow.audit.report`: the processes, the
verification, the statutory deadlines, one record's path), `render` draws it as HTML
(`workflow.audit.page`), and ``idcard-workflow report`` does both (`workflow.audit.command`).
"""

from workflow.audit.page import SECTIONS, render
from workflow.audit.report import AuditReport, CheckpointResult, build_report

__all__ = ["SECTIONS", "AuditReport", "CheckpointResult", "build_report", "render"]
