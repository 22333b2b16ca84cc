"""What every sender shares: an attempt's ``Outcome``, how an HTTP answer is classified (``Retry-After``
included), secret redaction, request timeouts and message rendering (``*_file`` secrets: ``core.httpauth``).

``alerts.receivers`` (webhook, Slack, DingTalk, email, PagerDuty, Opsgenie, Teams, Alertmanager, and the
retry loop) and ``alerts.receivers_more`` (the other Alertmanager integrations) both build on it.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from alerts import gotemplate, payload

log = logging.getLogger("kubesight.alerts")


@dataclass(slots=True)
class Outcome:
    ok: bool
    retryable: bool = False
    status: int | None = None
    reason: str = ""
    retry_after: float | None = None
    attempts: int = 1


@functools.lru_cache(maxsize=256)
def _template(text: str) -> payload.MessageTemplate:
    return payload.MessageTemplate(text)


def render(text: str, note: dict, external_url: str) -> str:
    """A message field for one notification: kubesight's template, or an Alertmanager Go template
    (``alerts.gotemplate.GoText``) run by Alertmanager's own template package; one that fails when run is
    logged and the field's kubesight default is sent instead, so the notification still goes out."""
    if isinstance(text, gotemplate.GoText):
        try:
            return gotemplate.render(text, note, external_url)
        except gotemplate.TemplateError as exc:
            log.warning("receiver %s: a Go template failed (%s); kubesight's default text is sent", note["receiver"],
                        exc)
            return _template(text.fallback).render(note, external_url)
    return _template(text).render(note, external_url)


def value(text, note: dict, external_url: str):
    """A plain field (PagerDuty's severity, Slack's channel, an email header ...) for one notification: as written,
    or, when it is an Alertmanager Go template (the loader's ``GoText``: ``alerts.config.GO_FIELDS``), run as
    Alertmanager runs it.  Never read as kubesight's own template: a "$" there is text, as in Alertmanager."""
    return render(text, note, external_url) if isinstance(text, gotemplate.GoText) else text


def values(d: dict, note: dict, external_url: str) -> dict:
    """``value`` of each value of a map (PagerDuty's details, VictorOps' custom fields, SNS attributes ...)."""
    return {k: value(v, note, external_url) for k, v in d.items()}


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



_TIMEOUTS: dict[float, object] = {}


def timeout(seconds: float):
    """The aiohttp timeout of ``seconds`` in total (one object per value)."""
    import aiohttp

    t = _TIMEOUTS.get(seconds)
    if t is None:
        t = _TIMEOUTS[seconds] = aiohttp.ClientTimeout(total=seconds)
    return t


async def exchange(session, method: str, url: str, body: bytes | None, headers: dict, seconds: float, ssl,
                   **kw) -> tuple[Outcome, bytes]:
    """One aiohttp request: its outcome (``classify``; a timeout or a connection error is worth a retry) and
    the response body (empty when there is none).  Reasons are not redacted here: the caller knows the secrets."""
    import aiohttp

    try:
        async with session.request(method, url, data=body, headers=headers, timeout=timeout(seconds),
                                   ssl=True if ssl is None else ssl, **kw) as resp:
            data = await resp.read()
            return classify(resp.status, data, resp.headers), data
    except TimeoutError:
        return Outcome(False, True, reason=f"timeout after {seconds:g}s"), b""
    except aiohttp.ClientError as exc:
        return Outcome(False, True, reason=f"{type(exc).__name__}: {exc}"), b""
