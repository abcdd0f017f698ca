"""A worker that runs commands as fast as it can until it is killed (see `test_crashes`).

    python -m tests.integration.crash_worker URL SEED [RETRY]

It submits applications with citizen numbers no other seed uses, moves open ones along the
process (some with request ids, some of those retried at once), refuses a few illegal
commands and acknowledges some outbox events. It prints one line per fact, flushed at once:

- ``ready`` once the workflow is open;
- ``try <json>`` just before a command with a request id (what to retry if it is killed);
- ``ok <app_id> <event> <version>`` after a command committed (or a retry was answered);
- ``acked <id>,<id>,...`` after an acknowledgement committed;
- ``BAD <message>`` (and exit status 3) when the library answers wrongly.

``RETRY`` is the JSON of a ``try`` line a killed worker printed without its ``ok``: the worker
sends that command again, with the same request id, before anything else, and checks that it
took effect exactly once.
"""

from __future__ import annotations

import json
import random
import sys
import uuid
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa

import workflow as wf
from tests.support import ACCEPTANCE, DOCUMENTS, HUKOU, actor_for, clerk, good_payload
from workflow.models.citizen_id import check_character
from workflow.models.enums import NATIONAL_FEE, Kind

NUMBERS_PER_SEED = 100_000
"""Citizen numbers each seed may use; seeds below 200 keep every birth date before 1996."""

NEXT_EVENT = {
    "submitted": "transmit",
    "transmitted": "approve",
    "approved": "produce",
    "produced": "mark_ready",
    "ready": "collect",
}
"""The event that moves an application on from each open state (reject is drawn apart)."""


