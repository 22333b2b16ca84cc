"""The intake's HTTP server (aiohttp): ``POST /events`` (cloud events) and ``POST /audit`` (kube-apiserver audit
events from its webhook backend, ``collectors.kubernetes.audit``) -> Kafka, ``GET /healthz``, ``GET /metrics``.

Answers, in the order they are decided:

| status | when | stored |
|---|---|---|
| 401 | no valid bearer token and no valid HMAC signature | nothing |
| 413 | body larger than ``max_body``, as sent or decompressed | its first 64 KiB on the dead-letter topic, with its size, when a bearer token vouches for it (an HMAC signature covers the whole body, which is not read past the limit: nothing); a body without Content-Length is read on for at most 2 s and 4 MiB past the limit, else its size is "at least" what came and the connection is closed (``collectors.bodies``) |
| 400 | malformed or unknown payload, a Content-Encoding other than gzip and deflate, a corrupt or cut compressed body (the reason in ``error``) | the body as it came, on the dead-letter topic |
| 503 | Kafka did not acknowledge in time (the sender should retry) | maybe (ids make retries idempotent) |
| 200 | every event acknowledged by Kafka (acks=all); a CloudEvents batch's items that cannot be taken are listed in ``rejected`` (index, error) | the events; each rejected item on the dead-letter topic |

aiohttp's own decompression is off (``handler_args``): it dropped a corrupt body's bytes before the handler saw
them, and answered an unsupported encoding (``br``, ``zstd``) itself, keeping nothing. ``decompressed`` does it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import zlib

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from collectors.bodies import TooLarge, closing, read_body
from collectors.cloud.auth import Auth
from collectors.cloud.event import PayloadError, attach_node
from collectors.cloud.intake import parse
from collectors.cloud.nodes import NodeMap
from collectors.kubernetes.audit import DEFAULT_IGNORE, Networks, attach_owners, events_from_audit

log = logging.getLogger("kubesight.cloud")
ORIGIN = "collector/cloud"
CONFIG = web.AppKey("config", dict)


class _TooLarge(Exception):
    pass


def decompressed(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded by its Content-Encoding (none, identity, gzip, x-gzip, deflate: zlib or raw); PayloadError for
    another encoding or a corrupt or cut-short body, _TooLarge past ``limit`` bytes (a decompression bomb).

    >>> import gzip
    >>> decompressed(gzip.compress(b"x" * 10) * 2, "gzip", 100)  # two members, as ``cat a.gz b.gz``
    b'xxxxxxxxxxxxxxxxxxxx'
    >>> decompressed(gzip.compress(b"x" * 10)[:-4], "gzip", 100)
    Traceback (most recent call last):
    ...
    collectors.cloud.event.PayloadError: Content-Encoding gzip: the body is cut short
    """
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    if enc in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif enc == "deflate":  # RFC 9110's deflate is zlib-wrapped; some senders send it raw
        wbits = zlib.MAX_WBITS if len(body) > 1 and body[0] & 0x0F == 8 and (body[0] * 256 + body[1]) % 31 == 0 \
            else -zlib.MAX_WBITS
    else:
        raise PayloadError(f"unsupported Content-Encoding {encoding!r} (this intake takes gzip, deflate or none)")
    out, rest = [], body
    size = 0
    try:
        while rest:
            d = zlib.decompressobj(wbits)
            chunk = d.decompress(rest, limit + 1 - size)
            size += len(chunk)
            out.append(chunk)
            if size > limit or d.unconsumed_tail:
                raise _TooLarge
            if not d.eof:
                raise PayloadError(f"Content-Encoding {enc}: the body is cut short")
            rest = d.unused_data if wbits > 16 else b""  # gzip members may follow one another
    except zlib.error as exc:
        raise PayloadError(f"Content-Encoding {enc}: corrupt body ({exc})") from None
    return b"".join(out)


def _json(status: int, body: dict, **headers) -> web.Response:
    return web.json_response(body, status=status, headers=headers or None)


