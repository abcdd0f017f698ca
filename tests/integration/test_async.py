"""`AsyncWorkflow` on SQLAlchemy's asyncio extension, on real databases: SQLite through
aiosqlite, and PostgreSQL through psycopg's async driver when IDCARD_TEST_DATABASE_URL is set.

No pytest-asyncio: each test is a sync function that runs its coroutine with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_scoped_session,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

import workflow as wf
from tests.support import (
    OTHER_COUNTY,
    PATH_TO,
    Clock,
    actor_for,
    citizen_id,
    clerk,
    form,
    good_payload,
    producer,
    reviewer,
)
from workflow.engine.checkpoint import Checkpoint
from workflow.models.enums import Kind

HOST_NOTES = sa.Table(
    "async_test_host_notes",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("note", sa.String(64), nullable=False),
)
"""A table of the host's own, written in the same session as the library's commands."""


def async_url(url: str) -> str:
    """The async driver's URL for a test database: aiosqlite for SQLite; psycopg's URL is the
    same for both, `create_async_engine` picks its async variant."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    return url


@asynccontextmanager
async def async_engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(async_url(url), hide_parameters=True)
    try:
        yield engine
    finally:
        await engine.dispose()


def run(db_url: str, test: Callable[[AsyncEngine], Awaitable[None]]) -> None:
    """Run ``test`` on an `AsyncEngine` for the database, disposing of it afterwards."""

    async def main() -> None:
        async with async_engine(db_url) as engine:
            await test(engine)

    asyncio.run(main())


async def drive(
    flow: wf.AsyncWorkflow, state: str, kind: Kind = Kind.RENEWAL, n: int = 1
) -> wf.ApplicationView:
    """Submit a valid application and move it along the legal path to ``state``."""
    view = await flow.submit(form(kind, n), actor=clerk())
    for event in PATH_TO[state]:
        payload: dict[str, Any] = good_payload(event, view)
        view = await flow.fire(view.id, event, actor=actor_for(event, view), **payload)
    assert view.state == state
    return view


async def stored(url: str, app_id: uuid.UUID) -> wf.ApplicationView | None:
    """The application as a fresh engine (so a fresh connection) reads it, or None."""
    async with async_engine(url) as engine:
        try:
            return await wf.AsyncWorkflow(engine).get(app_id)
        except wf.NotFound:
            return None


@asynccontextmanager
async def host_notes(engine: AsyncEngine) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.run_sync(HOST_NOTES.metadata.create_all)
    try:
        yield
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(HOST_NOTES.metadata.drop_all)


# -- an AsyncEngine: one committed transaction per command -------------------------------------


def test_an_application_goes_all_the_way_to_collected(db_url: str, clock: Clock) -> None:
    async def test(engine: AsyncEngine) -> None:
        flow = wf.AsyncWorkflow(engine, clock=clock)
        view = await flow.submit(form(), actor=clerk())
        assert (view.state, view.version) == ("submitted", 1)
        view = await flow.transmit(view.id, actor=clerk())
        assert view.review_due_at is not None
        view = await flow.approve(view.id, actor=reviewer())
        view = await flow.produce(view.id, actor=producer())
        view = await flow.mark_ready(view.id, actor=clerk())
        with pytest.raises(wf.GuardFailed):
            await flow.collect(view.id, actor=clerk(), receipt_no="WRONG", old_card_returned=True)
        view = await flow.collect(
            view.id, actor=clerk(), receipt_no=view.receipt_no, old_card_returned=True
        )
        assert isinstance(view, wf.ApplicationView)
        assert (view.state, view.version) == ("collected", 6)
        assert await flow.get(view.id) == view
        assert await stored(db_url, view.id) == view
        events = await flow.pending_events()
        assert [e.event for e in events] == [
            "submit",
            "transmit",
            "approve",
            "produce",
            "mark_ready",
            "collect",
        ]
        assert await flow.ack([e.id for e in events]) == 6
        assert await flow.pending_events() == []
        explanation = await flow.explain(view.id, clerk())
        assert isinstance(explanation, wf.Explanation)

    run(db_url, test)


