"""Commands on the same citizen's records across machines happen one after the other.

On PostgreSQL each command first takes a transaction-scoped lock on the citizen number, so a
found card handed back while the owner applies for a replacement can't both see the loss
report as it was before the other. On SQLite there is one writer at a time anyway.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import workflow as wf
from tests.support import Clock, clerk, form, postgres_url

LOSS_REPORTS = wf.Base.metadata.tables["idcard_loss_reports"]


@pytest.mark.skipif(postgres_url() is None, reason="PostgreSQL runs writers side by side")
def test_a_replacement_waits_for_a_found_card_being_returned_and_files_its_own_report(
    db_url: str, clock: Clock
) -> None:
    with wf.Workflow(db_url, clock=clock) as flow:
        citizen = form(wf.Kind.REPLACEMENT, n=31).citizen_id
        report = flow.report_loss(citizen, actor=clerk(), identity_checked=True)
        card = flow.register_found_card(citizen, actor=clerk())
    engine = sa.create_engine(db_url)
    outcome: dict[str, Any] = {}

    def apply_for_a_replacement() -> None:
        with wf.Workflow(db_url, clock=clock) as other:
            try:
                outcome["view"] = other.submit(form(wf.Kind.REPLACEMENT, n=31), actor=clerk())
            except wf.WorkflowError as exc:  # reported below
                outcome["error"] = exc

    try:
        with Session(engine) as session:
            # The card is handed back in a transaction that has not committed yet ...
            wf.Workflow(session, clock=clock).return_found_card(
                card.id, actor=clerk(), identity_checked=True
            )
            applying = threading.Thread(target=apply_for_a_replacement)
            applying.start()
            applying.join(timeout=1.5)
            # ... so the replacement waits for it instead of reading the report as it was.
            assert applying.is_alive(), outcome
            session.commit()
        applying.join(timeout=30)
        assert not applying.is_alive() and "error" not in outcome, outcome
    finally:
        engine.dispose()
    with wf.Workflow(db_url, clock=clock) as flow:
        assert flow.get_found_card(card.id).state == "returned"
        assert flow.get_loss_report(report.id).state == "withdrawn"
        # The replacement saw the report withdrawn and filed its own: the old card, back in
        # its owner's hand, is reported lost again, and collecting the replacement closes it.
        assert flow.is_reported_lost(citizen)
        assert flow.verify().broken == []


def test_every_machine_serialises_on_the_citizen() -> None:
    from workflow.machines import REGISTRY

    assert {m.name: m.serialised_by for m in REGISTRY} == {
        "application": "citizen_id",
        "loss_report": "citizen_id",
        "found_card": "citizen_id",
    }


@pytest.mark.skipif(postgres_url() is None, reason="PostgreSQL runs writers side by side")
def test_a_report_filed_past_the_library_during_a_replacement_is_a_retryable_race(
    db_url: str, clock: Clock
) -> None:
    """A writer that takes no citizen lock (another program) files a loss report between the
    replacement's check and its own report: the replacement fails as ConcurrentUpdate, which
    the docs say to retry, not StorageError, which they say to alert on; a retry reuses the
    report that is now there."""
    engine = sa.create_engine(db_url)
    other = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
    citizen = form(wf.Kind.REPLACEMENT, n=32).citizen_id
    planted = uuid.uuid4()

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _file_one_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO idcard_loss_reports") and not planted_in:
            planted_in.append(True)
            with other.connect() as side:
                side.execute(
                    sa.insert(LOSS_REPORTS).values(
                        id=planted,
                        citizen_id=citizen,
                        reported_unit=clerk().unit,
                        reported_at=clock.now,
                        state="reported",
                        version=1,
                        chain_head="0" * 64,
                    )
                )

    planted_in: list[bool] = []
    try:
        with wf.Workflow(engine, clock=clock) as flow:
            with pytest.raises(wf.ConcurrentUpdate):
                flow.submit(form(wf.Kind.REPLACEMENT, n=32), actor=clerk())
            assert planted_in == [True]
            view = flow.submit(form(wf.Kind.REPLACEMENT, n=32), actor=clerk())
            assert view.state == "submitted"
            assert flow.is_reported_lost(citizen)
    finally:
        engine.dispose()
        other.dispose()
