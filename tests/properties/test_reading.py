"""Values verification reads back in bulk are the values SQLAlchemy gives, for every value.

`workflow.engine.reading` converts the columns verification reads by shorter roads than
SQLAlchemy's own processors (a time parsed with its UTC offset in one step, a JSON document
handed straight to the scanner ``json.loads`` runs). For any stored value, the conversion must
return what SQLAlchemy's processor returns, or raise an error of the same class, or the
reports of verification would change (a planted value must still be named as before).
"""

from __future__ import annotations

import json
import string
from datetime import UTC, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from workflow.engine.reading import json_document, stored_moment, utc_time
from workflow.models.base import UTCDateTime

SQLITE = sqlite.dialect()
POSTGRES = postgresql.psycopg.dialect()  # type: ignore[attr-defined]


def processors(dialect: Any, column_type: Any) -> tuple[Any, Any]:
    """SQLAlchemy's own processor for a column type, and the shorter road to its values."""
    exact = column_type.dialect_impl(dialect).result_processor(dialect, None)
    if isinstance(column_type, UTCDateTime):
        parse = column_type.impl_instance.dialect_impl(dialect).result_processor(dialect, None)
        return exact, utc_time(exact, parse)
    return exact, json_document(exact, dialect)


def same(fast: Any, exact: Any, value: Any) -> None:
    try:
        expected = exact(value)
    except Exception as exc:  # the reference's error is the expectation
        try:
            got = fast(value)
        except Exception as mine:
            assert type(mine) is type(exc)
            return
        raise AssertionError(f"SQLAlchemy raised {type(exc).__name__}, got {got!r}") from exc
    got = fast(value)
    # repr: the same type, time zone, key order, and NaN where NaN was.
    assert repr(got) == repr(expected)


SETTINGS = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

stored_times = st.datetimes().map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S.%f"))
"""Times as the library stores them on SQLite."""


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A string with a few characters replaced, inserted or removed."""
    text = draw(base)
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.integers(0, len(text)))
        what = draw(st.sampled_from(string.digits + " -:.+TZ,x\u0660\uff11"))
        match draw(st.sampled_from(["replace", "insert", "delete"])):
            case "replace":
                text = text[:where] + what + text[where + 1 :]
            case "insert":
                text = text[:where] + what + text[where:]
            case _:
                text = text[:where] + text[where + 1 :]
    return text


iso_texts = st.one_of(
    st.datetimes(timezones=st.one_of(st.none(), st.just(UTC))).map(lambda d: d.isoformat(sep=" ")),
    st.datetimes().map(lambda d: d.isoformat(sep=" ", timespec="milliseconds")),
    st.dates().map(str),
)
sqlite_time_values = st.one_of(
    stored_times,
    mutated(stored_times),
    iso_texts,
    mutated(iso_texts),
    st.text(max_size=30),
    st.integers(),
    st.floats(),
    st.binary(max_size=8),
    st.none(),
)
"""What a SQLite time column may hold: the library's text, near misses, anything."""


@SETTINGS
@given(sqlite_time_values)
def test_sqlite_times_read_back_as_sqlalchemy_reads_them(value: Any) -> None:
    same(*reversed(processors(SQLITE, UTCDateTime())), value)


zones = st.one_of(
    st.just(UTC),
    st.just(ZoneInfo("Etc/UTC")),
    st.just(ZoneInfo("Asia/Shanghai")),
    st.builds(
        timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
    ),
)


@SETTINGS
@given(st.one_of(st.datetimes(timezones=zones), st.datetimes(), st.none()))
def test_postgresql_times_read_back_as_sqlalchemy_reads_them(value: Any) -> None:
    same(*reversed(processors(POSTGRES, UTCDateTime())), value)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
documents = st.one_of(
    json_values.map(json.dumps),
    json_values.map(lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False)),
    st.tuples(
        st.sampled_from(["", " ", "\n", "\ufeff"]),
        json_values.map(json.dumps),
        st.sampled_from(["", " ", "x", "}", "]", "\t\n"]),
    ).map("".join),
)


@SETTINGS
@given(
    st.one_of(
        documents,
        mutated(documents),
        st.text(max_size=20).map(lambda t: "{" + t),
        st.text(max_size=20).map(lambda t: "[" + t),
        st.text(max_size=20),
        st.integers(),
        st.floats(),
        st.binary(max_size=8),
        st.none(),
    )
)
def test_sqlite_json_documents_read_back_as_sqlalchemy_reads_them(value: Any) -> None:
    same(*reversed(processors(SQLITE, sa.JSON())), value)


@SETTINGS
@given(sqlite_time_values)
def test_a_time_read_as_text_is_the_text_the_chain_hashes(value: Any) -> None:
    """For a value that reads back as a time (the only ones it is asked about: a row's time is
    converted first), `stored_moment` gives exactly what `canonical` writes for that time, or
    None."""
    exact, _ = processors(SQLITE, UTCDateTime())
    try:
        time = exact(value)
    except (TypeError, ValueError):
        return
    moment = stored_moment(value)
    if time is not None and moment is not None:
        assert moment == time.astimezone(UTC).isoformat(timespec="microseconds")
