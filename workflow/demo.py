"""The demo that ``make demo`` runs: ``python -m workflow.demo``.

It builds a fresh SQLite database (``var/demo.db`` by default) and replays the remote-acceptance
work of four acceptance points in three provinces over the 90 days that end with one ordinary
working day, so that the day closes with the backlog a real office has: cards collected, some
applications refused by the household-registration county, some still waiting for review,
production or collection, a few overdue, and a few renewal applicants turned away at the counter
because they forgot to bring the old card.

Everything is driven by a seeded `random.Random` and a simulated clock, so the same seed gives the
same counts on every run. Citizen numbers are shown masked, receipt numbers never.
"""

from __future__ import annotations

import argparse
import heapq
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import time as clock_time
from decimal import Decimal
from enum import Enum
from pathlib import Path

import sqlalchemy as sa
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

import workflow as wf
from models.citizen_id import check_character, mask_citizen_id
from models.enums import NATIONAL_FEE, RENEWALS

CST = timezone(timedelta(hours=8), "CST")
"""China Standard Time: the acceptance points' office hours are local time."""
OPENS = clock_time(8, 30)
CLOSES = clock_time(17, 30)
PERIOD_DAYS = 90
"""Days replayed, the last of them being the day the demo ends on."""

DEFAULT_DB = Path("var/demo.db")
DEFAULT_APPLICATIONS = 300
DEFAULT_SEED = 20_260_301
OLD_CARD_GUARD = "old_card_handed_back"
OVERDUE_LIMIT = 10_000
"""The largest ``limit`` the overdue queries accept."""


@dataclass(frozen=True)
class County:
    """A county-level division: its 6-digit GB/T 2260 code and its name."""

    code: str
    name: str


ACCEPTANCE_POINTS: tuple[tuple[County, int], ...] = (
    (County("440305", "Nanshan, Shenzhen"), 35),
    (County("440106", "Tianhe, Guangzhou"), 25),
    (County("310115", "Pudong, Shanghai"), 25),
    (County("330106", "Xihu, Hangzhou"), 15),
)
"""The acceptance points (county, share of the applications)."""

HUKOU_COUNTIES: tuple[County, ...] = (
    County("110105", "Chaoyang, Beijing"),
    County("110101", "Dongcheng, Beijing"),
    County("310115", "Pudong, Shanghai"),
    County("440106", "Tianhe, Guangzhou"),
    County("510107", "Wuhou, Chengdu"),
    County("513022", "Xuanhan County, Dazhou"),
    County("420102", "Jiang'an, Wuhan"),
    County("421023", "Jianli, Jingzhou"),
    County("430102", "Furong, Changsha"),
    County("431121", "Qiyang, Yongzhou"),
    County("410105", "Jinshui, Zhengzhou"),
    County("412726", "Dancheng County, Zhoukou"),
    County("360102", "Donghu, Nanchang"),
    County("500103", "Yuzhong, Chongqing"),
    County("500235", "Yunyang County, Chongqing"),
    County("450103", "Qingxiu, Nanning"),
    County("520102", "Nanming, Guiyang"),
    County("340104", "Shushan, Hefei"),
    County("341221", "Linquan County, Fuyang"),
    County("370102", "Lixia, Jinan"),
    County("610113", "Yanta, Xi'an"),
    County("230102", "Daoli, Harbin"),
    County("350102", "Gulou, Fuzhou"),
    County("330106", "Xihu, Hangzhou"),
)
"""Household-registration counties the applicants come from."""

OLD_CODES: dict[str, str] = {
    "110101": "110103",  # Chongwen District, merged into Dongcheng in 2010
    "310115": "310225",  # Nanhui County, merged into Pudong in 2009
    "500235": "512237",  # Yunyang County, Sichuan, before Chongqing became a municipality
}
"""Division codes that no longer exist but still stand at the head of citizen numbers."""

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂英华建国志红玉梅文斌"

