"""What the audit report says, gathered from a database: plain data, then drawn by `render`.

Everything comes through the library's public API (`Workflow.verify`, `Workflow.history`, the
handles' ``get``) or read-only SQL over the library's own tables (`workflow.models.tables`).
The statistics are SQL aggregates (``GROUP BY``, ``CASE``): the report reads a few rows per
county, ground and histogram bucket, never every record, so it runs in constant memory on any
number of applications.

Personal data: citizen numbers are masked (`mask_citizen_id`) wherever one is shown; names,
receipt numbers and refusal notes are never read.
"""

from __future__ import annotations

import importlib.metadata
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, Protocol, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

import workflow as wf
from workflow import diagrams
from workflow.diagrams.model import Diagram, extract, path_of
from workflow.engine.checkpoint import Checkpoint
from workflow.engine.definition import Definition
from workflow.engine.verification import PROBLEMS
from workflow.machines import REGISTRY
from workflow.machines.application import ISSUE_WITHIN, REVIEW_WITHIN
from workflow.models.citizen_id import mask_citizen_id
from workflow.models.enums import RejectionGround
from workflow.models.tables import (
    AWAITING_CARD_STATES,
    Application,
    TransitionLog,
)

# ---------------------------------------------------------------------------------------------
# The checkpoint comparison: drawn when given, built elsewhere


@runtime_checkable
class SupportsModelDump(Protocol):
    """A pydantic model (or anything with ``model_dump``)."""

    def model_dump(self, *, mode: str = ...) -> dict[str, Any]: ...


CheckpointResult = Mapping[str, Any] | SupportsModelDump
"""The result of comparing the history with a checkpoint (``verify --since``), as the
checkpoint code returns it: a pydantic model or a mapping. The report draws any such result:
its ``ok`` (when present) as the verdict, its plain fields as a list, and its lists of objects
(e.g. the records that differ) as tables."""


def checkpoint_data(result: CheckpointResult) -> dict[str, Any]:
    """The comparison as JSON-ready data, its verdict (an ``ok`` property) included."""
    if isinstance(result, SupportsModelDump):
        data = result.model_dump(mode="json")
        ok = getattr(result, "ok", None)
        return {"ok": ok, **data} if isinstance(ok, bool) else data
    return dict(result)


# ---------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class Process:
    """One machine as the code runs it: its diagram (with who may fire each arrow) and SVG."""

    name: str
    noun: str
    diagram: Diagram
    svg: str


@dataclass(frozen=True)
class CountyLine:
    """One county's applications and how many are late now."""

    county: str
    applications: int
    cards_overdue: int
    """Card not ready after ``due_at`` (60 days, plus any extension)."""
    reviews_overdue: int
    """Transmitted and undecided after ``review_due_at`` (5 days)."""


@dataclass(frozen=True)
class Bucket:
    label: str
    count: int
    over_limit: bool
    """The bucket lies beyond the statutory limit."""


@dataclass(frozen=True)
class Distribution:
    """How long a step took, in days: a histogram with the statutory limit marked."""

    title: str
    limit_days: int
    buckets: tuple[Bucket, ...]
    count: int
    mean_days: float | None
    max_days: float | None
    past_due: int
    """How many took longer than their own due date (which counts an extension)."""


@dataclass(frozen=True)
class Deadlines:
    as_of: datetime
    by_acceptance: tuple[CountyLine, ...]
    by_hukou: tuple[CountyLine, ...]
    cards_overdue: int
    reviews_overdue: int
    extended: int
    """Applications whose 60 days were extended (``extend_deadline``)."""
    review_times: Distribution
    issue_times: Distribution
    refusals: tuple[tuple[str, int], ...]
    """Refused applications by ground, every ground listed."""


@dataclass(frozen=True)
class HistoryLine:
    seq: int
    event: str
    from_state: str | None
    to_state: str
    actor_id: str
    actor_role: str
    actor_unit: str
    at: datetime
    details: dict[str, Any]


@dataclass(frozen=True)
class RecordPath:
    """One record: what it is, its path drawn on its machine's diagram, its history."""

    machine: str
    noun: str
    record_id: uuid.UUID
    fingerprint: str
    facts: tuple[tuple[str, str], ...]
    """Its columns as shown: citizen number masked, no name, receipt or note."""
    history: tuple[HistoryLine, ...]
    svg: str
    path_problem: str | None
    """Why the path could not be drawn (the history is not a path of the machine), or None."""


@dataclass(frozen=True)
class AuditReport:
    generated_at: datetime
    library_version: str
    database: str
    """The backend's name (``sqlite``, ``postgresql``): never the URL, which may hold a password."""
    revision: str | None
    processes: tuple[Process, ...]
    verification: wf.VerificationReport
    deadlines: Deadlines
    record: RecordPath | None = None
    checkpoint: dict[str, Any] | None = None
    problems: Mapping[str, str] = field(default_factory=lambda: dict(PROBLEMS))


# ---------------------------------------------------------------------------------------------
# Building it


