"""Delivery to receivers over HTTP (aiohttp): per-integration timeout, retries with backoff, secrets redacted.

An attempt's outcome says whether it is worth retrying (as Alertmanager's notifiers do):
timeouts, connection errors, 5xx and 429 are retried with exponential backoff and full jitter
(a 429's or 503's ``Retry-After`` is honoured) until the receiver's retry budget is spent; any
other 4xx is final.  Either way a failed delivery comes back with a reason fit for the dead-letter
topic.  URLs and tokens are secrets: they appear in no log line, error or reason.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from alerts import http1, payload
from alerts import receivers_more as _more
from alerts.config import RateLimit, Retry, RoutingConfig
from alerts.routing import Router
from alerts.sending import Outcome, classify, exchange, redact, retry_after  # noqa: F401 (classify, retry_after: re-exported)
from alerts.sending import render as _render
from alerts.sending import value as _value
from alerts.sending import values as _values
from core.httpauth import secret as _secret
from core.retry import backoff

log = logging.getLogger("kubesight.alerts.receivers")


@dataclass(frozen=True, slots=True)
class Integration:
    """One way of reaching a receiver (a webhook, a Slack or DingTalk endpoint); its URL never prints."""

    receiver: str
    name: str  # receiver/kind[index], what logs and reasons show
    kind: str  # webhook | slack | dingtalk | alertmanager
    url: str = field(repr=False)
    timeout: float = 10.0
    send_resolved: bool = True
    max_alerts: int = 0
    channel: str = ""
    username: str = "kubesight"
    secret: str | None = field(default=None, repr=False)
    forward: Forwarder | None = field(default=None, repr=False, compare=False)  # alertmanager: what still fires
    ssl: object = field(default=None, repr=False, compare=False)  # http_config.tls_config; None: verified, system CAs
    cfg: object = field(default=None, repr=False, compare=False)  # email, pagerduty, opsgenie, msteams: their config
    http: object = field(default=None, repr=False, compare=False)  # receivers_more.HTTPOptions: auth, proxy, secrets

    def secrets(self) -> list[str]:
        """What a reason must not show: the URL, its path and query, and the parts of them a receiver may echo
        back on its own (``invalid token X`` for ``?token=X``): path segments and query values (as written and
        decoded) of 8 characters or more (shorter ones, ``?v=2``, are rarely secrets and would blank common
        words), the userinfo's password and the ``Basic`` credentials aiohttp builds from it."""
        from urllib.parse import parse_qsl, urlsplit

        parts = urlsplit(self.url)
        out = [self.url, parts.path + (f"?{parts.query}" if parts.query else "")]
        out += [p for p in parts.path.split("/") if len(p) >= 8] + ([parts.query] if parts.query else [])
        values = [v for _, v in parse_qsl(parts.query, keep_blank_values=True)]
        values += [p.partition("=")[2] for p in parts.query.split("&")]
        out += [v for v in values if len(v) >= 8]
        out += _more.userinfo_secrets(self.url)
        if self.secret:
            out.append(self.secret)
        if self.http is not None:
            out += self.http.secrets
        return [s for s in out if s and s != "/"]

    def request(self, note: dict, external_url: str, now: float) -> tuple[str, bytes, dict] | None:
        """The URL, body and extra headers for this notification, or None when this integration skips it."""
        if self.kind == "alertmanager":
            return self.forward.endpoint(self.url), orjson.dumps(self.forward.postable(note, now)), {}
        if not self.send_resolved:
            note = payload.firing_only(note)
            if not note["alerts"]:
                return None
        url, headers, c = self.url, {}, self.cfg
        if self.kind == "webhook":
            body = payload.webhook(note, external_url, self.max_alerts)
        elif self.kind == "slack":
            body = payload.slack(note, _value(self.channel, note, external_url),
                                 _value(self.username, note, external_url), external_url)
        elif self.kind == "pagerduty":
            def v(text):  # Alertmanager runs each of these through its templates (alerts.config.GO_FIELDS)
                return _value(text, note, external_url)

            # a resolve carries the whole event too (summary, severity, details ...), as Alertmanager sends it:
            # the body is built as a trigger's, from the resolved alerts, and then told to resolve
            body = payload.pagerduty(dict(note, status="firing"), self.secret,
                                     _render(c.description, note, external_url),
                                     severity=v(c.severity) or "error",  # Alertmanager's, not the alerts' label
                                     source=v(c.client if c.source is None else c.source), client=v(c.client),
                                     client_url=v(c.client_url) or external_url, component=v(c.component),
                                     group=v(c.group), class_=v(c.class_), details=_values(c.details, note,
                                                                                           external_url))
            body["event_action"] = "trigger" if note["status"] == "firing" else "resolve"
        elif self.kind == "opsgenie":
            headers = {"Authorization": f"GenieKey {self.secret}"}
            base = url if url.endswith("/") else url + "/"
            source = _value(c.source, note, external_url)
            if note["status"] == "firing":
                url = base + "v2/alerts"
                tags = _value(c.tags, note, external_url)  # split after it is run, as Alertmanager does
                body = payload.opsgenie(note, _render(c.message, note, external_url),
                                        _render(c.description, note, external_url),
                                        priority=_value(c.priority, note, external_url), source=source,
                                        tags=[t.strip() for t in tags.split(",") if t.strip()],
                                        details=_values(c.details, note, external_url))
            else:
                url = f"{base}v2/alerts/{payload.key_hash(payload.group_key(note))}/close?identifierType=alias"
                body = {"source": source, "note": _render("$title", note, external_url)}
        elif self.kind == "msteams":
            body = payload.msteams(note, _render(c.title, note, external_url), _render(c.text, note, external_url))
        else:
            body = payload.dingtalk(note)
        if self.kind == "dingtalk" and self.secret:
            url = payload.dingtalk_sign(url, self.secret, int(now * 1000))
        return url, orjson.dumps(body), headers


