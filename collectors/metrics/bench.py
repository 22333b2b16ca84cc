"""``kubesight bench metrics``: samples/s parsed and produced, for the 3 MB apiserver page and remote-write.

Parsing is timed in-process (best of ``--rounds``), for this collector's parser and for
prometheus_client's; producing is end to end on loopback: a local aiohttp server serves the
page and the scraper's ``scrape_once`` returns after Kafka acknowledged every sample
(acks=all), and a remote-write request built from the same page is POSTed to the intake,
whose 204 comes after the acks.  Topics get a private prefix and are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

APISERVER = "nri-kubernetes-testdata/1_35/controlplane/api-server/metrics"


def _best(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def write_request(text: str, t_ms: int):
    from collectors.metrics.exposition import parse
    from collectors.metrics.remote_write import WriteRequest

    req = WriteRequest()
    for name, labels, value, _ in parse(text).points:
        ts = req.timeseries.add()
        ts.labels.add(name="__name__", value=name)
        for k, v in labels.items():
            ts.labels.add(name=k, value=v)
        ts.samples.add(value=value, timestamp=t_ms)
    return req


async def _produce(bootstrap, settings, page: bytes, body: bytes, rounds: int, bar):
    import aiohttp
    from aiohttp import web

    from collectors.metrics.produce import BatchProducer
    from collectors.metrics.remote_write import Intake, app
    from collectors.metrics.scrape import Scraper, ScrapeTarget, SelfMetrics
    from collectors.sink import AsyncKafkaSink

    kafka = AsyncKafkaSink(bootstrap, settings.topic, client_id="kubesight-bench-metrics")
    await kafka.start()
    sink = BatchProducer(kafka)
    metrics = SelfMetrics()

    async def serve(request):
        return web.Response(body=page, content_type="text/plain")

    web_app = app(Intake(sink, metrics, max_bytes=64 * 2**20))
    web_app.router.add_get("/apiserver", serve)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    scrape_s, rw_s, n_scrape, n_rw = [], [], 0, 0
    try:
        async with aiohttp.ClientSession() as session:
            scraper = Scraper(sink, session, metrics)
            target = ScrapeTarget(job="apiserver", url=f"{base}/apiserver", timeout=60, interval=60)
            await scraper.scrape_once(target)  # warm-up
            for _ in range(rounds):
                t0 = time.perf_counter()
                n_scrape = await scraper.scrape_once(target) + 4
                scrape_s.append(time.perf_counter() - t0)
                bar.update(1)
            headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                       "X-Prometheus-Remote-Write-Version": "0.1.0"}
            for _ in range(rounds):
                t0 = time.perf_counter()
                async with session.post(f"{base}/api/v1/write", data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 204:
                        raise RuntimeError(f"remote-write answered {resp.status}")
                rw_s.append(time.perf_counter() - t0)
                bar.update(1)
            n_rw = int(metrics.rw_samples._value.get()) // rounds
    finally:
        await runner.cleanup()
        await kafka.stop()
    return min(scrape_s), n_scrape, min(rw_s), n_rw


def run(args) -> int:
    from importlib.metadata import version

    from prometheus_client.parser import text_string_to_metric_families
    from tqdm import tqdm

    from collectors.metrics.exposition import parse
    from collectors.metrics.remote_write import decode, encode, samples_of
    from core.datafolder import data_root

    path = data_root(args.data, APISERVER) / APISERVER
    page = path.read_bytes()
    text = page.decode()
    n = len(parse(text).points)
    hand = _best(lambda: parse(page.decode()), args.rounds)
    ref = _best(lambda: sum(len(f.samples) for f in text_string_to_metric_families(text)), max(1, args.rounds // 2))
    req = write_request(text, int(time.time() * 1000))
    body = encode(req)
    rw_parse = _best(lambda: samples_of(decode(body)), args.rounds)
    print(f"apiserver page: {len(page) / 2**20:.1f} MB, {n} samples")
    print(f"  parse  kubesight exposition parser  {n / hand:>10,.0f} samples/s  ({hand * 1000:.0f} ms/page)")
    pc = f"prometheus_client {version('prometheus-client')}"
    print(f"  parse  {pc:<28}  {n / ref:>10,.0f} samples/s  ({ref * 1000:.0f} ms/page)")
    print(f"remote-write request: {len(body) / 2**20:.2f} MB snappy, {n} series x 1 sample")
    print(f"  decode snappy + protobuf -> Sample  {n / rw_parse:>10,.0f} samples/s  ({rw_parse * 1000:.0f} ms/request)")
    if args.parse_only:
        return 0

    from core.broker import bootstrap_for
    from core.settings import Settings
    from core.topics import ensure_topics

    base = Settings.load(args.config)
    settings = base.model_copy(update={"topic_prefix": f"bench-metrics-{uuid.uuid4().hex[:8]}-"})
    bootstrap = bootstrap_for(settings, ephemeral=True)
    ensure_topics(settings, bootstrap)
    bar = tqdm(total=2 * args.rounds, desc="bench metrics", unit="req", file=sys.stderr, disable=None,
               ascii=not sys.stderr.isatty(), dynamic_ncols=True)
    try:
        scrape_s, n_scrape, rw_s, n_rw = asyncio.run(_produce(bootstrap, settings, page, body, args.rounds, bar))
    finally:
        bar.close()
        from kafka.admin import KafkaAdminClient

        from core.kafkaclient import client_config

        admin = KafkaAdminClient(**client_config(bootstrap, "kafka-python"))
        admin.delete_topics([t for t in admin.list_topics() if t.startswith(settings.topic_prefix)])
        admin.close()
    print(f"  scrape -> Kafka (acks=all)          {n_scrape / scrape_s:>10,.0f} samples/s  "
          f"({scrape_s * 1000:.0f} ms per scrape of {n_scrape} samples, best of {args.rounds})")
    print(f"  remote-write -> Kafka, 204          {n_rw / rw_s:>10,.0f} samples/s  "
          f"({rw_s * 1000:.0f} ms per request of {n_rw} samples, best of {args.rounds})")
    return 0
