"""The routing file: receivers, route tree, inhibit rules, time intervals; validated at load, every error at once.

Alertmanager's configuration file (same keys, same meanings, same refusals: a file ``amtool
check-config`` refuses is refused here) plus kubesight's extensions: ``owner_receiver`` and ``incidents`` on a route,
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

import copy
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from alerts import gotemplate
from alerts.timeintervals import TimeInterval
from core import yamlconfig
from core.durations import Duration
from core.httpauth import Authorization, BasicAuth
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

    if gotemplate.is_go(v):
        return v  # an Alertmanager Go template: the loader checks it with Alertmanager's parser (alerts.gotemplate)
    MessageTemplate(v)  # raises ValueError naming the unknown field
    return v


def _is_template(v: str) -> bool:
    try:
        _template(v)
    except ValueError:
        return False
    return True


Interval = Annotated[Duration, AfterValidator(_positive)]
Template = Annotated[str, AfterValidator(_template)]  # alerts.payload.MessageTemplate: $title, $alerts, $label_x ...
LabelName = Annotated[str, AfterValidator(_label)]
Secret = Annotated[str, AfterValidator(_url)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Retry(Strict):
    """Exponential backoff with jitter for timeouts, 5xx and 429; the budget bounds the total time per notification."""

    initial: Interval = 1.0  # > 0: with 0s every wait was 0 (a failing receiver got ~1,000 requests a second)
    max_backoff: Duration = 60.0
    budget: Duration = 7200.0


class RateLimit(Strict):
    """At most ``notifications`` per ``per`` to one receiver (kubesight's: a token bucket, bursts of that many, then
    evenly).  Notifications waiting for their turn are coalesced per group, so a storm reaches the receiver as the
    groups' latest states, not as every step of it."""

    notifications: int = Field(ge=1)
    per: Interval


class TLSConfig(Strict):
    """Alertmanager's ``http_config.tls_config``: how a receiver's HTTPS endpoint is verified (always, by default)."""

    ca_file: str | None = None  # None: the system's CAs
    cert_file: str | None = None  # a client certificate (mutual TLS), with key_file
    key_file: str | None = None
    server_name: str | None = None  # the name the server's certificate is checked against (SNI too)
    insecure_skip_verify: bool = False
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] | None = None
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] | None = None

    @model_validator(mode="after")
    def _pair(self):
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")
        return self


class OAuth2(Strict):
    """OAuth 2.0 client credentials: a token from ``token_url``, sent as ``Authorization: Bearer``."""

    client_id: str = ""
    client_secret: str | None = None
    client_secret_file: str | None = None
    scopes: list[str] = []
    token_url: str = ""
    endpoint_params: dict[str, str] = {}
    tls_config: TLSConfig = TLSConfig()
    proxy_url: str | None = None


class HTTPConfig(Strict):
    """Alertmanager's ``http_config`` (prometheus/common's HTTP client config), honoured on every HTTP receiver.

    Proxies: ``proxy_url`` here, else HTTP(S)_PROXY and NO_PROXY from the environment; ``enable_http2``
    is accepted (aiohttp speaks HTTP/1.1).
    """

    tls_config: TLSConfig = TLSConfig()
    authorization: Authorization | None = None
    basic_auth: BasicAuth | None = None
    bearer_token: str | None = None  # deprecated in Alertmanager: read as authorization (type Bearer)
    bearer_token_file: str | None = None
    oauth2: OAuth2 | None = None
    proxy_url: str | None = None
    proxy_connect_header: dict[str, list[str]] = {}
    follow_redirects: bool = True
    enable_http2: bool = True

    @model_validator(mode="after")
    def _auth(self):
        # prometheus/common HTTPClientConfig.Validate: same checks, same order, same words
        bearer = bool(self.bearer_token) or bool(self.bearer_token_file)
        if self.bearer_token and self.bearer_token_file:
            raise ValueError("at most one of bearer_token & bearer_token_file must be configured")
        if (self.basic_auth is not None or self.oauth2 is not None) and bearer:
            raise ValueError("at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured")
        if self.basic_auth is not None and self.basic_auth.password and self.basic_auth.password_file:
            raise ValueError("at most one of basic_auth password & password_file must be configured")
        a = self.authorization
        if a is not None:
            if bearer:
                raise ValueError("authorization is not compatible with bearer_token & bearer_token_file")
            if a.credentials and a.credentials_file:
                raise ValueError("at most one of authorization credentials & credentials_file must be configured")
            a.type = a.type.strip() or "Bearer"
            if a.type.lower() == "basic":
                raise ValueError('authorization type cannot be set to "basic", use "basic_auth" instead')
        if sum(x is not None for x in (self.basic_auth, self.oauth2, a)) > 1:
            raise ValueError("at most one of basic_auth, oauth2 & authorization must be configured")
        if a is None and bearer:
            self.authorization = Authorization(credentials=self.bearer_token, credentials_file=self.bearer_token_file)
            self.bearer_token = self.bearer_token_file = None
        o = self.oauth2
        if o is not None:
            if not o.client_id:
                raise ValueError("oauth2 client_id must be configured")
            if o.client_secret and o.client_secret_file:
                raise ValueError("at most one of oauth2 client_secret & client_secret_file must be configured")
            if not (o.client_secret or o.client_secret_file):
                raise ValueError("either oauth2 client_secret or client_secret_file must be configured")
            if not o.token_url:
                raise ValueError("oauth2 token_url must be configured")
        if self.proxy_connect_header and not self.proxy_url:
            raise ValueError("if proxy_connect_header is configured proxy_url must also be configured")
        return self


class WebhookConfig(Strict):
    http_config: HTTPConfig = HTTPConfig()
    url: Secret | None = None
    url_file: str | None = None
    send_resolved: bool = True
    max_alerts: int = Field(0, ge=0)
    timeout: Interval = 10.0


class SlackConfirm(Strict):
    text: str = Field(min_length=1)
    title: str = ""
    ok_text: str = ""
    dismiss_text: str = ""


class SlackAction(Strict):
    type: str = ""
    text: str = ""
    url: str = ""
    style: str = ""
    name: str = ""
    value: str = ""
    confirm: SlackConfirm | None = None

    @model_validator(mode="after")
    def _shape(self):  # Alertmanager's SlackAction checks, in its order
        if not self.type:
            raise ValueError("missing type in Slack action configuration")
        if not self.text:
            raise ValueError("missing text in Slack action configuration")
        if self.url:
            self.name, self.value, self.confirm = "", "", None
        elif not self.name:
            raise ValueError("missing name or url in Slack action configuration")
        return self


