"""Reading Kafka beside the transactional loop: a whole topic followed by every worker; seeking back to a commit."""

from __future__ import annotations

import asyncio
import logging

import mode
from aiokafka import AIOKafkaConsumer, TopicPartition

from core.kafkaclient import client_config

log = logging.getLogger("kubesight.follow")


async def follow_topic(service: mode.Service, bootstrap: str, topic: str, partitions: int, on_record,
                       caught_up: asyncio.Event, client_id: str) -> None:
    """Read every partition of ``topic`` from the beginning, then follow it (read_committed, no group),
    until ``service`` stops. ``caught_up`` is set once the end offsets seen at start are reached.
    A record that makes ``on_record`` raise is logged and skipped: one bad record never stops the view."""
    c = AIOKafkaConsumer(**client_config(bootstrap, "aiokafka"), enable_auto_commit=False, isolation_level="read_committed",
                         client_id=client_id, auto_offset_reset="earliest")
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        if not any(ends.values()):
            caught_up.set()
        while not service.should_stop:
            batches = await c.getmany(timeout_ms=200, max_records=5000)
            for msgs in batches.values():
                for m in msgs:
                    try:
                        on_record(m.key, m.value)
                    except Exception as exc:
                        log.warning("%s: skipping bad record at %d/%d: %s", topic, m.partition, m.offset, exc)
            if not caught_up.is_set():
                if all([await c.position(tp) >= ends[tp] for tp in tps]):
                    caught_up.set()
    finally:
        await c.stop()


async def seek_committed(consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
    """Move ``consumer`` back to the group's committed offset of ``tp`` (the beginning if none)."""
    committed = await consumer.committed(tp)
    if committed is None:
        await consumer.seek_to_beginning(tp)
    else:
        consumer.seek(tp, committed)
