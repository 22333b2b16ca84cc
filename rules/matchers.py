"""Label matchers in Alertmanager's string form: ``name=value``, ``!=``, ``=~`` and ``!~`` (anchored)."""

from __future__ import annotations

import json
import re

_RE = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$')
OPS = ("=", "!=", "=~", "!~")


class Matcher:
    """One matcher; a missing label reads as ``""`` (as in Alertmanager); regexes match the whole value.

    >>> m = Matcher.parse('namespace=~"kube-.*"')
    >>> m.matches({"namespace": "kube-system"}), m.matches({"namespace": "my-kube-system"})
    (True, False)
    >>> Matcher.parse("env!=prod").matches({})
    True
    >>> Matcher.parse("namespace~kube")
    Traceback (most recent call last):
    ...
    ValueError: invalid matcher "namespace~kube" (use name=value, name!=value, name=~regex, name!~regex)
    """

    __slots__ = ("name", "op", "value", "_re")

    def __init__(self, name: str, op: str, value: str):
        self.name, self.op, self.value = name, op, value
        self._re = None
        if op in ("=~", "!~"):
            try:
                self._re = re.compile(value)
            except re.error as exc:
                raise ValueError(f'invalid regex "{value}" in {self}: {exc}') from None

    @classmethod
    def parse(cls, text) -> Matcher:
        if not isinstance(text, str):
            raise ValueError(f"expected a matcher string like name=\"value\", got {json.dumps(text)}")
        m = _RE.match(text)
        if not m:
            raise ValueError(
                f'invalid matcher {json.dumps(text)} (use name=value, name!=value, name=~regex, name!~regex)')
        name, op, raw = m.groups()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            try:
                raw = json.loads(raw)
            except ValueError:
                raise ValueError(f"invalid quoted value in matcher {json.dumps(text)}") from None
        return cls(name, op, raw)

    def matches(self, labels: dict) -> bool:
        v = labels.get(self.name, "")
        if v.__class__ is not str:
            v = "" if v is None else str(v)  # sloppy inputs (numbers as label values) must not crash a worker
        op = self.op
        if op == "=":
            return v == self.value
        if op == "!=":
            return v != self.value
        hit = self._re.fullmatch(v) is not None
        return hit if op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value)}"

    def __repr__(self) -> str:
        return f"Matcher({self})"
