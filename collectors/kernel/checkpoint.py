"""Resume points of the kernel collector: a file on the node, or the compacted ``checkpoints`` topic.

A checkpoint is ``{"source": ..., "pos": N, "emitted": [...], "dead": [...]}``: every line at or
before position ``pos`` (kmsg sequence number, or line number) is fully handled; ``emitted`` lists
the start positions of events already produced from later lines (they belong to other callers, or
the checkpoint was taken while an earlier report was still open) and ``dead`` the later lines
already dead-lettered. On restart the collector re-reads from ``pos + 1`` and drops what these
two lists name: nothing is lost and nothing is produced twice.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "kernel.json")
>>> cp = FileCheckpoint(path)
>>> cp.load() is None
True
>>> cp.save({"source": "kmsg:b1", "pos": 41, "emitted": [43]})
>>> cp.load()["pos"]
41
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson


class FileCheckpoint:
    """Atomic JSON file (write to a temporary file, fsync, rename)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def load(self) -> dict | None:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError as exc:
            from core.yamlconfig import ConfigError

            # a user's file to fix: one line (kubesight.cli), not a traceback
            raise ConfigError([f"checkpoint file {self.path} is not valid JSON ({exc}); delete it to start over"]) from None
        return data if isinstance(data, dict) else None

    def save(self, cp: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps(cp))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


class KafkaCheckpoint:
    """The last value for ``key`` on the compacted ``checkpoints`` topic; saved through the sink's producer."""

    def __init__(self, bootstrap: str, topic: str, key: str, sink):
        self.bootstrap = bootstrap
        self.topic = topic
        self.key = key.encode()
        self.sink = sink

    def load(self) -> dict | None:
        from kafka import KafkaConsumer, TopicPartition

        from core.kafkaclient import client_config

        consumer = KafkaConsumer(**client_config(self.bootstrap, "kafka-python"), enable_auto_commit=False,
                                 consumer_timeout_ms=1000, client_id="kubesight-kernel-checkpoint")
        try:
            parts = consumer.partitions_for_topic(self.topic) or {0}
            tps = [TopicPartition(self.topic, p) for p in parts]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps)
            last = None
            while any(consumer.position(tp) < end[tp] for tp in tps):
                for recs in consumer.poll(timeout_ms=500).values():
                    for r in recs:
                        if r.key == self.key:
                            last = r.value
            if last is None:
                return None
            return orjson.loads(last)
        finally:
            consumer.close()

    def save(self, cp: dict) -> None:
        self.sink.send_raw("checkpoints", self.key, orjson.dumps(cp))
        self.sink.flush()
