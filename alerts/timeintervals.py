"""Alertmanager time intervals (times, weekdays, days_of_month, months, years, location) for mute/active routes.

Parsed and checked as Alertmanager's ``timeinterval`` package does (a config it refuses is refused
here with its reason); weekdays are names only, counted from sunday (0) to saturday (6), so
``saturday:sunday`` is refused (start after end) and ``sunday:saturday`` is the whole week.

>>> ti = TimeInterval(times=[{"start_time": "09:00", "end_time": "17:00"}], weekdays=["monday:friday"])
>>> ti.contains(1627984800.0)   # Tuesday 2021-08-03 10:00 UTC
True
>>> ti.contains(1628330400.0)   # Saturday 2021-08-07 10:00 UTC
False
>>> TimeInterval(weekdays=["saturday:sunday"])
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for TimeInterval
weekdays
  Value error, start day cannot be before end day [type=value_error, input_value=['saturday:sunday'], input_type=list]
    For further information visit https://errors.pydantic.dev/.../v/value_error
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")  # Go's time.Weekday
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december")
_TIME = re.compile(r"(([01][0-9])|(2[0-3])):[0-5][0-9]|24:00")


def _minute(text: str) -> int:
    if not isinstance(text, str) or not _TIME.fullmatch(text):
        raise ValueError(f"couldn't parse timestamp {text}, invalid format (use HH:MM, 00:00 to 24:00)")
    h, m = text.split(":")
    return int(h) * 60 + int(m)


class TimeRange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start_time: str
    end_time: str

    @field_validator("start_time", "end_time")
    @classmethod
    def _check(cls, v: str) -> str:
        _minute(v)
        return v

    @model_validator(mode="after")
    def _order(self):
        a, b = self.minutes()
        if a >= b:
            raise ValueError("start time cannot be equal or greater than end time")
        return self

    def minutes(self) -> tuple[int, int]:
        return _minute(self.start_time), _minute(self.end_time)


def _split(item, member) -> tuple[int, int]:
    text = str(item).lower()
    parts = text.split(":")
    if len(parts) > 2:
        raise ValueError(f"couldn't parse range {text}, invalid format")
    vals = [member(p) for p in parts]
    return vals[0], vals[-1]


def _int(p: str) -> int:
    """Go's strconv.Atoi, as Alertmanager reads these: ASCII digits after an optional sign, nothing else (Python's
    int() also takes "2_024", " 2024" and other scripts' digits)."""
    if not re.fullmatch(r"[+-]?[0-9]+", p):
        raise ValueError(f"invalid number {p!r}")
    return int(p)


def _weekday(p: str) -> int:
    if p not in WEEKDAYS:
        raise ValueError(f"{p} is not a valid weekday (use a name: sunday, monday, ... saturday)")
    return WEEKDAYS.index(p)


def _month(p: str) -> int:
    return MONTHS.index(p) + 1 if p in MONTHS else _int(p)


def weekday_ranges(items) -> list[tuple[int, int]]:
    out = []
    for item in items:
        a, b = _split(item, _weekday)
        if a > b:
            raise ValueError("start day cannot be before end day")
        out.append((a, b))
    return out


def day_ranges(items) -> list[tuple[int, int]]:
    out = []
    for item in items:
        a, b = _split(item, _int)
        for n in (a, b):
            if n == 0 or not -31 <= n <= 31:
                raise ValueError(f"{n} is not a valid day of the month: out of range")
        if a < 0 < b:
            raise ValueError("end day must be negative if start day is negative")
        if (28 + a if a < 0 else a) > (28 + b if b < 0 else b):
            raise ValueError(f"end day {b} is always before start day {a}")
        out.append((a, b))
    return out


def month_ranges(items) -> list[tuple[int, int]]:
    out = []
    for item in items:
        a, b = _split(item, _month)
        if a > b:
            name = {n: m for n, m in enumerate(MONTHS, 1)}
            raise ValueError(f"end month {name.get(b, b)} is before start month {name.get(a, a)}")
        out.append((a, b))
    return out


def year_ranges(items) -> list[tuple[int, int]]:
    out = []
    for item in items:
        a, b = _split(item, _int)
        if a > b:
            raise ValueError(f"end year {b} is before start year {a}")
        out.append((a, b))
    return out


class TimeInterval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # None (absent, or null) = any; an empty list matches nothing, as in Alertmanager (Go's empty slice)
    times: list[TimeRange] | None = None
    weekdays: list[str] | None = None
    days_of_month: list[str] | None = None
    months: list[str] | None = None
    years: list[str] | None = None
    location: str | None = "UTC"

    @field_validator("weekdays")
    @classmethod
    def _wd(cls, v):
        weekday_ranges(v or ())
        return v

    @field_validator("days_of_month")
    @classmethod
    def _dom(cls, v):
        day_ranges(v or ())
        return v

    @field_validator("months")
    @classmethod
    def _mon(cls, v):
        month_ranges(v or ())
        return v

    @field_validator("years")
    @classmethod
    def _yr(cls, v):
        year_ranges(v or ())
        return v

    @field_validator("location")
    @classmethod
    def _loc(cls, v):
        if v is None:  # null: absent
            return "UTC"
        if v in ("", "Local"):  # Go's time.LoadLocation: "" is UTC, "Local" the machine's zone
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v} (use an IANA name such as Europe/Berlin)") from None
        return v

    def contains(self, ts: float) -> bool:
        """Whether the instant ``ts`` (epoch seconds) falls inside this interval (all given fields must match)."""
        zone = None if self.location == "Local" else ZoneInfo(self.location or "UTC")
        t = datetime.fromtimestamp(ts, zone) if zone else datetime.fromtimestamp(ts).astimezone()
        if self.times is not None:
            minute = t.hour * 60 + t.minute
            if not any(a <= minute < b for a, b in (r.minutes() for r in self.times)):
                return False
        if self.days_of_month is not None:
            last = calendar.monthrange(t.year, t.month)[1]
            inside = False
            for a, b in day_ranges(self.days_of_month):  # Alertmanager's clamping, step for step
                begin = last + a + 1 if a < 0 else a
                end = last + b + 1 if b < 0 else b
                if begin > last:
                    continue
                begin, end = max(-last, min(begin, last)), max(-last, min(end, last))
                if begin <= t.day <= end:
                    inside = True
                    break
            if not inside:
                return False
        if self.months is not None and not _within(t.month, month_ranges(self.months)):
            return False
        if self.weekdays is not None and not _within(t.isoweekday() % 7, weekday_ranges(self.weekdays)):
            return False
        if self.years is not None and not _within(t.year, year_ranges(self.years)):
            return False
        return True


def _within(v: int, ranges: list[tuple[int, int]]) -> bool:
    return any(a <= v <= b for a, b in ranges)


def active(intervals: list[TimeInterval], ts: float) -> bool:
    return any(ti.contains(ts) for ti in intervals)
