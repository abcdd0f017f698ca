"""Driving the planned period through a `Workflow` on the simulated clock: `run_day`.

The replay fires every planned step in time order and keeps the ledger: every record's state as
the rules of the three systems say it must be, and the history rows each machine must have
written. The counts it returns come from that ledger, not from the database, so that the
program (`workflow.demo.program`) can compare the two.
"""

from __future__ import annotations

import heapq
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum

from rich.progress import Progress

import workflow as wf
from workflow.demo.data import CST
from workflow.demo.planning import Errand, Plan, Step, Story, plan_period
from workflow.machines import REGISTRY
from workflow.models.enums import RENEWALS

OLD_CARD_GUARD = "old_card_handed_back"
NO_REPLACEMENT_GUARD = "no_replacement"
OVERDUE_LIMIT = 10_000
"""The largest ``limit`` the overdue queries accept."""

APPLICATION = wf.APPLICATION.name
LOSS_REPORT = wf.LOSS_REPORT.name
FOUND_CARD = wf.FOUND_CARD.name
MACHINE_NAMES: tuple[str, ...] = tuple(m.name for m in REGISTRY)
"""The machines, in the order the summary lists them."""


class SimulatedClock:
    """The demo's clock: returns ``now`` (aware UTC) and only ever moves forward."""

    def __init__(self, start: datetime) -> None:
        if start.utcoffset() is None:
            raise ValueError("the simulated clock needs a timezone-aware start")
        self.now = start.astimezone(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance_to(self, moment: datetime) -> None:
        """Move the clock to ``moment``; moving it backwards is a bug of the simulation."""
        moment = moment.astimezone(UTC)
        if moment < self.now:
            raise ValueError(f"the simulated clock can't go back from {self.now} to {moment}")
        self.now = moment


class Refusal(Enum):
    """The refusals the story plans; each is caught and counted, any other error propagates."""

    OLD_CARD_KEPT = "turned away: old card not handed back"
    OWNER_HAS_REPLACEMENT = "found card kept: owner has a replacement"
    ALREADY_REPORTED = "loss report refused: already reported"


@dataclass(frozen=True)
class DaySummary:
    """What `run_day` did and what the database looks like at the close of the day.

    The counts are the simulation's own ledger, not read back from the database: `main` compares
    the two.
    """

    day: date
    """The CST date of the day the replay ends on."""
    closed_at: datetime
    """The close of that day (aware UTC): the clock's reading at the end."""
    applications: int
    states: dict[str, dict[str, int]]
    """Records per state, of every machine of the registry (every state, in its order)."""
    reports_filed_by_application: int
    """Loss reports filed by a replacement application (the others were made at a counter)."""
    transitions: int
    """Transition-log rows written, of every machine, the creations included."""
    transitions_by_machine: dict[str, int]
    """The same rows per machine."""
    refusals: dict[Refusal, int]
    """The planned refusals, by kind."""
    overdue: int
    """Applications not yet ready more than 60 days after submission."""
    overdue_reviews: int
    """Transmitted applications not decided within 5 days."""
    elapsed_seconds: float
    held_cards: tuple[uuid.UUID, ...] = field(default=(), compare=False)
    """The found cards still held at the close, in the order they were handed in."""

    @property
    def by_state(self) -> dict[wf.State, int]:
        """Applications per state."""
        return {wf.State(s): n for s, n in self.states[APPLICATION].items()}

    @property
    def loss_reports(self) -> dict[wf.LossReportState, int]:
        """Loss reports per state."""
        return {wf.LossReportState(s): n for s, n in self.states[LOSS_REPORT].items()}

    @property
    def found_cards(self) -> dict[wf.FoundCardState, int]:
        """Found cards per state."""
        return {wf.FoundCardState(s): n for s, n in self.states[FOUND_CARD].items()}

    @property
    def records(self) -> int:
        """Records of every machine."""
        return sum(sum(counts.values()) for counts in self.states.values())

    @property
    def transitions_per_second(self) -> float:
        if self.elapsed_seconds <= 0:
            return 0.0
        return self.transitions / self.elapsed_seconds

    @property
    def intermediate(self) -> int:
        """Applications in neither final state."""
        done = {wf.State.REJECTED, wf.State.COLLECTED}
        return sum(n for state, n in self.by_state.items() if state not in done)

    @property
    def counter_refusals(self) -> int:
        """Renewal applicants turned away at the counter for not handing back the old card."""
        return self.refusals[Refusal.OLD_CARD_KEPT]


class Staff:
    """The actors of each unit, built once."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._actors: dict[tuple[wf.Role, str, int], wf.Actor] = {}

    def get(self, role: wf.Role, unit: str) -> wf.Actor:
        desk = self.rng.randint(1, 3) if role is wf.Role.ACCEPTANCE_CLERK else 1
        key = (role, unit, desk)
        if key not in self._actors:
            prefix = {
                wf.Role.ACCEPTANCE_CLERK: "clerk",
                wf.Role.HUKOU_REVIEWER: "reviewer",
                wf.Role.CARD_PRODUCER: "producer",
            }[role]
            self._actors[key] = wf.Actor(id=f"{prefix}-{unit}-{desk}", role=role, unit=unit)
        return self._actors[key]

    def clerk(self, plan: Plan) -> wf.Actor:
        return self.get(wf.Role.ACCEPTANCE_CLERK, plan.form.acceptance_region)

    def clerk_at(self, unit: str) -> wf.Actor:
        return self.get(wf.Role.ACCEPTANCE_CLERK, unit)

    def reviewer(self, plan: Plan) -> wf.Actor:
        return self.get(wf.Role.HUKOU_REVIEWER, plan.form.hukou_region)

    def producer(self, plan: Plan) -> wf.Actor:
        return self.get(wf.Role.CARD_PRODUCER, plan.form.acceptance_region[:2])


RecordKey = int | uuid.UUID
"""How the ledger knows a record: an application by its plan's number, a loss report by the
order it was filed in, a found card by its id."""


class Ledger:
    """Every record's state as the rules say it must be, and the history rows of each machine.

    The loss reports that commands file, close or withdraw as a side effect (a replacement
    submitted, collected; a found card returned) are entered here from the rules, not read back.
    """

    def __init__(self) -> None:
        self.states: dict[str, dict[RecordKey, str]] = {m.name: {} for m in REGISTRY}
        """Machine → record → state."""
        self.rows: Counter[str] = Counter()
        self.refusals: Counter[Refusal] = Counter()
        self.filed_by_application = 0
        self.active: dict[str, int] = {}
        """Citizen number → index of the citizen's active loss report."""

    def entered(self, machine: str, record: RecordKey, state: str) -> None:
        """A transition (or a creation) of ``machine`` moved ``record`` to ``state``."""
        self.states[machine][record] = state
        self.rows[machine] += 1

    def report_filed(self, citizen_id: str) -> None:
        if citizen_id in self.active:
            raise RuntimeError("the ledger has two active loss reports for one citizen")
        index = len(self.states[LOSS_REPORT])
        self.active[citizen_id] = index
        self.entered(LOSS_REPORT, index, wf.LossReportState.REPORTED)

    def report_ended(self, citizen_id: str, state: wf.LossReportState) -> None:
        self.entered(LOSS_REPORT, self.active.pop(citizen_id), state)

    def active_report(self, citizen_id: str) -> str:
        return self.states[LOSS_REPORT][self.active[citizen_id]]

    def counts(self) -> dict[str, dict[str, int]]:
        """Records per state of every machine, every state listed in its machine's order."""
        return {m.name: _count(self.states[m.name].values(), m.definition.states) for m in REGISTRY}

    def held_cards(self) -> tuple[uuid.UUID, ...]:
        """The found cards still held, in the order they were handed in."""
        cards = self.states[FOUND_CARD].items()
        return tuple(
            c for c, s in cards if s == wf.FoundCardState.HELD and isinstance(c, uuid.UUID)
        )


def _count(states: Iterable[str], every: tuple[str, ...]) -> dict[str, int]:
    counted = Counter(str(s) for s in states)
    return {s: counted[s] for s in every}


class Replay:
    """Fires the planned steps through ``flow`` and enters what they did in the ledger."""

    def __init__(self, flow: wf.Workflow, staff: Staff) -> None:
        self.flow = flow
        self.staff = staff
        self.ledger = Ledger()

    def fire(self, story: Story, index: int) -> bool:
        """Fire one step; return whether it wrote a transition (False: a planned refusal)."""
        if isinstance(story, Plan):
            return self._application(story, story.steps[index].action)
        return self._errand(story, story.steps[index])

    def _application(self, plan: Plan, action: str) -> bool:
        flow, staff, ledger = self.flow, self.staff, self.ledger
        citizen = plan.form.citizen_id
        replacement = plan.form.kind is wf.Kind.REPLACEMENT
        if action == "submit":
            view = flow.submit(plan.form, actor=staff.clerk(plan))
            plan.app_id, plan.receipt_no = view.id, view.receipt_no
            # Applying for a replacement counts as reporting the loss, unless it is reported.
            if replacement and citizen not in ledger.active:
                ledger.report_filed(citizen)
                ledger.filed_by_application += 1
        elif action == "turned_away":
            return self._turned_away(plan)
        else:
            view = _perform(flow, plan, action, staff)
            # Collecting a replacement closes the loss report: the lost card stays invalid.
            if action == "collect" and replacement and citizen in ledger.active:
                ledger.report_ended(citizen, wf.LossReportState.CLOSED)
        ledger.entered(APPLICATION, plan.number, view.state)
        return True

    def _turned_away(self, plan: Plan) -> bool:
        """The applicant has the receipt but forgot the old card: no card leaves the counter."""
        assert plan.app_id is not None
        try:
            self.flow.collect(plan.app_id, actor=self.staff.clerk(plan), receipt_no=plan.receipt_no)
        except wf.GuardFailed as exc:
            if exc.guard != OLD_CARD_GUARD:
                raise
            self.ledger.refusals[Refusal.OLD_CARD_KEPT] += 1
            return False
        raise RuntimeError("a renewed card was handed out without the old card being returned")

    def _errand(self, errand: Errand, step: Step) -> bool:
        flow, ledger = self.flow, self.ledger
        clerk = self.staff.clerk_at(step.unit)
        citizen = errand.citizen_id
        action = step.action
        if action == "report_loss":
            report = flow.report_loss(citizen, actor=clerk, identity_checked=True)
            errand.report_id = report.id
            ledger.report_filed(citizen)
            _expect(report.state, ledger.active_report(citizen))
        elif action == "withdraw":
            assert errand.report_id is not None
            report = flow.withdraw_loss_report(errand.report_id, actor=clerk, card_presented=True)
            ledger.report_ended(citizen, report.state)
            _expect(report.state, wf.LossReportState.WITHDRAWN)
        elif action == "report_again":
            return self._reported_again(citizen, clerk)
        elif action == "hand_in":
            card = flow.register_found_card(citizen, actor=clerk)
            errand.card_id = card.id
            ledger.entered(FOUND_CARD, card.id, card.state)
        elif action == "return":
            assert errand.card_id is not None
            card = flow.return_found_card(errand.card_id, actor=clerk, identity_checked=True)
            ledger.entered(FOUND_CARD, card.id, card.state)
            # Handing the card back withdraws the owner's report, if there is one.
            if citizen in ledger.active:
                ledger.report_ended(citizen, wf.LossReportState.WITHDRAWN)
        elif action == "return_refused":
            return self._return_refused(errand, clerk)
        elif action == "destroy":
            assert errand.card_id is not None
            card = flow.destroy_found_card(errand.card_id, actor=clerk)
            ledger.entered(FOUND_CARD, card.id, card.state)
        else:
            raise ValueError(f"unknown step {action!r}")
        return True

    def _reported_again(self, citizen: str, clerk: wf.Actor) -> bool:
        """The replacement application reported the loss already: the counter says so."""
        try:
            self.flow.report_loss(citizen, actor=clerk, identity_checked=True)
        except wf.DuplicateLossReport:
            self.ledger.refusals[Refusal.ALREADY_REPORTED] += 1
            return False
        raise RuntimeError("a second active loss report was filed for one citizen")

    def _return_refused(self, errand: Errand, clerk: wf.Actor) -> bool:
        """The owner came for the card, but a replacement is on its way: it is not returned."""
        assert errand.card_id is not None
        try:
            self.flow.return_found_card(errand.card_id, actor=clerk, identity_checked=True)
        except wf.GuardFailed as exc:
            if exc.guard != NO_REPLACEMENT_GUARD:
                raise
            self.ledger.refusals[Refusal.OWNER_HAS_REPLACEMENT] += 1
            return False
        raise RuntimeError("a found card was handed back although a replacement is on its way")


def _perform(flow: wf.Workflow, plan: Plan, action: str, staff: Staff) -> wf.ApplicationView:
    """Fire one planned step of an application (not the submission) and return the new view."""
    app_id = plan.app_id
    assert app_id is not None
    if action == "transmit":
        return flow.transmit(app_id, actor=staff.clerk(plan))
    if action == "approve":
        return flow.approve(app_id, actor=staff.reviewer(plan))
    if action == "reject":
        assert plan.rejection is not None
        ground, note = plan.rejection
        return flow.reject(app_id, actor=staff.reviewer(plan), ground=ground, note=note)
    if action == "produce":
        return flow.produce(app_id, actor=staff.producer(plan))
    if action == "mark_ready":
        return flow.mark_ready(app_id, actor=staff.clerk(plan))
    if action == "collect":
        return flow.collect(
            app_id,
            actor=staff.clerk(plan),
            receipt_no=plan.receipt_no,
            old_card_returned=plan.form.kind in RENEWALS,
        )
    raise ValueError(f"unknown step {action!r}")


def _expect(actual: object, expected: object) -> None:
    if actual != expected:
        raise RuntimeError(f"the library reports {actual}, the simulation expected {expected}")


def run_day(
    flow: wf.Workflow,
    *,
    applications: int,
    rng: random.Random,
    clock: SimulatedClock,
    progress: Progress | None = None,
) -> DaySummary:
    """Replay `PERIOD_DAYS` days of the three systems through ``flow``; print nothing.

    ``clock`` must be the clock ``flow`` was built with; the CST date of its reading is the
    first day replayed, and it reads the close of the last day when this returns. ``flow``'s
    database must hold no records yet. Only the refusals the story plans are caught: a renewal
    applicant who forgot the old card and an owner asking for a found card while a replacement
    is on its way (`wf.GuardFailed`), a replacement applicant reporting the loss again
    (`wf.DuplicateLossReport`); any other error propagates.
    """
    if applications < 0:
        raise ValueError("applications must not be negative")
    period = plan_period(rng, clock().astimezone(CST).date(), applications)
    replay = Replay(flow, Staff(rng))
    started = time.perf_counter()
    _fire_in_time_order(replay, period.stories, clock, period.closed_at, progress)
    clock.advance_to(period.closed_at)
    overdue = len(flow.overdue(limit=OVERDUE_LIMIT))
    overdue_reviews = len(flow.overdue_reviews(limit=OVERDUE_LIMIT))
    elapsed = time.perf_counter() - started
    ledger = replay.ledger
    return DaySummary(
        day=period.last_day,
        closed_at=period.closed_at,
        applications=len(period.plans),
        states=ledger.counts(),
        reports_filed_by_application=ledger.filed_by_application,
        transitions=sum(ledger.rows.values()),
        transitions_by_machine={m: ledger.rows[m] for m in MACHINE_NAMES},
        refusals={r: ledger.refusals[r] for r in Refusal},
        overdue=overdue,
        overdue_reviews=overdue_reviews,
        elapsed_seconds=elapsed,
        held_cards=ledger.held_cards(),
    )


def _fire_in_time_order(
    replay: Replay,
    stories: list[Story],
    clock: SimulatedClock,
    closed_at: datetime,
    progress: Progress | None,
) -> None:
    """Fire every step planned before ``closed_at``, in time order, moving ``clock`` along."""
    # One pending step per story, in time order: (when, story, step).
    queue: list[tuple[datetime, int, int]] = [
        (s.steps[0].at, number, 0)
        for number, s in enumerate(stories)
        if s.steps and s.steps[0].at <= closed_at
    ]
    heapq.heapify(queue)
    commands = sum(1 for s in stories for step in s.steps if step.at <= closed_at)
    task = progress.add_task("Replaying", total=commands) if progress is not None else None
    shown_day: date | None = None
    while queue:
        at, number, index = heapq.heappop(queue)
        clock.advance_to(at)
        story = stories[number]
        replay.fire(story, index)
        if index + 1 < len(story.steps) and story.steps[index + 1].at <= closed_at:
            heapq.heappush(queue, (story.steps[index + 1].at, number, index + 1))
        if progress is not None and task is not None:
            today = at.astimezone(CST).date()
            if today != shown_day:
                shown_day = today
                progress.update(task, description=f"Replaying {today:%Y-%m-%d}")
            progress.advance(task)
