"""event_count with ``by``: counts across entities ("3 FailedScheduling in one namespace"), through re-keyed copies."""

from __future__ import annotations

import textwrap

import pytest

from core.records import Entity, Event, decode
from core.yamlconfig import ConfigError
from rules.engine import Engine
from rules.load import load_packs

PACK = """\
apiVersion: kubesight.io/v1
kind: RulePack
metadata: {name: ns, version: "1"}
rules:
  - alert: NamespaceSchedulingStorm
    match: {source: k8s, reason: FailedScheduling}
    condition: {type: event_count, count: 3, window: 10m, by: [cluster, namespace]}
    annotations: {summary: "{{ count }} FailedScheduling in {{ labels.namespace }}"}
  - alert: PodUnschedulable
    match: {source: k8s, reason: FailedScheduling}
    condition: {type: event_count, count: 1}
"""


def write(tmp_path, text: str):
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def ev(t: float, pod: str, ns: str = "shop") -> Event:
    return Event("k8s", "FailedScheduling", t, "Warning", entity=Entity(cluster="c1", namespace=ns, kind="Pod", name=pod,
                                                                    workload=f"Deployment/{pod}", node=""),
                 message="0/3 nodes are available")


def replay(eng: Engine, events):
    """As the worker runs it: each event on its entity's state, its copies on their group's state."""
    states: dict = {}
    got = []
    for e in events:
        got += eng.process(e, states.setdefault(e.key(), {}), e.time)
        for key, copy in eng.rekey(e):
            got += eng.process(copy, states.setdefault(key, {}), copy.time)
    return got


def test_three_pods_of_one_namespace_fire_one_namespace_alert(tmp_path):
    eng = Engine(load_packs([write(tmp_path, PACK)]))
    got = replay(eng, [ev(0, "a"), ev(60, "b"), ev(120, "other", ns="dev"), ev(180, "c")])
    storm = [a for a in got if a.labels["alertname"] == "NamespaceSchedulingStorm"]
    assert [(a.status, a.labels) for a in storm] == [("firing", {
        "alertname": "NamespaceSchedulingStorm", "severity": "warning", "cluster": "c1", "namespace": "shop"})]
    assert storm[0].annotations["summary"] == "3 FailedScheduling in shop"
    # the per-entity rule still sees the originals, once each (copies never reach it)
    assert sorted(a.labels["workload"] for a in got if a.labels["alertname"] == "PodUnschedulable") == [
        "Deployment/a", "Deployment/b", "Deployment/c", "Deployment/other"]


def test_two_are_not_enough_and_the_window_slides(tmp_path):
    eng = Engine(load_packs([write(tmp_path, PACK)]))
    got = replay(eng, [ev(0, "a"), ev(60, "b"), ev(700, "c")])  # a left the 10m window before c came
    assert not [a for a in got if a.labels["alertname"] == "NamespaceSchedulingStorm"]


def test_copies_are_keyed_by_the_group_and_go_to_the_events_topic(tmp_path):
    from rules.holder import EngineHolder
    from streams.stages import RulesStage

    stage = RulesStage(EngineHolder(load_packs([write(tmp_path, PACK)])))
    out = []
    stage.process(ev(0, "a"), {}, lambda topic, key, value: out.append((topic, key, decode(value))))
    copies = [(t, k, r) for t, k, r in out if t != "alerts"]
    assert [(t, k, r.labels) for t, k, r in copies] == [("events", b"entity|cluster=c1,namespace=shop",
                                                         {"kubesight": "entity"})]
    assert stage.holder.engine.rekey(copies[0][2]) == []  # a copy is not copied again


def test_by_is_refused_beside_group_by(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_packs([write(tmp_path, PACK.replace("    condition: {type: event_count, count: 3",
                                                 "    group_by: [node]\n    condition: {type: event_count, count: 3"))])
    assert any("group_by: not with condition.by" in x for x in e.value.errors), e.value.errors


def test_a_rule_without_by_keeps_its_state_key():
    """``by`` came later: the rules without it keep the sids (state keys) they had, as measured before it."""
    from rules.load import DEFAULT_PACK

    sids = {r.alert: r.sid for r in load_packs([DEFAULT_PACK]).rules}
    assert (sids["KubePodFailedScheduling"], sids["KubeContainerBackOff"]) == (
        "KubePodFailedScheduling#aeeac9b1", "KubeContainerBackOff#6522ca76")
    # threshold's ``abs`` came later too: unchanged threshold rules keep theirs (as measured before it, 2026-11-29;
    # a new sid resolved every firing threshold alert and fired it again at the upgrade)
    assert (sids["NodeFilesystemSpaceLow"], sids["KubeAPIErrorsHigh"]) == (
        "NodeFilesystemSpaceLow#2612fa9e", "KubeAPIErrorsHigh#0b907e75")


@pytest.mark.kafka
def test_through_the_worker_the_copies_meet_on_one_partition(settings, tmp_path):
    """Four partitions: the pods' events land on several; their copies meet on the namespace's, which fires."""
    import asyncio
    import time as _time

    from core.records import encode
    from streams.hotpath import Pipeline, TransactionalProcessor
    from streams.stages import RulePacks, signal_stages
    from tests.kafkatools import read_to_end

    s = settings.model_copy(update={"rules": [str(write(tmp_path, PACK))], "default_pack": False})
    events = [ev(float(i * 60), pod) for i, pod in enumerate(("a", "b", "c", "d", "e"))]
    assert len({e.key() for e in events}) == 5

    def storms():
        return [r for r in (decode(m.value) for m in read_to_end(s.kafka, s.topic("alerts")))
                if r.labels["alertname"] == "NamespaceSchedulingStorm"]

    async def go():
        from aiokafka import AIOKafkaProducer

        hot = TransactionalProcessor(s, s.kafka, "signals", ["events", "samples"],
                                     Pipeline(signal_stages(s, RulePacks(s))), urgent=("alerts",))
        await hot.start()
        try:
            p = AIOKafkaProducer(bootstrap_servers=s.kafka, acks="all")
            await p.start()
            for e in events:
                await p.send_and_wait(s.topic("events"), encode(e), key=e.key())
            await p.stop()
            deadline = _time.monotonic() + 60
            while not storms():
                assert _time.monotonic() < deadline, "no namespace alert"
                await asyncio.sleep(0.2)
        finally:
            await hot.stop()

    asyncio.run(go())
    (storm,) = storms()
    assert storm.labels == {"alertname": "NamespaceSchedulingStorm", "severity": "warning", "cluster": "c1",
                            "namespace": "shop"}
