"""The demo that ``make demo`` runs: ``python -m workflow.demo``.

It builds a fresh SQLite database (``var/demo.db`` by default) and replays 90 days of the three
identity-card systems side by side, ending with one ordinary working day, so that the day closes
with the backlog real offices have:

- remote acceptance at four acceptance points in three provinces: cards collected, some
  applications refused by the household-registration county, some still waiting for review,
  production or collection, a few overdue, and a few renewal applicants turned away at the counter
  because they forgot to bring the old card;
- loss reporting: citizens report a lost card at an office; some find it again and withdraw the
  report in person, some apply for a replacement (which reuses their report; the others' reports
  are filed by the application itself), and collecting a replacement closes the report; a few
  replacement applicants report the loss again at a police station and are told it already is;
- lost and found: cards handed in at offices are returned to owners who have no replacement on its
  way (withdrawing their report), or destroyed when the owner has one; some owners come for the card
  anyway and are refused.

Everything is driven by a seeded `random.Random` and a simulated clock, so the same seed gives the
same counts on every run. The simulation keeps its own ledger of every record's state and of the
history rows each machine should have written, and the run ends by comparing it with the database
and by `Workflow.verify`. Citizen numbers are shown masked, receipt numbers never.
"""

from __future__ import annotations

import argparse
import heapq
import random
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import time as clock_time
from decimal import Decimal
from enum import Enum
from itertools import pairwise
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
from workflow.models.citizen_id import check_character, mask_citizen_id
from workflow.models.enums import NATIONAL_FEE, RENEWALS
from workflow.models.tables import Application, FoundCard, LossReport, TransitionLog

CST = timezone(timedelta(hours=8), "CST")
"""China Standard Time: the acceptance points' office hours are local time."""
OPENS = clock_time(8, 30)
CLOSES = clock_time(17, 30)
PERIOD_DAYS = 90
"""Days replayed, the last of them being the day the demo ends on."""

DEFAULT_DB = Path("var/demo.db")
DEMO_MARKER = 0x49444344
"""``PRAGMA application_id`` of every database the demo creates (``IDCD`` in ASCII): a later
run replaces only a file that carries it, unless ``--force``."""
DEFAULT_APPLICATIONS = 300
DEFAULT_SEED = 20_260_301
OLD_CARD_GUARD = "old_card_handed_back"
NO_REPLACEMENT_GUARD = "no_replacement"
OVERDUE_LIMIT = 10_000
"""The largest ``limit`` the overdue queries accept."""

APPLICATION = wf.APPLICATION.name
LOSS_REPORT = wf.LOSS_REPORT.name
FOUND_CARD = wf.FOUND_CARD.name
MACHINE_NAMES: tuple[str, ...] = tuple(m.name for m in wf.MACHINES)
"""The machines, in the order the summary lists them."""


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


COUNTIES: dict[str, County] = {
    c.code: c for c in (*(p for p, _ in ACCEPTANCE_POINTS), *HUKOU_COUNTIES)
}
"""Every county of the demo by code: the offices where cards are reported lost or handed in."""


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
    by_state: dict[wf.State, int]
    """Applications per state."""
    loss_reports: dict[wf.LossReportState, int]
    """Loss reports per state."""
    reports_filed_by_application: int
    """Loss reports filed by a replacement application (the others were made at a counter)."""
    found_cards: dict[wf.FoundCardState, int]
    """Found cards per state."""
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
    def records(self) -> int:
        """Records of every machine."""
        return self.applications + sum(self.loss_reports.values()) + sum(self.found_cards.values())

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
# turned away once at the counter, a refusal, a collected replacement (whose applicant also tries
# to report the loss at a police station), a review and a production overdue, an application
# handed in on the last day, a replacement collected after the loss was reported at an office,
# and a replacement on its way when the lost card is handed in (its owner is refused the card,
# which is destroyed). (fate, forgets the old card, kind, submitted this many days before the
# last day: range)
_SCENARIOS: tuple[tuple[Fate, bool, wf.Kind | None, tuple[int, int]], ...] = (
    (Fate.NORMAL, True, wf.Kind.RENEWAL, (70, 88)),
    (Fate.REJECTED, False, None, (10, 80)),
    (Fate.NORMAL, False, wf.Kind.REPLACEMENT, (70, 88)),
    (Fate.REVIEW_STALLED, False, None, (10, 50)),
    (Fate.PRODUCTION_DELAYED, False, None, (62, 85)),
    (Fate.NORMAL, False, None, (0, 0)),
    (Fate.NORMAL, False, wf.Kind.REPLACEMENT, (62, 80)),
    (Fate.NORMAL, False, wf.Kind.REPLACEMENT, (25, 60)),
)
_REPORTS_AGAIN = 2
"""The scenario whose replacement applicant reports the loss again at a police station."""
_REPORTED_FIRST = 6
"""The scenario whose applicant reported the loss at an office before applying."""
_CARD_HANDED_IN = 7
"""The scenario whose lost card is handed in while the replacement is on its way."""


