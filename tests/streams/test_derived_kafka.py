"""The Derived stage in the real transactional hot path: partials re-keyed through the samples topic."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from kafka import KafkaConsumer

from collectors.metrics.exposition import parse
from collectors.sink import KafkaSink
from core.records import Sample
from streams.derived import Derived
from streams.hotpath import Pipeline, TransactionalProcessor

ETCD = "nri-kubernetes-testdata/1_35/controlplane/etcd/metrics"


def _derived(bootstrap: str, topic: str) -> list[dict]:
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                      isolation_level="read_committed", consumer_timeout_ms=2000)
    try:
        return [v for v in (orjson.loads(m.value) for m in c) if v["labels"].get("kubesight") == "derived"]
    finally:
        c.close()


@pytest.mark.kafka
def test_etcd_fsync_p99_comes_out_of_the_worker(settings, kafka_bootstrap, data_dir):
    pts = parse((data_dir / ETCD).read_text()).points
    sink = KafkaSink(kafka_bootstrap, settings.topic)
    n = 0
    for i, t in enumerate((1000.0, 1030.0, 1060.0)):  # the same fsyncs again every 30 s
        for name, labels, value, _ in pts:
            if name.endswith(("_total", "_bucket", "_count", "_sum")):
                value *= i + 1
            sink.send(Sample(name, value, t, {**labels, "job": "etcd", "instance": "10.0.0.5:2381",
                                                "cluster": "ack-1"}))
            n += 1
    sink.close()

    # every record is in Kafka before the worker starts, so the partials come back after the watermark
    # has passed them: the event clock alone never ticks again; the wall clock ticks idle partitions
    live = settings.model_copy(update={"clock": "wall"})

    async def run():
        proc = TransactionalProcessor(live, kafka_bootstrap, "signals", ["samples"], Pipeline([Derived()]),
                                      worker_id="d0", tick_interval=1.0)
        await proc.start()
        try:
            deadline = time.monotonic() + 60
            while proc.stats["in"] < n + 30 or proc.stats["commits"] < 3:  # raw samples + partials read back
                assert time.monotonic() < deadline, proc.stats
                await asyncio.sleep(0.2)
            await asyncio.sleep(settings.commit_interval * 3)
        finally:
            await proc.stop()
        return proc.stats

    stats = asyncio.run(run())
    assert stats["deadletter"] == 0
    got = _derived(kafka_bootstrap, settings.topic("samples"))
    fsync = [(v["time"], v["value"]) for v in got if v["name"] == "etcd_fsync_p99_seconds"]
    # 0.99 * 855 = 846.45 in (0.004, 0.008] holding 842..848 (per 30 s, so also over the 60 s window);
    # both rounds' partials came back behind the watermark (partials of different source partitions
    # interleave, so no partial can tell that a scrape is complete): a backlog yields its newest
    # aggregate, which the wall clock settles although every record was read long ago
    assert fsync == [("1970-01-01T00:17:40.000Z", pytest.approx(0.004 + 0.004 * 4.45 / 6))]
    assert {v["labels"]["instance"] for v in got if v["name"] == "etcd_fsync_p99_seconds"} == {"10.0.0.5:2381"}
