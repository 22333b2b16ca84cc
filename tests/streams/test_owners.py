"""Alerts from scraped series take the team of what they name (streams.owners): the directory the Kubernetes collector
writes, the default pack's rules asking it, the team kept from firing to resolution."""

from __future__ import annotations

import textwrap

import pytest

from core.records import Sample, owner_key, owner_record
from core.settings import Settings
from rules.engine import Engine
from rules.load import load_packs
from streams.owners import OwnerDirectory
from streams.stages import RulePacks, RulesStage


def directory() -> OwnerDirectory:
    d = OwnerDirectory("c1")
    d.apply(owner_key("c1", "shop"), owner_record("web"))
    d.apply(owner_key("c1", "shop", "cart-7d9f-x"), owner_record("payments", "Deployment/cart", "ReplicaSet/cart-7d9f"))
    d.apply(owner_key("c1", "batch", "etl-1-abcde"), owner_record("data", "CronJob/etl", "Job/etl-1"))
    return d


def waiting(t: float, pod: str = "cart-7d9f-x", ns: str = "shop", **labels) -> Sample:
    """kube-state-metrics' series, as scraped: no team in it."""
    return Sample(name="kube_pod_container_status_waiting", value=1.0, time=t,
                  labels={"namespace": ns, "pod": pod, "container": "main", "job": "kube-state-metrics", **labels})


@pytest.mark.parametrize("labels, team", [
    ({"namespace": "shop", "pod": "cart-7d9f-x"}, "payments"),
    ({"namespace": "shop", "deployment": "cart"}, "payments"),  # kube_deployment_*
    ({"namespace": "shop", "replicaset": "cart-7d9f"}, "payments"),  # kube_replicaset_*
    ({"namespace": "batch", "job_name": "etl-1"}, "data"),  # kube_job_*: the Job's pods' team
    ({"namespace": "batch", "cronjob": "etl"}, "data"),
    ({"namespace": "shop", "owner_kind": "ReplicaSet", "owner_name": "cart-7d9f"}, "payments"),  # kube_pod_owner
    ({"namespace": "shop", "workload": "cart", "workload_type": "deployment"}, "payments"),  # kubernetes-mixin
    ({"namespace": "shop", "workload": "Deployment/cart"}, "payments"),  # kubesight's own
    ({"namespace": "shop", "pod": "gone-1"}, "web"),  # a pod not (or no longer) known: the namespace's
    ({"namespace": "shop", "persistentvolumeclaim": "data"}, "web"),
    ({"namespace": "shop", "deployment": "nope"}, "web"),  # a workload not known
    ({"namespace": "batch", "job": "etl-1"}, ""),  # `job` is Prometheus' scrape job, never a Job
    ({"namespace": "shop", "pod": "cart-7d9f-x", "cluster": "c2"}, ""),  # another cluster's shop
    ({"node": "w1"}, ""),  # a node's alert: no namespace, no team
    ({"namespace": "unseen"}, ""),
])
def test_the_directory_finds_the_team_of_what_the_labels_name(labels, team):
    assert directory().owner_of(labels) == team


def test_a_workload_is_its_latest_pod_s_team_and_its_namespace_s_once_no_pod_is_left():
    d = directory()
    d.apply(owner_key("c1", "shop", "cart-7d9f-y"), owner_record("checkout", "Deployment/cart", "ReplicaSet/cart-7d9f"))
    assert d.owner_of({"namespace": "shop", "deployment": "cart"}) == "checkout"  # relabelled: the newer pod's
    d.apply(owner_key("c1", "shop", "cart-7d9f-y"), None)
    assert d.owner_of({"namespace": "shop", "deployment": "cart"}) == "payments"
    d.apply(owner_key("c1", "shop", "cart-7d9f-x"), None)
    assert d.owner_of({"namespace": "shop", "deployment": "cart"}) == "web"
    assert d.refs.keys() == {("c1", "batch", "CronJob/etl"), ("c1", "batch", "Job/etl-1")}  # nothing left behind
    d.apply(owner_key("c1", "shop"), owner_record(""))  # the namespace's label removed
    assert d.owner_of({"namespace": "shop", "deployment": "cart"}) == ""


