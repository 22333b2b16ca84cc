"""One way for tests to read what is on a topic (every committed record, up to the end offsets of now), one to
write a transaction to it (committed or aborted), and one to wait on a condition with a deadline (``until``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from core.kafkaclient import client_config


def read_to_end(bootstrap: str, topic: str, timeout: float = 30.0) -> list:
    """Every committed record of every partition of ``topic``, from the beginning to its end offsets
    as they are now (read_committed: aborted transactions are skipped). Bounded by ``timeout``."""
    c = KafkaConsumer(**client_config(bootstrap, "kafka-python"), enable_auto_commit=False, group_id=None,
                      isolation_level="read_committed")
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        out: list = []
        deadline = time.monotonic() + timeout
        while any(c.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic} to its end in {timeout:.0f}s"
            for recs in c.poll(timeout_ms=500, max_records=100_000).values():
                out.extend(recs)
        return out
    finally:
        c.close()


def write_transaction(bootstrap: str, topic: str, values: list[bytes], commit: bool = True, tid: str = "test-tx",
                      key: bytes = b"k", partition: int = 0) -> None:
    """``values`` to one partition of ``topic`` in one transaction of ``tid``, committed or (``commit=False``)
    aborted after the records reached the broker: a reader sees them only as aborted records and markers."""
    p = KafkaProducer(**client_config(bootstrap, "kafka-python"), transactional_id=tid, enable_idempotence=True)
    try:
        p.init_transactions()
        p.begin_transaction()
        for v in values:
            p.send(topic, v, key=key, partition=partition)
        if commit:
            p.commit_transaction()
        else:
            p.flush()
            p.abort_transaction()
    finally:
        p.close()


async def until(pred: Callable[[], bool], what: str | Callable[[], object], timeout: float = 30.0,
                interval: float = 0.1) -> None:
    """Wait (on the running loop) until ``pred()`` holds; past ``timeout`` seconds fail naming ``what`` (a text, or a
    callable giving the detail at that moment, e.g. the processor's stats)."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what() if callable(what) else what}"
        await asyncio.sleep(interval)
