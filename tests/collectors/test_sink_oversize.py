"""A collector's record over what Kafka takes (a Kubernetes Event message, a label value of a megabyte): kafka-python
and aiokafka raised MessageSizeTooLargeError at send, which the collectors do not expect. Every sink now sends a dead
letter in its place, with the reason, the topic it was meant for and its first 64 KiB, and the records around it go on."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from collectors.metrics.produce import BatchProducer
from collectors.sink import AsyncKafkaSink, KafkaSink
from core.records import Event, Sample
from tests.kafkatools import read_to_end

pytestmark = pytest.mark.kafka


def _dead(settings) -> list[dict]:
    return [orjson.loads(r.value) for r in read_to_end(settings.kafka, settings.topic("deadletter"))]


def test_every_sink_dead_letters_a_record_too_large_for_kafka(settings):
    big = Event(source="kubernetes", reason="BackOff", time=1000.0, message="m" * 1_100_000)
    small = Event(source="kubernetes", reason="BackOff", time=1001.0, message="fine")
    sink = KafkaSink(settings.kafka, settings.topic)
    try:
        sink.send(big)
        sink.send(small)
        sink.flush(30)
    finally:
        sink.close()
    assert (sink.sent, sink.dead) == (1, 1)

    async def intake():
        s = AsyncKafkaSink(settings.kafka, settings.topic)
        await s.start()
        try:
            await s.send_all([small, big])
            batch = BatchProducer(s)
            await batch.send_all([Sample("up", 1.0, 1000.0, {"job": "a"}),
                                  Sample("up", 1.0, 1000.0, {"job": "b", "huge": "v" * 1_100_000})])
        finally:
            await s.stop()
        return s

    s = asyncio.run(intake())
    assert (s.sent, s.dead) == (2, 2)
    events = [orjson.loads(r.value) for r in read_to_end(settings.kafka, settings.topic("events"))]
    assert [e["message"] for e in events] == ["fine", "fine"]
    samples = [orjson.loads(r.value) for r in read_to_end(settings.kafka, settings.topic("samples"))]
    assert [x["labels"] for x in samples] == [{"job": "a"}]
    dead = _dead(settings)
    assert sorted(d["origin"] for d in dead) == ["collector", "collector", "collector/metrics"]
    for d in dead:
        assert d["reason"].startswith("record of ") and d["reason"].endswith(" bytes kubesight sends to Kafka")
        assert d["truncated"] and len(d["payload"]) == 65536 and d["size"] > 1_000_000
    assert {d["where"]["topic"] for d in dead} == {settings.topic("events"), settings.topic("samples")}


def test_the_producer_computes_each_live_series_partition_once_and_forgets_dead_ones(settings):
    """BatchProducer turns its memo between batches (collectors.metrics.produce.KeyPartitions): steady series are
    computed once however many there are, and a new pod's series each scrape do not pile up."""

    async def scrapes():
        s = AsyncKafkaSink(settings.kafka, settings.topic)
        await s.start()
        try:
            batch = BatchProducer(s, max_keys=4)
            for scrape in range(12):
                await batch.send_all([Sample("up", 1.0, 1000.0 + scrape, {"job": j}) for j in "abcdef"]
                                     + [Sample("up", 1.0, 1000.0 + scrape, {"job": "pod", "pod": f"p{scrape}"})])
            return batch.parts
        finally:
            await s.stop()

    memo = asyncio.run(scrapes())
    assert memo.computed == 6 + 12  # the six steady series once, each pod's once
    assert len(memo.new) + len(memo.old) <= 2 * 7  # two generations of one batch each: the dead pods are gone
