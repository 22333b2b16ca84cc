"""The collector's resume point in the compacted ``checkpoints`` topic, one key per piece.

Keys are ``kubernetes/<cluster>/rv/<stream>`` (the last resourceVersion processed),
``kubernetes/<cluster>/<event|node|pod>/<uid>`` (what was already emitted for that object:
an Event's highest occurrence count, a Node's or Pod's state summary) and
``kubernetes/<cluster>/<owner/<uid>|owner-ns/<namespace>|owner-wl/<namespace>/<Kind>/<name>>`` (what the ``owners``
topic was last told of a pod, a namespace or a workload, so a restart neither reads every pod's owners again nor
misses a change); a deleted object's key
gets a null value, so compaction keeps the topic the size of the live cluster.  They are
written in the same Kafka transaction as the records they account for.
"""

from __future__ import annotations

import time

import orjson

PREFIX = "kubernetes"


def key(cluster: str, part: str, name: str) -> bytes:
    """>>> key("prod", "rv", "events")
    b'kubernetes/prod/rv/events'
    """
    return f"{PREFIX}/{cluster}/{part}/{name}".encode()


def empty() -> dict[str, dict]:
    """A resume point with nothing in it (a first start), one table per part."""
    return {"rv": {}, "event": {}, "node": {}, "pod": {}, "owner": {}, "owner-ns": {}, "owner-wl": {}}


def load(bootstrap: str, topic: str, cluster: str, timeout: float = 30.0) -> dict[str, dict]:
    """``{"rv": {stream: rv}, "event": {uid: ...}, "node": {...}, "pod": {...}}`` as last committed.

    Reads the topic from the beginning with ``read_committed`` (a crashed collector's open
    transaction was aborted by ``init_transactions`` before this is called).
    """
    from kafka import KafkaConsumer, TopicPartition

    from core.kafkaclient import client_config

    out: dict[str, dict] = empty()
    prefix = f"{PREFIX}/{cluster}/".encode()
    consumer = KafkaConsumer(**client_config(bootstrap, "kafka-python"), enable_auto_commit=False, group_id=None,
                             isolation_level="read_committed", client_id=f"kubesight-k8s-checkpoint-{cluster}")
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        deadline = time.monotonic() + timeout
        while consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read checkpoints topic {topic} up to offset {end} in {timeout:.0f}s")
            for batch in consumer.poll(timeout_ms=500).values():
                for msg in batch:
                    if not msg.key or not msg.key.startswith(prefix):
                        continue
                    part, _, name = msg.key[len(prefix):].decode().partition("/")
                    if part not in out:
                        continue
                    if msg.value is None:
                        out[part].pop(name, None)
                    else:
                        out[part][name] = orjson.loads(msg.value)
    finally:
        consumer.close()
    return out