class SlackField(Strict):
    title: str = ""
    value: str = ""
    short: bool | None = None

    @model_validator(mode="after")
    def _shape(self):
        if not self.title:
            raise ValueError("missing title in Slack field configuration")
        if not self.value:
            raise ValueError("missing value in Slack field configuration")
        return self


class SlackConfig(Strict):
    """A Slack incoming webhook: one attachment; Alertmanager's message fields override kubesight's defaults."""

    http_config: HTTPConfig = HTTPConfig()
    api_url: Secret | None = None
    api_url_file: str | None = None
    channel: str = ""
    username: str = "kubesight"
    send_resolved: bool = False
    timeout: Interval = 10.0
    # Alertmanager's attachment fields (None: kubesight's default for that field)
    color: str | None = None
    title: Template | None = None
    title_link: str | None = None
    pretext: Template | None = None
    text: Template | None = None
    fallback: Template | None = None
    footer: Template | None = None
    callback_id: str | None = None
    icon_emoji: str | None = None
    icon_url: str | None = None
    image_url: str | None = None
    thumb_url: str | None = None
    link_names: bool = False
    short_fields: bool = False
    mrkdwn_in: list[str] | None = None
    fields: list[SlackField] = []
    actions: list[SlackAction] = []


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
    auth_secret: str | None = None  # the CRAM-MD5 secret, used when the server offers CRAM-MD5
    require_tls: bool = True  # STARTTLS, refused if the server does not offer it
    tls_config: TLSConfig = TLSConfig()  # how the server's certificate is verified (always, by default)
    headers: dict[str, str] = {}
    subject: Template = "$title"  # alerts.payload.MessageTemplate
    # where the Go template helper is built, an unset ``subject`` and ``html`` are Alertmanager's (AM_DEFAULTS) and an
    # unset ``text`` is no text/plain part, as Alertmanager sends its email; without it, kubesight's text/plain only
    text: Template | None = "$title\n\n$alerts\n\n$external_url"
    html: Template | None = None  # when set, a text/html alternative part
    send_resolved: bool = False
    timeout: Interval = 10.0


class PagerDutyImage(Strict):
    src: str = ""
    alt: str = ""
    href: str = ""


class PagerDutyLink(Strict):
    href: str = ""
    text: str = ""


class PagerDutyConfig(Strict):
    """PagerDuty Events API v2 with a routing_key; the v1 Events API (generic/2010-04-15) with a service_key."""

    http_config: HTTPConfig = HTTPConfig()
    routing_key: str | None = None
    routing_key_file: str | None = None
    service_key: str | None = None  # Events API v1 (an integration key of the older kind); wins over routing_key
    service_key_file: str | None = None
    images: list[PagerDutyImage] = []
    links: list[PagerDutyLink] = []
    url: Secret = "https://events.pagerduty.com/v2/enqueue"
    client: str = "kubesight"
    client_url: str | None = None  # default: global.external_url
    description: Template = "$title"  # payload.summary
    severity: str = ""  # default: error, as Alertmanager's notifier sends it (whatever the alerts' severity label)
    source: str | None = None  # default: the client, as Alertmanager
    class_: str = Field("", alias="class")
    component: str = ""
    group: str = ""
    details: dict[str, str] = {}
    send_resolved: bool = True
    timeout: Interval = 10.0


class OpsgenieResponder(Strict):
    id: str = ""
    name: str = ""
    username: str = ""
    type: str = ""

    @model_validator(mode="after")
    def _shape(self):
        if not (self.id or self.name or self.username):
            raise ValueError("an Opsgenie responder has to have at least one of id, username or name")
        self.type = self.type.lower()
        if not re.fullmatch(r"team|teams|user|escalation|schedule", self.type):
            raise ValueError(f"responder type {shown(self.type)} does not match valid options "
                             "^(team|teams|user|escalation|schedule)$")
        return self


class OpsgenieConfig(Strict):
    """Opsgenie Alert API: POST /v2/alerts, closed by alias (Alertmanager's opsgenie_configs)."""

    http_config: HTTPConfig = HTTPConfig()
    api_key: str | None = None
    api_key_file: str | None = None
    api_url: Secret = "https://api.opsgenie.com/"
    message: Template = "$title"
    description: Template = "$alerts"
    source: str = "kubesight"
    details: dict[str, str] = {}
    tags: str = ""  # comma-separated
    priority: str = ""  # P1-P5 (sent as given, as Alertmanager does)
    entity: str = ""
    actions: str = ""  # comma-separated
    note: str = ""
    responders: list[OpsgenieResponder] = []
    update_alerts: bool = False  # also update an open alert's message and description (two more requests)
    send_resolved: bool = True
    timeout: Interval = 10.0


class MSTeamsConfig(Strict):
    """A Microsoft Teams incoming webhook (MessageCard), Alertmanager's msteams_configs."""

    http_config: HTTPConfig = HTTPConfig()
    webhook_url: Secret | None = None
    webhook_url_file: str | None = None
    title: Template = "$title"
    text: Template = "$alerts"
    send_resolved: bool = True
    timeout: Interval = 10.0


class PushoverConfig(Strict):
    """Pushover's message API (form POST to /1/messages.json), Alertmanager's pushover_configs."""

    http_config: HTTPConfig = HTTPConfig()
    user_key: str | None = None
    token: str | None = None
    api_url: Secret = "https://api.pushover.net/1/messages.json"  # kubesight's: where to post (tests, proxies)
    title: Template = "$title"
    message: Template = "$alerts"
    url: str = ""  # default: global.external_url
    url_title: str = ""
    sound: str = ""
    priority: str = ""  # default: 2 (emergency) while firing, 0 when resolved
    retry: Duration = 60.0  # emergency: how often Pushover repeats it (seconds, at least 30)
    expire: Duration = 3600.0  # emergency: how long it keeps repeating
    html: bool = False
    send_resolved: bool = True
    timeout: Interval = 10.0

    @model_validator(mode="after")
    def _keys(self):
        if not self.user_key:
            raise ValueError("missing user key in Pushover config")
        if not self.token:
            raise ValueError("missing token in Pushover config")
        return self