REJECTION_GROUNDS: tuple[tuple[wf.RejectionGround, int, tuple[str, ...]], ...] = (
    (
        wf.RejectionGround.IDENTITY_MISMATCH,
        40,
        (
            "Birth date on the form differs from the population register.",
            "Registered address does not match the population register.",
            "Name on the form differs from the register (character changed in 2019).",
        ),
    ),
    (
        wf.RejectionGround.FIRST_APPLICATION,
        15,
        ("No resident identity card has ever been issued; first applications are made at home.",),
    ),
    (
        wf.RejectionGround.APPEARANCE_CHANGED,
        15,
        ("Photo differs greatly from the register photo and no fingerprints are on file.",),
    ),
    (
        wf.RejectionGround.DOCUMENT_FRAUD_RECORD,
        10,
        ("Record of fraudulent use of another person's identity card (2021).",),
    ),
    (
        wf.RejectionGround.BAD_CREDIT_RECORD,
        8,
        ("Listed in the bad-credit record of the public security organ.",),
    ),
    (
        wf.RejectionGround.OTHER,
        12,
        (
            "Household registration moved out of this county in 2024; apply at the new county.",
            "Household registration is suspended pending a correction of the register.",
            "The register records the person as deceased; verification in person required.",
        ),
    ),
)
"""Refusal grounds of the household-registration county, with weights and detailed reasons."""


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


@dataclass(frozen=True)
class DaySummary:
    """What `run_day` did and what the database looks like at the close of the day."""

    day: date
    """The CST date of the day the replay ends on."""
    closed_at: datetime
    """The close of that day (aware UTC): the clock's reading at the end."""
    applications: int
    by_state: dict[wf.State, int]
    transitions: int
    """Transition-log rows written, the submissions included."""
    counter_refusals: int
    """Renewal applicants turned away at the counter for not handing back the old card."""
    overdue: int
    """Applications not yet ready more than 60 days after submission."""
    overdue_reviews: int
    """Transmitted applications not decided within 5 days."""
    elapsed_seconds: float

    @property
    def transitions_per_second(self) -> float:
        return self.transitions / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def intermediate(self) -> int:
        """Applications in neither final state."""
        done = {wf.State.REJECTED, wf.State.COLLECTED}
        return sum(n for state, n in self.by_state.items() if state not in done)


class Fate(Enum):
    """How an application's story goes, whenever the period leaves time for it."""

    NORMAL = "normal"
    REJECTED = "rejected"
    REVIEW_STALLED = "review_stalled"
    PRODUCTION_DELAYED = "production_delayed"
    NO_SHOW = "no_show"


_FATES = (Fate.NORMAL, Fate.REJECTED, Fate.REVIEW_STALLED, Fate.PRODUCTION_DELAYED, Fate.NO_SHOW)
_FATE_WEIGHTS = (74, 7, 3, 6, 10)

# The first applicants get a scenario, so that even a small run shows every outcome: a renewal
# turned away once at the counter, a refusal, a collected card, a review and a production
# overdue, and an application handed in on the last day. (fate, forgets the old card, kind,
# submitted this many days before the last day: range)
_SCENARIOS: tuple[tuple[Fate, bool, wf.Kind | None, tuple[int, int]], ...] = (
    (Fate.NORMAL, True, wf.Kind.RENEWAL, (70, 88)),
    (Fate.REJECTED, False, None, (10, 80)),
    (Fate.NORMAL, False, wf.Kind.REPLACEMENT, (70, 88)),
    (Fate.REVIEW_STALLED, False, None, (10, 50)),
    (Fate.PRODUCTION_DELAYED, False, None, (62, 85)),
    (Fate.NORMAL, False, None, (0, 0)),
)


@dataclass(frozen=True)
class _Step:
    at: datetime
    action: str


@dataclass
class _Plan:
    number: int
    form: wf.SubmitApplication
    submit_at: datetime
    steps: list[_Step]
    rejection: tuple[wf.RejectionGround, str] | None = None
    app_id: uuid.UUID | None = None
    receipt_no: str = field(default="", repr=False)


