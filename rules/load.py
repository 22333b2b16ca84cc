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
... except ConfigError as e:
...     print(str(e).replace(str(d), "D"))
D/x.yaml:8: rules[0].for: invalid duration "5 min" (use e.g. 30s, 5m, 1h30m)
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from pydantic import BaseModel, ValidationError

from core import yamlconfig
from core.durations import format_duration
from core.records import SOURCES
from core.yamlconfig import ConfigError, Document, raise_for, shown
from rules import schema
from rules.ruleset import CompiledRule, PackInfo, RuleSet

DEFAULT_PACK = Path(__file__).resolve().parent / "packs" / "default"  # the default rule packs


def pack_paths(settings) -> list[str]:
    """The packs a worker with ``settings`` evaluates: the default pack unless ``default_pack: false``, then ``rules``."""
    return ([str(DEFAULT_PACK)] if settings.default_pack else []) + [str(p) for p in settings.rules]

EVENT_CONDITIONS = ("event_count", "state")
SAMPLE_CONDITIONS = ("threshold", "burn_rate", "predict", "anomaly", "anomaly_vector")
RESERVED_LABELS = ("alertname", "severity")
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # a valid alert or detector name (rules.schema's)


def parse_file(path: Path, root: type[BaseModel]) -> tuple[BaseModel | None, Document]:
    """Read and schema-validate one YAML file -> (model or None, its Document with any problems)."""
    doc = yamlconfig.read(path)
    return doc.validate(root), doc


