"""What happens to each record of the demo: the citizens and the time of every step of their
stories, drawn from one seeded `random.Random` before anything is fired.

`plan_period` is the whole job; the parts it uses each own one kind of decision: `Calendar`
(office hours), `Citizens` (who applies, with which form), `ApplicationPlanner` (an
application's fate and steps) and `ErrandPlanner` (lost cards and found cards). They share the
one generator and draw from it in a fixed order, so the same seed plans the same period.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

import workflow as wf
from workflow.demo.data import (
    ACCEPTANCE_POINTS,
    CARD_HANDED_IN,
    CLOSES,
    COUNTIES,
    CST,
    FATE_WEIGHTS,
    FATES,
    GIVEN,
    HUKOU_COUNTIES,
    LOSS_SCENARIOS,
    LOSS_SHARE,
    LOSS_WEIGHTS,
    LOSSES,
    OLD_CODES,
    OPENS,
    PERIOD_DAYS,
    REJECTION_GROUNDS,
    REPORTED_FIRST,
    REPORTS_AGAIN,
    SCENARIOS,
    SURNAMES,
    UNCLAIMED_SCENARIO,
    UNREPORTED_SHARE,
    County,
    Fate,
    Loss,
)
from workflow.models.citizen_id import check_character
from workflow.models.enums import NATIONAL_FEE, RENEWALS


@dataclass(frozen=True)
class Step:
    at: datetime
    action: str
    unit: str = ""
    """The office where an errand's step happens (application steps derive theirs)."""


@dataclass
class Plan:
    """One application: its form and its steps, the submission first."""

    number: int
    form: wf.SubmitApplication
    submit_at: datetime
    steps: list[Step]
    rejection: tuple[wf.RejectionGround, str] | None = None
    app_id: uuid.UUID | None = None
    receipt_no: str = field(default="", repr=False)

    def collect_at(self) -> datetime | None:
        """When the card is collected (None if the story has no collection)."""
        return next((s.at for s in self.steps if s.action == "collect"), None)


@dataclass
class Errand:
    """A lost card's story outside an application, or a found card's: its steps in time order."""

    number: int
    citizen_id: str = field(repr=False)
    steps: list[Step]
    report_id: uuid.UUID | None = None
    card_id: uuid.UUID | None = None


Story = Plan | Errand


@dataclass(frozen=True)
class Period:
    """The planned period: every story, the applications first, and when its last day closes."""

    last_day: date
    closed_at: datetime
    """The close of the last day (aware UTC): steps planned later are not replayed."""
    plans: list[Plan]
    errands: list[Errand]

    @property
    def stories(self) -> list[Story]:
        return [*self.plans, *self.errands]


def plan_period(rng: random.Random, first_day: date, applications: int) -> Period:
    """Plan `PERIOD_DAYS` days from ``first_day`` (a CST date): ``applications`` applications,
    then the lost and found cards' stories, numbered after them."""
    calendar = Calendar(rng, first_day)
    citizens = Citizens(rng, calendar)
    plans = ApplicationPlanner(rng, calendar, citizens).plans(applications)
    errands = ErrandPlanner(rng, calendar, citizens).errands(plans)
    closed_at = datetime.combine(calendar.last_day, CLOSES, CST).astimezone(UTC)
    return Period(calendar.last_day, closed_at, plans, errands)


class Calendar:
    """The period's days and the offices' hours: when a step can happen."""

    def __init__(self, rng: random.Random, first_day: date) -> None:
        self.rng = rng
        self.first_day = first_day
        self.last_day = first_day + timedelta(days=PERIOD_DAYS - 1)

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


class Citizens:
    """Who the citizens are: where they live, their numbers (never twice), their forms."""

    def __init__(self, rng: random.Random, calendar: Calendar) -> None:
        self.rng = rng
        self.calendar = calendar
        self.seen: set[str] = set()

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
            born = self.calendar.last_day - timedelta(days=rng.randint(16 * 365 + 4, 75 * 365))
            first17 = f"{code}{born:%Y%m%d}{rng.randint(1, 999):03d}"
            number = first17 + check_character(first17)
            if number not in self.seen:
                self.seen.add(number)
                return number


