"""Label matchers with Alertmanager's semantics: ``=``, ``!=``, ``=~``, ``!~``; regexes are RE2 and fully anchored.

A missing label reads as ``""``; a label value that is not a string (``code: 500`` from YAML or
JSON) is matched as its JSON text (``"500"``, ``"true"``; ``null`` reads as missing):

>>> m = parse_matcher('namespace=~"kube-.*"')
>>> m.matches({"namespace": "kube-system"}), m.matches({"namespace": "my-kube-system"})
(True, False)
>>> parse_matcher('env=~prod').matches({"env": "production"})     # anchored: prod is not production
False
>>> parse_matcher("env!=prod").matches({})                          # a missing label is ""
True
>>> parse_matcher("code=~5..").matches({"code": 500}), parse_matcher("code=500").matches({"code": 500})
(True, True)

Alertmanager's string forms, as its config files hold them: one matcher, or several in braces
(or separated by commas); a quoted value may escape ``\\"``, ``\\\\`` and ``\\n``:

>>> parse_matchers('{owner="team-C", severity=~"critical|warning"}')
[Matcher(owner="team-C"), Matcher(severity=~"critical|warning")]
>>> str(parse_matcher(r'msg="say \\"hi\\", then go"'))
'msg="say \\\\"hi\\\\", then go"'

Regexes have RE2's syntax and cost (linear in the input): ``\\p{Lu}`` works, lookaround and
backreferences are refused, as Alertmanager refuses them:

>>> parse_matcher(r'team=~"\\p{Lu}.*"').matches({"team": "Infra"})
True
>>> parse_matcher('a=~"(x)\\\\1"')
Traceback (most recent call last):
...
core.matchers.MatcherError: invalid regex "(x)\\\\1" in matcher a=~"(x)\\\\1": invalid escape sequence: \\1
>>> parse_matcher("namespace~kube")
Traceback (most recent call last):
...
core.matchers.MatcherError: invalid matcher "namespace~kube" (use name=value, name!=value, name=~regex, name!~regex)
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any

import re2
from pydantic import AfterValidator, BeforeValidator, PlainSerializer

OPS = ("=", "!=", "=~", "!~")
USE = "use name=value, name!=value, name=~regex, name!~regex"
# Alertmanager's matcher syntax (pkg/labels/parse.go): name, operator, the rest (trimmed) is the value
_SYNTAX = re.compile(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|=|!=|!~)\s*(.*?)\s*", re.S)
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_CACHE = 1024  # remembered regex answers per matcher: label values repeat, and RE2 from Python costs ~2 us a call


def _options() -> re2.Options:
    o = re2.Options()
    o.log_errors = False  # the error goes into our message, not to stderr
    o.never_capture = True
    return o


_RE2 = _options()


class MatcherError(ValueError):
    """A matcher that does not parse or whose regex RE2 refuses."""


def as_text(value) -> str:
    """A label value as matchers see it: strings as they are, other values as their JSON text, None as "".

    >>> as_text("a"), as_text(500), as_text(True), as_text(0.5), as_text(None)
    ('a', '500', 'true', '0.5', '')
    """
    if value.__class__ is str:
        return value
    return "" if value is None else json.dumps(value, default=str)


class Matcher:
    """One compiled matcher; ``matches(labels)`` is the hot-path call."""

    __slots__ = ("name", "op", "value", "_hit", "_want")

    def __init__(self, name: str, op: str, value: str):
        if op not in OPS:
            raise MatcherError(f"invalid operator {json.dumps(op)} in matcher (one of {', '.join(OPS)})")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise MatcherError(f"invalid label name {json.dumps(name, default=str)} in matcher "
                               "(use letters, digits and _, not starting with a digit)")
        if not isinstance(value, str):
            raise MatcherError(f"invalid value {json.dumps(value, default=str)} in matcher {name}{op} (expected a string)")
        self.name, self.op, self.value = name, op, value
        self._want = op == "=~"
        self._hit = None
        if op in ("=~", "!~"):
            self._hit = _compile(value, self)

    def matches(self, labels: dict) -> bool:
        v = labels.get(self.name, "")
        if v.__class__ is not str:
            v = as_text(v)
        op = self.op
        if op == "=":
            return v == self.value
        if op == "!=":
            return v != self.value
        return self._hit(v) is self._want

    def __eq__(self, other) -> bool:
        return isinstance(other, Matcher) and (self.name, self.op, self.value) == (other.name, other.op, other.value)

    def __hash__(self) -> int:
        return hash((self.name, self.op, self.value))

    def __reduce__(self):
        return Matcher, (self.name, self.op, self.value)

    @classmethod
    def from_api(cls, d: Mapping) -> Matcher:
        """From Alertmanager's API shape ``{name, value, isRegex, isEqual}`` (isEqual defaults to true).

        >>> Matcher.from_api({"name": "a", "value": "x|y", "isRegex": True, "isEqual": False})
        Matcher(a!~"x|y")
        >>> Matcher.from_api({"name": "a", "value": "x|y", "isRegex": True, "isEqual": False}).to_api()
        {'name': 'a', 'value': 'x|y', 'isRegex': True, 'isEqual': False}
        """
        regex, equal = bool(d.get("isRegex", False)), bool(d.get("isEqual", True))
        return cls(d.get("name"), ("=~" if regex else "=") if equal else ("!~" if regex else "!="), d.get("value"))

    def to_api(self) -> dict:
        return {"name": self.name, "value": self.value, "isRegex": self.op in ("=~", "!~"),
                "isEqual": self.op in ("=", "=~")}

    def __str__(self) -> str:
        """Alertmanager's spelling, which ``parse_matcher`` reads back."""
        return f"{self.name}{self.op}{quote(self.value)}"

    def __repr__(self) -> str:
        return f"Matcher({self})"


