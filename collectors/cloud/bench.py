"""``kubesight bench cloud``: events/s through the HTTP intake into Kafka (acks=all), on loopback.

The intake runs in this process on an ephemeral 127.0.0.1 port with its own topics (prefix
``bench-cloud-<tag>-``, deleted afterwards); clients post payloads shaped like the providers'
documented samples (each with its own id), ``--concurrency`` requests in flight. A request counts
when it got its 200, i.e. after Kafka acknowledged its events; the figure is checked against the
events topic's end offsets.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import orjson

TOKEN = "bench-token"


def payload(i: int) -> dict:
    """The i-th payload: AWS spot warning, Alibaba CloudMonitor reboot, Alibaba EventBridge CloudEvent, AWS state change."""
    t = f"2024-05-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z"
    kind = i % 4
    if kind == 0:
        return {"version": "0", "id": f"spot-{i}", "detail-type": "EC2 Spot Instance Interruption Warning",
                "source": "aws.ec2", "account": "123456789012", "time": t, "region": "us-east-1",
                "resources": ["arn:aws:ec2:us-east-1b:instance/i-04c3029e207ee2de8"],
                "detail": {"instance-id": "i-04c3029e207ee2de8", "instance-action": "terminate"}}
    if kind == 1:
        return {"ver": "1.0", "id": f"cm-{i}", "product": "ECS", "level": "CRITICAL",
                "resourceId": "acs:ecs:cn-hangzhou:1690700000000030:instance/i-bp1ecr0000005go2go",
                "name": "Instance:SystemMaintenance.Reboot:Scheduled", "userId": "1690700000000030",
                "eventTime": "20190409T121826.922+0800", "regionId": "cn-hangzhou",
                "content": {"eventId": f"e-{i}", "publishTime": "2019-04-09T04:18:26Z",
                            "notBefore": "2019-04-12T01:01:01Z", "instanceId": "i-bp1ecr0000005go2go",
                            "eventType": "SystemMaintenance.Reboot", "eventStatus": "Scheduled"}}
    if kind == 2:
        return {"specversion": "1.0", "id": f"eb-{i}", "source": "acs.ecs", "time": t,
                "type": "ecs:Disk:Stalled", "subject": "acs:ecs:cn-hangzhou:1690700000000030:disk/d-t4ndyqve00n4ds",
                "aliyunregionid": "cn-hangzhou",
                "data": {"eventId": f"e-{i}", "diskId": "d-t4ndyqve00n4ds", "device": "/dev/xvdb",
                         "eventType": "Stalled", "eventStatus": "Executing", "ecsInstanceId": "i-bp1ecr0000005go2go"}}
    return {"version": "0", "id": f"sc-{i}", "detail-type": "EC2 Instance State-change Notification",
            "source": "aws.ec2", "account": "123456789012", "time": t, "region": "us-east-1",
            "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-0ff943b959e44c16f"],
            "detail": {"instance-id": "i-0ff943b959e44c16f", "state": "stopping"}}


def bodies(n: int, batch: int) -> list[tuple[bytes, str]]:
    """(body, content type) per request; a batch is a CloudEvents batch of wrapped payloads."""
    if batch <= 1:
        return [(orjson.dumps(payload(i)), "application/json") for i in range(n)]
    out = []
    for start in range(0, n, batch):
        items = [{"specversion": "1.0", "id": f"w-{i}", "source": "bench", "type": "wrapped", "data": payload(i)}
                 for i in range(start, min(n, start + batch))]
        out.append((orjson.dumps(items), "application/cloudevents-batch+json"))
    return out


async def _drive(bootstrap: str, settings, reqs, concurrency: int, progress) -> tuple[float, list[float], dict]:
    import aiohttp
    from aiohttp import web

    from collectors.cloud.auth import Auth
    from collectors.cloud.nodes import NodeMap
    from collectors.cloud.server import create_app
    from collectors.sink import AsyncKafkaSink

    sink = AsyncKafkaSink(bootstrap, settings.topic, client_id="kubesight-bench-cloud")
    await sink.start()
    nodes = NodeMap({"i-04c3029e207ee2de8": "ip-10-0-129-220.ec2.internal",
                     "i-bp1ecr0000005go2go": "cn-hangzhou.10.0.0.7"})
    runner = web.AppRunner(create_app(sink, Auth([TOKEN.encode()]), nodes), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/events"
    latencies: list[float] = []
    codes: dict[int, int] = {}
    queue = list(reversed(reqs))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker():
            while queue:
                body, ctype = queue.pop()
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers={"Authorization": f"Bearer {TOKEN}",
                                                                 "Content-Type": ctype}) as resp:
                    await resp.read()
                    codes[resp.status] = codes.get(resp.status, 0) + 1
                latencies.append(time.perf_counter() - t0)
                progress.update(1)

        # warm-up: one request each way, not counted
        async with session.post(url, data=reqs[0][0], headers={"Authorization": f"Bearer {TOKEN}",
                                                              "Content-Type": reqs[0][1]}) as resp:
            await resp.read()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    await runner.cleanup()
    await sink.stop()
    return elapsed, latencies, codes


def _count(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    from core.kafkaclient import client_config

    c = KafkaConsumer(**client_config(bootstrap, "kafka-python"))
    try:
        parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or ()]
        return sum(c.end_offsets(parts).values())
    finally:
        c.close()


def run(args) -> int:
    from tqdm import tqdm

    from core.broker import bootstrap_for
    from core.settings import Settings
    from core.topics import ensure_topics

    base = Settings.load(args.config)
    settings = base.model_copy(update={"topic_prefix": f"bench-cloud-{uuid.uuid4().hex[:8]}-"})
    bootstrap = bootstrap_for(settings, ephemeral=True)
    ensure_topics(settings, bootstrap)
    reqs = bodies(args.events, args.batch)
    bar = tqdm(total=len(reqs), desc="bench cloud", unit="req", file=sys.stderr, disable=None, ascii=not sys.stderr.isatty(),
               dynamic_ncols=True)
    try:
        elapsed, lat, codes = asyncio.run(_drive(bootstrap, settings, reqs, args.concurrency, bar))
        bar.close()
        stored = _count(bootstrap, settings.topic("events"))
    finally:
        from kafka.admin import KafkaAdminClient

        from core.kafkaclient import client_config

        admin = KafkaAdminClient(**client_config(bootstrap, "kafka-python"))
        admin.delete_topics([t for t in admin.list_topics() if t.startswith(settings.topic_prefix)])
        admin.close()
    lat.sort()
    warm = min(max(args.batch, 1), args.events)  # the first request, sent once more before timing
    ok = codes.get(200, 0)
    sent = min(ok * max(args.batch, 1), args.events)
    print(f"cloud intake: {sent} events in {len(reqs)} requests ({args.batch}/request, {args.concurrency} in flight) "
          f"in {elapsed:.2f} s -> {sent / elapsed:,.0f} events/s, {len(reqs) / elapsed:,.0f} requests/s; "
          f"latency p50 {lat[len(lat) // 2] * 1000:.1f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms; "
          f"HTTP {dict(sorted(codes.items()))}; {stored - warm} on the events topic (+{warm} warm-up)")
    return 0 if ok == len(reqs) and stored - warm == args.events else 1
