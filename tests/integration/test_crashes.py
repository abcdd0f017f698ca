"""A process killed with SIGKILL in the middle of commands loses and half-writes nothing.

A worker (`crash_worker`) runs commands as fast as it can in a real subprocess; the test kills
it at a random moment, many times over one database, and after every kill checks with a fresh
workflow that every command the worker saw committed is there, that no application is half
written (history, outbox and record agree row for row) and that `verify()` is clean. A command
with a request id that the killed worker had sent without seeing its answer is sent again by
the next worker, which checks that it took effect exactly once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import sqlalchemy as sa

import workflow as wf

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"),
]

ROOT = Path(__file__).absolute().parents[2]
SQLITE_KILLS = 40
POSTGRES_KILLS = 30
WORKER_NAME = "idcard_crash_worker"
"""The PostgreSQL application_name of the workers' connections (to wait for them to go)."""


class Output:
    """Reads a worker's stdout on a thread, so the pipe never fills, and keeps whole lines."""

    def __init__(self, stream: BinaryIO) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: BinaryIO) -> None:
        for raw in stream:
            # A line the kill cut short has no newline: it was never fully printed.
            if raw.endswith(b"\n"):
                with self._changed:
                    self.lines.append(raw.decode().rstrip("\n"))
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, line: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while line not in self.lines and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return line in self.lines

    def finish(self, timeout: float = 10) -> list[str]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the worker's stdout stayed open after the kill"
        return list(self.lines)


@dataclass
class Tally:
    """What the workers reported committed, over all kills."""

    kills: int = 0
    committed: int = 0
    acks: int = 0
    retried: int = 0
    versions: dict[uuid.UUID, int] = field(default_factory=dict)
    events: dict[tuple[uuid.UUID, int], str] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)


def worker_url(url: str) -> str:
    """The database URL for a worker: on PostgreSQL its connections carry a name to wait on."""
    if sa.make_url(url).get_backend_name() != "postgresql":
        return url
    return f"{url}{'&' if '?' in url else '?'}application_name={WORKER_NAME}"


def wait_for_dead_connections(url: str, timeout: float = 20) -> None:
    """On PostgreSQL, wait until the server has noticed every killed worker's connection and
    rolled its transaction back (and released its row locks)."""
    if sa.make_url(url).get_backend_name() != "postgresql":
        return
    engine = sa.create_engine(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with engine.connect() as conn:
                left = conn.execute(
                    sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"),
                    {"n": WORKER_NAME},
                ).scalar_one()
            if left == 0:
                return
            assert time.monotonic() < deadline, f"{left} killed connections still on the server"
            time.sleep(0.05)
    finally:
        engine.dispose()


def run_and_kill(
    url: str, seed: int, pending: dict[str, Any] | None, rng: random.Random, log: Path
) -> list[str]:
    """Start a worker, kill it with SIGKILL at a random moment, return the lines it printed."""
    command = [sys.executable, "-m", "tests.integration.crash_worker", worker_url(url), str(seed)]
    if pending is not None:
        command.append(json.dumps(pending))
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr)
    try:
        assert process.stdout is not None
        output = Output(process.stdout)
        if rng.random() < 0.15:
            # Now and then a kill while the worker starts up: opening the database, recovering
            # what the last one left, retrying its unanswered request.
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            if not output.wait_for("ready", timeout=30):
                pytest.fail(f"the worker never got ready: {log.read_text()}")
            time.sleep(rng.uniform(0.05, 0.6))
        alive = process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        lines = output.finish()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    problems = [line for line in lines if line.startswith("BAD")]
    assert not problems, problems
    assert alive and process.returncode == -signal.SIGKILL, (
        f"the worker ended on its own ({process.returncode}): {log.read_text()}"
    )
    return lines


def unanswered(lines: list[str], pending: dict[str, Any] | None) -> dict[str, Any] | None:
    """The request a killed worker sent without seeing its answer, if any."""
    if pending is not None and not any(line.startswith("ok ") for line in lines):
        return pending  # the worker died before it could retry it: the next one will
    last = lines[-1] if lines else ""
    return json.loads(last[4:]) if last.startswith("try ") else None


def record(tally: Tally, lines: list[str]) -> None:
    for line in lines:
        word, _, rest = line.partition(" ")
        if word == "ok":
            app, event, version = rest.split()
            app_id, seq = uuid.UUID(app), int(version)
            tally.committed += 1
            tally.versions[app_id] = max(seq, tally.versions.get(app_id, 0))
            tally.events[app_id, seq] = event
        elif word == "acked":
            tally.acks += 1
            tally.acked.update(int(i) for i in rest.split(","))


