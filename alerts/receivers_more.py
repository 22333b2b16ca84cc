"""More of Alertmanager's receivers: Pushover, Splunk On-Call (VictorOps), WeChat, Amazon SNS, Telegram, Webex,
Discord, PagerDuty's Events API v1 (``service_key``) and v2 ``images``/``links``, Slack's and Opsgenie's
further message fields (attachment fields and actions; responders, entity, actions, note, update_alerts);
and ``http_config`` for all.

Each kind follows its service's published request format, as Alertmanager's notifiers send it (one request
per notification; message text from ``alerts.payload.MessageTemplate``, overridable per integration).  An
attempt here is one ``Outcome`` like any other receiver's: ``alerts.receivers.deliver`` retries it with the
same backoff, ``Retry-After`` and budget, and a final failure goes to the dead-letter topic.  Every secret
(keys, tokens, passwords, signed headers, a WeChat access token) is redacted from the reason.

``http_options`` turns an ``http_config`` into what each HTTP request carries: the TLS context, an
``Authorization`` header (``authorization``, ``bearer_token``, ``basic_auth``; a header the service's own
format sets wins, as in prometheus/common), ``proxy_url`` and ``follow_redirects``.

>>> opts = http_options(HTTPConfig(basic_auth={"username": "u", "password": "pw-SECRET"}))
>>> dict(opts.headers)["Authorization"], "pw-SECRET" in opts.secrets
('Basic dTpwdy1TRUNSRVQ=', True)
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import html
import re
import time
from dataclasses import dataclass, field
from urllib.parse import quote_plus, unquote, urlencode, urlsplit

import orjson

from alerts import payload
from alerts.config import HTTPConfig, TLSConfig
from alerts.sending import Outcome, exchange, redact
from alerts.sending import render as _render
from alerts.sending import value as _value
from alerts.sending import values as _values
from core.httpauth import secret as _secret

KINDS = frozenset({"pushover", "victorops", "wechat", "sns", "telegram", "webex", "discord", "pagerduty_v1",
                   "pagerduty_v2", "slack_fields", "opsgenie_fields"})
PAGERDUTY_V1 = "https://events.pagerduty.com/generic/2010-04-15/create_event.json"
PAGERDUTY_V2 = "https://events.pagerduty.com/v2/enqueue"
FORM = "application/x-www-form-urlencoded; charset=utf-8"


@dataclass(frozen=True, slots=True)
class HTTPOptions:
    """What an ``http_config`` adds to each request; ``secrets`` are redacted wherever a reason is written."""

    ssl: object = None
    headers: tuple = ()
    kwargs: tuple = ()  # extra aiohttp request arguments: proxy, proxy_headers, allow_redirects, server_hostname
    secrets: tuple = ()
    oauth2: OAuth2Client | None = None


@dataclass(frozen=True, slots=True)
class OAuth2Client:
    """``http_config.oauth2``: client credentials (HTTP Basic, as golang.org/x/oauth2 sends them) for a token."""

    token_url: str
    client_id: str = field(repr=False)
    client_secret: str = field(repr=False)
    scopes: tuple = ()
    params: tuple = ()
    ssl: object = None
    proxy: str | None = None

    def key(self) -> tuple:
        return self.token_url, self.client_id, self.scopes, self.params


_TLS_VERSIONS = {"TLS10": "TLSv1", "TLS11": "TLSv1_1", "TLS12": "TLSv1_2", "TLS13": "TLSv1_3"}


def tls_context(t: TLSConfig):
    """The ``ssl.SSLContext`` of a ``tls_config`` (CA, client certificate, verification, ``min_version`` and
    ``max_version``), or None when nothing differs from the default (verified against the system's CAs).

    The one builder for every receiver, HTTP and email alike: email built its own and quietly ignored the
    versions (an audit).  ``server_name`` is not in a context: HTTP passes it per request
    (``server_hostname``), email through ``ServerNameContext``.

    >>> tls_context(TLSConfig()) is None, tls_context(TLSConfig(min_version="TLS13")).minimum_version.name
    (True, 'TLSv1_3')
    """
    import ssl

    from core.webconfig import client_ssl_context

    ctx = client_ssl_context(t.ca_file, t.cert_file, t.key_file, t.insecure_skip_verify)
    if t.min_version or t.max_version:
        ctx = ctx or ssl.create_default_context()
        if t.min_version:
            ctx.minimum_version = getattr(ssl.TLSVersion, _TLS_VERSIONS[t.min_version])
        if t.max_version:
            ctx.maximum_version = getattr(ssl.TLSVersion, _TLS_VERSIONS[t.max_version])
    return ctx


class ServerNameContext:
    """An SSL context that checks the server's certificate against (and sends as SNI) ``tls_config.server_name``
    rather than the host connected to: smtplib hands its own host to ``wrap_socket``, with no way to name
    another, so ``server_name`` was ignored for email (Alertmanager checks against it)."""

    def __init__(self, ctx, server_name: str):
        self.ctx, self.server_name = ctx, server_name

    def wrap_socket(self, sock, *args, server_hostname=None, **kwargs):
        return self.ctx.wrap_socket(sock, *args, server_hostname=self.server_name, **kwargs)


def userinfo_secrets(url: str) -> list[str]:
    """The password of a URL's userinfo (``http://user:pw@host/``), as written and percent-decoded, and the
    ``Basic`` credentials aiohttp builds from it (latin-1, its default; UTF-8 too): a receiver or proxy that
    refuses them may quote either back in its answer, which becomes the reason.

    >>> userinfo_secrets("http://alice:pw%21@h/"), userinfo_secrets("http://alice@h/"), userinfo_secrets("http://h/")
    (['pw%21', 'pw!', 'YWxpY2U6cHch'], [], [])
    """
    parts = urlsplit(url)
    if not parts.password:
        return []  # a user alone: the header aiohttp sends carries no secret
    user, password = unquote(parts.username or ""), unquote(parts.password)
    out = [parts.password, password]
    for encoding in ("latin-1", "utf-8"):
        try:
            out.append(base64.b64encode(f"{user}:{password}".encode(encoding)).decode())
        except UnicodeEncodeError:
            pass
    return list(dict.fromkeys(out))


def http_options(http: HTTPConfig | None, secrets: tuple = ()) -> HTTPOptions:
    """The request options of an ``http_config`` (credential files read now, as every ``*_file`` is at load)."""
    if http is None:
        return HTTPOptions(secrets=tuple(s for s in secrets if s))
    t = http.tls_config
    ctx = tls_context(t)
    headers, kwargs, found = [], [], list(secrets)
    a, b = http.authorization, http.basic_auth
    if a is not None and (a.credentials or a.credentials_file):
        cred = _secret(a.credentials, a.credentials_file)
        headers.append(("Authorization", f"{a.type} {cred}"))
        found += [cred, f"{a.type} {cred}"]
    elif b is not None:
        password = _secret(b.password, b.password_file) if (b.password or b.password_file) else ""
        token = base64.b64encode(f"{b.username}:{password}".encode()).decode()
        headers.append(("Authorization", f"Basic {token}"))
        found += [password, token]
    if http.proxy_url:
        kwargs.append(("proxy", http.proxy_url))
        found += userinfo_secrets(http.proxy_url)  # aiohttp's Proxy-Authorization, as the URL's userinfo
        if http.proxy_connect_header:
            kwargs.append(("proxy_headers", {k: ", ".join(v) for k, v in http.proxy_connect_header.items()}))
    if not http.follow_redirects:
        kwargs.append(("allow_redirects", False))
    if t.server_name:
        kwargs.append(("server_hostname", t.server_name))
    oauth = None
    if http.oauth2 is not None:
        o = http.oauth2
        secret = _secret(o.client_secret, o.client_secret_file)
        oauth = OAuth2Client(o.token_url, o.client_id, secret, tuple(o.scopes), tuple(sorted(o.endpoint_params.items())),
                             tls_context(o.tls_config), o.proxy_url)
        found.append(secret)
    return HTTPOptions(ctx, tuple(headers), tuple(kwargs), tuple(s for s in found if s), oauth)


# ---------------------------------------------------------------- registration


def integrations(receiver) -> list[dict]:
    """The integrations (``alerts.receivers.Integration`` arguments) of a receiver's pushover, victorops,
    wechat, sns, telegram, webex and discord configs."""
    name, out = receiver.name, []

    def add(kind, i, c, url, secret=None, extra=()):
        out.append(dict(receiver=name, name=f"{name}/{kind}[{i}]", kind=kind, url=url, timeout=c.timeout,
                        send_resolved=c.send_resolved, cfg=c, secret=secret,
                        http=HTTPOptions(secrets=tuple(s for s in extra if s))))

    for i, c in enumerate(receiver.pushover_configs):
        add("pushover", i, c, c.api_url, c.token, (c.user_key,))
    for i, c in enumerate(receiver.victorops_configs):
        add("victorops", i, c, c.api_url, _secret(c.api_key, c.api_key_file))
    for i, c in enumerate(receiver.wechat_configs):
        add("wechat", i, c, c.api_url if c.api_url.endswith("/") else c.api_url + "/", c.api_secret,
            (quote_plus(c.api_secret or ""),))
    for i, c in enumerate(receiver.sns_configs):
        add("sns", i, c, c.api_url or "https://sns.amazonaws.com/", c.sigv4.secret_key, (c.sigv4.access_key,))
    for i, c in enumerate(receiver.telegram_configs):
        add("telegram", i, c, c.api_url.rstrip("/"), c.bot_token)
    for i, c in enumerate(receiver.webex_configs):
        add("webex", i, c, c.api_url)
    for i, c in enumerate(receiver.discord_configs):
        add("discord", i, c, _secret(c.webhook_url, c.webhook_url_file))
    return out


def pagerduty(receiver: str, i: int, c) -> dict | None:
    """The Integration arguments of a PagerDuty config this module sends (v1 with a service key, v2 with
    images or links), else None (``alerts.receivers`` sends plain v2)."""
    common = dict(receiver=receiver, name=f"{receiver}/pagerduty[{i}]", timeout=c.timeout,
                  send_resolved=c.send_resolved, cfg=c)
    if c.service_key or c.service_key_file:
        url = PAGERDUTY_V1 if c.url == PAGERDUTY_V2 else c.url
        return dict(common, kind="pagerduty_v1", url=url, secret=_secret(c.service_key, c.service_key_file))
    if c.images or c.links:
        return dict(common, kind="pagerduty_v2", url=c.url, secret=_secret(c.routing_key, c.routing_key_file))
    return None


def slack_kind(c) -> str:
    """``slack_fields`` when the config sets any of Alertmanager's attachment fields, else plain ``slack``."""
    extra = [getattr(c, k) for k in ("color", "title", "title_link", "pretext", "text", "fallback", "footer",
                                     "callback_id", "icon_emoji", "icon_url", "image_url", "thumb_url", "mrkdwn_in")]
    return "slack_fields" if any(v is not None for v in extra) or c.fields or c.actions or c.link_names \
        else "slack"


def opsgenie_kind(c) -> str:
    return "opsgenie_fields" if c.responders or c.entity or c.actions or c.note or c.update_alerts else "opsgenie"


def with_http(integ, http: HTTPConfig | None):
    """``integ`` with its ``http_config`` applied (TLS context, auth header, proxy), its own secrets kept."""
    own = integ.http.secrets if integ.http is not None else ()
    opts = http_options(http, own)
    return dataclasses.replace(integ, ssl=opts.ssl, http=opts)


# ---------------------------------------------------------------- sending


def _firing_only(integ, note: dict) -> dict | None:
    if integ.send_resolved:
        return note
    note = payload.firing_only(note)
    return note if note["alerts"] else None


def _cut(text: str, n: int) -> str:
    """At most ``n`` characters, with an ellipsis when cut (as Alertmanager's notify.Truncate)."""
    return text if len(text) <= n else text[: n - 1] + "…"


def _cut_bytes(text: str, n: int) -> str:
    raw = text.encode()
    if len(raw) <= n:
        return text
    return raw[: n - 3].decode("utf-8", "ignore") + "…"


async def request(session, integ, method: str, url: str, body: bytes | None, headers: dict,
                  secrets: list[str] = (), env_for=None) -> tuple[Outcome, bytes]:
    """One HTTP exchange with the integration's TLS, auth and proxy options; the outcome (secrets redacted)
    and the response body (empty on a transport failure).  ``env_for(url, has_authorization)``: the proxy
    and netrc arguments the session's environment gives (None: the session applies its own)."""

    if not hasattr(session, "request") and hasattr(session, "aiohttp"):  # delivery's own session (a lean
        session = session.aiohttp()  # client for plain webhooks): these kinds go through its aiohttp session
    opts = integ.http or HTTPOptions()
    headers = {**dict(opts.headers), **headers}
    secrets = list(secrets)
    if opts.oauth2 is not None and "Authorization" not in headers:
        token, failed = await oauth2_token(session, integ, opts.oauth2)
        if failed is not None:
            return failed, b""
        headers["Authorization"] = f"Bearer {token}"
        secrets.append(token)
    env = dict(env_for(url, "Authorization" in headers)) if env_for is not None else {}
    out, data = await exchange(session, method, url, body, headers, integ.timeout, integ.ssl,
                               **{**env, **dict(opts.kwargs)})
    if out.status == 401 and opts.oauth2 is not None:
        _TOKENS.pop(opts.oauth2.key(), None)  # refused: the next attempt fetches a new token
    if out.reason:
        out.reason = redact(out.reason, integ.secrets() + secrets)
    return out, data


_TOKENS: dict[tuple, tuple[str, float]] = {}  # OAuth2Client.key() -> (access token, when to fetch a new one)


async def oauth2_token(session, integ, o: OAuth2Client) -> tuple[str | None, Outcome | None]:
    """A valid access token (cached until 10 s before ``expires_in``), or the failed outcome of fetching one."""

    got = _TOKENS.get(o.key())
    if got is not None and got[1] > time.time():
        return got[0], None
    form = {"grant_type": "client_credentials", **dict(o.params)}
    if o.scopes:
        form["scope"] = " ".join(o.scopes)
    basic = base64.b64encode(f"{quote_plus(o.client_id)}:{quote_plus(o.client_secret)}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}", "Content-Type": FORM, "Accept": "application/json"}
    secrets = integ.secrets() + [o.client_secret, basic]
    out, data = await exchange(session, "POST", o.token_url, urlencode(form).encode(), headers, integ.timeout, o.ssl,
                               **({"proxy": o.proxy} if o.proxy else {}))
    if out.ok:
        try:
            doc = orjson.loads(data)
            token, expires = str(doc["access_token"]), float(doc.get("expires_in") or 300)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            out = Outcome(False, True, out.status, "no access_token in the answer")
        else:
            _TOKENS[o.key()] = (token, time.time() + max(0.0, expires - 10))
            return token, None
    out.reason = redact(f"oauth2 token: {out.reason}", secrets)
    return None, out


def _json(body) -> tuple[bytes, dict]:
    return orjson.dumps(body), {"Content-Type": "application/json"}


def sends(integ) -> bool:
    """Whether this module sends for ``integ``: its kinds, and any integration with ``http_config.oauth2``."""
    return integ.kind in KINDS or (integ.http is not None and integ.http.oauth2 is not None)


async def send_once(session, integ, note: dict, external_url: str, env_for=None) -> Outcome:
    """One attempt at a notification for an integration ``sends`` is true of (``env_for``: see ``request``)."""
    if integ.kind not in KINDS:  # a kind of alerts.receivers with an OAuth 2 token: its request, our exchange
        req = integ.request(note, external_url, time.time())
        if req is None:
            return Outcome(True, reason="skipped (only resolved alerts; send_resolved is off)")
        url, body, headers = req
        out, _ = await request(session, integ, "POST", url, body, {"Content-Type": "application/json",
                                                                     "Idempotency-Key": note["id"], **headers},
                               env_for=env_for)
        return out
    note = _firing_only(integ, note)
    if note is None:
        return Outcome(True, reason="skipped (only resolved alerts; send_resolved is off)")
    if integ.kind == "wechat":
        return await _wechat(session, integ, note, external_url, env_for)
    if integ.kind == "sns":
        return await _sns(session, integ, note, external_url, env_for)
    if integ.kind == "opsgenie_fields":
        return await _opsgenie(session, integ, note, external_url, env_for)
    url, body, headers = BUILDERS[integ.kind](integ, note, external_url)
    out, _ = await request(session, integ, "POST", url, body, {"Idempotency-Key": note["id"], **headers},
                           env_for=env_for)
    if integ.kind == "pagerduty_v1" and out.status == 403:
        out.retryable = True  # the v1 API's rate limit answer (Alertmanager retries it too)
    return out


def pushover_form(integ, note: dict, external_url: str) -> dict:
    """Pushover's message parameters (https://pushover.net/api)."""
    c = integ.cfg
    firing = note["status"] == "firing"
    form = {"token": c.token, "user": c.user_key,
            "title": _cut(_render(c.title, note, external_url), 250),
            "message": _cut(_render(c.message, note, external_url), 1024) or "(no details)",
            "url": _cut(_value(c.url, note, external_url) or external_url, 512),
            "priority": _value(c.priority, note, external_url) or ("2" if firing else "0"),
            "retry": str(int(c.retry)), "expire": str(int(c.expire))}
    for k in ("url_title", "sound"):
        v = _value(getattr(c, k), note, external_url)
        if v:
            form[k] = v
    if c.html:
        form["html"] = "1"
    return form


def _pushover(integ, note, external_url):
    return integ.url, urlencode(pushover_form(integ, note, external_url)).encode(), {"Content-Type": FORM}


def victorops_body(integ, note: dict, external_url: str) -> dict:
    """Splunk On-Call's REST alert (entity_id = the group key's hash; RECOVERY resolves it)."""
    c = integ.cfg
    kind = _value(c.message_type, note, external_url)  # run first, then checked (Alertmanager's order)
    kind = kind if kind in ("CRITICAL", "WARNING", "INFO") else "CRITICAL"
    body = {"message_type": kind if note["status"] == "firing" else "RECOVERY",
            "entity_id": payload.key_hash(payload.group_key(note)),
            "entity_display_name": _render(c.entity_display_name, note, external_url),
            "state_message": _cut(_render(c.state_message, note, external_url), 20480),
            "monitoring_tool": _value(c.monitoring_tool, note, external_url)}
    body.update(_values(c.custom_fields, note, external_url))
    return body


def _victorops(integ, note, external_url):
    base = integ.url if integ.url.endswith("/") else integ.url + "/"
    routing_key = _value(integ.cfg.routing_key, note, external_url)  # a template picks the team, per notification
    return f"{base}{integ.secret}/{routing_key}", *_json(victorops_body(integ, note, external_url))


def _telegram_escape(text: str, mode: str) -> str:
    r"""kubesight's plain text made literal in Telegram's ``parse_mode`` (its labels hold ``<``, ``_``, ``.`` ...).

    >>> _telegram_escape("a_b [x] <y> 1.5!", "MarkdownV2"), _telegram_escape("a_b <y>", "HTML")
    ('a\\_b \\[x\\] <y\\> 1\\.5\\!', 'a_b &lt;y&gt;')
    """
    if mode == "HTML":
        return html.escape(text, quote=False)
    if mode == "MarkdownV2":  # https://core.telegram.org/bots/api#markdownv2-style
        return re.sub(r"([_*\[\]()~`>#+\-=|{}.!\\])", r"\\\1", text)
    if mode == "Markdown":
        return re.sub(r"([_*`\[])", r"\\\1", text)
    return text


def telegram_body(integ, note: dict, external_url: str) -> dict:
    """The Bot API's sendMessage; kubesight's templates are plain text, so HTML mode gets them escaped."""
    c = integ.cfg
    text = _telegram_escape(_render(c.message, note, external_url), c.parse_mode)
    # Alertmanager 0.25 always turns link previews off (its telebot options; no setting) and sends
    # disable_notification only when set (omitempty)
    body = {"chat_id": c.chat_id, "text": _cut(text, 4096), "disable_web_page_preview": True}
    if c.disable_notifications:
        body["disable_notification"] = True
    if c.parse_mode:
        body["parse_mode"] = c.parse_mode
    return body


def _telegram(integ, note, external_url):
    return f"{integ.url}/bot{integ.secret}/sendMessage", *_json(telegram_body(integ, note, external_url))


def _webex(integ, note, external_url):
    c = integ.cfg
    text = _cut_bytes(_render(c.message, note, external_url), 7439)
    return integ.url, *_json({"roomId": c.room_id, "markdown": text})


def discord_body(integ, note: dict, external_url: str) -> dict:
    """A Discord webhook message with one embed: red (0x992D22) while firing, green (0x2ECC71) when resolved."""
    c = integ.cfg
    return {"embeds": [{"title": _cut(_render(c.title, note, external_url), 256),
                        "description": _cut(_render(c.message, note, external_url), 4096),
                        "color": 0x992D22 if note["status"] == "firing" else 0x2ECC71}]}


def _discord(integ, note, external_url):
    return integ.url, *_json(discord_body(integ, note, external_url))


def pagerduty_v1_body(integ, note: dict, external_url: str) -> dict:
    """PagerDuty's Events API v1 (generic/2010-04-15/create_event.json), as Alertmanager's notifyV1 sends it."""
    c = integ.cfg
    firing = [a for a in note["alerts"] if a["status"] == "firing"]
    body = {"service_key": integ.secret, "incident_key": payload.key_hash(payload.group_key(note)),
            "event_type": "trigger" if note["status"] == "firing" else "resolve",
            "description": _cut(_render(c.description, note, external_url), 1024),
            "details": {"firing": "\n".join(payload._line(a) for a in firing), "num_firing": str(len(firing)),
                        "num_resolved": str(len(note["alerts"]) - len(firing)),
                        **_values(c.details, note, external_url)},
            "event_action": "", "payload": None}
    if note["status"] == "firing":
        body.update(client=_value(c.client, note, external_url),
                    client_url=_value(c.client_url, note, external_url) or external_url)
    return body


def _pagerduty_v1(integ, note, external_url):
    return integ.url, *_json(pagerduty_v1_body(integ, note, external_url))


def _pagerduty_v2(integ, note, external_url):
    url, raw, headers = dataclasses.replace(integ, kind="pagerduty").request(note, external_url, time.time())
    body = orjson.loads(raw)
    c = integ.cfg

    def run(item) -> dict:  # each of an image's or link's fields is a template in Alertmanager
        return {k: _value(getattr(item, k), note, external_url) for k in type(item).model_fields}

    # as Alertmanager 0.25 sends them: in a resolve too, every field (an empty one as ""), and an image without a src
    # or a link without an href left out
    images = [i for i in map(run, c.images) if i["src"]]
    links = [link for link in map(run, c.links) if link["href"]]
    if images:
        body["images"] = images
    if links:
        body["links"] = links
    return url, orjson.dumps(body), headers


def slack_body(integ, note: dict, external_url: str) -> dict:
    """kubesight's Slack message with Alertmanager's attachment fields, actions and icons where configured."""
    c = integ.cfg

    def v(text):  # Alertmanager runs every one of these through its templates (alerts.config.GO_FIELDS)
        return _value(text, note, external_url)

    body = payload.slack(note, v(c.channel), v(c.username), external_url)
    att = body["attachments"][0]
    for key in ("title", "pretext", "text", "fallback", "footer"):
        if getattr(c, key) is not None:
            att[key] = _render(getattr(c, key), note, external_url)
    for key in ("color", "title_link", "callback_id", "image_url", "thumb_url"):
        if getattr(c, key) is not None:
            att[key] = v(getattr(c, key))
    if not att.get("title_link"):
        att.pop("title_link", None)  # an empty link is not sent (omitempty in Alertmanager's)
    att["mrkdwn_in"] = c.mrkdwn_in if c.mrkdwn_in is not None else ["fallback", "pretext", "text"]
    if c.fields:
        att["fields"] = [{"title": v(f.title), "value": v(f.value),
                          "short": c.short_fields if f.short is None else f.short} for f in c.fields]
    if c.actions:
        att["actions"] = [_slack_action(a, v) for a in c.actions]
    for key in ("icon_emoji", "icon_url"):
        if getattr(c, key):
            body[key] = v(getattr(c, key))
    if c.link_names:
        body["link_names"] = True
    return body


def _slack_action(a, v) -> dict:
    """An action as Slack takes it, each of its texts (and its confirm's) run by ``v``; empty ones left out."""
    out = {k: x for k in ("type", "text", "url", "style", "name", "value") if (x := v(getattr(a, k)))}
    if a.confirm is not None:
        out["confirm"] = {k: x for k in ("text", "title", "ok_text", "dismiss_text") if (x := v(getattr(a.confirm, k)))}
    return out


def _slack_fields(integ, note, external_url):
    return integ.url, *_json(slack_body(integ, note, external_url))


BUILDERS = {"pushover": _pushover, "victorops": _victorops, "telegram": _telegram, "webex": _webex,
            "discord": _discord, "pagerduty_v1": _pagerduty_v1, "pagerduty_v2": _pagerduty_v2,
            "slack_fields": _slack_fields}


# ---------------------------------------------------------------- Opsgenie's further fields


async def _opsgenie(session, integ, note: dict, external_url: str, env_for) -> Outcome:
    """Alert creation with responders, entity, actions and note; with ``update_alerts``, the open alert's
    message and description updated too (``POST v2/alerts/{alias}/message|description?identifierType=alias``)."""
    c = integ.cfg
    url, raw, headers = dataclasses.replace(integ, kind="opsgenie").request(note, external_url, time.time())
    body = orjson.loads(raw)
    firing = note["status"] == "firing"
    if firing:  # each a template in Alertmanager (alerts.config.GO_FIELDS); actions split after it is run
        if c.responders:
            body["responders"] = [{k: x for k in ("id", "name", "username", "type")
                                   if (x := _value(getattr(r, k), note, external_url))} for r in c.responders]
        entity, actions, text = (_value(x, note, external_url) for x in (c.entity, c.actions, c.note))
        if entity:
            body["entity"] = entity
        if actions:
            body["actions"] = [a.strip() for a in actions.split(",") if a.strip()]
        if text:
            body["note"] = text
    out, _ = await request(session, integ, "POST", url, orjson.dumps(body),
                           {"Idempotency-Key": note["id"], **headers, "Content-Type": "application/json"},
                           env_for=env_for)
    if not (out.ok and firing and c.update_alerts):
        return out
    base = integ.url if integ.url.endswith("/") else integ.url + "/"
    alias = payload.key_hash(payload.group_key(note))
    for what in ("message", "description"):
        upd = {what: body[what]}
        out, _ = await request(session, integ, "POST", f"{base}v2/alerts/{alias}/{what}?identifierType=alias",
                               orjson.dumps(upd), {**headers, "Content-Type": "application/json"}, env_for=env_for)
        if not out.ok:
            out.reason = f"updating the {what}: {out.reason}"
            return out
    return out


# ---------------------------------------------------------------- WeChat: a token first, then the message

_WECHAT_TOKENS: dict[tuple[str, str], str] = {}  # (api_url, corp_id) -> access token, until WeChat says 42001


def wechat_body(integ, note: dict, external_url: str) -> dict:
    c = integ.cfg
    text = _cut(_render(c.message, note, external_url), 2048)
    body = {"msgtype": c.message_type, c.message_type: {"content": text}, "safe": "0"}
    for key, field_ in (("agentid", c.agent_id), ("touser", c.to_user), ("toparty", c.to_party), ("totag", c.to_tag)):
        v = _value(field_, note, external_url)  # each a template in Alertmanager
        if v:  # omitempty in Alertmanager's message: an empty one is not sent
            body[key] = v
    return body


def _errcode(data: bytes) -> tuple[int, str]:
    try:
        doc = orjson.loads(data)
        return int(doc.get("errcode", 0)), str(doc.get("errmsg", ""))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return -1, "response is not WeChat's JSON"


async def _wechat(session, integ, note: dict, external_url: str, env_for) -> Outcome:
    c = integ.cfg
    cache = (integ.url, c.corp_id)
    token = _WECHAT_TOKENS.get(cache)
    if token is None:
        query = urlencode({"corpid": c.corp_id, "corpsecret": integ.secret})
        out, data = await request(session, integ, "GET", f"{integ.url}gettoken?{query}", None, {}, env_for=env_for)
        if not out.ok:
            out.reason = f"gettoken: {out.reason}"
            return out
        try:
            token = str(orjson.loads(data)["access_token"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            code, msg = _errcode(data)
            return Outcome(False, True, out.status, redact(f"gettoken: no access_token (errcode {code}: {msg})",
                                                         integ.secrets()))
        _WECHAT_TOKENS[cache] = token
    url = f"{integ.url}message/send?{urlencode({'access_token': token})}"
    out, data = await request(session, integ, "POST", url, *_json(wechat_body(integ, note, external_url)),
                              secrets=[token], env_for=env_for)
    if not out.ok:
        return out
    code, msg = _errcode(data)
    if code == 0:
        return out
    if code == 42001:  # the access token expired: fetch a new one on the retry
        _WECHAT_TOKENS.pop(cache, None)
    return Outcome(False, code == 42001, out.status, redact(f"WeChat errcode {code}: {msg}", integ.secrets() + [token]))


# ---------------------------------------------------------------- Amazon SNS: SigV4 by botocore

_SNS_CREDENTIALS: dict[tuple, object] = {}  # _sns_key -> botocore credentials (refreshable for a role)


def _sns_key(integ) -> tuple:
    """What the credentials are cached by: the integration and its sigv4 settings, so a reload that changes its
    keys, profile or role does not go on signing with the old ones."""
    s = integ.cfg.sigv4
    return integ.name, s.access_key, s.secret_key, s.profile, s.role_arn


def sns_params(integ, note: dict, external_url: str) -> dict:
    """SNS Publish's query parameters (Action=Publish, Version=2010-03-31)."""
    c = integ.cfg
    message = _render(c.message, note, external_url)
    params = {"Action": "Publish", "Version": "2010-03-31"}
    topic, phone, target = (_value(x, note, external_url) for x in (c.topic_arn, c.phone_number, c.target_arn))
    if c.topic_arn:
        params["TopicArn"] = topic
        if topic.endswith(".fifo"):  # FIFO topics need a group and a dedup id: the group key's hash
            params["MessageGroupId"] = params["MessageDeduplicationId"] = payload.key_hash(payload.group_key(note))
    if c.phone_number:
        params["PhoneNumber"] = phone
        message = _cut(message, 140)  # an SMS
    if c.target_arn:
        params["TargetArn"] = target
    params["Message"] = _cut_bytes(message, 256 * 1024)
    subject = _render(c.subject, note, external_url)
    if subject and not c.phone_number:
        params["Subject"] = _cut(subject.replace("\n", " "), 100)
    for n, (k, v) in enumerate(sorted(c.attributes.items()), 1):
        params[f"MessageAttributes.entry.{n}.Name"] = k
        params[f"MessageAttributes.entry.{n}.Value.DataType"] = "String"
        params[f"MessageAttributes.entry.{n}.Value.StringValue"] = _value(v, note, external_url)
    return params


def sns_region(c, arns: tuple = ()) -> str:
    """The SigV4 region: configured, else the topic's or target's ARN (arn:aws:sns:<region>:...; ``arns``: as run
    for this notification, when templates), else AWS_REGION."""
    import os

    if c.sigv4.region:
        return c.sigv4.region
    for arn in arns or (c.topic_arn, c.target_arn):
        parts = arn.split(":")
        if len(parts) > 3 and parts[3]:
            return parts[3]
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def _sns_credentials(integ):
    """Static keys from sigv4, else botocore's chain (environment, shared files / profile, instance role);
    with role_arn, assumed through STS and refreshed before they expire.  Blocking: run in a thread."""
    import botocore.session
    from botocore.credentials import AssumeRoleCredentialFetcher, Credentials, DeferredRefreshableCredentials

    creds = _SNS_CREDENTIALS.get(_sns_key(integ))
    if creds is not None:
        return creds
    s = integ.cfg.sigv4
    session = botocore.session.Session(profile=s.profile) if s.profile else botocore.session.Session()
    creds = Credentials(s.access_key, s.secret_key) if s.access_key else session.get_credentials()
    if creds is None:
        raise LookupError("no AWS credentials (set sigv4.access_key/secret_key or the AWS environment)")
    if s.role_arn:
        fetcher = AssumeRoleCredentialFetcher(session.create_client, creds, s.role_arn,
                                              extra_args={"RoleSessionName": "kubesight"})
        creds = DeferredRefreshableCredentials(fetcher.fetch_credentials, "assume-role")
    _SNS_CREDENTIALS[_sns_key(integ)] = creds
    return creds


def sns_signed(integ, params: dict, creds) -> tuple[str, bytes, dict]:
    """The URL, form body and SigV4 headers (botocore's SigV4Auth: X-Amz-Date, Authorization) of one Publish."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    c = integ.cfg
    region = sns_region(c, (params.get("TopicArn", ""), params.get("TargetArn", "")))
    url = c.api_url or f"https://sns.{region}.amazonaws.com/"
    body = urlencode(params).encode()
    req = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": FORM})
    auth = SigV4Auth(creds.get_frozen_credentials() if hasattr(creds, "get_frozen_credentials") else creds, "sns",
                     region)
    auth.add_auth(req)
    headers = {k: v for k, v in req.headers.items()}
    return url, body, headers


async def _sns(session, integ, note: dict, external_url: str, env_for) -> Outcome:
    try:
        creds = _SNS_CREDENTIALS.get(_sns_key(integ))
        if creds is None:  # the first time (the chain may ask the instance metadata service): off the loop
            creds = await asyncio.to_thread(_sns_credentials, integ)
        if getattr(creds, "refresh_needed", None) is not None and creds.refresh_needed():  # an assumed role's
            await asyncio.to_thread(creds.get_frozen_credentials)  # STS refresh, off the loop
        url, body, headers = sns_signed(integ, sns_params(integ, note, external_url), creds)  # CPU only
    except Exception as exc:  # noqa: BLE001 - botocore's credential errors are many; each is a failed attempt
        return Outcome(False, True, reason=redact(f"AWS credentials: {type(exc).__name__}: {exc}", integ.secrets()))
    signature = headers.get("Authorization", "")
    out, data = await request(session, integ, "POST", url, body, headers,
                              secrets=[signature, headers.get("X-Amz-Security-Token", "")], env_for=env_for)
    if out.status == 400 and (b"<Code>Throttling</Code>" in data or b"<Code>ThrottlingException</Code>" in data):
        out.retryable = True  # AWS's rate limit is a 400 (the AWS SDKs retry it, so Alertmanager's does)
    return out