class Loss(Enum):
    """How the story of a lost card goes when its owner does not apply for a replacement."""

    FINDS_IT = "finds_it"
    """The owner finds the card and withdraws the report in person."""
    HANDED_IN = "handed_in"
    """A finder hands the card in at an office; the owner collects it there."""
    STILL_LOST = "still_lost"
    """Nothing more happens in the period."""


_LOSSES = (Loss.FINDS_IT, Loss.HANDED_IN, Loss.STILL_LOST)
_LOSS_WEIGHTS = (45, 25, 30)
_LOSS_SHARE = 0.12
"""Citizens who report a loss and do not apply, per application."""
_UNREPORTED_SHARE = 0.04
"""Cards handed in whose owners never reported them lost, per application."""

# The opening stories of lost cards: (outcome, reported this many days before the last day:
# range). Then a card nobody reported lost, handed in a few days before the end and still held.
_LOSS_SCENARIOS: tuple[tuple[Loss, tuple[int, int]], ...] = (
    (Loss.FINDS_IT, (55, 80)),
    (Loss.HANDED_IN, (55, 80)),
    (Loss.STILL_LOST, (10, 40)),
)
_UNCLAIMED_SCENARIO = (2, 6)


@dataclass(frozen=True)
class _Step:
    at: datetime
    action: str
    unit: str = ""
    """The office where an errand's step happens (application steps derive theirs)."""


@dataclass
class _Plan:
    """One application: its form and its steps, the submission first."""

    number: int
    form: wf.SubmitApplication
    submit_at: datetime
    steps: list[_Step]
    rejection: tuple[wf.RejectionGround, str] | None = None
    app_id: uuid.UUID | None = None
    receipt_no: str = field(default="", repr=False)

    def collect_at(self) -> datetime | None:
        """When the card is collected (None if the story has no collection)."""
        return next((s.at for s in self.steps if s.action == "collect"), None)


@dataclass
class _Errand:
    """A lost card's story outside an application, or a found card's: its steps in time order."""

    number: int
    citizen_id: str = field(repr=False)
    steps: list[_Step]
    report_id: uuid.UUID | None = None
    card_id: uuid.UUID | None = None