class _Planner:
    """Draws the applicants and the times of every step of their applications."""

    def __init__(self, rng: random.Random, first_day: date) -> None:
        self.rng = rng
        self.first_day = first_day
        self.last_day = first_day + timedelta(days=PERIOD_DAYS - 1)
        self.seen: set[str] = set()

    def plans(self, count: int) -> list[_Plan]:
        return [self.plan(n) for n in range(count)]

    def plan(self, number: int) -> _Plan:
        rng = self.rng
        point = rng.choices([c for c, _ in ACCEPTANCE_POINTS], [w for _, w in ACCEPTANCE_POINTS])[0]
        hukou = rng.choice([c for c in HUKOU_COUNTIES if c.code != point.code])
        if number < len(_SCENARIOS):
            fate, forgets, kind, (fewest, most) = _SCENARIOS[number]
            days_before = rng.randint(fewest, most)
            kind = kind or rng.choice(list(wf.Kind))
        else:
            kind = rng.choices(list(wf.Kind), (55, 15, 30))[0]
            fate = rng.choices(_FATES, _FATE_WEIGHTS)[0]
            forgets = kind in RENEWALS and rng.random() < 0.15
            # A fifth of the applications come in on the last day: a busy day at the counter.
            days_before = 0 if rng.random() < 0.2 else rng.randint(1, PERIOD_DAYS - 1)
        day = self.last_day - timedelta(days=days_before)
        submit_at = datetime.combine(day, OPENS, CST) + timedelta(
            minutes=rng.randint(0, 9 * 60 - 5)
        )
        plan = _Plan(number, self.form(kind, point, hukou), submit_at.astimezone(UTC), [])
        self.schedule(plan, fate, forgets, scenario=number < len(_SCENARIOS))
        return plan

    def form(self, kind: wf.Kind, point: County, hukou: County) -> wf.SubmitApplication:
        rng = self.rng
        documents = {wf.Document.RESIDENT_ID_CARD}
        if kind is wf.Kind.REPLACEMENT:
            documents = rng.choice(
                [
                    {wf.Document.RESIDENCE_PERMIT},
                    {wf.Document.HOUSEHOLD_REGISTER},
                    {wf.Document.RESIDENCE_PERMIT, wf.Document.HOUSEHOLD_REGISTER},
                ]
            )
        elif rng.random() < 0.1:
            documents.add(wf.Document.RESIDENCE_PERMIT)
        waiver: wf.FeeWaiver | None = None
        if rng.random() < 0.04:
            waiver = rng.choice(list(wf.FeeWaiver))
        return wf.SubmitApplication(
            kind=kind,
            citizen_id=self.citizen_id(hukou),
            name=rng.choice(SURNAMES) + "".join(rng.choices(GIVEN, k=rng.choice((1, 2, 2)))),
            hukou_region=hukou.code,
            acceptance_region=point.code,
            documents=frozenset(documents),
            fee_paid=Decimal(0) if waiver else NATIONAL_FEE[kind],
            fee_waiver=waiver,
        )

    def citizen_id(self, hukou: County) -> str:
        """A new valid GB 11643 number, usually carrying the household-registration code."""
        rng = self.rng
        while True:
            code = hukou.code
            if code in OLD_CODES and rng.random() < 0.3:
                code = OLD_CODES[code]
            born = self.last_day - timedelta(days=rng.randint(16 * 365 + 4, 75 * 365))
            first17 = f"{code}{born:%Y%m%d}{rng.randint(1, 999):03d}"
            number = first17 + check_character(first17)
            if number not in self.seen:
                self.seen.add(number)
                return number

    def office_hours(self, moment: datetime) -> datetime:
        """``moment``, or the next opening of the offices (plus a short queue) if they are shut."""
        local = moment.astimezone(CST)
        if OPENS <= local.time() <= CLOSES:
            return moment
        day = local.date() if local.time() < OPENS else local.date() + timedelta(days=1)
        opening = datetime.combine(day, OPENS, CST) + timedelta(minutes=self.rng.randint(0, 90))
        return opening.astimezone(UTC)

    def schedule(self, plan: _Plan, fate: Fate, forgets: bool, *, scenario: bool) -> None:
        rng = self.rng
        at = plan.submit_at

        def step(action: str, delay: timedelta, *, office: bool = True) -> None:
            nonlocal at
            at = at + delay
            if office:
                at = self.office_hours(at)
            plan.steps.append(_Step(at, action))

        step("transmit", timedelta(minutes=rng.randint(20, 180)))
        if fate is Fate.REVIEW_STALLED:
            return
        late_review = not scenario and rng.random() < 0.1
        review = rng.uniform(5.5, 9) if late_review else rng.uniform(0.1, 4)
        if fate is Fate.REJECTED:
            weights = [w for _, w, _ in REJECTION_GROUNDS]
            ground, _, notes = rng.choices(REJECTION_GROUNDS, weights)[0]
            plan.rejection = (ground, rng.choice(notes))
            step("reject", timedelta(days=review))
            return
        step("approve", timedelta(days=review))
        if fate is Fate.PRODUCTION_DELAYED:
            # Transport is difficult: the card takes longer than the 60 days allowed.
            fewest, most = (75, 90) if scenario else (45, 75)
            step("produce", timedelta(days=rng.uniform(fewest, most)), office=False)
        else:
            step("produce", timedelta(days=rng.uniform(7, 25)), office=False)
        step("mark_ready", timedelta(days=rng.uniform(2, 10)))
        if fate is Fate.NO_SHOW:
            step("collect", timedelta(days=rng.uniform(30, 120)))
            return
        if forgets:
            step("turned_away", timedelta(days=rng.uniform(1, 14)))
            step("collect", timedelta(days=rng.uniform(1, 7)))
        else:
            step("collect", timedelta(days=rng.uniform(1, 14)))


