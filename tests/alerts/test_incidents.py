"""Incidents: topology rules, ranking (ties included), resolution, merging; pure functions of (alert, state, now)."""

from __future__ import annotations

import doctest

import alerts.incidents as incidents_mod
from alerts.incidents import Incidents, entity, explains, linked, rank
from core.records import Alert

T0 = 1_700_000_000.0


def alert(t, status="firing", **labels):
    labels.setdefault("cluster", "prod")
    return Alert(labels=labels, status=status, startsAt=t, endsAt=t if status == "resolved" else None,
                 annotations={"summary": labels["alertname"]})


def run(inc: Incidents, alerts, state=None):
    state = {} if state is None else state
    out = []
    for a in alerts:
        out += inc.observe(a, state, max(a.startsAt, a.endsAt or 0))
    return out, state


def test_doctests():
    assert doctest.testmod(incidents_mod).failed == 0


def test_topology_links():
    node = {"alertname": "KubeNodeNotReady", "node": "n1"}
    cloud = {"alertname": "CloudSpotInterruption", "node": "n1"}
    pod = {"alertname": "KubePodNotReady", "namespace": "shop", "workload": "web", "node": "n1"}
    other_pod = {"alertname": "KubePodNotReady", "namespace": "shop", "workload": "db", "node": "n2"}
    vol = {"alertname": "KubePersistentVolumeFull", "namespace": "shop", "persistentvolumeclaim": "data"}
    mount = {"alertname": "KubePodFailedMount", "namespace": "shop", "workload": "db", "node": "n2",
             "persistentvolumeclaim": "data"}
    etcd = {"alertname": "EtcdHighFsyncDurations", "instance": "10.0.0.1:2379"}
    assert linked(cloud, node) == "same node n1"  # cloud instance -> node
    assert linked(node, pod) == "same node n1"  # node -> its pods
    assert linked(pod, other_pod) is None
    assert linked(vol, mount) == "same persistentvolumeclaim shop/data"  # volume -> pods
    assert linked(etcd, other_pod) == "control plane (cluster-wide)"
    assert linked({"workload": "web", "namespace": "a"}, {"workload": "web", "namespace": "b"}) is None
    reach = incidents_mod.closure({"frontend": ["cart"], "cart": ["redis"]})
    assert linked({"workload": "frontend"}, {"workload": "redis"}, reach) == "service dependency frontend - redis"
    assert linked({"workload": "cart"}, {"workload": "ads"}, reach) is None
    # who explains whom: the dependency direction only
    assert explains("node/n1", [node], "workload/shop/web", [pod]) == "runs on node n1"
    assert explains("workload/shop/web", [pod], "node/n1", [node]) is None
    assert explains("controlplane/etcd", [etcd], "controlplane/apiserver", [{"alertname": "KubeAPILatencyHigh"}]) \
        == "apiserver depends on etcd"
    assert explains("controlplane/apiserver", [{"alertname": "KubeAPILatencyHigh"}], "controlplane/etcd", [etcd]) is None
    assert explains("volume/shop/data", [vol], "workload/shop/db", [mount]) == "mounts volume shop/data"
    assert entity(mount) == "volume/shop/data" and entity(cloud) == "node/n1"


def test_node_failure_with_pods_of_four_teams_is_one_incident_with_the_cloud_event_on_the_node_as_cause():
    inc = Incidents()
    alerts = [alert(T0 + 30 + i, alertname="KubePodNotReady", namespace=f"team{i}", workload=f"app{i}", node="n1",
                    owner=f"team{i}") for i in range(4)]
    alerts.insert(0, alert(T0 + 20, alertname="KubeNodeNotReady", node="n1", owner="platform"))
    alerts.insert(0, alert(T0, alertname="CloudInstanceMaintenance", node="n1", owner="platform"))
    alerts.append(alert(T0 + 40, alertname="KubePodNotReady", namespace="team9", workload="x", node="n2"))
    out, state = run(inc, alerts)
    last = {r["id"]: r for r in out}
    assert len(last) == 2  # the pod on n2 is its own incident
    big = max(last.values(), key=lambda r: len(r["members"]))
    assert len(big["members"]) == 6 and big["status"] == "open"
    top = big["candidates"][0]
    assert top["entity"] == "node/n1" and top["cause"] == "CloudInstanceMaintenance"
    assert top["explains"] == [f"workload/team{i}/app{i}" for i in range(4)]
    assert any("explains 4/4" in e for e in top["evidence"])
    assert big["blastRadius"]["owners"] == ["platform", "team0", "team1", "team2", "team3"]
    assert big["blastRadius"]["namespaces"] == ["team0", "team1", "team2", "team3"]


