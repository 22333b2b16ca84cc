"""End to end through the real broker: recorded events -> worker(s) -> exact alerts, exactly once.

How "nothing lost or doubled" is shown: every alert the rule must produce is computed from
the recorded data independently of the worker; the alerts topic (read_committed) must hold
exactly that multiset — with two workers splitting the partitions, and across a kill -9 of a
worker in the middle of the stream.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from collectors.replay import DEFAULT_EVENTS, read_events
from collectors.sink import KafkaSink
from core.records import Entity, Event, encode
from rules.engine import event_identity
from streams.cli_run import group_lag, spawn_worker, stop_process
from streams.hotpath import Pipeline, TransactionalProcessor
from streams.stages import RulePacks, RulesStage
from tests.kafkatools import read_to_end

PACK = Path(__file__).parent / "packs" / "skeleton.yaml"
REASONS = {"BackOff", "FailedScheduling", "FailedMount", "Unhealthy"}
IDENTITY = ("cluster", "namespace", "pod", "kind", "name", "workload", "node")

pytestmark = pytest.mark.kafka


def expected_alerts(events) -> Counter:
    """What the skeleton pack must fire: one alert per (reason, entity identity) among the matching Warnings."""
    out = Counter()
    for e in events:
        if e.type == "Warning" and e.reason in REASONS:
            ident = event_identity(e)
            out[(f"Kube{e.reason}",) + tuple(ident.get(k, "") for k in IDENTITY)] = 1
    return out


def skeleton(settings):
    """The test settings with the skeleton pack only (no default pack)."""
    return settings.model_copy(update={"default_pack": False, "rules": [str(PACK)]})


def stages(settings):
    return Pipeline([RulesStage(RulePacks(skeleton(settings)).holder)])


def read_topic(bootstrap: str, topic: str, expect_at_least: int = 0, timeout: float = 20.0) -> list[dict]:
    """The committed records of ``topic``, re-read until at least ``expect_at_least`` are there (or timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        out = [orjson.loads(r.value) for r in read_to_end(bootstrap, topic)]
        if len(out) >= expect_at_least or time.monotonic() > deadline:
            return out
        time.sleep(0.3)


def alert_keys(alerts) -> Counter:
    return Counter((a["labels"]["alertname"],) + tuple(a["labels"].get(k, "") for k in IDENTITY) for a in alerts)


def wait_caught_up(bootstrap, settings, procs=(), timeout=90.0) -> None:
    deadline = time.monotonic() + timeout
    group = f"{settings.app_id}-signals"
    while time.monotonic() < deadline:
        if group_lag(bootstrap, group, [settings.topic("events"), settings.topic("samples")]) == 0:
            return
        for p in procs:
            assert p.poll() is None, f"worker exited with {p.returncode}"
        time.sleep(0.3)
    raise AssertionError(f"worker group {group} did not catch up within {timeout}s")


@pytest.fixture(scope="module")
def recorded():
    events, rejected = read_events(DEFAULT_EVENTS)
    return events, rejected


def produce(bootstrap, settings, events) -> None:
    sink = KafkaSink(bootstrap, settings.topic)
    for e in events:
        sink.send(e)
    sink.close()


def test_recorded_events_give_exactly_the_expected_alerts_in_process(settings, kafka_bootstrap, recorded):
    events, rejected = recorded
    assert len(events) == 5371 and len(rejected) == 2  # the data README's counts (2 events have no reason)
    subset = [e for e in events if e.entity.namespace.startswith(("openshift-etcd", "openshift-console",
                                                                  "openshift-monitoring"))]
    want = expected_alerts(subset)
    assert sum(want.values()) > 10
    produce(kafka_bootstrap, settings, subset)

    async def run():
        proc = TransactionalProcessor(settings, kafka_bootstrap, "signals", ["events", "samples"],
                                      stages(settings), worker_id="t0")
        await proc.start()
        try:
            deadline = time.monotonic() + 60
            while proc.stats["in"] < len(subset) or proc.stats["commits"] == 0:
                assert time.monotonic() < deadline, proc.stats
                await asyncio.sleep(0.2)
            await asyncio.sleep(settings.commit_interval * 2)
        finally:
            await proc.stop()
        return proc.stats

    stats = asyncio.run(run())
    assert stats["in"] == len(subset) and stats["deadletter"] == 0
    got = read_topic(kafka_bootstrap, settings.topic("alerts"), sum(want.values()))
    assert alert_keys(got) == want
    a = got[0]
    assert a["v"] == 1 and a["status"] == "firing" and len(a["fingerprint"]) == 16
    assert a["source"].startswith("skeleton/Kube") and a["source"].endswith("@1")


def test_two_workers_split_partitions_and_fire_each_alert_once(settings, kafka_bootstrap, recorded, tmp_path):
    events, _ = recorded
    want = expected_alerts(events)
    procs = [spawn_worker(skeleton(settings), kafka_bootstrap, tmp_path / f"w{i}.log", worker_id=f"w{i}") for i in range(2)]
    try:
        # both members must have joined (and split the partitions) before the data arrives
        deadline = time.monotonic() + 60
        while not all(_owned(tmp_path / f"w{i}.log") for i in range(2)):
            assert time.monotonic() < deadline, "workers did not both get partitions"
            assert all(p.poll() is None for p in procs)
            time.sleep(0.3)
        produce(kafka_bootstrap, settings, events)
        wait_caught_up(kafka_bootstrap, settings, procs)
        got = read_topic(kafka_bootstrap, settings.topic("alerts"), sum(want.values()))
        owned = [_owned(tmp_path / f"w{i}.log") for i in range(2)]
    finally:
        for p in procs:
            stop_process(p)
    assert alert_keys(got) == want  # every expected alert, none twice
    assert owned[0] and owned[1] and not owned[0] & owned[1], owned


def _owned(log) -> set[int]:
    """Partitions the worker owns according to its last assignment line."""
    import re

    lines = re.findall(r"signals: assigned partitions \[([0-9, ]*)\]", log.read_text() if log.exists() else "")
    return {int(x) for x in lines[-1].split(",") if x.strip()} if lines else set()


def test_kill_9_mid_stream_loses_and_doubles_nothing(settings, kafka_bootstrap, recorded, tmp_path):
    events, _ = recorded
    want = expected_alerts(events)
    half = len(events) // 2
    p = spawn_worker(skeleton(settings), kafka_bootstrap, tmp_path / "a.log", worker_id="solo")
    try:
        produce(kafka_bootstrap, settings, events[:half])
        wait_caught_up(kafka_bootstrap, settings, [p])
        # stream the second half slowly and kill -9 once the worker has committed part of it
        feeder = threading.Thread(target=produce_slowly, args=(kafka_bootstrap, settings, events[half:], 4.0))
        feeder.start()
        group, topics = f"{settings.app_id}-signals", [settings.topic("events"), settings.topic("samples")]
        deadline = time.monotonic() + 30
        while committed_total(kafka_bootstrap, group, topics) <= half:
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.1)
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        assert feeder.is_alive(), "the kill must land mid-stream"
        feeder.join()
        p = spawn_worker(skeleton(settings), kafka_bootstrap, tmp_path / "b.log", worker_id="solo")
        wait_caught_up(kafka_bootstrap, settings, [p])
        got = read_topic(kafka_bootstrap, settings.topic("alerts"), sum(want.values()))
    finally:
        stop_process(p)
    assert alert_keys(got) == want
    assert "restored" in (tmp_path / "b.log").read_text()  # the second incarnation resumed from the changelog