def build_report(
    bind: str | Engine,
    *,
    record_id: uuid.UUID | None = None,
    as_of: datetime | None = None,
    since: Checkpoint | None = None,
    public_key: Any = None,
    checkpoint: CheckpointResult | None = None,
    clock: Callable[[], datetime] | None = None,
) -> AuditReport:
    """Gather the report from the database at ``bind`` (a URL or an `Engine`, which is left
    open). ``as_of`` is the moment the deadlines are judged at (default: now); ``record_id``
    adds that record's path and history (`wf.NotFound` when no machine has it).

    With ``since`` (a `Checkpoint`, its signature checked with ``public_key`` when given) the
    verification is ``verify(since=...)``: whether the history extends the checkpoint, then
    the records changed after it replayed; its comparison is the report's checkpoint section.
    ``checkpoint`` draws another comparison result in that section instead."""
    engine = sa.create_engine(bind) if isinstance(bind, str) else bind
    try:
        now = (clock or (lambda: datetime.now(UTC)))()
        moment = (as_of or now).astimezone(UTC)
        with wf.Workflow(engine) as flow:
            if since is None:
                verification = flow.verify()
            else:
                verification = flow.verify(since=since, public_key=public_key)
                checkpoint = checkpoint or verification.checkpoint
            record = None if record_id is None else _record(flow, record_id)
        with engine.connect() as conn:
            deadlines = _deadlines(conn, moment)
        return AuditReport(
            generated_at=now,
            library_version=_version(),
            database=engine.dialect.name,
            revision=wf.current_revision(engine),
            processes=tuple(_process(m.name, m.noun, m.definition) for m in REGISTRY),
            verification=verification,
            deadlines=deadlines,
            record=record,
            checkpoint=None if checkpoint is None else checkpoint_data(checkpoint),
        )
    finally:
        if isinstance(bind, str):
            engine.dispose()


def _version() -> str:
    try:
        return importlib.metadata.version("idcard-workflow")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


def _process(name: str, noun: str, definition: Definition) -> Process:
    return Process(name, noun, extract(definition), diagrams.svg(definition))


# -- one record -------------------------------------------------------------------------------

_HIDDEN = frozenset({"name", "receipt_no", "rejection_note", "chain_head"})
"""Columns of a record's view the report never shows: personal data, and the chain head (its
history's last hash, shown with the history)."""


def _record(flow: wf.Workflow, record_id: uuid.UUID) -> RecordPath:
    for machine in REGISTRY:
        handle = flow.handle(machine.name)
        try:
            view = handle.get(record_id)
        except wf.NotFound:
            continue
        history = handle.history(record_id)
        steps = path_of(history)
        definition = machine.definition
        problem = None
        try:
            drawn = diagrams.svg(definition, path=steps, record_id=record_id)
        except ValueError as exc:  # a damaged history: verify names it; draw the machine alone
            problem = str(exc)
            drawn = diagrams.svg(definition)
        data = view.model_dump(mode="json")
        facts = tuple(
            (key, mask_citizen_id(str(value)) if key == "citizen_id" else _shown(value))
            for key, value in data.items()
            if key not in _HIDDEN and key != "id"
        )
        return RecordPath(
            machine=machine.name,
            noun=machine.noun,
            record_id=view.id,
            fingerprint=diagrams.fingerprint(definition),
            facts=facts,
            history=tuple(
                HistoryLine(
                    r.seq,
                    str(r.event),
                    None if r.from_state is None else str(r.from_state),
                    str(r.to_state),
                    r.actor_id,
                    str(r.actor_role),
                    r.actor_unit,
                    r.at,
                    dict(r.details),
                )
                for r in history
            ),
            svg=drawn,
            path_problem=problem,
        )
    raise wf.NotFound(record_id, machine="record")


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


# -- the statutory deadlines ------------------------------------------------------------------

APPLICATION_MACHINE = wf.APPLICATION.name
CREATED, TRANSMITTED, DECIDED, READY = "submit", "transmit", ("approve", "reject"), "mark_ready"
"""The application machine's events the times are measured between (a test checks they are
its events)."""
EXTENDED = "extend_deadline"

REVIEW_BOUNDS = (1, 2, 3, 4, 5, 10, 30)
"""The edges (days) of the review-time buckets: a day each up to the 5-day limit."""
ISSUE_BOUNDS = (10, 20, 30, 40, 50, 60, 90)
"""The edges (days) of the issue-time buckets: 60 is the limit, 90 the most an extension gives."""


def bucket_labels(bounds: Sequence[int]) -> tuple[tuple[int, str], ...]:
    """Each bucket's lower edge and label: ``under 1 day``, ``1 to 2 days``, ..., ``30 days or
    more``."""
    first = bounds[0]
    labels = [(0, f"under {first} day{'s' if first != 1 else ''}")]
    labels += [(lo, f"{lo} to {hi} days") for lo, hi in pairwise(bounds)]
    labels.append((bounds[-1], f"{bounds[-1]} days or more"))
    return tuple(labels)


