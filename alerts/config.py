"""The routing file: receivers, route tree, inhibit rules, time intervals; validated at load, every error at once.

Alertmanager's configuration file (same keys, same meanings, same refusals: a file ``amtool
check-config`` refuses is refused here) plus kubesight's extensions: ``owner_receiver`` on a route,
``default_inhibit_rules`` at the top, ``retry`` and ``timeout`` on receivers, ``dingtalk_configs``,
``alertmanager_configs`` (forwarding to a real Alertmanager).
Alertmanager's deprecated forms (``match``, ``match_re``, ``source_match(_re)``, ``target_match(_re)``,
a top-level ``mute_time_intervals``) are read as their modern equivalents with one warning each
(``RoutingConfig.warnings``).  Errors name the file, the line and the YAML path:

>>> load_text('route: {receiver: x, matchers: ["a=b"]}\\nreceivers: [{name: y}]\\n', "r.yaml")
Traceback (most recent call last):
...
core.yamlconfig.ConfigError: r.yaml:1: route.matchers: the root route must not have matchers (it receives every alert)
r.yaml:1: route.receiver: undefined receiver "x" (defined: y)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from alerts.timeintervals import TimeInterval
from core import yamlconfig
from core.durations import Duration
from core.matchers import MatcherError, Matchers, parse_matchers, quote
from core.yamlconfig import Document, shown


def _positive(v: float) -> float:
    if v <= 0:
        raise ValueError("must be greater than 0")
    return v


def _label(v: str) -> str:
    if v != "..." and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
        raise ValueError(f"invalid label name {shown(v)}")
    return v


def _url(v: str) -> str:
    if not (v.startswith("http://") or v.startswith("https://")):
        raise ValueError("must be an http:// or https:// URL")
    return v


def _template(v: str) -> str:
    from alerts.payload import MessageTemplate

    MessageTemplate(v)  # raises ValueError naming the unknown field
    return v


Interval = Annotated[Duration, AfterValidator(_positive)]
Template = Annotated[str, AfterValidator(_template)]  # alerts.payload.MessageTemplate: $title, $alerts, $label_x ...
LabelName = Annotated[str, AfterValidator(_label)]
Secret = Annotated[str, AfterValidator(_url)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Retry(Strict):
    """Exponential backoff with jitter for timeouts, 5xx and 429; the budget bounds the total time per notification."""

    initial: Duration = 1.0
    max_backoff: Duration = 60.0
    budget: Duration = 7200.0


class TLSConfig(Strict):
    """Alertmanager's ``http_config.tls_config``: how a receiver's HTTPS endpoint is verified (always, by default)."""

    ca_file: str | None = None  # None: the system's CAs
    cert_file: str | None = None  # a client certificate (mutual TLS), with key_file
    key_file: str | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _pair(self):
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")
        return self


class HTTPConfig(Strict):
    """Alertmanager's ``http_config``, the part kubesight honours (proxies: HTTP(S)_PROXY and NO_PROXY)."""

    tls_config: TLSConfig = TLSConfig()


class WebhookConfig(Strict):
    http_config: HTTPConfig = HTTPConfig()
    url: Secret | None = None
    url_file: str | None = None
    send_resolved: bool = True
    max_alerts: int = Field(0, ge=0)
    timeout: Interval = 10.0


class SlackConfig(Strict):
    http_config: HTTPConfig = HTTPConfig()
    api_url: Secret | None = None
    api_url_file: str | None = None
    channel: str = ""
    username: str = "kubesight"
    send_resolved: bool = False
    timeout: Interval = 10.0


class DingTalkConfig(Strict):
    http_config: HTTPConfig = HTTPConfig()
    url: Secret | None = None
    url_file: str | None = None
    secret: str | None = None  # DingTalk's signing secret (timestamp + HMAC-SHA256 in the URL)
    send_resolved: bool = True
    timeout: Interval = 10.0


class AlertmanagerForwardConfig(Strict):
    """Forward to a real Alertmanager (kubesight's extension): POST ``{url}/api/v2/alerts`` as Prometheus does."""

    url: Secret | None = None  # the Alertmanager's base URL, e.g. http://alertmanager:9093
    url_file: str | None = None
    resend_delay: Interval = 60.0  # firing alerts re-sent this often; endsAt = now + 4 x resend_delay
    timeout: Interval = 10.0