def _go_refuses(pattern: str) -> str | None:
    r"""What Go's regexp (Alertmanager's) refuses and RE2 takes: ``\C`` (any byte) and ``(?<name>...)`` (Go 1.22
    takes it; Alertmanager 0.25's Go does not).  Escapes, ``\Q...\E`` and character classes are skipped.

    >>> _go_refuses(r"a\Cb"), _go_refuses(r"(?<n>x)"), _go_refuses(r"\\C[(?<]\Q(?<\E(?P<n>x)")
    ('invalid escape sequence: \\C', 'invalid or unsupported Perl syntax: (?<', None)
    """
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1:i + 2]
            if nxt == "Q":
                end = pattern.find("\\E", i + 2)
                if end < 0:
                    return None
                i = end + 2
                continue
            if nxt == "C":
                return "invalid escape sequence: \\C"
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class, i = True, i + 1
            i += pattern[i:i + 1] == "^"
            i += pattern[i:i + 1] == "]"  # a "]" first in a class is itself
            continue
        elif pattern.startswith("(?<", i):
            return "invalid or unsupported Perl syntax: (?<"
        i += 1
    return None


class RegexError(ValueError):
    """A regex Go's regexp (Prometheus', Alertmanager's) would refuse; the message says why."""


def full_match(pattern: str) -> Callable[[str], bool]:
    """The one regex of kubesight's configs, as Prometheus and Alertmanager read theirs: Go's syntax (RE2), the whole
    value matched (``^(?:pattern)$``).  Matchers, routing files and the metrics collector's relabelling use it.
    Raises ``RegexError``.

    >>> m = full_match("[[:digit:]]00|a.*")
    >>> m("500"), m("5000"), m("abc")
    (True, False, True)
    """
    go = _go_refuses(pattern)
    if go is not None:
        raise RegexError(go)
    try:
        re2.compile(pattern, _RE2)
    except re2.error as exc:
        try:  # Alertmanager compiles the wrapped form: a pattern like "a)(b" is valid there
            re2.compile(f"(?:{pattern})", _RE2)
        except re2.error:
            raise RegexError(_why(exc)) from None
    rx = re2.Set.FullMatchSet(_RE2)
    try:
        rx.Add(f"(?:{pattern})")
    except re2.error as exc:  # \Q( compiles alone and not wrapped: invalid as Alertmanager compiles it
        raise RegexError(_why(exc)) from None
    rx.Compile()
    return functools.lru_cache(maxsize=_CACHE)(lambda v: rx.Match(v) is not None)


