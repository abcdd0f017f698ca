"""A worker that runs random commands of all three machines for a while (see
`test_three_systems_load`).

    python -m tests.integration.load_worker URL SEED SECONDS OUT

For ``SECONDS`` it loops over a small pool of citizens (`POOL`, shared by every worker so that
commands on one citizen collide): it reads what the pool's open records are, picks a command
at random (submit, each step of an application, extend_deadline, report_loss,
withdraw_loss_report, register_found_card, return_found_card, destroy_found_card, and
``fire_many`` of each machine over several records), fires it with an actor of the right role
and unit (now and then a wrong one, or arguments under which a guard fails), some with request
ids and some of those retried with the same id. Then it writes a JSON summary to ``OUT``:
commands tried, succeeded, refused per error code, and every exception that is not one of the
refusals a caller is told to expect (`EXPECTED`), counted per type with a few samples.
"""

from __future__ import annotations

import inspect
import json
import random
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import workflow as wf
from tests.support import ACCEPTANCE, DOCUMENTS, HUKOU, OTHER_COUNTY, citizen_id
from workflow.errors import (
    ConcurrentUpdate,
    DuplicateApplication,
    DuplicateLossReport,
    GuardFailed,
    IllegalTransition,
    PermissionDenied,
    WorkflowError,
)
from workflow.models.enums import NATIONAL_FEE, Kind, RejectionGround, Role

POOL: tuple[str, ...] = tuple(citizen_id(n) for n in range(901, 907))
"""Six valid citizen numbers, all registered in `HUKOU`: every worker works on these."""

ACCEPTANCE_COUNTIES = (ACCEPTANCE, OTHER_COUNTY)
OFFICES = (ACCEPTANCE, OTHER_COUNTY, HUKOU)
"""Where clerks report losses and hand in found cards: any office in the country."""

EXPECTED: tuple[type[WorkflowError], ...] = (
    PermissionDenied,
    IllegalTransition,
    GuardFailed,
    ConcurrentUpdate,
    DuplicateApplication,
    DuplicateLossReport,
)
"""The refusals a caller of these commands must expect: a wrong actor (on purpose, now and
then), a record another worker moved first, a guard, a lost race (retryable), the one-open-
application and one-active-report rules. Everything else (`StorageError`, `NotFound` of a record
that was read as existing, `IdempotencyConflict` of a request id used for one command only, any
non-library exception) is a failure of the library."""

NEXT_EVENT = {
    "submitted": "transmit",
    "transmitted": "approve",
    "approved": "produce",
    "produced": "mark_ready",
    "ready": "collect",
}

REPORT_TAKES_IDENTITY_CHECK = (
    "identity_checked" in inspect.signature(wf.Workflow.report_loss).parameters
)
"""Whether `report_loss` records that the holder's identity was checked (issue 11)."""


def clerk(unit: str, n: int = 1) -> wf.Actor:
    return wf.Actor(id=f"clerk-{unit}-{n}", role=Role.ACCEPTANCE_CLERK, unit=unit)


def reviewer(unit: str) -> wf.Actor:
    return wf.Actor(id=f"reviewer-{unit}", role=Role.HUKOU_REVIEWER, unit=unit)


def producer(unit: str) -> wf.Actor:
    return wf.Actor(id=f"producer-{unit}", role=Role.CARD_PRODUCER, unit=unit)


def actor_for(event: str, app: Mapping[str, Any]) -> wf.Actor:
    """Who may fire ``event`` on the application: its hukou county's reviewer, its
    acceptance province's producer, or a clerk of its acceptance county."""
    if event in {"approve", "reject"}:
        return reviewer(str(app["hukou_region"]))
    if event == "produce":
        return producer(str(app["acceptance_region"])[:2])
    return clerk(str(app["acceptance_region"]))


def stranger(event: str) -> wf.Actor:
    """An actor of a role or unit that may not fire ``event`` on the pool's records."""
    if event in {"approve", "reject"}:
        return reviewer(OTHER_COUNTY)
    if event == "produce":
        return producer("11")
    return clerk("120101")


@dataclass
class Pool:
    """The open records of the pool's citizens, as one read saw them."""

    applications: list[dict[str, Any]]
    reports: list[dict[str, Any]]
    cards: list[dict[str, Any]]


