"""Durations in rule packs (``30s``, ``5m``, ``1h30m``, ``2d``) as float seconds."""

from __future__ import annotations

import re

_RE = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_UNITS = (604800.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)


def parse_duration(text) -> float:
    """``"1h30m"`` -> 5400.0; ``0`` is allowed; anything else raises ValueError with a hint.

    >>> parse_duration("1h30m"), parse_duration("45s"), parse_duration(0)
    (5400.0, 45.0, 0.0)
    >>> parse_duration("5 min")
    Traceback (most recent call last):
    ...
    ValueError: invalid duration "5 min" (use 5m, 1h30m)
    """
    if text == 0 and not isinstance(text, bool):
        return 0.0
    m = _RE.match(text) if isinstance(text, str) and text else None
    if not m or not any(m.groups()):
        shown = f'"{text}"' if isinstance(text, str) else repr(text)
        raise ValueError(f"invalid duration {shown} (use 5m, 1h30m)")
    return sum(int(g) * u for g, u in zip(m.groups(), _UNITS, strict=True) if g)


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest pack spelling.

    >>> format_duration(5400), format_duration(0), format_duration(90.5)
    ('1h30m', '0s', '1m30s')
    """
    s = int(round(seconds))
    if s <= 0:
        return "0s"
    out = []
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        q, s = divmod(s, n)
        if q:
            out.append(f"{q}{unit}")
    return "".join(out)
