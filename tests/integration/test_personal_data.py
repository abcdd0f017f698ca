"""Personal data stays out of what the library logs and raises; receipts compare in constant time.

A day of the demo (`workflow.demo.run_day`) and a handful of refused commands run with every
`logging` record captured at DEBUG; the host below also logs every refusal with its traceback, as
the embedding guide tells it to. Then no formatted log record, and no message, ``str``, ``repr``
or formatted traceback of any exception raised, may contain a full citizen number or the receipt
number of any application in the database.
"""

from __future__ import annotations

import hmac
import inspect
import json
import logging
import random
import re
import traceback
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import wraps
from typing import Any

import pydantic
import pytest
import sqlalchemy as sa
from rich.pretty import pretty_repr

import workflow as wf
import workflow.machines.application
import workflow.service
from tests.support import ACCEPTANCE, Clock, clerk, drive, form, reviewer
from workflow.demo import SimulatedClock, run_day
from workflow.machines.application import ApplicationRepository

FULL_CITIZEN_NUMBER = re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
BAD_CHECK_CHARACTER = "110105194912310021"  # the standard's example with a wrong last character
PUBLIC = tuple(
    name
    for name, member in inspect.getmembers(wf.Workflow, inspect.isfunction)
    if not name.startswith("_") and name != "close"
)
"""Every command and query of `Workflow`."""
host_log = logging.getLogger("tests.host")


