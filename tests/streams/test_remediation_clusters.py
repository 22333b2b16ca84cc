"""Several clusters on one kubesight: a collector each, the topics shared, one remediator per cluster on its own API
server (``settings.cluster`` names it). An audit found cluster B's remediator cordoning and tainting B's node n1 for
cluster A's alert on A's n1, the remediators of the clusters splitting the alerts topic in one consumer group, and B
refusing its own node as A's actions, read back from the shared trail, filled B's ``max_nodes``. On the fake API
server of test_remediation_safety (no broker, no cluster)."""

from __future__ import annotations

from kubernetes.client import ApiException

from core.records import Alert
from core.settings import Settings
from streams.remediation import Remediator, Runner, consumer_group
from tests.streams.test_remediation_safety import RULES, FakeKube, actions, cordoned

NODES = ["n1", "n2", "n3", "n4"]  # each cluster's: the same names


def settings(cluster: str, **kw) -> Settings:
    s = Settings()
    return s.model_copy(update={"cluster": cluster, "remediation": s.remediation.model_copy(
        update={"dry_run": False, "max_percent": 100, **kw})})


def xid(node: str, t: float, cluster: str | None) -> Alert:
    """A GPUXidFatal (condition, Event, cordon and taint) on ``node`` of ``cluster`` (None: no cluster label)."""
    rule = next(r for r in RULES.rules if r.alert == "GPUXidFatal")
    labels = {"alertname": "GPUXidFatal", "node": node, "xid": "79", "severity": "critical",
              **({"cluster": cluster} if cluster else {})}
    return Alert(labels, {"summary": f"Xid 79 on {node}"}, "firing", t, source=rule.origin)


class Throttled(FakeKube):
    """Every node list answers 429: a cordon's checks fail on a transient error, and the action waits for a retry."""

    def nodes(self):
        raise ApiException(status=429, reason="Too Many Requests")


def test_another_clusters_alert_changes_nothing_and_an_alert_without_a_cluster_is_this_ones():
    now = 1000.0
    kube_b, trail = FakeKube(NODES), []
    r = Remediator(settings("b"), RULES, kube_b, trail.append, now=lambda: now)
    r.handle(xid("n1", now, "a"), at=now)  # cluster A's n1: B's n1 is another node
    assert kube_b.writes == [] and trail == [] and r.conds == {}
    r.handle(xid("n1", now, "b"), at=now)
    r.handle(xid("n2", now, None), at=now)  # a single cluster's alerts need not say which
    assert cordoned(kube_b) == ["n1", "n2"]
    assert actions(trail) == [(n, t, "done") for n in ("n1", "n2") for t in ("cordon", "taint")]
    assert {rec["cluster"] for rec in trail} == {"b"}  # every record says whose it is


def test_each_clusters_remediator_has_a_consumer_group_of_its_own():
    """One group split the shared alerts topic between the clusters' remediators: each read part of its own."""
    kube = FakeKube(NODES)
    groups = {c: Runner(settings(c), "127.0.0.1:9", kube, rules=RULES).group for c in ("a", "b", "default")}
    assert len(set(groups.values())) == 3
    assert groups["default"] == "kubesight-remediation"  # a single cluster keeps its group, and its offsets
    assert groups["b"] == consumer_group(settings("b")) == "kubesight-remediation-b"


def test_another_clusters_trail_is_not_this_ones_state_nor_its_limits():
    now = 1000.0
    kube_a, trail_a = FakeKube(NODES), []
    ra = Remediator(settings("a"), RULES, kube_a, trail_a.append, now=lambda: now)
    for n in ("n1", "n2", "n3"):  # max_nodes (3) of cluster A within the window
        ra.handle(xid(n, now, "a"), at=now)
    assert cordoned(kube_a) == ["n1", "n2", "n3"]
    # B starts on the shared trail: A's records first, then its own
    kube_b, trail_b = FakeKube(NODES), []
    rb = Remediator(settings("b"), RULES, kube_b, trail_b.append, history=list(trail_a), now=lambda: now)
    assert rb.acted == [] and rb.conds == {} and rb.done == {}
    rb.handle(xid("n4", now, "b"), at=now)
    assert actions(trail_b) == [("n4", "cordon", "done"), ("n4", "taint", "done")] and cordoned(kube_b) == ["n4"]
    # written by the version before: no cluster field, so this cluster's (a single cluster's trail reads as before)
    old = [{k: v for k, v in rec.items() if k != "cluster"} for rec in trail_a]
    kube_old, trail_old = FakeKube(NODES), []
    Remediator(settings("b"), RULES, kube_old, trail_old.append, history=old, now=lambda: now).handle(
        xid("n4", now, "b"), at=now)
    assert [o for _, _, o in actions(trail_old)] == ["refused", "refused"] and cordoned(kube_old) == []
    assert "max_nodes 3" in trail_old[-1]["reason"]


def test_a_failed_action_of_another_cluster_is_not_retried_here():
    """A failed cordon's retry is rebuilt from the trail at start. The version before acted on every cluster's alerts
    and wrote no cluster into its records: one of them for A's alert is not B's to retry; B's own is."""
    now, trail = 1000.0, []
    before = Remediator(settings("b"), RULES, Throttled(NODES), trail.append, now=lambda: now)
    before.ours = lambda alert: True  # as the version before
    before.handle(xid("n1", now, "b"), at=now)
    before.handle(xid("n2", now, "a"), at=now)
    old = [{k: v for k, v in rec.items() if k != "cluster"} for rec in trail]
    assert sorted(rec["node"] for rec in old if rec.get("retry_in")) == ["n1", "n1", "n2", "n2"]  # cordon, taint
    again = Remediator(settings("b"), RULES, FakeKube(NODES), [].append, history=old, now=lambda: now + 1)
    assert sorted(q["alert"].labels["node"] for q in again.retrying.values()) == ["n1", "n1"]
