"""Several clusters feed one kubesight: a node-down alert mutes its own cluster's pods only, and the shipped routing
files never put two clusters' alerts in one notification (clusters name their nodes and namespaces alike)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.config import load
from alerts.engine import Engine
from alerts.inhibit import Inhibitor, default_rules, rules_from
from core.records import Alert

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SHIPPED = [DEPLOY / "routing.example.yaml", DEPLOY / "demo" / "routing.yaml"]

NODE_DOWN = {"alertname": "KubeNodeNotReady", "node": "n1", "severity": "critical"}
CRASH = {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": "web-1", "workload": "Deployment/web",
         "node": "n1", "severity": "warning"}


def on(cluster: str | None, labels: dict) -> dict:
    return labels if cluster is None else {**labels, "cluster": cluster}


@pytest.mark.parametrize("target", [CRASH, {k: v for k, v in CRASH.items() if k != "pod"},
                                    {k: v for k, v in CRASH.items() if k != "workload"}], ids=["both", "workload", "pod"])
def test_a_node_down_mutes_its_own_clusters_node_only(target):
    inh = Inhibitor(default_rules())
    inh.observe(on("a", NODE_DOWN), "firing")
    assert inh.inhibited(on("a", target))
    assert not inh.inhibited(on("b", target))  # cluster b's n1 is another machine, and healthy
    assert not inh.inhibited(target)  # nor does it mute an alert that names no cluster


def test_without_cluster_labels_a_node_down_mutes_as_before():
    """A single cluster whose alerts carry no ``cluster``: "" equals "", the rule holds as it did."""
    inh = Inhibitor(default_rules())
    inh.observe(NODE_DOWN, "firing")
    assert inh.inhibited(CRASH)
    inh.observe(NODE_DOWN, "resolved")
    assert not inh.inhibited(CRASH)


def test_the_demo_routing_notifies_the_other_clusters_pod_on_a_same_named_node():
    """The alerting engine with the shipped file's default inhibitions: cluster a's NotReady n1 mutes cluster a's
    crash loop on n1 and not cluster b's."""
    eng, st = Engine(load(DEPLOY / "demo" / "routing.yaml")), {}
    eng.receive(Alert(on("a", NODE_DOWN), startsAt=1.0), st, 1.0)
    eng.receive(Alert(on("a", CRASH), startsAt=2.0), st, 2.0)
    eng.receive(Alert(on("b", CRASH), startsAt=2.0), st, 2.0)
    out = eng.tick(st, now=30.0)
    got = sorted((a["labels"]["cluster"], a["labels"]["alertname"]) for n in out for a in n["alerts"])
    assert got == [("a", "KubeNodeNotReady"), ("b", "KubePodCrashLooping")]


def test_the_board_hides_only_the_down_nodes_own_clusters_alerts():
    """The board shares the Inhibitor: cluster b's critical crash loop stays on it, not counted as inhibited."""
    from streams.board import BoardState

    b = BoardState(inhibitor=Inhibitor(rules_from(load(DEPLOY / "demo" / "routing.yaml"))))
    b.apply_alert({"labels": on("a", NODE_DOWN), "status": "firing", "startsAt": "2026-12-01T10:00:00Z",
                   "fingerprint": "A1", "source": "nodes/KubeNodeNotReady@1"})
    for fp, cluster in (("A2", "a"), ("B1", "b")):
        b.apply_alert({"labels": on(cluster, {**CRASH, "severity": "critical"}), "status": "firing",
                       "startsAt": "2026-12-01T10:00:05Z", "fingerprint": fp, "source": "workloads/KubePodCrashLooping@1"})
    assert b.alerts["A2"].inhibited_by
    assert not b.alerts["B1"].inhibited_by


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name + "/" + p.name)
def test_the_shipped_routing_files_group_by_cluster(path):
    """A group's key is PagerDuty's dedup key and one notification's alerts: grouped without ``cluster``, two
    clusters' crash loops in one namespace would page as one incident."""
    cfg = load(path)
    assert "cluster" in cfg.route.group_by
    eng, st = Engine(cfg), {}
    for c in ("a", "b"):
        eng.receive(Alert(on(c, {**CRASH, "owner": "team-network"}), startsAt=2.0), st, 2.0)
    out = eng.tick(st, now=600.0)
    assert sorted({a["labels"]["cluster"] for a in n["alerts"]} for n in out) == [{"a"}, {"b"}]