class Forwarder:
    """An ``alertmanager_configs`` integration's memory: the alerts it forwarded that still fire, by group.

    Alertmanager resolves an alert whose ``endsAt`` passes, so, as Prometheus does, every firing alert
    goes out with ``endsAt = now + 4 x resend_delay`` and is sent again every ``resend_delay`` until a
    notification resolves it (then once more with its ``endsAt`` in the past) or its group's latest
    notification no longer holds it (silenced, inhibited, dropped: Alertmanager lets it expire).

    >>> f = Forwarder(60.0)
    >>> a = {"labels": {"alertname": "A"}, "annotations": {}, "status": "firing", "fingerprint": "f",
    ...      "startsAt": "2021-08-03T10:00:00.000Z", "endsAt": None, "generatorURL": ""}
    >>> f.postable({"groupKey": "g", "alerts": [a]}, 1627984800.0)[0]["endsAt"]
    '2021-08-03T10:04:00.000Z'
    >>> [p["labels"] for p in f.due(1627984860.0)]
    [{'alertname': 'A'}]
    >>> done = dict(a, status="resolved", endsAt="2021-08-03T10:01:30.000Z")
    >>> f.postable({"groupKey": "g", "alerts": [done]}, 1627984900.0)[0]["endsAt"], f.due(1627985000.0)
    ('2021-08-03T10:01:30.000Z', [])
    >>> g = Forwarder(60.0, stale_after=3600.0)  # a group that went away without a notification saying so
    >>> _ = g.postable({"groupKey": "g", "alerts": [a]}, 1627984800.0)
    >>> len(g.due(1627984800.0 + 3600)), len(g.due(1627984800.0 + 3601)), g.groups, g.seen
    (1, 0, {}, {})
    """

    PATH = "/api/v2/alerts"

    def __init__(self, resend_delay: float, stale_after: float = 2 * 14400.0):
        self.resend_delay = resend_delay
        self.groups: dict[str, dict[str, dict]] = {}  # group key -> fingerprint -> postable alert (no endsAt)
        self.seen: dict[str, float] = {}  # group key -> its latest notification with firing alerts
        self.stale_after = stale_after  # a group not notified this long is gone (``due``)
        self.last = 0.0  # when the firing alerts were last sent (a notification or a resend)

    def endpoint(self, url: str) -> str:
        return url.rstrip("/") + self.PATH

    def postable(self, note: dict, now: float) -> list[dict]:
        """The alerts of ``note`` as Alertmanager's postable alerts; remembers the group's firing ones."""
        from core.records import format_time, parse_time

        firing: dict[str, dict] = {}
        out = []
        for a in note["alerts"]:
            p = {"labels": a["labels"], "annotations": a.get("annotations") or {}, "startsAt": a["startsAt"],
                 "generatorURL": a.get("generatorURL") or ""}
            if a["status"] == "firing":
                firing[a["fingerprint"]] = p
                out.append(dict(p, endsAt=format_time(now + 4 * self.resend_delay)))
            else:
                ends = parse_time(a["endsAt"]) if a.get("endsAt") else now
                out.append(dict(p, endsAt=format_time(min(ends, now))))
        if "truncatedAlerts" in note:  # a cut note (a group too large for one record): the alerts it left out are
            # as the notifications before said (the next ones tell the rest); only what it says changes
            firing = {**self.groups.get(note["groupKey"], {}), **firing}
            for a in note["alerts"]:
                if a["status"] != "firing":
                    firing.pop(a["fingerprint"], None)
        if firing:
            self.groups[note["groupKey"]] = firing
            self.seen[note["groupKey"]] = now
        else:
            self.groups.pop(note["groupKey"], None)
            self.seen.pop(note["groupKey"], None)
        self.last = now
        return out

    def due(self, now: float) -> list[dict]:
        """Every firing alert, with a fresh ``endsAt``, to be sent again now.

        A group with firing alerts is notified at least every ``repeat_interval``; one not notified for
        ``stale_after`` (twice the routing file's longest repeat_interval) went away without a notification that
        says so (its last alert resolved while its route was muted, a reload withdrew it, its receiver changed):
        it is forgotten, and Alertmanager lets its alerts expire, instead of being told for ever that they fire."""
        from core.records import format_time

        for key in [k for k, t in self.seen.items() if t < now - self.stale_after]:
            self.groups.pop(key, None)
            del self.seen[key]
        ends = format_time(now + 4 * self.resend_delay)
        seen: dict[str, dict] = {}
        for alerts in self.groups.values():
            for fp, p in alerts.items():
                seen[fp] = dict(p, endsAt=ends)
        self.last = now
        return list(seen.values())