async def _cloud(body: bytes, request: web.Request, cfg: dict, refused: list) -> list:
    """Cloud events (JSON, CloudEvents, provider payloads), pointed at their nodes; a batch's items that cannot be
    taken go to ``refused`` (``intake.batch``)."""
    nodes = cfg["nodes"]
    if nodes.due(missing=False):
        await asyncio.to_thread(nodes.relist, False)
    events = parse(body, headers=request.headers, instance=request.query.get("instance"),
                   nodes=nodes.snapshot(), cluster=cfg["cluster"], now=cfg["clock"](), refused=refused)
    unmapped = [e for e in events if e.labels.get("instance") and not e.entity.node]
    if unmapped and nodes.due(missing=True):
        await asyncio.to_thread(nodes.relist, True)
        mapping = nodes.snapshot()
        for e in unmapped:
            attach_node(e, mapping.get(e.labels["instance"], ""), cfg["cluster"])
    return events


async def _audit(body: bytes, request: web.Request, cfg: dict, refused: list) -> list:
    """The apiserver's audit EventList: the actions worth an Event (``collectors.kubernetes.audit``), with the
    workload and team of what they touched when the intake may read the cluster (``owners``)."""
    events = events_from_audit(body, cluster=cfg["cluster"], ignore=cfg["audit_ignore"], trusted=cfg["audit_trusted"])
    if cfg["owners"] is not None and events:
        events = await asyncio.to_thread(attach_owners, events, cfg["owners"])
    return events


def _ce_headers(request: web.Request) -> dict:
    """Binary-mode CloudEvents keep their attributes in headers: kept beside the body (``headers``; raw bytes of a
    header as U+FFFD: a dead letter is JSON text)."""
    ce = {k.lower(): v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
          for k, v in request.headers.items() if k.lower().startswith("ce-")}
    return {"headers": ce} if ce else {}


async def _over_limit(request: web.Request, cfg: dict, why: TooLarge | str, payload: bytes) -> web.Response:
    """413 for a body over ``max_body`` (``why``: as sent, with its first bytes; or decompressed, with the whole body
    as sent), kept as a dead letter when a bearer token vouches for the sender; 503 when Kafka does not take it."""
    requests = cfg["requests"]
    if not cfg["auth"].bearer(request.headers):  # an HMAC signature covers the whole body: it was not read
        log.info("body over %d bytes from %s, signed or unauthenticated: not kept", cfg["max_body"], request.remote)
        requests.labels("413").inc()
        answer = _json(413, {"error": f"body larger than {cfg['max_body']} bytes"})
        return await closing(request, answer) if isinstance(why, TooLarge) and why.cut else answer
    if not isinstance(why, TooLarge):
        return await _kept(request, cfg, why, payload, 413, f"body larger than {cfg['max_body']} bytes")
    await why.measure(request.content)
    answer = await _kept(request, cfg, why.reason, payload, 413, f"body larger than {cfg['max_body']} bytes",
                         **why.dead_letter)
    return await closing(request, answer) if why.cut else answer  # the rest of the body is not read


async def _kept(request: web.Request, cfg: dict, reason: str, payload: bytes, status: int, error: str,
                **where) -> web.Response:
    """``payload`` kept on the dead-letter topic with ``reason``, then ``status``; 503 when Kafka does not take it."""
    try:
        await asyncio.wait_for(cfg["sink"].reject(reason, payload, origin=ORIGIN, path=request.path_qs,
                                                  remote=request.remote or "", **where, **_ce_headers(request)),
                               cfg["kafka_timeout"])
    except Exception as kexc:  # noqa: BLE001 - whatever Kafka raised: the sender must retry
        log.warning("dead-letter not acknowledged (%s): answering 503", kexc)
        cfg["requests"].labels("503").inc()
        return _json(503, {"error": "Kafka unavailable, retry"}, **{"Retry-After": "5"})
    log.info("rejected payload from %s: %s", request.remote, reason)
    cfg["requests"].labels(str(status)).inc()
    return _json(status, {"error": error})


