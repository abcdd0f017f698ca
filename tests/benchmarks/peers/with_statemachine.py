"""python-statemachine bound to a SQLAlchemy ORM model, as its documentation shows.

The machine class declares the process; each unit of work loads the row and binds a machine to
it (``ApplicationMachine(row, state_field="state")``: the machine reads and writes the row's
``state`` column, see "Domain models" in python-statemachine's documentation). Who may fire an
event is a ``cond=`` guard that receives the officer as an event argument; a refused guard or a
wrong state raises `TransitionNotAllowed`. The ``after_transition`` action appends the history
row to the row's session, and transmitting starts the review clock (``on_transmit``). One
``Session.begin()`` per transition commits the UPDATE (with SQLAlchemy's version check) and the
history row together.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, object_session
from statemachine import State, StateMachine
from statemachine.exceptions import TransitionNotAllowed

from .orm import ApplicationColumns, HistoryColumns, OrmPeer
from .process import (
    CLERK_OF_ACCEPTANCE_POINT,
    PRODUCER_OF_ACCEPTANCE_PROVINCE,
    REVIEWER_OF_HUKOU_COUNTY,
    Officer,
    now,
    review_due,
)


class Base(DeclarativeBase):
    pass


class Application(ApplicationColumns, Base):
    state: Mapped[str] = mapped_column(index=True)


class History(HistoryColumns, Base):
    pass


class ApplicationMachine(StateMachine):
    """Remote acceptance of one application for a resident identity card."""

    submitted = State(initial=True)
    transmitted = State()
    approved = State()
    rejected = State(final=True)
    produced = State()
    ready = State()
    collected = State(final=True)

    transmit = submitted.to(transmitted, cond="clerk_of_acceptance_point")
    approve = transmitted.to(approved, cond="reviewer_of_hukou_county")
    reject = transmitted.to(rejected, cond="reviewer_of_hukou_county")
    produce = approved.to(produced, cond="producer_of_acceptance_province")
    mark_ready = produced.to(ready, cond="clerk_of_acceptance_point")
    collect = ready.to(collected, cond="clerk_of_acceptance_point")

    def clerk_of_acceptance_point(self, officer: Officer) -> bool:
        return CLERK_OF_ACCEPTANCE_POINT.allows(officer, self.model)

    def reviewer_of_hukou_county(self, officer: Officer) -> bool:
        return REVIEWER_OF_HUKOU_COUNTY.allows(officer, self.model)

    def producer_of_acceptance_province(self, officer: Officer) -> bool:
        return PRODUCER_OF_ACCEPTANCE_PROVINCE.allows(officer, self.model)

    def on_transmit(self) -> None:
        self.model.review_due_at = review_due(now())

    def after_transition(self, event: str, source: State, target: State, officer: Officer) -> None:
        session = object_session(self.model)
        assert session is not None
        session.add(History.of(self.model, event, source.id, target.id, officer))


class StatemachineOrm(OrmPeer):
    packages = ("python-statemachine", "sqlalchemy")
    refused = (TransitionNotAllowed,)
    application = Application
    history = History

    def move(self, application: Any, event: str, who: Any) -> None:
        machine = ApplicationMachine(application, state_field="state")
        machine.send(event, officer=who)