class VictorOpsConfig(Strict):
    """Splunk On-Call (VictorOps) REST endpoint: POST {api_url}{api_key}/{routing_key}, Alertmanager's victorops_configs."""

    http_config: HTTPConfig = HTTPConfig()
    api_key: str | None = None
    api_key_file: str | None = None
    api_url: Secret = "https://alert.victorops.com/integrations/generic/20131114/alert/"
    routing_key: str = Field(min_length=1)
    message_type: str = "CRITICAL"  # CRITICAL, WARNING or INFO while firing; RECOVERY when resolved
    state_message: Template = "$alerts"
    entity_display_name: Template = "$title"
    monitoring_tool: str = "kubesight"
    custom_fields: dict[str, str] = {}
    send_resolved: bool = True
    timeout: Interval = 10.0

    @model_validator(mode="after")
    def _reserved(self):
        for k in ("routing_key", "message_type", "state_message", "entity_display_name", "monitoring_tool",
                  "entity_id", "entity_state"):
            if k in self.custom_fields:
                raise ValueError(f"custom field {k} cannot be used: it conflicts with the fixed/static fields")
        return self


class WechatConfig(Strict):
    """WeChat Work (qyapi): an access token from gettoken, then message/send, Alertmanager's wechat_configs."""

    http_config: HTTPConfig = HTTPConfig()
    api_secret: str | None = None
    corp_id: str | None = None
    api_url: Secret = "https://qyapi.weixin.qq.com/cgi-bin/"
    message: Template = "$title\n$alerts"
    message_type: Literal["text", "markdown"] = "text"
    to_user: str = ""
    to_party: str = ""
    to_tag: str = ""
    agent_id: str = ""
    send_resolved: bool = False
    timeout: Interval = 10.0


class SigV4Config(Strict):
    """AWS Signature V4 credentials; without keys, the AWS credential chain (environment, profile, role)."""

    region: str = ""  # default: the region of the topic or target ARN
    access_key: str | None = None
    secret_key: str | None = None
    profile: str | None = None
    role_arn: str | None = None

    @model_validator(mode="after")
    def _keys(self):
        if bool(self.access_key) != bool(self.secret_key):
            raise ValueError("must provide a AWS SigV4 Access key and Secret Key if credentials are specified in "
                             "the SigV4 config")
        return self


class SNSConfig(Strict):
    """Amazon SNS Publish (AWS query API, SigV4-signed by botocore), Alertmanager's sns_configs."""

    http_config: HTTPConfig = HTTPConfig()
    api_url: str = ""  # default: https://sns.<region>.amazonaws.com
    sigv4: SigV4Config = SigV4Config()
    topic_arn: str = ""
    phone_number: str = ""
    target_arn: str = ""
    subject: Template = "$title"
    message: Template = "$alerts"
    attributes: dict[str, str] = {}
    send_resolved: bool = True
    timeout: Interval = 10.0

    @model_validator(mode="after")
    def _target(self):
        # Alertmanager's check, bit for bit (its chained != lets all three through)
        if ((self.target_arn == "") != (self.topic_arn == "")) != (self.phone_number == ""):
            raise ValueError("must provide either a Target ARN, Topic ARN, or Phone Number for SNS config")
        return self


class TelegramConfig(Strict):
    """Telegram Bot API sendMessage, Alertmanager's telegram_configs."""

    http_config: HTTPConfig = HTTPConfig()
    api_url: Secret = "https://api.telegram.org"
    bot_token: str | None = None
    chat_id: int = 0
    message: Template = "$title\n$alerts"
    disable_notifications: bool = False
    parse_mode: Literal["", "Markdown", "MarkdownV2", "HTML"] = "HTML"
    send_resolved: bool = True
    timeout: Interval = 10.0

    @model_validator(mode="after")
    def _required(self):
        if not self.bot_token:
            raise ValueError("missing bot_token on telegram_config")
        if self.chat_id == 0:
            raise ValueError("missing chat_id on telegram_config")
        return self


class WebexConfig(Strict):
    """Webex messages API (Bearer token from http_config.authorization), Alertmanager's webex_configs."""

    http_config: HTTPConfig = HTTPConfig()
    api_url: Secret = "https://webexapis.com/v1/messages"
    room_id: str = Field(min_length=1)
    message: Template = "$title\n$alerts"
    send_resolved: bool = True
    timeout: Interval = 10.0

    @model_validator(mode="after")
    def _auth(self):
        if self.http_config.authorization is None:
            raise ValueError("missing webex_configs.http_config.authorization")
        return self


class DiscordConfig(Strict):
    """A Discord webhook (one embed, red while firing, green when resolved), Alertmanager's discord_configs."""

    http_config: HTTPConfig = HTTPConfig()
    webhook_url: Secret | None = None
    webhook_url_file: str | None = None  # kubesight's (Alertmanager 0.26 has it too)
    title: Template = "$title"
    message: Template = "$alerts"
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
    pushover_configs: list[PushoverConfig] = []
    victorops_configs: list[VictorOpsConfig] = []
    wechat_configs: list[WechatConfig] = []
    sns_configs: list[SNSConfig] = []
    telegram_configs: list[TelegramConfig] = []
    webex_configs: list[WebexConfig] = []
    discord_configs: list[DiscordConfig] = []
    retry: Retry = Retry()
    rate_limit: RateLimit | None = None  # extension: at most N notifications per interval (alerts.config.RateLimit)


class RouteConfig(Strict):
    receiver: str | None = None
    owner_receiver: bool | None = None
    incidents: bool | None = None  # extension: notify per incident (streams.incidents), not per group
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
    time_intervals: list[TimeInterval] = []  # none: an interval that never holds (Alertmanager accepts it)


class GlobalConfig(Strict):
    resolve_timeout: Duration = 0.0  # 0: an alert without endsAt stays firing until resolved
    external_url: str = "http://kubesight.local"  # kubesight's (Alertmanager takes it as a flag)
    # Alertmanager's other global keys: the defaults of its receivers' keys (GLOBAL_DEFAULTS below);
    # http_config is the default http_config of every receiver that has none
    http_config: HTTPConfig | None = None
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
    default_inhibit_rules: bool = False  # an Alertmanager file inhibits by its own rules only
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
        """The file's text as loaded, each secret slot's value shown as ``<secret>`` as Alertmanager shows it
        (what ``/api/v2/status`` serves as ``config.original``, ``amtool config show``)."""
        return self._original

    @property
    def digest(self) -> str:
        """Names this version of the file (its text as loaded) as this kubesight reads it: what a partition's alerts
        were last routed by.  ``ROUTE_KEYS`` changes when the same text gives other group keys (2026-11-29:
        ``match_re`` anchored as Alertmanager writes it), so the first start of such a version routes again and
        withdraws the alerts from their groups under the old keys."""
        import hashlib

        return hashlib.blake2b(f"{ROUTE_KEYS}\n{self._original}".encode(), digest_size=8).hexdigest()


