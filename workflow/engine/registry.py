"""What the engine needs to know of a machine, and of the rules between machines.

Generic: a machine module fills in a `Machine` (its definition, its queries, how a record is
created, the facts its guards need from other records) and the reactions between machines are a
table of `Reaction`s. The engine runs both on every path, so no caller passes facts or
remembers a side effect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter
from sqlalchemy.engine import Connection

from workflow.engine.definition import Definition
from workflow.engine.records import Repository
from workflow.engine.store import ConflictMap
from workflow.errors import ConcurrentUpdate, WorkflowError
from workflow.models.schemas import Actor

if TYPE_CHECKING:
    from workflow.engine.runner import Runner

A = TypeVar("A")
V = TypeVar("V", bound=BaseModel)

Facts = Callable[[Connection, Mapping[Any, Any]], Mapping[str, Any]]
"""Facts about a record that its guards need from other records, computed in the command's
transaction from the loaded record; guards read them like columns and the log records them."""


@dataclass(frozen=True)
class Unique(Generic[A]):
    """A record that may not exist twice (one open application per citizen, ...).

    ``exists`` asks the database before the insert and ``refusal`` is the error then; a racing
    command that passed the same check meets the partial unique ``index`` instead (SQLite
    names the ``column`` in its message), which means the same refusal.
    """

    exists: Callable[[Connection, A], bool]
    refusal: Callable[[A], WorkflowError]
    index: str
    column: str

    def refuse(self, conn: Connection, argument: A) -> None:
        if self.exists(conn, argument):
            raise self.refusal(argument)

    def races(self) -> ConflictMap:
        """The index meant as a lost race: a command other than this creation (a reaction)
        that meets it ran beside another command for the same value; a retry sees the
        record the other made."""

        def lost() -> WorkflowError:
            return ConcurrentUpdate("another command for the same citizen got in first; retry")

        return {self.index: lost, self.column: lost}

    def conflicts(self, argument: A) -> ConflictMap:
        def refusal() -> WorkflowError:
            return self.refusal(argument)

        return {self.index: refusal, self.column: refusal}


@dataclass(frozen=True)
class Creation(Generic[A]):
    """How a command creates a record of a machine from its argument.

    ``argument`` validates what the caller passed (a form, a citizen number); ``values`` gives
    the new record's columns; ``unique`` says which records may not exist twice.
    """

    argument: TypeAdapter[A]
    values: Callable[[A, Actor, datetime], dict[str, Any]]
    unique: Unique[A] | None = None


@dataclass(frozen=True)
class Machine(Generic[A, V]):
    """One machine as the engine runs it: its definition, its table's queries, its view, how
    its records are created, and the facts its events' guards need from other records."""

    definition: Definition
    repository: Repository
    view: type[V]
    creation: Creation[A]
    noun: str
    """How people call one record: "application", "loss report", "found card"."""
    facts: Mapping[str, Facts] = field(default_factory=dict)
    """Per event, the facts from other records its guards read."""
    audits: tuple[Audit, ...] = ()
    """Checks of this machine's records against the other machines', for verification."""
    serialised_by: str | None = None
    """The fixed column (a citizen number) whose value every command on the machine locks
    first, so that commands reading or changing other machines' records for the same value
    happen one after the other (the reactions and facts between machines depend on it)."""

    @property
    def name(self) -> str:
        return self.definition.name


Finding = tuple[Any, int | None, str]
"""A record one of a machine's audits found wrong: ``(record_id, seq or None, detail)``."""


@dataclass(frozen=True)
class Audit:
    """A check verification runs over a machine's records against the other machines': one
    query, returning each record whose recorded facts the other records contradict.

    ``run(conn, after)`` looks at history rows with ids above ``after`` only (rows written
    since the library began serialising commands on one citizen, whose ids follow the order
    those commands took effect)."""

    name: str
    rule: str
    run: Callable[[Connection, int], list[Finding]]


@dataclass(frozen=True)
class Reaction:
    """A rule between machines: after ``event`` moves (or creates) a record of ``machine``,
    ``run`` does the rest in the same transaction, whatever path fired the event.

    ``when`` and ``does`` say it in plain words, for the generated docs and the auditor.
    """

    machine: str
    event: str
    when: str
    does: str
    run: Callable[[Mapping[str, Runner], Connection, Mapping[str, Any], Actor], None]