def test_errors_are_the_workflow_errors(db_url: str, clock: Clock) -> None:
    async def test(engine: AsyncEngine) -> None:
        flow = wf.AsyncWorkflow(engine, clock=clock)
        with pytest.raises(wf.NotFound):
            await flow.get(uuid.uuid4())
        view = await flow.submit(form(), actor=clerk(), request_id="req-1")
        assert await flow.submit(form(), actor=clerk(), request_id="req-1") == view
        with pytest.raises(wf.IdempotencyConflict):
            await flow.transmit(view.id, actor=clerk(), request_id="req-1")
        with pytest.raises(wf.DuplicateApplication):
            await flow.submit(form(), actor=clerk())
        with pytest.raises(wf.PermissionDenied):
            await flow.transmit(view.id, actor=clerk(OTHER_COUNTY))
        with pytest.raises(wf.IllegalTransition):
            await flow.approve(view.id, actor=reviewer())
        with pytest.raises(wf.IllegalTransition):
            await flow.fire(view.id, "no_such_event", actor=clerk())
        assert (await flow.get(view.id)).version == 1

    run(db_url, test)


def test_fire_many_moves_a_batch(db_url: str, clock: Clock) -> None:
    async def test(engine: AsyncEngine) -> None:
        flow = wf.AsyncWorkflow(engine, clock=clock)
        ids = [(await flow.submit(form(n=n), actor=clerk())).id for n in range(1, 6)]
        report = await flow.fire_many([*ids, uuid.uuid4()], "transmit", actor=clerk(), chunk_size=2)
        assert isinstance(report, wf.BulkReport)
        assert sorted(report.succeeded) == sorted(ids)
        assert [r.code for r in report.refused] == ["not_found"]
        assert (await flow.verify()).ok

    run(db_url, test)


def test_history_verify_and_the_overdue_queries(db_url: str, clock: Clock) -> None:
    async def test(engine: AsyncEngine) -> None:
        flow = wf.AsyncWorkflow(engine, clock=clock)
        late = await drive(flow, "transmitted", n=1)
        done = await drive(flow, "collected", n=2)
        history = await flow.history(done.id)
        assert all(isinstance(h, wf.TransitionRecord) for h in history)
        assert [h.event for h in history] == ["submit", *PATH_TO["collected"]]
        assert [h.seq for h in history] == [1, 2, 3, 4, 5, 6]
        with pytest.raises(wf.NotFound):
            await flow.history(uuid.uuid4())

        assert await flow.overdue_reviews() == []
        clock.advance(days=6)
        assert [v.id for v in await flow.overdue_reviews()] == [late.id]
        assert await flow.overdue() == []
        clock.advance(days=60)
        assert [v.id for v in await flow.overdue()] == [late.id]
        assert [v.id for v in await flow.overdue(as_of=late.submitted_at, limit=5)] == []

        report = await flow.verify()
        assert isinstance(report, wf.VerificationReport)
        assert report.ok and report.records == 2 and report.rows == 2 + 6
        assert (await flow.verify(done.id, batch_size=1)).rows == 6
        with pytest.raises(wf.NotFound):
            await flow.verify(uuid.uuid4())

    run(db_url, test)


def test_checkpoints_and_verify_in_processes_leave_the_event_loop_running(
    db_url: str, clock: Clock
) -> None:
    """`AsyncWorkflow` takes checkpoints and verifies in worker processes, as `Workflow` does,
    with the same reports; while the workers run, other tasks of the loop go on."""

    async def test(engine: AsyncEngine) -> None:
        flow = wf.AsyncWorkflow(engine, clock=clock)
        for n in range(1, 9):
            await drive(flow, "approved", n=n)
        checkpoint = await flow.checkpoint()
        assert isinstance(checkpoint, Checkpoint) and checkpoint.rows == 8 * 3
        await drive(flow, "submitted", n=9)
        alone = await flow.verify()
        ticks = 0
        done = asyncio.Event()

        async def tick() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        counted: list[tuple[int, int | None]] = []
        together = await flow.verify(workers=2, progress=lambda n, of: counted.append((n, of)))
        since = await flow.verify(since=checkpoint, workers=2)
        done.set()
        await ticker
        assert together.model_dump() == alone.model_dump() and alone.ok
        assert counted[-1] == (alone.records, alone.records)
        assert since.ok and since.checkpoint is not None and since.checkpoint.extends
        assert since.checkpoint.changed_records == 1
        assert since.model_dump() == (await flow.verify(since=checkpoint)).model_dump()
        # Starting two interpreters takes a second or more: a loop blocked meanwhile would
        # have ticked a few times at most.
        assert ticks > 50, ticks

    run(db_url, test)