class EmailConfig(Strict):
    """SMTP (Alertmanager's email_configs); the ``smtp_*`` globals are the defaults."""

    to: str = Field(min_length=1)  # comma-separated addresses
    from_: str | None = Field(None, alias="from")
    smarthost: str | None = None  # host:port
    hello: str = "localhost"
    auth_username: str | None = None
    auth_password: str | None = None
    auth_password_file: str | None = None
    auth_identity: str | None = None
    require_tls: bool = True  # STARTTLS, refused if the server does not offer it
    tls_config: TLSConfig = TLSConfig()  # how the server's certificate is verified (always, by default)
    headers: dict[str, str] = {}
    subject: Template = "$title"  # alerts.payload.MessageTemplate
    text: Template = "$title\n\n$alerts\n\n$external_url"
    html: Template | None = None  # when set, a text/html alternative part
    send_resolved: bool = False
    timeout: Interval = 10.0


class PagerDutyConfig(Strict):
    """PagerDuty Events API v2 (Alertmanager's pagerduty_configs with a routing_key)."""

    routing_key: str | None = None
    routing_key_file: str | None = None
    url: Secret = "https://events.pagerduty.com/v2/enqueue"
    client: str = "kubesight"
    client_url: str | None = None  # default: global.external_url
    description: Template = "$title"  # payload.summary
    severity: str = ""  # default: the alerts' common severity label (critical, error, warning, info), else error
    source: str = "kubesight"
    class_: str = Field("", alias="class")
    component: str = ""
    group: str = ""
    details: dict[str, str] = {}
    send_resolved: bool = True
    timeout: Interval = 10.0


class OpsgenieConfig(Strict):
    """Opsgenie Alert API: POST /v2/alerts, closed by alias (Alertmanager's opsgenie_configs)."""

    api_key: str | None = None
    api_key_file: str | None = None
    api_url: Secret = "https://api.opsgenie.com/"
    message: Template = "$title"
    description: Template = "$alerts"
    source: str = "kubesight"
    details: dict[str, str] = {}
    tags: str = ""  # comma-separated
    priority: Annotated[str, Field(pattern=r"^(P[1-5])?$")] = ""
    send_resolved: bool = True
    timeout: Interval = 10.0


class MSTeamsConfig(Strict):
    """A Microsoft Teams incoming webhook (MessageCard), Alertmanager's msteams_configs."""

    webhook_url: Secret | None = None
    webhook_url_file: str | None = None
    title: Template = "$title"
    text: Template = "$alerts"
    send_resolved: bool = True
    timeout: Interval = 10.0


class ReceiverConfig(Strict):
    name: str = Field(min_length=1)
    email_configs: list[EmailConfig] = []
    pagerduty_configs: list[PagerDutyConfig] = []
    opsgenie_configs: list[OpsgenieConfig] = []
    msteams_configs: list[MSTeamsConfig] = []
    webhook_configs: list[WebhookConfig] = []
    slack_configs: list[SlackConfig] = []
    dingtalk_configs: list[DingTalkConfig] = []
    alertmanager_configs: list[AlertmanagerForwardConfig] = []
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
    source_matchers: Matchers = ()  # none: every firing alert is a source (as in Alertmanager)
    target_matchers: Matchers = ()
    equal: list[LabelName] = []


class NamedTimeInterval(Strict):
    name: str = Field(min_length=1)
    time_intervals: list[TimeInterval]


class GlobalConfig(Strict):
    resolve_timeout: Duration = 0.0  # 0: an alert without endsAt stays firing until resolved
    external_url: str = "http://kubesight.local"  # kubesight's (Alertmanager takes it as a flag)
    # Alertmanager's other global keys: accepted so its files load; slack_api_url(_file) is the
    # default of slack_configs, the rest serve integrations kubesight does not deliver to yet
    http_config: dict | None = None
    smtp_from: str | None = None
    smtp_hello: str | None = None
    smtp_smarthost: str | None = None
    smtp_auth_username: str | None = None
    smtp_auth_password: str | None = None
    smtp_auth_password_file: str | None = None
    smtp_auth_secret: str | None = None
    smtp_auth_identity: str | None = None
    smtp_require_tls: bool | None = None
    slack_api_url: Secret | None = None
    slack_api_url_file: str | None = None
    pagerduty_url: str | None = None
    opsgenie_api_url: str | None = None
    opsgenie_api_key: str | None = None
    opsgenie_api_key_file: str | None = None
    victorops_api_url: str | None = None
    victorops_api_key: str | None = None
    victorops_api_key_file: str | None = None
    wechat_api_url: str | None = None
    wechat_api_secret: str | None = None
    wechat_api_corp_id: str | None = None
    telegram_api_url: str | None = None
    webex_api_url: str | None = None


