"""The demo that ``make demo`` runs: it finishes, tells the truth and leaks no citizen number."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import workflow as wf
from workflow.demo import DaySummary, Refusal, SimulatedClock, main, program, run_day
from workflow.machines import REGISTRY

# A number standing on its own: 18 digits inside a hash are no citizen number.
FULL_CITIZEN_NUMBER = re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
FINAL_APPLICATION = {wf.State.REJECTED, wf.State.COLLECTED}
MACHINE_TABLES = {m.name: m.repository.table.name for m in REGISTRY}


@dataclass(frozen=True)
class Stored:
    """What the demo left in the file, read straight from the tables."""

    states: dict[str, dict[uuid.UUID, str]]
    """Machine → record id → state."""
    log_rows: dict[str, int]
    """Machine → transition-log rows."""
    receipts: list[str]

    def counts(self, machine: str) -> Counter[str]:
        return Counter(self.states[machine].values())


def stored(path: Path) -> Stored:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            states = {
                machine: {
                    uuid.UUID(str(r.id)): str(r.state)
                    for r in conn.execute(sa.text(f"SELECT id, state FROM {table}"))
                }
                for machine, table in MACHINE_TABLES.items()
            }
            log_rows = {
                str(m): int(n)
                for m, n in conn.execute(
                    sa.text("SELECT machine, count(*) FROM idcard_transition_log GROUP BY machine")
                )
            }
            receipts = [
                str(r)
                for r in conn.execute(
                    sa.text("SELECT receipt_no FROM idcard_applications")
                ).scalars()
            ]
    finally:
        engine.dispose()
    return Stored(states, log_rows, receipts)


def cross_machine_violations(path: Path) -> list[str]:
    """The rules joining the three machines, checked on the tables: every query must be empty."""
    queries = {
        "a replacement without a loss report": """
            SELECT a.id FROM idcard_applications a WHERE a.kind = 'replacement'
            AND NOT EXISTS (
                SELECT 1 FROM idcard_loss_reports r WHERE r.citizen_id = a.citizen_id)""",
        "a closed report without a collected replacement": """
            SELECT r.id FROM idcard_loss_reports r WHERE r.state = 'closed'
            AND NOT EXISTS (SELECT 1 FROM idcard_applications a WHERE a.citizen_id = r.citizen_id
                            AND a.kind = 'replacement' AND a.state = 'collected')""",
        "a collected replacement whose owner's report is still active": """
            SELECT a.id FROM idcard_applications a WHERE a.kind = 'replacement'
            AND a.state = 'collected'
            AND EXISTS (SELECT 1 FROM idcard_loss_reports r WHERE r.citizen_id = a.citizen_id
                        AND r.state = 'reported')""",
        "a returned card whose owner's report is still active": """
            SELECT c.id FROM idcard_found_cards c WHERE c.state = 'returned'
            AND EXISTS (SELECT 1 FROM idcard_loss_reports r WHERE r.citizen_id = c.citizen_id
                        AND r.state = 'reported')""",
        "a returned card whose owner has a replacement": """
            SELECT c.id FROM idcard_found_cards c WHERE c.state = 'returned'
            AND EXISTS (SELECT 1 FROM idcard_applications a WHERE a.citizen_id = c.citizen_id
                        AND a.kind = 'replacement' AND a.state != 'rejected')""",
        "a destroyed card whose owner has no replacement": """
            SELECT c.id FROM idcard_found_cards c WHERE c.state = 'destroyed'
            AND NOT EXISTS (SELECT 1 FROM idcard_applications a WHERE a.citizen_id = c.citizen_id
                            AND a.kind = 'replacement' AND a.state != 'rejected')""",
        "two active reports for one citizen": """
            SELECT citizen_id FROM idcard_loss_reports WHERE state = 'reported'
            GROUP BY citizen_id HAVING count(*) > 1""",
    }
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return [rule for rule, sql in queries.items() if conn.execute(sa.text(sql)).first()]
    finally:
        engine.dispose()


def shown(label: str, out: str) -> int:
    """The number in the summary-table row labelled ``label``."""
    found = re.search(rf"(?:^|[│|])\s*{re.escape(label)}\s*[│|]\s*([0-9]+)", out, re.MULTILINE)
    assert found is not None, label
    return int(found.group(1))


def test_main_runs_the_three_systems_and_masks_every_citizen_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "demo.db"
    assert main(["--db", str(db), "--applications", "60"]) == 0
    out = capsys.readouterr().out

    assert not FULL_CITIZEN_NUMBER.search(out)
    data = stored(db)
    assert len(data.states[wf.APPLICATION.name]) == 60
    assert not [r for r in data.receipts if r in out]

    applications = data.counts(wf.APPLICATION.name)
    reports = data.counts(wf.LOSS_REPORT.name)
    cards = data.counts(wf.FOUND_CARD.name)
    for final in (wf.State.REJECTED, wf.State.COLLECTED):
        assert applications[final] >= 1, final
    assert set(applications) - FINAL_APPLICATION
    for report_state in wf.LossReportState:
        assert reports[report_state] >= 1, report_state
    for card_state in wf.FoundCardState:
        assert cards[card_state] >= 1, card_state

    # The summary shows what the tables hold, per machine and state.
    for counts in (applications, reports, cards):
        for label, n in counts.items():
            assert shown(label, out) == n, label
    assert shown("applications", out) == 60
    assert shown("loss reports", out) == reports.total()
    assert shown("found cards", out) == cards.total()
    for refusal in Refusal:
        assert shown(refusal.value, out) >= 1, refusal
    total = sum(data.log_rows.values())
    assert shown("transitions (all machines)", out) == total
    for machine in REGISTRY:
        assert shown(f"transitions: {machine.noun}s", out) == data.log_rows[machine.name]
    records = sum(len(s) for s in data.states.values())
    assert f"verify(): {records} records and {total} history rows checked, 0 broken." in out
    # The path may be folded over several lines of the table's cell.
    assert str(db) in re.sub(r"[\s│|]", "", out)

    assert cross_machine_violations(db) == []
    with wf.Workflow(f"sqlite:///{db}") as flow:
        report = flow.verify()
        assert report.ok
        assert (report.records, report.rows) == (records, total)

        def current(machine: str, record_id: uuid.UUID) -> str:
            return str(flow.handle(machine).get(record_id).state)

        rows = Counter[str]()
        for machine, states in data.states.items():
            for record_id, stored_state in states.items():
                history = flow.history(record_id)
                assert current(machine, record_id) == stored_state
                assert history[0].from_state is None
                assert history[-1].to_state == stored_state
                assert [h.seq for h in history] == list(range(1, len(history) + 1))
                rows[machine] += len(history)
        assert rows == data.log_rows


def test_main_recreates_the_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "var" / "again.db"
    assert main(["--db", str(db), "--applications", "20"]) == 0
    assert main(["--db", str(db), "--applications", "10"]) == 0
    out = capsys.readouterr().out
    data = stored(db)
    assert len(data.states[wf.APPLICATION.name]) == 10
    records = sum(len(s) for s in data.states.values())
    assert f"verify(): {records} records and {sum(data.log_rows.values())} history rows" in out


def test_main_fails_when_the_database_disagrees_with_the_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def miscounted(flow: wf.Workflow, **kwargs: Any) -> DaySummary:
        summary = run_day(flow, **kwargs)
        cards = dict(summary.states[wf.FOUND_CARD.name])
        cards["held"] += 1
        cards["destroyed"] -= 1
        return replace(summary, states={**summary.states, wf.FOUND_CARD.name: cards})

    monkeypatch.setattr(program, "run_day", miscounted)
    assert main(["--db", str(tmp_path / "demo.db"), "--applications", "10"]) == 1
    out = capsys.readouterr().out
    assert "disagrees with the replay on found_card" in out
    assert "on application" not in out
    assert "on loss_report" not in out


def run(path: Path, seed: int, applications: int = 40) -> DaySummary:
    url = f"sqlite:///{path}"
    wf.upgrade(url)
    clock = SimulatedClock(datetime(2026, 1, 1, 16, 0, tzinfo=UTC))
    with wf.Workflow(url, clock=clock) as flow:
        summary = run_day(flow, applications=applications, rng=random.Random(seed), clock=clock)
        assert flow.verify().ok
    assert clock() == summary.closed_at
    return summary


def test_run_day_shows_every_outcome_and_is_reproducible(tmp_path: Path) -> None:
    summary = run(tmp_path / "one.db", seed=7)

    assert summary.applications == 40
    assert sum(summary.by_state.values()) == 40
    assert summary.by_state[wf.State.REJECTED] >= 1
    assert summary.by_state[wf.State.COLLECTED] >= 1
    assert summary.intermediate >= 1
    assert all(n >= 1 for n in summary.loss_reports.values()), summary.loss_reports
    assert all(n >= 1 for n in summary.found_cards.values()), summary.found_cards
    assert 1 <= summary.reports_filed_by_application < sum(summary.loss_reports.values())
    assert all(n >= 1 for n in summary.refusals.values()), summary.refusals
    assert summary.counter_refusals == summary.refusals[Refusal.OLD_CARD_KEPT]
    assert summary.overdue >= 1
    assert summary.overdue_reviews >= 1
    assert len(summary.held_cards) == summary.found_cards[wf.FoundCardState.HELD]

    data = stored(tmp_path / "one.db")
    for machine in REGISTRY:
        assert list(summary.states[machine.name]) == list(machine.definition.states)
        tracked = {s: n for s, n in summary.states[machine.name].items() if n}
        assert tracked == dict(data.counts(machine.name)), machine.name
    assert {m: n for m, n in summary.transitions_by_machine.items() if n} == data.log_rows
    assert summary.transitions == sum(data.log_rows.values())
    assert summary.records == sum(len(s) for s in data.states.values())
    assert cross_machine_violations(tmp_path / "one.db") == []

    again = run(tmp_path / "two.db", seed=7)
    assert replace(again, elapsed_seconds=0) == replace(summary, elapsed_seconds=0)
    other = run(tmp_path / "three.db", seed=8)
    assert replace(other, elapsed_seconds=0) != replace(summary, elapsed_seconds=0)


@pytest.mark.parametrize("applications", [0, 1, 3])
def test_run_day_copes_with_tiny_runs(tmp_path: Path, applications: int) -> None:
    summary = run(tmp_path / "tiny.db", seed=1, applications=applications)

    assert summary.applications == applications
    data = stored(tmp_path / "tiny.db")
    assert {m: n for m, n in summary.transitions_by_machine.items() if n} == data.log_rows
    # The lost-card stories that need no application are there even without applications.
    assert summary.loss_reports[wf.LossReportState.WITHDRAWN] >= 1
    assert summary.found_cards[wf.FoundCardState.RETURNED] >= 1


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
    assert ", 0 broken." in result.stdout