def test_etcd_explains_apiserver_latency():
    out, _ = run(Incidents(), [
        alert(T0, alertname="KubeAPILatencyHigh", verb="GET"),
        alert(T0 + 60, alertname="EtcdHighFsyncDurations", instance="e1"),
    ])
    cands = out[-1]["candidates"]
    assert [c["entity"] for c in cands] == ["controlplane/etcd", "controlplane/apiserver"]
    assert "controlplane/apiserver" in cands[0]["explains"]


def test_the_callee_that_started_first_ranks_above_its_callers():
    inc = Incidents(deps={"frontend": ["cart", "checkout"], "checkout": ["cart"]})
    out, _ = run(inc, [
        alert(T0, alertname="Latency", namespace="shop", workload="cart", signal="latency"),
        alert(T0 + 60, alertname="Latency", namespace="shop", workload="checkout", signal="latency"),
        alert(T0 + 60, alertname="Latency", namespace="shop", workload="frontend", signal="latency"),
    ])
    ents = [c["entity"] for c in out[-1]["candidates"]]
    assert ents == ["workload/shop/cart", "workload/shop/checkout", "workload/shop/frontend"]


def test_ties_are_broken_by_first_alert_then_by_entity_name_whatever_the_arrival_order():
    a = alert(T0, alertname="Latency", namespace="shop", workload="b", node="n1")
    b = alert(T0, alertname="Latency", namespace="shop", workload="a", node="n1")
    c = alert(T0 + 10, alertname="Latency", namespace="shop", workload="0", node="n1")
    node = alert(T0, alertname="KubeNodeNotReady", node="n1")  # what ties pods that share a node into one incident
    r1 = run(Incidents(), [node, a, b, c])[0][-1]
    r2 = run(Incidents(), [c, b, a, node])[0][-1]
    ents1 = [x["entity"] for x in r1["candidates"]]
    assert ents1 == ["node/n1", "workload/shop/a", "workload/shop/b", "workload/shop/0"]
    assert r1["candidates"][1]["score"] == r1["candidates"][2]["score"]
    assert [x["entity"] for x in r2["candidates"]] == ents1
    assert [x["score"] for x in r2["candidates"]] == [x["score"] for x in r1["candidates"]]


def test_resolves_after_every_member_resolved_and_the_quiet_period():
    inc = Incidents(quiet=300)
    out, state = run(inc, [
        alert(T0, alertname="KubeNodeNotReady", node="n1"),
        alert(T0 + 10, alertname="KubePodNotReady", namespace="a", workload="w", node="n1"),
        alert(T0 + 100, "resolved", alertname="KubeNodeNotReady", node="n1"),
    ])
    iid = out[-1]["id"]
    assert inc.expire(state, T0 + 1000) == []  # one member still firing
    run(inc, [alert(T0 + 200, "resolved", alertname="KubePodNotReady", namespace="a", workload="w", node="n1")], state)
    assert inc.expire(state, T0 + 499) == []  # quiet period not over
    done = inc.expire(state, T0 + 500)
    assert [(r["id"], r["status"]) for r in done] == [(iid, "resolved")]
    assert done[0]["resolvedAt"] is not None and done[0]["alerts"] == {"firing": 0, "resolved": 2, "dropped": 0}
    assert all(k.startswith("end|") for k in state)  # nothing left behind but the resolutions (for ENDED_FOR)
    # the same alert firing again later opens a new incident
    out2, _ = run(inc, [alert(T0 + 900, alertname="KubeNodeNotReady", node="n1")], state)
    assert out2[-1]["id"] != iid and out2[-1]["status"] == "open"


def test_a_linked_alert_in_the_quiet_period_keeps_the_incident_open():
    inc = Incidents(quiet=300)
    out, state = run(inc, [
        alert(T0, alertname="KubeNodeNotReady", node="n1"),
        alert(T0 + 50, "resolved", alertname="KubeNodeNotReady", node="n1"),
        alert(T0 + 200, alertname="KubePodNotReady", namespace="a", workload="w", node="n1"),
    ])
    assert len({r["id"] for r in out}) == 1
    assert inc.expire(state, T0 + 400) == []