class RoutingConfig(Strict):
    global_: GlobalConfig = Field(GlobalConfig(), alias="global")
    route: RouteConfig
    receivers: list[ReceiverConfig] = Field(min_length=1)
    inhibit_rules: list[InhibitRuleConfig] = []
    default_inhibit_rules: bool = True
    time_intervals: list[NamedTimeInterval] = []
    templates: list[str] = []  # Alertmanager's notification templates: accepted, not used (a warning says so)
    _warnings: list[str] = PrivateAttr(default_factory=list)
    _original: str = PrivateAttr(default="")

    @property
    def warnings(self) -> list[str]:
        """Deprecated forms read and keys accepted but unused, one ``file:line: path: message`` each."""
        return self._warnings

    @property
    def original(self) -> str:
        """The file's text as loaded (what ``/api/v2/status`` shows as ``config.original``)."""
        return self._original


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
            for kind, key in (("webhook_configs", "url"), ("slack_configs", "api_url"), ("dingtalk_configs", "url"),
                              ("alertmanager_configs", "url"), ("pagerduty_configs", "routing_key"),
                              ("opsgenie_configs", "api_key"), ("msteams_configs", "webhook_url")):
                for j, c in enumerate(r.get(kind) or []):
                    if isinstance(c, dict) and (key in c) == (f"{key}_file" in c):
                        errs.append(((("receivers", i, kind, j)), f"exactly one of {key} or {key}_file is required"))
            for j, c in enumerate(r.get("email_configs") or []):
                if not isinstance(c, dict):
                    continue
                for key, glob in (("smarthost", "smtp_smarthost"), ("from", "smtp_from")):
                    if not c.get(key):
                        errs.append((("receivers", i, "email_configs", j), f"no {key} (set it here or global.{glob})"))
                if "auth_password" in c and "auth_password_file" in c:
                    errs.append((("receivers", i, "email_configs", j), "at most one of auth_password or "
                                                                      "auth_password_file"))
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
        if isinstance(gb, list):
            for j, name in enumerate(gb):
                if isinstance(name, str) and name in gb[:j]:
                    errs.append((path + ("group_by", j), f"duplicated label {shown(name)} in group_by"))
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


# ---------------------------------------------------------------- Alertmanager's deprecated forms

WITH_HTTP_CONFIG = ("webhook_configs", "slack_configs", "dingtalk_configs")  # http_config.tls_config honoured
DELIVERED = ("webhook_configs", "slack_configs", "dingtalk_configs", "alertmanager_configs", "email_configs",
             "pagerduty_configs", "opsgenie_configs", "msteams_configs")
NOT_YET = ("pushover_configs", "victorops_configs", "wechat_configs", "sns_configs", "telegram_configs",
           "discord_configs", "webex_configs")
# message fields that hold templates; Alertmanager's Go templates there are not run (warned, default used)
TEMPLATED = {"email_configs": ("subject", "text", "html"), "pagerduty_configs": ("description",),
             "opsgenie_configs": ("message", "description"), "msteams_configs": ("title", "text")}
# Alertmanager's globals that are defaults of an integration's keys
GLOBAL_DEFAULTS = {"email_configs": (("smtp_from", "from"), ("smtp_smarthost", "smarthost"), ("smtp_hello", "hello"),
                                     ("smtp_auth_username", "auth_username"),
                                     ("smtp_auth_password", "auth_password"),
                                     ("smtp_auth_password_file", "auth_password_file"),
                                     ("smtp_auth_identity", "auth_identity"), ("smtp_require_tls", "require_tls")),
                   "pagerduty_configs": (("pagerduty_url", "url"),),
                   "opsgenie_configs": (("opsgenie_api_url", "api_url"), ("opsgenie_api_key", "api_key"),
                                        ("opsgenie_api_key_file", "api_key_file"))}
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _as_matchers(doc: Document, owner: dict, path: tuple, pairs: tuple[tuple[str, str], ...], into: str,
                 warnings: list[str]) -> None:
    """Turn ``owner``'s deprecated maps (key, operator) into matcher strings appended to ``owner[into]``."""
    converted: list[str] = []
    for key, op in pairs:
        if key not in owner:
            continue
        value, mine = owner.pop(key), []
        if value is None:
            continue
        if not isinstance(value, dict):
            doc.error(path + (key,), f"expected a mapping of label name to value, got {shown(value)}")
            continue
        for name, v in value.items():
            if not isinstance(name, str) or not _LABEL.fullmatch(name):
                doc.error(path + (key, str(name)), f"invalid label name {shown(name)}")
                continue
            if not isinstance(v, str):
                doc.error(path + (key, name), f"expected a string, got {shown(v)}")
                continue
            text = f"{name}{op}{quote(v)}"
            try:
                parse_matchers(text)
            except MatcherError as exc:
                doc.error(path + (key, name), str(exc))
                continue
            mine.append(text)
        converted += mine
        warnings.append(f"{doc.source}:{doc.line_of(path + (key,))}: {yamlconfig.path_str(path + (key,))}: "
                        f"{key} is deprecated (in Alertmanager too); read as {into}: {mine!r}")
    if converted:
        existing = owner.get(into)
        owner[into] = (list(existing) if isinstance(existing, list) else []) + converted