class _Planner:
    """Draws the citizens and the times of every step of their stories."""

    def __init__(self, rng: random.Random, first_day: date) -> None:
        self.rng = rng
        self.first_day = first_day
        self.last_day = first_day + timedelta(days=PERIOD_DAYS - 1)
        self.seen: set[str] = set()

    def plans(self, count: int) -> list[_Plan]:
        return [self.plan(n) for n in range(count)]

    def plan(self, number: int) -> _Plan:
        rng = self.rng
        point, hukou = self.residence()
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
        submit_at = self.during(self.last_day - timedelta(days=days_before))
        plan = _Plan(number, self.form(kind, point, hukou), submit_at, [_Step(submit_at, "submit")])
        self.schedule(plan, fate, forgets, scenario=number < len(_SCENARIOS))
        return plan

    def residence(self) -> tuple[County, County]:
        """Where a citizen lives (an acceptance point) and their household-registration county."""
        rng = self.rng
        point = rng.choices([c for c, _ in ACCEPTANCE_POINTS], [w for _, w in ACCEPTANCE_POINTS])[0]
        hukou = rng.choice([c for c in HUKOU_COUNTIES if c.code != point.code])
        return point, hukou

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

    def during(self, day: date) -> datetime:
        """A moment of the office hours of ``day`` (CST), as aware UTC."""
        moment = datetime.combine(day, OPENS, CST) + timedelta(
            minutes=self.rng.randint(0, 9 * 60 - 5)
        )
        return moment.astimezone(UTC)

    def office_hours(self, moment: datetime) -> datetime:
        """``moment``, or the next opening of the offices (plus a short queue) if they are shut."""
        local = moment.astimezone(CST)
        if OPENS <= local.time() <= CLOSES:
            return moment
        day = local.date() if local.time() < OPENS else local.date() + timedelta(days=1)
        opening = datetime.combine(day, OPENS, CST) + timedelta(minutes=self.rng.randint(0, 90))
        return opening.astimezone(UTC)

    def later(self, moment: datetime, fewest: float, most: float) -> datetime:
        """Some days (between ``fewest`` and ``most``) after ``moment``, in office hours."""
        return self.office_hours(moment + timedelta(days=self.rng.uniform(fewest, most)))

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

    # -- lost and found cards ---------------------------------------------------------------

    def errands(self, plans: Sequence[_Plan]) -> list[_Errand]:
        """The lost and found cards' stories, numbered after the applications.

        First the opening scenarios, then the replacement applicants' (a loss reported before
        applying, a loss reported again, the lost card handed in), then the citizens who do not
        apply and the cards nobody reported lost.
        """
        rng = self.rng
        errands: list[_Errand] = []

        def add(citizen_id: str, steps: list[_Step]) -> None:
            if not steps:
                return
            if any(a.at >= b.at for a, b in pairwise(steps)):
                raise RuntimeError("an errand's steps are out of order")
            errands.append(_Errand(len(plans) + len(errands), citizen_id, steps))

        for outcome, days in _LOSS_SCENARIOS:
            add(*self.lost_card(outcome, days))
        add(*self.unreported_card(_UNCLAIMED_SCENARIO, owner_comes=False))
        for plan in plans:
            if plan.form.kind is not wf.Kind.REPLACEMENT:
                continue
            citizen = plan.form.citizen_id
            if plan.number < len(_SCENARIOS):
                if plan.number == _REPORTED_FIRST:
                    add(citizen, self.report_before(plan))
                if plan.number == _REPORTS_AGAIN:
                    add(citizen, self.report_again(plan))
                if plan.number == _CARD_HANDED_IN:
                    add(citizen, self.card_of_replaced(plan, refused_first=True))
                continue
            if rng.random() < 0.35:
                add(citizen, self.report_before(plan))
            if rng.random() < 0.05:
                add(citizen, self.report_again(plan))
            if rng.random() < 0.12:
                add(citizen, self.card_of_replaced(plan, refused_first=rng.random() < 0.4))
        for _ in range(round(len(plans) * _LOSS_SHARE)):
            outcome = rng.choices(_LOSSES, _LOSS_WEIGHTS)[0]
            days_before = rng.randint(0, PERIOD_DAYS - 1)
            add(*self.lost_card(outcome, (days_before, days_before)))
        for _ in range(round(len(plans) * _UNREPORTED_SHARE)):
            days_before = rng.randint(0, PERIOD_DAYS - 1)
            add(*self.unreported_card((days_before, days_before), owner_comes=rng.random() < 0.75))
        return errands

    def found_office(self, home: str) -> str:
        """Where a lost card is handed in: mostly where its owner lives, else anywhere."""
        if self.rng.random() < 0.6:
            return home
        return self.rng.choice(sorted(COUNTIES))

    def lost_card(self, outcome: Loss, days_before: tuple[int, int]) -> tuple[str, list[_Step]]:
        """A citizen who reports a loss at an office and does not apply for a replacement."""
        rng = self.rng
        point, hukou = self.residence()
        citizen = self.citizen_id(hukou)
        unit = point.code if rng.random() < 0.75 else hukou.code
        reported = self.during(self.last_day - timedelta(days=rng.randint(*days_before)))
        steps = [_Step(reported, "report_loss", unit)]
        if outcome is Loss.FINDS_IT:
            steps.append(_Step(self.later(reported, 1, 30), "withdraw", point.code))
        elif outcome is Loss.HANDED_IN:
            office = self.found_office(point.code)
            handed_in = self.later(reported, 1, 30)
            steps.append(_Step(handed_in, "hand_in", office))
            steps.append(_Step(self.later(handed_in, 1, 12), "return", office))
        return citizen, steps

    def unreported_card(
        self, days_before: tuple[int, int], *, owner_comes: bool
    ) -> tuple[str, list[_Step]]:
        """A card handed in whose owner never reported it lost (nor applied)."""
        point, hukou = self.residence()
        citizen = self.citizen_id(hukou)
        office = self.found_office(point.code)
        handed_in = self.during(self.last_day - timedelta(days=self.rng.randint(*days_before)))
        steps = [_Step(handed_in, "hand_in", office)]
        if owner_comes:
            steps.append(_Step(self.later(handed_in, 1, 20), "return", office))
        return citizen, steps

    def report_before(self, plan: _Plan) -> list[_Step]:
        """The replacement applicant reported the loss at an office a few days before applying
        (the application then reuses the report); nothing if that is before the period."""
        rng = self.rng
        day = plan.submit_at.astimezone(CST).date() - timedelta(days=rng.randint(1, 15))
        unit = plan.form.acceptance_region if rng.random() < 0.8 else plan.form.hukou_region
        if day < self.first_day:
            return []
        return [_Step(self.during(day), "report_loss", unit)]

    def report_again(self, plan: _Plan) -> list[_Step]:
        """The replacement applicant also goes to a police station to report the loss, while the
        report the application filed is active (before the replacement is collected)."""
        at = self.later(plan.submit_at, 1, 4)
        collect = plan.collect_at()
        if collect is not None and at >= collect:
            return []
        unit = self.rng.choice((plan.form.acceptance_region, plan.form.hukou_region))
        return [_Step(at, "report_again", unit)]

    def card_of_replaced(self, plan: _Plan, *, refused_first: bool) -> list[_Step]:
        """The lost card is handed in while the replacement is on its way (not refused, not yet
        collected): it is destroyed, after the owner, come to collect it, was refused."""
        if plan.rejection is not None:
            return []
        office = self.found_office(plan.form.acceptance_region)
        at = self.later(plan.submit_at, 1, 6)
        steps = [_Step(at, "hand_in", office)]
        if refused_first:
            at = self.later(at, 0.5, 3)
            steps.append(_Step(at, "return_refused", office))
        at = self.later(at, 0.005, 0.05)
        steps.append(_Step(at, "destroy", office))
        collect = plan.collect_at()
        if collect is not None and at >= collect:
            return []
        return steps


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

    def clerk_at(self, unit: str) -> wf.Actor:
        return self.get(wf.Role.ACCEPTANCE_CLERK, unit)

    def reviewer(self, plan: _Plan) -> wf.Actor:
        return self.get(wf.Role.HUKOU_REVIEWER, plan.form.hukou_region)

    def producer(self, plan: _Plan) -> wf.Actor:
        return self.get(wf.Role.CARD_PRODUCER, plan.form.acceptance_region[:2])


