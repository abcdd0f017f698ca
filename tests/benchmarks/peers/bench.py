"""The peers phase's coordinator: the variants' processes, the rounds, the checks afterwards.

See `tests.benchmarks.peers` for the method.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

import sqlalchemy as sa

from ..common import ROOT, Database, libpq_url, summary
from .process import PATH

VARIANTS: dict[str, str] = {
    "library": "tests.benchmarks.peers.ours:Library",
    "floor": "tests.benchmarks.peers.ours:Driver",
    "django-fsm-2": "tests.benchmarks.peers.with_django_fsm:DjangoFsm",
    "transitions": "tests.benchmarks.peers.with_transitions:Transitions",
    "python-statemachine": "tests.benchmarks.peers.with_statemachine:StatemachineOrm",
    "sqlalchemy-fsm": "tests.benchmarks.peers.with_sqlalchemy_fsm:SqlalchemyFsm",
}
OURS = ("library", "floor")
"""The variants on the library's own database; every other one has a database of its own."""
MODULES = ("django", "django_fsm", "django_fsm_log", "transitions", "sqlalchemy_fsm")
"""What the peers import beyond the library's own dependencies."""


def require_peers() -> None:
    """Stop with the command to run if the peers' packages are not installed here."""
    missing = [name for name in MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(
            f"the peers phase needs {', '.join(missing)}, which this Python does not have: run "
            "it with `make bench-peers`, which installs them into .venv-bench "
            "(tests/benchmarks/peers/requirements.txt)"
        )


class Worker:
    """The coordinator's handle on one variant's process (`tests.benchmarks.peers.worker`)."""

    def __init__(self, name: str, spec: str, *args: Any) -> None:
        self.name = name
        commands_in, commands_out = os.pipe()
        answers_in, answers_out = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"{__package__}.worker", str(commands_in), str(answers_out)],
            pass_fds=(commands_in, answers_out),
            cwd=ROOT,
        )
        os.close(commands_in)
        os.close(answers_out)
        self.commands = Connection(commands_out, readable=False)
        self.answers = Connection(answers_in, writable=False)
        self.commands.send((spec, args))

    def call(self, command: str, *params: Any) -> Any:
        self.commands.send((command, params))
        try:
            status, value = self.answers.recv()
        except EOFError:
            raise RuntimeError(f"{self.name}: its process ended during {command}") from None
        if status == "error":
            raise RuntimeError(f"{self.name}: {command} failed in its process:\n{value}")
        return value

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(RuntimeError, OSError):
                self.call("close")
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.commands.close()
        self.answers.close()


@contextmanager
def own_databases(db: Database, names: list[str]) -> Iterator[dict[str, str]]:
    """A fresh, empty database per peer, beside ``db``: SQLite files in its folder (removed
    with it), or databases on the same PostgreSQL server (dropped afterwards)."""
    if db.sqlite:
        assert db.path is not None
        folder, stem = db.path.parent, db.path.stem
        yield {name: f"sqlite:///{folder / f'{stem}-{name}.db'}" for name in names}
        return
    import psycopg

    url = sa.engine.make_url(db.url)
    made = {name: f"{url.database}_{name.replace('-', '_')}"[:63] for name in names}
    with psycopg.connect(libpq_url(db.url), autocommit=True) as admin:
        for dbname in made.values():
            admin.execute(f'CREATE DATABASE "{dbname}"')
    try:
        yield {
            name: url.set(database=dbname).render_as_string(hide_password=False)
            for name, dbname in made.items()
        }
    finally:
        with psycopg.connect(libpq_url(db.url), autocommit=True) as admin:
            for dbname in made.values():
                admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def _loadavg() -> list[str]:
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[:3]
    except OSError:
        return []


def bench_peers(
    db: Database,
    *,
    apps_per_round: int,
    rounds: int,
    warmup: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``rounds`` rounds (after ``warmup`` unrecorded ones) of every variant, each round over
    ``apps_per_round`` fresh applications per variant."""
    require_peers()
    names = list(VARIANTS)
    per_round = apps_per_round * len(PATH)
    loadavg_start = _loadavg()
    recorded: list[dict[str, Any]] = []
    workers: dict[str, Worker] = {}
    peers = [name for name in names if name not in OURS]
    with own_databases(db, peers) as urls:
        try:
            for name in names:
                where = (db.variant, db.url, str(db.path)) if name in OURS else (urls[name],)
                workers[name] = Worker(name, VARIANTS[name], *where)
            described = {name: w.call("describe") for name, w in workers.items()}
            checks = {name: w.call("check") for name, w in workers.items()}
            sweeps = 0
            for number in range(warmup + rounds):
                for worker in workers.values():
                    worker.call("prepare", apps_per_round)
                seconds = dict.fromkeys(names, 0.0)
                cpu = dict.fromkeys(names, 0.0)
                orders = []
                for event in PATH:
                    # Each sweep starts one variant later than the one before, so that every
                    # variant meets the machine's quieter and busier moments alike.
                    shift = sweeps % len(names)
                    sweeps += 1
                    order = names[shift:] + names[:shift]
                    orders.append(order)
                    for name in order:
                        done, wall, used = workers[name].call("run", event)
                        if done != apps_per_round:
                            raise RuntimeError(f"{name} ran {done} {event}s, not {apps_per_round}")
                        seconds[name] += wall
                        cpu[name] += used
                if number < warmup:
                    continue
                recorded.append({"orders": orders, "seconds": seconds, "cpu_seconds": cpu})
                log(
                    f"  round {len(recorded)}/{rounds}: "
                    + ", ".join(f"{n} {per_round / seconds[n]:,.0f}/s" for n in names)
                )
            finished = {name: w.call("finish") for name, w in workers.items()}
        finally:
            for worker in workers.values():
                worker.close()
    applications = (warmup + rounds) * apps_per_round
    for name in peers:
        expected = {
            "applications": {"ready": applications, "transmitted": 1},
            "history_rows": len(PATH) * applications + 1,
        }
        if finished[name] != expected:
            raise RuntimeError(f"{name} left {finished[name]}, not {expected}")
    variants: dict[str, Any] = {}
    for name in names:
        times = [r["seconds"][name] for r in recorded]
        variants[name] = {
            **described[name],
            "checks": checks[name],
            "finished": finished[name],
            "tps": summary([per_round / t for t in times]),
            "cpu_us": summary([1e6 * r["cpu_seconds"][name] / per_round for r in recorded]),
            "vs_library": summary([r["seconds"][name] / r["seconds"]["library"] for r in recorded]),
            "vs_floor": summary([r["seconds"][name] / r["seconds"]["floor"] for r in recorded]),
        }
    return {
        "apps_per_round": apps_per_round,
        "transitions_per_round": per_round,
        "rounds": rounds,
        "warmup": warmup,
        "events": list(PATH),
        "loadavg_start": loadavg_start,
        "loadavg_end": _loadavg(),
        "variants": variants,
        "per_round": recorded,
    }