def _check_pack(pack: schema.RulePack, errs: Document, registry, rules=None, unread: frozenset = frozenset()) -> None:
    """Meaning checks that the schema cannot express.

    ``rules``: the (index, rule) pairs to check (default: all of ``pack.rules``); ``unread``: detectors declared
    with an invalid spec (already reported), which a rule may name without being told they are unknown."""
    if pack.apiVersion != schema.API_VERSION:
        errs.error(("apiVersion",), f"expected {shown(schema.API_VERSION)}, got {shown(pack.apiVersion)}")
    if pack.kind != "RulePack":
        errs.error(("kind",), f"expected \"RulePack\", got {shown(pack.kind)}")
    for name in pack.defaults.labels:
        if name in RESERVED_LABELS:
            errs.error(("defaults", "labels", name), f"reserved label (set it with the rule's {'alert' if name == 'alertname' else 'severity'} field)")
    for name, spec in pack.detectors.items():
        loc = ("detectors", name)
        if registry is None:
            errs.error(loc + ("type",), "detector registry not available (detectors.registry is missing)")
            continue
        known = list(registry.names())
        if spec.type not in known:
            errs.error(loc + ("type",), f"unknown detector type {shown(spec.type)} (available: {', '.join(known)})")
            continue
        try:
            registry.build(spec.type, dict(spec.params))
        except (ValueError, TypeError) as exc:
            errs.error(loc + ("params",), f"invalid parameters for {spec.type}: {exc}")
    for i, r in enumerate(pack.rules) if rules is None else rules:
        loc = ("rules", i)
        # a match or condition that failed the schema (reported) is None: the checks that read it are left out,
        # the others run (a rule with an invalid severity still has its source checked)
        m, c = r.match, r.condition or _UNREAD_CONDITION
        on = None
        if m is None:
            pass  # which signals the rule is on is not known
        elif m.source and m.metric:
            errs.error(loc + ("match",), "give either source (events) or metric (samples), not both")
        elif not m.source and not m.metric:
            errs.error(loc + ("match",), "required: source (events) or metric (samples)")
        else:
            on = "event" if m.source else "sample"
        for j, s in enumerate(m.source if m is not None and m.source else ()):
            if s not in SOURCES:
                errs.error(loc + ("match", "source") + ((j,) if len(m.source) > 1 else ()),
                         f"unknown source {shown(s)} (use {', '.join(SOURCES)})")
        if on == "sample":
            for key in ("reason", "kind"):
                if getattr(m, key):
                    errs.error(loc + ("match", key), "only for event rules (this rule matches a metric)")
            if r.group_by:
                errs.error(loc + ("group_by",), "only for event rules (a metric rule's group is its series)")
        if on == "event" and c.type in SAMPLE_CONDITIONS:
            errs.error(loc + ("condition", "type"), f"{c.type} needs a metric rule (match.metric), not events")
        if on == "sample" and c.type in EVENT_CONDITIONS:
            errs.error(loc + ("condition", "type"), f"{c.type} needs an event rule (match.source), not a metric")
        if c.type == "event_count" and c.by and r.group_by:
            errs.error(loc + ("group_by",), "not with condition.by (the by labels are the group)")
        if c.type == "state" and m is not None:
            both = sorted(set(c.resolve_reasons) & set(m.reason or ()))
            if both:
                errs.error(loc + ("condition", "resolve_reasons"), f"{shown(both[0])} is also a firing reason (match.reason)")
            if not m.reason:
                errs.error(loc + ("match", "reason"), "required for a state condition (the reasons that set it)")
        if c.type == "threshold" and c.resolve is not None:
            ok = {">": c.resolve <= c.value, ">=": c.resolve <= c.value, "<": c.resolve >= c.value,
                  "<=": c.resolve >= c.value}.get(c.op)
            if ok is None:
                errs.error(loc + ("condition", "resolve"), f'only with op >, >=, < or <= (not "{c.op}")')
            elif not ok:
                side = "<=" if c.op in (">", ">=") else ">="
                errs.error(loc + ("condition", "resolve"),
                         f"must be {side} value ({c.value:g}) for op \"{c.op}\" (it is the level that clears the alert)")
        if c.type in ("threshold",) and c.agg in ("rate", "increase") and not c.window:
            errs.error(loc + ("condition", "window"), f"required for agg {c.agg} (e.g. 5m)")
        if c.type == "burn_rate":
            for j, w in enumerate(c.windows):
                if w.short >= w.long:
                    errs.error(loc + ("condition", "windows", j, "short"),
                               f"must be shorter than long ({format_duration(w.long)}): it says the burn is still going on")
        if c.type == "threshold" and c.under is not None and (c.op not in (">", ">=") or c.under <= c.value):
            errs.error(loc + ("condition", "under"), f"must be above value ({c.value:g}) with op > or >= (the range"
                       " op value .. under): as it stands the rule could never fire")
        if c.type == "predict" and c.window <= 0:
            errs.error(loc + ("condition", "window"), "must be more than 0 (the history the line is fitted on, e.g. 6h)")
        if c.type == "absent" and c.forget and c.forget <= c.after:
            errs.error(loc + ("condition", "forget"), "must be longer than after (or 0: never forget)")
        if c.type in ("anomaly", "anomaly_vector"):
            if (c.above is None) == (c.quantile is None):
                errs.error(loc + ("condition",), "give exactly one of above (a fixed score) or quantile (adaptive)")
            if c.k > c.n:
                errs.error(loc + ("condition", "k"), f"must be <= n ({c.n})")
            if c.detector in unread:
                pass  # its spec is reported: nothing to check against
            elif c.detector not in pack.detectors:
                declared = ", ".join(pack.detectors) or "none"
                errs.error(loc + ("condition", "detector"), f"unknown detector {shown(c.detector)} (declared: {declared})")
            elif c.type == "anomaly":
                _check_scores_one_value(c.detector, pack.detectors[c.detector].type, loc, errs, registry)
            else:
                _check_scores_a_vector(c.detector, pack.detectors[c.detector].type, loc, errs, registry)
        if c.type == "anomaly_vector":
            if c.every <= 0:
                errs.error(loc + ("condition", "every"), "must be > 0 (e.g. 1m: the metrics of one interval make one vector)")
            if m is not None and m.metric and len(set(m.metric)) != len(m.metric):
                errs.error(loc + ("match", "metric"), "a metric listed twice (each metric is one feature of the vector)")
            if m is not None and m.metric and len(m.metric) > 16:
                errs.error(loc + ("match", "metric"), f"at most 16 metrics (features), got {len(m.metric)}")
        _check_node_effects(r, loc, errs)
        for name in r.labels:
            if name in RESERVED_LABELS:
                errs.error(loc + ("labels", name), f"reserved label (set it with the rule's {'alert' if name == 'alertname' else 'severity'} field)")


# stands for a condition that failed the schema: of no type, so that no check of a condition applies
_UNREAD_CONDITION = SimpleNamespace(type=None)


def _check_node_effects(r: schema.Rule, loc: tuple, errs: Document) -> None:
    """``actions``, ``node_condition`` and ``node_event`` act on the alert's node: checks across fields."""
    seen: dict = {}
    for j, a in enumerate(r.actions):
        ident = (a.type, getattr(a, "key", None), getattr(a, "effect", None))
        if ident in seen:
            errs.error(loc + ("actions", j), f"duplicate action (same as actions[{seen[ident]}])")
        else:
            seen[ident] = j
    types = {a.type for a in r.actions}
    if "drain" in types and "cordon" in types:
        errs.error(loc + ("actions",), "drain already cordons: drop the cordon action")
    nc = r.node_condition
    if nc is not None and nc.ok_reason is not None and nc.ok_reason == nc.reason:
        errs.error(loc + ("node_condition", "ok_reason"), f"must differ from reason ({shown(nc.reason)})")


