"""Alertmanager time intervals (times, weekdays, days_of_month, months, years, location) for mute/active routes.

>>> ti = TimeInterval(times=[{"start_time": "09:00", "end_time": "17:00"}], weekdays=["monday:friday"])
>>> ti.contains(1627984800.0)   # Tuesday 2021-08-03 10:00 UTC
True
>>> ti.contains(1628330400.0)   # Saturday 2021-08-07 10:00 UTC
False
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, field_validator

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december")


def _minute(text: str) -> int:
    try:
        h, m = text.split(":")
        hh, mm = int(h), int(m)
    except ValueError:
        raise ValueError(f"invalid time {text!r} (use HH:MM)") from None
    if not (0 <= hh <= 24 and 0 <= mm < 60) or (hh == 24 and mm):
        raise ValueError(f"invalid time {text!r} (use HH:MM between 00:00 and 24:00)")
    return hh * 60 + mm


class TimeRange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start_time: str
    end_time: str

    @field_validator("start_time", "end_time")
    @classmethod
    def _check(cls, v: str) -> str:
        _minute(v)
        return v

    def minutes(self) -> tuple[int, int]:
        return _minute(self.start_time), _minute(self.end_time)


def _ranges(items: list[str], names: tuple[str, ...] | None, lo: int, hi: int, what: str) -> list[tuple[int, int]]:
    out = []
    for item in items:
        parts = str(item).split(":")
        if len(parts) > 2:
            raise ValueError(f"invalid {what} range {item!r} (use a or a:b)")
        vals = []
        for p in parts:
            p = p.strip().lower()
            if names and p in names:
                vals.append(names.index(p) + 1)
                continue
            try:
                n = int(p)
            except ValueError:
                allowed = f"a name ({names[0]}...) or a number" if names else "a number"
                raise ValueError(f"invalid {what} {p!r} (use {allowed})") from None
            if not (lo <= n <= hi) or n == 0:
                raise ValueError(f"invalid {what} {n} (between {lo} and {hi})")
            vals.append(n)
        out.append((vals[0], vals[-1]))
    return out


class TimeInterval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    times: list[TimeRange] = []
    weekdays: list[str] = []
    days_of_month: list[str] = []
    months: list[str] = []
    years: list[str] = []
    location: str = "UTC"

    @field_validator("weekdays")
    @classmethod
    def _wd(cls, v):
        _ranges(v, WEEKDAYS, 1, 7, "weekday")
        return v

    @field_validator("days_of_month")
    @classmethod
    def _dom(cls, v):
        _ranges(v, None, -31, 31, "day of month")
        return v

    @field_validator("months")
    @classmethod
    def _mon(cls, v):
        _ranges(v, MONTHS, 1, 12, "month")
        return v

    @field_validator("years")
    @classmethod
    def _yr(cls, v):
        _ranges(v, None, 1, 9999, "year")
        return v

    @field_validator("location")
    @classmethod
    def _loc(cls, v):
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown location {v!r} (use an IANA name such as Europe/Berlin)") from None
        return v

    def contains(self, ts: float) -> bool:
        """Whether the instant ``ts`` (epoch seconds) falls inside this interval (all given fields must match)."""
        t = datetime.fromtimestamp(ts, ZoneInfo(self.location))
        if self.times:
            minute = t.hour * 60 + t.minute
            if not any(a <= minute < b for a, b in (r.minutes() for r in self.times)):
                return False
        if self.weekdays and not _within(t.isoweekday(), _ranges(self.weekdays, WEEKDAYS, 1, 7, "weekday")):
            return False
        if self.days_of_month:
            import calendar

            last = calendar.monthrange(t.year, t.month)[1]
            norm = [(a if a > 0 else last + 1 + a, b if b > 0 else last + 1 + b)
                    for a, b in _ranges(self.days_of_month, None, -31, 31, "day of month")]
            if not _within(t.day, norm):
                return False
        if self.months and not _within(t.month, _ranges(self.months, MONTHS, 1, 12, "month")):
            return False
        if self.years and not _within(t.year, _ranges(self.years, None, 1, 9999, "year")):
            return False
        return True


def _within(v: int, ranges: list[tuple[int, int]]) -> bool:
    return any(a <= v <= b for a, b in ranges)


def active(intervals: list[TimeInterval], ts: float) -> bool:
    return any(ti.contains(ts) for ti in intervals)
