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
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path

import orjson

from alerts import payload
from alerts.config import Retry, RoutingConfig

log = logging.getLogger("kubesight.alerts.receivers")


@dataclass(slots=True)
class Outcome:
    ok: bool
    retryable: bool = False
    status: int | None = None
    reason: str = ""
    retry_after: float | None = None
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class Integration:
    """One way of reaching a receiver (a webhook, a Slack or DingTalk endpoint); its URL never prints."""

    receiver: str
    name: str  # receiver/kind[index], what logs and reasons show
    kind: str  # webhook | slack | dingtalk
    url: str = field(repr=False)
    timeout: float = 10.0
    send_resolved: bool = True
    max_alerts: int = 0
    channel: str = ""
    username: str = "kubesight"
    secret: str | None = field(default=None, repr=False)
    ssl: object = field(default=None, repr=False, compare=False)  # http_config.tls_config; None: verified, system CAs

    def secrets(self) -> list[str]:
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        out = [self.url, parts.path + (f"?{parts.query}" if parts.query else "")]
        out += [p for p in parts.path.split("/") if len(p) >= 8] + ([parts.query] if parts.query else [])
        if self.secret:
            out.append(self.secret)
        return [s for s in out if s and s != "/"]

    def request(self, note: dict, external_url: str, now: float) -> tuple[str, bytes] | None:
        """The URL and body for this notification, or None when this integration skips it."""
        if not self.send_resolved:
            note = dict(note, alerts=[a for a in note["alerts"] if a["status"] == "firing"])
            if not note["alerts"]:
                return None
        if self.kind == "webhook":
            body = payload.webhook(note, external_url, self.max_alerts)
        elif self.kind == "slack":
            body = payload.slack(note, self.channel, self.username)
        else:
            body = payload.dingtalk(note)
        url = self.url
        if self.kind == "dingtalk" and self.secret:
            url = payload.dingtalk_sign(url, self.secret, int(now * 1000))
        return url, orjson.dumps(body)


def redact(text: str, secrets: list[str]) -> str:
    """Replace every secret (longest first) by ``<redacted>``.

    >>> redact("POST https://hooks.example/T0/B1/XyZsecret failed", ["https://hooks.example/T0/B1/XyZsecret"])
    'POST <redacted> failed'
    """
    for s in sorted(set(secrets), key=len, reverse=True):
        if s:
            text = text.replace(s, "<redacted>")
    return text


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date).

    >>> retry_after("7", 0.0), retry_after(None, 0.0), retry_after("Wed, 21 Oct 2015 07:28:10 GMT", 1445412480.0)
    (7.0, None, 10.0)
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def classify(status: int, body: bytes, headers) -> Outcome:
    """Whether a response is success, worth a retry (5xx, 429) or final (other 4xx, 3xx)."""
    if 200 <= status < 300:
        return Outcome(True, status=status)
    snippet = body[:200].decode("utf-8", "replace").strip()
    reason = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    after = retry_after(headers.get("Retry-After"), time.time())
    if status == 429 or status >= 500:
        return Outcome(False, True, status, reason, after)
    return Outcome(False, False, status, reason)


async def send_once(session, integ: Integration, note: dict, external_url: str) -> Outcome:
    import aiohttp

    req = integ.request(note, external_url, time.time())
    if req is None:
        return Outcome(True, reason="skipped (only resolved alerts; send_resolved is off)")
    url, body = req
    headers = {"Content-Type": "application/json", "Idempotency-Key": note["id"]}
    try:
        async with session.post(url, data=body, headers=headers, timeout=_timeout(integ.timeout),
                                ssl=True if integ.ssl is None else integ.ssl) as resp:
            data = await resp.read()
            out = classify(resp.status, data, resp.headers)
    except TimeoutError:
        out = Outcome(False, True, reason=f"timeout after {integ.timeout:g}s")
    except aiohttp.ClientError as exc:
        out = Outcome(False, True, reason=f"{type(exc).__name__}: {exc}")
    if out.reason:
        out.reason = redact(out.reason, integ.secrets())
    return out


_TIMEOUTS: dict[float, object] = {}