def produce_slowly(bootstrap, settings, events, seconds: float) -> None:
    sink = KafkaSink(bootstrap, settings.topic)
    step = max(1, len(events) // 40)
    for i in range(0, len(events), step):
        for e in events[i:i + step]:
            sink.send(e)
        sink.flush()
        time.sleep(seconds / 40)
    sink.close()


def committed_total(bootstrap, group, topics) -> int:
    from kafka import TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return sum(c.committed(TopicPartition(t, p)) or 0 for t in topics for p in (c.partitions_for_topic(t) or ()))
    finally:
        c.close()


def test_invalid_json_goes_to_deadletter_and_the_worker_keeps_going(settings, kafka_bootstrap):
    prod = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    key = b"default/shop/Pod/web-1"
    prod.send(settings.topic("events"), b"{not json", key=key)
    prod.send(settings.topic("events"), b'{"v": 1, "kind": "event", "source": "k8s"}', key=key)
    good = Event(source="k8s", reason="BackOff", type="Warning", time=1000.0,
                 entity=Entity(namespace="shop", kind="Pod", name="web-1"), message="Back-off")
    prod.send(settings.topic("events"), encode(good), key=key)
    prod.flush()
    prod.close()

    async def run():
        proc = TransactionalProcessor(settings, kafka_bootstrap, "signals", ["events", "samples"],
                                      stages(settings), worker_id="dl")
        await proc.start()
        try:
            deadline = time.monotonic() + 30
            while proc.stats["in"] < 3 or proc.stats["commits"] == 0:
                assert time.monotonic() < deadline, proc.stats
                await asyncio.sleep(0.1)
        finally:
            await proc.stop()

    asyncio.run(run())
    dead = read_topic(kafka_bootstrap, settings.topic("deadletter"), 2)
    reasons = sorted(d["reason"] for d in dead)
    assert len(dead) == 2
    assert reasons[0] == "event: Object missing required field `reason`"
    assert reasons[1].startswith("not valid JSON")
    assert {d["payload"] for d in dead} == {"{not json", '{"v": 1, "kind": "event", "source": "k8s"}'}
    assert all(d["where"]["topic"] == settings.topic("events") and d["origin"] == "worker/signals" for d in dead)
    alerts = read_topic(kafka_bootstrap, settings.topic("alerts"), 1)
    assert [a["labels"]["alertname"] for a in alerts] == ["KubeBackOff"]
