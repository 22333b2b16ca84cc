"""The remediator's safety claims on a fake API server (no cluster): drains that PodDisruptionBudgets block, limits
that count every node changed, the kill switch for pending drains, condition writes that fail, taints and the last
node of a pool, stale alerts. The real control plane covers the happy paths (tests/cluster/test_remediation.py)."""

from __future__ import annotations

import copy

from core.records import Alert
from core.settings import Settings
from rules.load import DEFAULT_PACK, load_packs
from streams.remediation import Remediator

RULES = load_packs([DEFAULT_PACK])


class FakeKube:
    """Nodes in one pool, Ready; records every write; evictions answer ``evict_code`` (or raise ``evict_error``)."""

    def __init__(self, names, pods_each: int = 0):
        self.n = {nm: {"metadata": {"name": nm, "resourceVersion": "1", "labels": {"kubesight.io/pool": "p1"},
                                    "annotations": {}}, "spec": {},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"bootID": "b1"}}}
                  for nm in names}
        self.pods = {nm: [{"metadata": {"namespace": "a", "name": f"{nm}-{i}", "ownerReferences": [{"kind": "ReplicaSet", "controller": True}]},
                           "status": {"phase": "Running"}} for i in range(pods_each)] for nm in names}
        self.writes: list[tuple] = []
        self.evict_code, self.evict_error, self.apply_error = 201, None, None

    def node(self, name):
        return copy.deepcopy(self.n.get(name))

    def nodes(self):
        return copy.deepcopy(list(self.n.values()))

    def patch_node(self, name, body):
        self.writes.append(("patch", name))
        n = self.n[name]
        md = body.get("metadata", {})
        n["metadata"]["annotations"].update(md.get("annotations", {}))
        n["metadata"]["labels"].update(md.get("labels", {}))
        n["spec"].update(body.get("spec", {}))
        return copy.deepcopy(n)

    def apply_conditions(self, name, conds):
        if self.apply_error is not None:
            raise self.apply_error
        self.writes.append(("conditions", name, tuple((c["type"], c["status"]) for c in conds)))
        return copy.deepcopy(self.n[name])

    def event(self, body):
        self.writes.append(("event", body["reason"]))
        return {}

    def pods_on(self, node):
        return list(self.pods.get(node, ()))

    def evict(self, ns, name):
        self.writes.append(("evict", ns, name))
        if self.evict_error is not None:
            raise self.evict_error
        return self.evict_code


def settings(**kw) -> Settings:
    s = Settings()
    return s.model_copy(update={"remediation": s.remediation.model_copy(update={"dry_run": False, **kw})})


def alert(name: str, node: str, t: float, status: str = "firing") -> Alert:
    rule = next(r for r in RULES.rules if r.alert == name)
    return Alert({"alertname": name, "node": node, "severity": "critical"}, {"summary": f"{name} on {node}"}, status,
                 t, endsAt=t + 1 if status == "resolved" else None, source=rule.origin)


def actions(trail) -> list[tuple]:
    return [(r["node"], r["action"]["type"], r["outcome"]) for r in trail if r["kind"] == "action"]


def cordoned(kube) -> list[str]:
    return sorted(n for n, v in kube.n.items() if v["spec"].get("unschedulable"))


def test_a_blocked_drain_is_blocked_and_every_node_changed_counts_toward_the_limits():
    """The trail keeps an action's durations as text ("1h"): a drain that a PodDisruptionBudget blocked compared the
    clock with "1h" (TypeError), was recorded failed, and a failed drain did not count toward max_nodes although its
    cordon was made: six alerts cordoned six nodes."""
    clock = [1000.0]
    kube = FakeKube([f"n{i}" for i in range(8)], pods_each=1)
    kube.evict_code = 429
    trail: list[dict] = []
    r = Remediator(settings(max_nodes=3, max_percent=100), RULES, kube, trail.append, now=lambda: clock[0])
    for i in range(6):
        r.handle(alert("NodeFrequentKernelOops", f"n{i}", clock[0]))
    assert actions(trail) == [(f"n{i}", "drain", "blocked") for i in range(3)] + [
        (f"n{i}", "drain", "refused") for i in range(3, 6)]
    assert cordoned(kube) == ["n0", "n1", "n2"]
    # evictions that raise (a 500) instead: the cordons still count, the fourth node is refused
    kube2 = FakeKube([f"m{i}" for i in range(8)], pods_each=1)
    kube2.evict_error = RuntimeError("500 Internal Server Error")
    trail2: list[dict] = []
    r2 = Remediator(settings(max_nodes=3, max_percent=100), RULES, kube2, trail2.append, now=lambda: clock[0])
    for i in range(6):
        r2.handle(alert("NodeFrequentKernelOops", f"m{i}", clock[0]))
    assert [o for _, _, o in actions(trail2)] == ["failed"] * 3 + ["refused"] * 3 and cordoned(kube2) == ["m0", "m1", "m2"]


def test_a_pending_drain_evicts_nothing_once_the_kill_switch_is_on_even_after_a_restart():
    clock = [1000.0]
    kube = FakeKube(["n0", "n1", "n2"], pods_each=1)
    kube.evict_code = 429
    trail: list[dict] = []
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0])
    r.handle(alert("NodeFrequentKernelOops", "n0", clock[0]))
    assert actions(trail)[-1] == ("n0", "drain", "blocked")
    for cfg in (settings(kill_switch=True), settings(dry_run=True)):  # a restart with the switch on, or dry-run
        evictions = sum(w[0] == "evict" for w in kube.writes)
        clock[0] += 120
        again = Remediator(cfg, RULES, kube, trail.append, history=list(trail), now=lambda: clock[0])
        again.tick()
        assert sum(w[0] == "evict" for w in kube.writes) == evictions  # nothing evicted
        assert trail[-1]["outcome"] == "refused" and "pending drain waits" in trail[-1]["reason"]
    clock[0] += 120
    Remediator(settings(max_percent=100), RULES, kube, trail.append, history=list(trail), now=lambda: clock[0]).tick()
    assert kube.writes[-1][0] == "evict"  # switched off again: the drain goes on


