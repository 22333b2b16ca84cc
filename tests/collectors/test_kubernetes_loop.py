"""Kubernetes collector loop in memory: items applied as the watchers deliver them, records and checkpoint keys
kept by an in-memory sink; against the fake API server where the watching itself is what is tested."""

from __future__ import annotations

import copy
import logging
import threading
import time
from types import SimpleNamespace

import orjson

from collectors.kubernetes.api import Api, api_client
from collectors.kubernetes.collector import Collector, Options
from collectors.kubernetes.events import occurrence_id
from collectors.kubernetes.testing import FakeApiServer, repeat, to_events_v1


class MemSink:
    """What a Kafka transaction holds, committed at once: records, dead letters, checkpoint keys, owners keys."""

    def __init__(self):
        self.records, self.raw, self.dead, self.owners = [], {}, [], {}
        self._open = None

    def begin(self):
        self._open = ([], {}, [], {})

    def commit(self):
        recs, raw, dead, owners = self._open
        self.records += recs
        self.raw.update(raw)
        self.dead += dead
        self.owners.update(owners)
        self._open = None

    def send(self, rec):
        self._open[0].append(rec)

    def send_raw(self, logical, key, value):
        self._open[3 if logical == "owners" else 1][key.decode()] = value

    def reject(self, reason, payload, **where):
        self._open[2].append(reason)

    def restored(self, cluster: str) -> dict:
        """What ``checkpoint.load`` reads back after a restart."""
        from collectors.kubernetes.checkpoint import empty

        out = empty()
        prefix = f"kubernetes/{cluster}/"
        for k, v in self.raw.items():
            part, _, name = k[len(prefix):].partition("/")
            if v is None:
                out[part].pop(name, None)
            else:
                out[part][name] = orjson.loads(v)
        return out


def event(uid: str, count: int = 1, ns: str = "shop", reg: dict | None = None, **fields) -> dict:
    reg = {"kind": "Pod", "namespace": ns, "name": "cart-1", "uid": "p1"} if reg is None else reg
    return {"kind": "Event", "apiVersion": "v1", "metadata": {"name": f"cart-1.{uid}", "namespace": ns, "uid": uid},
            "involvedObject": reg, "reason": "BackOff", "type": "Warning", "message": "Back-off restarting",
            "source": {"component": "kubelet", "host": "node-1"}, "count": count,
            "firstTimestamp": "2026-11-29T10:00:00Z", "lastTimestamp": "2026-11-29T10:05:00Z", **fields}


def collector(objs: dict | None = None, restored: dict | None = None, clock=time.time, **opts):
    """A Collector that reads owners from ``objs`` ((kind, ns, name) -> object; absent: 404), steps run by hand."""
    objs = objs or {}
    api = SimpleNamespace(read=lambda kind, ns, name: copy.deepcopy(objs.get((kind, ns, name))))
    sink = MemSink()
    c = Collector(api, sink, Options(cluster="c1", commit_interval=0.0, **opts), restored, clock=clock)
    return c, sink


def feed(c: Collector, *items) -> None:
    """Items in one transaction, as the loop's ``step`` applies them."""
    for it in items:
        c.queue.put(it)
    c.step()


def counts(sink: MemSink, uid: str) -> list[int]:
    """The occurrence counts committed for the Event ``uid``."""
    return [r.count for r in sink.records if r.source == "k8s" and r.id == occurrence_id("c1", uid, r.count)]


# ---------------------------------------------------------------- one baseline for both Event views


def test_an_event_created_between_the_two_views_first_lists_is_not_history():
    """First start: core/v1 lists (the baseline), the Event is created and repeated, then events.k8s.io lists:
    that second list is not a baseline, or the Event's first occurrences were lost as 'history'."""
    c, sink = collector()
    old, new = event("old", 4), event("new", 3)
    feed(c, ("sync", "events", [old], "1001"))
    feed(c, ("sync", "events.k8s.io", [to_events_v1(old), to_events_v1(new)], "1005"),
         ("event", "events", "ADDED", event("new", 1), "1003"))  # the lagging core/v1 watch
    assert counts(sink, "old") == [4]  # history: one record carrying its count
    assert counts(sink, "new") == [1, 2, 3]