class Witness:
    """Keeps every exception that leaves a watched `Workflow` method (and re-raises it), and
    logs it with its traceback as a host would."""

    def __init__(self) -> None:
        self.raised: list[BaseException] = []

    def watch(self, flow: wf.Workflow) -> wf.Workflow:
        for name in PUBLIC:
            setattr(flow, name, self._wrap(name, getattr(flow, name)))
        return flow

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(method)
        def watched(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                self.keep(exc)
                host_log.warning("%s refused: %s", name, exc, exc_info=True)
                raise

        return watched

    def keep(self, exc: BaseException) -> None:
        if not any(exc is kept for kept in self.raised):
            self.raised.append(exc)

    def expect(self, error: type[BaseException], call: Callable[[], Any]) -> BaseException:
        with pytest.raises(error) as caught:
            call()
        self.keep(caught.value)
        return caught.value


def exception_texts(exc: BaseException) -> list[str]:
    """Everything a host could print of an exception: message, str, repr, arguments, and the
    formatted traceback with its chained causes."""
    texts = [str(exc), repr(exc), *(repr(arg) for arg in exc.args)]
    texts.append("".join(traceback.format_exception(exc)))
    return texts


def leaks(texts: list[str], receipts: set[str]) -> list[str]:
    """The citizen numbers and receipt numbers found in ``texts``."""
    found = []
    for text in texts:
        found += [f"citizen number {m}" for m in FULL_CITIZEN_NUMBER.findall(text)]
        found += [f"receipt {r}" for r in receipts if r in text]
    return found


def stored_personal_data(url: str) -> tuple[set[str], set[str], int]:
    """Every citizen number and receipt number in the applications table, and the number of
    history rows (one per command that took effect)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT citizen_id, receipt_no FROM idcard_applications")
            ).all()
            history = conn.execute(
                sa.text("SELECT count(*) FROM idcard_transition_log")
            ).scalar_one()
    finally:
        engine.dispose()
    return {str(r.citizen_id) for r in rows}, {str(r.receipt_no) for r in rows}, int(history)


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logging record of every logger, at DEBUG and up."""
    caplog.set_level(logging.DEBUG)
    yield caplog


def formatted(caplog: pytest.LogCaptureFixture) -> list[str]:
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    return [formatter.format(record) for record in caplog.records]


def test_a_day_of_work_and_its_refusals_log_and_raise_no_personal_data(
    db_url: str, captured: pytest.LogCaptureFixture
) -> None:
    clock = SimulatedClock(datetime(2026, 1, 1, 16, 0, tzinfo=UTC))
    witness = Witness()
    with wf.Workflow(db_url, clock=clock) as flow:
        witness.watch(flow)
        run_day(flow, applications=60, rng=random.Random(7), clock=clock)
        # The demo's own refusals (a renewal applicant without the old card) went through too.
        refused_by_the_demo = len(witness.raised)
        assert any(isinstance(e, wf.GuardFailed) for e in witness.raised)

        undecided = flow.overdue_reviews(limit=1)[0]  # an open application of the demo's
        counter = clerk(undecided.acceptance_region)
        ready = drive(flow, "ready", wf.Kind.RENEWAL, n=1)
        another_receipt = flow.get(undecided.id).receipt_no
        # GuardFailed: a real receipt, but another application's; then the old card kept.
        witness.expect(
            wf.GuardFailed,
            lambda: flow.collect(ready.id, actor=clerk(), receipt_no=another_receipt),
        )
        witness.expect(
            wf.GuardFailed,
            lambda: flow.collect(ready.id, actor=clerk(), receipt_no=ready.receipt_no),
        )
        # PermissionDenied: a clerk may not approve.
        witness.expect(wf.PermissionDenied, lambda: flow.approve(undecided.id, actor=counter))
        # DuplicateApplication: the citizen of an open application applies again.
        again = wf.SubmitApplication(
            kind="replacement",
            citizen_id=undecided.citizen_id,
            name=undecided.name,
            hukou_region=undecided.hukou_region,
            acceptance_region=undecided.acceptance_region,
            documents={"residence_permit"},
            fee_paid=40,
        )
        witness.expect(wf.DuplicateApplication, lambda: flow.submit(again, actor=counter))
        # ValidationError: a citizen number with a wrong check character, as a dict and a form.
        fields = {**again.model_dump(), "citizen_id": BAD_CHECK_CHARACTER}
        witness.expect(pydantic.ValidationError, lambda: flow.submit(fields, actor=counter))
        witness.expect(pydantic.ValidationError, lambda: wf.SubmitApplication(**fields))
        # And the other refusals, for good measure.
        witness.expect(wf.IllegalTransition, lambda: flow.transmit(undecided.id, actor=counter))
        witness.expect(wf.NotFound, lambda: flow.get(uuid.uuid4()))
        witness.expect(
            pydantic.ValidationError,
            lambda: flow.transmit(undecided.id, actor={"id": "x", "role": "clerk", "unit": "1"}),
        )
        witness.expect(
            pydantic.ValidationError,
            lambda: flow.reject(undecided.id, actor=reviewer(), ground=undecided.citizen_id),
        )
        refused_here = 10

    citizens, receipts, history_rows = stored_personal_data(db_url)
    assert len(citizens) == len(receipts) == 61
    assert undecided.citizen_id in citizens and ready.receipt_no in receipts

    records = captured.records
    library = [r for r in records if r.name == "workflow" or r.name.startswith("workflow.")]
    # Not vacuous: the library logged at INFO each command that took effect, and the refusals.
    info = [r for r in library if r.levelno == logging.INFO]
    assert len(info) >= history_rows - 61  # every transition (a submission may log once more)
    assert any("refused" in r.getMessage() for r in library)
    assert len(witness.raised) >= refused_by_the_demo + refused_here
    assert any(r.name == host_log.name and r.exc_info for r in records)

    found = leaks(formatted(captured), receipts)
    assert not found, f"personal data in the logs: {sorted(set(found))[:10]}"
    for exc in witness.raised:
        found = leaks(exception_texts(exc), receipts)
        assert not found, f"personal data in {type(exc).__name__}: {sorted(set(found))[:10]}"


@pytest.mark.parametrize("method", ["get", "history", "transmit", "explain", "verify"])
def test_a_citizen_number_typed_into_an_id_field_is_not_echoed(
    flow: wf.Workflow, method: str, captured: pytest.LogCaptureFixture
) -> None:
    """A clerk who pastes the citizen number where the application id belongs gets a
    ValidationError that does not repeat the number (as the forms' errors don't)."""
    number = drive(flow, "submitted").citizen_id
    arguments: dict[str, Any] = {
        "get": {},
        "history": {},
        "transmit": {"actor": clerk()},
        "explain": {"actor": clerk()},
        "verify": {},
    }[method]
    with pytest.raises(pydantic.ValidationError) as refused:
        getattr(flow, method)(number, **arguments)
    found = leaks(exception_texts(refused.value), set())
    found += leaks(formatted(captured), set())
    assert not found, f"{method}: the number is echoed: {str(refused.value)[:300]}"


MISTYPED = (BAD_CHECK_CHARACTER, "110105194902300027", "110105300001010014")
"""A wrong check character, 30 February, born in 3000: the right shape, refused."""


@pytest.mark.parametrize("method", ["report_loss", "register_found_card", "is_reported_lost"])
def test_a_mistyped_citizen_number_is_not_echoed(
    flow: wf.Workflow, method: str, captured: pytest.LogCaptureFixture
) -> None:
    """Loss reports and found cards take a bare citizen number: a mistyped one is refused, and
    the error does not repeat it (one digit off, it is still somebody's number)."""
    arguments: dict[str, Any] = {} if method == "is_reported_lost" else {"actor": clerk()}
    if method == "report_loss":
        arguments["identity_checked"] = True
    found = []
    for mistyped in MISTYPED:
        with pytest.raises(pydantic.ValidationError) as refused:
            getattr(flow, method)(mistyped, **arguments)
        found += leaks(exception_texts(refused.value), set())
    found += leaks(formatted(captured), set())
    assert not found, f"{method}: the number is echoed: {str(refused.value)[:300]}"


def test_reprs_of_forms_views_and_validation_errors_mask_the_citizen_number(
    flow: wf.Workflow,
) -> None:
    submitted = form(wf.Kind.RENEWAL, 1, citizen_id="11010519491231002x")
    view = flow.submit(submitted, actor=clerk())
    assert view.citizen_id == "11010519491231002X"  # the counter needs the full number
    report = flow.report_loss("11010519491231002X", actor=clerk(), identity_checked=True)
    card = flow.register_found_card("11010519491231002X", actor=clerk())
    for shown in (
        repr(submitted),
        str(submitted),
        f"{submitted!r}",
        pretty_repr(submitted),
        *(f(v) for v in (view, report, card) for f in (repr, str, pretty_repr)),
        repr(flow.get(view.id)),
    ):
        assert "110105********002X" in shown
        assert not FULL_CITIZEN_NUMBER.search(shown), shown

    fields = form(wf.Kind.RENEWAL, 2).model_dump(mode="json")
    errors = []
    with pytest.raises(pydantic.ValidationError) as from_form:
        wf.SubmitApplication(**{**fields, "citizen_id": BAD_CHECK_CHARACTER})
    errors.append(from_form.value)
    with pytest.raises(pydantic.ValidationError) as from_dict:
        flow.submit({**fields, "citizen_id": BAD_CHECK_CHARACTER}, actor=clerk())
    errors.append(from_dict.value)
    with pytest.raises(pydantic.ValidationError) as from_json:
        # 30 February: the right shape, no such date.
        wf.SubmitApplication.model_validate_json(
            json.dumps({**fields, "citizen_id": "110105194902300027"})
        )
    errors.append(from_json.value)
    for error in errors:
        assert "citizen_id" in str(error)
        for shown in (str(error), repr(error), "".join(traceback.format_exception(error))):
            assert not FULL_CITIZEN_NUMBER.search(shown), shown


def _fail_inserts_into_applications(engine: sa.Engine) -> None:
    """Make the database driver fail the insert of an application, as a full disk would."""

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _fail(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO IDCARD_APPLICATIONS"):
            raise engine.dialect.loaded_dbapi.OperationalError("disk I/O error")


@pytest.mark.parametrize("failure", ["duplicate found by the database", "storage failure"])
def test_a_refusal_from_the_database_carries_no_personal_data_in_its_traceback(
    db_url: str,
    clock: Clock,
    failure: str,
    monkeypatch: pytest.MonkeyPatch,
    captured: pytest.LogCaptureFixture,
) -> None:
    """Refusals that the database itself produces chain the driver's error; a host logging
    them with their traceback (as it should a `StorageError`) must not write the citizen's
    number or a receipt number to its logs."""
    issued: list[str] = []
    real_receipt = workflow.machines.application.new_receipt_no

    def recorded_receipt() -> str:
        issued.append(real_receipt())
        return issued[-1]

    monkeypatch.setattr(workflow.machines.application, "new_receipt_no", recorded_receipt)
    engine = wf.create_engine(db_url)
    witness = Witness()
    try:
        with wf.Workflow(engine, clock=clock) as flow:
            witness.watch(flow)
            first = flow.submit(form(wf.Kind.RENEWAL, 1), actor=clerk())
            if failure == "storage failure":
                _fail_inserts_into_applications(engine)
                expected: type[wf.WorkflowError] = wf.StorageError
                command = form(wf.Kind.RENEWAL, 2)
            else:
                # A racing submission passed the duplicate check: the partial unique index
                # refuses the second open application of the citizen.
                monkeypatch.setattr(ApplicationRepository, "has_open", lambda *args: False)
                expected = wf.DuplicateApplication
                command = form(wf.Kind.REPLACEMENT, 1)
            refused = witness.expect(expected, lambda: flow.submit(command, actor=clerk()))
    finally:
        engine.dispose()

    assert refused.__cause__ is not None  # the driver's error is chained, as documented
    receipts = {first.receipt_no, *issued}
    found = leaks(exception_texts(refused), receipts)
    found += leaks(formatted(captured), receipts)
    assert not found, (
        f"{type(refused).__name__}: personal data in a traceback: {sorted(set(found))}"
    )


def test_receipts_are_compared_in_constant_time(
    flow: wf.Workflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(workflow.machines.application.hmac, "compare_digest", spy)
    if hasattr(
        workflow.machines.application, "compare_digest"
    ):  # in case it is ever imported by name
        monkeypatch.setattr(workflow.machines.application, "compare_digest", spy)

    view = drive(flow, "ready", wf.Kind.REPLACEMENT)
    receipt = view.receipt_no
    near_miss = receipt[:-1] + ("A" if receipt[-1] != "A" else "B")

    def presented(value: str) -> bool:
        return any(value in pair or value.encode() in pair for pair in compared)

    with pytest.raises(wf.GuardFailed) as refused:
        flow.collect(view.id, actor=clerk(ACCEPTANCE), receipt_no=near_miss)
    assert refused.value.guard == "receipt_matches"
    assert presented(near_miss), (
        "a wrong receipt of the right length was not compared in constant time"
    )

    compared.clear()
    collected = flow.collect(view.id, actor=clerk(ACCEPTANCE), receipt_no=receipt)
    assert collected.state == wf.State.COLLECTED
    assert presented(receipt), "the receipt was not compared with hmac.compare_digest"


def test_a_citizen_number_passed_as_an_event_is_masked_in_the_log(
    flow: wf.Workflow, captured: pytest.LogCaptureFixture
) -> None:
    view = flow.submit(form(), actor=clerk())
    with pytest.raises(wf.IllegalTransition) as refused:
        flow.fire(view.id, view.citizen_id.lower(), actor=clerk())
    for text in (*formatted(captured), str(refused.value)):
        assert view.citizen_id not in text.upper(), text
