"""Kernel pattern files: schema, loading with file/line/YAML-path errors, merging, compiled matcher.

>>> ps = load_patterns()
>>> ps.match("unregister_netdevice: waiting for lo to become free. Usage count = 1")[0].reason
'UnregisterNetDevice'
>>> ps.match("IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready") is None
True
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core import yamlconfig
from core.yamlconfig import shown

DEFAULT_FILE = "patterns.yaml"
_REASON = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_LABEL = re.compile(r"^[a-z_][a-z0-9_]*$")


class Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_lines: int = Field(300, ge=1, le=100_000)
    gap_seconds: float = Field(10.0, gt=0)
    idle_seconds: float = Field(2.0, gt=0)
    max_message: int = Field(16384, ge=256)


class XidConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fatal: Literal["catalog"] | list[int] = "catalog"


class Pattern(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    reason: str
    severity: Literal["critical", "warning", "info"]
    match: str
    type: Literal["Warning", "Normal"] = "Warning"
    labels: dict[str, str] = Field(default_factory=dict)
    report: bool = False
    until: str | None = None
    continue_: str | None = Field(None, alias="continue")
    max_lines: int | None = Field(None, ge=1, le=100_000)
    merge: list[str] = Field(default_factory=list)
    enrich: Literal["memcg", "xid", "cper"] | None = None
    idents: list[str] = Field(default_factory=list, description="syslog identifiers whose lines this pattern reads")
    npd: list[str] = Field(default_factory=list)
    examples: list[str] = Field(min_length=1)

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str) -> str:
        if not _REASON.match(v):
            raise ValueError(f"reason {v!r} must be CamelCase letters and digits (like OOMKilling)")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict) -> dict:
        for k in v:
            if not _LABEL.match(k):
                raise ValueError(f"label name {k!r} must be lower_snake_case")
        return v

    @field_validator("match", "until", "continue_")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            rx = re.compile(v)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {v!r}: {exc}") from None
        if "(?P=" in v:
            raise ValueError("back-references (?P=name) are not allowed")
        for name in rx.groupindex:
            if not _LABEL.match(name.rstrip("_")):
                raise ValueError(f"group name {name!r} must be lower_snake_case (it becomes a label)")
        return v


class PatternFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    defaults: Defaults | None = None
    ignore: list[str] = Field(default_factory=list)
    xid: XidConfig | None = None
    patterns: list[Pattern] = Field(default_factory=list)
    replace: list[Pattern] = Field(default_factory=list, description="patterns that replace one with the same id")

    @field_validator("ignore")
    @classmethod
    def _ignore(cls, v: list[str]) -> list[str]:
        for i, rx in enumerate(v):
            try:
                re.compile(rx)
            except re.error as exc:
                raise ValueError(f"ignore[{i}]: invalid regular expression {rx!r}: {exc}") from None
        return v


class Compiled:
    """One pattern, compiled; labels from named groups drop trailing underscores."""

    __slots__ = ("p", "rx", "until", "cont", "merge", "groups", "max_lines", "order")

    def __init__(self, p: Pattern, order: int, defaults: Defaults):
        self.p = p
        self.rx = re.compile(p.match)
        self.until = re.compile(p.until) if p.until else None
        self.cont = re.compile(p.continue_) if p.continue_ else None
        self.merge = frozenset(p.merge)
        self.groups = [(g, g.rstrip("_")) for g in self.rx.groupindex]
        self.max_lines = p.max_lines or defaults.max_lines
        self.order = order

    @property
    def reason(self) -> str:
        return self.p.reason

    def labels(self, m: re.Match) -> dict[str, str]:
        out = {}
        for g, name in self.groups:
            v = m.group(g)
            if v is not None and name not in out:
                out[name] = v.strip()
        return out


class PatternSet:
    """All patterns, in order, with one combined pre-filter so most lines cost a single regex."""

    def __init__(self, patterns: list[Pattern], ignore: list[str], defaults: Defaults, xid: XidConfig,
                 sources: list[str]):
        from collectors.kernel.enrich import XidCatalog

        self.defaults = defaults
        self.xid = xid
        self.xid_catalog = XidCatalog.load()
        self.sources = sources
        self.patterns = [Compiled(p, i, defaults) for i, p in enumerate(patterns)]
        self.ignore = re.compile("|".join(f"(?:{_scoped(rx)})" for rx in ignore)) if ignore else None
        # Which patterns read which lines: kernel lines -> patterns without `idents`; lines of another
        # program (syslog/journal identifier) -> patterns naming it; lines of unknown origin -> all.
        self.kernel = [c for c in self.patterns if not c.p.idents]
        self.by_ident: dict[str, list[Compiled]] = {}
        for c in self.patterns:
            for ident in c.p.idents:
                self.by_ident.setdefault(ident, []).append(c)
        self.any_all = _prefilter(self.patterns)
        self.any_kernel = _prefilter(self.kernel)

    def match(self, text: str, ident: str = "") -> tuple[Compiled, re.Match] | None:
        """First pattern matching the message (anchored at its start), or None.

        ``ident`` is the syslog identifier of the line ("kernel", "dockerd", ...; "" if unknown).
        """
        if not ident:
            pats, pre = self.patterns, self.any_all
        elif ident == "kernel":
            pats, pre = self.kernel, self.any_kernel
        else:
            pats, pre = self.by_ident.get(ident), None
            if not pats:
                return None
        if pre is not None and not pre.match(text):
            return None
        if self.ignore is not None and self.ignore.match(text):
            return None
        for c in pats:
            m = c.rx.match(text)
            if m:
                return c, m
        return None

    def reasons(self) -> set[str]:
        return {c.reason for c in self.patterns}


_GLOBAL_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")


def _scoped(rx: str) -> str:
    """A pattern that opens with global flags (``(?i)oops``) as the same pattern with scoped ones (``(?i:oops)``):
    global flags are allowed only at the start of a whole expression, so joined with others they failed to compile.

    >>> _scoped("(?i)gpu has fallen"), _scoped("plain"), _scoped("(?x)a  # note")
    ('(?i:gpu has fallen)', 'plain', '(?x:a  # note\\n)')
    """
    m = _GLOBAL_FLAGS.match(rx)
    if not m:
        return rx
    rest = rx[m.end():]
    return f"(?{m.group(1)}:{rest}\n)" if "x" in m.group(1) else f"(?{m.group(1)}:{rest})"


def _prefilter(patterns: list[Compiled]) -> re.Pattern:
    """Every `match` with its groups made non-capturing, in one alternation: most lines cost one regex."""
    plain = [_scoped(re.sub(r"\(\?P<\w+>", "(?:", c.p.match)) for c in patterns]
    return re.compile("|".join(f"(?:{rx})" for rx in plain)) if plain else re.compile(r"(?!)")


# ---------------------------------------------------------------- loading


def _read(doc: yamlconfig.Document) -> PatternFile | None:
    """Validate one pattern file; problems (schema and checks across its patterns) go to ``doc``."""
    pf = doc.validate(PatternFile)
    if pf is None:
        return None
    seen: dict[str, int] = {}
    for key in ("patterns", "replace"):
        for i, p in enumerate(getattr(pf, key)):
            if key == "patterns":
                if p.id in seen:
                    doc.error((key, i, "id"), f"duplicate id {shown(p.id)} (first at {key}[{seen[p.id]}])")
                seen[p.id] = i
            if p.continue_ and not p.report:
                doc.error((key, i, "continue"), "only a report (report: true) has continuation lines")
            if p.until and not p.report:
                doc.error((key, i, "until"), "only a report (report: true) has an end line")
            rx = re.compile(p.match)
            for j, ex in enumerate(p.examples):
                if not rx.match(ex):
                    doc.error((key, i, "examples", j), f"example does not match this pattern's 'match': {shown(ex)}")
    return pf


def load_patterns(*paths: str | Path, defaults_file: bool = True, xid_fatal: list[int] | None = None) -> PatternSet:
    """The shipped patterns, then each file in ``paths``; raises ConfigError listing every problem."""
    docs: list[yamlconfig.Document] = []
    if defaults_file:
        text = resources.files("collectors.kernel").joinpath(DEFAULT_FILE).read_text()
        docs.append(yamlconfig.parse(text, f"collectors/kernel/{DEFAULT_FILE}"))
    docs += [yamlconfig.read(p) for p in paths]
    files = [(doc, _read(doc)) for doc in docs]
    patterns: list[Pattern] = []
    ignore: list[str] = []
    defaults = Defaults()
    xid = XidConfig()
    for doc, pf in files:
        if pf is None:
            continue
        ids = {p.id: i for i, p in enumerate(patterns)}
        earlier = set(ids)  # a repeat within the file is _read's "duplicate id"
        for i, p in enumerate(pf.patterns):
            if p.id in earlier:
                doc.error(("patterns", i, "id"), f"id {shown(p.id)} already exists (use 'replace:' to change it)")
                continue
            ids[p.id] = len(patterns)
            patterns.append(p)
        for i, p in enumerate(pf.replace):
            if p.id not in ids:
                doc.error(("replace", i, "id"), f"no earlier pattern has id {shown(p.id)}")
                continue
            patterns[ids[p.id]] = p
        ignore += pf.ignore
        if pf.defaults is not None:
            defaults = pf.defaults
        if pf.xid is not None:
            xid = pf.xid
    yamlconfig.raise_for(docs)
    if xid_fatal is not None:
        xid = XidConfig(fatal=list(xid_fatal))
    return PatternSet(patterns, ignore, defaults, xid, [d.source for d in docs])
