"""Prometheus remote-write intake: snappy-compressed ``prompb.WriteRequest`` -> Samples in Kafka.

Answers like a remote-write receiver should, so senders retry exactly when it helps:
``204`` only after Kafka acknowledged every sample; ``401`` without the configured bearer token or basic-auth
user (the web config's ``basic_auth_users``); ``400`` for a payload that will never be
accepted (bad snappy, bad protobuf, a series without ``__name__``...), kept on the dead-letter
topic with the reason; ``413`` above the size cap, its first 64 KiB kept there too (``collectors.bodies``);
``503`` when Kafka does not take the samples
(the sender retries later).  The prompb messages are built at run time from a
``FileDescriptorProto`` (no protoc, no generated code):

>>> req = WriteRequest()
>>> ts = req.timeseries.add()
>>> _ = ts.labels.add(name="__name__", value="up"), ts.labels.add(name="job", value="etcd")
>>> _ = ts.samples.add(value=1.0, timestamp=1700000000000)
>>> [(s.name, s.labels, s.value, s.time) for s in samples_of(decode(encode(req)))]
[('up', {'job': 'etcd'}, 1.0, 1700000000.0)]
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time

import cramjam
from aiohttp.web_protocol import RequestPayloadError
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from collectors.bodies import TooLarge, closing, read_body
from core.records import RecordError, Sample, check_time
from core.telemetry import LabelCap

log = logging.getLogger("kubesight.metrics")


def _schema():
    """prompb/types.proto + remote.proto, the parts remote-write 1.0 uses."""
    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="kubesight_prompb.proto", package="prometheus", syntax="proto3")

    def msg(name, *fields):
        m = fd.message_type.add(name=name)
        for fname, number, ftype, label, tname in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if tname:
                f.type_name = f".prometheus.{tname}"

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    msg("Label", ("name", 1, F.TYPE_STRING, opt, None), ("value", 2, F.TYPE_STRING, opt, None))
    msg("Sample", ("value", 1, F.TYPE_DOUBLE, opt, None), ("timestamp", 2, F.TYPE_INT64, opt, None))
    msg("Exemplar", ("labels", 1, F.TYPE_MESSAGE, rep, "Label"), ("value", 2, F.TYPE_DOUBLE, opt, None),
        ("timestamp", 3, F.TYPE_INT64, opt, None))
    # native histograms (field 4) are kept as raw bytes: counted and dead-lettered, not decoded
    msg("TimeSeries", ("labels", 1, F.TYPE_MESSAGE, rep, "Label"), ("samples", 2, F.TYPE_MESSAGE, rep, "Sample"),
        ("exemplars", 3, F.TYPE_MESSAGE, rep, "Exemplar"), ("histograms", 4, F.TYPE_BYTES, rep, None))
    msg("MetricMetadata", ("type", 1, F.TYPE_INT32, opt, None), ("metric_family_name", 2, F.TYPE_STRING, opt, None),
        ("help", 4, F.TYPE_STRING, opt, None), ("unit", 5, F.TYPE_STRING, opt, None))
    msg("WriteRequest", ("timeseries", 1, F.TYPE_MESSAGE, rep, "TimeSeries"),
        ("metadata", 3, F.TYPE_MESSAGE, rep, "MetricMetadata"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


WriteRequest = _schema()


STALE_NAN = 0x7FF0000000000002  # Prometheus' staleness marker: "this series ended", not a value


def _is_stale(v: float) -> bool:
    return v != v and struct.unpack("<Q", struct.pack("<d", v))[0] == STALE_NAN


class PayloadError(ValueError):
    """A request that will never be accepted (answered 400, dead-lettered with this reason)."""


class BadSeries(PayloadError):
    """One time series Prometheus would refuse, and its metric name ("" when it has none)."""

    def __init__(self, why: str, name: str):
        super().__init__(why)
        self.name = name


def _uvarint(buf: bytes) -> int:
    n = shift = 0
    for i, b in enumerate(buf[:10]):
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n
        shift += 7
        if i == 9:
            break
    raise PayloadError("snappy: bad length preamble")


def encode(req) -> bytes:
    """WriteRequest -> snappy block, as a sender puts it on the wire."""
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


def decode(body: bytes, max_bytes: int = 32 * 2**20):
    """Snappy block -> WriteRequest; PayloadError says what is wrong."""
    if not body:
        raise PayloadError("empty body")
    size = _uvarint(body)
    if size > max_bytes:
        raise PayloadError(f"decompressed size {size} exceeds the {max_bytes}-byte limit")
    try:
        raw = bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise PayloadError(f"snappy: {exc}") from None
    req = WriteRequest()
    try:
        req.ParseFromString(raw)
    except DecodeError as exc:
        raise PayloadError(f"protobuf: {exc}") from None
    return req


def samples_of(req, extra_labels: dict | None = None, skipped: list | None = None,
               refused: list | None = None) -> list[Sample]:
    """One Sample per (series, sample); PayloadError on a series Prometheus itself would refuse.

    Staleness markers (a special NaN) are protocol, not observations: they are left out.  A native histogram series
    (no float samples; kubesight has no record for it) is named in ``skipped`` (name, why) when given, and the other
    series are taken: refusing the request (400) made Prometheus drop the whole batch, its floats too, for good
    (a 4xx is not retried).  Without ``skipped`` it is a PayloadError.  So is a series Prometheus would refuse (a
    duplicate label, no name, a timestamp out of range), unless ``refused`` is given: then it is named there
    (name, why), none of its samples is taken, and the other series are."""
    out = []
    extra = extra_labels or {}
    for i, ts in enumerate(req.timeseries):
        try:
            name, series = _series(i, ts, extra)
        except BadSeries as exc:
            if refused is None:
                raise
            refused.append((exc.name, str(exc)))
            continue
        if ts.histograms:
            why = f"timeseries[{i}] ({name!r}): native histograms are not supported"
            if skipped is None:
                raise PayloadError(why)
            skipped.append((name, why))
        out.extend(series)
    return out


def _series(i: int, ts, extra: dict) -> tuple[str, list[Sample]]:
    """One time series' name and samples, or BadSeries."""
    labels = {}
    name = None
    for lab in ts.labels:
        if lab.name in labels or (lab.name == "__name__" and name is not None):
            raise BadSeries(f"timeseries[{i}]: duplicate label {lab.name!r}", name or "")
        if lab.name == "__name__":
            name = lab.value
        else:
            labels[lab.name] = lab.value
    if not name:
        raise BadSeries(f"timeseries[{i}]: no __name__ label", "")
    for k, v in extra.items():  # as Prometheus' external_labels: the series' own label wins (a federating
        labels.setdefault(k, v)  # Prometheus' cluster="a" and "b" were both made "production": one series, mixed)
    out = []
    for s in ts.samples:
        v = s.value
        if v != v and _is_stale(v):
            continue
        try:  # refused now (a dead letter), not when written (a 503 retried for ever)
            t = check_time(s.timestamp / 1000.0)
        except RecordError:
            raise BadSeries(f"timeseries[{i}] ({name!r}): timestamp {s.timestamp} ms is not a time of years 1-9999",
                            name) from None
        out.append(Sample(name, v, t, labels))
    return name, out