ROUTE_KEYS = 2  # the group keys' format: 2 = match_re anchored (1: as written)


# ---------------------------------------------------------------- loading


def _cross_refs(data: dict) -> list[tuple[tuple, str]]:
    """Checks pydantic cannot do field by field: names defined once, references resolvable, root route shape."""
    errs: list[tuple[tuple, str]] = []
    receivers: list[str] = []
    for i, r in enumerate(_seq(data.get("receivers"))):
        if isinstance(r, dict) and isinstance(r.get("name"), str):
            if r["name"] in receivers:
                errs.append((("receivers", i, "name"), f"duplicate receiver {shown(r['name'])}"))
            else:
                receivers.append(r["name"])
        if isinstance(r, dict):
            for kind, key in (("webhook_configs", "url"), ("slack_configs", "api_url"), ("dingtalk_configs", "url"),
                              ("alertmanager_configs", "url"), ("opsgenie_configs", "api_key"),
                              ("msteams_configs", "webhook_url"), ("discord_configs", "webhook_url")):
                for j, c in enumerate(_seq(r.get(kind))):
                    if isinstance(c, dict) and (key in c) == (f"{key}_file" in c):
                        errs.append(((("receivers", i, kind, j)), f"exactly one of {key} or {key}_file is required"))
            for j, c in enumerate(_seq(r.get("pagerduty_configs"))):
                if not isinstance(c, dict):
                    continue
                if not any(c.get(k) for k in ("routing_key", "routing_key_file", "service_key", "service_key_file")):
                    errs.append((("receivers", i, "pagerduty_configs", j), "missing service or routing key in "
                                                                           "PagerDuty config"))
                for key in ("routing_key", "service_key"):
                    if c.get(key) and c.get(f"{key}_file"):
                        errs.append((("receivers", i, "pagerduty_configs", j), f"at most one of {key} or {key}_file"))
            for j, c in enumerate(_seq(r.get("victorops_configs"))):
                if isinstance(c, dict) and not (c.get("api_key") or c.get("api_key_file")):
                    errs.append((("receivers", i, "victorops_configs", j), "no api_key (set it here, api_key_file or "
                                                                           "global.victorops_api_key)"))
                elif isinstance(c, dict) and c.get("api_key") and c.get("api_key_file"):
                    errs.append((("receivers", i, "victorops_configs", j), "at most one of api_key or api_key_file"))
            for j, c in enumerate(_seq(r.get("wechat_configs"))):
                for key, glob in (("api_secret", "wechat_api_secret"), ("corp_id", "wechat_api_corp_id")):
                    if isinstance(c, dict) and not c.get(key):
                        errs.append((("receivers", i, "wechat_configs", j), f"no {key} (set it here or global.{glob})"))
            for j, c in enumerate(_seq(r.get("email_configs"))):
                if not isinstance(c, dict):
                    continue
                for key, glob in (("smarthost", "smtp_smarthost"), ("from", "smtp_from")):
                    if not c.get(key):
                        errs.append((("receivers", i, "email_configs", j), f"no {key} (set it here or global.{glob})"))
                if "auth_password" in c and "auth_password_file" in c:
                    errs.append((("receivers", i, "email_configs", j), "at most one of auth_password or "
                                                                      "auth_password_file"))
    intervals: list[str] = []
    for i, t in enumerate(_seq(data.get("time_intervals"))):
        if isinstance(t, dict) and isinstance(t.get("name"), str):
            if t["name"] in intervals:
                errs.append((("time_intervals", i, "name"), f"duplicate time interval {shown(t['name'])}"))
            else:
                intervals.append(t["name"])

    def walk(route, path):
        if not isinstance(route, dict):
            return
        rcv = route.get("receiver")
        if isinstance(rcv, str) and rcv and rcv not in receivers:  # '' inherits (the root's is checked apart)
            errs.append((path + ("receiver",), f"undefined receiver {shown(rcv)} (defined: {', '.join(receivers) or 'none'})"))
        for key in ("mute_time_intervals", "active_time_intervals"):
            for j, name in enumerate(_seq(route.get(key))):
                if name not in intervals:
                    errs.append((path + (key, j), f"undefined time interval {shown(name)}"))
        gb = route.get("group_by")
        # Alertmanager's rules: "..." beside a label is refused, "..." twice is not (it is not a label to duplicate)
        if isinstance(gb, list) and "..." in gb and any(name != "..." for name in gb):
            errs.append((path + ("group_by",), '"..." (group by all labels) cannot be combined with other labels'))
        if isinstance(gb, list):
            for j, name in enumerate(gb):
                if isinstance(name, str) and name != "..." and name in gb[:j]:
                    errs.append((path + ("group_by", j), f"duplicated label {shown(name)} in group_by"))
        for j, child in enumerate(_seq(route.get("routes"))):
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

# every HTTP receiver honours http_config (TLS, authorization, basic_auth, proxy_url); email has tls_config
WITH_HTTP_CONFIG = ("webhook_configs", "slack_configs", "dingtalk_configs", "pagerduty_configs", "opsgenie_configs",
                    "msteams_configs", "pushover_configs", "victorops_configs", "wechat_configs", "sns_configs",
                    "telegram_configs", "webex_configs", "discord_configs")
DELIVERED = ("webhook_configs", "slack_configs", "dingtalk_configs", "alertmanager_configs", "email_configs",
             "pagerduty_configs", "opsgenie_configs", "msteams_configs", "pushover_configs", "victorops_configs",
             "wechat_configs", "sns_configs", "telegram_configs", "webex_configs", "discord_configs")
# message fields that hold templates; Alertmanager's Go templates there are not run (warned, default used)
TEMPLATED = {"email_configs": ("subject", "text", "html"), "pagerduty_configs": ("description",),
             "opsgenie_configs": ("message", "description"), "msteams_configs": ("title", "text"),
             "slack_configs": ("title", "pretext", "text", "fallback", "footer"),
             "pushover_configs": ("title", "message"), "victorops_configs": ("state_message", "entity_display_name"),
             "wechat_configs": ("message",), "sns_configs": ("subject", "message"), "telegram_configs": ("message",),
             "webex_configs": ("message",), "discord_configs": ("title", "message")}
