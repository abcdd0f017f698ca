from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import workflow as wf
from tests.support import form
from workflow.models.citizen_id import check_character, mask_citizen_id, normalize_citizen_id

STANDARD_EXAMPLE = "11010519491231002X"


def test_the_standards_own_example_is_valid() -> None:
    assert normalize_citizen_id(STANDARD_EXAMPLE) == STANDARD_EXAMPLE


def test_a_lowercase_check_character_is_stored_uppercase() -> None:
    assert normalize_citizen_id(STANDARD_EXAMPLE.lower()) == STANDARD_EXAMPLE


def test_the_check_character_follows_iso_7064_mod_11_2() -> None:
    # Worked by hand: sum of digit x weight for 11010519491231002 is 167; 167 mod 11 = 2 -> "X".
    assert check_character("11010519491231002") == "X"
    # 4*7+4*9+0*10+3*5+0*8+5*4+1*2+9*1+8*6+5*3+0*7+6*9+1*10+2*5+0*8+0*4+1*2 = 249; 249 mod 11 = 7.
    assert check_character("44030519850612001") == "5"


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("11010519491231002", "18 characters"),
        ("11010519491231002XX", "18 characters"),
        ("1101051949123100X2", "17 ASCII digits"),
        ("11010519491231002Y", "17 ASCII digits"),
        ("\u06611010519491231002X", "17 ASCII digits"),
        ("11010519490231002X", "real calendar date"),
        ("11010517991231002X", "between 1850 and today"),
        ("110105194912310021", "check character"),
    ],
)
def test_malformed_numbers_are_refused_with_the_rule(value: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        normalize_citizen_id(value)


def test_a_birth_date_in_the_future_is_refused() -> None:
    first17 = "11010520300101001"
    with pytest.raises(ValueError, match="between 1850 and today"):
        normalize_citizen_id(first17 + check_character(first17), today=date(2026, 11, 27))


def test_a_division_code_unknown_today_or_newer_than_the_birth_is_accepted() -> None:
    # 990000 is no current division code, and Pudong (310115) did not exist in 1930: real
    # numbers carry such codes, so only the shape of the code is checked.
    for first17 in ("99000019491231002", "31011519300101001"):
        value = first17 + check_character(first17)
        assert normalize_citizen_id(value) == value


def test_masking_shows_only_the_first_six_and_last_four() -> None:
    assert mask_citizen_id(STANDARD_EXAMPLE) == "110105********002X"


@given(
    st.one_of(
        st.text(max_size=40),
        st.binary(max_size=40),
        st.integers(),
        st.none(),
        st.floats(),
        st.lists(st.integers(), max_size=3),
    )
)
def test_no_input_raises_anything_but_a_validation_error(value: object) -> None:
    try:
        form(citizen_id=value)
    except ValidationError as exc:
        assert exc.errors()[0]["loc"] == ("citizen_id",)


@given(
    st.from_regex(
        r"[0-9]{6}(19[5-9][0-9]|200[0-9])(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])[0-9]{3}",
        fullmatch=True,
    )
)
def test_every_well_formed_number_with_its_check_character_is_accepted(first17: str) -> None:
    value = first17 + check_character(first17)
    assert form(citizen_id=value).citizen_id == value
    wrong = "0" if value[-1] != "0" else "1"
    with pytest.raises(ValidationError, match="check character"):
        form(citizen_id=value[:-1] + wrong)


def test_validation_errors_do_not_echo_the_number() -> None:
    with pytest.raises(ValidationError) as info:
        form(citizen_id="110105194912310021")
    assert "110105194912310021" not in str(info.value)
    assert "citizen_id" in str(info.value)
    assert isinstance(wf.SubmitApplication, type)
