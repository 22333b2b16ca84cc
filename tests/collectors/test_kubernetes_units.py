"""Kubernetes collector, pure parts: Event views and occurrences, Node/Pod state changes, owners."""

from __future__ import annotations

import copy
import json

import pytest

from collectors.kubernetes import events, state
from collectors.kubernetes.owners import Owners
from collectors.kubernetes.testing import must_gather_events, nri_cluster, repeat, to_events_v1
from core.records import Entity, RecordError, format_time


@pytest.fixture(scope="module")
def recorded(data_dir):
    return must_gather_events(data_dir)


@pytest.fixture(scope="module")
def cluster(data_dir):
    return nri_cluster(data_dir)


def _by_name(objs, name):
    return copy.deepcopy(next(o for o in objs if o["metadata"]["name"] == name))


# ---------------------------------------------------------------- Events


def test_view_reads_every_field_of_both_schemas(data_dir):
    fx = data_dir / "kubernetes-api-roundtrip-fixtures"
    core = events.view(json.loads((fx / "core.v1.Event.json").read_text()))
    new = events.view(json.loads((fx / "events.k8s.io.v1.Event.json").read_text()))
    assert (core.api, new.api) == ("v1", "events.k8s.io/v1")
    assert new.message == "noteValue" and new.regarding["fieldPath"] == "fieldPathValue"
    assert new.component == "reportingControllerValue"
    # series.count wins over deprecatedCount (15): it is the occurrence count of a series
    assert new.count == 1 and new.time == pytest.approx(1009846861.000002)


def test_both_views_of_a_recorded_event_are_the_same_occurrences(recorded):
    series = [e for e in recorded if e.get("series")][:20]
    plain = [e for e in recorded if not e.get("series") and (e.get("count") or 0) > 1][:20]
    assert len(series) == 20 and len(plain) == 20
    for e in series + plain:
        a, b = events.view(e), events.view(to_events_v1(e))
        assert (a.uid, a.count, a.time, a.reason, a.message) == (b.uid, b.count, b.time, b.reason, b.message)


def test_one_record_per_occurrence_with_stable_ids(recorded):
    e = next(x for x in recorded if not x.get("series") and x.get("count") == 1)
    ent = Entity(cluster="c1", namespace="ns", kind="Pod", name="p")
    first = events.occurrences(events.view(e), None, ent)
    e3 = repeat(repeat(e, "2021-08-03T12:00:00Z"), "2021-08-03T12:01:00Z")
    later = events.occurrences(events.view(e3), 1, ent)
    assert [r.count for r in first] == [1] and [r.count for r in later] == [2, 3]
    assert later[-1].time == 1627992060.0
    assert len({r.id for r in first + later}) == 3
    assert [r.id for r in events.occurrences(events.view(e3), 1, ent)] == [r.id for r in later]
    assert events.occurrences(events.view(e3), 3, ent) == []


def test_a_series_started_at_one_is_not_a_lost_repeat(recorded):
    e = next(x for x in recorded if x.get("series"))  # the scheduler's: series.count 1 two seconds after eventTime
    before = copy.deepcopy(e)
    before.pop("series")  # what it was before its first repeat
    known, counts = 0, []
    for obj in (before, e, repeat(e), repeat(repeat(e))):
        v = events.view(obj)
        known = events.series_offset(v, known)
        counts.append(v.count + known)
    assert counts == [1, 2, 3, 4]
    new_style = events.view(repeat(e))  # a recorder that starts series at 2: no offset learnt
    assert new_style.count + events.series_offset(new_style, 0) == 2


def test_first_list_reports_history_once_later_first_sights_in_full(recorded):
    e = next(x for x in recorded if (x.get("count") or 0) >= 5)
    v = events.view(e)
    assert [r.count for r in events.occurrences(v, None, Entity(), baseline=True)] == [v.count]
    assert [r.count for r in events.occurrences(v, None, Entity())] == list(range(1, v.count + 1))