# fields that are plain text in kubesight but that Alertmanager 0.25's notifiers run through its template package:
# a Go template there is run as Alertmanager runs it (alerts.sending.value), else warned (without the helper).
# "a": key a; "a.*": every value of the map a; "a[].b": b of every item of the list a.  Not here, so warned when
# they hold "{{" (_slots_warned): secrets Alertmanager templates too (tokens, keys), the keys of SNS attributes and
# Opsgenie's responder type (its own check refuses a template there)
GO_FIELDS = {
    "pagerduty_configs": ("client", "client_url", "severity", "source", "class", "component", "group", "details.*",
                          "images[].src", "images[].alt", "images[].href", "links[].href", "links[].text"),
    "victorops_configs": ("routing_key", "message_type", "monitoring_tool", "custom_fields.*"),
    "email_configs": ("to", "from", "headers.*"),
    "opsgenie_configs": ("source", "tags", "priority", "entity", "actions", "note", "details.*", "responders[].id",
                         "responders[].name", "responders[].username"),
    "slack_configs": ("channel", "username", "color", "title_link", "callback_id", "icon_emoji", "icon_url",
                      "image_url", "thumb_url", "fields[].title", "fields[].value", "actions[].type",
                      "actions[].text", "actions[].url", "actions[].style", "actions[].name", "actions[].value",
                      "actions[].confirm.title", "actions[].confirm.text", "actions[].confirm.ok_text",
                      "actions[].confirm.dismiss_text"),
    "pushover_configs": ("url", "url_title", "sound", "priority"),
    "wechat_configs": ("to_user", "to_party", "to_tag", "agent_id"),
    "sns_configs": ("topic_arn", "phone_number", "target_arn", "attributes.*"),
}
# Alertmanager 0.25's defaults of the fields kubesight defaults to its own text (its notifiers' config): where the Go
# template helper is built, a field left unset is Alertmanager's, run by its template package with the routing file's
# templates (one that redefines "email.default.html" is used, as in Alertmanager); kubesight's default is what is sent
# if it fails, and what is sent without the helper.  A PagerDuty ``source`` left unset is the client, helper or not.
AM_DEFAULTS = {
    "pagerduty_configs": {"description": '{{ template "pagerduty.default.description" .}}',
                          "client": '{{ template "pagerduty.default.client" . }}',
                          "client_url": '{{ template "pagerduty.default.clientURL" . }}',
                          "details.firing": '{{ template "pagerduty.default.instances" .Alerts.Firing }}',
                          "details.resolved": '{{ template "pagerduty.default.instances" .Alerts.Resolved }}',
                          "details.num_firing": "{{ .Alerts.Firing | len }}",
                          "details.num_resolved": "{{ .Alerts.Resolved | len }}"},
    "email_configs": {"subject": '{{ template "email.default.subject" . }}',
                      "html": '{{ template "email.default.html" . }}'},
}
# Alertmanager's globals that are defaults of an integration's keys
GLOBAL_DEFAULTS = {"email_configs": (("smtp_from", "from"), ("smtp_smarthost", "smarthost"), ("smtp_hello", "hello"),
                                     ("smtp_auth_username", "auth_username"),
                                     ("smtp_auth_password", "auth_password"),
                                     ("smtp_auth_password_file", "auth_password_file"),
                                     ("smtp_auth_identity", "auth_identity"), ("smtp_auth_secret", "auth_secret"),
                                     ("smtp_require_tls", "require_tls")),
                   "pagerduty_configs": (("pagerduty_url", "url"),),
                   "opsgenie_configs": (("opsgenie_api_url", "api_url"), ("opsgenie_api_key", "api_key"),
                                        ("opsgenie_api_key_file", "api_key_file")),
                   "victorops_configs": (("victorops_api_url", "api_url"), ("victorops_api_key", "api_key"),
                                         ("victorops_api_key_file", "api_key_file")),
                   "wechat_configs": (("wechat_api_url", "api_url"), ("wechat_api_secret", "api_secret"),
                                      ("wechat_api_corp_id", "corp_id")),
                   "telegram_configs": (("telegram_api_url", "api_url"),),
                   "webex_configs": (("webex_api_url", "api_url"),)}
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _seq(x) -> list:
    """A list the schema will check, or nothing to look at before it does: a scalar where a list belongs is the
    schema's error (with its line), not a TypeError of the checks that run first."""
    return x if isinstance(x, list) else []


def _attr(model: type[BaseModel], key: str) -> str:
    """The attribute of ``model`` that YAML key ``key`` fills (``class`` -> ``class_``)."""
    for name, f in model.model_fields.items():
        if (f.alias or name) == key:
            return name
    return key


def _get(node, key: str):
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, BaseModel):
        return getattr(node, _attr(type(node), key), None)
    return None


def _put(node, key: str, value) -> None:
    if isinstance(node, dict):
        node[key] = value
    else:
        setattr(node, _attr(type(node), key), value)


def _slots(node, spec: str, path: tuple = ()):
    """``(path, owner, key)`` of each value a ``GO_FIELDS`` entry names below ``node``: a config as written (a dict)
    or as loaded (its model), so the loader warns about and then runs the same slots."""
    head, _, rest = spec.partition(".")
    if head == "*":
        for k in list(node) if isinstance(node, dict) else []:
            yield path + (k,), node, k
        return
    key = head.removesuffix("[]")
    value = _get(node, key)
    if head.endswith("[]"):
        for j, item in enumerate(value if isinstance(value, list) else []):
            yield from _slots(item, rest, path + (key, j))
    elif rest:
        if value is not None:
            yield from _slots(value, rest, path + (key,))
    elif value is not None:
        yield path + (key,), node, key