async def send_once(session, integ: Integration, note: dict, external_url: str) -> Outcome:
    if note.get("resolvedOnly") and not integ.send_resolved and integ.kind != "alertmanager":
        # sent only for the resolved alerts: an integration that does not send those has nothing new (Alertmanager
        # dedups per integration; without this it got the firing alerts again)
        return Outcome(True, reason="skipped (nothing new but resolved alerts; send_resolved is off)")
    if _more.sends(integ):  # receivers_more's kinds, and http_config.oauth2 (a token first)
        return await _more.send_once(session, integ, note, external_url)
    if integ.kind == "email":
        out = await asyncio.to_thread(send_email, integ, note, external_url)
        if out.reason:
            out.reason = redact(out.reason, integ.secrets())
        return out
    req = integ.request(note, external_url, time.time())
    if req is None:
        return Outcome(True, reason="skipped (only resolved alerts; send_resolved is off)")
    url, body, headers = req
    return await _post(session, integ, url, body, {"Idempotency-Key": note["id"], **headers})


def _one_line(text: str) -> str:
    r"""A header's value on one line: a label value with a CR or U+2028 in a template made the email library refuse
    the header (ValueError), and the notification was tried again every second for ever (an audit).

    >>> _one_line("shop\rBcc: x@evil.example"), _one_line("a\u2028b\nc")
    ('shop Bcc: x@evil.example', 'a b c')
    """
    return " ".join(text.splitlines()) if isinstance(text, str) else text


