"""The demo that ``make demo`` runs: it finishes, tells the truth and leaks no citizen number."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

import workflow as wf
from workflow.demo import DaySummary, SimulatedClock, main, run_day

FULL_CITIZEN_NUMBER = re.compile(r"[0-9]{17}[0-9X]")
FINAL = {wf.State.REJECTED, wf.State.COLLECTED}


def stored(path: Path) -> tuple[dict[uuid.UUID, str], list[str]]:
    """Every application's state and every receipt number, read straight from the file."""
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, state, receipt_no FROM applications")).all()
    finally:
        engine.dispose()
    return {uuid.UUID(str(r.id)): str(r.state) for r in rows}, [str(r.receipt_no) for r in rows]


def test_main_runs_the_day_and_masks_every_citizen_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "demo.db"
    assert main(["--db", str(db), "--applications", "60"]) == 0
    out = capsys.readouterr().out

    assert not FULL_CITIZEN_NUMBER.search(out)
    states, receipts = stored(db)
    assert len(states) == 60
    assert not [r for r in receipts if r in out]
    assert wf.State.REJECTED in states.values()
    assert wf.State.COLLECTED in states.values()
    assert set(states.values()) - FINAL
    refusals = re.search(r"turned away: old card not handed back\D*([0-9]+)", out)
    assert refusals is not None
    assert int(refusals.group(1)) >= 1
    # The path may be folded over several lines of the table's cell.
    assert str(db) in re.sub(r"[\s│|]", "", out)

    with wf.Workflow(f"sqlite:///{db}") as flow:
        for app_id, state in states.items():
            assert flow.get(app_id).state == state
            assert flow.history(app_id)[-1].to_state == state


def test_main_recreates_the_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "var" / "again.db"
    assert main(["--db", str(db), "--applications", "20"]) == 0
    assert main(["--db", str(db), "--applications", "10"]) == 0
    capsys.readouterr()
    states, _ = stored(db)
    assert len(states) == 10


def run(path: Path, seed: int) -> DaySummary:
    url = f"sqlite:///{path}"
    wf.upgrade(url)
    clock = SimulatedClock(datetime(2026, 1, 1, 16, 0, tzinfo=UTC))
    with wf.Workflow(url, clock=clock) as flow:
        summary = run_day(flow, applications=40, rng=random.Random(seed), clock=clock)
    assert clock() == summary.closed_at
    return summary


def test_run_day_shows_every_outcome_and_is_reproducible(tmp_path: Path) -> None:
    summary = run(tmp_path / "one.db", seed=7)

    assert summary.applications == 40
    assert sum(summary.by_state.values()) == 40
    assert summary.by_state[wf.State.REJECTED] >= 1
    assert summary.by_state[wf.State.COLLECTED] >= 1
    assert summary.intermediate >= 1
    assert summary.counter_refusals >= 1
    assert summary.overdue >= 1
    assert summary.overdue_reviews >= 1
    states, _ = stored(tmp_path / "one.db")
    assert {s: summary.by_state[s] for s in wf.State if summary.by_state[s]} == {
        s: list(states.values()).count(s) for s in set(states.values())
    }

    again = run(tmp_path / "two.db", seed=7)
    assert replace(again, elapsed_seconds=0) == replace(summary, elapsed_seconds=0)


def test_the_module_runs_as_a_program(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "workflow.demo", "--applications", "30"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "demo.db").is_file()
    assert not FULL_CITIZEN_NUMBER.search(result.stdout + result.stderr)