def test_a_first_list_older_than_the_baseline_is_part_of_it():
    """The other order: the later list applied first is the baseline; the older list's Events, deleted before the
    baseline, are history as well (one record), not a burst."""
    c, sink = collector()
    feed(c, ("sync", "events.k8s.io", [to_events_v1(event("a", 4))], "1005"))
    feed(c, ("sync", "events", [event("a", 3), event("gone", 5)], "1001"))
    assert (counts(sink, "a"), counts(sink, "gone")) == ([4], [5])


# ---------------------------------------------------------------- Events re-created after they expired


def test_an_event_recreated_after_it_expired_is_one_occurrence_across_views_and_restarts():
    """client-go re-creates an expired Event under the same name with count = previous + 1: the watch's ADDED with
    count 6 is one occurrence, whichever view delivers it, replayed after a restart or not. A re-list after a gap
    still makes every occurrence of an Event it sees first."""
    c, sink = collector()
    feed(c, ("sync", "events", [], "1000"), ("sync", "events.k8s.io", [], "1000"))
    again = event("again", 6)
    feed(c, ("event", "events", "ADDED", again, "1010"))
    feed(c, ("event", "events.k8s.io", "ADDED", to_events_v1(again), "1010"))
    assert counts(sink, "again") == [6]
    restarted, sink2 = collector(restored=sink.restored("c1"))  # crashed after the commit: the watch replays it
    feed(restarted, ("event", "events", "ADDED", again, "1010"),
         ("event", "events", "MODIFIED", repeat(again), "1011"))
    assert counts(sink2, "again") == [7]
    feed(restarted, ("sync", "events", [event("meanwhile", 3)], "1020"))  # after 410: created during the gap
    assert counts(sink2, "meanwhile") == [1, 2, 3]


# ---------------------------------------------------------------- owners of Events


POD = {"metadata": {"name": "cart-7d9f-x", "namespace": "shop", "uid": "p1", "labels": {"pod-template-hash": "7d9f"},
                    "ownerReferences": [{"kind": "ReplicaSet", "name": "cart-7d9f", "controller": True}]},
       "spec": {"nodeName": "node-3"}, "status": {}}
OWNERS = {("ReplicaSet", "shop", "cart-7d9f"): {"metadata": {"ownerReferences": [
              {"kind": "Deployment", "name": "cart", "controller": True}]}},
          ("Deployment", "shop", "cart"): {"metadata": {"labels": {"team": "payments"}}},
          ("Namespace", "", "shop"): {"metadata": {"labels": {"team": "web"}}},
          ("Namespace", "", "default"): {"metadata": {"labels": {"team": "platform"}}}}


def test_events_about_a_just_deleted_pod_keep_its_workload_team_and_node():
    now = [1000.0]
    c, sink = collector(OWNERS, clock=lambda: now[0], cache_size=2)
    killing = event("k1", reg={"kind": "Pod", "namespace": "shop", "name": "cart-7d9f-x", "uid": "p1"}, reason="Killing")
    killing["source"].pop("host")
    feed(c, ("sync", "pods", [POD], "1000"), ("sync", "events", [], "1000"))
    assert "p1" in sink.restored("c1")["pod"]
    feed(c, ("event", "pods", "DELETED", POD, "1001"), ("event", "events", "ADDED", killing, "1002"))
    by_uid = sink.records[-1].entity
    nameless = event("k2", reg={"kind": "Pod", "namespace": "shop", "name": "cart-7d9f-x"})  # no uid: by name
    feed(c, ("event", "events", "ADDED", nameless, "1003"))
    assert (by_uid.workload, by_uid.owner, by_uid.node) == ("Deployment/cart", "payments", "node-3")
    assert sink.records[-1].entity.workload == "Deployment/cart"
    assert "p1" not in sink.restored("c1")["pod"]  # the checkpoint forgets it at once
    now[0] += 601  # the grace is over
    feed(c, ("event", "events", "ADDED", event("k3", reg=killing["involvedObject"]), "1004"))
    assert sink.records[-1].entity.workload == ""
    for i in range(5):  # bounded: cache_size pods (two keys each)
        pod = copy.deepcopy(POD)
        pod["metadata"].update(uid=f"q{i}", name=f"q{i}")
        feed(c, ("event", "pods", "ADDED", pod, str(1010 + i)), ("event", "pods", "DELETED", pod, str(1020 + i)))
    assert len(c.deleted_pods) == 4


