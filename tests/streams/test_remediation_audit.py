"""Findings of an audit of ``kubesight remediate`` on a fake API server (the FakeKube of test_remediation_safety):
what a drain evicts, alerts resolved before they were read, limits on what is held cordoned at once, drains that
failed or crashed half-way, pending drains the API server keeps failing, and nodes re-created under the same name."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from rules.schema import Drain
from streams.remediation import Remediator
from tests.streams.test_remediation_safety import RULES, FakeKube, actions, alert, cordoned, settings

T = 1_000_000.0


def _pods() -> list[dict]:
    def pod(name, owner=None, volumes=(), mirror=False):
        md = {"namespace": "a", "name": name, "annotations": {"kubernetes.io/config.mirror": "x"} if mirror else {}}
        if owner:
            md["ownerReferences"] = [{"kind": owner, "controller": True}]
        return {"metadata": md, "spec": {"volumes": list(volumes)}, "status": {"phase": "Running"}}

    return [pod("web", "ReplicaSet"), pod("bare"), pod("cache", "StatefulSet", [{"name": "s", "emptyDir": {}}]),
            pod("agent", "DaemonSet", [{"name": "s", "emptyDir": {}}]), pod("static", mirror=True),
            {"metadata": {"namespace": "a", "name": "orphaned", "ownerReferences": [{"kind": "ReplicaSet"}]},
             "spec": {}, "status": {"phase": "Running"}}]  # an owner that is not its controller re-creates nothing


def test_a_drain_keeps_pods_nothing_recreates_and_emptydir_data_unless_opted_in():
    """The drain evicted a bare pod (a hand-started migration: gone for good) and a pod's emptyDir data, where
    ``kubectl drain`` needs --force and --delete-emptydir-data."""
    kube = FakeKube(["n0", "n1", "n2"])
    kube.pods["n0"] = _pods()
    trail: list[dict] = []
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: T)
    r.handle(alert("NodeFrequentKernelOops", "n0", T), at=T)
    assert [w[2] for w in kube.writes if w[0] == "evict"] == ["web"]  # DaemonSet and mirror pods stay, as before
    assert actions(trail) == [("n0", "drain", "blocked")]
    rec = trail[-1]
    assert sorted(rec["kept"]) == ["a/bare", "a/cache", "a/orphaned"] and sorted(rec["blocked"]) == sorted(rec["kept"])
    assert "no controller" in rec["kept"]["a/bare"] and "emptyDir" in rec["kept"]["a/cache"]
    assert "not evicted: a/bare" in rec["reason"]
    # opted in: every pod but the DaemonSet's and the mirror pod is evicted, the drain is done
    opted = Drain.model_validate({"type": "drain", "evict_unreplicated": True, "delete_emptydir_data": True})
    rule = next(x for x in RULES.rules if x.alert == "NodeFrequentKernelOops")
    rules = SimpleNamespace(rules=[dataclasses.replace(rule, actions=[opted])])
    kube2 = FakeKube(["n0", "n1", "n2"])
    kube2.pods["n0"] = _pods()
    trail2: list[dict] = []
    r2 = Remediator(settings(max_percent=100), rules, kube2, trail2.append, now=lambda: T)
    r2.handle(alert("NodeFrequentKernelOops", "n0", T), at=T)
    assert sorted(w[2] for w in kube2.writes if w[0] == "evict") == ["bare", "cache", "orphaned", "web"]
    assert actions(trail2) == [("n0", "drain", "done")]


def test_an_alert_resolved_before_it_was_read_is_not_acted_on_and_an_old_episode_posts_no_event():
    """Both records of an episode over 9 min ago in one poll (a restart, a backlog): the node was cordoned now, and a
    6-day-old episode of the backlog posted a Warning Event now."""
    clock = [T + 600]
    kube = FakeKube(["n0", "n1", "n2", "n3"])
    trail: list[dict] = []
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0])
    r.handle_batch([(alert("NodeKernelDeadlock", "n0", T), T),
                    (alert("NodeKernelDeadlock", "n0", T, status="resolved"), T + 60)])
    assert actions(trail) == [] and cordoned(kube) == [] and r.conds.get("n0", {}) == {}
    # a firing record whose endsAt passed is the episode's end (its resolution is in a later poll, or lost)
    late = alert("NodeKernelDeadlock", "n1", T)
    late.endsAt = T + 300
    r.handle_batch([(late, T + 240)])
    assert actions(trail) == [] and cordoned(kube) == []
    # an episode of the backlog older than max_alert_age: no Event, the refusal said once
    old = T - 6 * 86400
    for _ in range(2):
        r.handle_batch([(alert("NodeKernelOops", "n2", old), old)])
    assert not [w for w in kube.writes if w[0] == "event"]
    [ev] = [x for x in trail if x["kind"] == "event"]
    assert ev["outcome"] == "refused" and "stale" in ev["reason"]
    # a firing record on its own, fresh, still acts
    r.handle_batch([(alert("NodeKernelDeadlock", "n3", clock[0] - 10), clock[0] - 10)])
    assert actions(trail) == [("n3", "cordon", "done")]


def test_a_slow_storm_never_takes_more_than_the_cap_of_nodes_out_at_once():
    """max_nodes / max_percent count actions within a window: three alerts an hour cordoned 19 of 20 nodes in 7 h."""
    clock = [T]
    kube = FakeKube([f"n{i:02d}" for i in range(20)])
    kube.n["n19"]["spec"]["unschedulable"] = True  # cordoned by a person: it counts too
    trail: list[dict] = []
    r = Remediator(settings(), RULES, kube, trail.append, now=lambda: clock[0])  # defaults: 3 nodes, 25 % an hour
    for i in range(12):
        r.handle(alert("NodeKernelDeadlock", f"n{i:02d}", clock[0]), at=clock[0])
        clock[0] += 1201  # three an hour: the per-window limits never refuse
    assert len(cordoned(kube)) == 5  # 25 % of 20
    refused = [x for x in trail if x["kind"] == "action" and x["outcome"] == "refused"]
    assert len(refused) == 8 and all("max_unschedulable_percent" in x["reason"] for x in refused)
    # the node already cordoned may still be tainted (no one more out); and a cap set apart from max_percent
    r2 = Remediator(settings(max_percent=100, max_unschedulable_percent=50), RULES, FakeKube(["a", "b", "c", "d"]),
                    trail.append, now=lambda: clock[0])
    for n in ("a", "b", "c"):
        r2.handle(alert("NodeKernelDeadlock", n, clock[0]), at=clock[0])
    assert cordoned(r2.kube) == ["a", "b"]
    r2.handle(alert("GPUXidFatal", "a", clock[0]), at=clock[0])  # cordon (already) + taint on a node already out
    assert actions(trail)[-2:] == [("a", "cordon", "done"), ("a", "taint", "done")]


def test_a_drain_that_failed_or_crashed_half_way_is_resumed_not_taken_as_done():
    """The drain's key went into the node's annotation with its cordon, before any eviction: after evictions that
    failed, or a crash that lost the 'blocked' record, the next attempt found it and recorded the drain recovered."""
    from streams.remediation import _done_map

    clock = [T]
    drain = alert("NodeFrequentKernelOops", "n0", T)
    # A: the evictions answer 500; the alert again (a replay) once the API server is healthy
    kube = FakeKube(["n0", "n1", "n2"], pods_each=2)
    kube.evict_error = RuntimeError("(500) Internal Server Error")
    trail: list[dict] = []
    Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0]).handle(drain, at=T)
    key = trail[-1]["key"]
    assert actions(trail) == [("n0", "drain", "failed")] and list(_done_map(kube.n["n0"])) == [key + "|cordoned"]
    kube.evict_error = None
    clock[0] += 60
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, history=list(trail), now=lambda: clock[0])
    r.handle(drain, at=clock[0] - 5)
    assert actions(trail)[-1] == ("n0", "drain", "done") and "resumed" in trail[-1]["reason"]
    assert [w[2] for w in kube.writes if w[0] == "evict"][-2:] == ["n0-0", "n0-1"]
    assert trail[-1]["key"] in _done_map(kube.n["n0"])  # noted done only now: a lost 'done' record is recovered
    # B: blocked by a PodDisruptionBudget, the 'blocked' record lost in a crash: the redelivered alert resumes it
    kube = FakeKube(["n0", "n1", "n2"], pods_each=2)
    kube.evict_code = 429
    trail = []
    Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0]).handle(drain, at=clock[0])
    assert trail.pop()["outcome"] == "blocked"
    kube.evict_code = 201
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, history=list(trail), now=lambda: clock[0])
    r.handle(drain, at=clock[0])
    assert actions(trail) == [("n0", "drain", "done")] and sum(w[0] == "evict" for w in kube.writes) == 4
    # C: a person uncordoned the node after the failed drain: the replay evicts nothing
    kube = FakeKube(["n0", "n1", "n2"], pods_each=1)
    kube.evict_error = RuntimeError("(500) Internal Server Error")
    trail = []
    Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0]).handle(drain, at=clock[0])
    kube.evict_error, kube.n["n0"]["spec"]["unschedulable"] = None, False
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, history=list(trail), now=lambda: clock[0])
    r.handle(drain, at=clock[0])
    assert actions(trail)[-1] == ("n0", "drain", "respected") and sum(w[0] == "evict" for w in kube.writes) == 1


def test_a_pending_drain_the_api_server_keeps_failing_is_paced_said_and_ends_at_its_timeout():
    """A blocked drain whose retries met a 500: tried every 5 s tick (2155 times in 3 h), never timed out, no trail."""
    from streams.remediation import DRAIN_ERROR_REPEAT

    clock = [T]
    kube = FakeKube(["n0", "n1", "n2"], pods_each=1)
    kube.evict_code = 429
    trail: list[dict] = []
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0])
    r.handle(alert("NodeFrequentKernelOops", "n0", T), at=T)
    calls = [0]

    def failing(node):
        calls[0] += 1
        raise RuntimeError("(500) Internal Server Error")

    kube.pods_on = failing
    for _ in range(3 * 3600 // 5):  # three hours of 5 s ticks; the drain's retry is 30s, its timeout 1h
        clock[0] += 5
        r.tick()
    assert 100 <= calls[0] <= 121  # every 30 s for an hour, then never again
    said = [x for x in trail if x.get("outcome") == "retry-failed"]
    assert 1 < len(said) <= 3600 / DRAIN_ERROR_REPEAT + 1 and "500" in said[0]["reason"]
    assert actions(trail)[-1] == ("n0", "drain", "failed") and "gave up after 3600s" in trail[-1]["reason"]
    assert "500" in trail[-1]["reason"] and not r.drains and not r.drain_tried


def test_a_node_recreated_under_the_same_name_after_the_alert_started_is_not_acted_on():
    """The cloud replaced gpu-7 two minutes after its Xid (new uid): the new, healthy node was cordoned and tainted."""
    from core.records import format_time

    kube = FakeKube(["gpu-7", "gpu-8", "gpu-9"])
    kube.n["gpu-7"]["metadata"].update(uid="uid-new", creationTimestamp=format_time(T + 120))
    kube.n["gpu-8"]["metadata"].update(uid="uid-8", creationTimestamp=format_time(T - 86400))
    trail: list[dict] = []
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: T + 300)
    r.handle(alert("GPUXidFatal", "gpu-7", T), at=T + 200)
    assert [o for _, _, o in actions(trail)] == ["refused", "refused"] and cordoned(kube) == []
    assert all("node re-created" in x["reason"] and x["node_uid"] == "uid-new" for x in trail if x["kind"] == "action")
    r.handle(alert("GPUXidFatal", "gpu-8", T), at=T + 200)  # a node older than the alert: acted on, its uid noted
    assert actions(trail)[-2:] == [("gpu-8", "cordon", "done"), ("gpu-8", "taint", "done")]
    assert trail[-1]["node_uid"] == "uid-8"