class Bad(Exception):
    """The library answered something it must not."""


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def citizen_number(seed: int, counter: int) -> str:
    """A valid GB 11643 number, different for every (seed, counter) pair."""
    if not 0 <= counter < NUMBERS_PER_SEED:
        raise ValueError("this seed has used all its citizen numbers")
    k = seed * NUMBERS_PER_SEED + counter
    born = date(1940, 1, 1) + timedelta(days=k // 1000)
    first17 = f"{HUKOU}{born:%Y%m%d}{k % 1000:03d}"
    return first17 + check_character(first17)


def new_form(rng: random.Random, number: str) -> wf.SubmitApplication:
    kind = rng.choice(list(Kind))
    waived = rng.random() < 0.2
    return wf.SubmitApplication.model_validate(
        {
            "kind": kind,
            "citizen_id": number,
            "name": "Li Lei",
            "hukou_region": HUKOU,
            "acceptance_region": ACCEPTANCE,
            "documents": DOCUMENTS[kind],
            "fee_paid": 0 if waived else NATIONAL_FEE[kind],
            "fee_waiver": "minimum_subsistence" if waived else None,
        }
    )


def open_applications(url: str) -> dict[uuid.UUID, str]:
    """Every open application in the database, with its state."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT id, state FROM idcard_applications "
                    "WHERE state NOT IN ('rejected', 'collected')"
                )
            ).all()
    finally:
        engine.dispose()
    return {uuid.UUID(str(row[0])): str(row[1]) for row in rows}


def retry(flow: wf.Workflow, attempt: dict[str, Any]) -> None:
    """Send a command a killed worker may or may not have committed; it must count once."""
    request_id = attempt["request_id"]
    if attempt["command"] == "submit":
        form = wf.SubmitApplication.model_validate(attempt["form"])
        view = flow.submit(form, actor=clerk(), request_id=request_id)
        if view.citizen_id != form.citizen_id or view.version != 1:
            raise Bad(f"retried submit {request_id} answered {view.citizen_id} v{view.version}")
        say(f"ok {view.id} submit 1")
        return
    app_id = uuid.UUID(attempt["app_id"])
    event = attempt["event"]
    actor = wf.Actor.model_validate(attempt["actor"])
    view = flow.fire(app_id, event, actor=actor, request_id=request_id, **attempt["payload"])
    if view.version != attempt["version"]:
        raise Bad(
            f"retried {event} {request_id} on {app_id} gave version {view.version}, "
            f"expected {attempt['version']}"
        )
    say(f"ok {app_id} {event} {view.version}")


def run(url: str, seed: int, pending: dict[str, Any] | None) -> None:
    rng = random.Random(seed)
    counter = 0
    with wf.Workflow(url) as flow:
        if pending is not None:
            retry(flow, pending)
        apps = open_applications(url)
        say("ready")
        while True:
            roll = rng.random()
            if roll < 0.3 or not apps:
                counter += 1
                form = new_form(rng, citizen_number(seed, counter))
                request_id = None
                if rng.random() < 0.5:
                    request_id = f"s{seed}-{counter}"
                    attempt = {
                        "command": "submit",
                        "request_id": request_id,
                        "form": form.model_dump(mode="json"),
                    }
                    say("try " + json.dumps(attempt))
                view = flow.submit(form, actor=clerk(), request_id=request_id)
                say(f"ok {view.id} submit {view.version}")
                apps[view.id] = str(view.state)
                if request_id is not None and rng.random() < 0.3:
                    again = flow.submit(form, actor=clerk(), request_id=request_id)
                    if again != view:
                        raise Bad(f"a retried submit {request_id} answered differently")
                    say(f"ok {again.id} submit {again.version}")
            elif roll < 0.9:
                app_id = rng.choice(list(apps))
                view = flow.get(app_id)
                if view.state not in NEXT_EVENT:
                    del apps[app_id]
                    continue
                if rng.random() < 0.05:
                    # A refusal in the middle of the run: it must change nothing.
                    wrong = rng.choice(
                        [e for e in NEXT_EVENT.values() if e != NEXT_EVENT[view.state]]
                    )
                    try:
                        flow.fire(
                            app_id, wrong, actor=actor_for(wrong, view), **good_payload(wrong, view)
                        )
                    except (wf.IllegalTransition, wf.PermissionDenied, wf.GuardFailed):
                        pass
                    else:
                        raise Bad(f"{wrong} was allowed from {view.state}")
                    continue
                event = NEXT_EVENT[view.state]
                if event == "approve" and rng.random() < 0.2:
                    event = "reject"
                actor = actor_for(event, view)
                payload = good_payload(event, view)
                if event == "reject" and rng.random() < 0.5:
                    payload = {"ground": "other", "note": "photo does not match"}
                request_id = None
                if rng.random() < 0.5:
                    request_id = f"f{seed}-{app_id}-{view.version + 1}"
                    attempt = {
                        "command": "fire",
                        "request_id": request_id,
                        "app_id": str(app_id),
                        "event": event,
                        "actor": actor.model_dump(mode="json"),
                        "payload": payload,
                        "version": view.version + 1,
                    }
                    say("try " + json.dumps(attempt))
                moved = flow.fire(app_id, event, actor=actor, request_id=request_id, **payload)
                if moved.version != view.version + 1:
                    raise Bad(f"{event} on {app_id} went from v{view.version} to v{moved.version}")
                say(f"ok {app_id} {event} {moved.version}")
                apps[app_id] = str(moved.state)
                if request_id is not None and rng.random() < 0.3:
                    again = flow.fire(app_id, event, actor=actor, request_id=request_id, **payload)
                    if again.version != moved.version:
                        raise Bad(f"a retried {event} {request_id} moved {app_id} again")
                    say(f"ok {app_id} {event} {again.version}")
            else:
                events = flow.pending_events(limit=rng.randint(1, 20))
                chosen = [e.id for e in events if rng.random() < 0.7]
                if chosen:
                    flow.ack(chosen)
                    say("acked " + ",".join(map(str, chosen)))


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python -m tests.integration.crash_worker URL SEED [RETRY]", file=sys.stderr)
        return 2
    url, seed = argv[0], int(argv[1])
    pending = json.loads(argv[2]) if len(argv) == 3 else None
    try:
        run(url, seed, pending)
    except Bad as exc:
        say(f"BAD {exc}")
        return 3
    return 0  # pragma: no cover - the loop only ends when the worker is killed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
