"""Commands on the same citizen's records across machines happen one after the other.

On PostgreSQL each command first takes a transaction-scoped lock on the citizen number, so a
found card handed back while the owner applies for a replacement can't both see the loss
report as it was before the other. On SQLite there is one writer at a time anyway.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import workflow as wf
from tests.support import Clock, clerk, form, postgres_url


@pytest.mark.skipif(postgres_url() is None, reason="PostgreSQL runs writers side by side")
def test_a_replacement_waits_for_a_found_card_being_returned_and_files_its_own_report(
    db_url: str, clock: Clock
) -> None:
    with wf.Workflow(db_url, clock=clock) as flow:
        citizen = form(wf.Kind.REPLACEMENT, n=31).citizen_id
        report = flow.report_loss(citizen, actor=clerk())
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