def email_message(integ: Integration, note: dict, external_url: str):
    """The email for a notification (subject, text and optional html from the integration's templates)."""
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    c = integ.cfg
    msg = EmailMessage()
    msg["Subject"] = _one_line(_render(c.subject, note, external_url))[:998]
    msg["From"] = _one_line(_value(c.from_, note, external_url))
    msg["To"] = _one_line(_value(c.to, note, external_url))
    msg["Date"] = formatdate(localtime=False)
    msg["Message-Id"] = make_msgid(domain=c.hello)
    msg["X-Kubesight-Dedup-Key"] = note["id"]
    for k, v in _values(c.headers, note, external_url).items():  # Alertmanager runs each header's value too
        del msg[k]
        msg[k] = _one_line(v)
    if c.text is not None:
        msg.set_content(_render(c.text, note, external_url))
    if c.html is not None:  # multipart/alternative, as Alertmanager's, with the html part alone when no text is set
        msg.add_alternative(_render(c.html, note, external_url), subtype="html")
    return msg


def send_email(integ: Integration, note: dict, external_url: str) -> Outcome:
    """One SMTP delivery (blocking; run in a thread): STARTTLS when required, AUTH PLAIN/LOGIN when configured.

    4xx replies, timeouts and lost connections are worth a retry; 5xx replies, a refused login, a
    server without STARTTLS when it is required and a certificate that does not verify are final.
    """
    import smtplib
    import ssl

    c = integ.cfg
    if not integ.send_resolved and all(a["status"] != "firing" for a in note["alerts"]):
        return Outcome(True, reason="skipped (only resolved alerts; send_resolved is off)")
    if not integ.send_resolved:
        note = payload.firing_only(note)
    host, _, port = c.smarthost.rpartition(":")
    t = c.tls_config  # built as every HTTP receiver's, server_name and min/max_version included
    ctx = _more.tls_context(t) or ssl.create_default_context()
    if t.server_name:
        ctx = _more.ServerNameContext(ctx, t.server_name)
    try:
        if port == "465":  # implicit TLS, as Alertmanager does on 465
            smtp = smtplib.SMTP_SSL(host, 465, local_hostname=c.hello, timeout=integ.timeout, context=ctx)
        else:
            smtp = smtplib.SMTP(host, int(port or 25), local_hostname=c.hello, timeout=integ.timeout)
        with smtp:
            smtp.ehlo()
            if port != "465" and c.require_tls:
                if not smtp.has_extn("starttls"):
                    return Outcome(False, False, reason="the SMTP server does not offer STARTTLS (require_tls is on)")
                smtp.starttls(context=ctx)
                smtp.ehlo()
            if c.auth_username and c.auth_secret and "CRAM-MD5" in smtp.esmtp_features.get("auth", "").upper().split():
                smtp.user, smtp.password = c.auth_username, c.auth_secret  # CRAM-MD5 with auth_secret
                smtp.auth("CRAM-MD5", smtp.auth_cram_md5)
            elif c.auth_username:
                smtp.login(c.auth_username, integ.secret or "")
            to = _value(c.to, note, external_url)  # the addresses as Alertmanager runs them ("{{ ... }}@example.com")
            rcpts = [a.strip() for a in to.split(",") if a.strip()]
            smtp.send_message(email_message(integ, note, external_url), _value(c.from_, note, external_url), rcpts)
        return Outcome(True, status=250)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        return Outcome(False, all(400 <= code < 500 for code in codes), min(codes), f"SMTP recipients refused: {codes}")
    except smtplib.SMTPResponseException as exc:
        msg = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return Outcome(False, 400 <= exc.smtp_code < 500, exc.smtp_code, f"SMTP {exc.smtp_code}: {msg}")
    except ssl.SSLCertVerificationError as exc:
        return Outcome(False, False, reason=f"TLS: {exc.verify_message or exc}")
    except (TimeoutError, OSError, smtplib.SMTPException) as exc:
        what = f"timeout after {integ.timeout:g}s" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        return Outcome(False, True, reason=what)


async def _post(session, integ: Integration, url: str, body: bytes, headers: dict) -> Outcome:
    headers = {"Content-Type": "application/json", **headers}
    if integ.http is not None:  # http_config's Authorization (the format's own one wins, as in prometheus/common)
        headers = {**dict(integ.http.headers), **headers}
    env = {}
    if isinstance(session, http1.DeliverySession):  # delivery's own: the lean client, or aiohttp with the env's proxy
        out, session, env = await http1.post(session, integ, url, body, headers)
        if out is not None:
            return out
    if integ.http is not None and integ.http.kwargs:  # http_config: proxy_url, follow_redirects, server_name
        env = {**env, **dict(integ.http.kwargs)}
    out, _ = await exchange(session, "POST", url, body, headers, integ.timeout, integ.ssl, **env)
    if out.reason:
        out.reason = redact(out.reason, integ.secrets())
    return out