def _why(exc: Exception) -> str:
    return exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)


def _compile(pattern: str, m: Matcher):
    try:
        return full_match(pattern)
    except RegexError as exc:
        raise MatcherError(f"invalid regex {json.dumps(pattern)} in matcher {m}: {exc}") from None


def quote(value: str) -> str:
    """A value in double quotes with Alertmanager's escapes (``\\\\``, ``\\"``, ``\\n``).

    >>> print(quote('a "b" \\\\ c'))
    "a \\"b\\" \\\\ c"
    """
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def parse_matcher(text) -> Matcher:
    """One matcher in Alertmanager's syntax: ``name<op>value``, the value bare or double-quoted."""
    if not isinstance(text, str):
        raise MatcherError(f'expected a matcher string like name="value", got {json.dumps(text, default=str)}')
    m = _SYNTAX.fullmatch(text)
    if not m:
        raise MatcherError(f"invalid matcher {json.dumps(text)} ({USE})")
    name, op, raw = m.groups()
    quoted = raw.startswith('"')
    if quoted:
        raw = raw[1:]
    out, escaped, last = [], False, len(raw) - 1
    for i, c in enumerate(raw):  # Alertmanager's unescaping, rule for rule
        if escaped:
            escaped = False
            out.append({"n": "\n", '"': '"', "\\": "\\"}.get(c, "\\" + c))  # a spurious escape stays literal
        elif c == "\\" and i < last:
            escaped = True
        elif c == '"':
            if not quoted or i < last:
                raise MatcherError(f'invalid matcher {json.dumps(text)} (a double quote in the value must be escaped: \\")')
            quoted = False
        else:
            out.append(c)
    if quoted:
        raise MatcherError(f"invalid matcher {json.dumps(text)} (the value's closing double quote is missing)")
    return Matcher(name, op, "".join(out))


def parse_matchers(text) -> list[Matcher]:
    """Matchers in braces or separated by commas, as one entry of an Alertmanager ``matchers`` list.

    >>> parse_matchers('a="x,y",b!~"z"'), parse_matchers("{}"), parse_matchers('single="one"')
    ([Matcher(a="x,y"), Matcher(b!~"z")], [], [Matcher(single="one")])
    """
    if not isinstance(text, str):
        return [parse_matcher(text)]
    text = text.removeprefix("{").removesuffix("}")
    tokens, token, in_quotes, escaped = [], [], False, False
    for c in text:  # split at commas outside double quotes (Alertmanager's ParseMatchers)
        if c == "," and not in_quotes:
            tokens.append("".join(token))
            token = []
            continue
        if c == '"':
            if escaped:
                escaped = False
            else:
                in_quotes = not in_quotes
        elif c == "\\":
            escaped = not escaped
        else:
            escaped = False
        token.append(c)
    last = "".join(token).strip()
    if last:
        tokens.append(last)
    return [parse_matcher(t) for t in tokens]


def matches_all(matchers: Iterable[Matcher], labels: dict) -> bool:
    """True when every matcher matches (so no matchers match everything)."""
    for m in matchers:
        if not m.matches(labels):
            return False
    return True


def _flatten(entries: list[list[Matcher]]) -> tuple[Matcher, ...]:
    return tuple(m for entry in entries for m in entry)


Matchers = Annotated[
    list[Annotated[Any, BeforeValidator(parse_matchers)]],
    AfterValidator(_flatten),
    PlainSerializer(lambda ms: [str(m) for m in ms], return_type=list[str]),
]
"""A pydantic field: a list of matcher strings (each entry may hold several) -> a tuple of Matchers."""