def _modernise(doc: Document) -> list[str]:
    """Rewrite Alertmanager's deprecated forms in ``doc.data`` in place; the warnings, one per form found."""
    data, warnings = doc.data, []

    def route(r, path):
        if not isinstance(r, dict):
            return
        _as_matchers(doc, r, path, (("match", "="), ("match_re", "=~")), "matchers", warnings)
        for j, child in enumerate(r.get("routes") or []):
            route(child, path + ("routes", j))

    route(data.get("route"), ("route",))
    for i, rule in enumerate(data.get("inhibit_rules") or []):
        if isinstance(rule, dict):
            p = ("inhibit_rules", i)
            _as_matchers(doc, rule, p, (("source_match", "="), ("source_match_re", "=~")), "source_matchers", warnings)
            _as_matchers(doc, rule, p, (("target_match", "="), ("target_match_re", "=~")), "target_matchers", warnings)
    old = data.get("mute_time_intervals")
    if "mute_time_intervals" in data:
        data.pop("mute_time_intervals")
        warnings.append(f"{doc.source}:{doc.line_of(('mute_time_intervals',))}: mute_time_intervals: "
                        "deprecated (in Alertmanager too); read as time_intervals")
        if isinstance(old, list):
            data["time_intervals"] = list(data.get("time_intervals") or []) + old
    if data.get("templates"):
        warnings.append(f"{doc.source}:{doc.line_of(('templates',))}: templates: accepted but not used "
                        "(kubesight sends its own message formats)")
    glob = data.get("global") if isinstance(data.get("global"), dict) else {}
    for i, r in enumerate(data.get("receivers") or []):
        if not isinstance(r, dict):
            continue
        for kind in NOT_YET:
            if kind in r:
                if r.pop(kind):
                    doc.error(("receivers", i, kind), f"kubesight does not deliver {kind} yet "
                                                      f"(it delivers {', '.join(DELIVERED)})")
        for kind in DELIVERED:
            for j, c in enumerate(r.get(kind) or []):
                if isinstance(c, dict) and "http_config" in c and kind not in WITH_HTTP_CONFIG:
                    c.pop("http_config")
                    doc.error(("receivers", i, kind, j, "http_config"), "http_config is not supported by kubesight yet")
        for kind, keys in TEMPLATED.items():
            for j, c in enumerate(r.get(kind) or []):
                for key in keys:
                    if isinstance(c, dict) and isinstance(c.get(key), str) and "{{" in c[key]:
                        c.pop(key)
                        loc = ("receivers", i, kind, j, key)
                        warnings.append(f"{doc.source}:{doc.line_of(loc)}: {yamlconfig.path_str(loc)}: a Go template "
                                        "is not run by kubesight; its default text is used (templates are $title, "
                                        "$alerts, $label_NAME ...)")
        for kind, pairs in GLOBAL_DEFAULTS.items():
            for c in r.get(kind) or []:
                if isinstance(c, dict):
                    for g, key in pairs:
                        taken = key in c or f"{key}_file" in c or (key.endswith("_file")
                                                                    and key.removesuffix("_file") in c)
                        if glob.get(g) is not None and not taken:
                            c[key] = glob[g]
        for c in r.get("slack_configs") or []:  # Alertmanager's default Slack URL
            if isinstance(c, dict) and "api_url" not in c and "api_url_file" not in c:
                for key in ("slack_api_url", "slack_api_url_file"):
                    if glob.get(key):
                        c[key.removeprefix("slack_")] = glob[key]
    return warnings


def _load(doc: Document) -> RoutingConfig:
    warnings = _modernise(doc) if isinstance(doc.data, dict) else []
    cfg = doc.validate(RoutingConfig)
    if isinstance(doc.data, dict):
        for loc, message in _cross_refs(doc.data):
            doc.error(loc, message)
    doc.raise_for_errors()
    cfg._warnings = warnings
    return cfg


def load_text(text: str, source: str = "<routing>") -> RoutingConfig:
    """Parse and validate; raises ConfigError listing every problem with file, line and YAML path."""
    cfg = _load(yamlconfig.parse(text, source))
    cfg._original = text
    return cfg


def load(path) -> RoutingConfig:
    doc = yamlconfig.read(path)
    cfg = _load(doc)
    cfg._original = Path(path).read_text(encoding="utf-8")
    return cfg