class ApplicationPlanner:
    """Each application's form, fate and the time of each of its steps."""

    def __init__(self, rng: random.Random, calendar: Calendar, citizens: Citizens) -> None:
        self.rng = rng
        self.calendar = calendar
        self.citizens = citizens

    def plans(self, count: int) -> list[Plan]:
        return [self.plan(n) for n in range(count)]

    def plan(self, number: int) -> Plan:
        rng = self.rng
        point, hukou = self.citizens.residence()
        if number < len(SCENARIOS):
            fate, forgets, kind, (fewest, most) = SCENARIOS[number]
            days_before = rng.randint(fewest, most)
            kind = kind or rng.choice(list(wf.Kind))
        else:
            kind = rng.choices(list(wf.Kind), (55, 15, 30))[0]
            fate = rng.choices(FATES, FATE_WEIGHTS)[0]
            forgets = kind in RENEWALS and rng.random() < 0.15
            # A fifth of the applications come in on the last day: a busy day at the counter.
            days_before = 0 if rng.random() < 0.2 else rng.randint(1, PERIOD_DAYS - 1)
        submit_at = self.calendar.during(self.calendar.last_day - timedelta(days=days_before))
        form = self.citizens.form(kind, point, hukou)
        plan = Plan(number, form, submit_at, [Step(submit_at, "submit")])
        self.schedule(plan, fate, forgets, scenario=number < len(SCENARIOS))
        return plan

    def schedule(self, plan: Plan, fate: Fate, forgets: bool, *, scenario: bool) -> None:
        rng = self.rng
        at = plan.submit_at

        def step(action: str, delay: timedelta, *, office: bool = True) -> None:
            nonlocal at
            at = at + delay
            if office:
                at = self.calendar.office_hours(at)
            plan.steps.append(Step(at, action))

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


