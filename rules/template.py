"""Annotation templates: ``{{ labels.pod }}``, ``{{ value }}``, ``{{ value | percent }}``; no code runs.

The mapping is fixed: ``labels.NAME`` (the alert's labels, then the signal's), ``value``,
``score``, ``count``, ``message`` (the last event's message); for anomaly conditions also
``expected_low`` / ``expected_high`` (the range the value was expected in), ``since`` (UTC: the
first anomalous point of the episode; else when the condition began to hold) and ``feature``
(anomaly_vector: the metric furthest from what the others predict; ``value`` is its value);
filters: ``percent``, ``bytes``, ``duration``, ``int``; ``firstline`` (text: its first non-empty line, at most
``FIRSTLINE`` characters, so a summary stays one line when the message is a whole kernel report or a probe's trace).

>>> t = Template("{{ labels.pod }} used {{ value | percent }} of its limit")
>>> t.render({"pod": "cart-1"}, value=0.934)
'cart-1 used 93.4% of its limit'
>>> Template("oops: {{ message | firstline }}").render({}, message="\\nBUG: NULL pointer\\nModules linked in: x")
'oops: BUG: NULL pointer'
>>> Template("{{ value.x }}")
Traceback (most recent call last):
...
ValueError: unknown template field "value.x" (use labels.NAME, value, score, count, message, expected_low, expected_high, since, feature)
"""

from __future__ import annotations

import datetime
import math
import re

from core.durations import format_duration

_FIELD = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(?:\|\s*([a-z]+)\s*)?\}\}")
FIELDS = ("value", "score", "count", "message", "expected_low", "expected_high", "since", "feature")
FILTERS = ("percent", "bytes", "duration", "int", "firstline")
FIRSTLINE = 200


def _num(v) -> str:
    if v is None:
        return ""
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e15):
        return str(int(v))
    return f"{v:.4g}"


def _iso(v: float) -> str:
    """Epoch seconds as ``2026-01-02T03:04:05Z``."""
    return datetime.datetime.fromtimestamp(v, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bytes(v) -> str:
    if v is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{v:.3g}{unit}" if unit != "B" else f"{int(v)}B"
        v /= 1024.0
    return str(v)  # pragma: no cover


def _firstline(v) -> str:
    line = next((x.strip() for x in str(v).splitlines() if x.strip()), "") if v is not None else ""
    return line if len(line) <= FIRSTLINE else line[:FIRSTLINE - 1] + "…"


def _apply(flt: str | None, v) -> str:
    if flt == "firstline":
        return _firstline(v)
    if flt is None:
        return _num(v) if isinstance(v, int | float) else ("" if v is None else str(v))
    if not isinstance(v, int | float):
        return "" if v is None else str(v)
    if not math.isfinite(v):  # +Inf (a histogram's top bucket, a counter gone wild) and NaN are shown as they are
        return _num(v) if flt != "percent" else f"{v}%"
    if flt == "percent":
        return f"{v * 100:.1f}%"
    if flt == "bytes":
        return _bytes(v)
    if flt == "duration":  # a display: whole seconds from one second up
        return format_duration(v if abs(v) < 1 else round(v))
    return str(int(v))


class Template:
    """A parsed template: literal pieces and fields, rendered without any evaluation."""

    __slots__ = ("text", "_parts", "_const")

    def __init__(self, text: str):
        if not isinstance(text, str):
            raise ValueError("expected a string")
        self.text = text
        parts: list = []
        pos = 0
        for m in _FIELD.finditer(text):
            name, flt = m.group(1), m.group(2)
            if name not in FIELDS and not (name.startswith("labels.") and name.count(".") == 1 and len(name) > 7):
                raise ValueError(f'unknown template field "{name}" (use labels.NAME, {", ".join(FIELDS)})')
            if flt is not None and flt not in FILTERS:
                raise ValueError(f'unknown template filter "{flt}" (use {", ".join(FILTERS)})')
            parts.append(text[pos:m.start()])
            parts.append((name, flt))
            pos = m.end()
        parts.append(text[pos:])
        for lit in parts:
            if isinstance(lit, str) and ("{{" in lit or "}}" in lit):
                at = lit.find("{{") if "{{" in lit else lit.find("}}")
                raise ValueError(f'malformed template near "{lit[at:at + 30]}" '
                                 "(use {{ labels.NAME }}, {{ value }}, {{ value | percent }})")
        # (what, name, filter): what is "" for literal text (in name), "labels" for a label (its name), else the field
        self._parts = tuple(("", p, None) if isinstance(p, str) else
                            ("labels", p[0][7:], None) if p[0].startswith("labels.") else (p[0], p[0], p[1])
                            for p in parts if p != "")
        self._const = text if not any(what for what, _, _ in self._parts) else None  # no field: the text as it is

    def render(self, labels: dict, value=None, score=None, count=None, message: str = "", **extra) -> str:
        """``extra``: the anomaly fields (expected_low, expected_high, since: epoch seconds, feature)."""
        if self._const is not None:
            return self._const
        out = []
        for what, name, flt in self._parts:
            if not what:
                out.append(name)
            elif what == "labels":
                out.append(str(labels.get(name, "")))
            elif what == "since":
                v = extra.get("since")
                out.append(_apply(flt, v) if flt or v is None else _iso(v))
            else:
                v = (value if what == "value" else message if what == "message" else count if what == "count"
                     else score if what == "score" else extra.get(what))
                out.append(_apply(flt, v))
        return "".join(out)