_NO_RETRY_CONFIG = Retry()  # the defaults, made once (not a pydantic model per notification)
_RNG = random.Random()  # jitter only: no need for one seeded generator per delivery


async def deliver(session, integ: Integration, note: dict, retry: Retry, external_url: str, *,
                  rng: random.Random | None = None, clock=time.monotonic, sleep=asyncio.sleep,
                  on_retry: Callable[[Integration, Outcome, float], Awaitable[None]] | None = None) -> Outcome:
    """Send until success, a final failure, or the retry budget is spent; returns the last outcome.

    ``on_retry(integ, outcome, wait)`` is awaited after each failed attempt that will be tried again (its reason
    redacted), before the wait: the deliverer tells ``receiver-health`` that the receiver is failing now."""
    rng = rng or _RNG
    start = clock()
    attempt = 0
    while True:
        try:
            out = await send_once(session, integ, note, external_url)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a sender's bug on this note: final for this integration (dead-lettered), not
            # a failure of the whole notification, which was tried again every second for ever with the receiver's
            # other integrations sent it each time
            log.exception("%s: sending failed", integ.name)
            out = Outcome(False, reason=f"sender error: {type(exc).__name__}: {exc}")
        out.attempts = attempt + 1
        if out.ok or not out.retryable:
            return out
        wait = out.retry_after
        if wait is None:  # full jitter, as before; core.retry caps the exponent (2**1024 overflowed a float)
            wait = backoff(attempt, retry.initial, retry.max_backoff, rng)
        left = retry.budget - (clock() - start)
        if wait >= left:
            out.reason = f"retry budget of {retry.budget:g}s spent after {out.attempts} attempts; last: {out.reason}"
            return out
        log.warning("%s: attempt %d failed (%s); retrying in %.1fs", integ.name, out.attempts, out.reason, wait)
        if on_retry is not None:
            await on_retry(integ, out, wait)
        await sleep(wait)
        attempt += 1


