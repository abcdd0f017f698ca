"""Red team for issue 11: forgeries verify() must name, races between machines, the database's
own refusals under the grants docs/security.md recommends, and the new loss-report API.

An attack the library refuses or detects is a regression test asserting the exact refusal or
problem; an attack that succeeds is ``xfail(strict=True)`` with the hole in its reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.orm import Session

import workflow as wf
from tests.support import (
    Clock,
    Databases,
    citizen_id,
    clerk,
    drive,
    form,
    postgres_url,
    producer,
    reviewer,
    tampering,
)
from workflow.engine.chain import IDENTITY_FACT, entry_hash
from workflow.models.enums import Kind

LOG = wf.Base.metadata.tables["idcard_transition_log"]
OUTBOX = wf.Base.metadata.tables["idcard_outbox"]
APPLICATIONS = wf.Base.metadata.tables["idcard_applications"]
LOSS_REPORTS = wf.Base.metadata.tables["idcard_loss_reports"]
FOUND_CARDS = wf.Base.metadata.tables["idcard_found_cards"]
TABLES = {"application": APPLICATIONS, "loss_report": LOSS_REPORTS, "found_card": FOUND_CARDS}
ALL_TABLES = (APPLICATIONS, LOSS_REPORTS, FOUND_CARDS, LOG, OUTBOX)

on_postgres = pytest.mark.skipif(postgres_url() is None, reason="PostgreSQL only")


def _sqlite(url: str) -> bool:
    return url.startswith("sqlite")


@pytest.fixture
def raw(db_url: str) -> Iterator[sa.Engine]:
    with tampering(db_url) as engine:
        yield engine


def only_broken(flow: wf.Workflow) -> wf.BrokenRecord:
    report = flow.verify()
    assert len(report.broken) == 1, report.broken
    return report.broken[0]


def report_of(flow: wf.Workflow, citizen: str) -> uuid.UUID:
    """The id of the citizen's latest loss report."""
    with flow._store.transaction(write=False) as conn:
        query = (
            sa.select(LOSS_REPORTS.c.id)
            .where(LOSS_REPORTS.c.citizen_id == citizen)
            .order_by(LOSS_REPORTS.c.reported_at.desc(), LOSS_REPORTS.c.version.desc())
        )
        found = conn.execute(query).scalars().first()
    assert isinstance(found, uuid.UUID)
    return found


def rewrite_history(
    raw: sa.Engine,
    machine: str,
    record_id: uuid.UUID,
    edit: Callable[[list[dict[str, Any]]], None],
    **record: Any,
) -> None:
    """Rewrite a record's whole history with ``edit`` and correct hashes, and the record to
    match (its chain head, version and state, and any ``record`` columns): what a writer who
    knows the hashing rule and can write the tables can do."""
    table = TABLES[machine]
    where = sa.and_(LOG.c.machine == machine, LOG.c.record_id == record_id)
    with raw.begin() as conn:
        query = sa.select(LOG).where(where).order_by(LOG.c.seq)
        rows = [dict(r) for r in conn.execute(query).mappings()]
        edit(rows)
        previous = None
        for row in rows:
            row.pop("id", None)
            row["hash"] = previous = entry_hash(row, previous)
        conn.execute(sa.delete(LOG).where(where))
        conn.execute(sa.insert(LOG), rows)
        conn.execute(
            sa.update(table)
            .where(table.c.id == record_id)
            .values(
                chain_head=previous,
                version=len(rows),
                state=rows[-1]["to_state"],
                **record,
            )
        )


def forged_step(
    event: str, from_state: str, to_state: str, actor: wf.Actor, details: dict[str, Any]
) -> Callable[[list[dict[str, Any]]], None]:
    def edit(rows: list[dict[str, Any]]) -> None:
        last = rows[-1]
        rows.append(
            {
                **last,
                "seq": last["seq"] + 1,
                "event": event,
                "from_state": from_state,
                "to_state": to_state,
                "actor_id": actor.id,
                "actor_role": actor.role,
                "actor_unit": actor.unit,
                "at": last["at"] + timedelta(minutes=1),
                "details": details,
            }
        )

    return edit


def counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in (*ALL_TABLES, wf.Base.metadata.tables["idcard_command_requests"])
            }
    finally:
        engine.dispose()


# == 1. Forgeries verify() must name ============================================================


