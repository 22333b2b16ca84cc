"""A tight parser for Prometheus text exposition (0.0.4) and OpenMetrics 1.0 pages.

Why not ``prometheus_client.parser``: on the 3.1 MB kube-apiserver page (22,853 samples) it
parses ~38 k samples/s on this machine and builds family objects we would throw away; this
parser yields flat tuples at several times that rate (``kubesight bench metrics`` prints both).
It is checked against prometheus_client sample for sample on every real page in the tests.

A parsed point is ``(name, labels, value, timestamp_seconds_or_None)``; ``parse`` returns them
with the page's family types and the exemplars it saw.  An error names the line.

>>> page = parse('# TYPE x_total counter\\nx_total{a="1",b="q\\\\"z"} 3 1700000000000\\n')
>>> page.points
[('x_total', {'a': '1', 'b': 'q"z'}, 3.0, 1700000000.0)]
>>> page.types
{'x_total': 'counter'}
>>> parse('x{a="1"} one\\n')
Traceback (most recent call last):
...
collectors.metrics.exposition.ExpositionError: line 1: invalid value 'one'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.records import RecordError, check_time

OPENMETRICS = "application/openmetrics-text"
TYPES = ("counter", "gauge", "histogram", "gaugehistogram", "summary", "untyped", "unknown", "info", "stateset")
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,?)\s*')
_UNESCAPE = re.compile(r"\\(.)")
_ESC = {"n": "\n", "\\": "\\", '"': '"'}


class ExpositionError(ValueError):
    """A page that is not valid exposition; the message starts with the line number."""


@dataclass(slots=True)
class Page:
    points: list = field(default_factory=list)  # (name, labels, value, ts | None)
    types: dict = field(default_factory=dict)  # family -> type
    exemplars: int = 0
    openmetrics: bool = False


def _unescape(v: str) -> str:
    return _UNESCAPE.sub(lambda m: _ESC.get(m.group(1), "\\" + m.group(1)), v)


def _slow_labels(line: str, pos: int, ln: int) -> tuple[dict, int]:
    """Labels with escapes or odd spacing, from just after ``{``; returns (labels, index after ``}``)."""
    labels = {}
    n = len(line)
    while True:
        while pos < n and line[pos] in " \t":
            pos += 1
        if pos < n and line[pos] == "}":
            return labels, pos + 1
        m = _LABEL.match(line, pos)
        if not m:
            raise ExpositionError(f"line {ln}: malformed label set near {line[pos:pos + 40]!r}")
        k, v, comma = m.groups()
        if k in labels:
            raise ExpositionError(f"line {ln}: duplicate label {k!r}")
        labels[k] = _unescape(v) if "\\" in v else v
        pos = m.end()
        if not comma and (pos >= n or line[pos] != "}"):
            raise ExpositionError(f"line {ln}: expected ',' or '}}' near {line[pos:pos + 40]!r}")


def _fast_labels(line: str, brace: int):
    """Labels of a line without backslashes (so no value holds a quote); None if unusual."""
    if line[brace + 1:brace + 2] == "}":
        return {}, brace + 2
    end = line.find('"}', brace)
    if end == -1:
        return None, 0
    seg = line[brace + 1:end]
    if "}" in seg:
        return None, 0
    labels = {}
    for item in seg.split('",'):
        k, sep, v = item.partition('="')
        if not sep or '"' in v or not (k.isascii() and k.isidentifier()) or k in labels:  # [a-zA-Z_][a-zA-Z0-9_]*
            return None, 0
        labels[k] = v
    return labels, end + 2


def _value(s: str, ln: int) -> float:
    try:
        if "_" in s or not s.isascii():  # Python's float() reads 1_000 and other scripts' digits; Go's does not
            raise ValueError
        return float(s)
    except ValueError:
        raise ExpositionError(f"line {ln}: invalid value {s!r}") from None


def parse(text: str, *, openmetrics: bool = False) -> Page:
    """Parse a whole page (text format, or OpenMetrics when ``openmetrics``)."""
    page = Page(openmetrics=openmetrics)
    points = page.points
    types = page.types
    append = points.append
    eof = False
    ln = 0
    for line in text.split("\n"):
        ln += 1
        if eof:
            if line:
                raise ExpositionError(f"line {ln}: content after '# EOF'")
            continue
        if not line:
            continue
        if line[0] == "#":
            parts = line.split(None, 3)
            if len(parts) >= 2 and parts[1] == "EOF" and openmetrics:
                eof = True
            elif len(parts) >= 3 and parts[1] == "TYPE":
                if len(parts) != 4 or parts[3].strip() not in TYPES:
                    raise ExpositionError(f"line {ln}: bad TYPE line {line[:80]!r}")
                types[parts[2]] = parts[3].strip()  # typed again: the last one says (Prometheus takes the page;
            continue                                # promtool's lint refuses it)
        brace = line.find("{")
        space = line.find(" ")
        if "\t" in line:  # blanks are spaces or tabs (Prometheus's lexer); a tab inside a label value is not one
            tab = line.find("\t")
            space = tab if space == -1 else min(space, tab)
        if space != -1 and brace != -1 and space < brace and not line[space:brace].strip(" \t"):
            name = line[:space]  # "m {a="1"} 1": blanks between the name and its labels
        elif brace != -1 and (space == -1 or brace < space):
            name = line[:brace]
        else:
            name = None
        if name is not None:
            labels, pos = _fast_labels(line, brace) if "\\" not in line else (None, 0)
            if labels is None:
                labels, pos = _slow_labels(line, brace + 1, ln)
            rest = line[pos:]
        else:
            if space == -1:
                raise ExpositionError(f"line {ln}: no value in {line[:80]!r}")
            name, rest, labels = line[:space], line[space:], {}
        if not _NAME.match(name):
            raise ExpositionError(f"line {ln}: invalid metric name {name[:80]!r}")
        hash_ = rest.find("#")
        if hash_ != -1:
            if not openmetrics:
                raise ExpositionError(f"line {ln}: exemplars are only valid in OpenMetrics")
            ex = rest[hash_ + 1:].strip()
            if not ex.startswith("{") or "}" not in ex:
                raise ExpositionError(f"line {ln}: malformed exemplar {ex[:60]!r}")
            page.exemplars += 1
            rest = rest[:hash_]
        fields = rest.split()
        if not fields or len(fields) > 2:
            raise ExpositionError(f"line {ln}: expected 'value [timestamp]' after the name, got {rest.strip()[:60]!r}")
        value = _value(fields[0], ln)
        ts = None
        if len(fields) == 2:
            try:
                if "_" in fields[1] or not fields[1].isascii():  # as for values: Go reads neither
                    raise ValueError
                ts = float(fields[1]) if openmetrics else int(fields[1]) / 1000.0
            except (ValueError, OverflowError):
                raise ExpositionError(f"line {ln}: invalid timestamp {fields[1]!r}") from None
            try:
                check_time(ts)  # NaN, Inf, or not seconds (ms as s): the page is refused, with why
            except RecordError:
                raise ExpositionError(f"line {ln}: timestamp {fields[1]!r} is not a time of years 1-9999") from None
        append((name, labels, value, ts))  # OpenMetrics' `_created` lines too: Prometheus stores them as series
    if openmetrics and not eof:
        last = ln - 1 if text.endswith("\n") else ln
        raise ExpositionError(f"line {last}: OpenMetrics page without '# EOF'")
    return page