class _Replay:
    """Fires the planned steps and keeps the ledger: every record's state as the rules of the
    three systems say it must be, and the history rows each machine must have written.

    The loss reports that commands file, close or withdraw as a side effect (a replacement
    submitted, collected; a found card returned) are entered here from the rules, not read back.
    """

    def __init__(self, flow: wf.Workflow, staff: _Staff) -> None:
        self.flow = flow
        self.staff = staff
        self.applications: dict[int, wf.State] = {}
        self.reports: list[wf.LossReportState] = []
        self.filed_by_application = 0
        self.active: dict[str, int] = {}
        """Citizen number → index in ``reports`` of the citizen's active report."""
        self.cards: dict[uuid.UUID, wf.FoundCardState] = {}
        self.rows: Counter[str] = Counter()
        self.refusals: Counter[Refusal] = Counter()

    def fire(self, story: _Plan | _Errand, index: int) -> bool:
        """Fire one step; return whether it wrote a transition (False: a planned refusal)."""
        if isinstance(story, _Plan):
            return self._application(story, story.steps[index].action)
        return self._errand(story, story.steps[index])

    def _report_filed(self, citizen_id: str) -> None:
        if citizen_id in self.active:
            raise RuntimeError("the ledger has two active loss reports for one citizen")
        self.active[citizen_id] = len(self.reports)
        self.reports.append(wf.LossReportState.REPORTED)
        self.rows[LOSS_REPORT] += 1

    def _report_ended(self, citizen_id: str, state: wf.LossReportState) -> None:
        self.reports[self.active.pop(citizen_id)] = state
        self.rows[LOSS_REPORT] += 1

    def _application(self, plan: _Plan, action: str) -> bool:
        flow, staff = self.flow, self.staff
        citizen = plan.form.citizen_id
        replacement = plan.form.kind is wf.Kind.REPLACEMENT
        if action == "submit":
            view = flow.submit(plan.form, actor=staff.clerk(plan))
            plan.app_id, plan.receipt_no = view.id, view.receipt_no
            # Applying for a replacement counts as reporting the loss, unless it is reported.
            if replacement and citizen not in self.active:
                self._report_filed(citizen)
                self.filed_by_application += 1
        else:
            app_id = plan.app_id
            assert app_id is not None
            if action == "turned_away":
                # The applicant has the receipt but forgot the old card: no card leaves the counter.
                try:
                    flow.collect(app_id, actor=staff.clerk(plan), receipt_no=plan.receipt_no)
                except wf.GuardFailed as exc:
                    if exc.guard != OLD_CARD_GUARD:
                        raise
                    self.refusals[Refusal.OLD_CARD_KEPT] += 1
                    return False
                raise RuntimeError(
                    "a renewed card was handed out without the old card being returned"
                )
            view = _perform(flow, plan, app_id, action, staff)
            # Collecting a replacement closes the loss report: the lost card stays invalid.
            if action == "collect" and replacement and citizen in self.active:
                self._report_ended(citizen, wf.LossReportState.CLOSED)
        self.applications[plan.number] = view.state
        self.rows[APPLICATION] += 1
        return True

    def _errand(self, errand: _Errand, step: _Step) -> bool:
        flow = self.flow
        clerk = self.staff.clerk_at(step.unit)
        citizen = errand.citizen_id
        action = step.action
        if action == "report_loss":
            report = flow.report_loss(citizen, actor=clerk)
            errand.report_id = report.id
            self._report_filed(citizen)
            _expect(report.state, self.reports[self.active[citizen]])
        elif action == "withdraw":
            assert errand.report_id is not None
            report = flow.withdraw_loss_report(errand.report_id, actor=clerk, card_presented=True)
            self._report_ended(citizen, report.state)
            _expect(report.state, wf.LossReportState.WITHDRAWN)
        elif action == "report_again":
            # The replacement application reported the loss already: the counter says so.
            try:
                flow.report_loss(citizen, actor=clerk)
            except wf.DuplicateLossReport:
                self.refusals[Refusal.ALREADY_REPORTED] += 1
                return False
            raise RuntimeError("a second active loss report was filed for one citizen")
        elif action == "hand_in":
            card = flow.register_found_card(citizen, actor=clerk)
            errand.card_id = card.id
            self._card(card)
        elif action == "return":
            assert errand.card_id is not None
            card = flow.return_found_card(errand.card_id, actor=clerk, identity_checked=True)
            self._card(card)
            # Handing the card back withdraws the owner's report, if there is one.
            if citizen in self.active:
                self._report_ended(citizen, wf.LossReportState.WITHDRAWN)
        elif action == "return_refused":
            # The owner came for the card, but a replacement is on its way: it is not returned.
            assert errand.card_id is not None
            try:
                flow.return_found_card(errand.card_id, actor=clerk, identity_checked=True)
            except wf.GuardFailed as exc:
                if exc.guard != NO_REPLACEMENT_GUARD:
                    raise
                self.refusals[Refusal.OWNER_HAS_REPLACEMENT] += 1
                return False
            raise RuntimeError("a found card was handed back although a replacement is on its way")
        elif action == "destroy":
            assert errand.card_id is not None
            self._card(flow.destroy_found_card(errand.card_id, actor=clerk))
        else:
            raise ValueError(f"unknown step {action!r}")
        return True

    def _card(self, card: wf.FoundCardView) -> None:
        self.cards[card.id] = card.state
        self.rows[FOUND_CARD] += 1


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
    planner = _Planner(rng, clock().astimezone(CST).date())
    closed_at = datetime.combine(planner.last_day, CLOSES, CST).astimezone(UTC)
    plans = planner.plans(applications)
    stories: list[_Plan | _Errand] = [*plans, *planner.errands(plans)]
    replay = _Replay(flow, _Staff(rng))

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
    started = time.perf_counter()
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
    clock.advance_to(closed_at)
    overdue = len(flow.overdue(limit=OVERDUE_LIMIT))
    overdue_reviews = len(flow.overdue_reviews(limit=OVERDUE_LIMIT))
    elapsed = time.perf_counter() - started
    by_state = Counter(replay.applications.values())
    reports = Counter(replay.reports)
    cards = Counter(replay.cards.values())
    return DaySummary(
        day=planner.last_day,
        closed_at=closed_at,
        applications=len(plans),
        by_state={s: by_state[s] for s in wf.State},
        loss_reports={s: reports[s] for s in wf.LossReportState},
        reports_filed_by_application=replay.filed_by_application,
        found_cards={s: cards[s] for s in wf.FoundCardState},
        transitions=sum(replay.rows.values()),
        transitions_by_machine={m: replay.rows[m] for m in MACHINE_NAMES},
        refusals={r: replay.refusals[r] for r in Refusal},
        overdue=overdue,
        overdue_reviews=overdue_reviews,
        elapsed_seconds=elapsed,
        held_cards=tuple(c for c, s in replay.cards.items() if s is wf.FoundCardState.HELD),
    )


