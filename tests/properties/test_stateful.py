"""Random commands by random actors against the persisted engine, checked against a plain model.

The reference model below is written from the domain and API documents, not read from
`workflow.machines.application`: its tables of legal transitions, roles and units are the
test's own, so a slip in the machine class shows up as a disagreement instead of being copied
into the expectation. Only the replay invariant uses the library's definition, on purpose: it proves
that the stored history is one the real python-statemachine machine accepts.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
)
from sqlalchemy.pool import NullPool

import workflow as wf
from tests.support import Clock, Databases, citizen_id, form
from workflow.machines.application import APPLICATION
from workflow.models.schemas import CollectPayload, NoPayload, RejectPayload

# -- the reference model's own tables (from docs: domain.md and api.md) -----------------------

CLERK, REVIEWER, PRODUCER = "acceptance_clerk", "hukou_reviewer", "card_producer"

LEGAL: dict[tuple[str, str], str] = {
    ("submitted", "transmit"): "transmitted",
    ("transmitted", "approve"): "approved",
    ("transmitted", "reject"): "rejected",
    ("approved", "produce"): "produced",
    ("produced", "mark_ready"): "ready",
    ("ready", "collect"): "collected",
}
"""(state, event) -> the state the event takes the application to."""

LEGAL_PAIRS = frozenset((source, target) for (source, _), target in LEGAL.items())
EVENTS = ("transmit", "approve", "reject", "produce", "mark_ready", "collect")
NOT_EVENTS = ("submit", "archive")
"""Names `fire` must refuse with IllegalTransition: submit is the creation, not an event."""
FINAL = frozenset({"rejected", "collected"})
RENEWALS = frozenset({"renewal", "damaged_renewal"})

# Who may fire each event: the role, and which region of the application (and how many of its
# digits: a county is 6, a province 2) the actor's unit must equal.
WHO: dict[str, tuple[str, str, int]] = {
    "transmit": (CLERK, "acceptance_region", 6),
    "approve": (REVIEWER, "hukou_region", 6),
    "reject": (REVIEWER, "hukou_region", 6),
    "produce": (PRODUCER, "acceptance_region", 2),
    "mark_ready": (CLERK, "acceptance_region", 6),
    "collect": (CLERK, "acceptance_region", 6),
}

ISSUE_WITHIN = timedelta(days=60)
REVIEW_WITHIN = timedelta(days=5)

# Two acceptance counties share province 44, so a Guangzhou producer may produce for Shenzhen
# but a Guangzhou clerk may not act for Shenzhen.
ACCEPTANCE_REGIONS = ("440305", "440106", "310115")
HUKOU_REGIONS = ("110105", "510104")
ACTOR_POOL: tuple[wf.Actor, ...] = (
    *(wf.Actor(id=f"clerk-{u}", role=CLERK, unit=u) for u in (*ACCEPTANCE_REGIONS, "110105")),
    *(wf.Actor(id=f"reviewer-{u}", role=REVIEWER, unit=u) for u in (*HUKOU_REGIONS, "440305")),
    *(wf.Actor(id=f"producer-{u}", role=PRODUCER, unit=u) for u in ("44", "31", "11", "51")),
)
CITIZENS = tuple(citizen_id(n) for n in range(1, 5))
NOTES = ("", "   ", "the photograph does not match the register")


@dataclass
class ModelApplication:
    kind: str
    citizen_id: str
    acceptance_region: str
    hukou_region: str
    receipt_no: str
    state: str = "submitted"
    version: int = 1
    log: list[tuple[str, str | None, str]] = field(
        default_factory=lambda: [("submit", None, "submitted")]
    )

    @property
    def open(self) -> bool:
        return self.state not in FINAL


def may(actor: wf.Actor, event: str, app: ModelApplication) -> bool:
    role, region, digits = WHO[event]
    return actor.role == role and actor.unit == getattr(app, region)[:digits]


def right_actor(event: str, app: ModelApplication) -> wf.Actor:
    role, region, digits = WHO[event]
    unit = getattr(app, region)[:digits]
    return wf.Actor(id=f"{role}-{unit}", role=role, unit=unit)


def wrong_receipts(receipt: str) -> list[str]:
    flipped = ("B" if receipt[0] == "A" else "A") + receipt[1:]
    return ["", receipt[:-1], receipt + "A", flipped, "NOT-THE-RECEIPT"]


def mostly(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` three times in four, else ``other``; shrinks towards ``usual``."""
    return st.integers(min_value=0, max_value=3).flatmap(lambda i: usual if i < 3 else other)