@dataclass
class Stats:
    tried: Counter[str] = field(default_factory=Counter)
    succeeded: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    refused_by_command: dict[str, Counter[str]] = field(default_factory=dict)
    unexpected: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    retries: int = 0
    retries_after_conflict: int = 0
    bulk_runs: int = 0
    bulk_moved: int = 0
    bulk_refused: Counter[str] = field(default_factory=Counter)

    def refusal(self, command: str, key: str) -> None:
        self.refused[key] += 1
        self.refused_by_command.setdefault(command, Counter())[key] += 1

    def failure(self, command: str, kind: str, exc: BaseException | str) -> None:
        self.unexpected[kind] += 1
        if len(self.samples) < 20:
            if isinstance(exc, BaseException):
                text = "".join(traceback.format_exception(exc)[-6:])
            else:
                text = exc
            self.samples.append(f"{command}: {kind}: {text}")

    def as_json(self) -> dict[str, Any]:
        return {
            "commands": sum(self.tried.values()),
            "succeeded": sum(self.succeeded.values()),
            "tried": dict(self.tried),
            "ok": dict(self.succeeded),
            "refused": dict(self.refused),
            "refused_by_command": {k: dict(v) for k, v in self.refused_by_command.items()},
            "unexpected": dict(self.unexpected),
            "samples": self.samples,
            "retries_same_request_id": self.retries,
            "retries_after_conflict": self.retries_after_conflict,
            "bulk_runs": self.bulk_runs,
            "bulk_moved": self.bulk_moved,
            "bulk_refused": dict(self.bulk_refused),
        }


def refusal_key(exc: WorkflowError) -> str:
    if isinstance(exc, GuardFailed):
        return f"{exc.code}:{exc.guard}"
    return exc.code


def read_pool(reader: sa.Engine) -> Pool:
    citizens = {"c": list(POOL)}
    with reader.connect() as conn:
        apps = conn.execute(
            sa.text(
                "SELECT id, kind, citizen_id, state, receipt_no, hukou_region, acceptance_region,"
                " version FROM idcard_applications"
                " WHERE citizen_id IN :c AND state NOT IN ('rejected', 'collected')"
            ).bindparams(sa.bindparam("c", expanding=True)),
            citizens,
        )
        applications = [dict(r) for r in apps.mappings()]
        reports = conn.execute(
            sa.text(
                "SELECT id, citizen_id FROM idcard_loss_reports"
                " WHERE citizen_id IN :c AND state = 'reported'"
            ).bindparams(sa.bindparam("c", expanding=True)),
            citizens,
        )
        active = [dict(r) for r in reports.mappings()]
        cards = conn.execute(
            sa.text(
                "SELECT id, citizen_id, held_unit FROM idcard_found_cards"
                " WHERE citizen_id IN :c AND state = 'held'"
            ).bindparams(sa.bindparam("c", expanding=True)),
            citizens,
        )
        held = [dict(r) for r in cards.mappings()]
    for rows in (applications, active, held):
        for row in rows:
            row["id"] = uuid.UUID(str(row["id"]))
    return Pool(applications, active, held)


