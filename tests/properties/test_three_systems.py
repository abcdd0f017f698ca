"""The three systems interleaved for the same few citizens, checked against the rules that join
them.

Renewals and replacements are submitted and moved along (rejected, collected), losses are
reported at random offices and withdrawn, found cards are handed in, returned or destroyed, and
the clock moves. The reference model below is written from the documents (domain.md, api.md
and the issue that brought loss reports and found cards), not read from the library:

- submitting a replacement files a loss report in the same transaction when the citizen has no
  active one; collecting a replacement closes the citizen's active report;
- returning a found card withdraws the owner's active report; it is refused (``no_replacement``)
  when a replacement that was not rejected was submitted at or after the earlier of the card's
  registration and the ``reported_at`` of the owner's latest report that was not withdrawn
  (active, or closed by a collected replacement: the lost card stays invalid for good), and
  destroying needs exactly that (``replacement_exists``);
- a second active report is refused (`DuplicateLossReport`); a second open application too.

Every command's outcome, and the error of every refusal, is the one the model predicts; after
every step the stored records equal the model's and the cross-machine rules hold in the tables.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import workflow as wf
from tests.properties.test_machines import fresh_database, mostly, remove_database
from tests.support import Clock, citizen_id, form
from workflow.models.tables import Application, FoundCard, LossReport, TransitionLog

CLERK, REVIEWER, PRODUCER = "acceptance_clerk", "hukou_reviewer", "card_producer"
CITIZENS = tuple(citizen_id(n) for n in range(1, 4))
OFFICES = ("440305", "440106", "310115")
"""Acceptance points and police stations; the first two accept applications."""
HUKOU_REGIONS = ("110105", "510104")
CLERKS = tuple(wf.Actor(id=f"clerk-{u}", role=CLERK, unit=u) for u in OFFICES)
OTHERS = (
    wf.Actor(id="reviewer-110105", role=REVIEWER, unit="110105"),
    wf.Actor(id="reviewer-440305", role=REVIEWER, unit="440305"),
    wf.Actor(id="producer-44", role=PRODUCER, unit="44"),
    wf.Actor(id="producer-31", role=PRODUCER, unit="31"),
)
"""Actors who are no acceptance clerk: loss reports and found cards are not theirs."""
ACTOR_POOL = CLERKS + OTHERS

# -- the model's own tables (from api.md) -------------------------------------------------------

LEGAL: dict[tuple[str, str], str] = {
    ("submitted", "transmit"): "transmitted",
    ("transmitted", "approve"): "approved",
    ("transmitted", "reject"): "rejected",
    ("approved", "produce"): "produced",
    ("produced", "mark_ready"): "ready",
    ("ready", "collect"): "collected",
}
EVENTS = ("transmit", "approve", "reject", "produce", "mark_ready", "collect")
CLOSED = frozenset({"rejected", "collected"})
WHO: dict[str, tuple[str, str, int]] = {
    "transmit": (CLERK, "acceptance", 6),
    "approve": (REVIEWER, "hukou", 6),
    "reject": (REVIEWER, "hukou", 6),
    "produce": (PRODUCER, "acceptance", 2),
    "mark_ready": (CLERK, "acceptance", 6),
    "collect": (CLERK, "acceptance", 6),
}
"""Who may fire an application's event: role, and which region (how many digits) is theirs."""


@dataclass
class App:
    kind: str
    citizen: str
    acceptance: str
    hukou: str
    receipt_no: str
    submitted_at: datetime
    state: str = "submitted"
    version: int = 1


@dataclass
class Report:
    citizen: str
    reported_at: datetime
    unit: str
    application_id: uuid.UUID | None
    state: str = "reported"
    version: int = 1


@dataclass
class Card:
    citizen: str
    registered_at: datetime
    held_unit: str
    state: str = "held"
    version: int = 1


def right_actor(event: str, app: App) -> wf.Actor:
    role, region, digits = WHO[event]
    unit = getattr(app, region)[:digits]
    return wf.Actor(id=f"{role}-{unit}", role=role, unit=unit)


