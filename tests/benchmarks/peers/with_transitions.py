"""transitions on a SQLAlchemy ORM model, as its README and FAQ describe for many models.

One machine, built once with ``model=None``, holds the process; each unit of work loads the row
and adds it to the machine with its stored state (``add_model(row, initial=row.state)``: the
machine then reads and writes the row's ``state`` column and gives the row its event methods),
and removes it afterwards (``remove_model``), as the README asks of a long-lived machine with
short-lived models. Building a machine per row (the FAQ's Django example) costs more per
transition; the shared machine is the cheaper of the two documented ways.

Who may fire an event is a ``conditions`` callback on the model: a false condition makes the
event return False (the unit of work raises `Refused` then), a wrong state raises
`MachineError`. With ``send_event=True`` every callback receives the event's data: the
``after_state_change`` callback appends the history row to the row's session, and transmitting
starts the review clock (an ``after`` callback).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, object_session
from transitions import EventData, Machine, MachineError

from .orm import ApplicationColumns, HistoryColumns, OrmPeer
from .process import (
    CLERK_OF_ACCEPTANCE_POINT,
    EVENTS,
    FINAL_STATES,
    PRODUCER_OF_ACCEPTANCE_PROVINCE,
    REVIEWER_OF_HUKOU_COUNTY,
    STATES,
    now,
    review_due,
)


class Refused(Exception):
    """A condition of the event did not hold."""


class Base(DeclarativeBase):
    pass


class Application(ApplicationColumns, Base):
    state: Mapped[str] = mapped_column(index=True)

    def clerk_of_acceptance_point(self, event: EventData) -> bool:
        return CLERK_OF_ACCEPTANCE_POINT.allows(event.kwargs["officer"], self)

    def reviewer_of_hukou_county(self, event: EventData) -> bool:
        return REVIEWER_OF_HUKOU_COUNTY.allows(event.kwargs["officer"], self)

    def producer_of_acceptance_province(self, event: EventData) -> bool:
        return PRODUCER_OF_ACCEPTANCE_PROVINCE.allows(event.kwargs["officer"], self)

    def start_review_clock(self, event: EventData) -> None:
        self.review_due_at = review_due(now())

    def record_history(self, event: EventData) -> None:
        session = object_session(self)
        assert session is not None and event.event is not None and event.transition is not None
        session.add(
            History.of(
                self,
                event.event.name,
                event.transition.source,
                event.transition.dest,
                event.kwargs["officer"],
            )
        )


class History(HistoryColumns, Base):
    pass


WHO = {
    "transmit": "clerk_of_acceptance_point",
    "approve": "reviewer_of_hukou_county",
    "reject": "reviewer_of_hukou_county",
    "produce": "producer_of_acceptance_province",
    "mark_ready": "clerk_of_acceptance_point",
    "collect": "clerk_of_acceptance_point",
}

MACHINE = Machine(
    model=None,
    states=[{"name": s, "final": s in FINAL_STATES} for s in STATES],
    transitions=[
        {
            "trigger": event,
            "source": source,
            "dest": target,
            "conditions": WHO[event],
            **({"after": "start_review_clock"} if event == "transmit" else {}),
        }
        for event, (source, target) in EVENTS.items()
    ],
    initial=None,
    auto_transitions=False,
    send_event=True,
    after_state_change="record_history",
)


class Transitions(OrmPeer):
    packages = ("transitions", "sqlalchemy")
    refused = (Refused, MachineError)
    application = Application
    history = History

    def move(self, application: Any, event: str, who: Any) -> None:
        MACHINE.add_model(application, initial=application.state)
        try:
            if not application.trigger(event, officer=who):
                raise Refused(f"{event}: {WHO[event]} does not hold")
        finally:
            MACHINE.remove_model(application)
