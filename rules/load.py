"""Load rule packs from YAML: every error at once, each naming file, line, YAML path and what is expected.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "x.yaml").write_text('''apiVersion: kubesight.io/v1
... kind: RulePack
... metadata: {name: x, version: "1"}
... rules:
...   - alert: A
...     match: {source: k8s, reason: BackOff}
...     condition: {type: event_count}
...     for: 5 min
... ''')
>>> try:
...     load_packs([d / "x.yaml"])
... except PackError as e:
...     print(str(e).replace(str(d), "D"))
D/x.yaml:8: rules[0].for: invalid duration "5 min" (use 5m, 1h30m)
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ValidationError

from core.records import SOURCES
from rules import schema
from rules.ruleset import CompiledRule, PackInfo, RuleSet
from rules.yamlpos import YamlError, path_str
from rules.yamlpos import load as load_yaml

DEFAULT_PACK = Path(__file__).resolve().parent / "packs" / "default"  # the default rule packs

EVENT_CONDITIONS = ("event_count", "state")
SAMPLE_CONDITIONS = ("threshold", "anomaly")
RESERVED_LABELS = ("alertname", "severity")


class PackError(ValueError):
    """All errors of a load, one per line (``file:line: path: message``)."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


class _Errors:
    """Collects errors for one file, resolving YAML paths to lines."""

    def __init__(self, file: str, lines: dict):
        self.file, self.lines, self.items = file, lines, []

    def line_of(self, loc: tuple) -> int:
        loc = tuple(loc)
        while loc and loc not in self.lines:
            loc = loc[:-1]
        return self.lines.get(loc, 1)

    def add(self, loc, msg: str, line: int | None = None) -> None:
        loc = tuple(loc)
        p = path_str(loc)
        self.items.append((line or self.line_of(loc), f"{self.file}:{line or self.line_of(loc)}: "
                           + (f"{p}: " if p else "") + msg))


def _shown(v) -> str:
    try:
        return json.dumps(v)
    except (TypeError, ValueError):
        return repr(v)


def _model_at(loc: tuple):
    """The pydantic model that owns the mapping at ``loc`` (for "expected one of" hints)."""
    model: type[BaseModel] | None = schema.RulePack
    i = 0
    while i < len(loc) and model is not None:
        key = loc[i]
        fields = {(f.alias or n): f for n, f in model.model_fields.items()}
        f = fields.get(key)
        if f is None:
            return None
        ann = f.annotation
        i += 1
        if key == "condition":
            tag = loc[i] if i < len(loc) else None
            model = {c.model_fields["type"].annotation.__args__[0]: c for c in
                     (schema.EventCount, schema.State, schema.Threshold, schema.Absent, schema.Anomaly)}.get(tag)
            i += 1
            continue
        if key in ("rules", "tests", "input_series", "input_events", "alert_rule_test", "exp_alerts"):
            i += 1  # list index
        if key == "detectors":
            i += 1  # mapping key
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            for a in args:
                model = next((b for b in getattr(a, "__args__", ()) if isinstance(b, type) and issubclass(b, BaseModel)), None)
                if model:
                    break
    return model


def _model_at_in(root: type[BaseModel], loc: tuple):
    if root is schema.RulePack:
        return _model_at(loc)
    model = root
    for key in loc:
        if isinstance(key, int):
            continue
        fields = {(f.alias or n): f for n, f in model.model_fields.items()}
        f = fields.get(key)
        if f is None:
            return None
        ann = f.annotation
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return None
    return model


