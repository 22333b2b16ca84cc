"""Kernel collector through the real broker: events, dead letters, and the checkpoint on the compacted topic."""

from __future__ import annotations

import io

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from collectors.kernel.checkpoint import KafkaCheckpoint
from collectors.kernel.classify import Classifier
from collectors.kernel.collector import KernelCollector
from collectors.kernel.patterns import load_patterns
from collectors.kernel.sources import from_path
from collectors.sink import KafkaSink, StdoutSink

pytestmark = pytest.mark.kafka


def read_topic(settings, logical: str) -> list[tuple[bytes, bytes]]:
    c = KafkaConsumer(bootstrap_servers=settings.kafka, enable_auto_commit=False)
    try:
        topic = settings.topic(logical)
        parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
        ends = c.end_offsets(parts)
        c.assign(parts)
        c.seek_to_beginning(*parts)
        out = []
        while any(c.position(tp) < ends[tp] for tp in parts):
            for recs in c.poll(timeout_ms=1000).values():
                out += [(r.key, r.value) for r in recs]
        return out
    finally:
        c.close()


@pytest.fixture
def node_log(tmp_path, data_dir):
    lines = []
    for rel in ("gpud-testdata/pstore/dmesg-erst.txt", "gpud-testdata/memory/dmesg.decode.iso.log",
                "gpud-testdata/xid/dmesg-with-xid-119.log"):
        lines += (data_dir / rel).read_text().splitlines()
    lines.insert(20, "6,notanumber,1,-;torn kmsg record")
    p = tmp_path / "node.log"
    p.write_text("\n".join(lines) + "\n")
    return p


def collector(patterns, sink, checkpoint):
    c = Classifier(patterns, node="gpu-3", cluster="prod", source_id="file")
    col = KernelCollector(c, sink, checkpoint=checkpoint, source_id="file:node.log")
    col.resume()
    return col


def test_produce_restart_resume_from_compacted_checkpoint(settings, node_log):
    patterns = load_patterns()
    out = io.StringIO()
    ref = collector(patterns, StdoutSink(out), None)
    ref.run(from_path(node_log))
    expected = [orjson.loads(ln)["id"] for ln in out.getvalue().splitlines()]
    assert len(expected) > 20

    key = "kernel/prod/gpu-3"
    # first run: stops after 30 lines, inside the pstore oops report (as a crash would)
    sink = KafkaSink(settings.kafka, settings.topic, client_id="kernel-test-1")
    first = collector(patterns, sink, KafkaCheckpoint(settings.kafka, settings.topic("checkpoints"), key, sink))
    first.run(from_path(node_log), max_lines=30)
    sink.close()
    assert first.bad == 1

    # second run: a new process; the checkpoint is read back from the compacted topic
    sink = KafkaSink(settings.kafka, settings.topic, client_id="kernel-test-2")
    cp = KafkaCheckpoint(settings.kafka, settings.topic("checkpoints"), key, sink)
    saved = cp.load()
    assert saved["source"] == "file:node.log" and saved["pos"] < 30, "the open oops is not past the checkpoint"
    second = collector(patterns, sink, cp)
    second.run(from_path(node_log))
    sink.close()
    assert second.bad == 0, "the torn record before the checkpoint is not dead-lettered twice"

    events = read_topic(settings, "events")
    ids = [orjson.loads(v)["id"] for _, v in events]
    assert sorted(ids) == sorted(expected) and len(set(ids)) == len(ids), "no loss, no repeat"
    keys = {k for k, _ in events}
    assert keys == {b"prod//Node/gpu-3"}
    oops = [orjson.loads(v) for _, v in events if orjson.loads(v)["reason"] == "KernelOops"]
    assert len(oops) == 1 and int(oops[0]["labels"]["lines"]) > 30

    (dead,) = read_topic(settings, "deadletter")
    d = orjson.loads(dead[1])
    assert d["reason"].startswith("malformed /dev/kmsg record header")
    assert d["payload"] == "6,notanumber,1,-;torn kmsg record" and d["origin"] == "collector/kernel"
    assert d["where"]["line"] == 21 and d["where"]["file"] == str(node_log)

    cps = [(k, orjson.loads(v)) for k, v in read_topic(settings, "checkpoints")]
    assert {k for k, _ in cps} == {key.encode()}
    assert cps[-1][1]["emitted"] == [] and cps[-1][1]["pos"] == len(node_log.read_text().splitlines())