def test_events_about_cluster_scoped_objects_have_no_namespace_and_a_namespace_its_own_team():
    """client-go files Events about a cluster-scoped object in "default" with an empty involvedObject namespace:
    they are not default's (nor its team's); an Event about a Namespace goes to that namespace's team."""
    c, sink = collector(OWNERS)
    feed(c, ("sync", "events", [], "1000"))
    pv = event("pv", ns="default", reg={"kind": "PersistentVolume", "name": "pv-1", "namespace": ""})
    nsev = event("ns", ns="default", reg={"kind": "Namespace", "name": "shop", "apiVersion": "v1"})
    feed(c, ("event", "events", "ADDED", pv, "1001"), ("event", "events", "ADDED", to_events_v1(nsev), "1002"))
    got = [(r.entity.kind, r.entity.namespace, r.entity.owner) for r in sink.records]
    assert got == [("PersistentVolume", "", ""), ("Namespace", "", "web")]


def test_a_deployment_recreated_with_another_team_is_its_team_at_once_not_after_the_cache_ttl():
    """Deleted and re-created under the same name (other uid, other team): the new pods' owner reference names the new
    ReplicaSet's uid, which the cached one does not have, so it is read again, and the Deployment above it."""
    now = [0.0]
    objs = {("ReplicaSet", "shop", "cart-7d9f"): {"metadata": {"uid": "rs1", "ownerReferences": [
                {"kind": "Deployment", "name": "cart", "uid": "d1", "controller": True}]}},
            ("Deployment", "shop", "cart"): {"metadata": {"uid": "d1", "labels": {"team": "payments"}}}}
    c, sink = collector(objs)
    c.owners.clock = lambda: now[0]

    def crashing(uid, rs_uid, restarts):
        pod = copy.deepcopy(POD)
        pod["metadata"]["uid"] = uid
        pod["metadata"]["ownerReferences"][0]["uid"] = rs_uid
        pod["status"] = {"containerStatuses": [{"name": "c", "restartCount": restarts, "state": {"running": {}}}]}
        return pod
    feed(c, ("sync", "pods", [crashing("p1", "rs1", 0)], "1000"), ("event", "pods", "MODIFIED", crashing("p1", "rs1", 1), "1001"))
    assert sink.records[-1].entity.owner == "payments"
    objs[("ReplicaSet", "shop", "cart-7d9f")] = {"metadata": {"uid": "rs2", "ownerReferences": [
        {"kind": "Deployment", "name": "cart", "uid": "d2", "controller": True}]}}
    objs[("Deployment", "shop", "cart")] = {"metadata": {"uid": "d2", "labels": {"team": "search"}}}
    now[0] = 10.0
    feed(c, ("event", "pods", "DELETED", crashing("p1", "rs1", 1), "1002"),
         ("event", "pods", "ADDED", crashing("p2", "rs2", 0), "1003"),
         ("event", "pods", "MODIFIED", crashing("p2", "rs2", 1), "1004"))
    assert (sink.records[-1].entity.workload, sink.records[-1].entity.owner) == ("Deployment/cart", "search")


# ---------------------------------------------------------------- a checkpoint ahead of the cluster


def test_a_checkpoint_ahead_of_the_cluster_is_relisted_not_watched_blind(tmp_path, caplog):
    """etcd restored from a snapshot, or a cluster rebuilt under the same --cluster name: a watch from the
    checkpoint's resourceVersion would wait for ever, with no 410, and the heartbeat re-commit it."""
    with FakeApiServer(bookmark_interval=0.05) as srv:
        srv.load("events", [event("old", 2)])
        ahead = str(srv.rv + 1_000_000)
        restored = {"rv": {"events": ahead}, "event": {}, "node": {}, "pod": {}}
        sink = MemSink()
        c = Collector(Api(api_client(str(srv.kubeconfig(tmp_path / "kc")))), sink,
                      Options(cluster="c1", streams=("events",), commit_interval=0.05, watch_timeout=2,
                              backoff_base=0.05, backoff_max=0.2), restored)
        stop = threading.Event()
        t = threading.Thread(target=c.run, args=(stop,), daemon=True)
        with caplog.at_level(logging.WARNING, "kubesight.collect.kubernetes"):
            t.start()
            try:
                rv = srv.put("events", event("new", 1))
                deadline = time.monotonic() + 10
                while not counts(sink, "new") and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                stop.set()
                t.join(10)
    assert counts(sink, "new") == [1] and counts(sink, "old") == [1, 2]  # not a baseline: the restore is a gap
    assert int(c.rv["events"]) >= rv
    assert f"not resuming from the checkpointed resourceVersion {ahead}: it is ahead of the cluster" in caplog.text


