"""A loaded, validated set of rules, compiled and indexed by what signals can reach them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import orjson

from core.matchers import Matcher
from core.records import SOURCES
from rules.template import Template


@dataclass(slots=True, eq=False)
class CompiledRule:
    """One rule ready for the engine; ``sid`` names its state (alert name + hash of match and condition)."""

    pack: str
    version: str
    alert: str
    on: str  # "event" | "sample"
    cond: object  # a rules.schema condition model
    for_: float
    severity: str
    labels: dict
    annotations: dict[str, Template]
    sources: tuple = ()
    reasons: frozenset | None = None
    kinds: frozenset | None = None
    metrics: tuple = ()
    matchers: tuple[Matcher, ...] = ()
    group_by: tuple[str, ...] = ()
    resolve_reasons: frozenset = frozenset()
    stale_after: float = 300.0
    detector: tuple | None = None  # (type, params) for anomaly rules
    actions: tuple = ()  # rules.schema action models (remediation, opt-in)
    node_condition: object = None  # rules.schema.NodeCondition
    node_event: object = None  # rules.schema.NodeEvent
    file: str = ""
    line: int = 0
    sid: str = ""
    origin: str = ""  # alert.source: pack/rule@version

    def __post_init__(self) -> None:
        cond = self.cond.model_dump(mode="json")
        if cond.get("type") == "event_count" and cond.get("by") is None:
            del cond["by"]  # added later: a rule without it keeps the sid (and the state) it had
        if cond.get("type") == "threshold" and not cond.get("abs"):
            del cond["abs"]  # added later (2026-11-29): likewise
        if cond.get("type") == "threshold" and cond.get("under") is None:
            del cond["under"]  # added later still (2026-11-29, fourth session): likewise
        ident = orjson.dumps({
            "on": self.on, "sources": list(self.sources), "reasons": sorted(self.reasons or ()),
            "kinds": sorted(self.kinds or ()), "metrics": list(self.metrics),
            "matchers": [str(m) for m in self.matchers], "group_by": list(self.group_by),
            "cond": cond, "detector": self.detector,
            "resolve": sorted(self.resolve_reasons),
        }, option=orjson.OPT_SORT_KEYS)
        self.sid = f"{self.alert}#{hashlib.blake2b(ident, digest_size=4).hexdigest()}"
        self.origin = f"{self.pack}/{self.alert}@{self.version}"


@dataclass(slots=True)
class PackInfo:
    name: str
    version: str
    description: str
    file: str
    rules: int


@dataclass(slots=True, eq=False)
class RuleSet:
    """Rules plus the indexes the engine uses: (source, reason) and source for events, name for samples."""

    rules: tuple[CompiledRule, ...]
    packs: tuple[PackInfo, ...] = ()
    by_event: dict = field(default_factory=dict)  # (source, reason) -> rules
    by_source: dict = field(default_factory=dict)  # source -> rules matching any reason
    by_metric: dict = field(default_factory=dict)  # metric name -> rules
    by_sid: dict = field(default_factory=dict)
    digest: str = ""

    def __post_init__(self) -> None:
        ev: dict = {}
        src: dict = {}
        sm: dict = {}
        for r in self.rules:
            self.by_sid[r.sid] = r
            if r.on == "sample":
                for m in r.metrics:
                    sm.setdefault(m, []).append(r)
                continue
            for s in r.sources:
                if r.reasons is None:
                    src.setdefault(s, []).append(r)
                else:
                    for reason in r.reasons:
                        ev.setdefault((s, reason), []).append(r)
            for s in SOURCES:  # a state is cleared by its resolve reasons from any source
                for reason in r.resolve_reasons:
                    if r not in ev.get((s, reason), ()):
                        ev.setdefault((s, reason), []).append(r)
        self.by_event = {k: tuple(v) for k, v in ev.items()}
        self.by_source = {k: tuple(v) for k, v in src.items()}
        self.by_metric = {k: tuple(v) for k, v in sm.items()}
        h = hashlib.blake2b(digest_size=8)
        for r in self.rules:
            h.update(r.sid.encode())
            h.update(r.origin.encode())
        self.digest = h.hexdigest()

    def __len__(self) -> int:
        return len(self.rules)

    @classmethod
    def empty(cls) -> RuleSet:
        return cls(rules=())
