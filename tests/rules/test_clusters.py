"""Several clusters feed one kubesight: a rule that groups signals of several keys (anomaly_vector, event_count with
``by``) keeps each cluster's group apart, as a scalar rule's series (every label) does, and its alert says which."""

from __future__ import annotations

import random
import textwrap

import orjson

from core.records import Entity, Event, Sample
from rules.engine import ANOMALY_FORGET, Engine
from rules.load import DEFAULT_PACK, load_packs
from tests.rules.test_aggregate import PACK as AGGREGATE
from tests.rules.test_anomaly_vector import PACK as VECTOR

T0 = 1_700_000_000.0

STORM = AGGREGATE.replace("by: [cluster, namespace]", "by: [namespace]")  # as a user may write it


def engine(tmp_path, text: str) -> Engine:
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text))
    return Engine(load_packs([p]))


def pod_samples(cluster: str | None, n: int, base: float, break_at: int | None, seed: int, start: int = 0,
                offset: float = 0.0):
    """One pod's cpu and latency a minute from minute ``start``, latency following cpu (``base`` above a fifth of it)
    until ``break_at``, from where it rises while cpu does not."""
    rnd = random.Random(seed)
    labels = {"namespace": "shop", "pod": "cart-1"} | ({"cluster": cluster} if cluster else {})
    out = []
    for i in range(start, start + n):
        cpu = 100 + 30 * ((i % 60) / 60.0) + rnd.gauss(0, 3)
        lat = base + 0.2 * cpu + rnd.gauss(0, 0.3) + (8.0 if break_at is not None and i >= break_at else 0.0)
        t = T0 + 60.0 * i + offset
        out += [Sample("pod_cpu", cpu, t + 1.0, dict(labels)), Sample("pod_latency", lat, t + 7.0, dict(labels))]
    return out


def replay(eng: Engine, recs, state: dict | None = None):
    """As ``rules test`` runs it: every sample and its copies on one state."""
    state = {} if state is None else state
    got, keys = [], set()
    for s in recs:
        got += eng.process(s, state, s.time)
        for key, copy in eng.rekey(s):
            keys.add(key)
            got += eng.process(copy, state, copy.time)
    return got, state, keys


PRESSURE = ("node_cpu_utilisation", "node_memory_available_ratio", "node_nf_conntrack_usage_ratio")


def test_two_clusters_nodes_at_one_instance_address_are_two_nodes_to_the_default_pack():
    """NodePressureAnomaly (``by: [instance]``) with cluster a's node learnt for a day, then cluster b's, at the same
    address (private ranges repeat across clusters), steady with its own profile, scraped alongside: two Kafka keys,
    two detectors, no alert. One detector for both saw a's and b's values mixed in one vector, and fired."""
    eng, state = Engine(load_packs([DEFAULT_PACK])), {}
    rnd = random.Random(1)
    profile = {"a": (0.20, 0.80, 0.10), "b": (0.85, 0.15, 0.60)}
    keys, got = set(), []

    def feed(cluster: str, t: float, j: int) -> None:
        s = Sample(PRESSURE[j], profile[cluster][j] + rnd.gauss(0, 0.01), t,
                   {"cluster": cluster, "instance": "10.0.0.5:9100", "kubesight": "derived"})
        for key, copy in eng.rekey(s):
            keys.add(key)
            got.extend(eng.process(copy, state, t))

    for i in range(24 * 60):
        for j in range(3):
            feed("a", T0 + 60 * i, j)
    for i in range(24 * 60, 24 * 60 + 120):
        for j in range(3):  # the two collectors' scrapes interleaved on one partition
            feed("a", T0 + 60 * i + 2 * j, j)
            feed("b", T0 + 60 * i + 2 * j + 1, j)
    assert keys == {b"entity|cluster=a,instance=10.0.0.5:9100", b"entity|cluster=b,instance=10.0.0.5:9100"}
    assert len([k for k in state if k.startswith("rule|NodePressureAnomaly")]) == 2
    assert got == []


def test_a_pod_breaking_in_one_cluster_fires_there_only_and_its_alert_names_the_cluster(tmp_path):
    """Cluster a's and cluster b's cart-1 share namespace and name; b's latency rises while its cpu does not."""
    eng = engine(tmp_path, VECTOR)
    recs = sorted(pod_samples("a", 400, 0.0, None, seed=1) + pod_samples("b", 400, 0.0, 300, seed=2, offset=20.0),
                  key=lambda s: s.time)
    got, state, keys = replay(eng, recs)
    assert keys == {b"entity|cluster=a,namespace=shop,pod=cart-1", b"entity|cluster=b,namespace=shop,pod=cart-1"}
    firing = [a for a in got if a.status == "firing"]
    assert firing and {a.labels["cluster"] for a in firing} == {"b"}
    assert firing[0].labels == {"alertname": "PodBehaviourAnomalous", "severity": "warning", "cluster": "b",
                                "namespace": "shop", "pod": "cart-1"}
    assert firing[0].startsAt >= T0 + 60.0 * 300