def test_a_count_that_jumps_by_millions_makes_its_latest_occurrences_only(recorded):
    """Anyone who may patch Events can set count 2147483647: one record per missed occurrence took the collector's
    memory (1.2 GB at 3 million). A non-string fieldPath is written as text, not a TypeError out of a replay."""
    e = copy.deepcopy(next(x for x in recorded if not x.get("series") and x.get("count") == 1))
    e["count"] = 2**31 - 1
    e["involvedObject"]["fieldPath"] = 5
    out = events.occurrences(events.view(e), 1, Entity())
    assert len(out) == events.MISSED_MAX and [out[0].count, out[-1].count] == [2**31 - events.MISSED_MAX, 2**31 - 1]
    assert out[0].labels["field_path"] == "5"


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda e: e["metadata"].pop("uid"), "Event without metadata.uid"),
    (lambda e: e.update(count="many"), "count must be an integer from 0 to 2147483647, got 'many'"),
    (lambda e: e.update(count=2**64 + 1), "count must be an integer from 0 to 2147483647, got 18446744073709551617"),
    (lambda e: e.update(lastTimestamp="yesterday"), "invalid time 'yesterday'"),
    (lambda e: e.update(involvedObject=["Pod"]), "Event involvedObject/regarding and source must be objects"),
])
def test_malformed_events_are_refused_with_a_reason(recorded, mutate, message):
    e = copy.deepcopy(recorded[0])
    mutate(e)
    with pytest.raises(RecordError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        events.view(e)


# ---------------------------------------------------------------- Nodes


def _cond(node, typ, status, when, reason=""):
    for c in node["status"]["conditions"]:
        if c["type"] == typ:
            c.update(status=status, lastTransitionTime=when, reason=reason)


def test_node_condition_transitions(cluster):
    node = _by_name(cluster["nodes"], "datagen-1-35")
    ent = Entity(kind="Node", name="datagen-1-35", node="datagen-1-35")
    s0 = state.node_summary(node)
    assert state.node_changes(None, s0, ent, 0.0) == []  # healthy on first sight: nothing to say
    _cond(node, "Ready", "False", "2026-06-26T11:00:00Z", "KubeletNotReady")
    _cond(node, "MemoryPressure", "True", "2026-06-26T11:00:05Z", "KubeletHasInsufficientMemory")
    s1 = state.node_summary(node)
    got = state.node_changes(s0, s1, ent, 0.0)
    assert [(e.reason, e.type, e.labels["status"]) for e in got] == [
        ("NodeMemoryPressure", "Warning", "True"), ("NodeNotReady", "Warning", "False")]
    assert got[1].time == 1782471600.0 and got[1].labels["condition_reason"] == "KubeletNotReady"
    assert state.node_changes(s1, s1, ent, 0.0) == []
    _cond(node, "Ready", "Unknown", "2026-06-26T11:01:00Z", "NodeStatusUnknown")
    assert state.node_changes(s1, state.node_summary(node), ent, 0.0) == []  # still not ready
    s2 = state.node_summary(node)
    _cond(node, "Ready", "True", "2026-06-26T11:02:00Z", "KubeletReady")
    _cond(node, "MemoryPressure", "False", "2026-06-26T11:02:00Z", "KubeletHasSufficientMemory")
    back = state.node_changes(s2, state.node_summary(node), ent, 0.0)
    assert sorted(e.reason for e in back) == ["NodeMemoryPressureCleared", "NodeReady"]
    assert state.node_changes(None, s1, ent, 0.0)[1].reason == "NodeNotReady"  # bad on first sight


# ---------------------------------------------------------------- Pods


def test_recorded_failed_job_pods_are_container_errors_on_first_sight(cluster):
    got = []
    for pod in cluster["pods"]:
        got += state.pod_changes(None, state.pod_summary(pod), Entity(), 0.0)
    assert sorted((e.reason, e.labels["container"], e.labels["exit_code"]) for e in got) == [
        ("ContainerError", "main", "42")] * 4
    assert {e.source for e in got} == {"k8s-state"}
    assert sorted(format_time(e.time) for e in got) == [  # the containers' finishedAt, as recorded
        "2026-06-26T10:14:07.000Z", "2026-06-26T10:14:08.000Z", "2026-06-26T10:14:33.000Z", "2026-06-26T10:14:33.000Z"]


def _container(pod):
    return pod["status"]["containerStatuses"][0]


def test_pod_oom_restart_crashloop_and_image_pull(cluster):
    pod = _by_name(cluster["pods"], "e2e-deployment-79967c5968-8bnn8")
    s0 = state.pod_summary(pod)
    cs = _container(pod)
    cs["restartCount"] = 1
    cs["lastState"] = {"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": "2026-06-26T10:13:53Z",
                                      "finishedAt": "2026-06-26T10:20:00Z"}}
    cs["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}
    s1 = state.pod_summary(pod)
    got = state.pod_changes(s0, s1, Entity(), 5.0)
    assert [(e.reason, e.labels.get("exit_code")) for e in got] == [
        ("ContainerOOMKilled", "137"), ("ContainerRestarted", None), ("CrashLoopBackOff", None)]
    assert got[1].labels["restart_count"] == "1"
    # times come from the object (the crash's finishedAt), not from when the collector looked
    assert [e.time for e in got] == [1782469200.0] * 3
    assert state.pod_changes(s1, s1, Entity(), 6.0) == []
    cs["state"] = {"waiting": {"reason": "ErrImagePull"}}
    s2 = state.pod_summary(pod)
    cs["state"] = {"waiting": {"reason": "ImagePullBackOff"}}
    s3 = state.pod_summary(pod)
    pulls = state.pod_changes(s1, s2, Entity(), 7.0) + state.pod_changes(s2, s3, Entity(), 8.0)
    assert [(e.reason, e.labels["waiting_reason"]) for e in pulls] == [("ImagePullBackOff", "ErrImagePull")]


def test_terminated_then_moved_to_last_state_is_reported_once(cluster):
    pod = _by_name(cluster["pods"], "e2e-statefulset-0")
    cs = _container(pod)
    s0 = state.pod_summary(pod)
    term = {"exitCode": 1, "reason": "Error", "finishedAt": "2026-06-26T10:30:00Z"}
    cs["state"] = {"terminated": term}
    s1 = state.pod_summary(pod)
    cs.update(restartCount=1, lastState={"terminated": term}, state={"running": {"startedAt": "2026-06-26T10:30:05Z"}})
    s2 = state.pod_summary(pod)
    got = state.pod_changes(s0, s1, Entity(), 0.0) + state.pod_changes(s1, s2, Entity(), 0.0)
    assert [e.reason for e in got] == ["ContainerError", "ContainerRestarted"]


@pytest.mark.parametrize(("status", "reason"), [
    ({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}, "Evicted"),
    ({"conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                      "lastTransitionTime": "2026-06-26T11:00:00Z"}]}, "Preempted"),
])
def test_evictions_and_preemptions(cluster, status, reason):
    pod = _by_name(cluster["pods"], "e2e-daemonset-kb65b")
    s0 = state.pod_summary(pod)
    pod["status"].update(status)
    s1 = state.pod_summary(pod)
    got = state.pod_changes(s0, s1, Entity(), 7.0)
    assert [e.reason for e in got] == [reason]
    assert got[0].time == (1782471600.0 if reason == "Preempted" else 7.0)  # no time in the status: observed
    assert state.pod_changes(s1, s1, Entity(), 0.0) == []


def test_malformed_pod_is_refused_with_a_reason(cluster):
    pod = _by_name(cluster["pods"], "e2e-statefulset-0")
    _container(pod)["restartCount"] = "three"
    with pytest.raises(RecordError, match="^restartCount must be an integer, got 'three'$"):
        state.pod_summary(pod)


# ---------------------------------------------------------------- owners


def _fetcher(cluster, calls):
    plural = {"ReplicaSet": "replicasets", "Deployment": "deployments", "Job": "jobs", "CronJob": "cronjobs",
              "StatefulSet": "statefulsets", "DaemonSet": "daemonsets", "Namespace": "namespaces", "Pod": "pods"}

    def fetch(kind, ns, name):
        calls.append((kind, ns, name))
        for o in cluster.get(plural[kind], []):
            if o["metadata"]["name"] == name and (o["metadata"].get("namespace") or "") == (ns if kind != "Namespace" else ""):
                return o
        return None
    return fetch


def test_recorded_pods_resolve_to_their_workloads_and_team(cluster):
    calls = []
    o = Owners(_fetcher(cluster, calls))
    got = {}
    for pod in cluster["pods"]:
        s = state.pod_summary(pod)
        got[s["name"]] = o.resolve(s["ns"], "Pod", s["name"], tuple(s["owner"]), s["labels"].get("pod-template-hash", ""))
    assert got["e2e-deployment-79967c5968-8bnn8"] == ("Deployment/e2e-deployment", "k8-team")  # label team on it
    assert got["coredns-7d764666f9-qdcxt"] == ("Deployment/coredns", "")
    assert got["e2e-cronjob-29707813-dhlr2"] == ("CronJob/e2e-cronjob", "")
    assert got["e2e-failjob-28dqq"] == ("Job/e2e-failjob", "")
    assert got["e2e-statefulset-0"] == ("StatefulSet/e2e-statefulset", "")
    assert got["kindnet-zkpn8"] == ("DaemonSet/kindnet", "")
    assert got["etcd-datagen-1-35"] == ("", "")  # static pod, owned by its Node
    assert len(calls) == len(set(calls))  # every owner read once: the cache answers the rest


def test_namespace_team_when_the_workload_has_none():
    objs = {("Namespace", "", "shop"): {"metadata": {"annotations": {"app.kubernetes.io/part-of": "storefront"}}},
            ("Deployment", "shop", "cart"): {"metadata": {"labels": {"app": "cart"}}}}
    o = Owners(lambda k, ns, n: objs.get((k, ns, n)))
    assert o.resolve("shop", "Deployment", "cart") == ("Deployment/cart", "storefront")
    o2 = Owners(lambda k, ns, n: objs.get((k, ns, n)), keys=("owner",))
    assert o2.resolve("shop", "Deployment", "cart") == ("Deployment/cart", "")


def test_unreadable_replicaset_falls_back_to_its_template_hash():
    def forbidden(kind, ns, name):
        raise PermissionError("403")
    o = Owners(forbidden)
    assert o.resolve("shop", "Pod", "cart-7d9f-x", ("ReplicaSet", "cart-7d9f"), "7d9f") == ("Deployment/cart", "")


def test_an_orphaned_replicaset_is_its_own_workload_not_a_guessed_deployment():
    """Its Deployment deleted with --cascade=orphan: the ReplicaSet read fine, no controller; its name still looks
    like a Deployment's, but only an unreadable ReplicaSet is guessed from it."""
    objs = {("ReplicaSet", "shop", "cart-7d9f"): {"metadata": {"labels": {"pod-template-hash": "7d9f"}}},
            ("Namespace", "", "shop"): {"metadata": {"labels": {"team": "web"}}}}
    o = Owners(lambda k, ns, n: objs.get((k, ns, n)))
    assert o.resolve("shop", "Pod", "cart-7d9f-x", ("ReplicaSet", "cart-7d9f"), "7d9f") == ("ReplicaSet/cart-7d9f", "web")


def test_a_failed_or_empty_owner_read_is_asked_again_after_retry_not_ttl():
    now = [0.0]
    state = {"fail": True}
    rs = {"metadata": {"ownerReferences": [{"kind": "Deployment", "name": "cart", "controller": True}]}}

    def fetch(kind, ns, name):
        if kind == "ReplicaSet" and state["fail"]:
            raise TimeoutError("read timed out")
        return {"ReplicaSet": rs, "Deployment": {"metadata": {"labels": {"team": "payments"}}}}.get(kind)
    o = Owners(fetch, ttl=300.0, retry=10.0, clock=lambda: now[0])
    assert o.resolve("shop", "ReplicaSet", "cart-7d9f") == ("ReplicaSet/cart-7d9f", "")  # the read failed
    state["fail"] = False
    now[0] = 5.0
    assert o.resolve("shop", "ReplicaSet", "cart-7d9f") == ("ReplicaSet/cart-7d9f", "")  # not asked again yet
    now[0] = 11.0
    assert o.resolve("shop", "ReplicaSet", "cart-7d9f") == ("Deployment/cart", "payments")
    now[0] = 200.0  # a found object is kept for ttl
    state["fail"] = True
    assert o.resolve("shop", "ReplicaSet", "cart-7d9f") == ("Deployment/cart", "payments")


def test_owner_cache_is_bounded_and_expires():
    now = [0.0]
    calls = []
    o = Owners(lambda k, ns, n: calls.append(n) or {"metadata": {}}, max_entries=3, ttl=10.0, clock=lambda: now[0])
    for i in range(50):
        o.get("Deployment", "ns", f"d{i}")
    assert len(o) == 3
    o.get("Deployment", "ns", "d49")
    assert calls.count("d49") == 1
    now[0] = 11.0
    o.get("Deployment", "ns", "d49")
    assert calls.count("d49") == 2


# ---------------------------------------------------------------- deploy manifest


def test_cluster_role_grants_exactly_what_the_collector_uses():
    import yaml

    from collectors.kubernetes.api import READERS, STREAMS
    from core.settings import REPO

    docs = list(yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "collector-kubernetes.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    group = {"Namespace": "", "Pod": "", "ReplicaSet": "apps", "Deployment": "apps", "StatefulSet": "apps",
             "DaemonSet": "apps", "Job": "batch", "CronJob": "batch", "ReplicationController": ""}
    watched = {("events.k8s.io" if s.api == "EventsV1Api" else "", s.kind.lower() + "s", v)
               for s in STREAMS.values() for v in ("list", "watch")}
    read = {(group[k], k.lower() + "s", "get") for k in READERS}
    assert granted == watched | read
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == next(
        d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["collect", "kubernetes", "--in-cluster"]
    from kubesight.cli import build_parser

    assert build_parser().parse_args(args).func.__module__ == "collectors.kubernetes.cli"


def test_a_scheduled_event_names_its_node_before_the_pod_watch_has_the_binding():
    """kube-scheduler's Scheduled Event can come before the pod watch delivers the binding (the pod still without
    nodeName, or not seen at all): the node is then read from the Event's own message."""
    from types import SimpleNamespace

    from collectors.kubernetes.collector import Collector, Options

    api = SimpleNamespace(read=lambda kind, ns, name: None)
    c = Collector(api, sink=None, options=Options(cluster="c1"))
    ev = {"metadata": {"name": "agent-x2.1", "namespace": "shop", "uid": "e1", "resourceVersion": "5"},
          "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "agent-x2", "uid": "p1"},
          "reason": "Scheduled", "message": "Successfully assigned shop/agent-x2 to kwok-node-1", "type": "Normal",
          "source": {"component": "default-scheduler"}, "count": 1,
          "firstTimestamp": "2026-11-29T06:00:00Z", "lastTimestamp": "2026-11-29T06:00:00Z"}
    assert c._event_entity(events.view(ev)).node == "kwok-node-1"  # the pod not seen yet
    c.pods["p1"] = {"name": "agent-x2", "ns": "shop", "uid": "p1", "node": "", "owner": ["DaemonSet", "agent"],
                    "labels": {}}
    assert c._event_entity(events.view(ev)).node == "kwok-node-1"  # seen, not yet bound
    c.pods["p1"]["node"] = "kwok-node-2"  # what the pod says wins once it has it
    assert c._event_entity(events.view(ev)).node == "kwok-node-2"
    other = {**ev, "reason": "Pulled", "message": "Successfully assigned shop/agent-x2 to kwok-node-1"}
    c.pods["p1"]["node"] = ""
    assert c._event_entity(events.view(other)).node == ""  # only the scheduler's own Event is read so


def test_a_team_key_anywhere_beats_the_application_key_part_of():
    """app.kubernetes.io/part-of names an application (Helm charts set it), not a team: the workload's and the
    namespace's team keys (labels or annotations) come first, part-of only when none is found."""
    objs = {("Namespace", "", "shop"): {"metadata": {"labels": {"team": "web"}}},
            ("Namespace", "", "plain"): {"metadata": {}},
            ("Deployment", "shop", "ui"): {"metadata": {"labels": {"app.kubernetes.io/part-of": "shop-ui"}}},
            ("Deployment", "shop", "pay"): {"metadata": {"labels": {"app.kubernetes.io/part-of": "shop-ui"},
                                                         "annotations": {"team": "payments"}}},
            ("Deployment", "plain", "ui"): {"metadata": {"labels": {"app.kubernetes.io/part-of": "shop-ui"}}}}
    o = Owners(lambda k, ns, n: objs.get((k, ns, n)))
    assert o.resolve("shop", "Deployment", "ui") == ("Deployment/ui", "web")
    assert o.resolve("shop", "Deployment", "pay") == ("Deployment/pay", "payments")
    assert o.resolve("plain", "Deployment", "ui") == ("Deployment/ui", "shop-ui")  # nothing else: the application


def test_a_workload_recreated_under_its_name_is_read_again_by_the_uid_its_pods_name():
    now = [0.0]
    objs = {("ReplicaSet", "shop", "cart-7d9f"): {"metadata": {"uid": "rs1", "ownerReferences": [
                {"kind": "Deployment", "name": "cart", "uid": "d1", "controller": True}]}},
            ("Deployment", "shop", "cart"): {"metadata": {"uid": "d1", "labels": {"team": "payments"}}}}
    calls = []
    o = Owners(lambda k, ns, n: calls.append(n) or objs.get((k, ns, n)), ttl=300.0, clock=lambda: now[0])
    assert o.resolve("shop", "Pod", "cart-7d9f-a", ("ReplicaSet", "cart-7d9f", "rs1"), "7d9f") == \
        ("Deployment/cart", "payments")
    objs[("ReplicaSet", "shop", "cart-7d9f")] = {"metadata": {"uid": "rs2", "ownerReferences": [
        {"kind": "Deployment", "name": "cart", "uid": "d2", "controller": True}]}}
    objs[("Deployment", "shop", "cart")] = {"metadata": {"uid": "d2", "labels": {"team": "search"}}}
    now[0] = 1.0  # long before the ttl
    assert o.resolve("shop", "Pod", "cart-7d9f-b", ("ReplicaSet", "cart-7d9f", "rs2"), "7d9f") == \
        ("Deployment/cart", "search")
    n = len(calls)
    for _ in range(3):  # a leftover pod of the deleted one: re-read once for its uid, not for each of its events
        assert o.resolve("shop", "Pod", "cart-7d9f-a", ("ReplicaSet", "cart-7d9f", "rs1"), "7d9f")[1] == "search"
    assert len(calls) == n + 1
    s = state.pod_summary({"metadata": {"name": "p", "uid": "u", "ownerReferences": [
        {"kind": "ReplicaSet", "name": "cart-7d9f", "uid": "rs2", "controller": True}]}})
    assert s["owner"] == ["ReplicaSet", "cart-7d9f", "rs2"]


def test_a_controller_of_a_kind_not_read_is_the_workload_with_the_namespace_team(caplog):
    """An Argo Rollout's ReplicaSets (a new one each revision), a CRD's pods: the controller reference names the
    workload; kubesight cannot read it, so the team is the namespace's. A ReplicationController is read (absent
    here: the namespace's team too; tests/collectors/test_kubernetes_owner_kinds.py reads one)."""
    objs = {("Namespace", "", "shop"): {"metadata": {"labels": {"team": "web"}}},
            ("ReplicaSet", "shop", "web-5f6c7"): {"metadata": {"ownerReferences": [
                {"kind": "Rollout", "name": "web", "controller": True}]}},
            ("ReplicaSet", "shop", "web-8a9b0"): {"metadata": {"ownerReferences": [
                {"kind": "Rollout", "name": "web", "controller": True}]}}}
    read = []
    o = Owners(lambda k, ns, n: read.append(k) or objs.get((k, ns, n)))
    with caplog.at_level("INFO", logger="kubesight.collect.kubernetes"):
        assert o.resolve("shop", "Pod", "web-5f6c7-a", ("ReplicaSet", "web-5f6c7")) == ("Rollout/web", "web")
        assert o.resolve("shop", "Pod", "web-8a9b0-a", ("ReplicaSet", "web-8a9b0")) == ("Rollout/web", "web")
        assert o.resolve("shop", "Pod", "kafka-0", ("StrimziPodSet", "kafka")) == ("StrimziPodSet/kafka", "web")
        assert o.resolve("shop", "Pod", "legacy-x", ("ReplicationController", "legacy")) == \
            ("ReplicationController/legacy", "web")
    assert set(read) == {"Namespace", "ReplicaSet", "ReplicationController"}  # none of a kind without a reader
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and sum("Rollout/web" in m for m in said) == 1


class Forbidden(Exception):
    """What the kubernetes client raises on a 403: status, reason and the server's Status as body."""

    def __init__(self, name):
        self.status, self.reason = 403, "Forbidden"
        self.body = json.dumps({"kind": "Status", "message": f'replicasets.apps "{name}" is forbidden: User "x" '
                                                             'cannot get resource "replicasets" in API group "apps"'})
        super().__init__(f"(403)\nReason: Forbidden\nHTTP response headers: {{...}}\nHTTP response body: {self.body}")


def test_a_403_is_said_once_per_kind_with_the_server_message_and_not_asked_again_for_the_ttl(caplog):
    now = [0.0]
    calls = []

    def fetch(kind, ns, name):
        calls.append(kind)
        if kind == "ReplicaSet":
            raise Forbidden(name)
        return None
    o = Owners(fetch, ttl=300.0, retry=10.0, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="kubesight.collect.kubernetes"):
        for t in range(0, 60, 10):
            now[0] = float(t)
            for i in range(20):
                assert o.resolve("shop", "Pod", f"d{i}-abc{i}-x", ("ReplicaSet", f"d{i}-abc{i}"), f"abc{i}")[0] == \
                    f"Deployment/d{i}"
    [line] = [r.getMessage() for r in caplog.records]
    assert "\n" not in line and "403" in line and 'cannot get resource "replicasets"' in line
    assert calls.count("ReplicaSet") == 1  # lasting: not asked again per object every 10 s
    now[0] = 301.0  # the role may have been fixed: asked again after the ttl
    o.resolve("shop", "Pod", "d0-abc0-x", ("ReplicaSet", "d0-abc0"), "abc0")
    assert calls.count("ReplicaSet") == 2


def test_events_of_an_unreadable_replicaset_name_its_deployment_as_its_pods_do():
    """RBAC without replicasets: the ReplicaSet's own Events (SuccessfulCreate, FailedCreate on a quota) go where its
    pods' go, from the hash its pods carry, else from a name ending in a pod-template-hash."""
    from collectors.kubernetes.collector import Collector, Options

    def fetch(kind, ns, name):
        if kind == "ReplicaSet":
            raise Forbidden(name)
        return {("Deployment", "api"): {"metadata": {"labels": {"team": "apiteam"}}},
                ("Namespace", "shop"): {"metadata": {"labels": {"team": "web"}}}}.get((kind, name))
    from types import SimpleNamespace

    c = Collector(SimpleNamespace(read=fetch), sink=None, options=Options(cluster="c1"))
    c.pods["p1"] = {"name": "api-55aa-z", "ns": "shop", "uid": "p1", "node": "n1",
                    "owner": ["ReplicaSet", "api-55aa", "rs1"], "labels": {"pod-template-hash": "55aa"}}

    def about(name):
        ev = {"metadata": {"name": f"{name}.1", "namespace": "shop", "uid": "e-" + name}, "reason": "FailedCreate",
              "involvedObject": {"kind": "ReplicaSet", "namespace": "shop", "name": name},
              "type": "Warning", "message": "exceeded quota", "count": 1, "lastTimestamp": "2026-11-29T06:00:00Z"}
        e = c._event_entity(events.view(ev))
        return e.workload, e.owner
    assert about("api-55aa") == ("Deployment/api", "apiteam")  # a pod of it says the hash
    assert about("api-7c9d5b8f4d") == ("Deployment/api", "apiteam")  # no pod (quota): the name's shape
    assert about("api-v1") == ("ReplicaSet/api-v1", "web")  # a hand-made name is not guessed


def test_transient_read_failures_are_retried_but_said_once_per_kind_and_status_per_ttl(caplog):
    now = [0.0]
    calls = []

    def fetch(kind, ns, name):
        calls.append(kind)
        raise TimeoutError("read timed out")
    o = Owners(fetch, ttl=300.0, retry=10.0, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="kubesight.collect.kubernetes"):
        for t in (0.0, 11.0):
            now[0] = t
            for i in range(5):
                o.get("Job", "shop", f"j{i}")
        assert calls.count("Job") == 10  # transient: asked again after retry
        assert len(caplog.records) == 1 and "TimeoutError: read timed out" in caplog.records[0].getMessage()
        now[0] = 301.0
        o.get("Job", "shop", "j0")
        assert len(caplog.records) == 2  # still failing after the ttl: said again


# ---------------------------------------------------------------- recorded data and bench kubernetes


def test_load_yaml_reads_the_gzipped_copy(tmp_path):
    """tests/data keeps large files gzipped (nri-kubernetes' pods.yaml is pods.yaml.gz): asked for ``x.yaml``,
    ``load_yaml`` reads ``x.yaml.gz`` when only that exists (``bench kubernetes --data tests/data`` failed)."""
    import gzip

    from collectors.kubernetes.testing import load_yaml

    (tmp_path / "pods.yaml.gz").write_bytes(gzip.compress(b"items: [{metadata: {name: p}}]\n"))
    assert load_yaml(tmp_path / "pods.yaml") == {"items": [{"metadata": {"name": "p"}}]}
    (tmp_path / "pods.yaml").write_text("items: []\n")  # the plain file, when there, wins
    assert load_yaml(tmp_path / "pods.yaml") == {"items": []}


@pytest.mark.kafka
def test_bench_kubernetes_fails_fast_when_its_api_server_does_not_start(kafka_bootstrap, tmp_path):
    """The test API server's process dies at start (no recorded cluster): one line and exit 2, not a hang (the bench
    kept the child's end of the pipe open, so it waited forever for the server's address)."""
    import os
    import subprocess
    import sys

    from core.settings import REPO

    for d in ("openshift-must-gather-events", "nri-kubernetes-testdata"):
        (tmp_path / d).mkdir()
    env = dict(os.environ, KUBESIGHT_KAFKA=kafka_bootstrap)
    proc = subprocess.Popen([sys.executable, "-m", "kubesight", "bench", "kubernetes", "--data", str(tmp_path)],
                            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("bench kubernetes still waiting for its dead API server after 60 s")
    assert proc.returncode == 2, err[-2000:]
    assert err.strip().splitlines()[-1] == "bench kubernetes: the test API server did not start (its traceback is above)"
