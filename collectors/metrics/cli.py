"""``kubesight collect metrics`` (scrape + remote-write intake) and ``kubesight bench metrics``."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
config (YAML, see deploy/metrics.example.yaml): defaults (interval, timeout, max_bytes, max_series),
targets (job, url, basic_auth / authorization / bearer token, TLS, labels, relabel keep/drop; a password
in a URL's userinfo works too, and shows as xxxxx), discovery.kubernetes (roles),
remote_write (host, port, path).  Errors name file, line and YAML path, all at once.

endpoints (remote_write.enabled):
  POST /api/v1/write   Prometheus remote-write 1.0 (snappy protobuf): 204 after Kafka acked every
                       sample; 400 + dead letter for a bad payload; 413 too large; 503 Kafka unavailable
  GET  /metrics        the collector's own metrics (scrapes by result, series-limit rejections ...)
  GET  /healthz        liveness

examples:
  kubesight collect metrics --config deploy/metrics.example.yaml
  kubesight collect metrics --config metrics.yaml --once        # scrape every target once, print a table
"""


def register(sub, group) -> None:

    g = group("collect", "run a collector")
    p = g.add_parser("metrics", help="scrape Prometheus targets and receive remote-write into the samples topic",
                     description="Scrape Prometheus/OpenMetrics targets (static and discovered through the "
                                 "Kubernetes API) and accept Prometheus remote-write; one Sample per point.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", dest="metrics_config", required=True, metavar="FILE", help="collector config YAML")
    p.add_argument("--once", action="store_true", help="scrape every target once, print a table, exit 1 if any is down")
    p.add_argument("--stdout", action="store_true", help="print Sample records as JSON lines instead of producing")
    p.set_defaults(func=_collect)

    b = group("bench", "measure throughput")
    bp = b.add_parser("metrics", help="samples/s parsed and produced: the 3 MB apiserver page, remote-write")
    bp.add_argument("--rounds", type=int, default=5, help="repetitions; the best is reported (default: %(default)s)")
    bp.add_argument("--data", default=None, help="shared data folder (default: ../shared/data)")
    bp.add_argument("--parse-only", action="store_true", help="no Kafka: parsing and decoding only")
    bp.set_defaults(func=_bench)


class _AsyncStdout:
    """The ``--stdout`` sink with the async interface of ``AsyncKafkaSink``."""

    def __init__(self):
        from collectors.sink import StdoutSink

        self.inner = StdoutSink()

    async def send_all(self, recs) -> None:
        for r in recs:
            self.inner.send(r)

    async def reject(self, reason, payload, *, origin, key=None, **where) -> None:
        self.inner.reject(reason, payload, origin=origin, key=key, **where)


