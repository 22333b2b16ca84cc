"""State changes from real transitions, as the collector reports them (``source: k8s-state`` records,
plus the Events the real scheduler and node lifecycle controller write):

- a Pod no Node can take: the scheduler's ``FailedScheduling``;
- a Node whose kubelet (kwok) stops renewing its Lease: the node lifecycle controller marks it
  Unknown (-> ``NodeNotReady``), taints it ``unreachable`` and marks its Pods not ready;
- a container that fails (kwok's chaos stage: exit 1) and one OOM-killed (exit 137, ``OOMKilled``);
- a crash loop, written the way a kubelet writes it (status subresource: restarts, ``CrashLoopBackOff``).
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from deploy.cluster.launcher import NODE_GRACE_SECONDS
from tests.cluster.conftest import ensure_namespace, wait_for

IMAGE = "registry.k8s.io/pause:3.10"
CHAOS = "pod-container-running-failed.stage.kwok.x-k8s.io"


def pod(name: str, labels=None, annotations=None, **spec) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
            "spec": {"containers": [{"name": "main", "image": IMAGE}], "terminationGracePeriodSeconds": 0, **spec}}


@pytest.fixture(scope="module")
def ns(api, collector):
    name = f"state-{uuid.uuid4().hex[:5]}"
    ensure_namespace(api, name, {"team": "team-a"})
    return name


def running(api, ns: str, name: str, timeout: float = 60.0):
    def probe():
        p = next(iter(api.core.list_namespaced_pod(ns, field_selector=f"metadata.name={name}").items), None)
        return p if p is not None and p.status.phase == "Running" else None

    return wait_for(f"pod {ns}/{name} Running", probe, timeout)


def test_node_stops_heartbeating_then_recovers(cluster, api, collector, ns):
    node = f"kwok-lost-{uuid.uuid4().hex[:4]}"
    cluster.add_nodes([node])
    api.core.create_namespaced_pod(ns, pod("on-lost-node", nodeSelector={"kubernetes.io/hostname": node}))
    running(api, ns, "on-lost-node")
    # kwok stops playing this node's kubelet: no more Lease renewals, no status updates
    cluster.set_kubelet(node, running=False)

    def unreachable():
        n = api.core.read_node(node)
        ready = next(c for c in n.status.conditions if c.type == "Ready")
        taints = {(t.key, t.effect) for t in n.spec.taints or ()}
        return ready.status == "Unknown" and ("node.kubernetes.io/unreachable", "NoExecute") in taints and n

    n = wait_for(f"node {node} Unknown and tainted by the node lifecycle controller", unreachable,
                 NODE_GRACE_SECONDS + 40)
    assert next(c for c in n.status.conditions if c.type == "Ready").reason == "NodeStatusUnknown"
    recs = collector.events.wait(f"NodeNotReady state record of {node}", 30, source="k8s-state",
                                 reason="NodeNotReady", entity__name=node)
    assert {(r["entity"]["kind"], r["entity"]["node"], r["labels"]["status"]) for r in recs} == {("Node", node, "Unknown")}
    # the controller's own Events: the node's status change and its pods marked not ready
    collector.events.wait(f"node-controller NodeNotReady Event of {node}", 30, source="k8s", reason="NodeNotReady",
                          entity__kind="Node", entity__name=node)
    pods = collector.events.wait("NodeNotReady Event of the pod on the lost node", 30, source="k8s",
                                 reason="NodeNotReady", entity__kind="Pod", entity__name="on-lost-node")
    assert {(r["entity"]["namespace"], r["entity"]["owner"], r["entity"]["node"]) for r in pods} == {(ns, "team-a", node)}
    ready = next(c for c in api.core.read_namespaced_pod("on-lost-node", ns).status.conditions if c.type == "Ready")
    assert ready.status == "False"

    # the kubelet comes back: Ready again, the controller lifts its taints, the collector says NodeReady
    cluster.set_kubelet(node, running=True)
    wait_for(f"node {node} Ready and untainted", lambda: (n := api.core.read_node(node)) and not any(
        t.key == "node.kubernetes.io/unreachable" for t in n.spec.taints or ()) and any(
        c.type == "Ready" and c.status == "True" for c in n.status.conditions), 60)
    back = collector.events.wait(f"NodeReady state record of {node}", 30, source="k8s-state", reason="NodeReady",
                                 entity__name=node)
    assert len(back) == 1 and back[0]["type"] == "Normal"


def test_a_deleted_node_says_so(cluster, api, collector):
    """A Node deleted (scaled in, a spot node reclaimed): ``NodeDeleted``, on which the node's state alerts resolve."""
    node = f"kwok-gone-{uuid.uuid4().hex[:4]}"
    cluster.add_nodes([node])
    wait_for(f"node {node} registered", lambda: api.core.read_node(node), 30)
    api.core.delete_node(node)
    recs = collector.events.wait(f"NodeDeleted state record of {node}", 30, source="k8s-state", reason="NodeDeleted",
                                 entity__name=node)
    assert [(r["entity"]["kind"], r["entity"]["node"], r["type"]) for r in recs] == [("Node", node, "Normal")]