def _timeout(seconds: float):
    import aiohttp

    t = _TIMEOUTS.get(seconds)
    if t is None:
        t = _TIMEOUTS[seconds] = aiohttp.ClientTimeout(total=seconds)
    return t


_RNG = random.Random()  # jitter only: no need for one seeded generator per delivery


def backoff(attempt: int, retry: Retry, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max_backoff, initial * 2**attempt)]."""
    return rng.uniform(0, min(retry.max_backoff, retry.initial * 2 ** attempt))


async def deliver(session, integ: Integration, note: dict, retry: Retry, external_url: str, *,
                  rng: random.Random | None = None, clock=time.monotonic, sleep=asyncio.sleep) -> Outcome:
    """Send until success, a final failure, or the retry budget is spent; returns the last outcome."""
    rng = rng or _RNG
    start = clock()
    attempt = 0
    while True:
        out = await send_once(session, integ, note, external_url)
        out.attempts = attempt + 1
        if out.ok or not out.retryable:
            return out
        wait = out.retry_after if out.retry_after is not None else backoff(attempt, retry, rng)
        left = retry.budget - (clock() - start)
        if wait >= left:
            out.reason = f"retry budget of {retry.budget:g}s spent after {out.attempts} attempts; last: {out.reason}"
            return out
        log.warning("%s: attempt %d failed (%s); retrying in %.1fs", integ.name, out.attempts, out.reason, wait)
        await sleep(wait)
        attempt += 1


class Receivers:
    """The integrations of every receiver in the routing config (secrets read from ``*_file`` at load)."""

    def __init__(self, cfg: RoutingConfig):
        self.external_url = cfg.global_.external_url
        self.retry: dict[str, Retry] = {}
        self.integrations: dict[str, list[Integration]] = {}
        for r in cfg.receivers:
            self.retry[r.name] = r.retry
            items = []
            for i, c in enumerate(r.webhook_configs):
                items.append(Integration(r.name, f"{r.name}/webhook[{i}]", "webhook", _secret(c.url, c.url_file),
                                         c.timeout, c.send_resolved, c.max_alerts))
            for i, c in enumerate(r.slack_configs):
                items.append(Integration(r.name, f"{r.name}/slack[{i}]", "slack", _secret(c.api_url, c.api_url_file),
                                         c.timeout, c.send_resolved, channel=c.channel, username=c.username))
            for i, c in enumerate(r.dingtalk_configs):
                items.append(Integration(r.name, f"{r.name}/dingtalk[{i}]", "dingtalk", _secret(c.url, c.url_file),
                                         c.timeout, c.send_resolved, secret=c.secret))
            self.integrations[r.name] = [_with_tls(it, r) for it in items]

    async def notify(self, session, note: dict, **kw) -> list[tuple[Integration, Outcome]]:
        """Deliver one notification to every integration of its receiver, concurrently."""
        items = self.integrations.get(note["receiver"], [])
        retry = self.retry.get(note["receiver"], Retry())
        if len(items) == 1:  # the usual case: no gather (it costs a task per call)
            return [(items[0], await deliver(session, items[0], note, retry, self.external_url, **kw))]
        outs = await asyncio.gather(*(deliver(session, i, note, retry, self.external_url, **kw) for i in items))
        return list(zip(items, outs, strict=True))


def _with_tls(integ: Integration, receiver) -> Integration:
    """The integration with the SSL context of its config's ``http_config.tls_config`` (if it has one)."""
    import dataclasses

    from core.webconfig import client_ssl_context

    kind, _, index = integ.name.rpartition("/")[2].partition("[")
    configs = getattr(receiver, f"{kind}_configs", None) or []
    http = getattr(configs[int(index.rstrip("]"))], "http_config", None) if configs else None
    if http is None:
        return integ
    t = http.tls_config
    return dataclasses.replace(integ, ssl=client_ssl_context(t.ca_file, t.cert_file, t.key_file,
                                                             t.insecure_skip_verify))


def _secret(value: str | None, path: str | None) -> str:
    return value if value is not None else Path(path).read_text().strip()