def test_an_altered_identity_digest_with_the_chain_rehashed_is_identity_changed(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    view = drive(flow, "ready", n=1)

    def edit(rows: list[dict[str, Any]]) -> None:
        rows[0]["details"] = {**rows[0]["details"], IDENTITY_FACT: "sha256:" + "0" * 64}

    rewrite_history(raw, "application", view.id, edit)
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (view.id, 1, "identity_changed")


def test_the_identity_digest_removed_and_the_record_rebuilt_is_named(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    view = drive(flow, "ready", n=2)

    def edit(rows: list[dict[str, Any]]) -> None:
        rows[0]["details"] = {k: v for k, v in rows[0]["details"].items() if k != IDENTITY_FACT}

    rewrite_history(
        raw,
        "application",
        view.id,
        edit,
        citizen_id=citizen_id(40),
        name="冒名顶替",
        receipt_no="PLANTED00001",
    )
    assert flow.get(view.id).receipt_no == "PLANTED00001"
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq) == (view.id, 1)


@pytest.mark.parametrize("machine", ["loss_report", "found_card"])
def test_a_report_or_found_card_moved_to_another_citizen_is_identity_changed(
    flow: wf.Workflow, raw: sa.Engine, machine: str
) -> None:
    citizen = citizen_id(3)
    if machine == "loss_report":
        record_id = flow.report_loss(citizen, actor=clerk(), identity_checked=True).id
    else:
        record_id = flow.register_found_card(citizen, actor=clerk()).id
    table = TABLES[machine]
    with raw.begin() as conn:
        conn.execute(
            sa.update(table).where(table.c.id == record_id).values(citizen_id=citizen_id(41))
        )
    broken = only_broken(flow)
    assert (broken.machine, broken.record_id, broken.seq, broken.problem) == (
        machine,
        record_id,
        1,
        "identity_changed",
    )


def test_a_report_created_without_the_identity_check_is_guard_not_proven(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    report = flow.report_loss(citizen_id(4), actor=clerk(), identity_checked=True)

    def edit(rows: list[dict[str, Any]]) -> None:
        rows[0]["details"] = {**rows[0]["details"], "identity_checked": False}

    rewrite_history(raw, "loss_report", report.id, edit)
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (report.id, 1, "guard_not_proven")
    assert "holder_in_person" in broken.message


def test_a_report_created_with_the_identity_check_left_out_is_named(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    report = flow.report_loss(citizen_id(5), actor=clerk(), identity_checked=True)

    def edit(rows: list[dict[str, Any]]) -> None:
        rows[0]["details"] = {
            k: v for k, v in rows[0]["details"].items() if k != "identity_checked"
        }

    rewrite_history(raw, "loss_report", report.id, edit)
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (report.id, 1, "guard_not_proven")


def _replacement_collected(flow: wf.Workflow, n: int) -> tuple[wf.ApplicationView, uuid.UUID]:
    view = drive(flow, "collected", Kind.REPLACEMENT, n=n)
    return view, report_of(flow, view.citizen_id)


def _row_actor(seq: int, actor: wf.Actor) -> Callable[[list[dict[str, Any]]], None]:
    def edit(rows: list[dict[str, Any]]) -> None:
        rows[seq - 1].update(actor_id=actor.id, actor_role=actor.role, actor_unit=actor.unit)

    return edit


FORGED_ACTORS: dict[str, tuple[str, int, wf.Actor]] = {
    # (what the record is, the row forged, the actor written into it)
    "report_loss creation by a card producer": ("report", 1, producer()),
    "report filed by a replacement, as by a reviewer": ("filed", 1, reviewer()),
    "report closed by a collect, as by a card producer": ("filed", 2, producer()),
    "report withdrawn by a card returned, as by a reviewer": ("withdrawn", 2, reviewer()),
    "found card registered by a reviewer": ("card", 1, reviewer()),
    "found card returned by a clerk of another office": ("returned", 2, clerk("310115")),
    "application collected by a clerk of another county": ("app", 6, clerk("310115")),
}


@pytest.mark.parametrize("case", list(FORGED_ACTORS))
def test_a_step_rehashed_with_an_actor_of_the_wrong_role_or_unit_is_not_permitted(
    flow: wf.Workflow, raw: sa.Engine, case: str
) -> None:
    what, seq, actor = FORGED_ACTORS[case]
    citizen = citizen_id(6)
    machine, record_id = "loss_report", uuid.UUID(int=0)
    if what == "report":
        record_id = flow.report_loss(citizen, actor=clerk(), identity_checked=True).id
    elif what == "filed":
        record_id = _replacement_collected(flow, 6)[1]
    elif what in {"withdrawn", "returned"}:
        flow.report_loss(citizen, actor=clerk(), identity_checked=True)
        card = flow.register_found_card(citizen, actor=clerk())
        flow.return_found_card(card.id, actor=clerk(), identity_checked=True)
        if what == "withdrawn":
            record_id = report_of(flow, citizen)
        else:
            machine, record_id = "found_card", card.id
    elif what == "card":
        machine, record_id = "found_card", flow.register_found_card(citizen, actor=clerk()).id
    else:
        machine, record_id = "application", drive(flow, "collected", n=6).id
    rewrite_history(raw, machine, record_id, _row_actor(seq, actor))
    broken = only_broken(flow)
    assert (broken.machine, broken.record_id, broken.seq, broken.problem) == (
        machine,
        record_id,
        seq,
        "not_permitted",
    )


def _withdrawal_forged_during_a_replacement(
    flow: wf.Workflow, raw: sa.Engine, details: dict[str, Any]
) -> uuid.UUID:
    view = drive(flow, "approved", Kind.REPLACEMENT, n=7)
    report = report_of(flow, view.citizen_id)
    edit = forged_step("withdraw", "reported", "withdrawn", clerk(), details)
    # The end time the forged row says, so nothing but the facts gives the forgery away.
    ended = flow.get_loss_report(report).reported_at + timedelta(minutes=1)
    rewrite_history(raw, "loss_report", report, edit, ended_at=ended)
    return report


def test_a_withdrawal_forged_with_the_replacement_recorded_in_progress_is_guard_not_proven(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    details = {"card_presented": True, "replacement_in_progress": True}
    report = _withdrawal_forged_during_a_replacement(flow, raw, details)
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (report, 2, "guard_not_proven")
    assert "no_replacement_in_progress" in broken.message


def test_a_withdrawal_forged_during_a_replacement_without_the_fact_is_named(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    report = _withdrawal_forged_during_a_replacement(flow, raw, {"card_presented": True})
    assert only_broken(flow).record_id == report


def test_a_withdrawal_forged_during_a_replacement_claiming_none_is_named(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    details = {"card_presented": True, "replacement_in_progress": False}
    report = _withdrawal_forged_during_a_replacement(flow, raw, details)
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (report, 2, "facts_contradicted")


def test_a_report_pointed_at_another_application_is_creation_facts_changed(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    _, report = _replacement_collected(flow, 8)
    other = drive(flow, "submitted", Kind.REPLACEMENT, n=9)
    with raw.begin() as conn:
        conn.execute(
            sa.update(LOSS_REPORTS)
            .where(LOSS_REPORTS.c.id == report)
            .values(application_id=other.id)
        )
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (report, 1, "creation_facts_changed")
    assert "application_id" in broken.message


def test_a_report_pointed_at_another_citizens_application_with_its_row_rehashed_is_named(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    _, report = _replacement_collected(flow, 10)
    other = drive(flow, "submitted", Kind.RENEWAL, n=11)

    def edit(rows: list[dict[str, Any]]) -> None:
        rows[0]["details"] = {**rows[0]["details"], "application_id": str(other.id)}

    rewrite_history(raw, "loss_report", report, edit, application_id=other.id)
    broken = only_broken(flow)
    assert (broken.record_id, broken.seq, broken.problem) == (report, 1, "facts_contradicted")


def test_a_second_deadline_extension_forged_is_named(flow: wf.Workflow, raw: sa.Engine) -> None:
    view = drive(flow, "approved", n=12)
    flow.extend_deadline(view.id, actor=clerk(), days=30, reason="snow")
    details = {"days": 30, "reason": "more snow", "extended_before": False}
    edit = forged_step("extend_deadline", "approved", "approved", clerk(), details)
    rewrite_history(raw, "application", view.id, edit, due_at=view.due_at + timedelta(days=60))
    assert only_broken(flow).record_id == view.id


EFFECT_COLUMNS: dict[str, tuple[str, dict[str, Any]]] = {
    "rejection ground rewritten": ("rejected", {"rejection_ground": "other"}),
    "old card recorded as not handed back": ("collected", {"old_card_returned": False}),
    "due date moved a year on (hides an overdue card)": ("produced", {"due_at": None}),
}


@pytest.mark.parametrize("case", list(EFFECT_COLUMNS))
def test_a_column_set_by_an_event_rewritten_is_named(
    flow: wf.Workflow, raw: sa.Engine, case: str
) -> None:
    state, values = EFFECT_COLUMNS[case]
    view = drive(flow, state, n=13)
    if "due_at" in values:
        values = {"due_at": view.due_at + timedelta(days=365)}
    with raw.begin() as conn:
        conn.execute(sa.update(APPLICATIONS).where(APPLICATIONS.c.id == view.id).values(values))
    assert only_broken(flow).record_id == view.id


def test_history_rows_of_a_known_machine_for_no_record_are_history_without_record(
    flow: wf.Workflow, raw: sa.Engine
) -> None:
    report = flow.report_loss(citizen_id(14), actor=clerk(), identity_checked=True)
    with raw.begin() as conn:
        conn.execute(sa.delete(LOSS_REPORTS).where(LOSS_REPORTS.c.id == report.id))
    broken = only_broken(flow)
    assert (broken.machine, broken.record_id, broken.seq, broken.problem) == (
        "loss_report",
        report.id,
        1,
        "history_without_record",
    )


@pytest.mark.parametrize(
    "record_id, seq",
    [("'not-a-uuid'", "1"), ("X'00ff'", "1"), ("12345", "1.0"), ("'%s'" % ("0" * 32), "'1'")],
    ids=["text id", "blob id", "integer id, real seq", "nil id, text seq"],
)
def test_unknown_machine_rows_with_odd_values_are_named_not_a_crash(
    flow: wf.Workflow, raw: sa.Engine, db_url: str, record_id: str, seq: str
) -> None:
    if not _sqlite(db_url):
        pytest.skip("PostgreSQL's column types refuse such values")
    drive(flow, "ready", n=15)
    with raw.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO idcard_transition_log (machine, record_id, seq, event, from_state, "
            "to_state, actor_id, actor_role, actor_unit, at, details, hash) VALUES "
            f"('ghost', {record_id}, {seq}, 'haunt', NULL, 'here', 'x', 'x', 'x', "
            "'2026-01-01 00:00:00.000000', '{}', 'h')"
        )
    broken = only_broken(flow)
    assert (broken.machine, broken.problem) == ("ghost", "unknown_machine")
    code, out = run_cli(db_url, "verify", "--json")
    assert code == 1 and json.loads(out)["broken"][0]["problem"] == "unknown_machine"


def run_cli(url: str, *args: str) -> tuple[int, str]:
    from workflow import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["--db", url, *args])
    return code, out.getvalue()


# Malformed values planted on SQLite, which keeps any value in any column: one or two per
# column type, in every column of the three state tables and of the log.
GARBAGE = {
    "DATETIME": ["'garbage'", "'2026-13-45 99:99:99'", "12345"],
    "NUMERIC": ["'forty'", "X'00ff'"],
    "JSON": ["'{'", "'[]'", "'null'", "'42'"],
    "CHAR": ["'not-a-uuid'", "12345"],
    "INTEGER": ["'seven'", "X'01'"],
    "BIGINT": ["'seven'"],
    "VARCHAR": ["12345", "X'00ff'"],
    "TEXT": [],
    "BOOLEAN": [],
}
"""Per column type; TEXT and BOOLEAN columns hold values verification does not check (below)."""


def _malformed_cases() -> list[tuple[str, str, str]]:
    cases = []
    for table in (APPLICATIONS, LOSS_REPORTS, FOUND_CARDS, LOG):
        for column in table.columns:
            kind = str(column.type).split("(")[0]
            if table is LOG and column.name == "id":
                continue  # the log's surrogate key is not part of the chain
            for value in GARBAGE[kind]:
                cases.append((table.name, column.name, value))
    return cases


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database with one record of each machine in an interesting state."""
    path = tmp_path_factory.mktemp("red") / "template.db"
    url = f"sqlite:///{path}"
    wf.upgrade(url)
    with wf.Workflow(url, clock=Clock()) as flow:
        drive(flow, "collected", Kind.REPLACEMENT, n=20)
        drive(flow, "rejected", n=21)
        flow.report_loss(citizen_id(22), actor=clerk(), identity_checked=True)
        flow.register_found_card(citizen_id(22), actor=clerk())
    return path


def test_malformed_values_in_every_column_are_reported_never_a_traceback(
    sqlite_template: Path, tmp_path: Path
) -> None:
    """Each value planted in each column must be named (verify not ok), never raise, and the
    CLI (table and --json) must exit 1. Run as one test over every case, listing failures."""
    if postgres_url() is not None:
        pytest.skip("SQLite only: PostgreSQL's column types refuse such values")
    failures = []
    refused = 0
    cases = _malformed_cases()
    with_cli = set(cases[::7])  # the CLI is slower; a seventh of the cases, spread out
    for number, (table, column, value) in enumerate(cases):
        path = tmp_path / f"m{number}.db"
        shutil.copyfile(sqlite_template, path)
        url = f"sqlite:///{path}"
        target = {
            "idcard_applications": "WHERE kind = 'replacement'",
            "idcard_loss_reports": "",
            "idcard_found_cards": "",
            "idcard_transition_log": "WHERE machine = 'found_card'",
        }[table]
        case = f"{table}.{column} = {value}"
        try:
            with tampering(url) as raw, raw.begin() as conn:
                conn.exec_driver_sql(f"UPDATE {table} SET {column} = {value} {target}")
        except sa.exc.IntegrityError:
            refused += 1  # a CHECK or NOT NULL constraint: the database refuses it
            continue
        try:
            with wf.Workflow(url) as flow:
                report = flow.verify()
        except Exception as exc:
            failures.append(f"{case}: verify raised {type(exc).__name__}: {exc}")
            continue
        if report.ok:
            failures.append(f"{case}: verify is clean")
        if (table, column, value) in with_cli:
            for args in (("verify",), ("verify", "--json")):
                try:
                    code, _ = run_cli(url, *args)
                except Exception as exc:
                    failures.append(f"{case}: {' '.join(args)} raised {type(exc).__name__}")
                    continue
                if code != 1:
                    failures.append(f"{case}: {' '.join(args)} exited {code}")
    assert len(cases) > 70 and refused < len(cases) // 2
    assert failures == []


def test_a_fractional_version_is_named(db_url: str, flow: wf.Workflow, raw: sa.Engine) -> None:
    if not _sqlite(db_url):
        pytest.skip("PostgreSQL's integer column refuses it (nothing to test)")
    report = flow.report_loss(citizen_id(23), actor=clerk(), identity_checked=True)
    with raw.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE idcard_loss_reports SET version = 1.5 WHERE id = '{report.id.hex}'"
        )
    assert only_broken(flow).problem == "malformed_row"


def test_garbage_in_a_boolean_column_is_named(
    db_url: str, flow: wf.Workflow, raw: sa.Engine
) -> None:
    if not _sqlite(db_url):
        pytest.skip("PostgreSQL's boolean column refuses it (nothing to test)")
    view = drive(flow, "collected", n=24)
    with raw.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE idcard_applications SET old_card_returned = 'garbage' "
            f"WHERE id = '{view.id.hex}'"
        )
    assert only_broken(flow).problem == "malformed_row"


# == 3. The database's own refusals =============================================================


def _refused(engine: sa.Engine, sql: str, **params: Any) -> str:
    """Run ``sql`` and return the database's refusal; fail if it went through."""
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql), params)
    except sa.exc.DBAPIError as exc:
        return str(exc.orig)
    pytest.fail(f"the database let it through: {sql}")


def _hex(db_url: str, value: uuid.UUID) -> object:
    return value.hex if _sqlite(db_url) else value


def test_sqlite_insert_or_replace_of_a_history_row_or_a_record_is_refused(
    flow: wf.Workflow, db_url: str
) -> None:
    if not _sqlite(db_url):
        pytest.skip("SQLite's conflict clauses")
    view = drive(flow, "ready", n=30)
    engine = sa.create_engine(db_url)
    try:
        # A history row replaced by its surrogate id, then by (machine, record, seq).
        columns = "machine, record_id, seq, event, from_state, to_state, actor_id, actor_role, "
        columns += "actor_unit, at, details, hash"
        for verb, pick in (
            ("INSERT OR REPLACE", "id, "),
            ("REPLACE", ""),
        ):
            message = _refused(
                engine,
                f"{verb} INTO idcard_transition_log ({pick}{columns}) "
                f"SELECT {pick}{columns} "
                "FROM idcard_transition_log WHERE record_id = :id AND seq = 2",
                id=view.id.hex,
            )
            assert "append-only" in message
        message = _refused(
            engine,
            "INSERT OR REPLACE INTO idcard_applications SELECT * FROM idcard_applications "
            "WHERE id = :id",
            id=view.id.hex,
        )
        assert "never replaced" in message or "must start" in message
        # UPSERT: the DO UPDATE is an update, which the log's trigger refuses.
        message = _refused(
            engine,
            "INSERT INTO idcard_transition_log SELECT * FROM idcard_transition_log "
            "WHERE record_id = :id AND seq = 2 ON CONFLICT (id) DO UPDATE SET event = 'approve'",
            id=view.id.hex,
        )
        assert "append-only" in message
        message = _refused(
            engine,
            "INSERT INTO idcard_applications SELECT * FROM idcard_applications WHERE id = :id "
            "ON CONFLICT (id) DO UPDATE SET state = 'collected'",
            id=view.id.hex,
        )
        assert "never replaced" in message
    finally:
        engine.dispose()
    assert flow.verify().ok


@pytest.mark.parametrize("collision", ["receipt_no", "open application of the citizen"])
def test_sqlite_insert_or_replace_colliding_on_another_unique_key_is_refused(
    flow: wf.Workflow, db_url: str, collision: str
) -> None:
    if not _sqlite(db_url):
        pytest.skip("SQLite's conflict clauses (nothing to test on PostgreSQL)")
    view = drive(flow, "ready", n=31)
    engine = sa.create_engine(db_url)
    receipt = "receipt_no" if collision == "receipt_no" else "'NEWRECEIPT01'"
    citizen = "citizen_id" if collision != "receipt_no" else f"'{citizen_id(32)}'"
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT OR REPLACE INTO idcard_applications (kind, citizen_id, name, "
                    "hukou_region, acceptance_region, documents, fee_paid, fee_waiver, "
                    "receipt_no, submitted_at, due_at, review_due_at, rejection_ground, "
                    "rejection_note, old_card_returned, id, state, version, chain_head) "
                    f"SELECT kind, {citizen}, name, hukou_region, acceptance_region, documents, "
                    f"fee_paid, fee_waiver, {receipt}, submitted_at, due_at, NULL, NULL, NULL, "
                    "0, :new, 'submitted', 1, chain_head FROM idcard_applications WHERE id = :id"
                ),
                {"id": view.id.hex, "new": uuid.uuid4().hex},
            )
    except sa.exc.DBAPIError:
        pass
    finally:
        engine.dispose()
    assert flow.get(view.id).state == "ready"


def test_sqlite_update_or_replace_that_deletes_another_record_is_refused(
    flow: wf.Workflow, db_url: str
) -> None:
    if not _sqlite(db_url):
        pytest.skip("SQLite's conflict clauses (nothing to test on PostgreSQL)")
    victim = drive(flow, "ready", n=33)
    mover = drive(flow, "submitted", n=34)
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE OR REPLACE idcard_applications SET state = 'transmitted', "
                    "version = version + 1, receipt_no = :receipt WHERE id = :id"
                ),
                {"receipt": victim.receipt_no, "id": mover.id.hex},
            )
    except sa.exc.DBAPIError:
        pass
    finally:
        engine.dispose()
    assert flow.get(victim.id).state == "ready"


def test_rewriting_a_pending_outbox_event_is_refused(flow: wf.Workflow, db_url: str) -> None:
    view = drive(flow, "approved", n=35)
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.update(OUTBOX)
                .where(OUTBOX.c.record_id == view.id, OUTBOX.c.event == "approve")
                .values(event="reject", state="rejected")
            )
    except sa.exc.DBAPIError:
        pass
    finally:
        engine.dispose()
    events = [(e.event, e.state) for e in flow.pending_events() if e.record_id == view.id]
    assert ("approve", "approved") in events


# -- PostgreSQL with the recommended grants -------------------------------------------------

APP_ROLE = "idcard_red_app"


@pytest.fixture
def app_engine(db_url: str) -> Iterator[sa.Engine]:
    """An engine of a role with exactly the grants docs/security.md recommends, TEMPORARY
    revoked from PUBLIC on the database."""
    if _sqlite(db_url):
        pytest.skip("PostgreSQL's roles and grants")
    owner = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
    database = owner.url.database
    with owner.connect() as conn:
        exists = conn.exec_driver_sql(
            f"SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}'"
        ).first()
        if exists is None:
            conn.exec_driver_sql(f"CREATE ROLE {APP_ROLE} LOGIN")
        conn.exec_driver_sql(f"ALTER ROLE {APP_ROLE} RESET ALL")
        for statement in (
            "GRANT SELECT ON idcard_alembic_version, idcard_allowed_transitions, "
            "idcard_history_marks TO {r}",
            "GRANT SELECT, INSERT, UPDATE ON idcard_applications, idcard_loss_reports, "
            "idcard_found_cards, idcard_outbox TO {r}",
            "GRANT SELECT, INSERT ON idcard_transition_log, idcard_command_requests TO {r}",
            "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {r}",
            f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC',
            f'REVOKE TEMPORARY ON DATABASE "{database}" FROM {{r}}',
        ):
            conn.exec_driver_sql(statement.format(r=APP_ROLE))
    engine = sa.create_engine(owner.url.set(username=APP_ROLE))
    try:
        yield engine
    finally:
        engine.dispose()
        with owner.connect() as conn:
            conn.exec_driver_sql(f"ALTER ROLE {APP_ROLE} RESET ALL")
            conn.exec_driver_sql(f'GRANT TEMPORARY ON DATABASE "{database}" TO PUBLIC')
        owner.dispose()


def _grant_temporary(db_url: str) -> None:
    owner = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        conn.exec_driver_sql(f'GRANT TEMPORARY ON DATABASE "{owner.url.database}" TO {APP_ROLE}')
    owner.dispose()


@on_postgres
def test_the_app_role_runs_the_library(app_engine: sa.Engine, clock: Clock) -> None:
    with wf.Workflow(app_engine, clock=clock) as flow:
        view = drive(flow, "collected", Kind.REPLACEMENT, n=40)
        assert flow.get(view.id).state == "collected"
        assert flow.verify().ok


@on_postgres
@pytest.mark.parametrize(
    "sql, refusal",
    [
        ("CREATE TEMP TABLE idcard_allowed_transitions (x int)", "permission denied"),
        ("CREATE TABLE public.idcard_shadow (x int)", "permission denied"),
        ("CREATE SCHEMA shadow", "permission denied"),
        (
            'CREATE FUNCTION public.format(text, variadic "any") RETURNS text '
            "LANGUAGE sql AS $$ SELECT 'x' $$",
            "permission denied",
        ),
        (
            "CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = text, "
            "FUNCTION = pg_catalog.texteq)",
            "permission denied",
        ),
        ("DELETE FROM idcard_transition_log", "permission denied"),
        ("DELETE FROM idcard_applications", "permission denied"),
        ("TRUNCATE idcard_outbox", "permission denied"),
        (
            "INSERT INTO idcard_allowed_transitions SELECT * FROM idcard_allowed_transitions",
            "permission denied",
        ),
        ("ALTER TABLE idcard_applications DISABLE TRIGGER ALL", "must be owner"),
        ("SET session_replication_role = replica", "permission denied"),
        (
            "INSERT INTO idcard_transition_log SELECT * FROM idcard_transition_log "
            "ON CONFLICT (id) DO UPDATE SET event = 'approve'",
            "permission denied",
        ),
    ],
    ids=lambda v: v if len(v) < 40 else v[:40],
)
def test_the_app_role_is_refused(
    app_engine: sa.Engine, flow: wf.Workflow, sql: str, refusal: str
) -> None:
    drive(flow, "ready", n=41)
    assert refusal in _refused(app_engine, sql)


@on_postgres
def test_the_app_role_can_not_upsert_a_record_past_its_guard(
    app_engine: sa.Engine, flow: wf.Workflow
) -> None:
    view = drive(flow, "submitted", n=42)
    message = _refused(
        app_engine,
        "INSERT INTO idcard_applications SELECT * FROM idcard_applications WHERE id = :id "
        "ON CONFLICT (id) DO UPDATE SET state = 'collected', version = 2",
        id=view.id,
    )
    assert "allowed transition" in message
    message = _refused(
        app_engine,
        "INSERT INTO idcard_transition_log (machine, record_id, seq, event, from_state, "
        "to_state, actor_id, actor_role, actor_unit, at, details, hash) VALUES ('ghost', "
        ":id, 1, 'haunt', NULL, 'here', 'x', 'x', 'x', now(), '{}', 'h')",
        id=uuid.uuid4(),
    )
    assert "known machines only" in message
    assert flow.verify().ok


@on_postgres
def test_temp_tables_shadow_nothing_the_triggers_read(
    app_engine: sa.Engine, flow: wf.Workflow, db_url: str
) -> None:
    """With TEMPORARY granted after all: a temp idcard_allowed_transitions letting
    submitted -> collected through, and a temp idcard_outbox catching the published rows."""
    view = drive(flow, "submitted", n=43)
    _grant_temporary(db_url)
    with app_engine.connect() as conn:
        conn.exec_driver_sql(
            "CREATE TEMP TABLE idcard_allowed_transitions AS "
            "SELECT * FROM public.idcard_allowed_transitions"
        )
        conn.exec_driver_sql(
            "INSERT INTO idcard_allowed_transitions (machine, event, from_state, to_state) "
            "VALUES ('application', 'collect', 'submitted', 'collected')"
        )
        conn.exec_driver_sql("CREATE TEMP TABLE idcard_outbox (LIKE public.idcard_outbox)")
        conn.commit()
        with (
            pytest.raises(sa.exc.DBAPIError, match="allowed transition"),
            conn.begin_nested(),
        ):
            conn.execute(
                sa.update(APPLICATIONS)
                .where(APPLICATIONS.c.id == view.id)
                .values(state="collected", version=2)
            )
        # A legal step appended by hand: published to the real outbox, not the temp one.
        first = conn.execute(sa.select(LOG).where(LOG.c.record_id == view.id)).mappings().one()
        row = {k: v for k, v in first.items() if k != "id"}
        row.update(seq=2, event="transmit", from_state="submitted", to_state="transmitted")
        conn.execute(sa.insert(LOG).values(row))
        assert conn.exec_driver_sql("SELECT count(*) FROM pg_temp.idcard_outbox").scalar() == 0
        conn.commit()
    events = [e.event for e in flow.pending_events() if e.record_id == view.id]
    assert events == ["submit", "transmit"]


@on_postgres
def test_the_app_role_can_not_switch_durable_commits_off(
    app_engine: sa.Engine, clock: Clock
) -> None:
    with app_engine.connect() as conn:
        conn.exec_driver_sql(f"ALTER ROLE {APP_ROLE} SET synchronous_commit = off")
        conn.commit()
    app_engine.dispose()
    seen: list[str] = []

    @sa.event.listens_for(app_engine, "commit")
    def _setting(conn: Any) -> None:
        # Transactions that wrote (a read-only one has no transaction id and flushes nothing).
        wrote = conn.exec_driver_sql("SELECT pg_current_xact_id_if_assigned()").scalar()
        if wrote is not None:
            seen.append(conn.exec_driver_sql("SHOW synchronous_commit").scalar())

    with wf.Workflow(app_engine, clock=clock) as flow:
        flow.submit(form(n=44), actor=clerk())
    assert seen and set(seen) == {"on"}


# == 2. Races between machines on one citizen ===================================================

RACE_N = 60
RACE_CITIZEN = citizen_id(RACE_N)
Handles = dict[str, Any]


def _setup(flow: wf.Workflow, name: str) -> Handles:
    if name == "nothing":
        return {}
    if name == "lost":
        report = flow.report_loss(RACE_CITIZEN, actor=clerk(), identity_checked=True)
        card = flow.register_found_card(RACE_CITIZEN, actor=clerk())
        return {"report": report.id, "card": card.id}
    view = drive(flow, "ready", Kind.REPLACEMENT, n=RACE_N)
    card = flow.register_found_card(RACE_CITIZEN, actor=clerk())
    return {
        "app": view.id,
        "receipt": view.receipt_no,
        "report": report_of(flow, RACE_CITIZEN),
        "card": card.id,
    }


def _collect(flow: wf.Workflow, h: Handles) -> object:
    return flow.collect(h["app"], actor=clerk(), receipt_no=h["receipt"], old_card_returned=False)


COMMANDS: dict[str, Callable[[wf.Workflow, Handles], object]] = {
    "submit": lambda f, h: f.submit(form(Kind.REPLACEMENT, n=RACE_N), actor=clerk()),
    "report": lambda f, h: f.report_loss(RACE_CITIZEN, actor=clerk(), identity_checked=True),
    "withdraw": lambda f, h: f.withdraw_loss_report(
        h["report"], actor=clerk(), card_presented=True
    ),
    "register": lambda f, h: f.register_found_card(RACE_CITIZEN, actor=clerk()),
    "return": lambda f, h: f.return_found_card(h["card"], actor=clerk(), identity_checked=True),
    "destroy": lambda f, h: f.destroy_found_card(h["card"], actor=clerk()),
    "collect": _collect,
    "many_collect": lambda f, h: f.fire_many(
        [h["app"]], "collect", actor=clerk(), receipt_no=h["receipt"], old_card_returned=False
    ),
    "many_return": lambda f, h: f.found_cards.fire_many(
        [h["card"]], "return_to_owner", actor=clerk(), identity_checked=True
    ),
    "many_withdraw": lambda f, h: f.loss_reports.fire_many(
        [h["report"]], "withdraw", actor=clerk(), card_presented=True
    ),
}

PAIRS = [
    ("nothing", "report", "submit"),
    ("nothing", "submit", "report"),
    ("nothing", "register", "submit"),
    ("lost", "return", "submit"),
    ("lost", "submit", "return"),
    ("lost", "withdraw", "submit"),
    ("lost", "submit", "withdraw"),
    ("lost", "submit", "destroy"),
    ("lost", "many_return", "submit"),
    ("lost", "submit", "many_return"),
    ("lost", "submit", "many_withdraw"),
    ("lost", "return", "withdraw"),
    ("replacing", "collect", "withdraw"),
    ("replacing", "withdraw", "collect"),
    ("replacing", "collect", "return"),
    ("replacing", "return", "collect"),
    ("replacing", "collect", "destroy"),
    ("replacing", "destroy", "collect"),
    ("replacing", "many_collect", "withdraw"),
    ("replacing", "many_collect", "many_return"),
    ("replacing", "collect", "report"),
    ("replacing", "report", "collect"),
    ("replacing", "collect", "submit"),
]


def _outcome(run: Callable[[], object]) -> str:
    try:
        result = run()
    except wf.StorageError as exc:
        return f"STORAGE ERROR {exc}"
    except wf.WorkflowError as exc:
        return type(exc).__name__
    if isinstance(result, wf.BulkReport):
        return "bulk " + ",".join(r.code for r in result.refused) if result.refused else "ok"
    return "ok"


def _world(url: str) -> list[tuple[str, ...]]:
    """The citizen's records, ids left out."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            apps = conn.execute(
                sa.select(APPLICATIONS.c.kind, APPLICATIONS.c.state).where(
                    APPLICATIONS.c.citizen_id == RACE_CITIZEN
                )
            )
            reports = conn.execute(
                sa.select(LOSS_REPORTS.c.state, LOSS_REPORTS.c.application_id.is_(None)).where(
                    LOSS_REPORTS.c.citizen_id == RACE_CITIZEN
                )
            )
            cards = conn.execute(
                sa.select(FOUND_CARDS.c.state).where(FOUND_CARDS.c.citizen_id == RACE_CITIZEN)
            )
            return sorted(
                [("application", str(k), str(s)) for k, s in apps]
                + [("loss_report", str(s), "own" if own else "filed") for s, own in reports]
                + [("found_card", str(s)) for (s,) in cards]
            )
    finally:
        engine.dispose()


def _serial(url: str, clock: Clock, setup: str, first: str, second: str) -> tuple[Any, ...]:
    with wf.Workflow(url, clock=clock) as flow:
        h = _setup(flow, setup)
        clock.advance(minutes=1)
        a = _outcome(lambda: COMMANDS[first](flow, h))
        clock.advance(seconds=1)
        b = _outcome(lambda: COMMANDS[second](flow, h))
        verified = flow.verify().ok
    return a, b, _world(url), verified


def _race(url: str, clock: Clock, setup: str, first: str, second: str) -> tuple[Any, ...]:
    with wf.Workflow(url, clock=clock) as flow:
        h = _setup(flow, setup)
    clock.advance(minutes=1)
    engine = sa.create_engine(url)
    outcome: dict[str, str] = {}

    def run_second() -> None:
        with wf.Workflow(url, clock=clock) as other:
            outcome["b"] = _outcome(lambda: COMMANDS[second](other, h))

    thread = threading.Thread(target=run_second, daemon=True)
    try:
        with Session(engine) as session:
            a = _outcome(lambda: COMMANDS[first](wf.Workflow(session, clock=clock), h))
            clock.advance(seconds=1)
            thread.start()
            thread.join(timeout=0.4)  # the second waits for the first's citizen (or finishes)
            session.commit()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the second command hangs"
    finally:
        engine.dispose()
    with wf.Workflow(url, clock=clock) as flow:
        verified = flow.verify().ok
    return a, outcome["b"], _world(url), verified


@pytest.mark.parametrize("setup, first, second", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_two_commands_on_one_citizen_come_out_as_if_serial(
    databases: Databases, db_url: str, clock: Clock, setup: str, first: str, second: str
) -> None:
    """The first runs in a host Session left open, the second in another Workflow on its own
    connection meanwhile; then the first commits. The outcome (both answers, every record of
    the citizen, verify) must be the one of the first then the second, one after the other."""
    raced = _race(db_url, clock, setup, first, second)
    serial = _serial(databases.fresh(), Clock(), setup, first, second)
    assert raced == serial
    assert "STORAGE" not in raced[0] + raced[1]
    assert raced[3] is True


@on_postgres
def test_a_bulk_chunk_over_two_citizens_held_by_two_hosts_does_not_deadlock(
    db_url: str, clock: Clock
) -> None:
    """A host holds citizen B (an uncommitted return), a bulk collect takes A then waits for
    B, and the host then touches A: PostgreSQL's deadlock detector must end one of them with
    a documented error (ConcurrentUpdate), nothing hangs."""
    with wf.Workflow(db_url, clock=clock) as flow:
        a = drive(flow, "ready", Kind.REPLACEMENT, n=61)
        b = drive(flow, "ready", Kind.REPLACEMENT, n=62)
        card_b = flow.register_found_card(b.citizen_id, actor=clerk())
        card_a = flow.register_found_card(a.citizen_id, actor=clerk())
    engine = sa.create_engine(db_url)
    outcome: dict[str, str] = {}
    _first, second = sorted([a, b], key=lambda v: v.citizen_id)

    def bulk() -> None:
        with wf.Workflow(db_url, clock=clock) as other:
            outcome["bulk"] = _outcome(
                lambda: other.fire_many(
                    [a.id, b.id],
                    "collect",
                    actor=clerk(),
                    receipt_no=a.receipt_no,
                    old_card_returned=False,
                )
            )

    thread = threading.Thread(target=bulk, daemon=True)
    try:
        with Session(engine) as session:
            host = wf.Workflow(session, clock=clock)
            held = card_b if second is b else card_a
            outcome["host1"] = _outcome(lambda: host.destroy_found_card(held.id, actor=clerk()))
            thread.start()
            thread.join(timeout=0.5)
            other_card = card_a if held is card_b else card_b
            outcome["host2"] = _outcome(
                lambda: host.destroy_found_card(other_card.id, actor=clerk())
            )
            session.commit()
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        engine.dispose()
    assert "STORAGE" not in " ".join(outcome.values()), outcome
    with wf.Workflow(db_url, clock=clock) as flow:
        assert flow.verify().ok


# == 4. The new API: report_loss, ReportLoss, loss_reports.create ===============================


@pytest.mark.parametrize(
    "value, error",
    [
        (False, wf.GuardFailed),
        (None, ValidationError),
        ("", ValidationError),
        ([], ValidationError),
    ],
    ids=repr,
)
def test_report_loss_refuses_without_the_identity_checked_and_writes_nothing(
    flow: wf.Workflow, db_url: str, value: object, error: type[Exception]
) -> None:
    drive(flow, "ready", n=70)
    before = counts(db_url)
    with pytest.raises(error) as caught:
        flow.report_loss(
            citizen_id(71),
            actor=clerk(),
            identity_checked=value,
            request_id="r-1",  # type: ignore[arg-type]
        )
    if isinstance(caught.value, wf.GuardFailed):
        assert caught.value.code == "guard_failed" and "holder_in_person" in str(caught.value)
    assert counts(db_url) == before
    assert not flow.is_reported_lost(citizen_id(71))


@pytest.mark.parametrize(
    "build",
    [
        lambda c: wf.ReportLoss.model_construct(citizen_id=c, identity_checked=False),
        lambda c: wf.ReportLoss.model_construct(
            citizen_id="110105194912310021", identity_checked=True
        ),
        lambda c: wf.ReportLoss.model_construct(citizen_id=c, identity_checked=None),
        lambda c: {"citizen_id": c, "identity_checked": False},
        lambda c: {"citizen_id": c},
        lambda c: {"citizen_id": c, "identity_checked": True, "application_id": str(uuid.uuid4())},
        lambda c: c,
    ],
    ids=[
        "constructed False",
        "constructed bad number",
        "constructed None",
        "dict False",
        "dict without the check",
        "dict with application_id",
        "bare number",
    ],
)
def test_loss_reports_create_refuses_forms_that_skip_the_rules(
    flow: wf.Workflow, db_url: str, build: Callable[[str], Any]
) -> None:
    before = counts(db_url)
    with pytest.raises((ValidationError, wf.GuardFailed)):
        flow.loss_reports.create(build(citizen_id(72)), actor=clerk())
    assert counts(db_url) == before


@pytest.mark.parametrize(
    "how",
    ["report_loss 'yes'", "report_loss 1", "constructed 'on'", "dict '1'"],
)
def test_identity_checked_accepts_only_true(flow: wf.Workflow, db_url: str, how: str) -> None:
    citizen = citizen_id(73)
    value: object = {"report_loss 'yes'": "yes", "report_loss 1": 1}.get(how)
    before = counts(db_url)
    with pytest.raises(ValidationError):
        if how.startswith("report_loss"):
            flow.report_loss(citizen, actor=clerk(), identity_checked=value)  # type: ignore[arg-type]
        elif how.startswith("constructed"):
            form_ = wf.ReportLoss.model_construct(citizen_id=citizen, identity_checked="on")
            flow.loss_reports.create(form_, actor=clerk())
        else:
            flow.loss_reports.create(
                {"citizen_id": citizen, "identity_checked": "1"}, actor=clerk()
            )
    assert counts(db_url) == before


def test_report_loss_refusals_leave_the_request_id_free(flow: wf.Workflow) -> None:
    citizen = citizen_id(74)
    with pytest.raises(wf.GuardFailed):
        flow.report_loss(citizen, actor=clerk(), identity_checked=False, request_id="rl-1")
    with pytest.raises(wf.PermissionDenied):
        flow.report_loss(citizen, actor=reviewer(), identity_checked=True, request_id="rl-1")
    first = flow.report_loss(citizen, actor=clerk(), identity_checked=True, request_id="rl-1")
    again = flow.report_loss(citizen, actor=clerk(), identity_checked=True, request_id="rl-1")
    assert first == again
    with pytest.raises(wf.IdempotencyConflict):
        flow.report_loss(citizen_id(75), actor=clerk(), identity_checked=True, request_id="rl-1")
    with pytest.raises(wf.DuplicateLossReport):
        flow.report_loss(citizen, actor=clerk(), identity_checked=True)
    assert flow.verify().ok


def test_wf_report_loss_model_is_strict_about_keys() -> None:
    with pytest.raises(ValidationError):
        wf.ReportLoss.model_validate(
            {"citizen_id": citizen_id(76), "identity_checked": True, "reported_unit": "110105"}
        )
    assert wf.ReportLoss(citizen_id=citizen_id(76)).identity_checked is False