def _check_scores_one_value(name: str, kind: str, loc: tuple, errs: Document, registry) -> None:
    """An anomaly rule feeds its detector one sample value at a time: a detector that scores a
    vector (``input == "vector"``: a dict of metrics) would fail on every sample at run time."""
    cls = getattr(registry, "CLASSES", {}).get(kind) if registry is not None else None
    if cls is not None and cls.input != "value":
        errs.error(loc + ("condition", "detector"),
                   f"detector {shown(name)} is {kind}, which scores a {cls.input} (a dict of metrics); "
                   "an anomaly rule gives it one value per sample")


def _check_scores_a_vector(name: str, kind: str, loc: tuple, errs: Document, registry) -> None:
    """An anomaly_vector rule feeds its detector a dict of metrics: the detector must score a vector."""
    cls = getattr(registry, "CLASSES", {}).get(kind) if registry is not None else None
    if cls is not None and cls.input != "vector":
        vector = sorted(n for n, c in getattr(registry, "CLASSES", {}).items() if c.input == "vector")
        errs.error(loc + ("condition", "detector"),
                   f"detector {shown(name)} is {kind}, which scores one value; an anomaly_vector rule gives it "
                   f"a dict of metrics (vector detectors: {', '.join(vector) or 'none'})")


def _compile(pack: schema.RulePack, file: str, lines: dict) -> list[CompiledRule]:
    out = []
    d = pack.defaults
    for i, r in enumerate(pack.rules):
        m, c = r.match, r.condition
        det = None
        if c.type in ("anomaly", "anomaly_vector"):
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
            detector=det, actions=tuple(r.actions), node_condition=r.node_condition, node_event=r.node_event,
            file=file, line=lines.get(("rules", i), 0),
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
    """Validate every pack in ``paths`` and return one RuleSet, or raise ConfigError listing all errors."""
    files = pack_files(paths)
    if not files:
        raise ConfigError([f"{', '.join(str(p) for p in paths) or '(no path)'}: no rule pack files (*.yaml) found"])
    return _load([(str(f), lambda f=f: parse_file(f, schema.RulePack)) for f in files], registry)


def _salvage(doc: Document) -> tuple[schema.RulePack | None, list, frozenset]:
    """What of a pack that failed the schema did validate -> (pack without its rules, [(index, rule as far as it
    validated: ``_rule_parts``)], the names of detectors whose spec is invalid), or (None, [], ...) when it is not a mapping.  The schema's errors are already
    recorded: these exist so that the meaning and cross-pack checks still run on the rest, and ``rules check``
    lists every error at once rather than those that one typo left to be found next."""
    data = doc.data if doc.readable else None
    if not isinstance(data, dict):
        return None, [], frozenset()

    def valid(model, value):
        try:
            return model.model_validate(value)
        except ValidationError:
            return None

    # a field that does not validate keeps a value that adds no error of its own (its own is reported)
    fields = {"apiVersion": schema.API_VERSION, "kind": "RulePack", "metadata": None, "defaults": schema.Defaults()}
    for key in ("apiVersion", "kind"):
        if isinstance(data.get(key), str):
            fields[key] = data[key]
    fields["metadata"] = valid(schema.Metadata, data.get("metadata"))
    fields["defaults"] = valid(schema.Defaults, data.get("defaults") or {}) or schema.Defaults()
    detectors, unread = {}, set()
    raw = data.get("detectors")
    for name, spec in raw.items() if isinstance(raw, dict) else ():
        ok = valid(schema.DetectorSpec, spec)
        if ok is not None and isinstance(name, str) and _NAME.match(name):
            detectors[name] = ok
        else:
            unread.add(name)
    fields["detectors"] = detectors
    fields["disable"] = [a for _, a in _strings(data.get("disable"))]
    raw = data.get("rules")
    rules = [(i, _rule_parts(r)) for i, r in enumerate(raw if isinstance(raw, list) else ()) if isinstance(r, dict)]
    return schema.RulePack.model_construct(**fields, rules=[]), rules, frozenset(unread)


def valid_parts(model: type[BaseModel], data: dict) -> tuple[BaseModel, set[str]]:
    """The fields of ``data`` that validate each on its own, as a ``model`` built without validation, and the names
    of those that do not (or, required, are missing): they keep their default, a required one None.  For the
    meaning checks of a file that failed the schema: its errors are reported, and what did validate is checked too.

    >>> m, bad = valid_parts(schema.Match, {"source": "k8z", "matchers": ['node=~"(?=x)"'], "extra": 1})
    >>> m.source, m.matchers, sorted(bad)
    (['k8z'], (), ['matchers'])
    """
    part = model.model_construct()
    bad = set()
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in data:
            try:
                model.__pydantic_validator__.validate_assignment(part, name, data[key])
                continue
            except ValidationError:
                pass
        elif not info.is_required():
            continue
        bad.add(name)
        if info.is_required():
            part.__dict__[name] = None
    return part, bad


