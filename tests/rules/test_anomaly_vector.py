"""anomaly_vector: one entity's metrics scored together, re-keyed by entity, explained in annotations."""

from __future__ import annotations

import datetime
import random
import textwrap

import orjson
import pytest

from core.records import Sample
from core.yamlconfig import ConfigError
from rules.engine import Engine
from rules.load import load_packs

PACK = """\
apiVersion: kubesight.io/v1
kind: RulePack
metadata: {name: pods, version: "1"}
detectors:
  pod: {type: mahalanobis, params: {warmup: 30}}
  one: {type: zscore}
rules:
  - alert: PodBehaviourAnomalous
    match: {metric: [pod_cpu, pod_latency], matchers: ['namespace="shop"']}
    condition: {type: anomaly_vector, detector: pod, by: [namespace, pod], every: 1m, above: 0.3, k: 2, n: 3}
    annotations:
      summary: "{{ labels.pod }}: {{ feature }} = {{ value }}, expected {{ expected_low }}..{{ expected_high }}, score {{ score }}, since {{ since }}"
  - alert: PodCPUHigh
    match: {metric: pod_cpu}
    condition: {type: threshold, op: ">", value: 1000}
"""


def write(tmp_path, text: str):
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def errors(tmp_path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_packs([write(tmp_path, text)])
    return [x.replace(str(tmp_path) + "/", "") for x in e.value.errors]


def samples(pod: str, n: int, break_at: int | None, seed: int):
    """cpu follows a load wave; latency follows cpu, until ``break_at``, from where latency rises
    while cpu does not (the pod is slow for another reason)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        load = 100 + 30 * ((i % 60) / 60.0) + rnd.gauss(0, 3)
        cpu = load + rnd.gauss(0, 1)
        lat = 0.2 * load + rnd.gauss(0, 0.3)
        if break_at is not None and i >= break_at:
            lat += 8.0
        t = 1_700_000_000.0 + 60.0 * i
        labels = {"namespace": "shop", "pod": pod}
        # latency scraped a few seconds after cpu: the two metrics of one minute make one vector
        out.append(Sample("pod_cpu", cpu, t + 1.0, dict(labels, container="app")))
        out.append(Sample("pod_latency", lat, t + 7.0, dict(labels)))
    return out


def replay(eng: Engine, recs, roundtrip_every: int = 0):
    state: dict = {}
    got = []
    for i, s in enumerate(recs):
        got += eng.process(s, state, s.time)
        for _, copy in eng.rekey(s):
            got += eng.process(copy, state, copy.time)
        if roundtrip_every and i % roundtrip_every == 0:  # as the worker's changelog would restore it
            state = {k: orjson.loads(orjson.dumps(v.snapshot() if hasattr(v, "snapshot") else v))
                     for k, v in state.items()}
    return got, state


def test_rekey_copies_a_feature_sample_under_its_entity_key(tmp_path):
    eng = Engine(load_packs([write(tmp_path, PACK)]))
    s = Sample("pod_cpu", 1.0, 0.0, {"namespace": "shop", "pod": "cart-1", "container": "app"})
    [(key, copy)] = eng.rekey(s)
    assert key == b"entity|namespace=shop,pod=cart-1"
    assert copy.labels == {**s.labels, "kubesight": "entity"} and copy.value == 1.0
    assert eng.rekey(copy) == []  # a copy is not copied again
    assert eng.rekey(Sample("pod_cpu", 1.0, 0.0, {"namespace": "other", "pod": "x"})) == []  # matchers
    assert eng.rekey(Sample("pod_cpu", 1.0, 0.0, {"namespace": "shop"})) == []  # no pod label: no entity


def test_originals_reach_other_rules_and_copies_reach_vector_rules_only(tmp_path):
    eng = Engine(load_packs([write(tmp_path, PACK)]))
    s = Sample("pod_cpu", 5000.0, 0.0, {"namespace": "shop", "pod": "cart-1"})
    state: dict = {}
    assert [a.labels["alertname"] for a in eng.process(s, state, 0.0)] == ["PodCPUHigh"]
    assert not any(k.startswith("rule|PodBehaviourAnomalous") for k in state)
    [(_, copy)] = eng.rekey(s)
    assert eng.process(copy, state, 0.0) == []  # the threshold rule does not see the copy twice
    assert any(k.startswith("rule|PodBehaviourAnomalous") for k in state)


def test_fires_for_the_pod_whose_metrics_stop_moving_together_and_explains_itself(tmp_path):
    eng = Engine(load_packs([write(tmp_path, PACK)]))
    recs = sorted(samples("cart-1", 400, 300, seed=1) + samples("cart-2", 400, None, seed=2), key=lambda s: s.time)
    got, _ = replay(eng, recs)
    firing = [a for a in got if a.status == "firing" and a.labels["alertname"] == "PodBehaviourAnomalous"]
    assert {a.labels["pod"] for a in firing} == {"cart-1"}
    first = firing[0]
    assert first.labels == {"alertname": "PodBehaviourAnomalous", "severity": "warning", "namespace": "shop",
                            "pod": "cart-1"}
    t_break = 1_700_000_000.0 + 60.0 * 300
    assert t_break <= first.startsAt <= t_break + 300.0  # within 5 one-minute vectors
    summary = first.annotations["summary"]
    assert summary.startswith("cart-1: pod_latency = ")
    lo, hi = (float(x) for x in summary.split("expected ")[1].split(",")[0].split(".."))
    value = float(summary.split(" = ")[1].split(",")[0])
    assert lo < hi < value  # latency above what was expected
    # since: the first anomalous vector of the episode (the alert itself starts when k of n hold)
    since = datetime.datetime.strptime(summary.split("since ")[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    assert t_break <= since.timestamp() < first.startsAt


def test_a_restored_state_gives_the_same_alerts(tmp_path):
    eng = Engine(load_packs([write(tmp_path, PACK)]))
    recs = samples("cart-1", 360, 300, seed=1)
    plain, _ = replay(eng, recs)
    restored, _ = replay(Engine(load_packs([write(tmp_path, PACK)])), recs, roundtrip_every=7)
    assert plain and [a.to_dict() if hasattr(a, "to_dict") else a for a in plain] == \
        [a.to_dict() if hasattr(a, "to_dict") else a for a in restored]


def test_a_vector_missing_a_metric_is_scored_when_the_next_minute_starts(tmp_path):
    eng = Engine(load_packs([write(tmp_path, PACK)]))
    recs = samples("cart-1", 100, None, seed=4)
    recs = [s for s in recs if not (s.name == "pod_latency" and 50 <= (s.time - 1_700_000_000.0) // 60 < 60)]
    _, state = replay(eng, recs)
    [st] = [v for k, v in state.items() if k.startswith("rule|PodBehaviourAnomalous")]
    assert st["c"]["det"].n == 100  # every minute scored once: 90 complete vectors, 10 with cpu only


def test_a_value_detector_is_refused_in_an_anomaly_vector_rule(tmp_path):
    got = errors(tmp_path, PACK.replace("detector: pod, by", "detector: one, by"))
    assert got == ['p.yaml:10: rules[0].condition.detector: detector "one" is zscore, which scores one value; '
                   "an anomaly_vector rule gives it a dict of metrics (vector detectors: mahalanobis)"]


def test_a_vector_detector_is_refused_in_an_anomaly_rule(tmp_path):
    got = errors(tmp_path, PACK.replace("{type: threshold, op: \">\", value: 1000}",
                                        "{type: anomaly, detector: pod, above: 0.5}"))
    assert got == ['p.yaml:15: rules[1].condition.detector: detector "pod" is mahalanobis, which scores a vector '
                   "(a dict of metrics); an anomaly rule gives it one value per sample"]


def test_by_is_required_and_events_are_refused(tmp_path):
    got = errors(tmp_path, PACK.replace(" by: [namespace, pod],", ""))
    assert got == ["p.yaml:10: rules[0].condition.by: Field required"] or got[0].startswith(
        "p.yaml:10: rules[0].condition.by: ")
    got = errors(tmp_path, PACK.replace("match: {metric: [pod_cpu, pod_latency], matchers: ['namespace=\"shop\"']}",
                                        "match: {source: k8s, reason: BackOff}"))
    assert got == ["p.yaml:10: rules[0].condition.type: anomaly_vector needs a metric rule (match.metric), not events"]


def test_the_worker_stage_produces_the_copies_to_the_samples_topic_keyed_by_entity(tmp_path):
    from core.records import decode
    from rules.holder import EngineHolder
    from streams.stages import RulesStage

    stage = RulesStage(EngineHolder(load_packs([write(tmp_path, PACK)])))
    out = []
    s = Sample("pod_latency", 0.2, 60.0, {"namespace": "shop", "pod": "cart-1"})
    stage.process(s, {}, lambda topic, key, value: out.append((topic, key, decode(value))))
    assert [(t, k, r.name, r.labels.get("kubesight")) for t, k, r in out] == \
        [("samples", b"entity|namespace=shop,pod=cart-1", "pod_latency", "entity")]