def test_verify_in_processes_needs_a_synchronous_driver_of_the_same_family() -> None:
    from sqlalchemy.engine import make_url

    from workflow.aio import _sync_url

    assert _sync_url(make_url("postgresql+asyncpg://a:b@h/d")) == "postgresql+psycopg://a:b@h/d"
    assert _sync_url(make_url("postgresql+psycopg_async://h/d")) == "postgresql+psycopg://h/d"
    assert _sync_url(make_url("sqlite+aiosqlite:////tmp/x.db")) == "sqlite:////tmp/x.db"
    with pytest.raises(wf.ConfigurationError, match="workers=1"):
        _sync_url(make_url("mysql+aiomysql://h/d"))


def test_a_loss_report_and_found_cards(db_url: str, clock: Clock) -> None:
    async def test(engine: AsyncEngine) -> None:
        flow = wf.AsyncWorkflow(engine, clock=clock)
        # Reported, then the card is handed in and given back: the report is withdrawn.
        report = await flow.report_loss(
            citizen_id(1), actor=clerk(OTHER_COUNTY), identity_checked=True
        )
        assert isinstance(report, wf.LossReportView) and report.state == "reported"
        assert await flow.is_reported_lost(citizen_id(1))
        with pytest.raises(wf.DuplicateLossReport):
            await flow.report_loss(citizen_id(1), actor=clerk(), identity_checked=True)
        card = await flow.register_found_card(citizen_id(1), actor=clerk())
        assert isinstance(card, wf.FoundCardView) and card.state == "held"
        with pytest.raises(wf.GuardFailed):
            await flow.return_found_card(card.id, actor=clerk(), identity_checked=False)
        returned = await flow.return_found_card(card.id, actor=clerk(), identity_checked=True)
        assert returned.state == "returned"
        assert await flow.get_found_card(card.id) == returned
        assert (await flow.get_loss_report(report.id)).state == "withdrawn"
        assert not await flow.is_reported_lost(citizen_id(1))
        assert [h.event for h in await flow.history(card.id)] == ["register", "return_to_owner"]

        # Reported and withdrawn by the holder in person.
        second = await flow.report_loss(citizen_id(2), actor=clerk(), identity_checked=True)
        withdrawn = await flow.withdraw_loss_report(second.id, actor=clerk(), card_presented=True)
        assert withdrawn.state == "withdrawn"

        # The owner applied for a replacement: the found card is destroyed, not returned.
        found = await flow.register_found_card(citizen_id(3), actor=clerk())
        clock.advance(days=1)
        await flow.submit(form(Kind.REPLACEMENT, n=3), actor=clerk())
        assert await flow.is_reported_lost(citizen_id(3))
        with pytest.raises(wf.GuardFailed):
            await flow.return_found_card(found.id, actor=clerk(), identity_checked=True)
        destroyed = await flow.destroy_found_card(found.id, actor=clerk())
        assert destroyed.state == "destroyed"
        assert (await flow.verify()).ok

    run(db_url, test)


def test_a_collected_replacement_closes_its_loss_report(db_url: str, clock: Clock) -> None:
    async def test(engine: AsyncEngine) -> None:
        flow = wf.AsyncWorkflow(engine, clock=clock)
        await drive(flow, "collected", Kind.REPLACEMENT, n=4)
        assert not await flow.is_reported_lost(citizen_id(4))
        (event,) = [e for e in await flow.pending_events() if e.machine == "loss_report"][-1:]
        assert (await flow.get_loss_report(event.record_id)).state == "closed"

    run(db_url, test)


# -- an AsyncSession: the caller's transaction -------------------------------------------------


def test_a_session_commit_keeps_the_writes_and_a_rollback_discards_them(
    db_url: str, clock: Clock
) -> None:
    async def test(engine: AsyncEngine) -> None:
        async with AsyncSession(engine) as session:
            flow = wf.AsyncWorkflow(session, clock=clock)
            dropped = await flow.submit(form(n=1), actor=clerk())
            await flow.transmit(dropped.id, actor=clerk())
            assert (await flow.get(dropped.id)).version == 2
            assert session.in_transaction()
            assert await stored(db_url, dropped.id) is None  # not committed yet
            await session.rollback()
            assert await stored(db_url, dropped.id) is None

            kept = await flow.submit(form(n=2), actor=clerk())
            kept = await flow.transmit(kept.id, actor=clerk())
            await session.commit()
        assert await stored(db_url, kept.id) == kept
        async with async_engine(db_url) as fresh:
            report = await wf.AsyncWorkflow(fresh).verify()
            assert report.ok and report.records == 1 and report.rows == 2

    run(db_url, test)