def may(actor: wf.Actor, event: str, app: App) -> bool:
    role, region, digits = WHO[event]
    return actor.role == role and actor.unit == getattr(app, region)[:digits]


@dataclass(frozen=True)
class Stored:
    """The tables as the invariants see them after a step."""

    apps: dict[uuid.UUID, tuple[str, str, int]]
    reports: dict[uuid.UUID, tuple[str, str, int]]
    cards: dict[uuid.UUID, tuple[str, str, int]]
    """(citizen, state, version) by id."""
    log_rows: int
    reported_twice: list[Any]
    left_active: list[Any]


class ThreeSystems(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.url, self.postgres = fresh_database()
        self.clock = Clock()
        self.flow = wf.Workflow(self.url, clock=self.clock)
        self.raw = sa.create_engine(self.url)
        self.apps: dict[uuid.UUID, App] = {}
        self.reports: dict[uuid.UUID, Report] = {}
        self.cards: dict[uuid.UUID, Card] = {}
        self.returned_without_replacement: set[uuid.UUID] = set()
        """Cards the model saw returned while no replacement counted against them."""
        self._generation = 0
        self._verified = self._asked = -1
        self._stored: tuple[int, Stored] | None = None

    def teardown(self) -> None:
        self.flow.close()
        self.raw.dispose()
        remove_database(self.url, self.postgres)

    # -- the model's questions --------------------------------------------------------------

    def now(self) -> datetime:
        """A second passes before every command: two commands never share a moment."""
        self._generation += 1
        self.clock.advance(seconds=1)
        return self.clock.now

    def open_application(self, citizen: str) -> bool:
        return any(a.citizen == citizen and a.state not in CLOSED for a in self.apps.values())

    def replacement_in_progress(self, citizen: str) -> bool:
        return any(
            a.citizen == citizen and a.kind == wf.Kind.REPLACEMENT and a.state not in CLOSED
            for a in self.apps.values()
        )

    def active_report(self, citizen: str) -> uuid.UUID | None:
        active = [
            i for i, r in self.reports.items() if r.citizen == citizen and r.state == "reported"
        ]
        assert len(active) <= 1
        return active[0] if active else None

    def replacement_counts_against(self, card: Card) -> bool:
        """Whether a replacement not rejected was submitted since the card was reported lost or
        handed in, whichever was first. The loss counts from the citizen's latest report that
        was not withdrawn: an active one, or one a collected replacement closed (the lost card
        stays invalid for good); a withdrawn one ended with the card found."""
        since = card.registered_at
        kept = [
            r.reported_at
            for r in self.reports.values()
            if r.citizen == card.citizen and r.state != "withdrawn"
        ]
        if kept:
            since = min(since, max(kept))
        return any(
            a.citizen == card.citizen
            and a.kind == wf.Kind.REPLACEMENT
            and a.state != "rejected"
            and a.submitted_at >= since
            for a in self.apps.values()
        )

    def end_active_report(self, citizen: str, state: str) -> None:
        report = self.active_report(citizen)
        if report is not None:
            self.reports[report].state = state
            self.reports[report].version += 1

    def refused(
        self, call: Any, expected: type[wf.WorkflowError], guard: str | None = None
    ) -> None:
        with pytest.raises(wf.WorkflowError) as caught:
            call()
        error = caught.value
        assert type(error) is expected, f"expected {expected.__name__}, got {error!r}"
        if guard is not None:
            assert error.guard == guard, error  # type: ignore[attr-defined]

    def filed_by(self, app_id: uuid.UUID) -> list[Any]:
        t: sa.Table = LossReport.__table__  # type: ignore[assignment]
        with self.raw.connect() as conn:
            return list(conn.execute(sa.select(t).where(t.c.application_id == app_id)).mappings())

    # -- applications -----------------------------------------------------------------------

    @rule(
        # Replacements join the three systems: half of the applications are.
        kind=st.sampled_from([wf.Kind.REPLACEMENT, *wf.Kind]),
        citizen=st.sampled_from(CITIZENS),
        acceptance=st.sampled_from(OFFICES[:2]),
        hukou=st.sampled_from(HUKOU_REGIONS),
        data=st.data(),
    )
    def submit(
        self, kind: wf.Kind, citizen: str, acceptance: str, hukou: str, data: st.DataObject
    ) -> None:
        own = wf.Actor(id=f"clerk-{acceptance}", role=CLERK, unit=acceptance)
        actor = data.draw(mostly(st.just(own), st.sampled_from(ACTOR_POOL)), label="actor")
        cmd = form(kind, citizen_id=citizen, acceptance_region=acceptance, hukou_region=hukou)
        now = self.now()
        if not (actor.role == CLERK and actor.unit == acceptance):
            return self.refused(lambda: self.flow.submit(cmd, actor=actor), wf.PermissionDenied)
        if self.open_application(citizen):
            return self.refused(lambda: self.flow.submit(cmd, actor=actor), wf.DuplicateApplication)
        files_report = kind == wf.Kind.REPLACEMENT and self.active_report(citizen) is None
        view = self.flow.submit(cmd, actor=actor)
        self.apps[view.id] = App(str(kind), citizen, acceptance, hukou, view.receipt_no, now)
        filed = self.filed_by(view.id)
        if not files_report:
            assert filed == [], "only a replacement files a report, and only if none is active"
            return None
        (row,) = filed
        assert (row["citizen_id"], row["reported_unit"], row["reported_at"]) == (
            citizen,
            actor.unit,
            now,
        )
        self.reports[row["id"]] = Report(citizen, now, actor.unit, view.id)
        return None

    @precondition(lambda self: self.apps)
    @rule(data=st.data())
    def move_an_application(self, data: st.DataObject) -> None:
        """Mostly the next step by the right actor; sometimes anything by anyone."""
        app_id = data.draw(st.sampled_from(list(self.apps)), label="application")
        app = self.apps[app_id]
        next_steps = [e for (s, e) in LEGAL if s == app.state]
        event = data.draw(
            mostly(st.sampled_from(next_steps or list(EVENTS)), st.sampled_from(EVENTS)),
            label="event",
        )
        actor = data.draw(
            mostly(st.just(right_actor(event, app)), st.sampled_from(ACTOR_POOL)), label="actor"
        )
        self.fire(app_id, event, actor, data)

    @precondition(lambda self: any(a.state not in CLOSED for a in self.apps.values()))
    @rule(data=st.data(), steps=st.integers(min_value=1, max_value=5))
    def push_an_application_on(self, data: st.DataObject, steps: int) -> None:
        """Several next steps of an open application (mostly a replacement) by the right actors:
        without this steer few applications would be collected in 30 steps."""
        open_apps = [i for i, a in self.apps.items() if a.state not in CLOSED]
        replacements = [i for i in open_apps if self.apps[i].kind == wf.Kind.REPLACEMENT]
        anyone = st.sampled_from(open_apps)
        app_id = data.draw(
            mostly(st.sampled_from(replacements), anyone) if replacements else anyone,
            label="application",
        )
        app = self.apps[app_id]
        for _ in range(steps):
            next_steps = [e for (s, e) in LEGAL if s == app.state]
            if not next_steps:
                break
            # Approve more often than reject, so that more applications get to the end.
            event = data.draw(mostly(st.just(next_steps[0]), st.sampled_from(next_steps)))
            self.fire(app_id, event, right_actor(event, app), data)

    def fire(self, app_id: uuid.UUID, event: str, actor: wf.Actor, data: st.DataObject) -> None:
        """Fire an application's event with drawn arguments; check the outcome."""
        app = self.apps[app_id]
        payload: dict[str, Any] = {}
        guard: str | None = None
        if event == "reject":
            ground = data.draw(mostly(st.just("identity_mismatch"), st.just("other")))
            payload = {"ground": ground, "note": ""}
            if ground == "other":
                guard = "reasons_given"
        elif event == "collect":
            receipt = data.draw(mostly(st.just(app.receipt_no), st.just("NOT-THE-RECEIPT")))
            returned = data.draw(mostly(st.just(True), st.just(False)), label="old card")
            payload = {"receipt_no": receipt, "old_card_returned": returned}
            if receipt != app.receipt_no:
                guard = "receipt_matches"
            elif app.kind != wf.Kind.REPLACEMENT and not returned:
                guard = "old_card_handed_back"
        self.now()

        def call() -> Any:
            return self.flow.fire(app_id, event, actor=actor, **payload)

        if not may(actor, event, app):
            return self.refused(call, wf.PermissionDenied)
        if (app.state, event) not in LEGAL:
            return self.refused(call, wf.IllegalTransition)
        if guard is not None:
            return self.refused(call, wf.GuardFailed, guard)
        view = call()
        app.state = LEGAL[(app.state, event)]
        app.version += 1
        assert (view.state, view.version) == (app.state, app.version)
        if event == "collect" and app.kind == wf.Kind.REPLACEMENT:
            self.end_active_report(app.citizen, "closed")
        return None

    # -- loss reports -----------------------------------------------------------------------

    @rule(citizen=st.sampled_from(CITIZENS), data=st.data())
    def report_loss(self, citizen: str, data: st.DataObject) -> None:
        actor = data.draw(mostly(st.sampled_from(CLERKS), st.sampled_from(OTHERS)), label="actor")
        now = self.now()

        def call() -> Any:
            return self.flow.report_loss(citizen, actor=actor, identity_checked=True)

        if actor.role != CLERK:
            return self.refused(call, wf.PermissionDenied)
        if self.active_report(citizen) is not None:
            return self.refused(call, wf.DuplicateLossReport)
        view = call()
        assert (view.reported_unit, view.reported_at, view.application_id) == (
            actor.unit,
            now,
            None,
        )
        self.reports[view.id] = Report(citizen, now, actor.unit, None)
        return None

    @precondition(lambda self: self.reports)
    @rule(data=st.data())
    def withdraw_a_report(self, data: st.DataObject) -> None:
        report_id = data.draw(st.sampled_from(list(self.reports)), label="report")
        report = self.reports[report_id]
        actor = data.draw(mostly(st.sampled_from(CLERKS), st.sampled_from(OTHERS)), label="actor")
        presented = data.draw(mostly(st.just(True), st.just(False)), label="card presented")
        self.now()

        def call() -> Any:
            return self.flow.withdraw_loss_report(report_id, actor=actor, card_presented=presented)

        if actor.role != CLERK:
            return self.refused(call, wf.PermissionDenied)
        if report.state != "reported":
            return self.refused(call, wf.IllegalTransition)
        if not presented:
            return self.refused(call, wf.GuardFailed, "card_presented")
        if self.replacement_in_progress(report.citizen):
            return self.refused(call, wf.GuardFailed, "no_replacement_in_progress")
        view = call()
        report.state, report.version = "withdrawn", report.version + 1
        assert (view.state, view.version) == (report.state, report.version)
        return None

    # -- found cards ------------------------------------------------------------------------

    @rule(citizen=st.sampled_from(CITIZENS), data=st.data())
    def register_a_found_card(self, citizen: str, data: st.DataObject) -> None:
        actor = data.draw(mostly(st.sampled_from(CLERKS), st.sampled_from(OTHERS)), label="actor")
        self.register(citizen, actor)

    @precondition(lambda self: any(a.kind == wf.Kind.REPLACEMENT for a in self.apps.values()))
    @rule(data=st.data())
    def the_card_of_a_replacement_applicant_turns_up(self, data: st.DataObject) -> None:
        """Where the three systems meet: a card is handed in for someone who applied for a
        replacement (at some point), and its holding office tries to return or destroy it.
        Without this steer few found cards would belong to such a citizen."""
        applied = sorted({a.citizen for a in self.apps.values() if a.kind == wf.Kind.REPLACEMENT})
        citizen = data.draw(st.sampled_from(applied), label="citizen")
        holder = data.draw(st.sampled_from(CLERKS), label="actor")
        card_id = self.register(citizen, holder)
        assert card_id is not None
        if data.draw(st.booleans(), label="return it"):
            self.return_card(card_id, holder, checked=True)
        else:
            self.destroy_card(card_id, holder)

    def register(self, citizen: str, actor: wf.Actor) -> uuid.UUID | None:
        now = self.now()

        def call() -> Any:
            return self.flow.register_found_card(citizen, actor=actor)

        if actor.role != CLERK:
            self.refused(call, wf.PermissionDenied)
            return None
        view = call()
        assert (view.state, view.held_unit, view.registered_at) == ("held", actor.unit, now)
        self.cards[view.id] = Card(citizen, now, actor.unit)
        return view.id

    def card_and_actor(self, data: st.DataObject) -> tuple[uuid.UUID, wf.Actor]:
        held = [i for i, c in self.cards.items() if c.state == "held"]
        everyone = st.sampled_from(list(self.cards))
        card_id = data.draw(mostly(st.sampled_from(held), everyone) if held else everyone)
        card = self.cards[card_id]
        holder = wf.Actor(id=f"clerk-{card.held_unit}", role=CLERK, unit=card.held_unit)
        actor = data.draw(mostly(st.just(holder), st.sampled_from(ACTOR_POOL)), label="actor")
        return card_id, actor

    def refused_on_a_card(self, card: Card, actor: wf.Actor, call: Any) -> bool:
        """Refuse as the model predicts before any guard; say whether it did."""
        if actor.role != CLERK or actor.unit != card.held_unit:
            self.refused(call, wf.PermissionDenied)
            return True
        if card.state != "held":
            self.refused(call, wf.IllegalTransition)
            return True
        return False

    @precondition(lambda self: self.cards)
    @rule(data=st.data())
    def return_a_card(self, data: st.DataObject) -> None:
        card_id, actor = self.card_and_actor(data)
        checked = data.draw(mostly(st.just(True), st.just(False)), label="identity checked")
        self.return_card(card_id, actor, checked=checked)

    @precondition(lambda self: self.cards)
    @rule(data=st.data())
    def destroy_a_card(self, data: st.DataObject) -> None:
        card_id, actor = self.card_and_actor(data)
        self.destroy_card(card_id, actor)

    def return_card(self, card_id: uuid.UUID, actor: wf.Actor, *, checked: bool) -> None:
        card = self.cards[card_id]
        self.now()

        def call() -> Any:
            return self.flow.return_found_card(card_id, actor=actor, identity_checked=checked)

        if self.refused_on_a_card(card, actor, call):
            return
        if not checked:
            return self.refused(call, wf.GuardFailed, "identity_checked")
        if self.replacement_counts_against(card):
            return self.refused(call, wf.GuardFailed, "no_replacement")
        view = call()
        card.state, card.version = "returned", card.version + 1
        assert (view.state, view.version) == (card.state, card.version)
        self.returned_without_replacement.add(card_id)
        self.end_active_report(card.citizen, "withdrawn")

    def destroy_card(self, card_id: uuid.UUID, actor: wf.Actor) -> None:
        card = self.cards[card_id]
        self.now()

        def call() -> Any:
            return self.flow.destroy_found_card(card_id, actor=actor)

        if self.refused_on_a_card(card, actor, call):
            return
        if not self.replacement_counts_against(card):
            return self.refused(call, wf.GuardFailed, "replacement_exists")
        view = call()
        card.state, card.version = "destroyed", card.version + 1
        assert (view.state, view.version) == (card.state, card.version)

    @rule(minutes=st.integers(min_value=0, max_value=20 * 24 * 60))
    def time_passes(self, minutes: int) -> None:
        self.clock.advance(minutes=minutes)

    # -- invariants -------------------------------------------------------------------------

    def stored(self) -> Stored:
        """What the invariants read, in one connection, once per step that ran a command."""
        if self._stored is not None and self._stored[0] == self._generation:
            return self._stored[1]
        a, r, f, log = (t.__table__ for t in (Application, LossReport, FoundCard, TransitionLog))
        with self.raw.connect() as conn:

            def records(t: Any) -> dict[uuid.UUID, tuple[str, str, int]]:
                rows = conn.execute(sa.select(t.c.id, t.c.citizen_id, t.c.state, t.c.version))
                return {row.id: (row.citizen_id, row.state, row.version) for row in rows}

            stored = Stored(
                apps=records(a),
                reports=records(r),
                cards=records(f),
                log_rows=conn.execute(sa.select(sa.func.count()).select_from(log)).scalar_one(),
                reported_twice=list(
                    conn.execute(
                        sa.select(r.c.citizen_id)
                        .where(r.c.state == "reported")
                        .group_by(r.c.citizen_id)
                        .having(sa.func.count() > 1)
                    )
                ),
                # A collected replacement, and a report of its citizen made before the
                # collection that is still active.
                left_active=list(
                    conn.execute(
                        sa.select(a.c.id, r.c.id)
                        .join(
                            log, sa.and_(log.c.machine == "application", log.c.record_id == a.c.id)
                        )
                        .join(r, r.c.citizen_id == a.c.citizen_id)
                        .where(
                            a.c.kind == "replacement",
                            log.c.event == "collect",
                            r.c.state == "reported",
                            r.c.reported_at <= log.c.at,
                        )
                    )
                ),
            )
        self._stored = (self._generation, stored)
        return stored

    @invariant()
    def stored_records_equal_the_models(self) -> None:
        stored = self.stored()
        for name, rows, model in (
            ("applications", stored.apps, self.apps),
            ("loss reports", stored.reports, self.reports),
            ("found cards", stored.cards, self.cards),
        ):
            assert rows == {i: (m.citizen, m.state, m.version) for i, m in model.items()}, name
        records = [*self.apps.values(), *self.reports.values(), *self.cards.values()]
        assert stored.log_rows == sum(r.version for r in records)

    @invariant()
    def no_citizen_has_two_active_loss_reports(self) -> None:
        assert self.stored().reported_twice == []

    @invariant()
    def reported_lost_means_an_active_report(self) -> None:
        if self._asked == self._generation:
            return
        self._asked = self._generation
        active = {c for c, state, _ in self.stored().reports.values() if state == "reported"}
        for citizen in CITIZENS:
            assert self.flow.is_reported_lost(citizen) is (citizen in active), citizen

    @invariant()
    def a_collected_replacement_leaves_no_earlier_report_active(self) -> None:
        assert self.stored().left_active == []

    @invariant()
    def no_card_was_returned_while_a_replacement_counted(self) -> None:
        returned = {i for i, (_, state, _) in self.stored().cards.items() if state == "returned"}
        assert returned <= self.returned_without_replacement

    @invariant()
    def no_report_was_withdrawn_while_a_replacement_was_in_progress(self) -> None:
        with self.raw.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT w.record_id FROM idcard_transition_log w "
                    "JOIN idcard_loss_reports r ON r.id = w.record_id "
                    "JOIN idcard_applications a ON a.citizen_id = r.citizen_id "
                    "AND a.kind = 'replacement' AND a.submitted_at <= w.at "
                    "WHERE w.machine = 'loss_report' AND w.event = 'withdraw' AND NOT EXISTS ("
                    "SELECT 1 FROM idcard_transition_log e WHERE e.machine = 'application' "
                    "AND e.record_id = a.id AND e.to_state IN ('rejected', 'collected') "
                    "AND e.at <= w.at)"
                )
            ).all()
        assert rows == []

    @invariant()
    def every_history_verifies(self) -> None:
        if self._verified == self._generation:
            return
        self._verified = self._generation
        report = self.flow.verify()
        assert report.ok, report.broken
        assert report.records == len(self.apps) + len(self.reports) + len(self.cards)


ThreeSystems.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # The explain phase re-runs a failing example under coverage: minutes on this machine.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
TestThreeSystems = ThreeSystems.TestCase
