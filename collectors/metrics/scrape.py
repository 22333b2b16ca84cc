"""Scraping: fetch each target's page on its own schedule, parse it, produce one Sample per point.

Each target runs in its own task, so a slow, huge or hanging target only fails itself:
the whole fetch is bounded by the target's ``timeout``, the body by ``max_bytes`` (read in
chunks, abandoned past the cap) and the page by ``max_series`` (after relabelling, like
Prometheus' ``sample_limit``).  A failed scrape produces ``up 0``, a clear message, a
self-metric, and -- when the page itself is bad (parse error, too large, too many series) --
a dead-letter record with the reason and the head of the page.

Like Prometheus, every sample gets the target's ``job`` and ``instance`` labels (an exposed
label of the same name becomes ``exported_<name>`` unless ``honor_labels``), and every scrape
adds ``up``, ``scrape_duration_seconds`` and ``scrape_samples_scraped``.  ``instance`` is the URL's
``host[:port]`` as written, never its userinfo: a password in the URL (``http://user:pw@host/metrics``) is sent
as basic auth but printed, logged and dead-lettered as ``xxxxx`` (``basic_auth`` with a ``password_file``
keeps it out of the config altogether).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
import zlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from collectors.metrics.exposition import OPENMETRICS, ExpositionError, parse
from collectors.metrics.relabel import compile_rules
from core.records import Sample

log = logging.getLogger("kubesight.metrics")

ACCEPT = f"{OPENMETRICS};version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
DEADLETTER_HEAD = 256 * 1024  # bytes of a bad page kept on the dead-letter topic
THREAD_PARSE_BYTES = 256 * 1024  # larger pages are parsed in a worker thread
REDACTED = "xxxxx"  # a URL's password as Prometheus shows it (Go's url.URL.Redacted): the URL stays a valid URL


def host_port(url: str) -> str:
    """The ``instance`` of a target: its URL's ``host[:port]`` as written (no port added, IPv6 brackets kept), without
    the userinfo, which would put a password into every series' labels.

    >>> host_port("http://scrapeuser:pw@127.0.0.1:9100/metrics"), host_port("https://[::1]:9100/m"), host_port("http://a/m")
    ('127.0.0.1:9100', '[::1]:9100', 'a')
    """
    return urlsplit(url).netloc.rpartition("@")[2]


def redacted(url: str) -> str:
    """``url`` with the password of its userinfo shown as ``xxxxx`` (the user kept, as Go's ``url.Redacted``): the form
    every log line, dead letter and table shows.

    >>> redacted("http://scrapeuser:pw@h:1/metrics?x=1"), redacted("http://u@h/m"), redacted("http://h:1/m")
    ('http://scrapeuser:xxxxx@h:1/metrics?x=1', 'http://u@h/m', 'http://h:1/m')
    """
    netloc = urlsplit(url).netloc
    userinfo, _, hostport = netloc.rpartition("@")
    if ":" not in userinfo:
        return url
    return url.replace(netloc, f"{userinfo.partition(':')[0]}:{REDACTED}@{hostport}", 1)


class ScrapeError(Exception):
    """A failed scrape; ``kind`` is the self-metric result label, ``bad_page`` whether to dead-letter it."""

    def __init__(self, kind: str, message: str, bad_page: bytes | None = None):
        super().__init__(message)
        self.kind = kind
        self.bad_page = bad_page


@dataclass
class ScrapeTarget:
    """One resolved target (from the config or from discovery)."""

    job: str
    url: str
    interval: float = 30.0
    timeout: float = 10.0
    max_bytes: int = 16 * 2**20
    max_series: int = 50_000
    labels: dict = field(default_factory=dict)  # target labels besides job/instance
    honor_labels: bool = False
    honor_timestamps: bool = True
    bearer_token: str | None = None
    bearer_token_file: str | None = None
    auth_type: str = "Bearer"  # the scheme the token is sent with (Prometheus' authorization.type)
    basic_auth: object = None  # config.BasicAuth: username, password or password_file
    ssl: ssl.SSLContext | bool | None = None
    keep: callable = None

    def __post_init__(self):
        if self.keep is None:
            self.keep = compile_rules(())

    @property
    def id(self) -> str:
        return f"{self.job}|{self.url}"

    @property
    def shown_url(self) -> str:
        """The URL as printed, logged and dead-lettered: its password (if any) as ``xxxxx``."""
        return redacted(self.url)

    def scrub(self, text: str) -> str:
        """``text`` (an error from the HTTP client may quote the URL, in its own spelling) with the URL's password as
        ``xxxxx`` wherever it stands: a message says a little less rather than the password."""
        password = urlsplit(self.url).password
        if not password:
            return text
        return text.replace(self.url, self.shown_url).replace(password, REDACTED)

    def target_labels(self) -> dict:
        return {"job": self.job, "instance": host_port(self.url), **self.labels}

    def headers(self) -> dict:
        # the project's one reader of a *_file secret (stripped, as Prometheus trims one)
        from core.httpauth import secret

        h = {"Accept": ACCEPT, "User-Agent": "kubesight-metrics/0.1",
             "X-Prometheus-Scrape-Timeout-Seconds": f"{self.timeout:g}"}
        # files re-read each time, as Prometheus does: projected tokens and mounted passwords rotate
        token = secret(None, self.bearer_token_file) if self.bearer_token_file else self.bearer_token
        if token:
            h["Authorization"] = f"{self.auth_type} {token}"
        b = self.basic_auth
        if b is not None:
            password = secret(None, b.password_file) if b.password_file else b.password or ""
            h["Authorization"] = "Basic " + base64.b64encode(f"{b.username}:{password}".encode()).decode()
        return h

    def secret_file(self) -> str | None:
        """The file ``headers`` reads a secret from (named when it cannot be read)."""
        if self.basic_auth is not None and self.basic_auth.password_file:
            return f"basic_auth.password_file {self.basic_auth.password_file}"
        return f"bearer_token_file {self.bearer_token_file}" if self.bearer_token_file else None


def ssl_context(tls) -> ssl.SSLContext | None:
    """``config.TLS`` -> SSLContext (None: the default verification)."""
    from core.webconfig import client_ssl_context

    return client_ssl_context(tls.ca_file, tls.cert_file, tls.key_file, tls.insecure_skip_verify)


def from_config(cfg) -> list[ScrapeTarget]:
    """The static targets of a ``MetricsConfig``, with the defaults filled in.

    Raises ``ValueError`` naming every target whose TLS files cannot be used."""
    d = cfg.defaults
    out, errors = [], []
    for i, t in enumerate(cfg.targets):
        try:
            ctx = ssl_context(t.tls)
        except (OSError, ssl.SSLError) as exc:
            errors.append(f"targets[{i}].tls ({t.job}): cannot load {t.tls.ca_file or t.tls.cert_file}: "
                          f"{getattr(exc, 'strerror', None) or exc}")
            continue
        auth = t.authorization
        out.append(ScrapeTarget(job=t.job, url=t.url, interval=t.interval or d.interval,
                                timeout=t.timeout or d.timeout, max_bytes=t.max_bytes or d.max_bytes,
                                max_series=t.max_series or d.max_series, labels=dict(t.labels),
                                honor_labels=t.honor_labels, honor_timestamps=t.honor_timestamps,
                                bearer_token=auth.credentials if auth else t.bearer_token,
                                bearer_token_file=auth.credentials_file if auth else t.bearer_token_file,
                                auth_type=auth.type if auth else "Bearer", basic_auth=t.basic_auth, ssl=ctx,
                                keep=compile_rules(t.relabel)))
    if errors:
        raise ValueError("\n".join(errors))
    return out


class SelfMetrics:
    """The collector's own metrics, in a registry of its own (served on ``/metrics`` by the CLI)."""

    def __init__(self, registry=None):
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.scrapes = Counter("kubesight_metrics_scrapes", "Scrapes by job and result", ["job", "result"], registry=r)
        self.samples = Counter("kubesight_metrics_samples", "Samples produced by job", ["job"], registry=r)
        self.limit = Counter("kubesight_metrics_series_limit_exceeded",
                             "Scrapes rejected for exceeding the per-target series limit", ["job"], registry=r)
        self.duration = Gauge("kubesight_metrics_last_scrape_duration_seconds", "Duration of the last scrape",
                              ["job", "instance"], registry=r)
        self.rw_requests = Counter("kubesight_metrics_remote_write_requests", "Remote-write requests by HTTP code",
                                   ["code"], registry=r)
        self.rw_samples = Counter("kubesight_metrics_remote_write_samples", "Remote-write samples produced",
                                  registry=r)
        self.rw_skipped = Counter("kubesight_metrics_remote_write_series_skipped",
                                  "Remote-write series not taken (native histograms), by metric name", ["name"],
                                  registry=r)


class Scraper:
    """Scrapes targets into an async sink (``AsyncKafkaSink``: ``send_all`` waits for the acks)."""

    def __init__(self, sink, session, metrics: SelfMetrics | None = None, clock=time.time):
        self.sink = sink
        self.session = session
        self.metrics = metrics or SelfMetrics()
        self.clock = clock
        self.last_error: dict[str, str] = {}  # target id -> message of its last failure ("" when healthy)
        self._labelled: dict[str, tuple[str, str]] = {}  # target id -> (job, instance) of its duration gauge

    def forget(self, target_id: str) -> None:
        """A target discovery no longer lists (a pod gone): its last error and its duration gauge go too, so
        neither this memory nor ``/metrics`` grows with every target ever scraped."""
        self.last_error.pop(target_id, None)
        labels = self._labelled.pop(target_id, None)
        if labels is not None:
            try:
                self.metrics.duration.remove(*labels)
            except KeyError:
                pass

    async def fetch(self, t: ScrapeTarget) -> tuple[bytes, bool]:
        """The body (capped) and whether it is OpenMetrics; ScrapeError otherwise."""
        import aiohttp

        try:
            headers = t.headers()
        except (OSError, UnicodeDecodeError) as exc:
            raise ScrapeError("auth_error", f"cannot read {t.secret_file()}: "
                                            f"{getattr(exc, 'strerror', None) or exc}") from None
        try:
            async with asyncio.timeout(t.timeout):
                async with self.session.get(t.url, headers=headers, ssl=t.ssl if t.ssl is not None else True,
                                            timeout=aiohttp.ClientTimeout(total=None)) as resp:
                    if resp.status != 200:
                        raise ScrapeError("http_error", f"HTTP {resp.status} {resp.reason}")
                    if resp.content_length and resp.content_length > t.max_bytes:
                        raise ScrapeError("too_large", f"body of {resp.content_length} bytes exceeds the "
                                          f"{t.max_bytes}-byte limit")
                    chunks, size = [], 0
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        size += len(chunk)
                        if size > t.max_bytes:
                            raise ScrapeError("too_large", f"body exceeds the {t.max_bytes}-byte limit",
                                              b"".join(chunks)[:4096])
                        chunks.append(chunk)
                    # gzip/deflate pages arrive decoded (aiohttp); max_bytes applies to the decoded size
                    return b"".join(chunks), resp.content_type == OPENMETRICS
        except TimeoutError:
            raise ScrapeError("timeout", f"no complete answer within {t.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise ScrapeError("connect_error", f"{type(exc).__name__}: {exc}") from None

    def samples_of(self, t: ScrapeTarget, body: bytes, openmetrics: bool, now: float) -> tuple[list[Sample], int]:
        """Parse, label, relabel and limit one page (ScrapeError if it is bad): its samples and how many the page
        had before relabelling (Prometheus's ``scrape_samples_scraped``)."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScrapeError("parse_error", f"page is not UTF-8 ({exc})", body) from None
        try:
            page = parse(text, openmetrics=openmetrics)
        except ExpositionError as exc:
            raise ScrapeError("parse_error", str(exc), body) from None
        tl = t.target_labels()
        keep, honor, honor_ts = t.keep, t.honor_labels, t.honor_timestamps
        out = []
        append = out.append
        for name, labels, value, ts in page.points:
            if honor:
                labels = {**tl, **labels}
            else:
                for k in tl:
                    if k in labels:  # Prometheus: exported_job, or exported_exported_job when that is taken too
                        to = f"exported_{k}"
                        while to in labels:
                            to = f"exported_{to}"
                        labels[to] = labels.pop(k)
                labels.update(tl)
            if "" in labels.values():  # an empty value is no label (Prometheus drops it; remote-write never has it)
                labels = {k: v for k, v in labels.items() if v != ""}
            if keep(name, labels):
                append(Sample(name, value, ts if honor_ts and ts is not None else now, labels))
        if len(out) > t.max_series:
            self.metrics.limit.labels(t.job).inc()
            raise ScrapeError("too_many_series", f"{len(out)} series exceed the per-target limit of {t.max_series}",
                              body)
        return out, len(page.points)

    async def scrape_once(self, t: ScrapeTarget) -> int:
        """One scrape: produce its samples (acked) plus up/duration/counts; returns how many of the page's samples
        were produced (after relabelling)."""
        now = round(self.clock(), 3)
        start = time.perf_counter()
        tl = t.target_labels()
        n = 0
        try:
            body, om = await self.fetch(t)
            if len(body) > THREAD_PARSE_BYTES:  # keep the loop (other targets, remote-write) responsive
                samples, n = await asyncio.to_thread(self.samples_of, t, body, om, now)
            else:
                samples, n = self.samples_of(t, body, om, now)
            result, error = "ok", ""
        except ScrapeError as exc:
            samples, result, error = [], exc.kind, t.scrub(str(exc))
            log.warning("scrape %s %s failed: %s", t.job, t.shown_url, error)
            if exc.bad_page is not None:
                await self.sink.reject(f"{exc.kind}: {error}", exc.bad_page[:DEADLETTER_HEAD],
                                       origin="collector/metrics", url=t.shown_url, job=t.job)
        took = time.perf_counter() - start
        kept = len(samples)
        samples += [Sample("up", 1.0 if result == "ok" else 0.0, now, dict(tl)),
                    Sample("scrape_duration_seconds", round(took, 6), now, dict(tl)),
                    Sample("scrape_samples_scraped", float(n), now, dict(tl)),
                    Sample("scrape_samples_post_metric_relabeling", float(kept), now, dict(tl))]
        await self.sink.send_all(samples)
        self.metrics.scrapes.labels(t.job, result).inc()
        self.metrics.samples.labels(t.job).inc(len(samples))
        self.metrics.duration.labels(t.job, tl["instance"]).set(took)
        self._labelled[t.id] = (t.job, tl["instance"])
        self.last_error[t.id] = error
        return kept

    async def run_target(self, t: ScrapeTarget, stop: asyncio.Event) -> None:
        """Scrape ``t`` every ``interval`` (first one after a stable per-target offset) until ``stop``."""
        offset = (zlib.crc32(t.id.encode()) % 1000) / 1000 * t.interval
        next_at = time.monotonic() + offset
        while not stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    return
                except TimeoutError:
                    pass
            next_at += t.interval
            try:
                await self.scrape_once(t)
            except Exception as exc:  # Kafka down or a bug: say so, keep the schedule
                log.error("scrape %s %s could not be delivered: %s", t.job, t.shown_url, t.scrub(str(exc)))
                self.metrics.scrapes.labels(t.job, "delivery_error").inc()
            if time.monotonic() > next_at:  # overran: skip missed slots rather than bunching up
                next_at = time.monotonic() + t.interval
