"""Producing many samples fast: per-partition aiokafka batches, and each series' partition remembered.

``AsyncKafkaSink.send_all`` sends record by record; on a 22,853-sample apiserver page a third
of its time is aiokafka's pure-Python murmur2 over ~150-byte series keys, and most of the rest
is one future per record.  Series keys repeat every scrape, so ``BatchProducer`` computes each
key's partition once (Kafka's default partitioner: ``murmur2(key) & 0x7fffffff % partitions``,
so a series lands where any other producer would put it) and appends the records to one
``BatchBuilder`` per partition, awaiting every batch's acknowledgement (acks=all, idempotent:
the sink's producer).  Values are byte-identical to ``core.records.encode``, except that
non-finite values are spelled ``"NaN"``, ``"+Inf"``, ``"-Inf"`` (which ``records.decode``
accepts) where orjson would write ``null`` (which it rejects).
"""

from __future__ import annotations

import asyncio

import orjson
from aiokafka.partitioner import murmur2

from core.records import VERSION, Sample, format_time


class BatchProducer:
    """``send_all(samples)`` / ``reject(...)`` over an ``AsyncKafkaSink`` (started by the caller)."""

    def __init__(self, sink, max_keys: int = 2_000_000):
        self.sink = sink
        self.producer = sink.producer
        self.topic = sink.topic("samples")
        self.max_keys = max_keys
        self._parts: dict[bytes, int] = {}
        self._n: int | None = None
        # one send_all at a time: aiokafka queues one batch per partition and makes the next wait for
        # it to drain, so concurrent senders would only time each other out
        self._lock = asyncio.Lock()

    async def _partition_count(self) -> int:
        if self._n is None:
            self._n = len(await self.producer.partitions_for(self.topic))
        return self._n

    async def send_all(self, samples: list[Sample]) -> None:
        """Send and wait for every acknowledgement (raises if Kafka did not take them)."""
        if not samples:
            return
        async with self._lock:
            await self._send_all(samples)

    async def _send_all(self, samples: list[Sample]) -> None:
        n = await self._partition_count()
        parts = self._parts
        if len(parts) > self.max_keys:
            parts.clear()
        times: dict[float, str] = {}
        batches: dict[int, object] = {}
        futures = []
        dumps = orjson.dumps
        for s in samples:
            key = s.key()
            p = parts.get(key)
            if p is None:
                p = parts[key] = (murmur2(key) & 0x7FFFFFFF) % n
            t = times.get(s.time)
            if t is None:
                t = times[s.time] = format_time(s.time)
            v = s.value
            if v - v != 0:  # NaN or +-Inf
                v = "NaN" if v != v else ("+Inf" if v > 0 else "-Inf")
            value = dumps({"v": VERSION, "kind": "sample", "name": s.name, "labels": s.labels, "value": v,
                           "time": t})
            b = batches.get(p)
            if b is None:
                b = batches[p] = self.producer.create_batch()
            if b.append(key=key, value=value, timestamp=None) is None:
                futures.append(await self.producer.send_batch(b, self.topic, partition=p))
                b = batches[p] = self.producer.create_batch()
                if b.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"sample {s.name} does not fit in an empty batch")
        for p, b in batches.items():
            if b.record_count():
                futures.append(await self.producer.send_batch(b, self.topic, partition=p))
        await asyncio.gather(*futures)
        self.sink.sent += len(samples)

    async def reject(self, reason: str, payload, *, origin: str, key: bytes | None = None, **where) -> None:
        await self.sink.reject(reason, payload, origin=origin, key=key, **where)
