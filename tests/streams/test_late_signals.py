"""Issue 13 #8: recorded events replayed into topics that already hold newer live samples gave 0 alerts
and no trace.  Now a signal later than ``allowed_lateness`` behind its partition's event time is
counted and dead-lettered with the reason: every one of them is accounted for."""

from __future__ import annotations

import time

import orjson
import pytest
from kafka import KafkaProducer

from collectors.replay import DEFAULT_EVENTS, read_events
from collectors.sink import KafkaSink
from core.records import Sample, encode
from streams.cli_run import spawn_worker, stop_process
from tests.kafkatools import read_to_end
from tests.streams.test_pipeline import wait_caught_up

pytestmark = pytest.mark.kafka


def test_old_recordings_into_a_live_worker_are_counted_and_dead_lettered(settings, tmp_path):
    events, _ = read_events(DEFAULT_EVENTS)
    old = [e for e in events if e.type == "Warning"][:300]
    proc = spawn_worker(settings, settings.kafka, tmp_path / "worker.log")
    try:
        # live samples, now, on every partition: each partition's event time is today
        p = KafkaProducer(bootstrap_servers=settings.kafka)
        now = time.time()
        for part in range(settings.partitions):
            s = Sample("node_load1", 0.5, now, {"node": f"n{part}"})
            p.send(settings.topic("samples"), encode(s), key=s.key(), partition=part)
        p.flush()
        p.close()
        wait_caught_up(settings.kafka, settings, [proc])
        sink = KafkaSink(settings.kafka, settings.topic)  # the 2021 recordings, replayed late
        for e in old:
            sink.send(e)
        sink.close()
        wait_caught_up(settings.kafka, settings, [proc])
        deadline = time.monotonic() + 30
        while True:
            dead = [orjson.loads(r.value) for r in read_to_end(settings.kafka, settings.topic("deadletter"))]
            if len(dead) >= len(old) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    finally:
        stop_process(proc)
    assert len(dead) == len(old)  # every late one accounted for, none dropped, none doubled
    assert all(d["reason"].startswith("late: ") and d["reason"].endswith("(allowed_lateness 600s)") for d in dead)
    assert sorted(orjson.loads(d["payload"])["id"] for d in dead) == sorted(e.id for e in old)
    assert read_to_end(settings.kafka, settings.topic("alerts")) == []
