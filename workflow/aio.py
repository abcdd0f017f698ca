"""`AsyncWorkflow`: the `Workflow` facade for hosts on SQLAlchemy's asyncio extension.

Nothing is reimplemented. An `AsyncWorkflow` drives a synchronous `Workflow` built on the
`AsyncEngine`'s ``sync_engine`` (or the `AsyncSession`'s ``sync_session``) and runs each call
in SQLAlchemy's greenlet bridge, `sqlalchemy.util.greenlet_spawn`, the mechanism
`AsyncSession.run_sync` and the asyncio extension itself are built on: every statement the
synchronous code sends awaits the async driver (aiosqlite, psycopg, asyncpg) and yields to the
event loop while it waits. So the commands keep every guarantee of `Workflow`: the same
checks in the same order, one transaction per command (or a savepoint of the caller's
session), the same `WorkflowError` subclasses, the same history, hash chain and outbox.

Construction does no I/O. The database's schema revision is checked on first use (or right
away by `AsyncWorkflow.open`); see ``docs/async.md``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session
from sqlalchemy.util import greenlet_spawn

from workflow.engine.checkpoint import Checkpoint
from workflow.engine.runner import Clock
from workflow.engine.store import sqlite_file
from workflow.engine.verification import VerificationReport
from workflow.errors import ConfigurationError
from workflow.models.enums import RejectionGround
from workflow.models.schemas import (
    Actor,
    ApplicationView,
    BulkReport,
    Explanation,
    FoundCardView,
    LossReportView,
    PendingEvent,
    SubmitApplication,
    TransitionRecord,
)
from workflow.service import Workflow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_scoped_session

T = TypeVar("T")


def _asyncio() -> ModuleType:
    """SQLAlchemy's asyncio extension, imported on first use: it needs greenlet, which only
    the ``asyncio`` extra installs, and ``import workflow`` must work without it."""
    try:
        import sqlalchemy.ext.asyncio as extension
    except ImportError as exc:
        raise ConfigurationError(
            "AsyncWorkflow needs SQLAlchemy's asyncio extension: "
            "pip install 'idcard-workflow[asyncio]'"
        ) from exc
    return extension


class AsyncWorkflow:
    """The three systems on one database, for asyncio hosts: `Workflow`'s commands and queries
    as coroutines, with the same signatures, return types, errors and guarantees.

    ``bind`` is an `AsyncEngine` (each command is its own committed transaction), an
    `AsyncSession` (each command joins the caller's transaction in a savepoint; the caller
    commits or rolls back), or an `async_scoped_session` (the same, on the session that is
    current when the command is awaited). ``clock`` returns the current time as an aware
    datetime (default: the real clock).

    Construction does no I/O: the database is checked to be at the latest revision
    (`workflow.upgrade`) by the first command or query, which raises `SchemaOutOfDate` if it
    is not. ``await AsyncWorkflow.open(bind)`` does that check at once, for a host that would
    rather fail at startup. A synchronous URL, `Engine` or `Session` raises
    `ConfigurationError`: use `Workflow` for those.
    """

    def __init__(
        self,
        bind: AsyncEngine | AsyncSession | async_scoped_session[Any],
        *,
        clock: Clock | None = None,
    ) -> None:
        self._clock = clock
        self._engine: AsyncEngine | None = None
        self._session: AsyncSession | None = None
        self._scoped: async_scoped_session[Any] | None = None
        if isinstance(bind, (str, URL, Engine, Session)):
            raise ConfigurationError(_wrong_bind(bind, None))
        extension = _asyncio()
        if isinstance(bind, extension.AsyncEngine):
            self._engine = bind
        elif isinstance(bind, extension.AsyncSession):
            self._session = bind
        elif isinstance(bind, extension.async_scoped_session):
            self._scoped = bind
        else:
            raise ConfigurationError(_wrong_bind(bind, extension))
        self._flow: Workflow | None = None
        # The key of this instance's `Workflow` in each scoped session's ``info``.
        self._key = object()

    @classmethod
    async def open(
        cls,
        bind: AsyncEngine | AsyncSession | async_scoped_session[Any],
        *,
        clock: Clock | None = None,
    ) -> AsyncWorkflow:
        """An `AsyncWorkflow` whose database has been checked already: raises
        `SchemaOutOfDate` now rather than at the first command. With an `AsyncSession` the
        check reads in (and so begins) the session's transaction."""
        flow = cls(bind, clock=clock)
        await flow._run(lambda _: None)
        return flow

    async def close(self) -> None:
        """Forget the workflow's state. The engine or session is the caller's: it is left
        open (dispose of an `AsyncEngine` with ``await engine.dispose()``)."""
        self._flow = None

    async def __aenter__(self) -> AsyncWorkflow:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the bridge -------------------------------------------------------------------------

    async def _run(self, call: Callable[[Workflow], T]) -> T:
        """Run ``call`` on the synchronous `Workflow` inside SQLAlchemy's greenlet bridge, so
        its database calls await the async driver."""
        session = self._current_session()
        return await greenlet_spawn(self._call, session, call)

    def _current_session(self) -> Session | None:
        if self._scoped is not None:
            current: AsyncSession = self._scoped()
            return current.sync_session
        if self._session is not None:
            return self._session.sync_session
        return None

    def _call(self, session: Session | None, call: Callable[[Workflow], T]) -> T:
        # Runs in the greenlet: building a `Workflow` checks the schema, which is I/O.
        return call(self._workflow(session))

    def _workflow(self, session: Session | None) -> Workflow:
        if self._scoped is not None:
            assert session is not None
            # One `Workflow` per scoped session, kept with the session and gone with it.
            flow = session.info.get(self._key)
            if not isinstance(flow, Workflow):
                flow = Workflow(session, clock=self._clock)
                session.info[self._key] = flow
            return flow
        if self._flow is None:
            if session is not None:
                self._flow = Workflow(session, clock=self._clock)
            else:
                assert self._engine is not None
                self._flow = Workflow(self._engine.sync_engine, clock=self._clock)
        return self._flow

    # -- applications -----------------------------------------------------------------------

    async def submit(
        self, cmd: SubmitApplication, *, actor: Actor, request_id: str | None = None
    ) -> ApplicationView:
        """Accept an application at the acceptance point: (new) → submitted.

        A replacement also files a loss report for the citizen in the same transaction, unless
        one is active already. See `Workflow.submit`.
        """
        return await self._run(lambda f: f.submit(cmd, actor=actor, request_id=request_id))

    async def transmit(
        self, app_id: uuid.UUID, *, actor: Actor, request_id: str | None = None
    ) -> ApplicationView:
        """Send the application to the household-registration county: submitted → transmitted."""
        return await self._run(lambda f: f.transmit(app_id, actor=actor, request_id=request_id))

    async def approve(
        self, app_id: uuid.UUID, *, actor: Actor, request_id: str | None = None
    ) -> ApplicationView:
        """The household-registration county signs off: transmitted → approved."""
        return await self._run(lambda f: f.approve(app_id, actor=actor, request_id=request_id))

    async def reject(
        self,
        app_id: uuid.UUID,
        *,
        actor: Actor,
        ground: RejectionGround | str,
        note: str = "",
        request_id: str | None = None,
    ) -> ApplicationView:
        """The household-registration county refuses, with its ground: transmitted → rejected."""
        return await self._run(
            lambda f: f.reject(app_id, actor=actor, ground=ground, note=note, request_id=request_id)
        )

    async def produce(
        self, app_id: uuid.UUID, *, actor: Actor, request_id: str | None = None
    ) -> ApplicationView:
        """The card is produced and checked: approved → produced."""
        return await self._run(lambda f: f.produce(app_id, actor=actor, request_id=request_id))

    async def mark_ready(
        self, app_id: uuid.UUID, *, actor: Actor, request_id: str | None = None
    ) -> ApplicationView:
        """The card is at the acceptance point and verified: produced → ready."""
        return await self._run(lambda f: f.mark_ready(app_id, actor=actor, request_id=request_id))

    async def collect(
        self,
        app_id: uuid.UUID,
        *,
        actor: Actor,
        receipt_no: str,
        old_card_returned: bool = False,
        request_id: str | None = None,
    ) -> ApplicationView:
        """The applicant takes the card, with the receipt (and old card): ready → collected.

        Collecting a replacement closes the citizen's active loss report in the same
        transaction.
        """
        return await self._run(
            lambda f: f.collect(
                app_id,
                actor=actor,
                receipt_no=receipt_no,
                old_card_returned=old_card_returned,
                request_id=request_id,
            )
        )

    async def extend_deadline(
        self,
        app_id: uuid.UUID,
        *,
        actor: Actor,
        days: int,
        reason: str,
        request_id: str | None = None,
    ) -> ApplicationView:
        """The statutory extension of the 60-day limit: 1 to 30 days, once, with the reason."""
        return await self._run(
            lambda f: f.extend_deadline(
                app_id, actor=actor, days=days, reason=reason, request_id=request_id
            )
        )

    async def fire(
        self,
        app_id: uuid.UUID,
        event: str,
        *,
        actor: Actor,
        request_id: str | None = None,
        **payload: Any,
    ) -> ApplicationView:
        """Apply any event but submit by name; ``payload`` is that command's keyword arguments.

        With a ``request_id``, a retry of a command that took effect returns the same result
        and changes nothing; the same id used for another command raises `IdempotencyConflict`.
        """
        return await self._run(
            lambda f: f.fire(app_id, event, actor=actor, request_id=request_id, **payload)
        )

    async def fire_many(
        self,
        app_ids: Iterable[uuid.UUID],
        event: str,
        *,
        actor: Actor,
        chunk_size: int = 1000,
        **payload: Any,
    ) -> BulkReport:
        """Apply one event to many applications set-based, a chunk per transaction (with an
        `AsyncSession`, a savepoint per chunk). The report lists the applications moved and,
        for each one refused, the reason. See `Workflow.fire_many`."""
        return await self._run(
            lambda f: f.fire_many(app_ids, event, actor=actor, chunk_size=chunk_size, **payload)
        )

    # -- loss reports -----------------------------------------------------------------------

    async def report_loss(
        self,
        citizen_id: str,
        *,
        actor: Actor,
        identity_checked: bool,
        request_id: str | None = None,
    ) -> LossReportView:
        """Record that the citizen's card was lost; any acceptance clerk, anywhere, the holder
        in person with ``identity_checked``. At most one report per citizen is active
        (`DuplicateLossReport`). See `Workflow.report_loss`."""
        return await self._run(
            lambda f: f.report_loss(
                citizen_id, actor=actor, identity_checked=identity_checked, request_id=request_id
            )
        )

    async def withdraw_loss_report(
        self,
        report_id: uuid.UUID,
        *,
        actor: Actor,
        card_presented: bool,
        request_id: str | None = None,
    ) -> LossReportView:
        """The holder came back in person with the found card: reported → withdrawn."""
        return await self._run(
            lambda f: f.withdraw_loss_report(
                report_id, actor=actor, card_presented=card_presented, request_id=request_id
            )
        )

    async def is_reported_lost(self, citizen_id: str) -> bool:
        """Whether the citizen's card is reported lost now: the answer and nothing else."""
        return await self._run(lambda f: f.is_reported_lost(citizen_id))

    async def get_loss_report(self, report_id: uuid.UUID) -> LossReportView:
        """The loss report as it is now."""
        return await self._run(lambda f: f.get_loss_report(report_id))

    # -- found cards ------------------------------------------------------------------------

    async def register_found_card(
        self, citizen_id: str, *, actor: Actor, request_id: str | None = None
    ) -> FoundCardView:
        """A found card is handed in; the clerk's office holds it: (new) → held."""
        return await self._run(
            lambda f: f.register_found_card(citizen_id, actor=actor, request_id=request_id)
        )

    async def return_found_card(
        self,
        card_id: uuid.UUID,
        *,
        actor: Actor,
        identity_checked: bool,
        request_id: str | None = None,
    ) -> FoundCardView:
        """Hand the card back to its owner in person: held → returned. Refused when the owner
        applied for a replacement since the card was reported lost or found; withdraws the
        owner's active loss report in the same transaction."""
        return await self._run(
            lambda f: f.return_found_card(
                card_id, actor=actor, identity_checked=identity_checked, request_id=request_id
            )
        )

    async def destroy_found_card(
        self, card_id: uuid.UUID, *, actor: Actor, request_id: str | None = None
    ) -> FoundCardView:
        """Destroy a found card whose owner applied for or received a replacement, and record
        the destruction: held → destroyed."""
        return await self._run(
            lambda f: f.destroy_found_card(card_id, actor=actor, request_id=request_id)
        )

    async def get_found_card(self, card_id: uuid.UUID) -> FoundCardView:
        """The found card as it is now."""
        return await self._run(lambda f: f.get_found_card(card_id))

    # -- queries ----------------------------------------------------------------------------

    async def get(self, app_id: uuid.UUID) -> ApplicationView:
        """The application as it is now."""
        return await self._run(lambda f: f.get(app_id))

    async def history(self, record_id: uuid.UUID) -> list[TransitionRecord]:
        """Every transition of any record (application, loss report or found card), oldest
        first; the first is its creation."""
        return await self._run(lambda f: f.history(record_id))

    async def explain(self, app_id: uuid.UUID, actor: Actor) -> Explanation:
        """The events ``actor`` could fire on the application now and, for each one it can't,
        every reason (role, unit, state); each event's guards are listed as conditions."""
        return await self._run(lambda f: f.explain(app_id, actor))

    async def verify(
        self,
        record_id: uuid.UUID | None = None,
        *,
        batch_size: int = 1000,
        since: Checkpoint | None = None,
        public_key: Any = None,
        workers: int = 1,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> VerificationReport:
        """Check every record's history (or one's), of every machine: replayed through its
        definition, stored state and version equal to the replay's, hash chain intact. An id
        that names no record and no history raises `NotFound`. ``since``, ``public_key``,
        ``workers`` and ``progress``: see `Workflow.verify`.

        With ``workers`` above 1 on an `AsyncEngine`, the worker processes open the database
        with the synchronous driver of the same family (the URL's ``+aiosqlite`` becomes
        SQLite's own driver; ``+asyncpg`` and psycopg's async driver become ``+psycopg``), and this
        process waits for them in a thread, so the event loop runs on meanwhile; ``progress``
        is then called from that thread. A session's transaction is verified in this process,
        as `Workflow` does."""
        verify = partial(
            Workflow.verify,
            record_id=record_id,
            batch_size=batch_size,
            since=since,
            public_key=public_key,
            workers=workers,
            progress=progress,
        )
        if workers != 1 and self._engine is not None and _on_file_or_server(self._engine.url):
            url = _sync_url(self._engine.url)
            return await asyncio.to_thread(_on_a_sync_driver, url, self._clock, verify)
        return await self._run(verify)

    async def checkpoint(self, *, signing_key: Any = None) -> Checkpoint:
        """A checkpoint of the history as it stands, signed when ``signing_key`` (an Ed25519
        private key) is given. See `Workflow.checkpoint`."""
        return await self._run(lambda f: f.checkpoint(signing_key=signing_key))

    async def overdue(
        self, as_of: datetime | None = None, *, limit: int = 100
    ) -> list[ApplicationView]:
        """Applications whose card is still on its way after ``due_at``, earliest first."""
        return await self._run(lambda f: f.overdue(as_of, limit=limit))

    async def overdue_reviews(
        self, as_of: datetime | None = None, *, limit: int = 100
    ) -> list[ApplicationView]:
        """Transmitted applications still undecided after ``review_due_at``, earliest first."""
        return await self._run(lambda f: f.overdue_reviews(as_of, limit=limit))

    # -- the outbox -------------------------------------------------------------------------

    async def pending_events(self, limit: int = 100) -> list[PendingEvent]:
        """Transitions not yet acknowledged, oldest first (so in order for each record). A
        host relays them and then acknowledges them with `ack`; delivery is at least once."""
        return await self._run(lambda f: f.pending_events(limit))

    async def ack(self, event_ids: Iterable[int]) -> int:
        """Mark these outbox events delivered; returns how many were pending until now."""
        return await self._run(lambda f: f.ack(event_ids))


_SYNC_DRIVERS = {
    "aiosqlite": "pysqlite",
    "asyncpg": "psycopg",
    "psycopg_async": "psycopg",
    "psycopg": "psycopg",  # create_async_engine("postgresql+psycopg://...") is psycopg's async
}
"""The synchronous driver worker processes open a database with, for each async driver."""


def _on_file_or_server(url: URL) -> bool:
    """Whether other processes can open the database (not a SQLite in-memory one)."""
    return url.get_backend_name() != "sqlite" or sqlite_file(url) is not None


def _sync_url(url: URL) -> str:
    """``url`` with the synchronous driver of its family, as a string with its password."""
    backend, driver = url.get_backend_name(), url.get_driver_name()
    sync = _SYNC_DRIVERS.get(driver)
    if sync is None:
        raise ConfigurationError(
            f"verify(workers=...) has no synchronous driver for {backend}+{driver} to open the "
            "database with in its worker processes; use workers=1"
        )
    name = backend if sync == "pysqlite" else f"{backend}+{sync}"
    return url.set(drivername=name).render_as_string(hide_password=False)


def _on_a_sync_driver(url: str, clock: Clock | None, call: Callable[[Workflow], T]) -> T:
    """``call`` on a `Workflow` of its own on ``url`` (a synchronous driver's), closed after:
    in a thread of its own."""
    with Workflow(url, clock=clock) as flow:
        return call(flow)


def _wrong_bind(bind: object, extension: ModuleType | None) -> str:
    name = type(bind).__name__
    if isinstance(bind, Engine) and bind.dialect.is_async:
        return (
            f"AsyncWorkflow needs the AsyncEngine itself, not its sync_engine ({name}); "
            "pass the AsyncEngine"
        )
    if isinstance(bind, (str, URL)):
        return (
            "AsyncWorkflow takes no URL: pass create_async_engine(url); "
            "for a sync URL use wf.Workflow"
        )
    if isinstance(bind, (Engine, Session)):
        return (
            f"AsyncWorkflow runs on an AsyncEngine, an AsyncSession or an async_scoped_session; "
            f"for a {name} use wf.Workflow"
        )
    if extension is not None and isinstance(bind, extension.async_sessionmaker):
        return (
            "AsyncWorkflow needs a session, not an async_sessionmaker: pass an AsyncSession it "
            "made, or an async_scoped_session built on it"
        )
    return (
        "AsyncWorkflow runs on an AsyncEngine, an AsyncSession or an async_scoped_session, "
        f"not {name}"
    )


__all__ = ["AsyncWorkflow"]
