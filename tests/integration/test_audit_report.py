"""``idcard-workflow report``: one self-contained HTML page, true to the database, masked, and
rendered by a real browser (headless Chromium, Debian's ``chromium``)."""

from __future__ import annotations

import html
import io
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

import workflow as wf
from tests.support import Clock, actor_for, clerk, form, good_payload, tampering
from workflow.audit import SECTIONS, build_report, render
from workflow.audit.report import CREATED, DECIDED, EXTENDED, READY, TRANSMITTED
from workflow.diagrams import fingerprint
from workflow.machines import REGISTRY
from workflow.models.citizen_id import mask_citizen_id
from workflow.models.enums import Kind
from workflow.models.tables import TransitionLog

FULL_CITIZEN_NUMBER = re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9X](?![0-9A-Za-z])")
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
AS_OF = START + timedelta(days=70)
"""When the deadlines are judged: 70 days after the first submission."""

# Counties: (acceptance, household registration)
SHENZHEN, BEIJING, SHANGHAI, CHENGDU = "440305", "110105", "310115", "510107"


@dataclass
class Office:
    """A database with applications in known states, times and counties."""

    url: str
    flow: wf.Workflow
    apps: dict[str, wf.ApplicationView]
    citizens: list[str]
    receipts: list[str]


def _apply(
    flow: wf.Workflow,
    clock: Clock,
    n: int,
    *,
    accepted: str,
    hukou: str,
    events: list[tuple[str, float]],
    kind: Kind = Kind.RENEWAL,
) -> wf.ApplicationView:
    """Submit at ``clock`` and fire ``events``, each ``(event, days after the previous step)``;
    the clock is put back where it was."""
    began = clock.now
    view = flow.submit(
        form(kind, n, acceptance_region=accepted, hukou_region=hukou), actor=clerk(accepted)
    )
    for event, days in events:
        clock.advance(days=days)
        payload = good_payload(event, view)
        if event == "reject":
            payload = {"ground": "bad_credit_record" if n % 2 else "identity_mismatch"}
        view = flow.fire(view.id, event, actor=actor_for(event, view), **payload)
    clock.now = began
    return view


@pytest.fixture
def office(db_url: str) -> Iterator[Office]:
    clock = Clock(START)
    flow = wf.Workflow(db_url, clock=clock)
    full = [("transmit", 1), ("approve", 2), ("produce", 5), ("mark_ready", 10), ("collect", 3)]
    apps = {
        # Collected in 18 days, reviewed in 2: on time everywhere.
        "collected": _apply(flow, clock, 1, accepted=SHENZHEN, hukou=BEIJING, events=full),
        # Reviewed in 7 days (late), ready after 63 days (late, no extension).
        "late": _apply(
            flow,
            clock,
            2,
            accepted=SHENZHEN,
            hukou=SHANGHAI,
            events=[("transmit", 1), ("approve", 7), ("produce", 5), ("mark_ready", 50)],
        ),
        # Refused in 3 days (identity_mismatch), and in 1 day (bad_credit_record).
        "rejected": _apply(
            flow,
            clock,
            4,
            accepted=SHANGHAI,
            hukou=BEIJING,
            events=[("transmit", 1), ("reject", 3)],
        ),
        "rejected2": _apply(
            flow,
            clock,
            5,
            accepted=SHANGHAI,
            hukou=CHENGDU,
            events=[("transmit", 0), ("reject", 1)],
        ),
        # Still undecided 69 days after the transmission: review and card overdue.
        "waiting": _apply(
            flow, clock, 6, accepted=SHENZHEN, hukou=BEIJING, events=[("transmit", 1)]
        ),
        # Approved and extended by 30 days: due 90 days after submission, not overdue at 70.
        "extended": _apply(
            flow,
            clock,
            7,
            accepted=CHENGDU,
            hukou=BEIJING,
            events=[("transmit", 1), ("approve", 1), ("extend_deadline", 1)],
        ),
        # A replacement (it files a loss report), submitted at 65 days: nothing overdue.
        "recent": None,  # type: ignore[dict-item]
    }
    clock.now = START + timedelta(days=65)
    apps["recent"] = _apply(
        flow, clock, 8, accepted=CHENGDU, hukou=CHENGDU, events=[], kind=Kind.REPLACEMENT
    )
    views = [flow.get(a.id) for a in apps.values()]
    try:
        yield Office(
            db_url,
            flow,
            apps,
            [v.citizen_id for v in views],
            [v.receipt_no for v in views],
        )
    finally:
        flow.close()