def test_a_session_begin_block_that_raises_discards_the_writes(db_url: str, clock: Clock) -> None:
    async def test(engine: AsyncEngine) -> None:
        ids: list[uuid.UUID] = []
        with pytest.raises(RuntimeError, match="host failed"):
            async with AsyncSession(engine) as session, session.begin():
                flow = wf.AsyncWorkflow(session, clock=clock)
                ids.append((await flow.submit(form(n=1), actor=clerk())).id)
                ids.append(
                    (await flow.report_loss(citizen_id(2), actor=clerk(), identity_checked=True)).id
                )
                raise RuntimeError("host failed")
        assert await stored(db_url, ids[0]) is None
        async with async_engine(db_url) as fresh:
            other = wf.AsyncWorkflow(fresh)
            assert not await other.is_reported_lost(citizen_id(2))
            assert await other.pending_events() == []

    run(db_url, test)


def test_a_refused_command_leaves_the_session_usable_and_the_hosts_writes_commit(
    db_url: str, clock: Clock
) -> None:
    async def test(engine: AsyncEngine) -> None:
        async with host_notes(engine):
            async with AsyncSession(engine) as session:
                flow = await wf.AsyncWorkflow.open(session, clock=clock)
                first = await flow.submit(form(n=1), actor=clerk())
                session.add_all([])
                await session.execute(HOST_NOTES.insert().values(note="before"))
                with pytest.raises(wf.PermissionDenied):
                    await flow.transmit(first.id, actor=clerk(OTHER_COUNTY))
                with pytest.raises(wf.DuplicateApplication):
                    await flow.submit(form(n=1), actor=clerk())
                await session.execute(HOST_NOTES.insert().values(note="after"))
                second = await flow.transmit(first.id, actor=clerk())
                await session.commit()
            assert await stored(db_url, first.id) == second
            async with engine.connect() as conn:
                notes = (await conn.execute(sa.select(HOST_NOTES.c.note))).scalars().all()
            assert sorted(notes) == ["after", "before"]
            history = await wf.AsyncWorkflow(engine).history(first.id)
            assert [h.event for h in history] == ["submit", "transmit"]

    run(db_url, test)


def test_a_scoped_session_is_looked_up_at_each_call(db_url: str, clock: Clock) -> None:
    # Two requests, each its own task and so its own session, interleaved: each command goes
    # into the session that is current in the task that awaits it.
    async def test(engine: AsyncEngine) -> None:
        scoped = async_scoped_session(
            async_sessionmaker(engine, expire_on_commit=False), scopefunc=asyncio.current_task
        )
        flow = wf.AsyncWorkflow(scoped, clock=clock)
        submitted, checked, committed = asyncio.Event(), asyncio.Event(), asyncio.Event()
        ids: dict[str, uuid.UUID] = {}

        async def first() -> None:
            try:
                ids["kept"] = (await flow.submit(form(n=1), actor=clerk())).id
                submitted.set()
                await checked.wait()
                assert (await flow.get(ids["kept"])).version == 1  # its own write
                await scoped.commit()
                committed.set()
            finally:
                await scoped.remove()

        async def second() -> None:
            try:
                await submitted.wait()
                with pytest.raises(wf.NotFound):  # another session's uncommitted write
                    await flow.get(ids["kept"])
                await scoped.rollback()
                checked.set()
                await committed.wait()
                assert (await flow.get(ids["kept"])).version == 1
                await scoped.rollback()
                ids["dropped"] = (await flow.submit(form(n=2), actor=clerk())).id
                await flow.transmit(ids["dropped"], actor=clerk())
                assert scoped().in_transaction()
                await scoped.rollback()
            finally:
                await scoped.remove()

        await asyncio.gather(first(), second())
        assert await stored(db_url, ids["kept"]) is not None
        assert await stored(db_url, ids["dropped"]) is None

    run(db_url, test)