_TYPE_WORDS = {
    "string_type": "a string", "int_type": "an integer", "int_parsing": "an integer",
    "int_from_float": "an integer", "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false", "list_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}


def _translate(err: dict, root: type[BaseModel]) -> tuple[tuple, str]:
    loc = tuple(p for p in err["loc"] if p != "[key]")
    typ = err["type"]
    # a condition's loc carries the union tag after "condition": drop it for the YAML path
    yloc = loc
    if "condition" in loc:
        i = loc.index("condition")
        if i + 1 < len(loc) and loc[i + 1] in schema.CONDITIONS:
            yloc = loc[:i + 1] + loc[i + 2:]
    inp = err.get("input")
    if typ == "extra_forbidden":
        model = _model_at_in(root, loc[:-1])
        allowed = sorted((f.alias or n) for n, f in model.model_fields.items()) if model else []
        hint = f" (expected one of: {', '.join(allowed)})" if allowed else ""
        return yloc, f"unknown key{hint}"
    if typ == "missing":
        return yloc, "required field missing"
    if typ == "union_tag_invalid":
        return yloc + ("type",), f"unknown condition {_shown(err['ctx']['tag'])} (use {', '.join(schema.CONDITIONS)})"
    if typ == "union_tag_not_found":
        return yloc + ("type",), f"required field missing (use {', '.join(schema.CONDITIONS)})"
    if typ in _TYPE_WORDS:
        return yloc, f"expected {_TYPE_WORDS[typ]}, got {_shown(inp)}"
    if typ == "literal_error":
        return yloc, f"expected {err['ctx']['expected']}, got {_shown(inp)}"
    if typ == "value_error":
        return yloc, str(err["ctx"]["error"])
    if typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        word = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[typ]
        bound = next(iter(err["ctx"].values()))
        return yloc, f"must be {word} {bound}, got {_shown(inp)}"
    return yloc, err["msg"]


def parse_file(path: Path, root: type[BaseModel]):
    """Read and schema-validate one YAML file -> (model or None, _Errors)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        errs = _Errors(str(path), {})
        errs.add((), f"cannot read: {exc.strerror or exc}")
        return None, errs
    return parse_text(str(path), text, root)


def parse_text(file: str, text: str, root: type[BaseModel]):
    """Schema-validate one YAML document named ``file`` (a path, or a topic key) -> (model or None, _Errors)."""
    try:
        data, lines, dups = load_yaml(text)
    except YamlError as exc:
        errs = _Errors(file, {})
        errs.add((), str(exc), line=exc.line)
        return None, errs
    errs = _Errors(file, lines)
    for line, loc, msg in dups:
        errs.add(loc, msg, line=line)
    if not isinstance(data, dict):
        errs.add((), f"expected a mapping with {'apiVersion, kind, metadata, rules' if root is schema.RulePack else 'rule_files, tests'}"
                 f", got {'an empty file' if data is None else type(data).__name__}")
        return None, errs
    try:
        model = root.model_validate(data)
    except ValidationError as exc:
        for e in exc.errors():
            loc, msg = _translate(e, root)
            errs.add(loc, msg)
        return None, errs
    return model, errs


def _check_pack(pack: schema.RulePack, errs: _Errors, registry) -> None:
    """Meaning checks that the schema cannot express."""
    if pack.apiVersion != schema.API_VERSION:
        errs.add(("apiVersion",), f"expected {_shown(schema.API_VERSION)}, got {_shown(pack.apiVersion)}")
    if pack.kind != "RulePack":
        errs.add(("kind",), f"expected \"RulePack\", got {_shown(pack.kind)}")
    for name in pack.defaults.labels:
        if name in RESERVED_LABELS:
            errs.add(("defaults", "labels", name), f"reserved label (set it with the rule's {'alert' if name == 'alertname' else 'severity'} field)")
    for name, spec in pack.detectors.items():
        loc = ("detectors", name)
        if registry is None:
            errs.add(loc + ("type",), "detector registry not available (detectors.registry is missing)")
            continue
        known = list(registry.names())
        if spec.type not in known:
            errs.add(loc + ("type",), f"unknown detector type {_shown(spec.type)} (available: {', '.join(known)})")
            continue
        try:
            registry.build(spec.type, dict(spec.params))
        except (ValueError, TypeError) as exc:
            errs.add(loc + ("params",), f"invalid parameters for {spec.type}: {exc}")
    for i, r in enumerate(pack.rules):
        loc = ("rules", i)
        m, c = r.match, r.condition
        on = None
        if m.source and m.metric:
            errs.add(loc + ("match",), "give either source (events) or metric (samples), not both")
        elif not m.source and not m.metric:
            errs.add(loc + ("match",), "required: source (events) or metric (samples)")
        else:
            on = "event" if m.source else "sample"
        for j, s in enumerate(m.source or ()):
            if s not in SOURCES:
                errs.add(loc + ("match", "source") + ((j,) if len(m.source) > 1 else ()),
                         f"unknown source {_shown(s)} (use {', '.join(SOURCES)})")
        if on == "sample":
            for key in ("reason", "kind"):
                if getattr(m, key):
                    errs.add(loc + ("match", key), "only for event rules (this rule matches a metric)")
            if r.group_by:
                errs.add(loc + ("group_by",), "only for event rules (a metric rule's group is its series)")
        if on == "event" and c.type in SAMPLE_CONDITIONS:
            errs.add(loc + ("condition", "type"), f"{c.type} needs a metric rule (match.metric), not events")
        if on == "sample" and c.type in EVENT_CONDITIONS:
            errs.add(loc + ("condition", "type"), f"{c.type} needs an event rule (match.source), not a metric")
        if c.type == "state":
            both = sorted(set(c.resolve_reasons) & set(m.reason or ()))
            if both:
                errs.add(loc + ("condition", "resolve_reasons"), f"{_shown(both[0])} is also a firing reason (match.reason)")
            if not m.reason:
                errs.add(loc + ("match", "reason"), "required for a state condition (the reasons that set it)")
        if c.type == "threshold" and c.resolve is not None:
            ok = {">": c.resolve <= c.value, ">=": c.resolve <= c.value, "<": c.resolve >= c.value,
                  "<=": c.resolve >= c.value}.get(c.op)
            if ok is None:
                errs.add(loc + ("condition", "resolve"), f'only with op >, >=, < or <= (not "{c.op}")')
            elif not ok:
                side = "<=" if c.op in (">", ">=") else ">="
                errs.add(loc + ("condition", "resolve"),
                         f"must be {side} value ({c.value:g}) for op \"{c.op}\" (it is the level that clears the alert)")
        if c.type in ("threshold",) and c.agg in ("rate", "increase") and not c.window:
            errs.add(loc + ("condition", "window"), f"required for agg {c.agg} (e.g. 5m)")
        if c.type == "absent" and c.forget and c.forget <= c.after:
            errs.add(loc + ("condition", "forget"), "must be longer than after (or 0: never forget)")
        if c.type == "anomaly":
            if (c.above is None) == (c.quantile is None):
                errs.add(loc + ("condition",), "give exactly one of above (a fixed score) or quantile (adaptive)")
            if c.k > c.n:
                errs.add(loc + ("condition", "k"), f"must be <= n ({c.n})")
            if c.detector not in pack.detectors:
                declared = ", ".join(pack.detectors) or "none"
                errs.add(loc + ("condition", "detector"), f"unknown detector {_shown(c.detector)} (declared: {declared})")
        for name in r.labels:
            if name in RESERVED_LABELS:
                errs.add(loc + ("labels", name), f"reserved label (set it with the rule's {'alert' if name == 'alertname' else 'severity'} field)")


def _compile(pack: schema.RulePack, file: str, lines: dict) -> list[CompiledRule]:
    out = []
    d = pack.defaults
    for i, r in enumerate(pack.rules):
        m, c = r.match, r.condition
        det = None
        if c.type == "anomaly":
            spec = pack.detectors[c.detector]
            det = (spec.type, dict(spec.params))
        out.append(CompiledRule(
            pack=pack.metadata.name, version=pack.metadata.version, alert=r.alert,
            on="event" if m.source else "sample", cond=c,
            for_=d.for_ if r.for_ is None else r.for_,
            severity=r.severity or d.severity,
            labels={**d.labels, **r.labels}, annotations=dict(r.annotations),
            sources=tuple(m.source or ()), reasons=frozenset(m.reason) if m.reason else None,
            kinds=frozenset(m.kind) if m.kind else None, metrics=tuple(m.metric or ()),
            matchers=tuple(m.matchers), group_by=tuple(r.group_by),
            resolve_reasons=frozenset(c.resolve_reasons) if c.type == "state" else frozenset(),
            stale_after=getattr(c, "stale_after", None) or d.stale_after,
            detector=det, file=file, line=lines.get(("rules", i), 0),
        ))
    return out


def pack_files(paths) -> list[Path]:
    """Files named by ``paths``: a file as is, a folder's ``*.yaml``/``*.yml`` (not sub-folders), sorted."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml") and q.is_file()))
        else:
            out.append(p)
    return out


def default_registry():
    try:
        from detectors import registry
    except ImportError:
        return None
    return registry


def load_packs(paths, registry=None) -> RuleSet:
    """Validate every pack in ``paths`` and return one RuleSet, or raise PackError listing all errors."""
    files = pack_files(paths)
    if not files:
        raise PackError([f"{', '.join(str(p) for p in paths) or '(no path)'}: no rule pack files (*.yaml) found"])
    return _load([(str(f), lambda f=f: parse_file(f, schema.RulePack)) for f in files], registry)


def load_texts(texts: dict[str, str], registry=None) -> RuleSet:
    """Same as ``load_packs`` for packs held as text (e.g. the compacted rules topic: key -> YAML)."""
    if not texts:
        raise PackError(["(no packs): no rule pack given"])
    return _load([(name, lambda n=name: parse_text(n, texts[n], schema.RulePack)) for name in sorted(texts)], registry)


def _load(items, registry) -> RuleSet:
    errors: list[tuple[str, int, str]] = []
    compiled: list[CompiledRule] = []
    infos: list[PackInfo] = []
    first_alert: dict[str, str] = {}
    first_pack: dict[str, str] = {}
    disabled: list[tuple[str, int, str, str]] = []  # (file, line, path, alert)
    for name, parse in items:
        pack, errs = parse()
        if pack is not None:
            if registry is None and pack.detectors:
                registry = default_registry()  # imported only when a pack declares detectors
            _check_pack(pack, errs, registry)
            pname = pack.metadata.name
            if pname in first_pack:
                errs.add(("metadata", "name"), f"duplicate pack name {_shown(pname)} (first in {first_pack[pname]})")
            else:
                first_pack[pname] = f"{errs.file}:{errs.line_of(('metadata', 'name'))}"
            for i, r in enumerate(pack.rules):
                loc = ("rules", i, "alert")
                if r.alert in first_alert:
                    errs.add(loc, f"duplicate alert name {_shown(r.alert)} (first at {first_alert[r.alert]})")
                else:
                    first_alert[r.alert] = f"{errs.file}:{errs.line_of(loc)}"
            for i, alert in enumerate(pack.disable):
                disabled.append((errs.file, errs.line_of(("disable", i)), f"disable[{i}]", alert))
        if errs.items:
            errors.extend((errs.file, line, msg) for line, msg in errs.items)
        elif pack is not None:
            rules = _compile(pack, name, errs.lines)
            compiled.extend(rules)
            infos.append(PackInfo(pack.metadata.name, pack.metadata.version, pack.metadata.description, name, len(rules)))
    for file, line, path, alert in disabled:
        if alert not in first_alert:
            errors.append((file, line, f"{file}:{line}: {path}: unknown alert {_shown(alert)} (not in the loaded packs)"))
    if errors:
        errors.sort(key=lambda e: (e[0], e[1]))
        raise PackError([msg for _, _, msg in errors])
    off = {alert for _, _, _, alert in disabled}
    if off:
        compiled = [r for r in compiled if r.alert not in off]
    return RuleSet(rules=tuple(compiled), packs=tuple(infos))