def _days(conn: Connection, later: Any, earlier: Any) -> ColumnElement[float]:
    """``later - earlier`` in days, as the database computes it."""
    if conn.dialect.name == "sqlite":
        days = sa.func.julianday(later) - sa.func.julianday(earlier)
    else:
        days = sa.extract("epoch", later - earlier) / 86400.0
    return sa.cast(days, sa.Float)


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def _deadlines(conn: Connection, as_of: datetime) -> Deadlines:
    app = Application.__table__
    awaiting = app.c.state.in_([str(s) for s in AWAITING_CARD_STATES])
    card_late = sa.and_(awaiting, app.c.due_at < as_of)
    review_late = sa.and_(app.c.state == "transmitted", app.c.review_due_at < as_of)

    def by(column: Any) -> tuple[CountyLine, ...]:
        query = (
            sa.select(column, sa.func.count(), _count_if(card_late), _count_if(review_late))
            .group_by(column)
            .order_by(column)
        )
        return tuple(
            CountyLine(str(c), int(n), int(a), int(b)) for c, n, a, b in conn.execute(query)
        )

    log = TransitionLog.__table__
    extended = conn.execute(
        sa.select(sa.func.count(sa.distinct(log.c.record_id))).where(
            log.c.machine == APPLICATION_MACHINE, log.c.event == EXTENDED
        )
    ).scalar_one()
    refused: dict[str | None, int] = dict(
        conn.execute(
            sa.select(app.c.rejection_ground, sa.func.count())
            .where(app.c.state == "rejected")
            .group_by(app.c.rejection_ground)
        ).all()
    )
    grounds = [str(g) for g in RejectionGround]
    refusals = [(g, int(refused.pop(g, 0))) for g in grounds]
    # A ground the library does not know (or none) can only be planted by hand: shown too.
    refusals += [(str(g or "(none recorded)"), int(n)) for g, n in refused.items()]
    by_acceptance = by(app.c.acceptance_region)
    return Deadlines(
        as_of=as_of,
        by_acceptance=by_acceptance,
        by_hukou=by(app.c.hukou_region),
        cards_overdue=sum(line.cards_overdue for line in by_acceptance),
        reviews_overdue=sum(line.reviews_overdue for line in by_acceptance),
        extended=int(extended),
        review_times=_distribution(
            conn,
            "Review times: transmitted → approved or rejected",
            TRANSMITTED,
            DECIDED,
            app.c.review_due_at,
            REVIEW_WITHIN,
            REVIEW_BOUNDS,
        ),
        issue_times=_distribution(
            conn,
            "Issue times: submitted → card ready",
            CREATED,
            (READY,),
            app.c.due_at,
            ISSUE_WITHIN,
            ISSUE_BOUNDS,
        ),
        refusals=tuple(refusals),
    )


def _distribution(
    conn: Connection,
    title: str,
    start: str,
    ends: Sequence[str],
    due: Any,
    limit: timedelta,
    bounds: Sequence[int],
) -> Distribution:
    """The time from each application's ``start`` event to its first of ``ends``, bucketed in
    SQL; ``past_due`` counts those that ended after the ``due`` column."""
    log = TransitionLog.__table__
    app = Application.__table__
    spans = (
        sa.select(
            log.c.record_id.label("record_id"),
            sa.func.min(sa.case((log.c.event == start, log.c.at))).label("began"),
            sa.func.min(sa.case((log.c.event.in_(ends), log.c.at))).label("ended"),
        )
        .where(log.c.machine == APPLICATION_MACHINE, log.c.event.in_([start, *ends]))
        .group_by(log.c.record_id)
        .subquery("spans")
    )
    days = _days(conn, spans.c.ended, spans.c.began)
    bucket = sa.case(
        *((days < upper, index) for index, upper in enumerate(bounds)), else_=len(bounds)
    ).label("bucket")
    measured = (
        sa.select(
            bucket, days.label("days"), sa.case((spans.c.ended > due, 1), else_=0).label("late")
        )
        .select_from(spans.join(app, app.c.id == spans.c.record_id))
        .where(spans.c.began.is_not(None), spans.c.ended.is_not(None))
        .subquery("measured")
    )
    counts: dict[int, int] = dict(
        conn.execute(
            sa.select(measured.c.bucket, sa.func.count()).group_by(measured.c.bucket)
        ).all()
    )
    total, mean, longest, late = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.avg(measured.c.days),
            sa.func.max(measured.c.days),
            sa.func.coalesce(sa.func.sum(measured.c.late), 0),
        )
    ).one()
    limit_days = limit.days
    return Distribution(
        title=title,
        limit_days=limit_days,
        buckets=tuple(
            Bucket(label, int(counts.get(i, 0)), lower >= limit_days)
            for i, (lower, label) in enumerate(bucket_labels(bounds))
        ),
        count=int(total),
        mean_days=None if mean is None else float(mean),
        max_days=None if longest is None else float(longest),
        past_due=int(late),
    )
