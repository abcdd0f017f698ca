"""A writer for the failover test: runs commands with request ids until told to stop.

    python -m tests.ha.writer URL NAME SEED OUT STOP

It submits applications of its own (citizen numbers no other seed uses) and moves them along
the process, every command with a request id of its own. Each command is one line of ``OUT``,
flushed at once, before and after:

- ``try <request_id> <json>`` just before the command is sent;
- ``lost <request_id> <message>`` when it raised `ConnectionLost`: the writer waits a little
  and sends the same command again, with the same request id, until it is answered;
- ``ok <request_id> <record_id> <event> <version> <state>`` once it is answered;
- ``BAD <message>`` (and exit status 3) when the library answers what it must not.

It stops (exit status 0) once the file ``STOP`` exists and its last command was answered. It
never gives up on a command: a command still unanswered after two minutes is ``BAD``.
"""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import workflow as wf
from tests.integration.crash_worker import NEXT_EVENT, citizen_number, new_form
from tests.support import actor_for, clerk, good_payload

PATIENCE = 120.0
"""Seconds a writer keeps retrying one command before calling it a failure."""


class Bad(Exception):
    """The library answered something it must not."""


class Log:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


def until_answered(
    log: Log, request_id: str, command: Callable[[], wf.ApplicationView]
) -> wf.ApplicationView:
    """Send the command, and again with the same request id after each lost connection."""
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            return command()
        except wf.ConnectionLost as exc:
            log.say(f"lost {request_id} {str(exc).splitlines()[0][:200]}")
            if time.monotonic() > deadline:
                raise Bad(f"{request_id} still unanswered after {PATIENCE:.0f} s") from exc
            time.sleep(random.uniform(0.02, 0.1))


def opened(url: str) -> wf.Workflow:
    """A workflow on the URL, waiting out a failover (opening it checks the schema)."""
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            return wf.Workflow(url)
        except wf.ConnectionLost:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run(url: str, name: str, seed: int, out: Path, stop: Path) -> None:
    rng = random.Random(seed)
    counter = 0
    apps: dict[uuid.UUID, wf.ApplicationView] = {}
    with out.open("a") as stream, opened(url) as flow:
        log = Log(stream)
        log.say("ready")
        while not stop.exists():
            counter += 1
            request_id = f"{name}-{counter}"
            if rng.random() < 0.25 or not apps:
                form = new_form(rng, citizen_number(seed, counter))
                attempt: dict[str, Any] = {
                    "command": "submit",
                    "form": form.model_dump(mode="json"),
                }
                log.say(f"try {request_id} {json.dumps(attempt)}")

                def submit(
                    form: wf.SubmitApplication = form, request_id: str = request_id
                ) -> wf.ApplicationView:
                    return flow.submit(form, actor=clerk(), request_id=request_id)

                view = until_answered(log, request_id, submit)
                if view.version != 1 or view.citizen_id != form.citizen_id:
                    raise Bad(f"submit {request_id} answered v{view.version}")
                event, expected = "submit", 1
            else:
                before = apps[rng.choice(list(apps))]
                event = NEXT_EVENT[before.state]
                if event == "approve" and rng.random() < 0.15:
                    event = "reject"
                actor = actor_for(event, before)
                payload = good_payload(event, before)
                attempt = {"command": event, "app_id": str(before.id), "payload": payload}
                log.say(f"try {request_id} {json.dumps(attempt)}")

                def fire(
                    before: wf.ApplicationView = before,
                    event: str = event,
                    actor: wf.Actor = actor,
                    payload: dict[str, object] = payload,
                    request_id: str = request_id,
                ) -> wf.ApplicationView:
                    return flow.fire(
                        before.id, event, actor=actor, request_id=request_id, **payload
                    )

                view = until_answered(log, request_id, fire)
                expected = before.version + 1
                if view.id != before.id or view.version != expected:
                    raise Bad(f"{event} {request_id} answered v{view.version}, not v{expected}")
            log.say(f"ok {request_id} {view.id} {event} {view.version} {view.state}")
            if view.state in NEXT_EVENT:
                apps[view.id] = view
            else:
                apps.pop(view.id, None)


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print("usage: python -m tests.ha.writer URL NAME SEED OUT STOP", file=sys.stderr)
        return 2
    url, name, seed, out, stop = argv
    try:
        run(url, name, int(seed), Path(out), Path(stop))
    except Bad as exc:
        with Path(out).open("a") as stream:
            Log(stream).say(f"BAD {exc}")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