def _strings(node, path: tuple = ()):
    """Every string below ``node`` (a config as written), with its path."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, path + (k,))
    elif isinstance(node, list):
        for j, v in enumerate(node):
            yield from _strings(v, path + (j,))


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
            if not isinstance(v, str) and path + (key, name) in doc.plain:
                v = doc.plain[path + (key, name)][0]  # as Go's yaml.v2 reads it: the text written (`code: 500`)
            if not isinstance(v, str):
                doc.error(path + (key, name), f"expected a string, got {shown(v)}")
                continue
            if op == "=~":  # Alertmanager builds the matcher from the compiled regex's text, anchored: group keys
                v = f"^(?:{v})$"  # (the webhook's groupKey, PagerDuty's dedup key) carry it so
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
        for j, child in enumerate(_seq(r.get("routes"))):
            route(child, path + ("routes", j))

    route(data.get("route"), ("route",))
    for i, rule in enumerate(_seq(data.get("inhibit_rules"))):
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
            cur = data.get("time_intervals")
            if cur is None or isinstance(cur, list):  # else left for the schema to refuse, with its line
                data["time_intervals"] = list(cur or []) + old
                for p, v in list(doc.plain.items()):  # their unquoted values move with them (go_strings)
                    if p[:1] == ("mute_time_intervals",) and len(p) > 1 and isinstance(p[1], int):
                        doc.plain[("time_intervals", len(cur or []) + p[1]) + p[2:]] = v
    go = gotemplate.available()
    if data.get("templates") and not go:
        warnings.append(f"{doc.source}:{doc.line_of(('templates',))}: templates: not used: Alertmanager's Go "
                        f"templates need {gotemplate.NAME} (make amtemplate)")
    glob = data.get("global") if isinstance(data.get("global"), dict) else {}
    for i, r in enumerate(_seq(data.get("receivers"))):
        if not isinstance(r, dict):
            continue
        for kind in WITH_HTTP_CONFIG:  # Alertmanager's global http_config: the default of each receiver's
            for c in _seq(r.get(kind)) if kind != "webex_configs" else []:  # (webex checks its own first)
                if isinstance(c, dict) and c.get("http_config") is None and isinstance(glob.get("http_config"), dict):
                    c["http_config"] = copy.deepcopy(glob["http_config"])
        for kind in TEMPLATED:
            for j, c in enumerate(_seq(r.get(kind))):
                for key in TEMPLATED[kind]:
                    if isinstance(c, dict) and gotemplate.is_go(c.get(key)):
                        if go:
                            continue  # run by Alertmanager's template package (checked in _go_templates)
                        c.pop(key)
                        loc = ("receivers", i, kind, j, key)
                        warnings.append(f"{doc.source}:{doc.line_of(loc)}: {yamlconfig.path_str(loc)}: a Go template "
                                        f"needs {gotemplate.NAME} (make amtemplate); kubesight's default is used here "
                                        "(its own templates are $title, $alerts, $label_NAME ...)")
                    elif (isinstance(c, dict) and key in TEMPLATED.get(kind, ()) and kind != "msteams_configs"
                          and isinstance(c.get(key), str) and "$" in c[key] and not _is_template(c[key])):
                        # Alertmanager sends a "$" as written ("costs $5"): so does kubesight in Alertmanager's kinds,
                        # with a warning, since here "$name" would be a field (a typo such as "$titel" lands here
                        # too); msteams_configs is not one of Alertmanager 0.25's, so a typo there stays an error
                        c[key] = c[key].replace("$", "$$")
                        loc = ("receivers", i, kind, j, key)
                        warnings.append(f"{doc.source}:{doc.line_of(loc)}: {yamlconfig.path_str(loc)}: not a "
                                        "kubesight template ($title, $alerts, $label_NAME ...); sent as written, "
                                        "as Alertmanager would")
        for kind, pairs in GLOBAL_DEFAULTS.items():
            for c in _seq(r.get(kind)):
                if isinstance(c, dict):
                    for g, key in pairs:
                        taken = key in c or f"{key}_file" in c or (key.endswith("_file")
                                                                    and key.removesuffix("_file") in c)
                        if glob.get(g) is not None and not taken:
                            c[key] = glob[g]
        for c in _seq(r.get("slack_configs")):  # Alertmanager's default Slack URL
            if isinstance(c, dict) and "api_url" not in c and "api_url_file" not in c:
                for key in ("slack_api_url", "slack_api_url_file"):
                    if glob.get(key):
                        c[key.removeprefix("slack_")] = glob[key]
        warnings += _go_fields(doc, r, i, go)  # after the globals: a templated smtp_from is the receivers' too
    return warnings


def _go_fields(doc: Document, r: dict, i: int, go: bool) -> list[str]:
    """Warnings for the receiver ``r`` (as written): a Go template in a ``GO_FIELDS`` slot without the helper
    (an optional field falls back to kubesight's default, any other is sent as written), and one anywhere else,
    which nothing runs: no "{{ ... }}" goes out as literal text without a word."""
    warnings, ran = [], set()

    def warn(loc: tuple, what: str) -> None:
        warnings.append(f"{doc.source}:{doc.line_of(loc)}: {yamlconfig.path_str(loc)}: {what}")

    for kind, specs in GO_FIELDS.items():
        model = _model_in(ReceiverConfig.model_fields[kind].annotation)[0]
        for j, c in enumerate(_seq(r.get(kind))):
            if not isinstance(c, dict):
                continue
            for spec in specs:
                for sub, owner, key in list(_slots(c, spec)):
                    ran.add((kind, j) + sub)
                    if go or not gotemplate.is_go(owner.get(key)):
                        continue
                    field = model.model_fields.get(_attr(model, key)) if len(sub) == 1 else None
                    if field is not None and not field.is_required():
                        owner.pop(key)
                        then = "kubesight's default is used here"
                    else:
                        then = "sent as written"
                    warn(("receivers", i, kind, j) + sub, f"a Go template needs {gotemplate.NAME} (make amtemplate); "
                                                           f"{then}")
    for kind in [k for k in r if isinstance(k, str) and k.endswith("_configs")]:
        for j, c in enumerate(_seq(r.get(kind))):
            for sub, value in _strings(c):
                templated = len(sub) == 1 and sub[0] in TEMPLATED.get(kind, ())  # checked and run, or warned above
                if gotemplate.is_go(value) and not templated and (kind, j) + sub not in ran:
                    warn(("receivers", i, kind, j) + sub, "a Go template is not run in this field (neither kubesight "
                                                          "nor Alertmanager runs one here); sent as written")
    return warnings


_MATCH_MAPS = ("match", "match_re", "source_match", "source_match_re", "target_match", "target_match_re")


def _null_is_empty(data: dict) -> None:
    """A null value in a deprecated match map is "" in Go's yaml.v2 (a map's value, not a field left unset):
    ``match: {severity: ~}`` matches alerts without a severity, as in Alertmanager."""
    def fix(owner) -> None:
        for key in _MATCH_MAPS:
            m = owner.get(key) if isinstance(owner, dict) else None
            if isinstance(m, dict):
                for name, v in m.items():
                    if v is None:
                        m[name] = ""

    def route(r) -> None:
        fix(r)
        for child in _seq(r.get("routes")) if isinstance(r, dict) else ():
            route(child)

    route(data.get("route"))
    for rule in _seq(data.get("inhibit_rules")):
        fix(rule)


def _load(doc: Document, files: bool = True) -> RoutingConfig:
    """Read as Alertmanager reads its file (Go's yaml.v2): a null is no value (``routes: ~``), and an unquoted
    scalar where a string belongs is the text written (``end_time: 17:00``, ``years: [2024]``, ``code: 500``).
    ``files``: also refuse ``*_file`` keys naming files that cannot be read (False: the file alone, as promtool's
    ``--syntax-only``, e.g. a manifest's routing checked away from the cluster that mounts its secrets)."""
    if isinstance(doc.data, dict):
        _null_is_empty(doc.data)
        doc.data = yamlconfig.without_nulls(doc.data)
    # looked at as written: _modernise copies the globals into the receivers, where they have no line of their own
    unreadable = _unreadable_files(doc.data) if files and isinstance(doc.data, dict) else []
    warnings = _modernise(doc) if isinstance(doc.data, dict) else []
    cfg = doc.validate(RoutingConfig, go_strings=True)
    if isinstance(doc.data, dict):
        for loc, message in _cross_refs(doc.data):
            doc.error(loc, message)
    if cfg is not None and not doc.errors:
        _go_templates(doc, cfg)
    for loc, message in unreadable:  # after the templates' check, which they must not hold back
        doc.error(loc, message)
    doc.raise_for_errors()
    cfg._warnings = warnings
    return cfg


def _unreadable_files(data: dict) -> list[tuple[tuple, str]]:
    """Every ``*_file`` of the globals and the receivers (secrets, URLs, TLS certificates and keys: the schema's
    keys, at any depth) that cannot be read.  The worker reads them when it loads the file (``alerts.receivers``),
    so a missing one would stop it there, without the line that names it; relative paths are read as the worker
    reads them, from its working directory.  amtool check-config does not look at them (Alertmanager reads most at
    notification time); promtool check config does, and kubesight follows it since it reads them at load."""
    errs: list[tuple[tuple, str]] = []

    def walk(model: type[BaseModel], value, path: tuple) -> None:
        if not isinstance(value, dict):
            return  # the schema's error
        for name, field in model.model_fields.items():
            key = field.alias or name
            v = value.get(key)
            if key.endswith("_file") and isinstance(v, str) and v:  # "" is no file (Go's zero value: not set)
                why = yamlconfig.unreadable(v)
                if why is not None:
                    # a secret slot's value may be the secret itself, pasted where its file's path belongs
                    said = "the file named there" if yamlconfig.is_secret_key(key) else \
                        v if v.isprintable() else shown(v)
                    if not os.path.isabs(v):  # the routing file's folder is not where it is looked for
                        said += f" (relative to the working directory, {os.getcwd()})"
                    errs.append((path + (key,), f"cannot read {said}: {why}"))
                elif key.endswith("url_file") and not _url_in(v):  # else retried as a connection error, for hours
                    errs.append((path + (key,), "the file's content (not shown: a secret) must be an http:// or "
                                                "https:// URL"))
                continue
            sub, many = _model_in(field.annotation)
            if sub is not None and many:
                for i, item in enumerate(_seq(v)):
                    walk(sub, item, path + (key, i))
            elif sub is not None:
                walk(sub, v, path + (key,))

    walk(GlobalConfig, data.get("global"), ("global",))
    for i, r in enumerate(_seq(data.get("receivers"))):
        walk(ReceiverConfig, r, ("receivers", i))
    return errs


def _url_in(path: str) -> bool:
    """Whether the file holds an http(s) URL, as the receivers read it (``core.httpauth.secret``: stripped)."""
    try:
        with open(path, encoding="utf-8") as fh:
            _url(fh.read().strip())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return True


def _model_in(annotation) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds (``X``, ``X | None``, ``list[X]``) and whether it is a list of them."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if origin is list and args:
        return _model_in(args[0])[0], True
    for a in args if origin is not None else ():  # a union (X | None) or Annotated[X, ...]
        found = _model_in(a)
        if found[0] is not None:
            return found
    return None, False


def _go_templates(doc: Document, cfg: RoutingConfig) -> None:
    """Each message field that is a Go template, checked by Alertmanager's parser (an error names its file, line
    and path) and kept as a ``GoText`` that carries the routing file's template files, as Alertmanager resolves
    them (relative to the file)."""
    fields = [(("receivers", i, kind, j, key), c, key) for i, r in enumerate(cfg.receivers) for kind, keys in
              TEMPLATED.items() for j, c in enumerate(getattr(r, kind)) for key in keys
              if gotemplate.is_go(getattr(c, key))]
    fields += [(("receivers", i, kind, j) + sub, owner, key) for i, r in enumerate(cfg.receivers)
               for kind, specs in GO_FIELDS.items() for j, c in enumerate(getattr(r, kind)) for spec in specs
               for sub, owner, key in _slots(c, spec) if gotemplate.is_go(_get(owner, key))]
    if not gotemplate.available():
        return
    base = Path(doc.source).parent if doc.source and not doc.source.startswith("<") else Path.cwd()
    files = [str(base / f) for f in cfg.templates]
    if not (fields or cfg.templates):
        _am_defaults(cfg, files)
        return
    try:  # the template files first (as amtool check-config parses them), then each field with them
        errors = gotemplate.check([""] + [_get(c, key) for _, c, key in fields], files)
    except RuntimeError as exc:
        doc.error(("templates",), f"{gotemplate.NAME} failed: {exc}")
        return
    if errors[0]:
        doc.error(("templates",), errors[0])
        return
    for (loc, c, key), err in zip(fields, errors[1:], strict=True):
        if err:
            doc.error(loc, err)
            continue
        if len(loc) == 5 and key in TEMPLATED.get(loc[2], ()):  # a message field: kubesight's template if it fails
            default = type(c).model_fields[key].default
            fallback = default if isinstance(default, str) else None
        else:  # a plain one: its default as written ("" in a map or a list, or where it has none)
            default = type(c).model_fields[_attr(type(c), key)].default if isinstance(c, BaseModel) else ""
            fallback = default.replace("$", "$$") if isinstance(default, str) else ""
        _put(c, key, gotemplate.GoText.of(_get(c, key), files, html=loc[2] == "email_configs" and key == "html",
                                          fallback=fallback))
    _am_defaults(cfg, files)


def _am_defaults(cfg: RoutingConfig, files: list[str]) -> None:
    """Alertmanager's default (``AM_DEFAULTS``) in each field of it left unset, as a ``GoText`` of ``files`` whose
    fallback is kubesight's default; an email that sets no ``text`` then has no text/plain part."""
    for r in cfg.receivers:
        for kind, defaults in AM_DEFAULTS.items():
            for c in getattr(r, kind):
                for key, text in defaults.items():
                    key, _, item = key.partition(".")
                    if item:  # a map's entry: added unless the config has that entry
                        if item not in getattr(c, key):
                            getattr(c, key)[item] = gotemplate.GoText.of(text, files, fallback="")
                    elif key not in c.model_fields_set:
                        default = type(c).model_fields[key].default
                        fallback = (EmailConfig.model_fields["text"].default if key == "html" else
                                    default if key in TEMPLATED[kind] else (default or "").replace("$", "$$"))
                        setattr(c, key, gotemplate.GoText.of(text, files, html=key == "html", fallback=fallback))
                if kind == "email_configs" and "text" not in c.model_fields_set:
                    c.text = None


_SHOWN = ("external_url", "token_url")  # URLs in a secret-looking slot that carry no secret


# keys whose every value is a secret, whatever it is called (a Proxy-Authorization header was shown in clear text)
_ALL_SECRET = frozenset({"proxy_connect_header"})


def redacted(text: str) -> str:
    """``text`` with the value of every secret slot (``yamlconfig.is_secret_key``: passwords, keys, tokens,
    receiver URLs ...) replaced by ``<secret>`` and every comment taken out (an old token is often kept in one;
    Alertmanager re-marshals its config, so its ``original`` has none), the rest (layout, order) as written.

    >>> print(redacted("receivers:\\n  - name: r  # ops\\n    webhook_configs: [{url: 'http://h/T0K3N', max_alerts: 2}]\\n"))
    receivers:
      - name: r
        webhook_configs: [{url: <secret>, max_alerts: 2}]
    <BLANKLINE>
    >>> print(redacted("http_config:\\n  proxy_connect_header: {Proxy-Authorization: ['Basic c2VjcmV0']}\\n"))
    http_config:
      proxy_connect_header: {Proxy-Authorization: [<secret>]}
    <BLANKLINE>
    >>> print(redacted("# old: http://h/OLD\\nbasic_auth:\\n  password: |  # rotated\\n    hunter2\\n\\nx: 1\\n"))
    basic_auth:
      password: <secret>
    <BLANKLINE>
    x: 1
    <BLANKLINE>
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        root = yaml.compose(text, Loader=loader)
        tokens = list(yaml.scan(text, Loader=loader))
    except yaml.YAMLError:
        return text  # not YAML: load refused it already
    spans: set[tuple[int, int, str]] = set()  # a set: an alias visits its anchor's node again

    def value(node) -> None:
        start, end = node.start_mark.index, node.end_mark.index
        if node.style in ("|", ">"):  # a block scalar's span runs over its trailing line breaks: keep them
            end = start + len(text[start:end].rstrip())
        anchor = re.search(r"&\S+", re.match(r"(?:[&!]\S*\s+)*", text[start:end]).group())
        spans.add((start, end, anchor.group() + " " if anchor else ""))  # an alias elsewhere may name it (a tag goes)

    def every_value(node) -> None:
        if isinstance(node, yaml.ScalarNode):
            if node.value != "":
                value(node)
        elif isinstance(node, yaml.MappingNode):
            for _, v in node.value:
                every_value(v)
        elif isinstance(node, yaml.SequenceNode):
            for v in node.value:
                every_value(v)

    def walk(node) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value in _ALL_SECRET:
                    every_value(v)  # header name -> [values]: Alertmanager keeps each value as a secret
                elif isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode) and v.value != "" \
                        and yamlconfig.is_secret_key(k.value) and k.value not in _SHOWN:
                    value(v)
                else:
                    walk(v)
        elif isinstance(node, yaml.SequenceNode):
            for v in node.value:
                walk(v)

    walk(root)
    edits = [(start, end, anchor + "<secret>") for start, end, anchor in spans]
    edits += [c for c in _comments(text, tokens) if not any(s <= c[0] < e for s, e, _ in spans)]  # not twice
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _comments(text: str, tokens: list) -> list[tuple[int, int, str]]:
    """Edits taking every comment out of ``text``: the text between tokens is blanks and comments only (a ``#``
    inside a scalar is part of its token), and a block scalar's header line may end in one.  A comment's line
    goes with it when nothing else is on it, unless a keep-chomped block scalar (``|+``) is just before: that
    line ends the scalar's trailing blank lines, so a bare ``#`` stays in its place."""
    import yaml

    edits: list[tuple[int, int, str]] = []

    def take_out(i: int, end: int, keep_line: bool) -> None:
        start = i
        while start > 0 and text[start - 1] in " \t":
            start -= 1
        if start == 0 or text[start - 1] in "\r\n":  # a line of its own
            if keep_line:
                edits.append((i, end, "#"))
                return
            end += 2 if text.startswith("\r\n", end) else 1 if end < len(text) else 0
        edits.append((start, end, ""))

    done, previous = 0, None
    for tok in tokens:
        start, end = tok.start_mark.index, tok.end_mark.index
        if start > done:
            keep = isinstance(previous, yaml.ScalarToken) and previous.style in ("|", ">") \
                and "+" in text[previous.start_mark.index:_line_end(text, previous.start_mark.index)]
            i = text.find("#", done, start)
            while i != -1:
                eol = _line_end(text, i)
                take_out(i, eol, keep)
                i = text.find("#", eol, start)
        if isinstance(tok, yaml.ScalarToken) and tok.style in ("|", ">"):  # ``password: |  # rotated``
            header_end = _line_end(text, start)
            i = text.find("#", start, header_end)
            if i != -1:
                take_out(i, header_end, False)
        if end > start:
            previous = tok
        done = max(done, end)
    return edits


def _line_end(text: str, i: int) -> int:
    """Where the line holding ``text[i]`` ends (before its line break)."""
    ends = [j for j in (text.find("\n", i), text.find("\r", i)) if j != -1]
    return min(ends) if ends else len(text)


def load_text(text: str, source: str = "<routing>", *, files: bool = True) -> RoutingConfig:
    """Parse and validate; raises ConfigError listing every problem with file, line and YAML path."""
    cfg = _load(yamlconfig.parse(text, source), files)
    cfg._original = redacted(text)
    return cfg


def load(path, *, files: bool = True) -> RoutingConfig:
    return load_with_data(path, files=files)[0]


def load_with_data(path, *, files: bool = True) -> tuple[RoutingConfig, dict]:
    """``load``, and the mapping it validated (Alertmanager's deprecated forms in their modern equivalents): what a
    tool that writes a variant of the file starts from (the demo points the webhooks at its own servers), read
    once by the one loader rather than parsed again without its checks."""
    doc = yamlconfig.read(path)
    cfg = _load(doc, files)
    cfg._original = redacted(Path(path).read_text(encoding="utf-8"))
    return cfg, doc.data