def _refusal(refused: list[tuple[str, str]]) -> str:
    """What the series ``samples_of`` refused are told as: one series' reason, or how many and the first five."""
    if len(refused) == 1:
        return refused[0][1]
    return (f"{len(refused)} series refused: {'; '.join(why for _, why in refused[:5])}"
            + (" ..." if len(refused) > 5 else ""))


def _proto(content_type: str) -> str:
    """The ``proto`` parameter of a remote-write Content-Type ("" if none: 1.0 senders may leave it out).

    >>> _proto("application/x-protobuf;proto=io.prometheus.write.v2.Request"), _proto("application/x-protobuf")
    ('io.prometheus.write.v2.Request', '')
    """
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "proto":
            return value.strip().strip('"')
    return ""


class Intake:
    """The aiohttp handler; ``sink`` is an ``AsyncKafkaSink`` (``send_all`` returns once acked)."""

    def __init__(self, sink, metrics=None, *, max_bytes: int = 32 * 2**20, labels: dict | None = None,
                 kafka_timeout: float = 30.0, tokens: list[str] | None = None, web=None):
        from core.webconfig import NONE

        self.sink = sink
        self.tokens = [t.encode() for t in tokens or () if t]
        self.web = web or NONE  # core.webconfig.WebConfig: its basic_auth_users are accepted too
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.labels = dict(labels or {})
        self.kafka_timeout = kafka_timeout
        self.skipped_said: dict[str, float] = {}  # metric name -> when a dead letter last said it was not taken
        self.skipped_labels = LabelCap(1000)  # names in the skipped-series counter (a series each): then "other"

    SKIPPED_EVERY = 3600.0  # a metric's skipped series are dead-lettered (with a request holding them) once an hour
    SKIPPED_NAMES = 10_000  # names remembered for that

    def _skipped_to_say(self, skipped: list[tuple[str, str]], now: float) -> list[tuple[str, str]]:
        """The skipped series whose metric was not dead-lettered in the last ``SKIPPED_EVERY`` (every one is counted
        in ``kubesight_metrics_remote_write_series_skipped_total``): a Prometheus with native histograms puts
        them in nearly every request, and a dead letter per request would copy the whole stream."""
        out = []
        for name, why in skipped:
            if self.metrics is not None:
                self.metrics.rw_skipped.labels(*self.skipped_labels(name)).inc()
            if now - self.skipped_said.get(name, float("-inf")) >= self.SKIPPED_EVERY:
                out.append((name, why))
        return out

    def _count(self, code: int, n: int = 0) -> None:
        if self.metrics is not None:
            self.metrics.rw_requests.labels(str(code)).inc()
            if n:
                self.metrics.rw_samples.inc(n)

    async def _authorized(self, request) -> bool:
        from core.webconfig import bearer_matches

        users = bool(self.web.basic_auth_users)
        if not self.tokens and not users:
            return True
        header = request.headers.get("Authorization", "")
        if users and header[:6].lower() == "basic ":
            return await self.web.authorized_async(header)
        return bearer_matches(header, self.tokens)

    async def _too_large(self, request, exc: TooLarge):
        """413, the body's beginning kept with its size (the sender is authenticated: ``handle`` checked first); the
        connection closed where the body was not read to its end (``collectors.bodies``)."""
        from aiohttp import web

        await exc.measure(request.content)
        try:
            await asyncio.wait_for(self.sink.reject(f"remote-write: {exc.reason}", exc.head, origin="collector/metrics",
                                                    remote=request.remote or "", **exc.dead_letter),
                                   self.kafka_timeout)
        except Exception as kexc:  # cannot keep it: let the sender retry rather than lose it
            log.error("remote-write: %s and Kafka unavailable: %s", exc.reason, kexc)
            self._count(503)
            answer = web.Response(status=503, text="Kafka unavailable\n", headers={"Retry-After": "5"})
        else:
            self._count(413)
            answer = web.Response(status=413, text=f"body exceeds {self.max_bytes} bytes\n")
        return await closing(request, answer) if exc.cut else answer

    async def handle(self, request):
        from aiohttp import web

        if not await self._authorized(request):
            self._count(401)
            return web.Response(status=401, text="missing or wrong credentials (bearer token or basic auth)\n",
                                headers={"WWW-Authenticate": 'Basic realm="kubesight"' if self.web.basic_auth_users
                                         else "Bearer"})
        try:
            body, unreadable = await read_body(request, self.max_bytes), None
        except TooLarge as exc:
            return await self._too_large(request, exc)
        except RequestPayloadError as exc:  # the connection's framing (chunks) is broken: nothing whole to keep
            body, unreadable = b"", f"cannot read the body ({exc})"
        proto = _proto(request.headers.get("Content-Type", ""))
        if proto not in ("", "prometheus.WriteRequest"):  # remote-write 2.0 parsed as an empty 1.0 request: lost
            self._count(415)
            return web.Response(status=415, text=f"unsupported remote-write message {proto!r}: this receiver takes "
                                                 "prometheus.WriteRequest (remote-write 1.0)\n")
        try:
            if unreadable:
                raise PayloadError(unreadable)
            enc = request.headers.get("Content-Encoding", "snappy")
            if enc != "snappy":
                raise PayloadError(f"unsupported Content-Encoding {enc!r} (remote-write 1.0 uses snappy)")
            skipped: list[tuple[str, str]] = []
            refused: list[tuple[str, str]] = []
            req = decode(body, self.max_bytes)
            samples = samples_of(req, self.labels, skipped, refused)
            if refused and len(refused) == len(req.timeseries):  # nothing in it to take: refused whole (400)
                raise PayloadError(_refusal(refused))
        except PayloadError as exc:
            try:
                await asyncio.wait_for(self.sink.reject(f"remote-write: {exc}", body, origin="collector/metrics",
                                                        remote=request.remote or ""), self.kafka_timeout)
            except Exception as kexc:  # cannot keep it: let the sender retry rather than lose it
                log.error("remote-write: bad payload (%s) and Kafka unavailable: %s", exc, kexc)
                self._count(503)
                return web.Response(status=503, text="Kafka unavailable\n", headers={"Retry-After": "5"})
            self._count(400)
            return web.Response(status=400, text=f"{exc}\n")
        try:
            await asyncio.wait_for(self.sink.send_all(samples), self.kafka_timeout)
        except Exception as exc:
            log.error("remote-write: %d samples not acknowledged by Kafka: %s", len(samples), exc)
            self._count(503)
            return web.Response(status=503, text=f"Kafka unavailable: {type(exc).__name__}\n",
                                headers={"Retry-After": "5"})
        if refused:  # the others are taken (a 400 would make Prometheus drop them for good); these kept with why
            try:
                await asyncio.wait_for(self.sink.reject(f"remote-write: {_refusal(refused)}", body,
                                                        origin="collector/metrics", remote=request.remote or ""),
                                       self.kafka_timeout)
            except Exception as exc:  # the good samples are acked: a 503 now would make Prometheus send them again
                log.error("remote-write: %d series refused, and their dead letter failed: %s", len(refused), exc)
        say = self._skipped_to_say(skipped, time.monotonic()) if skipped else []
        if say:  # kept with why (the whole body holds them), a metric at most once an hour; best effort: the samples
            try:  # are acked, and a 503 now would make Prometheus send them all again
                await asyncio.wait_for(self.sink.reject(
                    f"remote-write: {len(say)} series not taken: {'; '.join(why for _, why in say[:5])}"
                    + (" ..." if len(say) > 5 else ""), body, origin="collector/metrics",
                    remote=request.remote or ""), self.kafka_timeout)
                now = time.monotonic()
                for name, _ in say:
                    self.skipped_said.pop(name, None)
                    self.skipped_said[name] = now  # most recently said last (evicted last)
                while len(self.skipped_said) > self.SKIPPED_NAMES:
                    self.skipped_said.pop(next(iter(self.skipped_said)))
            except Exception as exc:
                log.warning("remote-write: %d series not taken, and their dead letter failed: %s", len(say), exc)
        self._count(204, len(samples))
        return web.Response(status=204)


def app(intake: Intake, path: str = "/api/v1/write", registry=None):
    """The aiohttp application: ``POST path`` and, with a registry, ``GET /metrics`` (self-metrics)."""
    from aiohttp import web

    # the write path authenticates in the handler (bearer or basic, counted); /metrics needs a user if any
    # aiohttp's own decompression off: it dropped a corrupt gzip body's bytes and answered br or zstd itself (nothing
    # kept); the handler refuses every encoding but snappy with the body as it came
    a = web.Application(client_max_size=intake.max_bytes, handler_args={"auto_decompress": False},
                        middlewares=[intake.web.middleware(also=lambda request: request.path == path)])
    a.router.add_post(path, intake.handle)
    if registry is not None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        async def metrics(request):
            return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        a.router.add_get("/metrics", metrics)
    return a