def test_a_workload_with_no_pod_left_keeps_its_own_record_s_team_until_its_tombstone():
    """Scaled to zero, a CronJob between runs, a Deployment whose pods the quota refuses: no live pod says the team,
    the workload's own record (the collector's) does; live pods still come first, the namespace last."""
    d = directory()
    d.apply(owner_key("c1", "shop", "cart", "Deployment"), owner_record("payments", "Deployment/cart"))
    d.apply(owner_key("c1", "batch", "etl", "CronJob"), owner_record("data", "CronJob/etl"))
    d.apply(owner_key("c1", "shop", "cart-7d9f-y"), owner_record("checkout", "Deployment/cart", "ReplicaSet/cart-7d9f"))
    assert d.owner_of({"namespace": "shop", "deployment": "cart"}) == "checkout"  # a live pod's, newer
    for pod in ("cart-7d9f-x", "cart-7d9f-y"):
        d.apply(owner_key("c1", "shop", pod), None)
    d.apply(owner_key("c1", "batch", "etl-1-abcde"), None)
    assert d.owner_of({"namespace": "shop", "deployment": "cart"}) == "payments"
    assert d.owner_of({"namespace": "shop", "workload": "cart", "workload_type": "deployment"}) == "payments"
    assert d.owner_of({"namespace": "batch", "cronjob": "etl"}) == "data"
    assert d.owner_of({"namespace": "shop", "replicaset": "cart-7d9f"}) == "web"  # a controller has no record
    assert d.owner_of({"namespace": "shop", "deployment": "cart", "cluster": "c2"}) == ""
    d.apply(owner_key("c1", "shop", "cart", "Deployment"), owner_record("", "Deployment/cart"))  # label removed
    assert d.owner_of({"namespace": "shop", "deployment": "cart"}) == "web"
    d.apply(owner_key("c1", "batch", "etl", "CronJob"), None)  # deleted
    assert d.owner_of({"namespace": "batch", "cronjob": "etl"}) == ""
    assert d.workloads == {("c1", "shop", "Deployment/cart"): ""}
    assert d.namespaces.keys() == {("c1", "shop")}  # a workload's key is never read as a namespace's


def test_a_cluster_name_with_slashes_keeps_its_namespace_records_apart_from_workload_records():
    """``org/EU/Prod`` + ``/shop`` reads like a workload key (``Prod`` a kind): a workload's record names itself, a
    namespace's does not, and a tombstone goes to the one held."""
    d = OwnerDirectory("org/EU/Prod")
    d.apply(owner_key("org/EU/Prod", "shop"), owner_record("web"))
    d.apply(owner_key("org/EU/Prod", "shop", "cart", "Deployment"), owner_record("payments", "Deployment/cart"))
    assert d.owner_of({"namespace": "shop", "deployment": "cart"}) == "payments"
    assert d.owner_of({"namespace": "shop", "persistentvolumeclaim": "x"}) == "web"
    d.apply(owner_key("org/EU/Prod", "shop"), None)
    assert (d.namespaces, list(d.workloads)) == ({}, [("org/EU/Prod", "shop", "Deployment/cart")])


@pytest.mark.parametrize("key, value", [
    (b"c1", owner_record("x")), (b"c1/", owner_record("x")), (None, owner_record("x")),
    (b"c1/shop", b"not json"), (b"c1/shop", b'{"kind": "event", "owner": "x"}'), (b"c1/shop", b'{"kind": "owner"}'),
])
def test_a_record_not_of_the_topic_s_shape_is_refused_and_changes_nothing(key, value):
    d = directory()
    before = (dict(d.namespaces), dict(d.pods))
    with pytest.raises(ValueError):
        d.apply(key, value)
    assert (d.namespaces, d.pods) == before[0:1] + before[1:]


def default_engine(d: OwnerDirectory) -> Engine:
    engine = RulePacks(Settings()).holder.engine
    engine.owner_of = d.owner_of
    return engine


def test_the_default_pack_s_container_waiting_alert_reaches_the_pod_s_team_and_resolves_with_it():
    """KubeContainerWaiting (kube-state-metrics, no team in the series) fires with the pod's team; the pod's deletion
    (its tombstone) while it fires does not move it: the resolution carries the team it fired with, so one
    fingerprint goes firing -> resolved."""
    d = directory()
    engine, state = default_engine(d), {}
    out = []
    for t in range(0, 3900, 60):
        out += engine.process(waiting(float(t)), state, float(t))
    assert [(a.status, a.labels["alertname"], a.labels.get("owner")) for a in out] == \
        [("firing", "KubeContainerWaiting", "payments")]
    d.apply(owner_key("c1", "shop", "cart-7d9f-x"), None)  # deleted: the series stops
    d.apply(owner_key("c1", "shop"), owner_record("web-2"))
    resolved = engine.tick(3840.0 + 600, state)
    assert [(a.status, a.labels.get("owner"), a.fingerprint) for a in resolved] == \
        [("resolved", "payments", out[0].fingerprint)]