class _Staff:
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

    def clerk(self, plan: _Plan) -> wf.Actor:
        return self.get(wf.Role.ACCEPTANCE_CLERK, plan.form.acceptance_region)

    def reviewer(self, plan: _Plan) -> wf.Actor:
        return self.get(wf.Role.HUKOU_REVIEWER, plan.form.hukou_region)

    def producer(self, plan: _Plan) -> wf.Actor:
        return self.get(wf.Role.CARD_PRODUCER, plan.form.acceptance_region[:2])


def run_day(
    flow: wf.Workflow,
    *,
    applications: int,
    rng: random.Random,
    clock: SimulatedClock,
    progress: Progress | None = None,
) -> DaySummary:
    """Replay `PERIOD_DAYS` days of remote acceptance through ``flow``; print nothing.

    ``clock`` must be the clock ``flow`` was built with; the CST date of its reading is the
    first day replayed, and it reads the close of the last day when this returns. ``flow``'s
    database must hold no applications yet. Only the refusals the story plans are caught: a
    renewal applicant who forgot the old card (`wf.GuardFailed`); any other error propagates.
    """
    if applications < 0:
        raise ValueError("applications must not be negative")
    planner = _Planner(rng, clock().astimezone(CST).date())
    closed_at = datetime.combine(planner.last_day, CLOSES, CST).astimezone(UTC)
    plans = planner.plans(applications)
    staff = _Staff(rng)

    # One pending command per application, in time order: (when, application, step or -1).
    queue: list[tuple[datetime, int, int]] = [(p.submit_at, p.number, -1) for p in plans]
    heapq.heapify(queue)
    commands = len(plans) + sum(1 for p in plans for s in p.steps if s.at <= closed_at)
    task = progress.add_task("Replaying", total=commands) if progress is not None else None

    states: dict[int, wf.State] = {}
    view: wf.ApplicationView | None
    transitions = refusals = 0
    shown_day: date | None = None
    started = time.perf_counter()
    while queue:
        at, number, index = heapq.heappop(queue)
        clock.advance_to(at)
        plan = plans[number]
        if index < 0:
            view = flow.submit(plan.form, actor=staff.clerk(plan))
            plan.app_id, plan.receipt_no = view.id, view.receipt_no
        else:
            view, refused = _perform(flow, plan, plan.steps[index].action, staff)
            refusals += refused
        if view is not None:
            states[number] = view.state
            transitions += 1
        if index + 1 < len(plan.steps) and plan.steps[index + 1].at <= closed_at:
            heapq.heappush(queue, (plan.steps[index + 1].at, number, index + 1))
        if progress is not None and task is not None:
            today = at.astimezone(CST).date()
            if today != shown_day:
                shown_day = today
                progress.update(task, description=f"Replaying {today:%Y-%m-%d}")
            progress.advance(task)
    clock.advance_to(closed_at)
    overdue = len(flow.overdue(limit=OVERDUE_LIMIT))
    overdue_reviews = len(flow.overdue_reviews(limit=OVERDUE_LIMIT))
    elapsed = time.perf_counter() - started
    by_state = Counter(states.values())
    return DaySummary(
        day=planner.last_day,
        closed_at=closed_at,
        applications=len(plans),
        by_state={s: by_state.get(s, 0) for s in wf.State},
        transitions=transitions,
        counter_refusals=refusals,
        overdue=overdue,
        overdue_reviews=overdue_reviews,
        elapsed_seconds=elapsed,
    )