def expected_error(
    app: ModelApplication, event: str, actor: wf.Actor, payload: dict[str, Any]
) -> type[wf.WorkflowError] | None:
    """The error api.md's order prescribes (NotFound is handled by its own rule), or None."""
    if event not in WHO:
        return wf.IllegalTransition
    if not may(actor, event, app):
        return wf.PermissionDenied
    if (app.state, event) not in LEGAL:
        return wf.IllegalTransition
    if event == "reject" and payload["ground"] == "other" and not payload["note"].strip():
        return wf.GuardFailed
    if event == "collect" and (
        payload["receipt_no"] != app.receipt_no
        or (app.kind in RENEWALS and not payload["old_card_returned"])
    ):
        return wf.GuardFailed
    return None


# -- one migrated template per session ---------------------------------------------------------

_databases: Databases | None = None


def databases() -> Databases:
    global _databases
    if _databases is None:
        root = Path(tempfile.mkdtemp(prefix="idcard-stateful-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _databases = Databases(root)
    return _databases


def replay_payload(app: ModelApplication, record: wf.TransitionRecord) -> Any:
    """The payload of a logged step, rebuilt from the facts the log recorded."""
    if record.event == "reject":
        return RejectPayload(ground=record.details["ground"], note=record.details["note"])
    if record.event == "collect":
        # The log says the receipt matched rather than storing it: the model knows which it was.
        assert record.details.get("receipt_matches") is True
        return CollectPayload(
            receipt_no=app.receipt_no, old_card_returned=record.details["old_card_returned"]
        )
    return NoPayload()


class ApplicationWorkflowMachine(RuleBasedStateMachine):
    applications = Bundle("applications")

    def __init__(self) -> None:
        super().__init__()
        self.databases = databases()
        self.url = self.databases.fresh()
        self.clock = Clock()
        self.flow = wf.Workflow(self.url, clock=self.clock)
        # A second, pool-less engine reads the raw tables: anything the library wrote that the
        # model does not know about shows up in the counts.
        self.raw = sa.create_engine(self.url, poolclass=NullPool)
        self.model: dict[uuid.UUID, ModelApplication] = {}
        self._generation = 0
        self.unknown_ids_tried = 0
        self._snapshot: tuple[int, dict[uuid.UUID, tuple[Any, list[Any]]]] | None = None

    def teardown(self) -> None:
        self.flow.close()
        self.raw.dispose()
        if not self.databases.postgres:
            path = self.url.removeprefix("sqlite:///")
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(path + suffix).unlink()

    # -- helpers ---------------------------------------------------------------------------------

    def stored(self) -> dict[uuid.UUID, tuple[wf.ApplicationView, list[wf.TransitionRecord]]]:
        """Every modelled application's view and history, read once per step."""
        if self._snapshot is None or self._snapshot[0] != self._generation:
            data = {
                app_id: (self.flow.get(app_id), self.flow.history(app_id)) for app_id in self.model
            }
            self._snapshot = (self._generation, data)
        return self._snapshot[1]

    def counts(self) -> tuple[int, int]:
        with self.raw.connect() as conn:
            apps = conn.execute(sa.text("SELECT count(*) FROM idcard_applications")).scalar_one()
            log = conn.execute(
                sa.text("SELECT count(*) FROM idcard_transition_log WHERE machine = 'application'")
            ).scalar_one()
        return apps, log

    # -- rules -----------------------------------------------------------------------------------

    @rule(minutes=st.integers(min_value=0, max_value=10 * 24 * 60))
    def time_passes(self, minutes: int) -> None:
        self.clock.advance(minutes=minutes)

    @rule(
        target=applications,
        kind=st.sampled_from(wf.Kind),
        citizen=st.sampled_from(CITIZENS),
        acceptance=st.sampled_from(ACCEPTANCE_REGIONS),
        hukou=st.sampled_from(HUKOU_REGIONS),
        waiver=st.none() | st.sampled_from(wf.FeeWaiver),
        submitter=mostly(st.none(), st.sampled_from(ACTOR_POOL)),
    )
    def submit(
        self,
        kind: wf.Kind,
        citizen: str,
        acceptance: str,
        hukou: str,
        waiver: wf.FeeWaiver | None,
        submitter: wf.Actor | None,
    ) -> Any:
        self._generation += 1
        actor = submitter or wf.Actor(id="clerk-here", role=CLERK, unit=acceptance)
        changes: dict[str, Any] = {
            "citizen_id": citizen,
            "acceptance_region": acceptance,
            "hukou_region": hukou,
        }
        if waiver is not None:
            changes.update(fee_waiver=waiver, fee_paid=0)
        cmd = form(kind, **changes)
        expected: type[wf.WorkflowError] | None = None
        if not (actor.role == CLERK and actor.unit == acceptance):
            expected = wf.PermissionDenied
        elif any(a.citizen_id == citizen and a.open for a in self.model.values()):
            expected = wf.DuplicateApplication
        before = self.counts()
        if expected is not None:
            with pytest.raises(wf.WorkflowError) as caught:
                self.flow.submit(cmd, actor=actor)
            assert type(caught.value) is expected, f"expected {expected.__name__}: {caught.value!r}"
            assert self.counts() == before
            return multiple()
        now = self.clock.now
        view = self.flow.submit(cmd, actor=actor)
        assert view.state == "submitted"
        assert view.version == 1
        assert (view.kind, view.citizen_id) == (kind, citizen)
        assert (view.acceptance_region, view.hukou_region) == (acceptance, hukou)
        assert view.submitted_at == now
        assert view.due_at == now + ISSUE_WITHIN
        assert len(view.receipt_no) >= 8
        assert view.receipt_no not in {a.receipt_no for a in self.model.values()}
        assert self.counts() == (before[0] + 1, before[1] + 1)
        self.model[view.id] = ModelApplication(
            kind=str(kind),
            citizen_id=citizen,
            acceptance_region=acceptance,
            hukou_region=hukou,
            receipt_no=view.receipt_no,
        )
        return view.id

    @rule(app_id=applications, data=st.data())
    def fire(self, app_id: uuid.UUID, data: st.DataObject) -> None:
        """Any event name, by the right actor or anyone from the pool."""
        app = self.model[app_id]
        event = data.draw(st.sampled_from(EVENTS + NOT_EVENTS), label="event")
        pool = st.sampled_from(ACTOR_POOL)
        who = st.just(right_actor(event, app)) | pool if event in WHO else pool
        self.check_fire(app_id, event, data.draw(who, label="actor"), data)

    @rule(app_id=applications, data=st.data())
    def fire_the_next_step(self, app_id: uuid.UUID, data: st.DataObject) -> None:
        """The event legal now, mostly by an actor allowed to fire it: without this steer few
        examples would get as far as collecting."""
        app = self.model[app_id]
        legal_now = [e for (s, e) in LEGAL if s == app.state]
        event = data.draw(st.sampled_from(legal_now or EVENTS), label="event")
        who = mostly(st.just(right_actor(event, app)), st.sampled_from(ACTOR_POOL))
        self.check_fire(app_id, event, data.draw(who, label="actor"), data)

    def check_fire(
        self, app_id: uuid.UUID, event: str, actor: wf.Actor, data: st.DataObject
    ) -> None:
        """Fire, and check the outcome against the model's expectation."""
        self._generation += 1
        app = self.model[app_id]
        payload: dict[str, Any] = {}
        if event == "reject":
            payload = {
                "ground": data.draw(st.sampled_from(wf.RejectionGround), label="ground"),
                "note": data.draw(st.sampled_from(NOTES), label="note"),
            }
        elif event == "collect":
            payload = {
                "receipt_no": data.draw(
                    mostly(
                        st.just(app.receipt_no), st.sampled_from(wrong_receipts(app.receipt_no))
                    ),
                    label="receipt_no",
                ),
                "old_card_returned": data.draw(st.booleans(), label="old_card_returned"),
            }

        before_view = self.flow.get(app_id)
        before_history = self.flow.history(app_id)
        before_counts = self.counts()
        expected = expected_error(app, event, actor, payload)

        if expected is not None:
            with pytest.raises(wf.WorkflowError) as caught:
                self.flow.fire(app_id, event, actor=actor, **payload)
            error = caught.value
            assert type(error) is expected, (
                f"{event} by {actor.role}/{actor.unit} in {app.state}: "
                f"expected {expected.__name__}, got {error!r}"
            )
            assert error.event == event  # type: ignore[attr-defined]
            if expected is wf.PermissionDenied:
                assert error.role == actor.role  # type: ignore[attr-defined]
            if expected is wf.IllegalTransition:
                assert error.state == app.state  # type: ignore[attr-defined]
            assert self.flow.get(app_id) == before_view
            assert self.flow.history(app_id) == before_history
            assert self.counts() == before_counts
            return

        now = self.clock.now
        view = self.flow.fire(app_id, event, actor=actor, **payload)
        target = LEGAL[(app.state, event)]
        assert view.state == target
        assert view.version == app.version + 1
        assert self.flow.get(app_id) == view

        # Only the event's own effect changes besides state and version.
        changed = {"state", "version"}
        if event == "transmit":
            assert view.review_due_at == now + REVIEW_WITHIN
            changed.add("review_due_at")
        elif event == "reject":
            # A note is kept without surrounding whitespace (a blank one becomes empty).
            assert view.rejection_ground == payload["ground"]
            assert view.rejection_note == payload["note"].strip()
            changed |= {"rejection_ground", "rejection_note"}
        elif event == "collect":
            assert view.old_card_returned is payload["old_card_returned"]
            changed.add("old_card_returned")
        assert view.model_dump(exclude=changed) == before_view.model_dump(exclude=changed)

        history = self.flow.history(app_id)
        assert history[:-1] == before_history
        last = history[-1]
        assert (last.seq, last.event, last.from_state, last.to_state) == (
            app.version + 1,
            event,
            app.state,
            target,
        )
        assert (last.actor_id, last.actor_role, last.actor_unit) == (
            actor.id,
            actor.role,
            actor.unit,
        )
        assert last.at == now
        if event == "reject":
            assert (last.details["ground"], last.details["note"]) == (
                payload["ground"],
                payload["note"].strip(),
            )
        elif event == "collect":
            assert last.details["old_card_returned"] is payload["old_card_returned"]
        assert self.counts() == (before_counts[0], before_counts[1] + 1)

        app.log.append((event, app.state, target))
        app.state = target
        app.version += 1

    @precondition(lambda self: self.unknown_ids_tried < 2)
    @rule(event=st.sampled_from(EVENTS + NOT_EVENTS), actor=st.sampled_from(ACTOR_POOL))
    def fire_at_an_unknown_application(self, event: str, actor: wf.Actor) -> None:
        self.unknown_ids_tried += 1
        missing = uuid.uuid4()
        payload: dict[str, Any] = {}
        if event == "reject":
            payload = {"ground": "identity_mismatch", "note": ""}
        elif event == "collect":
            payload = {"receipt_no": "ABCDEFGHJKLM", "old_card_returned": True}
        before = self.counts()
        with pytest.raises(wf.NotFound):
            self.flow.fire(missing, event, actor=actor, **payload)
        with pytest.raises(wf.NotFound):
            self.flow.get(missing)
        with pytest.raises(wf.NotFound):
            self.flow.history(missing)
        assert self.counts() == before

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def stored_state_and_version_equal_the_models(self) -> None:
        for app_id, (view, _) in self.stored().items():
            app = self.model[app_id]
            assert (view.state, view.version) == (app.state, app.version), app_id
            assert (view.kind, view.citizen_id, view.receipt_no) == (
                app.kind,
                app.citizen_id,
                app.receipt_no,
            )

    @invariant()
    def the_database_holds_exactly_the_modelled_rows(self) -> None:
        assert self.counts() == (len(self.model), sum(a.version for a in self.model.values()))

    @invariant()
    def history_is_numbered_from_the_submission(self) -> None:
        for app_id, (view, history) in self.stored().items():
            assert len(history) == view.version
            assert [r.seq for r in history] == list(range(1, len(history) + 1))
            first = history[0]
            assert (first.event, first.from_state, first.to_state) == ("submit", None, "submitted")
            assert [(r.event, r.from_state, r.to_state) for r in history] == self.model[app_id].log
            assert history[-1].to_state == view.state
            assert all(a.at <= b.at for a, b in pairwise(history))

    @invariant()
    def every_logged_step_is_a_legal_transition(self) -> None:
        for _, history in self.stored().values():
            for previous, record in pairwise(history):
                assert record.from_state == previous.to_state
                assert (record.from_state, record.to_state) in LEGAL_PAIRS
                assert LEGAL[(record.from_state, record.event)] == record.to_state

    @invariant()
    def history_replays_through_the_definition_to_the_stored_state(self) -> None:
        for app_id, (view, history) in self.stored().items():
            app = self.model[app_id]
            record = SimpleNamespace(**view.model_dump())
            steps = [(r.event, record, replay_payload(app, r)) for r in history[1:]]
            assert APPLICATION.replay(steps) == view.state

    @invariant()
    def no_renewal_is_collected_without_its_old_card(self) -> None:
        for view, history in self.stored().values():
            if view.kind in RENEWALS and view.state == "collected":
                collect = [r for r in history if r.event == "collect"]
                assert len(collect) == 1
                assert collect[0].details.get("old_card_returned") is True
                assert view.old_card_returned is True

    @invariant()
    def at_most_one_open_application_per_citizen(self) -> None:
        open_citizens = [v.citizen_id for v, _ in self.stored().values() if v.state not in FINAL]
        assert len(open_citizens) == len(set(open_citizens))


ApplicationWorkflowMachine.TestCase.settings = settings(
    max_examples=75,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # The explain phase re-runs a failing example under coverage: minutes on this machine.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
TestApplicationWorkflow = ApplicationWorkflowMachine.TestCase