def _collect(args) -> int:
    import asyncio
    import logging

    from collectors.metrics.config import load
    from collectors.metrics.scrape import from_config
    from core.yamlconfig import ConfigError

    try:
        cfg = load(args.metrics_config, files=True)
        static = from_config(cfg)
    except (ConfigError, ValueError) as exc:
        where = "" if isinstance(exc, ConfigError) else f"{args.metrics_config}: "
        print(f"kubesight collect metrics: invalid config\n{where}{exc}", file=sys.stderr)
        return 2
    web_cfg = None
    if cfg.remote_write.enabled and not args.once:
        from core import webconfig
        from core.settings import Settings

        rw = cfg.remote_write
        try:
            settings = Settings.load(args.config)
            # remote_write's web_config and token file were found readable (and the token file not blank) by load,
            # each at its key; what the web config says is checked here, at its own lines
            web_cfg = webconfig.load(rw.web_config or settings.web_config)
            webconfig.check_listen(rw.host, what="remote-write intake", writes=True,
                                   authenticated=bool(rw.bearer_token_file) or web_cfg.authenticates,
                                   insecure=rw.insecure_listen or settings.insecure_listen)
        except (ConfigError, webconfig.ListenRefused) as exc:
            print(f"kubesight collect metrics: {exc}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    return asyncio.run(_main(args, cfg, static, web_cfg))


async def _main(args, cfg, static, web_cfg=None) -> int:
    import asyncio

    import aiohttp

    from collectors.metrics.scrape import Scraper, SelfMetrics
    from core.settings import Settings
    from core.shutdown import on_stop
    from core.telemetry import serve_for

    sink = await _sink(args)
    metrics = SelfMetrics()
    stop = asyncio.Event()
    settings = Settings.load(args.config)
    on_stop(stop.set, settings.shutdown_timeout, "kubesight collect metrics", asyncio.get_running_loop())
    if not args.once:
        from core.broker import bootstrap_for

        serve_for(settings, None if args.stdout else bootstrap_for(settings), "kubesight collect metrics",
                  [metrics.registry])
    runner = None
    try:
        async with aiohttp.ClientSession(trust_env=True) as session:  # HTTP(S)_PROXY, NO_PROXY
            scraper = Scraper(sink, session, metrics)
            if args.once:
                return await _once(scraper, static + await _discover(cfg), sys.stderr if args.stdout else sys.stdout)
            if cfg.remote_write.enabled:
                runner = await _serve(cfg, sink, metrics, web_cfg)
            tasks: dict[str, asyncio.Task] = {t.id: asyncio.create_task(scraper.run_target(t, stop)) for t in static}
            print(f"scraping {len(static)} static target(s)", file=sys.stderr)
            while not stop.is_set():
                if cfg.discovery.kubernetes.enabled:
                    try:
                        found = await _discover(cfg)
                    except Exception as exc:  # API down: keep the targets we have
                        print(f"discovery failed: {exc}", file=sys.stderr)
                    else:
                        _reconcile(tasks, static + found, scraper, stop)
                try:
                    await asyncio.wait_for(stop.wait(), cfg.discovery.kubernetes.refresh)
                except TimeoutError:
                    pass
            await asyncio.gather(*tasks.values(), return_exceptions=True)
    finally:
        if runner is not None:
            await runner.cleanup()
        if hasattr(sink, "sink"):
            await sink.sink.stop()
    return 0


def _reconcile(tasks: dict, targets: list, scraper, stop) -> None:
    import asyncio

    from collectors.metrics.scrape import redacted

    want = {t.id: t for t in targets}
    for tid in [t for t in tasks if t not in want]:
        tasks.pop(tid).cancel()
        scraper.forget(tid)
        job, _, url = tid.partition("|")
        print(f"target gone: {job}|{redacted(url)}", file=sys.stderr)
    for tid, t in want.items():
        if tid not in tasks:
            tasks[tid] = asyncio.create_task(scraper.run_target(t, stop))
            print(f"target found: {t.job}|{t.shown_url}", file=sys.stderr)


async def _discover(cfg) -> list:
    import asyncio

    if not cfg.discovery.kubernetes.enabled:
        return []
    from collectors.metrics.discovery import core_api, discover_with

    api = core_api(cfg.discovery.kubernetes.kubeconfig)
    found = await asyncio.to_thread(discover_with, api, cfg.discovery.kubernetes, cfg.defaults)
    for what, why in found.skipped:
        print(f"not scraped: {what}: {why}", file=sys.stderr)
    return found.targets


async def _sink(args):
    if args.stdout:
        return _AsyncStdout()
    import asyncio

    from collectors.metrics.produce import BatchProducer
    from collectors.sink import AsyncKafkaSink
    from core.broker import KafkaUnreachable, bootstrap_for
    from core.settings import Settings
    from core.topics import ensure_topics

    settings = Settings.load(args.config)
    bootstrap = bootstrap_for(settings)
    # Kafka unreachable (a TCP check within seconds), topics kubesight cannot run on: one line, exit 2 (kubesight.cli);
    # checked before the producer exists, so none is left unclosed ("Unclosed AIOKafkaProducer" at exit)
    await asyncio.to_thread(ensure_topics, settings, bootstrap)
    kafka = AsyncKafkaSink(bootstrap, settings.topic, client_id="kubesight-metrics")
    try:
        await kafka.start()
    except Exception as exc:  # whatever the client raised: the broker answered the TCP check a moment ago
        await kafka.stop()
        raise KafkaUnreachable(f"Kafka unreachable at {bootstrap} ({type(exc).__name__}: {exc})") from None
    return BatchProducer(kafka)


async def _serve(cfg, sink, metrics, web_cfg=None):
    from aiohttp import web

    from collectors.metrics.remote_write import Intake, app

    rw = cfg.remote_write
    from core.webconfig import read_tokens

    tokens = read_tokens(rw.bearer_token_file) if rw.bearer_token_file else None
    intake = Intake(sink, metrics, max_bytes=rw.max_bytes, labels=rw.labels, kafka_timeout=rw.kafka_timeout,
                    tokens=tokens, web=web_cfg)
    a = app(intake, rw.path, registry=metrics.registry)

    async def healthz(request):
        return web.Response(text="ok\n")

    a.router.add_get("/healthz", healthz)
    runner = web.AppRunner(a, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, rw.host, rw.port, ssl_context=intake.web.ssl_context()).start()
    print(f"remote-write intake on {intake.web.scheme}://{rw.host}:{rw.port}{rw.path}, self-metrics on /metrics",
          file=sys.stderr)
    return runner


async def _once(scraper, targets, out) -> int:
    """Scrape each target once; one line per target (table to ``out``, a URL's password as xxxxx), exit 1 if any is
    down."""
    import asyncio

    counts = await asyncio.gather(*(scraper.scrape_once(t) for t in targets))
    down = 0
    print(f"{'job':<22} {'url':<55} {'samples':>8}  status", file=out)
    for t, n in zip(targets, counts, strict=True):
        err = scraper.last_error.get(t.id, "")
        down += bool(err)
        print(f"{t.job:<22} {t.shown_url:<55} {n:>8}  {'up' if not err else 'DOWN: ' + err}", file=out)
    return 1 if down else 0


def _bench(args) -> int:
    from collectors.metrics.bench import run

    return run(args)