def test_samples_without_cluster_keep_their_key_and_labels(tmp_path):
    """A single cluster whose samples carry no ``cluster``: keys and alerts as before."""
    eng = engine(tmp_path, VECTOR)
    got, _, keys = replay(eng, pod_samples(None, 360, 0.0, 300, seed=1))
    assert keys == {b"entity|namespace=shop,pod=cart-1"}
    firing = [a for a in got if a.status == "firing"]
    assert firing and firing[0].labels == {"alertname": "PodBehaviourAnomalous", "severity": "warning",
                                           "namespace": "shop", "pod": "cart-1"}


def test_a_state_kept_under_the_key_without_cluster_resolves_and_goes(tmp_path):
    """Upgrading: a worker restores (from its changelog) a vector group kept under the key without ``cluster``
    (``entity|namespace=shop,pod=cart-1``), firing. Its samples now reach the key with it, whose detector starts
    anew (a fresh warm-up); the old group gets no sample, so its alert resolves when its data goes stale (with the
    labels it fired with) and the group is dropped once idle ANOMALY_FORGET, as any series gone."""
    eng = engine(tmp_path, VECTOR)
    old_recs = pod_samples(None, 320, 0.0, 300, seed=1)
    got, state, _ = replay(eng, old_recs)
    [old] = [k for k in state if k.startswith("rule|PodBehaviourAnomalous")]
    assert old.endswith("|entity|namespace=shop,pod=cart-1") and state[old]["s"] == 2
    fired = [a for a in got if a.status == "firing"][-1]
    # the changelog's round trip, then the new engine on the restored state
    state = {k: orjson.loads(orjson.dumps(v.snapshot() if hasattr(v, "snapshot") else v)) for k, v in state.items()}
    eng = engine(tmp_path, VECTOR)
    t1 = old_recs[-1].time + 60.0
    new_recs = [Sample(s.name, s.value, s.time - old_recs[0].time + t1, {**s.labels, "cluster": "a"})
                for s in pod_samples(None, 60, 0.0, None, seed=3)]
    got, state, _ = replay(eng, new_recs, state)
    [new] = [k for k in state if k.startswith("rule|PodBehaviourAnomalous") and k != old]
    assert new.endswith("|entity|cluster=a,namespace=shop,pod=cart-1")
    assert state[new]["c"]["det"].n == 60  # learnt from its own samples only
    got += eng.tick(new_recs[-1].time, state)
    resolved = [a for a in got if a.status == "resolved"]
    assert [(a.labels, a.startsAt) for a in resolved] == [(fired.labels, fired.startsAt)]
    assert old in state  # idle, kept for a while (a series back from an outage keeps what it learnt)
    eng.tick(old_recs[-1].time + ANOMALY_FORGET + 3600.0, state)
    assert old not in state


def storm_event(t: float, cluster: str, pod: str) -> Event:
    return Event("k8s", "FailedScheduling", t, "Warning", message="0/3 nodes are available",
                 entity=Entity(cluster=cluster, namespace="shop", kind="Pod", name=pod, workload=f"Deployment/{pod}"))


def test_event_count_by_namespace_counts_each_cluster_apart(tmp_path):
    """``by: [namespace]`` in a user rule: two clusters' shop namespaces are two groups (the default pack names
    ``cluster`` in its ``by`` itself, to the same keys)."""
    eng = engine(tmp_path, STORM)
    states: dict = {}
    got = []
    evs = [storm_event(0, "c1", "a"), storm_event(60, "c2", "b"), storm_event(120, "c1", "c"),
           storm_event(180, "c2", "d"), storm_event(240, "c1", "e")]
    keys = set()
    for e in evs:
        got += eng.process(e, states.setdefault(e.key(), {}), e.time)
        for key, copy in eng.rekey(e):
            keys.add(key)
            got += eng.process(copy, states.setdefault(key, {}), copy.time)
    assert keys == {b"entity|cluster=c1,namespace=shop", b"entity|cluster=c2,namespace=shop"}
    storms = [(a.status, a.startsAt, a.labels) for a in got if a.labels["alertname"] == "NamespaceSchedulingStorm"]
    assert storms == [("firing", 240.0, {"alertname": "NamespaceSchedulingStorm", "severity": "warning",
                                         "cluster": "c1", "namespace": "shop"})]
