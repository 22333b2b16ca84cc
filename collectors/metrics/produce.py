"""Producing many samples fast: per-partition aiokafka batches, and each series' partition remembered.

``AsyncKafkaSink.send_all`` sends record by record; on a 22,853-sample apiserver page a third
of its time is aiokafka's pure-Python murmur2 over ~150-byte series keys, and most of the rest
is one future per record.  Series keys repeat every scrape, so ``BatchProducer`` computes each
key's partition once (``core.kafkaclient.partition_of``: Kafka's default partitioner, so a series
lands where any other producer would put it) and appends the records to one record batch per
partition (``core.kafkaclient.send_in_batches``), awaiting every batch's acknowledgement (acks=all,
idempotent: the sink's producer).  Values are byte-identical to ``core.records.encode``, except that
non-finite values are spelled ``"NaN"``, ``"+Inf"``, ``"-Inf"`` (which ``records.decode``
accepts) where orjson would write ``null`` (which it rejects).
"""

from __future__ import annotations

import asyncio

import orjson

from core.kafkaclient import partition_of, send_in_batches
from core.records import RECORD_LIMIT, VERSION, Sample, format_time, oversize


class KeyPartitions:
    """Each series key's partition, remembered in two generations: a key is looked up in this one, then in the last
    one (and carried over), else computed.  At the start of a batch (``turn``), a generation that holds ``max_keys``
    becomes the last one and the oldest is dropped: a series sent in every scrape is computed once however many
    there are (a generation is never turned in the middle of a scrape), and pods that come and go (their names are
    in the keys) are forgotten two turns after their last sample, so memory stays at about twice ``max_keys`` keys
    plus one batch (a single memo cleared at 2M held up to ~400 MB of dead pods' keys, then recomputed every live
    one at once).

    >>> kp = KeyPartitions(max_keys=4)
    >>> for scrape in range(100):  # two steady series, and a new pod's series at every scrape
    ...     kp.turn()
    ...     got = [kp.get(k, [0, 1, 2]) for k in (b"up/a", b"up/b", b"pod/%d" % scrape)]
    >>> kp.computed, len(kp.new) + len(kp.old)  # each key computed once; the dead pods forgotten
    (102, 8)
    >>> kp = KeyPartitions(max_keys=4)
    >>> for scrape in range(6):  # more live series than max_keys: still each computed once
    ...     kp.turn()
    ...     got = [kp.get(b"s/%d" % i, [0, 1, 2]) for i in range(10)]
    >>> kp.computed
    10
    """

    def __init__(self, max_keys: int = 500_000):
        self.max_keys = max_keys
        self.new: dict[bytes, int] = {}
        self.old: dict[bytes, int] = {}
        self.computed = 0

    def turn(self) -> None:
        """Between batches: the current generation, once full, becomes the last one."""
        if len(self.new) >= self.max_keys:
            self.old, self.new = self.new, {}

    def get(self, key: bytes, ids: list[int]) -> int:
        p = self.new.get(key)
        return p if p is not None else self.miss(key, ids)

    def miss(self, key: bytes, ids: list[int]) -> int:
        p = self.old.get(key)
        if p is None:
            p = partition_of(key, ids)
            self.computed += 1
        self.new[key] = p
        return p


class BatchProducer:
    """``send_all(samples)`` / ``reject(...)`` over an ``AsyncKafkaSink`` (started by the caller)."""

    def __init__(self, sink, max_keys: int = 500_000):
        self.sink = sink
        self.producer = sink.producer
        self.topic = sink.topic("samples")
        self.parts = KeyPartitions(max_keys)
        self._ids: list[int] | None = None
        # one send_all at a time: aiokafka queues one batch per partition and makes the next wait for
        # it to drain, so concurrent senders would only time each other out
        self._lock = asyncio.Lock()

    async def _partitions(self) -> list[int]:
        if self._ids is None:
            self._ids = sorted(await self.producer.partitions_for(self.topic))
        return self._ids

    async def send_all(self, samples: list[Sample]) -> None:
        """Send and wait for every acknowledgement (raises if Kafka did not take them)."""
        if not samples:
            return
        async with self._lock:
            await self._send_all(samples)

    async def _send_all(self, samples: list[Sample]) -> None:
        ids = await self._partitions()
        memo = self.parts
        memo.turn()
        times: dict[float, str] = {}
        dumps = orjson.dumps
        topic = self.topic

        def records():
            for s in samples:
                key = s.key()
                p = memo.new.get(key)  # inline: the common case, a series of the last scrapes
                if p is None:
                    p = memo.miss(key, ids)
                t = times.get(s.time)
                if t is None:
                    t = times[s.time] = format_time(s.time)
                v = s.value
                if v - v != 0:  # NaN or +-Inf
                    v = "NaN" if v != v else ("+Inf" if v > 0 else "-Inf")
                value = dumps({"v": VERSION, "kind": "sample", "name": s.name, "labels": s.labels, "value": v,
                               "time": t})
                if len(value) + len(key) > RECORD_LIMIT:  # labels of a megabyte: the broker would refuse the batch
                    too_big.append((key, value))
                    continue
                yield topic, key, value, p

        too_big: list[tuple[bytes, bytes]] = []
        await asyncio.gather(*await send_in_batches(self.producer, records()))
        self.sink.sent += len(samples) - len(too_big)
        for key, value in too_big:
            await self.sink.reject(oversize(key, value) or "", value, origin="collector/metrics", key=key, topic=topic)

    async def reject(self, reason: str, payload, *, origin: str, key: bytes | None = None, **where) -> None:
        await self.sink.reject(reason, payload, origin=origin, key=key, **where)
