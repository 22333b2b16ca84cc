"""Prometheus-style durations (``30s``, ``5m``, ``1h30m``, ``2d``) to float seconds and back.

>>> parse("1h30m"), parse("250ms"), parse("0s")
(5400.0, 0.25, 0.0)
>>> format(5400.0), format(0.25)
('1h30m', '250ms')
>>> parse("5 min")
Traceback (most recent call last):
...
ValueError: invalid duration '5 min' (use 30s, 5m, 1h30m)
"""

from __future__ import annotations

import re

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_WHOLE = re.compile(r"(?:\d+(?:ms|s|m|h|d|w|y))+")


def parse(text) -> float:
    if isinstance(text, int | float) and not isinstance(text, bool) and text >= 0:
        return float(text)
    if not isinstance(text, str) or not _WHOLE.fullmatch(text):
        raise ValueError(f"invalid duration {text!r} (use 30s, 5m, 1h30m)")
    return sum(int(n) * UNITS[u] for n, u in _PART.findall(text))


def format(seconds: float) -> str:
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
