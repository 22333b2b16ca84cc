"""The routing file: receivers, route tree, inhibit rules, time intervals; validated at load, every error at once.

Shaped like Alertmanager's configuration (same keys, same meanings) plus two kubesight keys:
``owner_receiver`` on a route and ``default_inhibit_rules`` at the top.  Errors name the file,
the line and the YAML path:

>>> load_text('route: {receiver: x, matchers: ["a=b"]}\\nreceivers: [{name: y}]\\n', "r.yaml")
Traceback (most recent call last):
...
alerts.config.ConfigError: r.yaml: 2 errors
  r.yaml:1: route.matchers: the root route must not have matchers (it receives every alert)
  r.yaml:1: route.receiver: undefined receiver 'x' (defined: y)
"""

from __future__ import annotations

from typing import Annotated

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from alerts import duration, matchers
from alerts.timeintervals import TimeInterval


class ConfigError(ValueError):
    """Every problem of one routing file, each as ``file:line: path: message``."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} error{'s' if len(errors) != 1 else ''}\n  " + "\n  ".join(errors))


def _dur(v):
    return duration.parse(v)


def _positive(v: float) -> float:
    if v <= 0:
        raise ValueError("must be greater than 0")
    return v


def _matcher(v: str) -> str:
    try:
        matchers.parse(v)
    except matchers.MatcherError as exc:
        raise ValueError(str(exc)) from None
    return v


def _label(v: str) -> str:
    import re

    if v != "..." and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
        raise ValueError(f"invalid label name {v!r}")
    return v


def _url(v: str) -> str:
    if not (v.startswith("http://") or v.startswith("https://")):
        raise ValueError("must be an http:// or https:// URL")
    return v


Duration = Annotated[float, BeforeValidator(_dur)]
Interval = Annotated[float, BeforeValidator(_dur), AfterValidator(_positive)]
MatcherText = Annotated[str, AfterValidator(_matcher)]
LabelName = Annotated[str, AfterValidator(_label)]
Secret = Annotated[str, AfterValidator(_url)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Retry(Strict):
    """Exponential backoff with jitter for timeouts, 5xx and 429; the budget bounds the total time per notification."""

    initial: Duration = 1.0
    max_backoff: Duration = 60.0
    budget: Duration = 7200.0


class WebhookConfig(Strict):
    url: Secret | None = None
    url_file: str | None = None
    send_resolved: bool = True
    max_alerts: int = Field(0, ge=0)
    timeout: Interval = 10.0


class SlackConfig(Strict):
    api_url: Secret | None = None
    api_url_file: str | None = None
    channel: str = ""
    username: str = "kubesight"
    send_resolved: bool = False
    timeout: Interval = 10.0


class DingTalkConfig(Strict):
    url: Secret | None = None
    url_file: str | None = None
    secret: str | None = None  # DingTalk's signing secret (timestamp + HMAC-SHA256 in the URL)
    send_resolved: bool = True
    timeout: Interval = 10.0


class ReceiverConfig(Strict):
    name: str = Field(min_length=1)
    webhook_configs: list[WebhookConfig] = []
    slack_configs: list[SlackConfig] = []
    dingtalk_configs: list[DingTalkConfig] = []
    retry: Retry = Retry()


class RouteConfig(Strict):
    receiver: str | None = None
    owner_receiver: bool | None = None
    group_by: list[LabelName] | None = None
    continue_: bool = Field(False, alias="continue")
    matchers: list[MatcherText] = []
    group_wait: Duration | None = None
    group_interval: Interval | None = None
    repeat_interval: Interval | None = None
    mute_time_intervals: list[str] = []
    active_time_intervals: list[str] = []
    routes: list[RouteConfig] = []


class InhibitRuleConfig(Strict):
    source_matchers: list[MatcherText] = Field(min_length=1)
    target_matchers: list[MatcherText] = Field(min_length=1)
    equal: list[LabelName] = []


class NamedTimeInterval(Strict):
    name: str = Field(min_length=1)
    time_intervals: list[TimeInterval]


class GlobalConfig(Strict):
    resolve_timeout: Duration = 0.0  # 0: an alert without endsAt stays firing until resolved
    external_url: str = "http://kubesight.local"


class RoutingConfig(Strict):
    global_: GlobalConfig = Field(GlobalConfig(), alias="global")
    route: RouteConfig
    receivers: list[ReceiverConfig] = Field(min_length=1)
    inhibit_rules: list[InhibitRuleConfig] = []
    default_inhibit_rules: bool = True
    time_intervals: list[NamedTimeInterval] = []


# ---------------------------------------------------------------- loading


def _lines(text: str) -> dict[tuple, int]:
    """YAML path (tuple of keys and indices) -> 1-based line, for keys and values alike."""
    out: dict[tuple, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return out

    def walk(node, path):
        out.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                out[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return out


def format_path(path) -> str:
    s = ""
    for p in path:
        if isinstance(p, int):
            s += f"[{p}]"
        else:
            s += ("." if s else "") + str(p)
    return s or "(top)"


def _where(source: str, lines: dict, path: tuple) -> str:
    p = tuple(path)
    while p and p not in lines:
        p = p[:-1]
    return f"{source}:{lines.get(p, 1)}"


def _pydantic_errors(exc: ValidationError) -> list[tuple[tuple, str]]:
    out = []
    for e in exc.errors():
        loc = tuple("continue" if x == "continue_" else "global" if x == "global_" else x for x in e["loc"])
        # pydantic inserts the type name of a tagged/nested model in some locations; keep real keys only
        loc = tuple(x for x in loc if not (isinstance(x, str) and x.startswith("function-")))
        t = e["type"]
        if t == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
            if loc[-1] in ("match", "match_re", "source_match", "source_match_re", "target_match", "target_match_re"):
                msg += f" (use {'matchers' if loc[-1].startswith('match') else loc[-1].split('_match')[0] + '_matchers'}:" \
                       " ['name=value', 'name=~regex'])"
        elif t == "missing":
            msg = "required key missing"
        elif t in ("value_error", "assertion_error"):
            msg = str(e["ctx"]["error"]) if "ctx" in e else e["msg"]
        elif t == "too_short":
            msg = "must not be empty"
        else:
            msg = e["msg"][0].lower() + e["msg"][1:]
        out.append((loc, msg))
    return out


def _cross_refs(data: dict) -> list[tuple[tuple, str]]:
    """Checks pydantic cannot do field by field: names defined once, references resolvable, root route shape."""
    errs: list[tuple[tuple, str]] = []
    receivers: list[str] = []
    for i, r in enumerate(data.get("receivers") or []):
        if isinstance(r, dict) and isinstance(r.get("name"), str):
            if r["name"] in receivers:
                errs.append((("receivers", i, "name"), f"duplicate receiver {r['name']!r}"))
            else:
                receivers.append(r["name"])
        if isinstance(r, dict):
            for kind, key in (("webhook_configs", "url"), ("slack_configs", "api_url"), ("dingtalk_configs", "url")):
                for j, c in enumerate(r.get(kind) or []):
                    if isinstance(c, dict) and (key in c) == (f"{key}_file" in c):
                        errs.append(((("receivers", i, kind, j)), f"exactly one of {key} or {key}_file is required"))
    intervals: list[str] = []
    for i, t in enumerate(data.get("time_intervals") or []):
        if isinstance(t, dict) and isinstance(t.get("name"), str):
            if t["name"] in intervals:
                errs.append((("time_intervals", i, "name"), f"duplicate time interval {t['name']!r}"))
            else:
                intervals.append(t["name"])

    def walk(route, path):
        if not isinstance(route, dict):
            return
        rcv = route.get("receiver")
        if isinstance(rcv, str) and rcv not in receivers:
            errs.append((path + ("receiver",), f"undefined receiver {rcv!r} (defined: {', '.join(receivers) or 'none'})"))
        for key in ("mute_time_intervals", "active_time_intervals"):
            for j, name in enumerate(route.get(key) or []):
                if name not in intervals:
                    errs.append((path + (key, j), f"undefined time interval {name!r}"))
        gb = route.get("group_by")
        if isinstance(gb, list) and "..." in gb and len(gb) > 1:
            errs.append((path + ("group_by",), "'...' (group by all labels) cannot be combined with other labels"))
        for j, child in enumerate(route.get("routes") or []):
            walk(child, path + ("routes", j))

    root = data.get("route")
    if isinstance(root, dict):
        if root.get("matchers"):
            errs.append((("route", "matchers"), "the root route must not have matchers (it receives every alert)"))
        if root.get("continue"):
            errs.append((("route", "continue"), "the root route cannot have continue"))
        if root.get("mute_time_intervals") or root.get("active_time_intervals"):
            errs.append((("route",), "the root route cannot have mute or active time intervals"))
        if not root.get("receiver"):
            errs.append((("route", "receiver"), "the root route needs a receiver (the fallback for every alert)"))
        walk(root, ("route",))
    return errs


def load_text(text: str, source: str = "<routing>") -> RoutingConfig:
    """Parse and validate; raises ConfigError listing every problem with file, line and YAML path."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise ConfigError(source, [f"{source}:{line}: (top): invalid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(source, [f"{source}:1: (top): expected a mapping with route and receivers"])
    lines = _lines(text)
    errs = _cross_refs(data)
    cfg = None
    try:
        cfg = RoutingConfig.model_validate(data)
    except ValidationError as exc:
        errs += _pydantic_errors(exc)
    if errs:
        seen, out = set(), []
        for path, msg in errs:
            item = (_where(source, lines, path), format_path(path), msg)
            if item not in seen:
                seen.add(item)
                out.append(item)
        out.sort(key=lambda x: (int(x[0].rsplit(":", 1)[1]), x[1]))
        raise ConfigError(source, [f"{w}: {p}: {m}" for w, p, m in out])
    return cfg


def load(path) -> RoutingConfig:
    with open(path) as fh:
        return load_text(fh.read(), str(path))
