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

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_FILE = "patterns.yaml"
ENRICHERS = ("memcg", "xid", "cper")
_REASON = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_LABEL = re.compile(r"^[a-z_][a-z0-9_]*$")


class PatternError(ValueError):
    """Every problem found in the pattern files, one per line: ``file:line: path: message``."""


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
        self.ignore = re.compile("|".join(f"(?:{rx})" for rx in ignore)) if ignore else None
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


def _prefilter(patterns: list[Compiled]) -> re.Pattern:
    """Every `match` with its groups made non-capturing, in one alternation: most lines cost one regex."""
    plain = [re.sub(r"\(\?P<\w+>", "(?:", c.p.match) for c in patterns]
    return re.compile("|".join(f"(?:{rx})" for rx in plain)) if plain else re.compile(r"(?!)")


# ---------------------------------------------------------------- loading


def _lines(node, path=()) -> dict[tuple, int]:
    """YAML node tree -> {path: 1-based line} for every mapping key and sequence item."""
    out = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            out[path + (k.value,)] = k.start_mark.line + 1
            out.update({p: ln for p, ln in _lines(v, path + (k.value,)).items() if p != path + (k.value,)})
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(_lines(v, path + (i,)))
    return out


def _where(lines: dict, loc: tuple) -> tuple[int, str]:
    loc = tuple("continue" if x == "continue_" else x for x in loc)
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]], _path(loc)
    return 1, _path(loc)


def _path(loc) -> str:
    s = ""
    for x in loc:
        s += f"[{x}]" if isinstance(x, int) else (f".{x}" if s else str(x))
    return s or "(top)"


def _read(text: str, name: str, errors: list[str]) -> PatternFile | None:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        errors.append(f"{name}:{mark.line + 1 if mark else 1}: (yaml): {getattr(exc, 'problem', None) or exc}")
        return None
    if not isinstance(data, dict):
        errors.append(f"{name}:1: (top): a pattern file is a mapping with 'version: 1' and 'patterns:'")
        return None
    lines = _lines(node)
    try:
        pf = PatternFile.model_validate(data)
    except ValidationError as exc:
        for e in exc.errors():
            line, path = _where(lines, tuple(e["loc"]))
            msg = e["msg"].removeprefix("Value error, ")
            errors.append(f"{name}:{line}: {path}: {msg}")
        return None
    # Checks across patterns of this file.
    seen: dict[str, int] = {}
    for key in ("patterns", "replace"):
        for i, p in enumerate(getattr(pf, key)):
            line = lines.get((key, i), 1)
            if key == "patterns":
                if p.id in seen:
                    errors.append(f"{name}:{line}: {key}[{i}].id: duplicate id {p.id!r} (first at {key}[{seen[p.id]}])")
                seen[p.id] = i
            if p.continue_ and not p.report:
                errors.append(f"{name}:{lines.get((key, i, 'continue'), line)}: {key}[{i}].continue: "
                              "only a report (report: true) has continuation lines")
            if p.until and not p.report:
                errors.append(f"{name}:{lines.get((key, i, 'until'), line)}: {key}[{i}].until: "
                              "only a report (report: true) has an end line")
            rx = re.compile(p.match)
            for j, ex in enumerate(p.examples):
                if not rx.match(ex):
                    errors.append(f"{name}:{lines.get((key, i, 'examples', j), line)}: {key}[{i}].examples[{j}]: "
                                  f"example does not match this pattern's 'match': {ex!r}")
    return pf


def load_patterns(*paths: str | Path, defaults_file: bool = True, xid_fatal: list[int] | None = None) -> PatternSet:
    """The shipped patterns, then each file in ``paths``; raises PatternError listing every problem."""
    errors: list[str] = []
    files: list[tuple[str, PatternFile | None]] = []
    if defaults_file:
        text = resources.files("collectors.kernel").joinpath(DEFAULT_FILE).read_text()
        files.append((f"<package>/collectors/kernel/{DEFAULT_FILE}", _read(text, f"collectors/kernel/{DEFAULT_FILE}", errors)))
    for p in paths:
        try:
            text = Path(p).read_text()
        except OSError as exc:
            errors.append(f"{p}:1: (file): cannot read: {exc.strerror or exc}")
            continue
        files.append((str(p), _read(text, str(p), errors)))
    patterns: list[Pattern] = []
    ignore: list[str] = []
    defaults = Defaults()
    xid = XidConfig()
    for name, pf in files:
        if pf is None:
            continue
        ids = {p.id: i for i, p in enumerate(patterns)}
        for p in pf.patterns:
            if p.id in ids:
                errors.append(f"{name}: patterns: id {p.id!r} already exists (use 'replace:' to change it)")
                continue
            ids[p.id] = len(patterns)
            patterns.append(p)
        for p in pf.replace:
            if p.id not in ids:
                errors.append(f"{name}: replace: no earlier pattern has id {p.id!r}")
                continue
            patterns[ids[p.id]] = p
        ignore += pf.ignore
        if pf.defaults is not None:
            defaults = pf.defaults
        if pf.xid is not None:
            xid = pf.xid
    if errors:
        raise PatternError("invalid kernel pattern file(s):\n" + "\n".join(errors))
    if xid_fatal is not None:
        xid = XidConfig(fatal=list(xid_fatal))
    return PatternSet(patterns, ignore, defaults, xid, [n for n, _ in files])