def check(url: str, tally: Tally, retried: dict[str, Any] | None) -> None:
    """Everything a fresh workflow and the tables say after a kill."""
    with wf.Workflow(url) as flow:
        report = flow.verify()
        assert report.ok, report.broken
        pending_ids = {e.id for e in flow.pending_events(limit=10_000)}
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            apps = {
                uuid.UUID(str(i)): (state, version, citizen)
                for i, state, version, citizen in conn.execute(
                    sa.text("SELECT id, state, version, citizen_id FROM idcard_applications")
                )
            }
            # Every machine's rows: a command may write records of other machines too.
            history = [
                (machine, uuid.UUID(str(r)), seq, event, to_state)
                for machine, r, seq, event, to_state in conn.execute(
                    sa.text(
                        "SELECT machine, record_id, seq, event, to_state FROM idcard_transition_log"
                    )
                )
            ]
            outbox = [
                (machine, uuid.UUID(str(r)), seq, event, state)
                for machine, r, seq, event, state in conn.execute(
                    sa.text("SELECT machine, record_id, seq, event, state FROM idcard_outbox")
                )
            ]
            requests = [
                (uuid.UUID(str(r)), command)
                for r, command in conn.execute(
                    sa.text(
                        "SELECT record_id, command FROM idcard_command_requests "
                        "WHERE machine = 'application'"
                    )
                )
            ]
    finally:
        engine.dispose()

    # Verification saw every record and every history row.
    assert report.records == len({(machine, r) for machine, r, *_ in history})
    assert report.rows == len(history)

    # Exactly one outbox row per history row, and none without one.
    counts = Counter(outbox)
    assert all(n == 1 for n in counts.values()), [k for k, n in counts.items() if n > 1]
    assert set(counts) == set(history)

    # Every application has its whole history, nothing more, and its last row is its state.
    by_record: dict[uuid.UUID, dict[int, tuple[str, str]]] = {}
    for machine, record_id, seq, event, to_state in history:
        if machine == "application":
            assert seq not in by_record.setdefault(record_id, {}), (record_id, seq)
            by_record[record_id][seq] = (event, to_state)
    assert set(by_record) == set(apps), "history rows without an application, or the reverse"
    for app_id, (state, version, _) in apps.items():
        rows = by_record[app_id]
        assert sorted(rows) == list(range(1, version + 1)), (app_id, version, sorted(rows))
        assert rows[1][0] == "submit"
        assert rows[version][1] == state

    # Each citizen number was used by one submission only (retries included).
    citizens = Counter(citizen for _, _, citizen in apps.values())
    assert all(n == 1 for n in citizens.values()), [c for c, n in citizens.items() if n > 1]

    # A recorded request belongs to an application that exists.
    assert all(record_id in apps for record_id, _ in requests)

    # Durability: everything the workers saw committed is there.
    for app_id, version in tally.versions.items():
        assert app_id in apps, f"committed application {app_id} is lost"
        assert apps[app_id][1] >= version, (app_id, apps[app_id][1], version)
    for (app_id, seq), event in tally.events.items():
        assert by_record[app_id][seq][0] == event, (app_id, seq, event)
    assert not tally.acked & pending_ids, "acknowledged events are pending again"

    # A request retried after a kill took effect exactly once.
    if retried is not None:
        if retried["command"] == "submit":
            number = retried["form"]["citizen_id"]
            assert citizens[number] == 1, number
        else:
            app_id = uuid.UUID(retried["app_id"])
            assert by_record[app_id][retried["version"]][0] == retried["event"]


def crash_many_times(url: str, kills: int, seed: int, tmp_path: Path) -> Tally:
    rng = random.Random(seed)
    tally = Tally()
    pending: dict[str, Any] | None = None
    for kill in range(kills):
        log = tmp_path / f"worker{kill}.log"
        lines = run_and_kill(url, kill + 1, pending, rng, log)
        tally.kills += 1
        resolved = pending if pending is not None and lines and lines[0].startswith("ok ") else None
        if resolved is not None:
            tally.retried += 1
        pending = unanswered(lines, pending)
        record(tally, lines)
        wait_for_dead_connections(url)
        check(url, tally, resolved)
    return tally


def test_killed_workers_lose_and_half_write_nothing(db_url: str, tmp_path: Path) -> None:
    postgres = sa.make_url(db_url).get_backend_name() == "postgresql"
    kills = int(os.environ.get("IDCARD_CRASH_KILLS", POSTGRES_KILLS if postgres else SQLITE_KILLS))
    started = time.monotonic()
    tally = crash_many_times(db_url, kills, seed=20260302, tmp_path=tmp_path)
    print(
        f"\n{tally.kills} crash points, {tally.committed} commands and {tally.acks} "
        f"acknowledgements committed before them, {tally.retried} unanswered requests "
        f"retried after a kill, {len(tally.versions)} applications: nothing lost "
        f"({time.monotonic() - started:.1f} s)"
    )
    assert tally.kills == kills
    assert tally.committed > kills, "the workers hardly ran before being killed"
