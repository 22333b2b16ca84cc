"""Durations in Prometheus's grammar (``30s``, ``5m``, ``1h30m``, ``250ms``, ``1y``) as float seconds, and back.

Units ``y w d h m s ms``, each at most once, largest first, whole numbers only; ``"0"`` (or a YAML
``0``) is zero.  Anything else is refused with a message quoting the text:

>>> parse_duration("1h30m"), parse_duration("250ms"), parse_duration("1y"), parse_duration(0)
(5400.0, 0.25, 31536000.0, 0.0)
>>> parse_duration("5m1h")
Traceback (most recent call last):
...
ValueError: invalid duration "5m1h" (use e.g. 30s, 5m, 1h30m)
>>> format_duration(5400), format_duration(0.25), format_duration(604800), format_duration(0)
('1h30m', '250ms', '1w', '0s')

In a pydantic model, ``Duration`` is a float of seconds read from such a string.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

# (unit, milliseconds), largest first: the order the grammar requires and the formatter writes
UNITS = (("y", 31_536_000_000), ("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000),
         ("s", 1000), ("ms", 1))
_GRAMMAR = re.compile("".join(rf"(?:(\d+){u})?" for u, _ in UNITS))
HINT = "use e.g. 30s, 5m, 1h30m"
# Prometheus and Alertmanager hold a duration in Go's time.Duration (int64 nanoseconds) and refuse a longer one; so
# does this parser: a config means the same here and there, and times it is added to stay in years 1-9999
MAX_MS = (2**63 - 1) // 1_000_000


def parse_duration(text) -> float:
    """One duration string -> float seconds; ValueError quoting the text otherwise.

    >>> [parse_duration(t) for t in ("0", "1s", "1m1s", "2d12h", "1w", "90m")]
    [0.0, 1.0, 61.0, 216000.0, 604800.0, 5400.0]
    >>> parse_duration("292y")
    9208512000.0
    >>> parse_duration("293y")
    Traceback (most recent call last):
    ...
    ValueError: duration "293y" is too long (at most 292y24w3d23h47m16s854ms)
    >>> for bad in ("", "1s1s", "1.5m", "-5", 5, -5, True, "5 min", "1h 30m", "5M"):
    ...     try:
    ...         parse_duration(bad)
    ...     except ValueError as exc:
    ...         print(exc)
    invalid duration "" (use e.g. 30s, 5m, 1h30m)
    invalid duration "1s1s" (use e.g. 30s, 5m, 1h30m)
    invalid duration "1.5m" (use e.g. 30s, 5m, 1h30m)
    invalid duration "-5" (use e.g. 30s, 5m, 1h30m)
    invalid duration "5" (use e.g. 30s, 5m, 1h30m)
    invalid duration "-5" (use e.g. 30s, 5m, 1h30m)
    invalid duration "true" (use e.g. 30s, 5m, 1h30m)
    invalid duration "5 min" (use e.g. 30s, 5m, 1h30m)
    invalid duration "1h 30m" (use e.g. 30s, 5m, 1h30m)
    invalid duration "5M" (use e.g. 30s, 5m, 1h30m)
    """
    if text.__class__ is str:
        if text == "0":
            return 0.0
        m = _GRAMMAR.fullmatch(text)
        if m is not None and text:
            # a number of more than 19 digits is too long in any unit (and int() refuses one of thousands)
            ms = sum(int(n) * size if len(n.lstrip("0")) < 20 else MAX_MS + 1
                     for n, (_, size) in zip(m.groups(), UNITS, strict=True) if n)
            if ms > MAX_MS:
                raise ValueError(f"duration {json.dumps(text[:40] + ('...' if len(text) > 40 else ''))} is too long "
                                 f"(at most {format_duration(MAX_MS / 1000)})")
            return ms / 1000
    elif text == 0 and text.__class__ in (int, float):  # YAML's bare 0
        return 0.0
    shown = text if isinstance(text, str) else json.dumps(text, default=str)
    raise ValueError(f'invalid duration {json.dumps(shown)} ({HINT})')


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest Prometheus spelling (rounded to the millisecond; ``0s`` for zero).

    >>> [format_duration(s) for s in (90, 3600, 86400 * 365 + 1, 1.5, 0.0004, -60)]
    ['1m30s', '1h', '1y1s', '1s500ms', '0s', '-1m']
    >>> all(parse_duration(format_duration(s)) == s for s in (1, 61, 5400, 0.25, 694861.001))
    True
    """
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    out = []
    for unit, size in UNITS:
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return sign + "".join(out)


Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str, when_used="json")]
"""A pydantic field of float seconds, written in the config as a duration string (and dumped to JSON as one)."""
