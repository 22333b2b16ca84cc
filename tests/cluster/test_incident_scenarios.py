"""Incidents on the real control plane (issue 15): scripted faults through collector -> Kafka -> worker, with the
routing notifying per incident (``incidents: true``).

* A crash-looping Deployment: one incident, the workload its probable cause, one notification (its team).
* A node with pods of four teams stops heartbeating: one incident with the node as its top cause; the platform
  (the node's receiver) gets the incident, each team one notice: no more notifications than teams.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml

from streams.cli_incidents import latest
from streams.cluster_demo import IMAGE, ROUTING, LiveStack, _namespace, _running
from tests.cluster.conftest import wait_for

TEAMS = ("team-a", "team-b", "team-c", "team-d")


def _routing(tmp_path: Path) -> Path:
    cfg = yaml.safe_load(ROUTING.read_text())  # the live demo's: owners' receivers, short timings, its inhibit rules
    cfg["route"]["incidents"] = True
    names = {r["name"] for r in cfg["receivers"]}
    cfg["receivers"] += [{"name": t, "webhook_configs": [{"url": "http://127.0.0.1:9/hook"}]} for t in TEAMS
                         if t not in names]
    p = tmp_path / "incident-routing.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


def _bodies(stack: LiveStack) -> list[tuple[str, dict]]:
    return [(name, b) for name, bodies in list(stack.receivers.got.items()) for b in list(bodies)]


def _incident_notes(stack: LiveStack, iid: str) -> list[tuple[str, dict]]:
    return [(n, b) for n, b in _bodies(stack) if b.get("groupKey") == f"incident:{iid}"]


def _about(rec: dict, text: str) -> bool:
    return any(text in w for w in rec["blastRadius"]["workloads"]) or text in rec["blastRadius"]["nodes"]


def test_a_crash_loop_and_a_node_of_four_teams_are_one_incident_each_notified_per_incident(
        cluster, kafka_bootstrap, tmp_path):
    with LiveStack(routing=_routing(tmp_path), cluster=cluster, bootstrap=kafka_bootstrap, log_dir=tmp_path,
                   progress=lambda m: None) as stack:
        api = stack.api()
        try:
            _scenarios(stack, api, tmp_path)
        finally:  # the session's cluster is shared: nothing of ours may page a later test's stack
            _clean_up(api, stack.tag)
            api.client.close()


def _clean_up(api, tag: str) -> None:
    from kubernetes import client

    for name in [f"crash-{tag}", *(f"{t}-{tag}" for t in TEAMS)]:
        try:
            api.core.delete_namespace(name, propagation_policy="Background")
        except client.ApiException:
            pass
    for node in (f"kwok-inc-{tag[:4]}", f"kwok-crash-{tag[:4]}"):
        try:
            api.core.delete_node(node)  # its pods are then collected as orphans
        except client.ApiException:
            pass


def _scenarios(stack: LiveStack, api, tmp_path: Path) -> None:
    tag = stack.tag
    log = tmp_path / f"live-worker-{tag}.log"

    def detail():
        return "\n" + log.read_text(errors="replace")[-1500:]

    # (b) a crash-looping Deployment of team-a, on a node of its own (the session's cluster is shared: pods of an
    # earlier test crash-looping on a common node would be the same incident, linked by that node)
    ns = f"crash-{tag}"
    stack.cluster.add_nodes([f"kwok-crash-{tag[:4]}"])
    _namespace(api, ns, "team-a")
    api.apps.create_namespaced_deployment(ns, {
        "metadata": {"name": "ledger-sync"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "ledger-sync"}},
                 "template": {"metadata": {"labels": {"app": "ledger-sync"}},
                              "spec": {"nodeSelector": {"kubernetes.io/hostname": f"kwok-crash-{tag[:4]}"},
                                       "containers": [{"name": "main", "image": IMAGE}]}}}})
    def running():
        names = [p.metadata.name for p in api.core.list_namespaced_pod(ns).items if p.status.phase == "Running"]
        return names if len(names) >= 2 else None

    pods = wait_for("the Deployment's two pods Running", running, 60)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for pod in pods:
        for restarts in (1, 2):
            at = (now + dt.timedelta(seconds=restarts)).isoformat().replace("+00:00", "Z")
            api.core.patch_namespaced_pod_status(pod, ns, {"status": {"containerStatuses": [{
                "name": "main", "image": IMAGE, "ready": False, "started": False, "restartCount": restarts,
                "lastState": {"terminated": {"exitCode": 2, "reason": "Error", "startedAt": at, "finishedAt": at}},
                "state": {"waiting": {"reason": "CrashLoopBackOff",
                                      "message": f"back-off 10s restarting failed container=main pod={pod}"}}}]}})

    def crash_incident():
        recs = [r for r in latest(stack.settings, stack.bootstrap).values() if _about(r, f"{ns}/")
                and not r.get("mergedInto")]
        notes = _incident_notes(stack, recs[0]["id"]) if len(recs) == 1 else []
        return (recs, notes) if notes and len(recs[0]["members"]) >= 2 else None

    recs, notes = wait_for("the crash loop's incident and its notification", crash_incident, 90, 0.5, detail)
    top = recs[0]["candidates"][0]
    assert top["entity"].startswith(f"workload/{ns}/") and "ledger-sync" in top["entity"], recs[0]["candidates"]
    assert [(n, b["commonAnnotations"]["incident_role"]) for n, b in notes] == [("team-a", "cause")]

    # (a) a node with pods of four teams loses its kubelet
    node = f"kwok-inc-{tag[:4]}"
    stack.cluster.add_nodes([node])
    spaces = {}
    for team in TEAMS:
        spaces[team] = f"{team}-{tag}"
        _namespace(api, spaces[team], team)
        api.core.create_namespaced_pod(spaces[team], {"metadata": {"name": "web-0"}, "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node}, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": IMAGE}]}})
    for team in TEAMS:
        _running(api, spaces[team], "web-0")
    stack.cluster.set_kubelet(node, running=False)

    def node_incident():
        recs = [r for r in latest(stack.settings, stack.bootstrap).values() if _about(r, node)
                and not r.get("mergedInto")]
        if len(recs) != 1:
            return None
        got = {n for n, b in _incident_notes(stack, recs[0]["id"]) if b["status"] == "firing"}
        return (recs, got) if {"platform", *TEAMS} <= got else None

    recs, _ = wait_for("the node's incident notified to the platform and the four teams", node_incident, 120, 0.5,
                       detail)
    assert stack.delivered(30), "delivery not done within 30 s"
    inc = latest(stack.settings, stack.bootstrap)[recs[0]["id"]]
    assert inc["candidates"][0]["entity"] == f"node/{node}", inc["candidates"][:3]
    assert set(inc["blastRadius"]["owners"]) >= set(TEAMS)
    notes = [(n, b) for n, b in _incident_notes(stack, inc["id"]) if b["status"] == "firing"]
    # no more notifications than teams (the four, and the platform that owns the node): one each
    assert sorted((n, b["commonAnnotations"]["incident_role"]) for n, b in notes) == [
        ("platform", "cause"), *((t, "impacted") for t in TEAMS)], notes
    # and no per-alert notification about these pods or this node besides the incident's
    stray = [(n, b["groupKey"]) for n, b in _bodies(stack) if not b["groupKey"].startswith("incident:")
             and any(a["labels"].get("node") == node or a["labels"].get("namespace") in (ns, *spaces.values())
                     for a in b["alerts"])]
    assert stray == []