# -- concurrency -------------------------------------------------------------------------------


def test_tasks_on_one_engine_move_different_applications(db_url: str, clock: Clock) -> None:
    async def test(engine: AsyncEngine) -> None:
        flow = wf.AsyncWorkflow(engine, clock=clock)
        views = await asyncio.gather(*(drive(flow, "collected", n=n) for n in range(1, 9)))
        assert {v.state for v in views} == {"collected"}
        assert len({v.id for v in views}) == 8
        report = await flow.verify()
        assert report.ok and report.records == 8 and report.rows == 8 * 6

    run(db_url, test)


def test_a_race_on_one_application_has_exactly_one_winner(db_url: str, clock: Clock) -> None:
    async def test(engine: AsyncEngine) -> None:
        flow = wf.AsyncWorkflow(engine, clock=clock)
        for n in range(1, 4):
            view = await drive(flow, "transmitted", n=n)

            async def decide(i: int, app_id: uuid.UUID = view.id) -> wf.ApplicationView:
                who = reviewer(actor_id=f"r{i}")
                if i % 2:
                    return await flow.reject(app_id, actor=who, ground="identity_mismatch")
                return await flow.approve(app_id, actor=who)

            outcomes: list[Any] = await asyncio.gather(
                *(decide(i) for i in range(6)), return_exceptions=True
            )
            winners = [o for o in outcomes if isinstance(o, wf.ApplicationView)]
            losers = [o for o in outcomes if not isinstance(o, wf.ApplicationView)]
            assert len(winners) == 1, outcomes
            assert all(isinstance(o, (wf.ConcurrentUpdate, wf.IllegalTransition)) for o in losers)
            now = await flow.get(view.id)
            assert now == winners[0] and now.version == 3
            assert [h.seq for h in await flow.history(view.id)] == [1, 2, 3]
        assert (await flow.verify()).ok

    run(db_url, test)


# -- construction ------------------------------------------------------------------------------


def test_the_schema_is_checked_on_first_use_or_by_open(empty_db_url: str) -> None:
    async def test(engine: AsyncEngine) -> None:
        lazy = wf.AsyncWorkflow(engine)  # no I/O yet
        # On SQLite a file that isn't there is `NoDatabase`; an empty database is behind.
        with pytest.raises((wf.SchemaOutOfDate, wf.NoDatabase)):
            await lazy.get(uuid.uuid4())
        with pytest.raises((wf.SchemaOutOfDate, wf.NoDatabase)):
            await wf.AsyncWorkflow.open(engine)

    run(empty_db_url, test)


def test_open_and_the_context_manager(db_url: str, clock: Clock) -> None:
    async def test(engine: AsyncEngine) -> None:
        async with await wf.AsyncWorkflow.open(engine, clock=clock) as flow:
            view = await flow.submit(form(), actor=clerk())
        await flow.close()
        assert await stored(db_url, view.id) == view

    run(db_url, test)


def test_sync_binds_are_refused_with_the_class_to_use(db_url: str) -> None:
    engine = wf.create_engine(db_url)
    try:
        with Session(engine) as session:
            for bind in (db_url, sa.make_url(db_url), engine, session):
                with pytest.raises(wf.ConfigurationError, match=r"use wf\.Workflow"):
                    wf.AsyncWorkflow(bind)  # type: ignore[arg-type]
    finally:
        engine.dispose()
    with pytest.raises(wf.ConfigurationError, match="AsyncEngine"):
        wf.AsyncWorkflow(object())  # type: ignore[arg-type]
    with pytest.raises(wf.ConfigurationError, match="create_async_engine"):
        wf.AsyncWorkflow(db_url)  # type: ignore[arg-type]

    async def test(async_engine: AsyncEngine) -> None:
        with pytest.raises(wf.ConfigurationError, match="not its sync_engine"):
            wf.AsyncWorkflow(async_engine.sync_engine)  # type: ignore[arg-type]
        with pytest.raises(wf.ConfigurationError, match="async_sessionmaker"):
            wf.AsyncWorkflow(async_sessionmaker(async_engine))  # type: ignore[arg-type]
        async with AsyncSession(async_engine) as session:
            for bind in (async_engine, session):
                with pytest.raises(wf.ConfigurationError):
                    wf.Workflow(bind)  # type: ignore[arg-type]

    run(db_url, test)