# ---------------------------------------------------------------- the owners topic


def test_each_pod_s_team_workload_and_controller_go_to_the_owners_topic_once_and_a_deletion_tombstones_it():
    """What the workers join onto alerts from scraped series (streams.owners): written when a pod is first listed,
    not again while nothing of it changes (a restart from the checkpoint neither: what was written is checkpointed),
    a tombstone when it goes; the namespace's team beside it."""
    from core.records import owner_record

    c, sink = collector(OWNERS)
    bare = {"metadata": {"name": "debug", "namespace": "shop", "uid": "p2"}, "spec": {}, "status": {}}
    feed(c, ("sync", "pods", [POD, bare], "1000"))
    assert sink.records == []  # no state change to report: only the owners were written
    assert sink.owners == {
        "c1/shop/Pod/cart-7d9f-x": owner_record("payments", "Deployment/cart", "ReplicaSet/cart-7d9f"),
        "c1/shop/Pod/debug": owner_record("web"),  # no controller: the namespace's team
        "c1/shop/Deployment/cart": owner_record("payments", "Deployment/cart"),  # its own label: kept while it has no pod
        "c1/shop": owner_record("web")}
    written = c.stats.owners
    busy = copy.deepcopy(POD)
    busy["metadata"]["labels"]["extra"] = "1"  # an update that reports nothing
    feed(c, ("event", "pods", "MODIFIED", busy, "1001"))
    restarted, sink2 = collector(OWNERS, restored=sink.restored("c1"))
    feed(restarted, ("sync", "pods", [busy, bare], "1002"))
    assert (c.stats.owners, sink2.owners, restarted.stats.owners) == (written, {}, 0)
    feed(restarted, ("event", "pods", "DELETED", busy, "1003"))  # known from the checkpoint: tombstoned
    feed(c, ("sync", "pods", [busy], "1004"))  # the first run's re-list: debug was deleted meanwhile
    assert sink2.owners == {"c1/shop/Pod/cart-7d9f-x": None}
    assert sink.owners["c1/shop/Pod/debug"] is None and sink.owners["c1/shop/Pod/cart-7d9f-x"] is not None


def test_the_first_start_of_this_version_writes_the_pods_an_earlier_one_checkpointed():
    """An upgrade: the earlier version's checkpoint has every pod, unchanged at the first list, and no owners part;
    each pod is written once all the same (they were never written), then not again."""
    c, sink = collector(OWNERS)
    feed(c, ("sync", "pods", [POD], "1000"))
    old = {part: table for part, table in sink.restored("c1").items() if not part.startswith("owner")}
    upgraded, sink2 = collector(OWNERS, restored=old)
    feed(upgraded, ("sync", "pods", [POD], "1001"))
    assert set(sink2.owners) == {"c1/shop/Pod/cart-7d9f-x", "c1/shop", "c1/shop/Deployment/cart"}
    again, sink3 = collector(OWNERS, restored=sink2.restored("c1"))
    feed(again, ("sync", "pods", [POD], "1002"))
    assert sink3.owners == {}


def test_a_statefulset_pod_re_created_unseen_keeps_its_record_and_its_predecessor_s_tombstone_is_not_written():
    """db-0 replaced by a new db-0 (another uid) while nobody watched (a restart, or a re-list after 410): the list
    writes the new one's record, then finds the old uid gone; its tombstone, under the same key, erased the live
    pod's team for good (compaction keeps the last)."""
    from core.records import owner_record

    objs = {("StatefulSet", "shop", "db"): {"metadata": {"labels": {"team": "dba"}}}, **OWNERS}

    def db0(uid):
        return {"metadata": {"name": "db-0", "namespace": "shop", "uid": uid,
                             "ownerReferences": [{"kind": "StatefulSet", "name": "db", "controller": True}]},
                "spec": {"nodeName": "node-1"}, "status": {}}

    c, sink = collector(objs)
    feed(c, ("sync", "pods", [db0("a")], "1000"))
    feed(c, ("sync", "pods", [db0("b")], "2000"))  # a re-list after a gap
    want = owner_record("dba", "StatefulSet/db", "StatefulSet/db")
    assert sink.owners["c1/shop/Pod/db-0"] == want
    restarted, sink2 = collector(objs, restored=sink.restored("c1"))
    feed(restarted, ("sync", "pods", [db0("c")], "3000"))  # and across a restart
    assert sink2.owners == {"c1/shop/Pod/db-0": want}
    feed(restarted, ("event", "pods", "DELETED", db0("c"), "3001"))  # its own deletion still tombstones it
    assert sink2.owners == {"c1/shop/Pod/db-0": None}


