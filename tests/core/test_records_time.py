"""The record parsers agree on a time's text: ``parse_time`` (settings, the cloud intake) reads RFC 3339 as
``wire_time`` (msgspec, the worker) does."""

from __future__ import annotations

import msgspec
import pytest

from core.records import RecordError, parse_time, wire_time

FRACTIONS = ["1234564", "1234565", "1234566", "1234564999", "12345650", "9999994", "9999995", "99999949999",
             "0000004", "0000005", "999999999", "123456", "12345"]


@pytest.mark.parametrize("frac", FRACTIONS)
@pytest.mark.parametrize("zone", ["Z", "+02:00", "-05:30"])
def test_fractions_past_microseconds_round_as_msgspec_rounds(frac, zone):
    """msgspec rounds half up on the 7th digit alone (the rest ignored); fromisoformat cut: .9999996 was .999999
    here and :01 on the wire, two times for one record."""
    text = f"2021-08-03T23:59:59.{frac}{zone}"
    assert parse_time(text) == wire_time(text)


def test_rounding_examples_and_the_year_s_edge():
    assert parse_time("2021-08-03T10:00:00.9999996Z") == 1627984801.0
    assert parse_time("2021-08-03T10:00:00.1234565Z") == 1627984800.123457  # half up, not to even
    assert parse_time("2021-08-03T10:00:00.1234564999Z") == 1627984800.123456
    assert parse_time("1969-12-31T23:59:59.9999995Z") == wire_time("1970-01-01T00:00:00Z") == 0.0
    assert parse_time("2021-08-03T10:00:00,9999996Z") == 1627984801.0  # ISO 8601's comma, which parse_time reads
    with pytest.raises(RecordError, match="outside the years 1-9999"):  # rounds into the year 10000
        parse_time("9999-12-31T23:59:59.9999995Z")
    with pytest.raises(msgspec.ValidationError):
        wire_time("9999-12-31T23:59:59.9999995Z")


@pytest.mark.parametrize("text", ["2021-08-03T10:00:00z", "2021-08-03t10:00:00z", "2021-08-03T10:00:00.5z",
                                  "2021-08-03T10:00:00.12345678z"])
def test_a_lower_case_z_is_utc(text):
    """RFC 3339 5.6 allows "z"; msgspec reads it, fromisoformat refused it (the cloud intake answered 400)."""
    assert parse_time(text) == wire_time(text) == parse_time(text.upper())


@pytest.mark.parametrize("text", ["2021-08-03T10:00:00zz", "2021-08-03T10:00:00+02:00z", "z", "2021-08-03z"])
def test_what_is_still_no_time(text):
    with pytest.raises(RecordError, match="invalid time"):
        parse_time(text)
