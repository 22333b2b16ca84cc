"""Label matchers ``= != =~ !~`` in Alertmanager's string syntax, regexes anchored at both ends.

>>> m = parse('severity=~"warning|critical"')
>>> m.matches({"severity": "critical"}), m.matches({"severity": "critical2"})
(True, False)
>>> parse("namespace!=kube-system").matches({})   # a missing label has the value ""
True
>>> parse('env=~prod').matches({"env": "production"})   # anchored: prod is not production
False
>>> str(parse("team = a"))
'team="a"'
>>> parse("team")
Traceback (most recent call last):
...
alerts.matchers.MatcherError: invalid matcher 'team' (use name=value, name!=value, name=~regex or name!~regex)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

OPS = ("=~", "!~", "!=", "=")
_SYNTAX = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*')


class MatcherError(ValueError):
    """A matcher string that does not parse or whose regex does not compile."""


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: str
    value: str
    regex: re.Pattern | None = field(default=None, compare=False, repr=False)

    def matches(self, labels: dict) -> bool:
        v = labels.get(self.name, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = self.regex.fullmatch(v) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{_quote(self.value)}"


def _quote(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(v: str) -> str:
    if len(v) >= 2 and v[0] == v[-1] == '"':
        return re.sub(r'\\(.)', r'\1', v[1:-1])
    return v


def make(name: str, op: str, value: str) -> Matcher:
    """Build a matcher, compiling (and anchoring) its regex."""
    if op not in OPS:
        raise MatcherError(f"invalid operator {op!r} (one of {', '.join(OPS)})")
    regex = None
    if op in ("=~", "!~"):
        try:
            regex = re.compile(f"(?:{value})")
        except re.error as exc:
            raise MatcherError(f"invalid regex {value!r} in matcher {name}{op}: {exc}") from None
    return Matcher(name, op, value, regex)


def parse(text: str) -> Matcher:
    """``name<op>value`` with an optional double-quoted value."""
    m = _SYNTAX.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise MatcherError(f"invalid matcher {text!r} (use name=value, name!=value, name=~regex or name!~regex)")
    return make(m.group(1), m.group(2), _unquote(m.group(3)))


def matches_all(matchers, labels: dict) -> bool:
    return all(m.matches(labels) for m in matchers)