def _perform(
    flow: wf.Workflow, plan: _Plan, action: str, staff: _Staff
) -> tuple[wf.ApplicationView | None, int]:
    """Fire one planned step; return the new view (None if refused) and the refusals counted."""
    app_id = plan.app_id
    assert app_id is not None
    if action == "transmit":
        return flow.transmit(app_id, actor=staff.clerk(plan)), 0
    if action == "approve":
        return flow.approve(app_id, actor=staff.reviewer(plan)), 0
    if action == "reject":
        assert plan.rejection is not None
        ground, note = plan.rejection
        return flow.reject(app_id, actor=staff.reviewer(plan), ground=ground, note=note), 0
    if action == "produce":
        return flow.produce(app_id, actor=staff.producer(plan)), 0
    if action == "mark_ready":
        return flow.mark_ready(app_id, actor=staff.clerk(plan)), 0
    if action == "turned_away":
        # The applicant has the receipt but forgot the old card: no card leaves the counter.
        try:
            flow.collect(app_id, actor=staff.clerk(plan), receipt_no=plan.receipt_no)
        except wf.GuardFailed as exc:
            if exc.guard != OLD_CARD_GUARD:
                raise
            return None, 1
        raise RuntimeError("a renewed card was handed out without the old card being returned")
    if action == "collect":
        return (
            flow.collect(
                app_id,
                actor=staff.clerk(plan),
                receipt_no=plan.receipt_no,
                old_card_returned=plan.form.kind in RENEWALS,
            ),
            0,
        )
    raise ValueError(f"unknown step {action!r}")


# -- the command line -------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workflow.demo",
        description="Replay a realistic stretch of remote acceptance of resident identity cards "
        "into a fresh SQLite database and summarise the day it ends on.",
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=DEFAULT_DB,
        metavar="PATH",
        help=f"SQLite database file, recreated on every run (default: {DEFAULT_DB})",
    )
    parser.add_argument(
        "--applications",
        type=_positive,
        default=DEFAULT_APPLICATIONS,
        metavar="N",
        help=f"number of applications (default: {DEFAULT_APPLICATIONS})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        metavar="N",
        help=f"seed of the simulation: the same seed, the same counts (default: {DEFAULT_SEED})",
    )
    return parser


def _last_closed_day() -> date:
    """The latest CST date whose office hours are over, so the replay lies in the past."""
    now = datetime.now(CST)
    return now.date() if now.time() >= CLOSES else now.date() - timedelta(days=1)


