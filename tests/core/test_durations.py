"""The one duration parser: Prometheus's grammar, table by table."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from core.durations import Duration, format_duration, parse_duration

HINT = "(use e.g. 30s, 5m, 1h30m)"


@pytest.mark.parametrize("text, seconds", [
    ("0", 0.0), (0, 0.0), (0.0, 0.0),
    ("1ms", 0.001), ("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("2d", 172800.0),
    ("1w", 604800.0), ("1y", 31536000.0),
    ("1h30m", 5400.0), ("1m30s", 90.0), ("1s500ms", 1.5), ("90m", 5400.0), ("0s", 0.0), ("00m", 0.0),
    ("1y2w3d4h5m6s7ms", 31536000 + 2 * 604800 + 3 * 86400 + 4 * 3600 + 5 * 60 + 6 + 0.007),
])
def test_accepted(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize("value, quoted", [
    ("5m1h", "5m1h"),        # largest unit first
    ("1s1s", "1s1s"),        # each unit once
    ("1ms1s", "1ms1s"),
    ("-5", "-5"), (-5, "-5"), (-1.5, "-1.5"),
    (5, "5"), ("5", "5"),     # a number needs a unit
    ("1.5m", "1.5m"),        # whole numbers only
    ("", ""), (" 5m", " 5m"), ("5m ", "5m "), ("1h 30m", "1h 30m"), ("5 min", "5 min"),
    ("5M", "5M"), ("1d1w", "1d1w"), ("m", "m"), ("5us", "5us"),
    (True, "true"), (None, "null"), ([5], "[5]"),
])
def test_refused_quoting_the_text(value, quoted):
    with pytest.raises(ValueError) as exc:
        parse_duration(value)
    assert str(exc.value) == f'invalid duration "{quoted}" {HINT}'


@pytest.mark.parametrize("text", ["293y", "10000y", "99999999999999999999y", "292y24w3d23h47m16s855ms",
                                  "9" * 5000 + "ms"])
def test_longer_than_go_holds_is_refused(text):
    """No upper bound: ``10000y`` made a silence end in the year 12020 (a traceback, half the set written) and
    ``99999999999999999999y`` an OverflowError; Prometheus and Alertmanager refuse both (int64 nanoseconds)."""
    with pytest.raises(ValueError) as exc:
        parse_duration(text)
    assert str(exc.value).endswith(" is too long (at most 292y24w3d23h47m16s854ms)")
    assert parse_duration("292y24w3d23h47m16s854ms") == 9223372036.854  # the longest: Go's time.Duration max, in ms


def test_a_config_with_a_too_long_duration_says_where(tmp_path):
    """A rule's ``for:`` and a route's ``group_wait:`` of 99999999999999999999y were accepted."""
    from .kinds import KINDS, load_errors

    too_long = 'duration "99999999999999999999y" is too long (at most 292y24w3d23h47m16s854ms)'
    rules = KINDS["rules"].valid + "    for: 99999999999999999999y\n"
    assert load_errors("rules", rules, tmp_path) == [f"f.yaml:8: rules[0].for: {too_long}"]
    routing = KINDS["routing"].valid.replace("route:\n", "route:\n  group_wait: 99999999999999999999y\n")
    assert load_errors("routing", routing, tmp_path) == [f"f.yaml:2: route.group_wait: {too_long}"]


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.0001, "0s"), (0.001, "1ms"), (0.25, "250ms"), (1.5, "1s500ms"), (90, "1m30s"), (3600, "1h"),
    (5400, "1h30m"), (86400, "1d"), (604800, "1w"), (691200, "1w1d"), (31536000, "1y"), (-90, "-1m30s"),
])
def test_format(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.001, 1, 59, 61, 3599, 86399.999, 31536000 + 604800 + 1])
def test_format_parses_back(seconds):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


class _Model(BaseModel):
    wait: Duration = 30.0


def test_pydantic_field_reads_strings_and_dumps_them_to_json():
    m = _Model.model_validate({"wait": "1h30m"})
    assert (m.wait, m.model_dump(), m.model_dump(mode="json")) == (5400.0, {"wait": 5400.0}, {"wait": "1h30m"})
    with pytest.raises(ValueError, match='invalid duration "5 min"'):
        _Model.model_validate({"wait": "5 min"})
