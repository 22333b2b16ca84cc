"""The routing file: receivers, route tree, inhibit rules, time intervals; validated at load, every error at once.

Shaped like Alertmanager's configuration (same keys, same meanings) plus two kubesight keys:
``owner_receiver`` on a route and ``default_inhibit_rules`` at the top.  Errors name the file,
the line and the YAML path:

>>> load_text('route: {receiver: x, matchers: ["a=b"]}\\nreceivers: [{name: y}]\\n', "r.yaml")
Traceback (most recent call last):
...
core.yamlconfig.ConfigError: r.yaml:1: route.matchers: the root route must not have matchers (it receives every alert)
r.yaml:1: route.receiver: undefined receiver "x" (defined: y)
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from alerts.timeintervals import TimeInterval
from core import yamlconfig
from core.durations import Duration
from core.matchers import Matchers
from core.yamlconfig import shown


def _positive(v: float) -> float:
    if v <= 0:
        raise ValueError("must be greater than 0")
    return v


def _label(v: str) -> str:
    import re

    if v != "..." and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
        raise ValueError(f"invalid label name {shown(v)}")
    return v


def _url(v: str) -> str:
    if not (v.startswith("http://") or v.startswith("https://")):
        raise ValueError("must be an http:// or https:// URL")
    return v


Interval = Annotated[Duration, AfterValidator(_positive)]
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
    matchers: Matchers = ()
    group_wait: Duration | None = None
    group_interval: Interval | None = None
    repeat_interval: Interval | None = None
    mute_time_intervals: list[str] = []
    active_time_intervals: list[str] = []
    routes: list[RouteConfig] = []


class InhibitRuleConfig(Strict):
    source_matchers: Matchers = Field(min_length=1)
    target_matchers: Matchers = Field(min_length=1)
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


def _cross_refs(data: dict) -> list[tuple[tuple, str]]:
    """Checks pydantic cannot do field by field: names defined once, references resolvable, root route shape."""
    errs: list[tuple[tuple, str]] = []
    receivers: list[str] = []
    for i, r in enumerate(data.get("receivers") or []):
        if isinstance(r, dict) and isinstance(r.get("name"), str):
            if r["name"] in receivers:
                errs.append((("receivers", i, "name"), f"duplicate receiver {shown(r['name'])}"))
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
                errs.append((("time_intervals", i, "name"), f"duplicate time interval {shown(t['name'])}"))
            else:
                intervals.append(t["name"])

    def walk(route, path):
        if not isinstance(route, dict):
            return
        rcv = route.get("receiver")
        if isinstance(rcv, str) and rcv not in receivers:
            errs.append((path + ("receiver",), f"undefined receiver {shown(rcv)} (defined: {', '.join(receivers) or 'none'})"))
        for key in ("mute_time_intervals", "active_time_intervals"):
            for j, name in enumerate(route.get(key) or []):
                if name not in intervals:
                    errs.append((path + (key, j), f"undefined time interval {shown(name)}"))
        gb = route.get("group_by")
        if isinstance(gb, list) and "..." in gb and len(gb) > 1:
            errs.append((path + ("group_by",), '"..." (group by all labels) cannot be combined with other labels'))
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
    return yamlconfig.load(text, RoutingConfig, source=source, check=_cross_refs)


def load(path) -> RoutingConfig:
    return yamlconfig.load(path, RoutingConfig, check=_cross_refs)