def test_a_deleted_namespace_s_record_is_tombstoned_by_the_hourly_sweep_and_an_empty_one_kept():
    """CI and preview namespaces come and go: their records stayed in the topic and in every worker for ever. A
    namespace without pods whose object is gone is tombstoned at the next sweep; one only empty (a CronJob's between
    runs) keeps its team."""
    from collectors.kubernetes import collector as module

    objs = dict(OWNERS)
    for ns in ("pr-1", "cron"):
        objs[("Namespace", "", ns)] = {"metadata": {"labels": {"team": "ci"}}}
    c, sink = collector(objs)
    pods = [{"metadata": {"name": "app", "namespace": ns, "uid": ns}, "spec": {}, "status": {}} for ns in ("pr-1", "cron")]
    feed(c, ("sync", "pods", pods, "1000"))
    assert {k for k, v in sink.owners.items() if v and "/Pod/" not in k} == {"c1/pr-1", "c1/cron"}
    del objs[("Namespace", "", "pr-1")]
    feed(c, ("event", "pods", "DELETED", pods[0], "1001"), ("event", "pods", "DELETED", pods[1], "1002"))
    assert sink.owners["c1/pr-1"] is not None  # not before the sweep
    c._ns_swept -= module.NS_SWEEP
    feed(c, ("bookmark", "pods", "1003"))
    assert (sink.owners["c1/pr-1"], sink.owners["c1/cron"] is not None, set(c.published_ns)) == (None, True, {"cron"})


def test_a_workload_s_own_team_outlives_its_pods_and_is_written_from_its_events_when_it_never_had_one():
    """KubeDeploymentReplicasMismatch of a Deployment whose pods the quota refuses, a CronJob's alert between runs: no
    live pod says the team, and the alert went to the namespace's. The workload's own record says it; only workloads
    whose own labels name a team get one (the namespace's record covers the rest), and a restart writes none again."""
    from core.records import owner_record

    objs = dict(OWNERS)
    objs[("ReplicaSet", "shop", "api-55aa")] = {"metadata": {"ownerReferences": [
        {"kind": "Deployment", "name": "api", "controller": True}]}}
    objs[("Deployment", "shop", "api")] = {"metadata": {"annotations": {"team": "search"}}}
    objs[("ReplicaSet", "shop", "plain-66bb")] = {"metadata": {"ownerReferences": [
        {"kind": "Deployment", "name": "plain", "controller": True}]}}
    objs[("Deployment", "shop", "plain")] = {"metadata": {"labels": {"app": "plain"}}}  # no team of its own
    c, sink = collector(objs)
    refused = {"kind": "ReplicaSet", "namespace": "shop", "name": "api-55aa", "uid": "rs1"}
    plain = {"kind": "ReplicaSet", "namespace": "shop", "name": "plain-66bb", "uid": "rs2"}
    feed(c, ("sync", "events", [], "999"), ("sync", "pods", [POD], "1000"),
         ("event", "events", "ADDED", event("e1", reg=refused, reason="FailedCreate"), "1001"),
         ("event", "events", "ADDED", event("e2", reg=plain, reason="FailedCreate"), "1002"))
    assert {k: v for k, v in sink.owners.items() if "/Pod/" not in k and k != "c1/shop"} == {
        "c1/shop/Deployment/cart": owner_record("payments", "Deployment/cart"), "c1/shop/Deployment/api": owner_record("search", "Deployment/api")}
    other, sink3 = collector(objs)  # no pod listed at all: the Event writes its namespace's team too
    feed(other, ("sync", "events", [], "999"),
         ("event", "events", "ADDED", event("e1", reg=refused, reason="FailedCreate"), "1001"))
    assert sink3.owners == {"c1/shop/Deployment/api": owner_record("search", "Deployment/api"),
                            "c1/shop": owner_record("web")}
    feed(c, ("event", "pods", "DELETED", POD, "1003"))  # scaled to zero
    assert sink.owners["c1/shop/Deployment/cart"] == owner_record("payments", "Deployment/cart")
    restarted, sink2 = collector(objs, restored=sink.restored("c1"))
    feed(restarted, ("sync", "pods", [POD], "1004"),
         ("event", "events", "MODIFIED", event("e1", 2, reg=refused, reason="FailedCreate"), "1005"))
    assert [k for k in sink2.owners if "/Pod/" not in k] == []  # checkpointed: nothing written again
    objs[("Deployment", "shop", "api")] = {"metadata": {}}  # its annotation removed
    restarted.owners._cache.clear()
    feed(restarted, ("event", "events", "MODIFIED", event("e1", 3, reg=refused, reason="FailedCreate"), "1006"))
    assert sink2.owners["c1/shop/Deployment/api"] is None and "shop/Deployment/api" not in restarted.published_wl