def _perform(
    flow: wf.Workflow, plan: _Plan, app_id: uuid.UUID, action: str, staff: _Staff
) -> wf.ApplicationView:
    """Fire one planned step of an application (not the submission) and return the new view."""
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


# -- the command line -------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workflow.demo",
        description="Replay a realistic stretch of remote acceptance, loss reporting and lost "
        "and found of resident identity cards into a fresh SQLite database and summarise the "
        "day it ends on.",
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=DEFAULT_DB,
        metavar="PATH",
        help="SQLite database file, deleted and recreated on every run; a file the demo did not "
        f"create is refused unless --force (default: {DEFAULT_DB})",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the file even if the demo did not create it (its data is lost)",
    )
    parser.add_argument(
        "--applications",
        type=_positive,
        default=DEFAULT_APPLICATIONS,
        metavar="N",
        help="number of applications; loss reports and found cards are in proportion "
        f"(default: {DEFAULT_APPLICATIONS})",
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


_SQLITE_MAGIC = b"SQLite format 3\x00"
_APPLICATION_ID_OFFSET = 68
"""Where a SQLite file's header keeps ``PRAGMA application_id`` (4 bytes, big-endian)."""


def is_demo_database(path: Path) -> bool:
    """Whether ``path`` is a SQLite file the demo created: its header carries `DEMO_MARKER`.

    Only the file's first 72 bytes are read; the file is not opened as a database."""
    try:
        with path.open("rb") as file:
            header = file.read(_APPLICATION_ID_OFFSET + 4)
    except OSError:
        return False
    return (
        header.startswith(_SQLITE_MAGIC)
        and len(header) == _APPLICATION_ID_OFFSET + 4
        and int.from_bytes(header[_APPLICATION_ID_OFFSET:], "big") == DEMO_MARKER
    )


def refusal(path: Path, *, elsewhere: str = "choose another file with --db") -> str | None:
    """Why the demo must not delete ``path``, or None when it may: the file is missing or
    empty, or it is a database the demo created (`is_demo_database`). ``elsewhere`` says how
    to choose another file."""
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_file():
        return f"{path} exists and is not a file; {elsewhere}"
    if path.stat().st_size == 0 or is_demo_database(path):
        return None
    return (
        f"{path} exists and was not created by the demo, which deletes and recreates the "
        f"database it runs on; pass --force to replace it (its data is lost), or {elsewhere}"
    )


def _recreate(path: Path) -> str:
    """Delete ``path`` (and its journals) and create it again, empty and marked as the demo's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    # Marked before the library opens it (in WAL mode), so the mark is in the file's header.
    connection = sqlite3.connect(path)
    try:
        connection.execute(f"PRAGMA application_id = {DEMO_MARKER}")
        connection.commit()
    finally:
        connection.close()
    return f"sqlite:///{path}"


@dataclass(frozen=True)
class _Counts:
    """Records per state of each machine and transition-log rows of each machine."""

    states: dict[str, dict[str, int]]
    rows: dict[str, int]


def _database_counts(url: str) -> _Counts:
    """What the database holds, read straight from the tables (not through the library)."""
    columns = {
        APPLICATION: Application.state,
        LOSS_REPORT: LossReport.state,
        FOUND_CARD: FoundCard.state,
    }
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            states = {
                machine: {
                    str(state): int(n)
                    for state, n in conn.execute(
                        sa.select(column, sa.func.count()).group_by(column)
                    )
                }
                for machine, column in columns.items()
            }
            machine = TransitionLog.machine
            rows = conn.execute(sa.select(machine, sa.func.count()).group_by(machine))
            log_rows = {str(m): int(n) for m, n in rows}
    finally:
        engine.dispose()
    return _Counts(states, log_rows)


def _tracked_counts(summary: DaySummary) -> _Counts:
    """The same counts from the simulation's ledger (states nobody reached left out)."""
    per_machine: dict[str, dict[str, int]] = {
        APPLICATION: {str(s): n for s, n in summary.by_state.items()},
        LOSS_REPORT: {str(s): n for s, n in summary.loss_reports.items()},
        FOUND_CARD: {str(s): n for s, n in summary.found_cards.items()},
    }
    return _Counts(
        {m: {s: n for s, n in states.items() if n} for m, states in per_machine.items()},
        {m: n for m, n in summary.transitions_by_machine.items() if n},
    )


def _table(title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(justify="right", overflow="fold")
    return table


def _summary_tables(summary: DaySummary, path: Path) -> list[Table]:
    applications = _table(f"Remote acceptance at the close of {summary.day:%Y-%m-%d} (CST)")
    for state in wf.State:
        applications.add_row(f"{state}", str(summary.by_state[state]))
    applications.add_row("applications", str(summary.applications), end_section=True)
    applications.add_row("in progress (not rejected or collected)", str(summary.intermediate))
    applications.add_row("overdue (not ready 60 days after submission)", str(summary.overdue))
    applications.add_row("overdue reviews (undecided after 5 days)", str(summary.overdue_reviews))

    reports = _table("Loss reporting")
    for report_state in wf.LossReportState:
        reports.add_row(f"{report_state}", str(summary.loss_reports[report_state]))
    filed = summary.reports_filed_by_application
    reports.add_row("loss reports", str(sum(summary.loss_reports.values())), end_section=True)
    reports.add_row("reported at an office", str(sum(summary.loss_reports.values()) - filed))
    reports.add_row("filed by a replacement application", str(filed))

    cards = _table("Lost and found")
    for card_state in wf.FoundCardState:
        cards.add_row(f"{card_state}", str(summary.found_cards[card_state]))
    cards.add_row("found cards", str(sum(summary.found_cards.values())))

    refusals = _table("Refusals")
    for refusal in Refusal:
        refusals.add_row(refusal.value, str(summary.refusals[refusal]))

    run = _table("The run")
    labels = {APPLICATION: "applications", LOSS_REPORT: "loss reports", FOUND_CARD: "found cards"}
    for machine in MACHINE_NAMES:
        run.add_row(
            f"transitions: {labels.get(machine, machine)}",
            str(summary.transitions_by_machine[machine]),
        )
    run.add_row("transitions (all machines)", str(summary.transitions), end_section=True)
    run.add_row("elapsed wall time", f"{summary.elapsed_seconds:.2f} s")
    run.add_row("transitions per second", f"{summary.transitions_per_second:,.0f}")
    run.add_row("database", str(path))
    return [applications, reports, cards, refusals, run]


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


def _held_table(title: str, cards: Sequence[wf.FoundCardView], *, since: datetime) -> Table:
    """A few found cards waiting for their owners, the citizen number masked."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("citizen no.", no_wrap=True)
    table.add_column("held at", no_wrap=True)
    table.add_column("handed in", no_wrap=True)
    table.add_column("waiting", justify="right", no_wrap=True)
    for card in cards:
        office = COUNTIES.get(card.held_unit)
        table.add_row(
            mask_citizen_id(card.citizen_id),
            f"{card.held_unit} {office.name if office else ''}".rstrip(),
            f"{card.registered_at.astimezone(CST):%Y-%m-%d}",
            f"{(since - card.registered_at).days} d",
        )
    return table


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    path: Path = args.db.resolve()
    refused = None if args.force else refusal(path)
    if refused is not None:
        parser.exit(2, f"{parser.prog}: error: {refused}\n")
    url = _recreate(path)
    wf.upgrade(url)
    first_day = _last_closed_day() - timedelta(days=PERIOD_DAYS - 1)
    clock = SimulatedClock(datetime.combine(first_day, clock_time(0, 0), CST))
    console = Console()
    points = "; ".join(f"{c.name} ({c.code})" for c, _ in ACCEPTANCE_POINTS)
    console.print(
        f"Replaying {PERIOD_DAYS} days of remote acceptance, loss reporting and lost and found, "
        f"{args.applications} applications (seed {args.seed}), at the acceptance points of "
        f"{points}, and at offices across the country."
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
        held = [flow.get_found_card(card_id) for card_id in summary.held_cards[:5]]
        report = flow.verify()

    for table in _summary_tables(summary, path):
        console.print(table)
    if overdue:
        title = f"Overdue applications (first {len(overdue)} of {summary.overdue})"
        console.print(_late_table(title, overdue, since=summary.closed_at, review=False))
    if overdue_reviews:
        title = f"Overdue reviews (first {len(overdue_reviews)} of {summary.overdue_reviews})"
        console.print(_late_table(title, overdue_reviews, since=summary.closed_at, review=True))
    if held:
        title = (
            f"Found cards waiting for their owners (first {len(held)} of {len(summary.held_cards)})"
        )
        console.print(_held_table(title, held, since=summary.closed_at))

    console.print(
        f"verify(): {report.records} records and {report.rows} history rows checked, "
        f"{len(report.broken)} broken."
    )
    failed = False
    for broken in report.broken[:10]:
        console.print(f"[red]  {broken.machine} {broken.record_id}: {broken.message}[/red]")
        failed = True
    if (report.records, report.rows) != (summary.records, summary.transitions):
        console.print(
            f"[red]verify() checked {report.records} records and {report.rows} rows, the replay "
            f"made {summary.records} and {summary.transitions}[/red]"
        )
        failed = True
    found, tracked = _database_counts(url), _tracked_counts(summary)
    for machine in MACHINE_NAMES:
        states, rows = found.states.get(machine, {}), found.rows.get(machine, 0)
        expected_states, expected_rows = tracked.states[machine], tracked.rows.get(machine, 0)
        if states != expected_states or rows != expected_rows:
            console.print(
                f"[red]The database disagrees with the replay on {machine}: {states} and "
                f"{rows} log rows, expected {expected_states} and {expected_rows}[/red]"
            )
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