def test_a_team_set_by_the_signal_or_the_rule_is_kept_and_no_directory_means_no_team(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(textwrap.dedent("""\
        apiVersion: kubesight.io/v1
        kind: RulePack
        metadata: {name: t, version: "1"}
        rules:
          - alert: Waiting
            match: {metric: kube_pod_container_status_waiting}
            condition: {type: threshold, op: "==", value: 1}
          - alert: WaitingPlatform
            match: {metric: kube_pod_container_status_waiting}
            condition: {type: threshold, op: "==", value: 1}
            labels: {owner: platform}
        """))
    rs = load_packs([f])
    engine = Engine(rs)
    engine.owner_of = directory().owner_of
    got = {a.labels["alertname"]: a.labels.get("owner") for a in engine.process(waiting(0.0), {}, 0.0)}
    assert got == {"Waiting": "payments", "WaitingPlatform": "platform"}
    got = {a.labels["alertname"]: a.labels.get("owner") for a in engine.process(waiting(0.0, owner="sre"), {}, 0.0)}
    assert got["Waiting"] == "sre"  # the series' own owner label (relabelled at the scrape)
    assert [a.labels.get("owner") for a in Engine(rs).process(waiting(0.0), {}, 0.0)] == [None, "platform"]


def test_a_firing_alert_keeps_its_team_until_it_resolves_and_the_next_episode_takes_the_new_one():
    """A relabelled workload, a late sample read after its pod's tombstone, a Recreate rollout's last pod gone: the
    directory's answer moves, but the firing alert keeps the team it paged (a new fingerprint would page another
    team about the same problem and tell the first it was over); its next episode takes the team of then."""
    d = directory()
    engine, state = default_engine(d), {}
    out = []
    for t in range(0, 3660, 60):
        out += engine.process(waiting(float(t)), state, float(t))
    d.apply(owner_key("c1", "shop", "cart-7d9f-x"), owner_record("checkout", "Deployment/cart", "ReplicaSet/cart-7d9f"))
    out += engine.process(waiting(3660.0), state, 3660.0)
    d.apply(owner_key("c1", "shop", "cart-7d9f-x"), None)  # deleted, its tombstone read before its last scrape
    out += engine.process(waiting(3720.0), state, 3720.0)
    out += engine.tick(3720.0 + 600, state)  # the series went stale: resolved
    assert [(a.status, a.labels.get("owner")) for a in out] == [("firing", "payments"), ("resolved", "payments")]
    assert out[0].fingerprint == out[1].fingerprint
    d.apply(owner_key("c1", "shop", "cart-7d9f-x"), owner_record("checkout", "Deployment/cart", "ReplicaSet/cart-7d9f"))
    again = []
    for t in range(5000, 8700, 60):
        again += engine.process(waiting(float(t)), state, float(t))
    assert [(a.status, a.labels.get("owner")) for a in again] == [("firing", "checkout")]


@pytest.mark.parametrize("labels, team", [
    # kube-prometheus' node-exporter series carry the exporter's own namespace and pod
    ({"alertname": "NodeFilesystemSpaceFillingUp", "namespace": "shop", "pod": "cart-7d9f-x"}, ""),
    ({"alertname": "GPUDoubleBitECCErrors", "namespace": "shop", "pod": "cart-7d9f-x", "node": "g1"}, ""),  # dcgm
    ({"alertname": "EtcdHighFsyncDurations", "namespace": "shop", "pod": "cart-7d9f-x"}, ""),
    ({"alertname": "Mine", "layer": "node", "namespace": "shop", "pod": "cart-7d9f-x"}, ""),
    ({"alertname": "NodeOOMKill", "namespace": "shop", "pod": "cart-7d9f-x", "node": "n1"}, "payments"),  # its own
    ({"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": "cart-7d9f-x", "node": "n1"}, "payments"),
])
def test_an_alert_about_the_platform_itself_is_not_given_the_team_of_the_pod_it_names(labels, team):
    assert directory().owner_of(labels) == team


def test_the_directory_s_size_is_a_self_metric():
    """How many teams a worker knows, and how many records it read: an owners topic nobody writes is seen at once."""
    from streams.telemetry import WorkerMetrics

    d = directory()
    stage = RulesStage(RulePacks(Settings()).holder, d.owner_of)
    fams = {f.name: f for f in WorkerMetrics([], stage).collect()}
    assert {s.labels["of"]: s.value for s in fams["kubesight_owner_directory_entries"].samples} == \
        {"namespace": 1, "pod": 2, "workload": 0}
    assert fams["kubesight_owner_records"].samples[0].value == 3