def test_unschedulable_pod(api, collector, ns):
    api.apps.create_namespaced_deployment(ns, {
        "metadata": {"name": "stuck", "labels": {"team": "team-stuck"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "stuck"}},
                 "template": {"metadata": {"labels": {"app": "stuck"}},
                              "spec": {"nodeSelector": {"disktype": "nonexistent"},
                                       "containers": [{"name": "main", "image": IMAGE}]}}}})
    # the Deployment's pods only: the module's namespace also holds the lost-node test's bare pod, whose own
    # FailedScheduling (no workload, the namespace's team) once came first
    recs = collector.events.wait("FailedScheduling of stuck-*", 60, source="k8s", reason="FailedScheduling",
                                 entity__namespace=ns, entity__name=lambda n: str(n).startswith("stuck-"))
    r = recs[0]
    assert (r["entity"]["kind"], r["entity"]["workload"], r["entity"]["owner"], r["type"]) == \
        ("Pod", "Deployment/stuck", "team-stuck", "Warning"), (r, collector.text()[-3000:])
    assert r["entity"]["name"].startswith("stuck-")
    assert "node(s) didn't match" in r["message"], r["message"]


@pytest.mark.parametrize("name, exit_code, reason, record", [
    ("fails", 1, "Error", "ContainerError"),
    ("oom", 137, "OOMKilled", "ContainerOOMKilled"),
])
def test_failing_container(api, collector, ns, name, exit_code, reason, record):
    # kwok's chaos stage terminates the container once the pod runs (what a kubelet reports)
    api.core.create_namespaced_pod(ns, pod(name, labels={CHAOS: "true"}, annotations={
        f"{CHAOS}/exit-code": str(exit_code), f"{CHAOS}/reason": reason, f"{CHAOS}/message": f"test {name}",
        f"{CHAOS}/delay": "200ms"}, restartPolicy="Never"))
    recs = collector.events.wait(f"{record} of {ns}/{name}", 60, source="k8s-state", reason=record,
                                 entity__namespace=ns, entity__name=name)
    assert len(recs) == 1, recs  # one termination, one record
    r = recs[0]
    assert r["labels"]["exit_code"] == str(exit_code) and r["labels"]["termination_reason"] == reason
    assert (r["entity"]["owner"], r["entity"]["node"].startswith("kwok-")) == ("team-a", True)
    assert api.core.read_namespaced_pod(name, ns).status.phase == "Failed"


def test_crash_loop(api, collector, ns):
    """The test plays the kubelet of a crash-looping container: two restarts, then CrashLoopBackOff."""
    api.apps.create_namespaced_stateful_set(ns, {
        "metadata": {"name": "flaky", "labels": {"team": "team-b"}},
        "spec": {"replicas": 1, "serviceName": "flaky", "selector": {"matchLabels": {"app": "flaky"}},
                 "template": {"metadata": {"labels": {"app": "flaky"}},
                              "spec": {"containers": [{"name": "main", "image": IMAGE},
                                                      {"name": "sidecar", "image": IMAGE}]}}}})
    p = running(api, ns, "flaky-0")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    iso = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731
    sidecar = next(c for c in p.status.container_statuses if c.name == "sidecar")
    for restarts in (1, 2):
        t = now + dt.timedelta(seconds=restarts)
        main = {"name": "main", "image": IMAGE, "ready": False, "started": False, "restartCount": restarts,
                "lastState": {"terminated": {"exitCode": 2, "reason": "Error", "startedAt": iso(t),
                                             "finishedAt": iso(t)}},
                "state": {"waiting": {"reason": "CrashLoopBackOff",
                                      "message": "back-off 10s restarting failed container=main pod=flaky-0"}}}
        side = {"name": "sidecar", "image": IMAGE, "ready": True, "started": True, "restartCount": 0,
                "state": {"running": {"startedAt": iso(sidecar.state.running.started_at)}}}
        api.core.patch_namespaced_pod_status("flaky-0", ns, {"status": {"containerStatuses": [main, side]}})
        collector.events.wait(f"ContainerRestarted #{restarts} of flaky-0", 30, source="k8s-state",
                              reason="ContainerRestarted", entity__namespace=ns, entity__name="flaky-0",
                              labels__restart_count=str(restarts))
    loop = collector.events.wait("CrashLoopBackOff of flaky-0", 30, source="k8s-state", reason="CrashLoopBackOff",
                                 entity__namespace=ns, entity__name="flaky-0")
    assert {(r["entity"]["workload"], r["entity"]["owner"], r["labels"]["container"]) for r in loop} == \
        {("StatefulSet/flaky", "team-b", "main")}
    errors = collector.events.find(source="k8s-state", reason="ContainerError", entity__namespace=ns,
                                   entity__name="flaky-0")
    assert {r["labels"]["exit_code"] for r in errors} == {"2"} and len(errors) == 2, errors