def run_cli(*args: str, db: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("IDCARD_WORKFLOW_DB", None)
    result = subprocess.run(
        [sys.executable, "-m", "workflow", "--db", db, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert not FULL_CITIZEN_NUMBER.search(result.stderr), result.stderr
    return result


def assert_safe(page: str, office: Office) -> None:
    """Nothing personal in the page: no full citizen number, no receipt, no name."""
    assert not FULL_CITIZEN_NUMBER.search(page)
    for citizen in office.citizens:
        assert citizen not in page
    for receipt in office.receipts:
        assert receipt not in page
    assert "Wang Fang" not in page


def section(page: str, key: str) -> str:
    """The text of one section of the page."""
    match = re.search(
        rf'<section id="{key}">(.*?)</section>(?=<section id=|\s*</main>)', page, re.S
    )
    assert match, f"no section {key}"
    return match.group(1)


# ---------------------------------------------------------------------------------------------
# The file


def test_the_report_is_one_file_with_every_section_and_nothing_fetched(
    office: Office, tmp_path: Path
) -> None:
    out = tmp_path / "audit.html"
    result = run_cli(
        "report", "-o", str(out), "--as-of", AS_OF.isoformat(), db=office.url, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert f"wrote {out} (all intact)" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.html"]  # one file, nothing else
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # Nothing is fetched: no URL at all, no script, no external style, font or image.
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page, re.I)
    assert not re.search(r"<script|<link|<img|<iframe|<object|<embed|@import|url\(", page, re.I)
    assert not re.search(r"\b(?:src|href)\s*=\s*[\"'](?!#)", page, re.I)  # only in-page links
    assert not re.search(r"@font-face", page, re.I)
    for key in ("processes", "verification", "deadlines"):
        assert f'<section id="{key}"><h2>{SECTIONS[key]}</h2>' in page
    assert 'id="checkpoint"' not in page and 'id="record"' not in page
    assert page.count("<svg") == len(REGISTRY)
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "the inline SVGs' ids collide"
    assert_safe(page, office)


def test_the_processes_show_who_may_fire_each_arrow_guards_tables_reactions_fingerprints(
    office: Office,
) -> None:
    page = render(build_report(office.url, as_of=AS_OF))
    text = html.unescape(section(page, "processes"))
    for machine in REGISTRY:
        definition = machine.definition
        assert fingerprint(definition) in text
        for t in definition.transitions.values():
            permission = definition.events[t.event].permission
            assert permission.description in text
            for guard in t.guards:
                assert guard.rule in text
    assert "by hukou_reviewer @ hukou_region" in text  # on the arrows of the drawing
    assert "by card_producer @ province of acceptance_region" in text
    assert "[receipt_matches," in text
    assert "files a loss report for the citizen" in text  # a reaction between machines


def test_the_transition_tables_show_code_as_code_not_as_backticks(office: Office) -> None:
    """The meanings are written for the Markdown docs: the page shows their `spans` as code."""
    page = render(build_report(office.url, as_of=AS_OF))
    processes = section(page, "processes")
    text = re.sub(r"<svg.*?</svg>", "", processes, flags=re.S)  # the tables, not the drawings
    assert "`" not in html.unescape(re.sub(r"<[^>]+>", "", text))
    for machine in REGISTRY:
        initial = machine.definition.initial
        assert f"Creates the record in its initial state <code>{initial}</code>." in processes


def test_stdout_gets_the_page_without_output(office: Office, tmp_path: Path) -> None:
    result = run_cli("report", db=office.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("<!DOCTYPE html>")
    assert_safe(result.stdout, office)


# ---------------------------------------------------------------------------------------------
# The statutory deadlines


def test_the_deadlines_are_counted_per_county_from_the_database(office: Office) -> None:
    d = build_report(office.url, as_of=AS_OF).deadlines
    by_acceptance = {c.county: c for c in d.by_acceptance}
    by_hukou = {c.county: c for c in d.by_hukou}
    # Cards overdue at 70 days: "waiting" (Shenzhen -> Beijing) only: "late" is ready, the
    # extended one is due at 90 days, the recent one at 125.
    assert (d.cards_overdue, d.reviews_overdue, d.extended) == (1, 1, 1)
    assert (by_acceptance[SHENZHEN].cards_overdue, by_acceptance[SHENZHEN].reviews_overdue) == (
        1,
        1,
    )
    assert (by_hukou[BEIJING].cards_overdue, by_hukou[BEIJING].reviews_overdue) == (1, 1)
    assert by_acceptance[SHENZHEN].applications == 3
    assert by_hukou[BEIJING].applications == 4
    assert sum(c.cards_overdue for c in d.by_hukou) == 1
    # The library's own queries agree with the aggregates.
    assert len(office.flow.overdue(AS_OF, limit=1000)) == d.cards_overdue
    assert len(office.flow.overdue_reviews(AS_OF, limit=1000)) == d.reviews_overdue

    review = {b.label: b.count for b in d.review_times.buckets}
    # Decided: 2 days, 7 days (late), 3 days, 1 day, 1 day (extended); "waiting" is undecided.
    assert d.review_times.count == 5
    assert (review["1 to 2 days"], review["2 to 3 days"], review["3 to 4 days"]) == (2, 1, 1)
    assert review["5 to 10 days"] == 1
    assert [b.over_limit for b in d.review_times.buckets if b.count] == [False] * 3 + [True]
    assert d.review_times.past_due == 1
    assert d.review_times.max_days == pytest.approx(7.0)
    issue = {b.label: b.count for b in d.issue_times.buckets}
    # Ready: after 18 days and after 63 days (past its due date).
    assert (d.issue_times.count, issue["10 to 20 days"], issue["60 to 90 days"]) == (2, 1, 1)
    assert d.issue_times.past_due == 1
    assert d.issue_times.mean_days == pytest.approx((18 + 63) / 2)
    refusals = dict(d.refusals)
    assert set(refusals) == {str(g) for g in wf.RejectionGround}
    assert (refusals["identity_mismatch"], refusals["bad_credit_record"]) == (1, 1)
    assert sum(refusals.values()) == 2


def test_the_events_measured_are_the_application_machines() -> None:
    for event in (CREATED, TRANSMITTED, *DECIDED, READY, EXTENDED):
        assert event in wf.APPLICATION.events or event == wf.APPLICATION.creation_event


def test_the_deadline_section_shows_counties_histograms_and_grounds(office: Office) -> None:
    page = render(build_report(office.url, as_of=AS_OF))
    text = section(page, "deadlines")
    assert "1\ncards overdue · 1 reviews overdue" in text
    for county in (SHENZHEN, BEIJING, SHANGHAI, CHENGDU):
        assert f"<span class=mono>{county}</span>" in text
    assert "By acceptance county" in text and "By household-registration county" in text
    assert "Review times" in text and "Issue times" in text
    assert "<code>bad_credit_record</code>" in text
    assert text.count('class=bar style="width:') == 16


# ---------------------------------------------------------------------------------------------
# Verification


def test_a_tampered_database_names_its_broken_record_and_exits_1(
    office: Office, tmp_path: Path
) -> None:
    victim = office.apps["collected"]
    with tampering(office.url) as engine, engine.begin() as conn:
        log = TransitionLog.__table__
        conn.execute(
            sa.update(log)
            .where(log.c.record_id == victim.id, log.c.event == "approve")
            .values(actor_unit="440305")
        )
    out = tmp_path / "audit.html"
    result = run_cli("report", "-o", str(out), db=office.url, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "(1 broken records)" in result.stderr
    text = section(out.read_text(encoding="utf-8"), "verification")
    assert "1 broken" in text
    assert str(victim.id) in text
    assert "<code>hash_mismatch</code>" in text
    assert "the row&#x27;s hash does not match" in text  # the problem explained
    assert "All intact" not in text


def test_an_intact_database_says_so(office: Office) -> None:
    text = section(render(build_report(office.url, as_of=AS_OF)), "verification")
    assert "All intact" in text
    report = office.flow.verify()
    assert f"{report.records} records and {report.rows} history rows checked" in text


# ---------------------------------------------------------------------------------------------
# One record


def test_record_draws_its_path_with_id_fingerprint_and_history(
    office: Office, tmp_path: Path
) -> None:
    app = office.apps["late"]
    out = tmp_path / "audit.html"
    result = run_cli("report", "-o", str(out), "--record", str(app.id), db=office.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = out.read_text(encoding="utf-8")
    text = html.unescape(section(page, "record"))
    assert f"path of record {app.id}, 5 steps" in text  # on the drawing itself
    assert fingerprint(wf.APPLICATION) in text
    assert f'id="record-id">{app.id}<' in text
    assert mask_citizen_id(app.citizen_id) in text
    for n, event in enumerate(["submit", "transmit", "approve", "produce", "mark_ready"], 1):
        assert f"({n}) {event}" in text
        assert re.search(rf'<td class="num">{n}</td><td class="nowrap"><code>{event}</code>', text)
    assert (
        text.count('class="edge transition fired')
        + text.count('class="edge transition guarded fired')
        == 5
    )
    assert 'href="#record"' in page
    assert page.count("<svg") == len(REGISTRY) + 1
    assert_safe(page, office)


def test_record_of_another_machine_draws_on_its_diagram(office: Office) -> None:
    report = office.flow.get_loss_report
    (row,) = office.flow.history(office.apps["recent"].id)[:1]
    assert row.event == "submit"
    engine = sa.create_engine(office.url)
    with engine.connect() as conn:
        report_id = conn.execute(sa.text("SELECT id FROM idcard_loss_reports")).scalar_one()
    engine.dispose()
    loss = report(uuid.UUID(str(report_id)))
    built = build_report(office.url, record_id=loss.id, as_of=AS_OF)
    assert built.record is not None and built.record.machine == "loss_report"
    text = html.unescape(section(render(built), "record"))
    assert f"path of record {loss.id}, 1 step" in text
    assert "loss_report state machine" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--record", str(uuid.UUID(int=7))], "no record with id 00000000-"),
        (["--record", "nope"], "'--record'"),
        (["--as-of", "yesterday"], "'--as-of'"),
        (["--since", "missing.json"], "--since: can't read checkpoint file missing.json"),
        (["--public-key", "key.pem"], "--public-key: checks a checkpoint's signature"),
    ],
)
def test_usage_errors_exit_2_in_one_line(
    office: Office, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli("report", "-o", str(tmp_path / "a.html"), *args, db=office.url, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "a.html").exists()


def test_a_missing_database_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("report", db=f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr


# ---------------------------------------------------------------------------------------------
# The checkpoint comparison: a section drawn from whatever the checkpoint code returns


class Differs(BaseModel):
    record_id: str
    seq: int
    problem: str


class Comparison(BaseModel):
    ok: bool
    checkpoint_at: str
    rows_covered: int
    differs: list[Differs]


def test_a_checkpoint_comparison_is_drawn_when_given(office: Office) -> None:
    victim = office.apps["collected"]
    comparison = Comparison(
        ok=False,
        checkpoint_at="2026-04-01T00:00:00Z",
        rows_covered=17,
        differs=[Differs(record_id=str(victim.id), seq=3, problem="row_changed")],
    )
    page = render(build_report(office.url, as_of=AS_OF, checkpoint=comparison))
    text = section(page, "checkpoint")
    assert "does not extend the checkpoint" in text
    assert "rows_covered" in text and ">17<" in text
    assert str(victim.id) in text and "row_changed" in text
    assert 'href="#checkpoint"' in page
    as_mapping = render(build_report(office.url, as_of=AS_OF, checkpoint={"ok": True}))
    assert "The history extends the checkpoint" in section(as_mapping, "checkpoint")


def test_since_a_checkpoint_the_report_shows_whether_the_history_extends_it(
    office: Office, tmp_path: Path
) -> None:
    kept = tmp_path / "checkpoint.json"
    kept.write_text(office.flow.checkpoint().to_json(), encoding="utf-8")
    out = tmp_path / "audit.html"
    result = run_cli("report", "-o", str(out), "--since", str(kept), db=office.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = out.read_text(encoding="utf-8")
    text = section(page, "checkpoint")
    assert "The history extends the checkpoint" in text
    assert "<dt>history extends it</dt><dd>yes</dd>" in text
    assert "<dt>where the history departs from it</dt><dd>none</dd>" in text
    assert "<dt>signature</dt><dd>unsigned</dd>" in text
    assert 'href="#checkpoint"' in page

    victim = office.apps["collected"]
    with tampering(office.url) as engine, engine.begin() as conn:
        log = TransitionLog.__table__
        conn.execute(
            sa.update(log)
            .where(log.c.record_id == victim.id, log.c.seq == 2)
            .values(actor_id="someone-else")
        )
    result = run_cli("report", "-o", str(out), "--since", str(kept), db=office.url, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    text = section(out.read_text(encoding="utf-8"), "checkpoint")
    assert "does not extend the checkpoint" in text
    assert "rewritten" in text and str(victim.id) in text
    assert "<dt>history extends it</dt><dd>no</dd>" in text
    assert f"<dt>record</dt><dd>{victim.id}</dd>" in text


def test_a_malformed_checkpoint_file_is_a_usage_error(office: Office, tmp_path: Path) -> None:
    bad = tmp_path / "checkpoint.json"
    bad.write_text("{}", encoding="utf-8")
    result = run_cli("report", "--since", str(bad), db=office.url, cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid Checkpoint" in result.stderr


# ---------------------------------------------------------------------------------------------
# The demo's database, a realistic day


def test_the_demos_database_gives_a_consistent_report(tmp_path: Path) -> None:
    from rich.console import Console

    from workflow.demo import run

    path = tmp_path / "demo.db"
    assert run(path, applications=120, seed=5, console=Console(file=io.StringIO())) == 0
    url = f"sqlite:///{path}"
    built = build_report(url)
    with wf.Workflow(url) as flow:
        assert built.deadlines.cards_overdue == len(flow.overdue(limit=10_000))
        assert built.deadlines.reviews_overdue == len(flow.overdue_reviews(limit=10_000))
    by_state = Counter[str]()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        for state, n in conn.execute(
            sa.text("SELECT state, count(*) FROM idcard_applications GROUP BY state")
        ):
            by_state[str(state)] = int(n)
    engine.dispose()
    assert sum(n for _, n in built.deadlines.refusals) == by_state["rejected"]
    assert sum(c.applications for c in built.deadlines.by_hukou) == sum(by_state.values())
    page = render(built)
    assert not FULL_CITIZEN_NUMBER.search(page)
    assert "All intact" in page


# ---------------------------------------------------------------------------------------------
# A real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)
def test_chromium_renders_the_report_with_every_section_and_no_console_error(
    office: Office, tmp_path: Path
) -> None:
    app = office.apps["late"]
    out = tmp_path / "audit.html"
    result = run_cli("report", "-o", str(out), "--record", str(app.id), db=office.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    dom = chromium("--dump-dom", out.as_uri(), profile=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr
    for key in ("processes", "verification", "deadlines", "record"):
        assert f'<section id="{key}"><h2>{SECTIONS[key]}</h2>' in dom.stdout
    assert dom.stdout.count("<svg") == len(REGISTRY) + 1
    assert "All intact" in dom.stdout
    # The console: no message from the page, no resource it failed to load.
    console = [
        line
        for line in dom.stderr.splitlines()
        if "CONSOLE" in line or "Failed to load" in line or "net::ERR" in line
    ]
    assert console == []
    screenshot = tmp_path / "audit.png"
    shot = chromium(
        f"--screenshot={screenshot}",
        "--window-size=1400,4000",
        out.as_uri(),
        profile=tmp_path / "profile-shot",
    )
    assert shot.returncode == 0, shot.stderr
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 50_000  # drawn, not a blank page
    keep = os.environ.get("IDCARD_AUDIT_SCREENSHOT")
    if keep:
        shutil.copyfile(screenshot, keep)