def test_the_hourly_sweep_tombstones_a_deleted_pod_less_workload_and_rewrites_a_relabelled_one():
    """A workload with no pod is read again at the sweep: deleted, its record is tombstoned; relabelled, rewritten; an
    unreadable one keeps its record; one whose pods live is not read (its pods rewrite it as they are resolved)."""
    from collectors.kubernetes import collector as module
    from core.records import owner_record

    objs = dict(OWNERS)
    for name, team in (("etl", "data"), ("old", "data"), ("flaky", "data")):
        objs[("CronJob", "shop", name)] = {"metadata": {"labels": {"team": team}}}
    c, sink = collector(objs)
    job = {"kind": "CronJob", "namespace": "shop", "uid": "cj"}
    feed(c, ("sync", "events", [], "999"), ("sync", "pods", [POD], "1000"),
         *[("event", "events", "ADDED", event(f"e-{n}", reg={**job, "name": n}, reason="SawCompletedJob"), str(1001 + i))
           for i, n in enumerate(("etl", "old", "flaky"))])
    assert {k for k, v in sink.owners.items() if v and "/CronJob/" in k} == {
        "c1/shop/CronJob/etl", "c1/shop/CronJob/old", "c1/shop/CronJob/flaky"}
    reads = []
    real = c.api.read

    def read(kind, ns, name):
        reads.append((kind, name))
        if name == "flaky":
            raise OSError("connection refused")
        return real(kind, ns, name)

    c.api.read = read
    del objs[("CronJob", "shop", "old")]
    objs[("CronJob", "shop", "etl")] = {"metadata": {"labels": {"team": "analytics"}}}
    c.owners._cache.clear()
    c._ns_swept -= module.NS_SWEEP
    feed(c, ("bookmark", "pods", "1010"))
    assert sink.owners["c1/shop/CronJob/old"] is None
    assert sink.owners["c1/shop/CronJob/etl"] == owner_record("analytics", "CronJob/etl")
    assert sink.owners["c1/shop/CronJob/flaky"] == owner_record("data", "CronJob/flaky")
    assert ("Deployment", "cart") not in reads and ("CronJob", "flaky") in reads
    assert set(c.published_wl) == {"shop/Deployment/cart", "shop/CronJob/etl", "shop/CronJob/flaky"}