def _intake(convert):
    """``POST`` handler: auth, size, ``convert(body, request, cfg, refused)`` -> events, then Kafka (the table above)."""

    async def handle(request: web.Request) -> web.Response:
        cfg = request.app[CONFIG]
        auth: Auth = cfg["auth"]
        requests = cfg["requests"]
        if not auth.presented(request.headers):
            requests.labels("401").inc()
            return _json(401, {"error": "unauthorized"}, **{"WWW-Authenticate": "Bearer"})
        unreadable = None
        try:
            body = raw = await read_body(request, cfg["max_body"])
            body = decompressed(raw, request.headers.get("Content-Encoding", ""), cfg["max_body"])
        except TooLarge as exc:
            return await _over_limit(request, cfg, exc, exc.head)
        except _TooLarge:
            return await _over_limit(request, cfg, f"body of {len(raw)} bytes decompresses to over the "
                                                   f"{cfg['max_body']}-byte limit", raw)
        except RequestPayloadError as exc:  # the connection's framing (chunks) is broken: nothing whole to keep
            body, unreadable = b"", f"cannot read the body ({exc})"
        except PayloadError as exc:  # kept as it came
            unreadable = str(exc)
        if unreadable:
            log.info("%s from %s", unreadable, request.remote)
        if not auth.check(request.headers, body):
            requests.labels("401").inc()
            return _json(401, {"error": "unauthorized"}, **{"WWW-Authenticate": "Bearer"})
        sink, timeout = cfg["sink"], cfg["kafka_timeout"]
        try:
            if unreadable:
                raise PayloadError(unreadable)
            refused: list[tuple[int, str, object]] = []
            events = await convert(body, request, cfg, refused)
        except PayloadError as exc:
            return await _kept(request, cfg, str(exc), body, 400, str(exc))
        try:
            await asyncio.wait_for(sink.send_all(events), timeout)
            for i, why, item in refused:  # the batch's others are taken; each of these kept with why
                await asyncio.wait_for(sink.reject(why, orjson.dumps(item), origin=ORIGIN, path=request.path_qs,
                                                   remote=request.remote or "", index=i), timeout)
        except Exception as kexc:  # noqa: BLE001 - not acknowledged, whatever the cause: the sender must retry
            log.warning("events not acknowledged (%s: %s): answering 503", type(kexc).__name__, kexc)
            requests.labels("503").inc()
            return _json(503, {"error": "Kafka unavailable, retry"}, **{"Retry-After": "5"})
        requests.labels("200").inc()
        for e in events:
            cfg["events"].labels(e.reason).inc()
        answer = {"accepted": len(events), "ids": [e.id for e in events]}
        if refused:
            log.info("%d of a batch's items rejected from %s: %s", len(refused), request.remote, refused[0][1])
            answer["rejected"] = [{"index": i, "error": why} for i, why, _ in refused]
        return _json(200, answer)

    return handle


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[CONFIG]["registry"]),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(sink, auth: Auth, nodes: NodeMap | None = None, *, max_body: int = 256 * 1024,
               cluster: str = "default", kafka_timeout: float = 10.0, clock=time.time, owners=None,
               audit_ignore: re.Pattern | None = DEFAULT_IGNORE, audit_trusted: Networks = ()) -> web.Application:
    """The intake application. ``sink`` has ``async send_all(events)`` and ``async reject(reason, payload, ...)``
    (``collectors.sink.AsyncKafkaSink``), started and stopped by the caller; ``owners``
    (``collectors.kubernetes.owners.Owners``) names the workload and team of audit events; ``audit_ignore``
    matches the users whose audit events are left out (the control plane's own, by default), ``audit_trusted``
    the public networks (an office's, a VPN's egress) whose requests are not reported as from the internet."""
    registry = CollectorRegistry()
    # the body as sent (aiohttp's decompression off, see above) is at most max_body bytes, and decompressed too:
    # ``read_body`` reads it (past the limit, only its beginning, kept; aiohttp's own limit would keep nothing)
    app = web.Application(client_max_size=max_body, handler_args={"auto_decompress": False})
    app[CONFIG] = {
        "sink": sink, "auth": auth, "nodes": nodes or NodeMap(), "max_body": max_body, "cluster": cluster,
        "kafka_timeout": kafka_timeout, "clock": clock, "registry": registry, "owners": owners,
        "audit_ignore": audit_ignore, "audit_trusted": audit_trusted,
        "requests": Counter("kubesight_cloud_requests", "intake requests by HTTP status", ["code"], registry=registry),
        "events": Counter("kubesight_cloud_events", "events accepted by reason", ["reason"], registry=registry),
    }
    app.router.add_post("/events", _intake(_cloud))
    app.router.add_post("/audit", _intake(_audit))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


class PrintSink:
    """``--stdout``: the async sink interface over printing JSON lines (no Kafka, for trying the intake)."""

    def __init__(self):
        from collectors.sink import StdoutSink

        self.inner = StdoutSink()

    async def send_all(self, recs) -> None:
        for r in recs:
            self.inner.send(r)
        self.inner.flush()

    async def reject(self, reason, payload, *, origin, **where) -> None:
        self.inner.reject(reason, payload, origin=origin, **where)
