"""The worker's rule and detector state with the real broker: hot reload, and anomaly scores across a restart."""

from __future__ import annotations

import asyncio
import time

import pytest
from kafka import KafkaProducer

from collectors.replay import read_series_csv
from collectors.sink import KafkaSink
from core.records import Entity, Event, encode
from streams.hotpath import Pipeline, TransactionalProcessor
from streams.stages import RulePacks, RulesStage, RulesTopicWatcher
from tests.kafkatools import until
from tests.streams.test_pipeline import read_topic

pytestmark = pytest.mark.kafka

PACK = """apiVersion: kubesight.io/v1
kind: RulePack
metadata: {{name: {name}, version: "{version}", description: hot reload test}}
rules:
  - alert: {alert}
    match: {{source: k8s, reason: {reason}}}
    condition: {{type: event_count, count: 1, window: 10m}}
    severity: warning
"""


def test_hot_reload_refuses_an_invalid_pack_and_applies_a_valid_one_without_restart(settings, kafka_bootstrap,
                                                                                       tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(PACK.format(name="base", version="1", alert="KubeBackOffSeen", reason="BackOff"))
    s = settings.model_copy(update={"default_pack": False, "rules": [str(base)]})
    packs = RulePacks(s, topic_dir=tmp_path / "from-topic")
    prod = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")

    def event(reason, t):
        e = Event(source="k8s", reason=reason, type="Warning", time=t,
                  entity=Entity(namespace="shop", kind="Pod", name="web-1"))
        prod.send(s.topic("events"), encode(e), key=e.key())
        prod.flush()

    async def run():
        proc = TransactionalProcessor(s, kafka_bootstrap, "signals", ["events", "samples"],
                                      Pipeline([RulesStage(packs.holder)]), worker_id="reload")
        watcher = RulesTopicWatcher(s, kafka_bootstrap, packs)
        await proc.start()
        await watcher.start()
        try:
            event("FailedMount", 1000.0)  # no rule for it yet
            await until(lambda: proc.stats["in"] >= 1, what="first event")
            # an invalid pack on the rules topic: refused with its errors, running set stays
            bad = PACK.format(name="extra", version="2", alert="KubeFailedMountSeen", reason="FailedMount")
            prod.send(s.topic("rules"), bad.replace("count: 1", "count: 0").encode(), key=b"extra")
            prod.flush()
            await until(lambda: watcher.applied >= 1, what="invalid pack read")
            assert packs.version == 0 and len(packs.holder.engine.ruleset) == 1
            assert any("rules[0].condition.count" in e for e in packs.errors), packs.errors
            assert all(e.startswith(str(tmp_path / "from-topic" / "extra.yaml")) for e in packs.errors)
            # the valid version of it: applied to the running worker
            good = PACK.format(name="extra", version="2", alert="KubeFailedMountSeen", reason="FailedMount")
            prod.send(s.topic("rules"), good.encode(), key=b"extra")
            prod.flush()
            await until(lambda: packs.version == 1, what="valid pack applied")
            assert len(packs.holder.engine.ruleset) == 2 and packs.errors == []
            event("FailedMount", 1001.0)
            # a file change is picked up too (polled every 2 s)
            base.write_text(PACK.format(name="base", version="3", alert="KubeBackOffSeen", reason="BackOff"))
            await until(lambda: packs.version == 2, what="file change applied")
            event("BackOff", 1002.0)
            await until(lambda: proc.stats["in"] >= 3 and not proc._outputs_pending(), what="processing")
            await asyncio.sleep(s.commit_interval * 2)
        finally:
            await watcher.stop()
            await proc.stop()

    asyncio.run(run())
    prod.close()
    alerts = read_topic(kafka_bootstrap, s.topic("alerts"), 2)
    # alerts of two fingerprints sit on different partitions: compare as a set, exactly these two
    firing = [(a["labels"]["alertname"], a["source"]) for a in alerts if a["status"] == "firing"]
    assert sorted(firing) == [
        ("KubeBackOffSeen", "base/KubeBackOffSeen@3"),  # the source names the reloaded version
        ("KubeFailedMountSeen", "extra/KubeFailedMountSeen@2"),  # fired by the pack applied at run time
    ]


ANOMALY_PACK = """apiVersion: kubesight.io/v1
kind: RulePack
metadata: {name: nab, version: "1", description: anomaly scores of a NAB series}
detectors:
  z: {type: zscore}
rules:
  - alert: SeriesAnomalous
    match: {metric: nab_value}
    condition: {type: anomaly, detector: z, above: 0.6}
    severity: warning
    annotations: {score: "{{ score }}", value: "{{ value }}"}
"""


def test_anomaly_scores_survive_a_worker_restart(kafka_bootstrap, tmp_path, data_dir):
    """Scores of a replayed NAB series after a restart equal an uninterrupted run's (state in the changelog)."""
    from tests.conftest import Settings, ensure_topics

    pack = tmp_path / "nab.yaml"
    pack.write_text(ANOMALY_PACK)
    series = read_series_csv(data_dir / "nab" / "data" / "realKnownCause" / "ec2_request_latency_system_failure.csv")
    assert len(series) == 4032

    def fresh(tag):
        s = Settings(kafka=kafka_bootstrap, topic_prefix=f"nab{tag}-{time.time_ns() % 10**8}-",
                     app_id=f"nab{tag}-{time.time_ns() % 10**8}", partitions=2, default_pack=False,
                     rules=[str(pack)])
        ensure_topics(s, kafka_bootstrap)
        return s

    def produce(s, samples):
        sink = KafkaSink(kafka_bootstrap, s.topic)
        for x in samples:
            sink.send(x)
        sink.close()

    async def run(s, expect):
        proc = TransactionalProcessor(s, kafka_bootstrap, "signals", ["events", "samples"],
                                      Pipeline([RulesStage(RulePacks(s).holder)]), worker_id="nab")
        await proc.start()
        try:
            await until(lambda: proc.stats["in"] >= expect, timeout=60, what=f"{expect} samples")
            await until(lambda: not proc._outputs_pending(), what="commit")
        finally:
            await proc.stop()
        return proc.stats

    straight = fresh("a")
    produce(straight, series)
    asyncio.run(run(straight, len(series)))
    # the same series with a worker stop + start after 1,500 points: a new processor instance must
    # restore the detector and rule state from the changelog and go on as if never stopped
    restarted = fresh("b")
    produce(restarted, series[:1500])
    first = asyncio.run(run(restarted, 1500))
    produce(restarted, series[1500:])
    second = asyncio.run(run(restarted, len(series) - 1500))
    assert first["in"] == 1500 and second["in"] == len(series) - 1500
    assert second["restored"] > 0  # the detector and rule state came back from the changelog

    def transitions(s):
        return [(a["status"], a["startsAt"], a["endsAt"], a["annotations"]["score"], a["annotations"]["value"])
                for a in read_topic(kafka_bootstrap, s.topic("alerts"), 2)]

    a, b = transitions(straight), transitions(restarted)
    assert len(a) >= 4 and all(0.6 < float(x[3]) <= 1.0 for x in a if x[0] == "firing")
    assert b == a