class Worker:
    def __init__(self, url: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.flow = wf.Workflow(url)
        connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
        self.reader = sa.create_engine(url, connect_args=connect_args)
        self.stats = Stats()
        self.counter = 0

    def close(self) -> None:
        self.flow.close()
        self.reader.dispose()

    def request_id(self) -> str | None:
        if self.rng.random() < 0.4:
            self.counter += 1
            return f"load-{self.seed}-{self.counter}"
        return None

    # -- running one command ----------------------------------------------------------------

    def run(
        self,
        command: str,
        event: str,
        call: Callable[[str | None], Any],
        *,
        idempotent: bool = True,
    ) -> Any:
        """Run ``call`` (with a request id or not), count what it gave; retry some with the
        same request id, which must answer as the first did."""
        stats = self.stats
        stats.tried[command] += 1
        request_id = self.request_id() if idempotent else None
        try:
            try:
                result = call(request_id)
            except ConcurrentUpdate:
                if request_id is None:
                    raise
                # Documented as safe to retry: the same request, the same id.
                stats.retries_after_conflict += 1
                result = call(request_id)
        except EXPECTED as exc:
            leaked = getattr(exc, "event", event)
            if leaked != event:
                # A refusal of a reaction's event (another machine's record): the caller
                # fired `event` and can't have caused it.
                stats.failure(command, f"reaction's {exc.code} ({leaked})", exc)
            else:
                stats.refusal(command, refusal_key(exc))
            return None
        except WorkflowError as exc:
            stats.failure(command, f"{type(exc).__name__}", exc)
            return None
        except Exception as exc:
            stats.failure(command, f"non-library {type(exc).__name__}", exc)
            return None
        stats.succeeded[command] += 1
        if request_id is not None and self.rng.random() < 0.3:
            stats.retries += 1
            try:
                again = call(request_id)
            except Exception as exc:
                stats.failure(command, f"retry raised {type(exc).__name__}", exc)
            else:
                if again != result:
                    stats.failure(
                        command,
                        "retry answered differently",
                        f"request {request_id}: {again!r} != {result!r}",
                    )
        return result

    def bulk(
        self,
        handle: wf.Handle[Any, Any],
        record_ids: list[uuid.UUID],
        event: str,
        actor: wf.Actor,
        **payload: Any,
    ) -> None:
        command = f"fire_many {handle.machine.name}.{event}"
        report = self.run(
            command,
            event,
            lambda _: handle.fire_many(record_ids, event, actor=actor, chunk_size=4, **payload),
            idempotent=False,
        )
        if report is None:
            return
        self.stats.bulk_runs += 1
        self.stats.bulk_moved += len(report.succeeded)
        expected = {cls.code for cls in EXPECTED}
        for refusal in report.refused:
            self.stats.bulk_refused[refusal.code] += 1
            if refusal.code not in expected:
                self.stats.failure(command, f"bulk refusal {refusal.code}", refusal.message)

    # -- the commands -----------------------------------------------------------------------

    def step(self) -> None:
        pool = read_pool(self.reader)
        roll = self.rng.random()
        if roll < 0.14 or not pool.applications:
            self.submit()
        elif roll < 0.44:
            self.advance(self.rng.choice(pool.applications))
        elif roll < 0.48:
            self.extend(self.rng.choice(pool.applications))
        elif roll < 0.56:
            self.report_loss()
        elif roll < 0.63:
            self.withdraw(pool)
        elif roll < 0.71:
            self.register_found_card()
        elif roll < 0.80:
            self.return_or_destroy(pool, "return_to_owner")
        elif roll < 0.86:
            self.return_or_destroy(pool, "destroy")
        else:
            self.fire_many(pool)

    def submit(self) -> None:
        rng = self.rng
        kind = rng.choice([Kind.REPLACEMENT, Kind.REPLACEMENT, Kind.RENEWAL, Kind.DAMAGED_RENEWAL])
        acceptance = rng.choice(ACCEPTANCE_COUNTIES)
        form = wf.SubmitApplication.model_validate(
            {
                "kind": kind,
                "citizen_id": rng.choice(POOL),
                "name": "Zhang Wei",
                "hukou_region": HUKOU,
                "acceptance_region": acceptance,
                "documents": DOCUMENTS[kind],
                "fee_paid": NATIONAL_FEE[kind],
            }
        )
        actor = clerk(acceptance) if rng.random() < 0.97 else stranger("submit")
        self.run("submit", "submit", lambda r: self.flow.submit(form, actor=actor, request_id=r))

    def advance(self, app: Mapping[str, Any]) -> None:
        rng = self.rng
        event = NEXT_EVENT[str(app["state"])]
        if event == "approve" and rng.random() < 0.2:
            event = "reject"
        if rng.random() < 0.04:
            event = rng.choice(list(NEXT_EVENT.values()))  # maybe out of turn
        actor = actor_for(event, app) if rng.random() < 0.96 else stranger(event)
        flow, app_id = self.flow, app["id"]
        call: Callable[[str | None], Any]
        if event == "collect":
            receipt = str(app["receipt_no"]) if rng.random() < 0.95 else "WRONGRECEIPT"
            renewal = app["kind"] != Kind.REPLACEMENT
            returned = renewal if rng.random() < 0.95 else not renewal

            def call(r: str | None) -> Any:
                return flow.collect(
                    app_id,
                    actor=actor,
                    receipt_no=receipt,
                    old_card_returned=returned,
                    request_id=r,
                )
        elif event == "reject":
            ground = rng.choice(list(RejectionGround))
            note = "the photograph does not match the register" if rng.random() < 0.9 else ""

            def call(r: str | None) -> Any:
                return flow.reject(app_id, actor=actor, ground=ground, note=note, request_id=r)
        else:
            command = getattr(flow, event)

            def call(r: str | None) -> Any:
                return command(app_id, actor=actor, request_id=r)

        self.run(event, event, call)

    def extend(self, app: Mapping[str, Any]) -> None:
        days = self.rng.randint(1, 30)
        actor = actor_for("extend_deadline", app)
        self.run(
            "extend_deadline",
            "extend_deadline",
            lambda r: self.flow.extend_deadline(
                app["id"], actor=actor, days=days, reason="the pass is closed by snow", request_id=r
            ),
        )

    def report_loss(self) -> None:
        citizen = self.rng.choice(POOL)
        actor = clerk(self.rng.choice(OFFICES))
        extra: dict[str, Any] = {}
        if REPORT_TAKES_IDENTITY_CHECK:
            extra["identity_checked"] = self.rng.random() < 0.97
        self.run(
            "report_loss",
            "report",
            lambda r: self.flow.report_loss(citizen, actor=actor, request_id=r, **extra),
        )

    def withdraw(self, pool: Pool) -> None:
        if not pool.reports:
            return self.report_loss()
        report = self.rng.choice(pool.reports)
        presented = self.rng.random() < 0.95
        actor = clerk(self.rng.choice(OFFICES))
        self.run(
            "withdraw_loss_report",
            "withdraw",
            lambda r: self.flow.withdraw_loss_report(
                report["id"], actor=actor, card_presented=presented, request_id=r
            ),
        )

    def register_found_card(self) -> None:
        citizen = self.rng.choice(POOL)
        actor = clerk(self.rng.choice(OFFICES))
        self.run(
            "register_found_card",
            "register",
            lambda r: self.flow.register_found_card(citizen, actor=actor, request_id=r),
        )

    def return_or_destroy(self, pool: Pool, event: str) -> None:
        if not pool.cards:
            return self.register_found_card()
        card = self.rng.choice(pool.cards)
        actor = clerk(str(card["held_unit"])) if self.rng.random() < 0.96 else stranger(event)
        if event == "destroy":
            self.run(
                "destroy_found_card",
                event,
                lambda r: self.flow.destroy_found_card(card["id"], actor=actor, request_id=r),
            )
            return None
        checked = self.rng.random() < 0.95
        self.run(
            "return_found_card",
            event,
            lambda r: self.flow.return_found_card(
                card["id"], actor=actor, identity_checked=checked, request_id=r
            ),
        )
        return None

    def fire_many(self, pool: Pool) -> None:
        rng = self.rng
        choice = rng.random()
        if choice < 0.5 and pool.applications:
            # A batch of the pool's open applications, whatever their states.
            apps = rng.sample(pool.applications, min(len(pool.applications), rng.randint(2, 6)))
            event = rng.choice(["transmit", "approve", "reject", "produce", "mark_ready"])
            actor = actor_for(event, rng.choice(apps))
            payload: dict[str, Any] = {}
            if event == "reject":
                payload = {"ground": "identity_mismatch"}
            self.bulk(self.flow.applications, [a["id"] for a in apps], event, actor, **payload)
        elif choice < 0.75 and pool.reports:
            reports = rng.sample(pool.reports, min(len(pool.reports), rng.randint(2, 4)))
            self.bulk(
                self.flow.loss_reports,
                [r["id"] for r in reports],
                "withdraw",
                clerk(rng.choice(OFFICES)),
                card_presented=True,
            )
        elif pool.cards:
            cards = rng.sample(pool.cards, min(len(pool.cards), rng.randint(2, 5)))
            unit = str(rng.choice(cards)["held_unit"])
            if rng.random() < 0.5:
                self.bulk(
                    self.flow.found_cards,
                    [c["id"] for c in cards],
                    "return_to_owner",
                    clerk(unit),
                    identity_checked=True,
                )
            else:
                self.bulk(self.flow.found_cards, [c["id"] for c in cards], "destroy", clerk(unit))
        else:
            self.register_found_card()


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(
            "usage: python -m tests.integration.load_worker URL SEED SECONDS OUT", file=sys.stderr
        )
        return 2
    url, seed, seconds, out = argv[0], int(argv[1]), float(argv[2]), Path(argv[3])
    started = time.monotonic()
    worker = Worker(url, seed)
    try:
        deadline = started + seconds
        while time.monotonic() < deadline:
            try:
                worker.step()
            except Exception as exc:  # a failure outside a command: reading the pool
                worker.stats.failure("step", f"worker {type(exc).__name__}", exc)
    finally:
        worker.close()
    summary = {"seed": seed, "seconds": round(time.monotonic() - started, 2)}
    summary.update(worker.stats.as_json())
    summary["report_loss_takes_identity_check"] = REPORT_TAKES_IDENTITY_CHECK
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps(summary, indent=2, sort_keys=True))
    partial.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