def test_a_condition_write_that_failed_is_retried_and_not_taken_as_written():
    clock = [1000.0]
    kube = FakeKube(["n0"])
    kube.apply_error = RuntimeError("503 Service Unavailable")
    trail: list[dict] = []
    r = Remediator(settings(), RULES, kube, trail.append, now=lambda: clock[0])
    r.handle(alert("NodeKernelDeadlock", "n0", clock[0]))
    [cond] = [x for x in trail if x["kind"] == "condition"]
    assert cond["outcome"] == "failed"
    assert "n0" not in r.conds  # not taken as written
    kube.apply_error = None
    r.tick()  # retried
    assert kube.writes[-1] == ("conditions", "n0", (("KernelDeadlock", "True"),))
    assert r.conds["n0"]["KernelDeadlock"]["status"] == "True"


def test_a_noschedule_taint_never_takes_the_last_node_that_takes_pods(tmp_path):
    pack = tmp_path / "taint.yaml"
    pack.write_text("""\
apiVersion: kubesight.io/v1
kind: RulePack
metadata: {name: custom, version: "1.0.0"}
rules:
  - alert: GPUDegraded
    match: {source: kernel, reason: Xid}
    condition: {type: event_count, count: 1, window: 30m}
    severity: critical
    actions:
      - {type: taint, key: example.com/gpu-bad, value: "true", effect: NoSchedule}
""")
    rules = load_packs([pack])
    kube, trail = FakeKube(["g1", "g2"]), []
    r = Remediator(settings(max_percent=100), rules, kube, trail.append, now=lambda: 1000.0)
    for n in ("g1", "g2"):
        r.handle(Alert({"alertname": "GPUDegraded", "node": n}, {}, "firing", 1000.0, source=rules.rules[0].origin))
    assert [(n, o) for n, _, o in actions(trail)] == [("g1", "done"), ("g2", "refused")]
    assert "last Ready schedulable node" in trail[-1]["reason"] and not kube.n["g2"]["spec"].get("taints")


def test_an_alert_read_long_after_it_was_written_takes_no_action():
    """A replay of the alerts topic (or a backlog after downtime) acted on episodes refused then, and resolved since."""
    kube, trail = FakeKube(["n0", "n1"]), []
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: 10_000.0)
    r.handle(alert("NodeFrequentTaskHung", "n0", 1000.0), at=1000.0)  # its record is 9000 s old
    assert actions(trail) == [("n0", "cordon", "refused")] and "stale" in trail[-1]["reason"]
    r.handle(alert("NodeFrequentTaskHung", "n1", 9_950.0), at=9_950.0)
    assert actions(trail)[-1] == ("n1", "cordon", "done") and cordoned(kube) == ["n1"]


def test_a_resolved_alert_abandons_its_pending_drain_and_a_shared_condition_says_a_holder_still_firing():
    """A redeploy canceled while a PodDisruptionBudget blocks its drain: the drain went on evicting after the
    cancellation (an audit on the real control plane). And a node with a reboot and a redeploy scheduled, the
    redeploy canceled: the shared CloudMaintenanceScheduled condition kept the redeploy's reason and summary."""
    clock = [1000.0]
    kube = FakeKube(["n0", "n1", "n2"], pods_each=1)
    kube.evict_code = 429
    trail: list[dict] = []
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0])
    reboot, redeploy = alert("CloudInstanceRebootScheduled", "n0", 900.0), alert("CloudInstanceRedeployScheduled",
                                                                                  "n0", clock[0])
    r.handle(reboot)
    r.handle(redeploy)
    assert actions(trail)[-1] == ("n0", "drain", "blocked")
    assert r.conds["n0"]["CloudMaintenanceScheduled"]["reason"] == "InstanceRedeployScheduled"
    r.handle(alert("CloudInstanceRedeployScheduled", "n0", clock[0], status="resolved"))
    assert actions(trail)[-1] == ("n0", "drain", "abandoned")
    cond = r.conds["n0"]["CloudMaintenanceScheduled"]
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "True", "InstanceRebootScheduled", "CloudInstanceRebootScheduled on n0")
    kube.evict_code = 201  # the budget allows it now: nothing is evicted for the canceled redeploy
    evictions = sum(w[0] == "evict" for w in kube.writes)
    clock[0] += 120
    r.tick()
    again = Remediator(settings(max_percent=100), RULES, kube, trail.append, history=list(trail), now=lambda: clock[0])
    again.tick()  # and not after a restart either (the trail says it was abandoned)
    assert sum(w[0] == "evict" for w in kube.writes) == evictions


def test_after_a_restart_a_shared_condition_still_says_a_holder_still_firing():
    clock = [1000.0]
    kube = FakeKube(["n0", "n1", "n2"])
    trail: list[dict] = []
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0])
    r.handle(alert("CloudInstanceRebootScheduled", "n0", 900.0))
    r.handle(alert("CloudInstanceRedeployScheduled", "n0", clock[0]))
    again = Remediator(settings(max_percent=100), RULES, kube, trail.append, history=list(trail), now=lambda: clock[0])
    again.handle(alert("CloudInstanceRedeployScheduled", "n0", clock[0], status="resolved"))
    cond = again.conds["n0"]["CloudMaintenanceScheduled"]
    assert (cond["status"], cond["reason"]) == ("True", "InstanceRebootScheduled")