def test_a_team_relabelled_on_a_steady_pod_s_workload_reaches_the_owners_topic_at_the_hourly_refresh(monkeypatch):
    """A pod that never changes was resolved once, at its start: a Deployment relabelled to another team kept paging
    the old one for as long as the pod lived. Each live pod is resolved again OWNER_REFRESH after its last time, by
    an idle collector too, a few API reads a step."""
    from collectors.kubernetes import collector as module
    from core.records import owner_record

    objs = dict(OWNERS)
    pods = []
    for i in range(3):
        objs[("ReplicaSet", "shop", f"app{i}-7d9f")] = {"metadata": {"ownerReferences": [
            {"kind": "Deployment", "name": f"app{i}", "controller": True}]}}
        objs[("Deployment", "shop", f"app{i}")] = {"metadata": {"labels": {"team": "payments"}}}
        pod = copy.deepcopy(POD)
        pod["metadata"].update(name=f"app{i}-7d9f-x", uid=f"u{i}")
        pod["metadata"]["ownerReferences"][0]["name"] = f"app{i}-7d9f"
        pods.append(pod)
    c, sink = collector(objs)
    feed(c, ("sync", "pods", pods, "1000"))
    assert {sink.owners[f"c1/shop/Pod/app{i}-7d9f-x"] for i in range(3)} == {
        owner_record("payments", f"Deployment/app{i}", f"ReplicaSet/app{i}-7d9f") for i in range(3)}
    for i in range(3):
        objs[("Deployment", "shop", f"app{i}")] = {"metadata": {"labels": {"team": "checkout"}}}
    c.owners._cache.clear()  # the owners cache's ttl past too
    feed(c)  # not due yet: nothing read, nothing written
    assert c.owners.fetches == 7 and sink.owners["c1/shop/Deployment/app0"] == owner_record("payments", "Deployment/app0")
    monkeypatch.setattr(module, "REFRESH_READS", 2)
    for uid in c.resolved:
        c.resolved[uid] -= module.OWNER_REFRESH
    feed(c)  # idle: no watch item, the refresh alone
    assert sink.owners["c1/shop/Pod/app0-7d9f-x"] == owner_record("checkout", "Deployment/app0", "ReplicaSet/app0-7d9f")
    assert sink.owners["c1/shop/Deployment/app0"] == owner_record("checkout", "Deployment/app0")
    assert sink.owners["c1/shop/Deployment/app2"] == owner_record("payments", "Deployment/app2")  # the reads' bound: at a later step
    deadline = time.monotonic() + 5
    while sink.owners["c1/shop/Deployment/app2"] != owner_record("checkout", "Deployment/app2") and time.monotonic() < deadline:
        feed(c)
    assert [sink.owners[f"c1/shop/Deployment/app{i}"] for i in range(3)] == [
        owner_record("checkout", f"Deployment/app{i}") for i in range(3)]
    assert all(time.monotonic() - at < 60 for at in c.resolved.values())  # each due again in an hour


def test_a_failed_api_read_never_erases_a_team_from_the_owners_topic(monkeypatch):
    """A brownout of the API server: a read that fails is a team unknown, not "no team". The hourly refresh, an
    Event and the sweep wrote "" over the pod's and the namespace's teams and tombstoned the workload's own record,
    so alerts went to the fallback receiver for an hour. Now nothing is written from a failed read, and the pod is
    resolved again once the reads work."""
    from collectors.kubernetes import collector as module
    from core.records import owner_record

    objs = dict(OWNERS)
    down = [False]

    class Timeout(Exception):
        status = 504

    c, sink = collector(objs)
    real = c.owners.fetch

    def fetch(kind, ns, name):
        if down[0]:
            raise Timeout("the server was unable to return a response in the time allotted")
        return real(kind, ns, name)

    c.owners.fetch = fetch
    feed(c, ("sync", "events", [], "999"), ("sync", "pods", [POD], "1000"))
    before = dict(sink.owners)
    assert before["c1/shop/Deployment/cart"] == owner_record("payments", "Deployment/cart")
    assert before["c1/shop"] == owner_record("web")
    down[0] = True
    c.owners._cache.clear()
    for uid in c.resolved:
        c.resolved[uid] -= module.OWNER_REFRESH
    rs = {"kind": "ReplicaSet", "namespace": "shop", "name": "cart-7d9f", "uid": "rs1"}
    feed(c, ("event", "events", "ADDED", event("e1", reg=rs, reason="FailedCreate"), "1001"))  # refresh + an Event
    c._ns_swept -= module.NS_SWEEP
    feed(c, ("bookmark", "pods", "1002"))  # the sweep (the workload has a live pod: not read) while down
    assert sink.owners == before
    assert list(c.unsure) == ["p1"]
    down[0] = False
    objs[("Deployment", "shop", "cart")] = {"metadata": {"labels": {"team": "checkout"}}}
    c.owners._cache.clear()
    c.unsure["p1"] -= module.UNSURE_RETRY
    feed(c)  # idle: the pod whose read failed is resolved again
    assert sink.owners["c1/shop/Pod/cart-7d9f-x"] == owner_record("checkout", "Deployment/cart", "ReplicaSet/cart-7d9f")
    assert c.unsure == {}