class Receivers:
    """The integrations of every receiver in the routing config (secrets read from ``*_file`` at load)."""

    def __init__(self, cfg: RoutingConfig):
        self.external_url = cfg.global_.external_url
        self.retry: dict[str, Retry] = {}
        self.rate_limit: dict[str, RateLimit] = {}  # receivers with a rate limit (the deliverer's lanes keep it)
        self.integrations: dict[str, list[Integration]] = {}
        longest_repeat = max(r.repeat_interval for r in Router(cfg).by_key.values())  # forwarders' staleness
        for r in cfg.receivers:
            self.retry[r.name] = r.retry
            if r.rate_limit is not None:
                self.rate_limit[r.name] = r.rate_limit
            items = []
            for i, c in enumerate(r.webhook_configs):
                items.append(Integration(r.name, f"{r.name}/webhook[{i}]", "webhook", _secret(c.url, c.url_file),
                                         c.timeout, c.send_resolved, c.max_alerts))
            for i, c in enumerate(r.slack_configs):
                items.append(Integration(r.name, f"{r.name}/slack[{i}]", _more.slack_kind(c),
                                         _secret(c.api_url, c.api_url_file), c.timeout, c.send_resolved,
                                         channel=c.channel, username=c.username, cfg=c))
            for i, c in enumerate(r.dingtalk_configs):
                items.append(Integration(r.name, f"{r.name}/dingtalk[{i}]", "dingtalk", _secret(c.url, c.url_file),
                                         c.timeout, c.send_resolved, secret=c.secret))
            for i, c in enumerate(r.email_configs):
                items.append(Integration(r.name, f"{r.name}/email[{i}]", "email", f"smtp://{c.smarthost}", c.timeout,
                                         c.send_resolved, cfg=c, secret=_optional(c.auth_password,
                                                                                   c.auth_password_file),
                                         http=_more.HTTPOptions(secrets=(c.auth_secret,) if c.auth_secret else ())))
            for i, c in enumerate(r.pagerduty_configs):
                more = _more.pagerduty(r.name, i, c)  # v1 (service_key), v2 with images or links
                items.append(Integration(**more) if more else Integration(
                    r.name, f"{r.name}/pagerduty[{i}]", "pagerduty", c.url, c.timeout, c.send_resolved, cfg=c,
                    secret=_secret(c.routing_key, c.routing_key_file)))
            for i, c in enumerate(r.opsgenie_configs):
                items.append(Integration(r.name, f"{r.name}/opsgenie[{i}]", _more.opsgenie_kind(c), c.api_url,
                                         c.timeout, c.send_resolved, cfg=c, secret=_secret(c.api_key, c.api_key_file)))
            for i, c in enumerate(r.msteams_configs):
                items.append(Integration(r.name, f"{r.name}/msteams[{i}]", "msteams",
                                         _secret(c.webhook_url, c.webhook_url_file), c.timeout, c.send_resolved,
                                         cfg=c))
            for i, c in enumerate(r.alertmanager_configs):
                items.append(Integration(r.name, f"{r.name}/alertmanager[{i}]", "alertmanager",
                                         _secret(c.url, c.url_file), c.timeout,
                                         forward=Forwarder(c.resend_delay, 2 * longest_repeat)))
            items += [Integration(**kw) for kw in _more.integrations(r)]
            self.integrations[r.name] = [_with_tls(it, r) for it in items]

    def forwarders(self) -> list[Integration]:
        return [i for items in self.integrations.values() for i in items if i.forward is not None]

    async def resend_due(self, session, now: float | None = None) -> list[tuple[Integration, Outcome]]:
        """Re-send the firing alerts of every ``alertmanager_configs`` integration whose ``resend_delay`` is up.

        One attempt each (the next resend is the retry); a failure is logged, secrets redacted.
        """
        now = time.time() if now is None else now
        outs = []
        for integ in self.forwarders():
            f = integ.forward
            if now - f.last < f.resend_delay or not f.groups:
                continue
            out = await _post(session, integ, f.endpoint(integ.url), orjson.dumps(f.due(now)), {})
            if not out.ok:
                log.warning("%s: resending firing alerts failed (%s)", integ.name, out.reason)
            outs.append((integ, out))
        return outs


    async def notify(self, session, note: dict, **kw) -> list[tuple[Integration, Outcome]]:
        """Deliver one notification to every integration of its receiver, concurrently."""
        items = self.integrations.get(note["receiver"], [])
        retry = self.retry.get(note["receiver"]) or _NO_RETRY_CONFIG
        if len(items) == 1:  # the usual case: no gather (it costs a task per call)
            return [(items[0], await deliver(session, items[0], note, retry, self.external_url, **kw))]
        outs = await asyncio.gather(*(deliver(session, i, note, retry, self.external_url, **kw) for i in items))
        return list(zip(items, outs, strict=True))


async def resend_forever(current: Callable[[], Receivers], every: float = 1.0) -> None:
    """Run ``resend_due`` of the receivers in force (``current()``: a routing reload swaps them) until cancelled,
    every ``every`` seconds or a quarter of the shortest ``resend_delay``; the deliverer runs it."""
    async with http1.DeliverySession() as session:  # HTTP(S)_PROXY, NO_PROXY
        while True:
            await asyncio.sleep(min([every] + [i.forward.resend_delay / 4 for i in current().forwarders()]))
            await current().resend_due(session)


def _with_tls(integ: Integration, receiver) -> Integration:
    """The integration with its config's ``http_config`` applied (TLS context, authorization, proxy)."""
    kind, _, index = integ.name.rpartition("/")[2].partition("[")
    configs = getattr(receiver, f"{kind}_configs", None) or []
    http = getattr(configs[int(index.rstrip("]"))], "http_config", None) if configs else None
    if http is None:
        return integ
    return _more.with_http(integ, http)


def _optional(value: str | None, path: str | None) -> str | None:
    return None if value is None and path is None else _secret(value, path)