def _recreate(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def _database_counts(url: str) -> tuple[dict[str, int], int]:
    """Applications per state and transition-log rows, read straight from the tables."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT state, count(*) FROM applications GROUP BY state"))
            by_state = {str(state): int(n) for state, n in rows}
            log_rows = conn.execute(sa.text("SELECT count(*) FROM transition_log")).scalar_one()
    finally:
        engine.dispose()
    return by_state, int(log_rows)


def _summary_table(summary: DaySummary, path: Path) -> Table:
    table = Table(
        title=f"Remote acceptance at the close of {summary.day:%Y-%m-%d} (CST)",
        show_header=False,
    )
    table.add_column(style="bold", no_wrap=True)
    table.add_column(justify="right", overflow="fold")
    for state in wf.State:
        table.add_row(f"{state}", str(summary.by_state[state]))
    table.add_row("applications", str(summary.applications), end_section=True)
    table.add_row("in progress (not rejected or collected)", str(summary.intermediate))
    table.add_row("overdue (not ready 60 days after submission)", str(summary.overdue))
    table.add_row("overdue reviews (undecided after 5 days)", str(summary.overdue_reviews))
    table.add_row("turned away: old card not handed back", str(summary.counter_refusals))
    table.add_row("transitions (submissions included)", str(summary.transitions), end_section=True)
    table.add_row("elapsed wall time", f"{summary.elapsed_seconds:.2f} s")
    table.add_row("transitions per second", f"{summary.transitions_per_second:,.0f}")
    table.add_row("database", str(path))
    return table


_KIND_LABEL = {
    wf.Kind.RENEWAL: "renewal",
    wf.Kind.DAMAGED_RENEWAL: "damaged",
    wf.Kind.REPLACEMENT: "replacement",
}


def _late_table(
    title: str, views: Sequence[wf.ApplicationView], *, since: datetime, review: bool
) -> Table:
    """A few late applications, the citizen number masked (and no name, no receipt)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("citizen no.", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("accepted -> hukou", no_wrap=True)
    table.add_column("late", justify="right", no_wrap=True)
    for view in views:
        due = view.review_due_at if review else view.due_at
        assert due is not None
        table.add_row(
            mask_citizen_id(view.citizen_id),
            _KIND_LABEL[view.kind],
            str(view.state),
            f"{view.acceptance_region} -> {view.hukou_region}",
            f"{(since - due).days} d",
        )
    return table


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the process exit code."""
    args = _parser().parse_args(argv)
    path: Path = args.db.resolve()
    url = _recreate(path)
    wf.upgrade(url)
    first_day = _last_closed_day() - timedelta(days=PERIOD_DAYS - 1)
    clock = SimulatedClock(datetime.combine(first_day, clock_time(0, 0), CST))
    console = Console()
    points = "; ".join(f"{c.name} ({c.code})" for c, _ in ACCEPTANCE_POINTS)
    console.print(
        f"Replaying {PERIOD_DAYS} days of remote acceptance, {args.applications} applications "
        f"(seed {args.seed}), at the acceptance points of {points}."
    )
    with wf.Workflow(url, clock=clock) as flow:
        with Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            summary = run_day(
                flow,
                applications=args.applications,
                rng=random.Random(args.seed),
                clock=clock,
                progress=progress,
            )
        overdue = flow.overdue(limit=5)
        overdue_reviews = flow.overdue_reviews(limit=5)

    console.print(_summary_table(summary, path))
    if overdue:
        title = f"Overdue applications (first {len(overdue)} of {summary.overdue})"
        console.print(_late_table(title, overdue, since=summary.closed_at, review=False))
    if overdue_reviews:
        title = f"Overdue reviews (first {len(overdue_reviews)} of {summary.overdue_reviews})"
        console.print(_late_table(title, overdue_reviews, since=summary.closed_at, review=True))

    by_state, log_rows = _database_counts(url)
    expected = {str(s): n for s, n in summary.by_state.items() if n}
    if by_state != expected or log_rows != summary.transitions:
        console.print(
            f"[red]The database disagrees with the replay: {by_state} and {log_rows} log rows, "
            f"expected {expected} and {summary.transitions}[/red]"
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