def _rule_parts(data: dict) -> schema.Rule:
    """A rule that failed the schema, as far as its meaning checks can read it: a field that failed keeps its
    default (an empty list, None: no more errors than the rule would have without it), except ``match`` and
    ``condition``, None (their checks are left out).  A match with an invalid ``kind`` or ``matchers`` keeps its
    ``source``, ``metric`` and ``reason``, which say what the rule is on."""
    rule, bad = valid_parts(schema.Rule, data)
    if "match" in bad and isinstance(data.get("match"), dict):
        match, wrong = valid_parts(schema.Match, data["match"])
        rule.__dict__["match"] = None if wrong & {"source", "metric", "reason"} else match
    return rule


def _strings(value) -> list[tuple[int, str]]:
    """(index, entry) of the strings in a list (``disable``)."""
    return [(i, a) for i, a in enumerate(value if isinstance(value, list) else ()) if isinstance(a, str)]


def _raw(doc: Document) -> dict:
    return doc.data if doc.readable and isinstance(doc.data, dict) else {}


def _raw_alerts(doc: Document) -> list[tuple[int, str]]:
    """(index, alert) of a pack's rules, read from its data: a rule that failed the schema elsewhere still has its
    name, so that a duplicate of it is found and disabling it is not called unknown."""
    rules = _raw(doc).get("rules")
    return [(i, r["alert"]) for i, r in enumerate(rules if isinstance(rules, list) else ())
            if isinstance(r, dict) and isinstance(r.get("alert"), str) and _NAME.match(r["alert"])]


def _load(items, registry) -> RuleSet:
    docs: list[Document] = []
    compiled: list[CompiledRule] = []
    infos: list[PackInfo] = []
    first_pack: dict[str, str] = {}
    packs: list[tuple[Document, list, list]] = []  # (document, [(index, alert)], [(index in disable, alert)])
    for name, parse in items:
        pack, errs = parse()
        docs.append(errs)
        if pack is not None:
            part, rules, unread = pack, None, frozenset()
        else:
            part, rules, unread = _salvage(errs)
        if part is not None:
            if registry is None and part.detectors:
                registry = default_registry()  # imported only when a pack declares detectors
            _check_pack(part, errs, registry, rules, unread)
            if part.metadata is not None:
                pname = part.metadata.name
                if pname in first_pack:
                    errs.error(("metadata", "name"), f"duplicate pack name {shown(pname)} (first in {first_pack[pname]})")
                else:
                    first_pack[pname] = f"{errs.source}:{errs.line_of(('metadata', 'name'))}"
        disable = list(enumerate(pack.disable)) if pack is not None else _strings(_raw(errs).get("disable"))
        packs.append((errs, _raw_alerts(errs), disable))
        if pack is not None and not errs.problems:
            rules = _compile(pack, name, errs.lines)
            compiled.extend(rules)
            infos.append(PackInfo(pack.metadata.name, pack.metadata.version, pack.metadata.description, name, len(rules)))
    # A pack's disable switches off the rules of that name in the other packs, not its own: a pack replaces a rule
    # under the same name (routes, inhibit rules and silences match on alertname) by disabling it and defining it.
    off: dict[str, set[int]] = {}  # alert -> the packs (by position) that disable it
    for k, (_, _, disable) in enumerate(packs):
        for _, alert in disable:
            off.setdefault(alert, set()).add(k)
    first_alert: dict[str, str] = {}
    for k, (errs, alerts, _) in enumerate(packs):
        for i, alert in alerts:
            if off.get(alert, set()) - {k}:
                continue  # disabled: not a rule of the set, so not the first of a name either
            loc = ("rules", i, "alert")
            if alert in first_alert:
                errs.error(loc, f"duplicate alert name {shown(alert)} (first at {first_alert[alert]})")
            else:
                first_alert[alert] = f"{errs.source}:{errs.line_of(loc)}"
    for k, (errs, _, disable) in enumerate(packs):
        for i, alert in disable:
            if not any(alert == a for j, (_, alerts, _) in enumerate(packs) if j != k for _, a in alerts):
                if any(alert == a for _, a in packs[k][1]):
                    errs.error(("disable", i), f"unknown alert {shown(alert)} (only this pack has it: disable switches "
                               "off the rules of that name in the other loaded packs, and leaves the pack's own)")
                else:
                    errs.error(("disable", i), f"unknown alert {shown(alert)} (not in the loaded packs)")
    raise_for(docs)
    # no errors: every pack compiled, so infos[k] is the pack at packs[k]
    compiled = [r for r in compiled if not any(infos[k].name != r.pack for k in off.get(r.alert, ()))]
    if off:
        live: dict[str, int] = {}
        for r in compiled:
            live[r.pack] = live.get(r.pack, 0) + 1
        infos = [replace(p, rules=live.get(p.name, 0)) for p in infos]
    return RuleSet(rules=tuple(compiled), packs=tuple(infos))