def test_an_alert_linking_two_incidents_merges_them_into_the_older():
    inc = Incidents()
    out, state = run(inc, [
        alert(T0, alertname="KubePodNotReady", namespace="a", workload="w1", node="n1"),
        alert(T0 + 5, alertname="KubePodNotReady", namespace="b", workload="w2", node="n2"),
    ])
    first, second = out[0]["id"], out[1]["id"]
    assert first != second
    merged, _ = run(inc, [alert(T0 + 9, alertname="EtcdNoLeader", instance="e1")], state)
    assert [(r["id"], r["status"], r.get("mergedInto")) for r in merged] == [
        (second, "resolved", first), (first, "open", None)]
    assert len(merged[-1]["members"]) == 3 and merged[-1]["candidates"][0]["entity"] == "controlplane/etcd"
    assert Incidents.open_ids(state) == [first]


def test_rank_is_empty_without_members():
    assert rank({}) == []


def test_show_puts_the_probable_cause_and_its_evidence_first_and_list_one_line_each():
    from alerts.incidents import render, render_list

    out, _ = run(Incidents(), [
        alert(T0, alertname="CloudSpotInterruption", node="n1", owner="platform"),
        alert(T0 + 20, alertname="KubeNodeNotReady", node="n1", owner="platform"),
        alert(T0 + 30, alertname="KubePodNotReady", namespace="pay", workload="api", node="n1", owner="payments"),
    ])
    text = render(out[-1]).splitlines()
    assert text[0].startswith(f"incident {out[-1]['id']}  OPEN  cluster prod")
    assert text[1] == "PROBABLE CAUSE: node/n1 -- CloudSpotInterruption (score 1.00)"
    assert any("explains 1/1 other alerts: workload/pay/api (runs on node n1)" in line for line in text)
    assert any(line.startswith("BLAST RADIUS: 1 workloads in 1 namespaces; owners: payments, platform") for line in text)
    rows = render_list([out[-1]]).splitlines()
    assert len(rows) == 2 and rows[1].split()[0] == out[-1]["id"] and rows[1].endswith("node/n1: CloudSpotInterruption (1.00)")
    # a full incident says how many alerts it could not keep (it said "500 alerts" however many more fired)
    full = {**out[-1], "alerts": {**out[-1]["alerts"], "dropped": 21}}
    assert render(full).splitlines()[0].endswith("; 21 more it could not keep)")


def test_a_member_that_promised_an_end_ends_then_and_its_incident_resolves():
    """A firing alert with endsAt (the Watchdog, a silence reminder: it ends then unless sent again) ends at that
    time even though no resolution comes; sent again, its end moves. Without this its incident stayed open for ever."""
    inc = Incidents(quiet=300)
    beat = Alert(labels={"alertname": "Watchdog", "cluster": "prod"}, status="firing", startsAt=T0, endsAt=T0 + 240)
    out, state = run(inc, [beat])
    iid = out[-1]["id"]
    # sent again before its end: the end moves, nothing to publish
    assert inc.observe(Alert(beat.labels, status="firing", startsAt=T0, endsAt=T0 + 480), state, T0 + 200) == []
    assert inc.expire(state, T0 + 300) == []
    ended = inc.expire(state, T0 + 480)
    assert [(r["id"], r["alerts"]["firing"], r["alerts"]["resolved"]) for r in ended] == [(iid, 0, 1)]
    done = inc.expire(state, T0 + 480 + 300)  # then the quiet period, as for any resolution
    assert [(r["id"], r["status"]) for r in done] == [(iid, "resolved")] and state == {}


def test_a_firing_hand_off_read_after_the_resolution_does_not_reopen_the_member():
    """Alerting notified the alert while it still fired; the incident stage read its resolution first: the receiver
    is recorded but the member stays resolved (no second resolution would come), and the incident can resolve."""
    inc = Incidents(quiet=300)
    node = alert(T0, alertname="KubeNodeNotReady", node="n1")
    out, state = run(inc, [node, alert(T0, "resolved", alertname="KubeNodeNotReady", node="n1")])
    iid = out[-1]["id"]
    inc.handed(node, "platform", state, T0 + 30)
    [m] = state["inc|" + iid]["members"].values()
    assert m["status"] == "resolved" and m["to"] == ["platform"]
    assert [(r["id"], r["status"]) for r in inc.expire(state, T0 + 400)] == [(iid, "resolved")]
    # the same alert firing again later (a new episode, after its end) is a member firing again
    again = alert(T0 + 1000, alertname="KubeNodeNotReady", node="n1")
    assert inc.handed(again, "platform", state, T0 + 1000)[-1]["alerts"]["firing"] == 1
