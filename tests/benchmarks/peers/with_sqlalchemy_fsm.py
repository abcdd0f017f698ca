"""sqlalchemy-fsm on an ORM model, as its README shows.

The state column is an ``FSMField``; each event is a method decorated with ``@transition``
(source, target, ``conditions``). The unit of work loads the row and calls
``row.<event>.set(officer)``: a wrong state raises `InvalidSourceStateError`, a condition
that does not hold raises `PreconditionError`. The transition method carries the side effects,
as the README puts it: it appends the history row to the row's session and, for transmit,
starts the review clock. One ``Session.begin()`` per transition commits them with the UPDATE
(with SQLAlchemy's version check).

sqlalchemy-fsm 2.2.0 must be imported before any class is mapped (here: before the library's
tables, which the project's own modules map): otherwise every ``set()`` fails with
``AttributeError: before_state_change``, its event missing from SQLAlchemy's instance events.
This module's imports put ``sqlalchemy_fsm`` first, and its process imports nothing before them
(`tests.benchmarks.peers.worker`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, object_session
from sqlalchemy_fsm import FSMField, transition
from sqlalchemy_fsm.exc import InvalidSourceStateError, PreconditionError

from .orm import ApplicationColumns, HistoryColumns, OrmPeer
from .process import (
    CLERK_OF_ACCEPTANCE_POINT,
    PRODUCER_OF_ACCEPTANCE_PROVINCE,
    REVIEWER_OF_HUKOU_COUNTY,
    Officer,
    now,
    review_due,
)


def clerk_of_acceptance_point(application: Any, officer: Officer) -> bool:
    return CLERK_OF_ACCEPTANCE_POINT.allows(officer, application)


def reviewer_of_hukou_county(application: Any, officer: Officer) -> bool:
    return REVIEWER_OF_HUKOU_COUNTY.allows(officer, application)


def producer_of_acceptance_province(application: Any, officer: Officer) -> bool:
    return PRODUCER_OF_ACCEPTANCE_PROVINCE.allows(officer, application)


class Base(DeclarativeBase):
    pass


class History(HistoryColumns, Base):
    pass


class Application(ApplicationColumns, Base):
    state: Mapped[str] = mapped_column(FSMField, index=True)

    def _record(self, event: str, source: str, target: str, officer: Officer) -> None:
        session = object_session(self)
        assert session is not None
        session.add(History.of(self, event, source, target, officer))

    @transition(source="submitted", target="transmitted", conditions=[clerk_of_acceptance_point])
    def transmit(self, officer: Officer) -> None:
        self.review_due_at = review_due(now())
        self._record("transmit", "submitted", "transmitted", officer)

    @transition(source="transmitted", target="approved", conditions=[reviewer_of_hukou_county])
    def approve(self, officer: Officer) -> None:
        self._record("approve", "transmitted", "approved", officer)

    @transition(source="transmitted", target="rejected", conditions=[reviewer_of_hukou_county])
    def reject(self, officer: Officer) -> None:
        self._record("reject", "transmitted", "rejected", officer)

    @transition(source="approved", target="produced", conditions=[producer_of_acceptance_province])
    def produce(self, officer: Officer) -> None:
        self._record("produce", "approved", "produced", officer)

    @transition(source="produced", target="ready", conditions=[clerk_of_acceptance_point])
    def mark_ready(self, officer: Officer) -> None:
        self._record("mark_ready", "produced", "ready", officer)

    @transition(source="ready", target="collected", conditions=[clerk_of_acceptance_point])
    def collect(self, officer: Officer) -> None:
        self._record("collect", "ready", "collected", officer)


class SqlalchemyFsm(OrmPeer):
    packages = ("sqlalchemy-fsm", "sqlalchemy")
    refused = (InvalidSourceStateError, PreconditionError)
    application = Application
    history = History

    def move(self, application: Any, event: str, who: Any) -> None:
        getattr(application, event).set(who)
