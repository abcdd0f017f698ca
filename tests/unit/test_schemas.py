from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

import workflow as wf
from tests.support import citizen_id, form
from workflow.models.enums import Document, FeeWaiver, Kind, Role


def _error(**changes: object) -> str:
    with pytest.raises(ValidationError) as info:
        form(**changes)
    return str(info.value)


def test_a_valid_form_for_each_kind_is_accepted() -> None:
    for kind in Kind:
        assert form(kind).kind is kind


def test_renewals_need_the_current_card() -> None:
    message = _error(kind=Kind.RENEWAL, documents={Document.HOUSEHOLD_REGISTER})
    assert "documents" in message and "resident_id_card" in message
    message = _error(kind=Kind.DAMAGED_RENEWAL, documents=set())
    assert "resident_id_card" in message


def test_a_replacement_needs_the_register_or_the_residence_permit() -> None:
    message = _error(kind=Kind.REPLACEMENT, documents={Document.RESIDENT_ID_CARD})
    assert "household_register" in message and "residence_permit" in message
    assert form(Kind.REPLACEMENT, documents={Document.RESIDENCE_PERMIT}).kind is Kind.REPLACEMENT


@pytest.mark.parametrize(
    ("kind", "fee"), [(Kind.RENEWAL, "20"), (Kind.DAMAGED_RENEWAL, "40"), (Kind.REPLACEMENT, "40")]
)
def test_the_fee_must_be_the_national_fee_for_the_kind(kind: Kind, fee: str) -> None:
    assert form(kind, fee_paid=Decimal(fee)).fee_paid == Decimal(fee)
    assert form(kind, fee_paid=f"{fee}.00").fee_paid == Decimal(fee)
    message = _error(kind=kind, fee_paid=Decimal(fee) + 1)
    assert "fee_paid" in message and f"must be {fee} yuan" in message


def test_a_waived_fee_must_be_zero() -> None:
    assert form(fee_paid=0, fee_waiver=FeeWaiver.RURAL_HARDSHIP).fee_paid == 0
    assert "must be 0 yuan" in _error(fee_paid=20, fee_waiver=FeeWaiver.MINIMUM_SUBSISTENCE)


@pytest.mark.parametrize("fee", ["NaN", "Infinity", "-Infinity", "sNaN"])
def test_non_numbers_are_refused_as_a_fee(fee: str) -> None:
    assert "fee_paid" in _error(fee_paid=fee)


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "Wang\x00Fang", "Wang\nFang"])
def test_bad_names_are_refused(name: str) -> None:
    assert "name" in _error(name=name)


def test_names_are_stripped() -> None:
    assert form(name="  Li Lei ").name == "Li Lei"


@pytest.mark.parametrize(
    "region", ["11010", "1101050", "11010a", "\uff11\uff11\uff10\uff11\uff10\uff15", "110105\n"]
)
def test_regions_are_six_ascii_digits(region: str) -> None:
    assert "hukou_region" in _error(hukou_region=region)
    assert "acceptance_region" in _error(acceptance_region=region)


def test_unknown_fields_are_refused() -> None:
    assert "extra" in _error(receipt="x").lower()


def test_the_form_is_frozen() -> None:
    with pytest.raises(ValidationError):
        form().name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("role", "good", "bad"),
    [
        (Role.ACCEPTANCE_CLERK, "440305", "44"),
        (Role.HUKOU_REVIEWER, "110105", "11"),
        (Role.CARD_PRODUCER, "44", "440305"),
    ],
)
def test_an_actors_unit_is_a_division_code_of_the_length_its_role_needs(
    role: Role, good: str, bad: str
) -> None:
    assert wf.Actor(id="a", role=role, unit=good).unit == good
    with pytest.raises(ValidationError, match="digit division code"):
        wf.Actor(id="a", role=role, unit=bad)


def test_an_actor_needs_an_id_and_a_known_role() -> None:
    with pytest.raises(ValidationError, match="id"):
        wf.Actor(id=" ", role=Role.ACCEPTANCE_CLERK, unit="440305")
    with pytest.raises(ValidationError, match="role"):
        wf.Actor(id="a", role="mayor", unit="440305")  # type: ignore[arg-type]


def test_enums_compare_equal_to_their_lowercase_strings() -> None:
    assert wf.State.READY == "ready"
    assert wf.Kind.DAMAGED_RENEWAL == "damaged_renewal"
    assert wf.Role.CARD_PRODUCER == "card_producer"
    assert wf.RejectionGround.BAD_CREDIT_RECORD == "bad_credit_record"


def test_the_forms_repr_masks_the_citizen_number() -> None:
    number = citizen_id(7)
    assert number not in repr(form(n=7))
    assert number not in str(form(n=7))


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\n"])
def test_an_actor_id_can_not_split_a_log_line(separator: str) -> None:
    with pytest.raises(ValidationError, match="line breaks"):
        wf.Actor(id=f"clerk{separator}forged entry", role="acceptance_clerk", unit="440305")


def test_the_command_line_masks_a_citizen_number_ending_in_a_lowercase_x() -> None:
    from workflow.cli import mask_text

    assert mask_text("for 11010519491231002x today") == "for 110105********002x today"


def test_the_command_line_leaves_a_hash_with_eighteen_digits_in_a_row_alone() -> None:
    from workflow.cli import mask_text

    digest = "2bc396ee38efb77095c331690759167448805a0673744e54755169da873efc2c"
    assert mask_text(digest) == digest
    assert mask_text(f"{digest} 110105194912310021") == f"{digest} 110105********0021"