class ErrandPlanner:
    """The lost and found cards' stories: losses reported at an office, cards handed in."""

    def __init__(self, rng: random.Random, calendar: Calendar, citizens: Citizens) -> None:
        self.rng = rng
        self.calendar = calendar
        self.citizens = citizens

    def errands(self, plans: Sequence[Plan]) -> list[Errand]:
        """The lost and found cards' stories, numbered after the applications.

        First the opening scenarios, then the replacement applicants' (a loss reported before
        applying, a loss reported again, the lost card handed in), then the citizens who do not
        apply and the cards nobody reported lost.
        """
        rng = self.rng
        errands: list[Errand] = []

        def add(citizen_id: str, steps: list[Step]) -> None:
            if not steps:
                return
            if any(a.at >= b.at for a, b in pairwise(steps)):
                raise RuntimeError("an errand's steps are out of order")
            errands.append(Errand(len(plans) + len(errands), citizen_id, steps))

        for outcome, days in LOSS_SCENARIOS:
            add(*self.lost_card(outcome, days))
        add(*self.unreported_card(UNCLAIMED_SCENARIO, owner_comes=False))
        for plan in plans:
            if plan.form.kind is wf.Kind.REPLACEMENT:
                for steps in self.replacement_errands(plan):
                    add(plan.form.citizen_id, steps)
        for _ in range(round(len(plans) * LOSS_SHARE)):
            outcome = rng.choices(LOSSES, LOSS_WEIGHTS)[0]
            days_before = rng.randint(0, PERIOD_DAYS - 1)
            add(*self.lost_card(outcome, (days_before, days_before)))
        for _ in range(round(len(plans) * UNREPORTED_SHARE)):
            days_before = rng.randint(0, PERIOD_DAYS - 1)
            add(*self.unreported_card((days_before, days_before), owner_comes=rng.random() < 0.75))
        return errands

    def replacement_errands(self, plan: Plan) -> list[list[Step]]:
        """A replacement applicant's errands besides the application, in the order drawn: the
        scenarios' fixed ones, else each with its share."""
        rng = self.rng
        errands: list[list[Step]] = []
        if plan.number < len(SCENARIOS):
            if plan.number == REPORTED_FIRST:
                errands.append(self.report_before(plan))
            if plan.number == REPORTS_AGAIN:
                errands.append(self.report_again(plan))
            if plan.number == CARD_HANDED_IN:
                errands.append(self.card_of_replaced(plan, refused_first=True))
            return errands
        if rng.random() < 0.35:
            errands.append(self.report_before(plan))
        if rng.random() < 0.05:
            errands.append(self.report_again(plan))
        if rng.random() < 0.12:
            errands.append(self.card_of_replaced(plan, refused_first=rng.random() < 0.4))
        return errands

    def found_office(self, home: str) -> str:
        """Where a lost card is handed in: mostly where its owner lives, else anywhere."""
        if self.rng.random() < 0.6:
            return home
        return self.rng.choice(sorted(COUNTIES))

    def lost_card(self, outcome: Loss, days_before: tuple[int, int]) -> tuple[str, list[Step]]:
        """A citizen who reports a loss at an office and does not apply for a replacement."""
        rng, calendar = self.rng, self.calendar
        point, hukou = self.citizens.residence()
        citizen = self.citizens.citizen_id(hukou)
        unit = point.code if rng.random() < 0.75 else hukou.code
        reported = calendar.during(calendar.last_day - timedelta(days=rng.randint(*days_before)))
        steps = [Step(reported, "report_loss", unit)]
        if outcome is Loss.FINDS_IT:
            steps.append(Step(calendar.later(reported, 1, 30), "withdraw", point.code))
        elif outcome is Loss.HANDED_IN:
            office = self.found_office(point.code)
            handed_in = calendar.later(reported, 1, 30)
            steps.append(Step(handed_in, "hand_in", office))
            steps.append(Step(calendar.later(handed_in, 1, 12), "return", office))
        return citizen, steps

    def unreported_card(
        self, days_before: tuple[int, int], *, owner_comes: bool
    ) -> tuple[str, list[Step]]:
        """A card handed in whose owner never reported it lost (nor applied)."""
        calendar = self.calendar
        point, hukou = self.citizens.residence()
        citizen = self.citizens.citizen_id(hukou)
        office = self.found_office(point.code)
        days = timedelta(days=self.rng.randint(*days_before))
        handed_in = calendar.during(calendar.last_day - days)
        steps = [Step(handed_in, "hand_in", office)]
        if owner_comes:
            steps.append(Step(calendar.later(handed_in, 1, 20), "return", office))
        return citizen, steps

    def report_before(self, plan: Plan) -> list[Step]:
        """The replacement applicant reported the loss at an office a few days before applying
        (the application then reuses the report); nothing if that is before the period."""
        rng = self.rng
        day = plan.submit_at.astimezone(CST).date() - timedelta(days=rng.randint(1, 15))
        unit = plan.form.acceptance_region if rng.random() < 0.8 else plan.form.hukou_region
        if day < self.calendar.first_day:
            return []
        return [Step(self.calendar.during(day), "report_loss", unit)]

    def report_again(self, plan: Plan) -> list[Step]:
        """The replacement applicant also goes to a police station to report the loss, while the
        report the application filed is active (before the replacement is collected)."""
        at = self.calendar.later(plan.submit_at, 1, 4)
        collect = plan.collect_at()
        if collect is not None and at >= collect:
            return []
        unit = self.rng.choice((plan.form.acceptance_region, plan.form.hukou_region))
        return [Step(at, "report_again", unit)]

    def card_of_replaced(self, plan: Plan, *, refused_first: bool) -> list[Step]:
        """The lost card is handed in while the replacement is on its way (not refused, not yet
        collected): it is destroyed, after the owner, come to collect it, was refused."""
        if plan.rejection is not None:
            return []
        calendar = self.calendar
        office = self.found_office(plan.form.acceptance_region)
        at = calendar.later(plan.submit_at, 1, 6)
        steps = [Step(at, "hand_in", office)]
        if refused_first:
            at = calendar.later(at, 0.5, 3)
            steps.append(Step(at, "return_refused", office))
        at = calendar.later(at, 0.005, 0.05)
        steps.append(Step(at, "destroy", office))
        collect = plan.collect_at()
        if collect is not None and at >= collect:
            return []
        return steps
