"""Kernel collector through the real broker: events, dead letters, and the checkpoint on the compacted topic."""

from __future__ import annotations

import io
import re

import orjson
import pytest

from collectors.kernel.checkpoint import KafkaCheckpoint
from collectors.kernel.classify import Classifier
from collectors.kernel.collector import KernelCollector
from collectors.kernel.lines import parse_line
from collectors.kernel.patterns import load_patterns
from collectors.kernel.sources import kmsg_items
from collectors.sink import KafkaSink, StdoutSink
from tests.kafkatools import read_to_end

pytestmark = pytest.mark.kafka


def read_topic(settings, logical: str) -> list[tuple[bytes, bytes]]:
    return [(r.key, r.value) for r in read_to_end(settings.kafka, settings.topic(logical))]


@pytest.fixture(scope="module")
def ring_buffer(data_dir) -> list[bytes]:
    """What reading /dev/kmsg returns, record by record: GPUd's real raw kmsg records, then a real
    pstore oops and an Xid burst re-sequenced as kmsg records, with one torn record in between."""
    recs = [ln.encode() for ln in (data_dir / "gpud-testdata" / "kmsg" / "kmsg.1.log").read_text().splitlines()]
    seq = 4011
    for ln in (data_dir / "gpud-testdata" / "pstore" / "dmesg-erst.txt").read_text().splitlines():
        m = re.match(r"^<(\d)>\[\s*(\d+)\.(\d+)\] ?(.*)$", ln)
        recs.append(f"{m.group(1)},{seq},{int(m.group(2)) * 10**6 + int(m.group(3))},-;{m.group(4)}".encode())
        seq += 1
    for ln in (data_dir / "gpud-testdata" / "memory" / "dmesg.decode.iso.log").read_text().splitlines()[:17]:
        recs.append(f"4,{seq},{1000000000 + seq},-;{parse_line(ln).text}".encode())
        seq += 1
    recs.insert(20, b"6,notanumber,1,-;torn kmsg record")
    return recs


def collector(patterns, sink, checkpoint):
    c = Classifier(patterns, node="gpu-3", cluster="prod", source_id="kmsg:boot-1")
    col = KernelCollector(c, sink, checkpoint=checkpoint, source_id="kmsg:boot-1")
    return col, col.resume()


def test_kmsg_seq_checkpoint_survives_a_restart_on_the_compacted_topic(settings, ring_buffer):
    patterns = load_patterns()
    out = io.StringIO()
    ref, _ = collector(patterns, StdoutSink(out), None)
    ref.run(kmsg_items(ring_buffer))
    expected = [orjson.loads(ln)["id"] for ln in out.getvalue().splitlines()]
    assert len(expected) == 18 and ref.bad == 1  # 1 oops + 17 Xid

    key = "kernel/prod/gpu-3"
    # first run: stops 12 records into the oops report (as a crash or a rollout would)
    sink = KafkaSink(settings.kafka, settings.topic, client_id="kernel-test-1")
    first, after = collector(patterns, sink, KafkaCheckpoint(settings.kafka, settings.topic("checkpoints"), key, sink))
    assert after is None
    first.run(kmsg_items(ring_buffer), max_lines=47 + 12)
    sink.close()
    assert (first.bad, first.events) == (1, 0)

    # second run: a new process reads the checkpoint back from the compacted topic and reopens
    # /dev/kmsg, which again returns every record from the oldest one still in the ring buffer
    sink = KafkaSink(settings.kafka, settings.topic, client_id="kernel-test-2")
    cp = KafkaCheckpoint(settings.kafka, settings.topic("checkpoints"), key, sink)
    second, after = collector(patterns, sink, cp)
    assert after == 4011, "the open oops (from seq 4012) is not past the checkpoint"
    second.run(kmsg_items(ring_buffer, after=after), max_lines=40)  # stops again, inside the Xid burst
    sink.close()
    assert second.bad == 0, "the torn record before the checkpoint is not dead-lettered twice"
    assert 1 < second.events < len(expected)

    sink = KafkaSink(settings.kafka, settings.topic, client_id="kernel-test-3")
    third, after = collector(patterns, sink, KafkaCheckpoint(settings.kafka, settings.topic("checkpoints"), key, sink))
    third.run(kmsg_items(ring_buffer, after=after))
    sink.close()
    assert second.events + third.events == len(expected)

    events = read_topic(settings, "events")
    ids = [orjson.loads(v)["id"] for _, v in events]
    assert sorted(ids) == sorted(expected) and len(set(ids)) == len(ids), "no loss, no repeat"
    assert {k for k, _ in events} == {b"prod//Node/gpu-3"}
    (oops,) = [orjson.loads(v) for _, v in events if orjson.loads(v)["reason"] == "KernelOops"]
    assert oops["labels"]["seq"] == "4012" and int(oops["labels"]["lines"]) > 30

    (dead,) = read_topic(settings, "deadletter")
    d = orjson.loads(dead[1])
    assert d["reason"] == "malformed /dev/kmsg record header (expected 'prio,seq,usec,flags;message')"
    assert d["payload"] == "6,notanumber,1,-;torn kmsg record" and d["origin"] == "collector/kernel"
    assert d["where"]["after_seq"] == 3983 and d["where"]["node"] == "gpu-3"

    cps = [(k, orjson.loads(v)) for k, v in read_topic(settings, "checkpoints")]
    assert {k for k, _ in cps} == {key.encode()}
    assert (cps[-1][1]["pos"], cps[-1][1]["emitted"], cps[-1][1]["source"]) == (seq_end(ring_buffer), [], "kmsg:boot-1")


def seq_end(recs: list[bytes]) -> int:
    return int(recs[-1].split(b",")[1])
