"""kube-apiserver audit events -> Events: what is reported, what is left out, and how a bad payload is refused.

The audit items follow what the 1.34 API server sends (``tests/cluster/test_audit.py`` takes them from a real
one through its webhook); here each shape the cluster test cannot make (an exec session, an eviction, a request
refused by RBAC) is written out.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from aiohttp import web

from collectors.cloud.auth import Auth
from collectors.cloud.event import PayloadError
from collectors.cloud.server import create_app
from collectors.kubernetes.audit import events_from_audit
from collectors.sink import AsyncKafkaSink
from core.records import decode
from tests.kafkatools import read_to_end

T = "2026-11-28T10:00:00.000000Z"


def item(verb, resource, name, *, sub="", ns="", user="alice", code=200, stage="ResponseComplete", req=None, aid="a1"):
    ref = {"resource": resource, "name": name, **({"namespace": ns} if ns else {}), **({"subresource": sub} if sub else {})}
    return {"auditID": aid, "stage": stage, "verb": verb, "user": {"username": user, "groups": ["system:authenticated"]},
            "sourceIPs": ["10.1.2.3"], "userAgent": "kubectl/v1.34.3", "objectRef": ref,
            "responseStatus": {"code": code}, "stageTimestamp": T, **({"requestObject": req} if req is not None else {})}


def body(*items) -> bytes:
    return orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": list(items)})


def reasons(*items) -> list[tuple[str, str]]:
    return [(e.reason, e.labels.get("change", "")) for e in events_from_audit(body(*items))]


def test_sessions_into_pods_are_reported_when_they_start():
    exec_ = item("create", "pods", "cart-1", sub="exec", ns="shop", stage="ResponseStarted", code=101)
    (ev,) = events_from_audit(body(exec_, dict(exec_, stage="ResponseComplete")))  # the session's end: not again
    assert (ev.reason, ev.entity.kind, ev.entity.namespace, ev.entity.name) == ("PodExec", "Pod", "shop", "cart-1")
    assert ev.labels == {"user": "alice", "verb": "create", "resource": "pods/exec", "source_ip": "10.1.2.3",
                         "user_agent": "kubectl/v1.34.3"}
    assert ev.message == "alice create pods/exec of Pod shop/cart-1" and ev.source == "k8s-audit"
    assert reasons(item("get", "pods", "cart-1", sub="attach", ns="shop", stage="ResponseStarted", code=101),
                   item("create", "pods", "cart-1", sub="portforward", ns="shop", stage="ResponseStarted", code=101)) == [
        ("PodAttach", ""), ("PodPortForward", "")]


def test_node_changes_evictions_and_deletes():
    taint = {"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]},
             "metadata": {"labels": {"pool": "gpu", "zone": "a"}}}
    assert reasons(item("patch", "nodes", "w1", req=taint),
                   item("create", "pods", "cart-1", sub="eviction", ns="shop"),
                   item("delete", "deployments", "cart", ns="shop"),
                   item("delete", "persistentvolumeclaims", "data-0", ns="shop")) == [
        ("NodeTaintsChanged", "dedicated=gpu:NoSchedule"), ("NodeLabelsChanged", "pool=gpu, zone=a"),
        ("PodEvictionRequested", ""), ("WorkloadDeleted", ""), ("VolumeClaimDeleted", "")]


def test_a_taint_value_that_is_not_a_string_is_written_as_text():
    """A node patch with ``"value": 5`` (the API server validates it later; the audit has the request as sent)
    used to raise TypeError in the intake: a 500 to the API server, nothing kept."""
    taint = {"spec": {"taints": [{"key": "gpu-slots", "value": 5, "effect": "NoSchedule"}]}}
    assert reasons(item("patch", "nodes", "w1", req=taint)) == [("NodeTaintsChanged", "gpu-slots=5:NoSchedule")]


def test_a_json_patch_of_a_node_is_read_too():
    ops = [{"op": "replace", "path": "/spec/unschedulable", "value": True},
           {"op": "add", "path": "/metadata/labels/example.com~1pool", "value": "gpu"},
           {"op": "remove", "path": "/spec/taints/0"}]
    assert reasons(item("patch", "nodes", "w1", req=ops),
                   item("patch", "nodes", "w2", req=[{"op": "remove", "path": "/spec/unschedulable"}]),
                   item("patch", "nodes", "w3", req="not a patch")) == [
        ("NodeCordoned", ""), ("NodeTaintsChanged", "remove 0"), ("NodeLabelsChanged", "add example.com/pool=gpu"),
        ("NodeUncordoned", "")]


def test_what_is_left_out():
    assert reasons(
        item("delete", "pods", "cart-1", ns="shop"),  # pods come and go all day
        item("patch", "nodes", "w1", req={"status": {"phase": "Running"}}),  # nothing a person changed
        item("update", "nodes", "w1", req={"spec": {"unschedulable": False}, "metadata": {"labels": {"a": "b"}}}),  # whole node
        item("patch", "nodes", "w1", req={"spec": {"unschedulable": True}}, code=403),  # refused by RBAC
        item("patch", "nodes", "w1", req={"spec": {"unschedulable": True}}, user="system:node:w1"),  # the kubelet
        item("patch", "nodes", "w1", req={"spec": {"taints": []}},
             user="system:serviceaccount:kube-system:node-controller"),  # the control plane's own taints
        item("create", "pods", "cart-1", sub="exec", ns="shop", stage="ResponseComplete", code=101),  # not its start
        item("patch", "nodes", "w1", req={"spec": {"unschedulable": True}}, stage="RequestReceived")) == []
    # a person's service account is not the control plane's
    assert reasons(item("patch", "nodes", "w1", req={"spec": {"unschedulable": True}},
                        user="system:serviceaccount:ci:deployer")) == [("NodeCordoned", "")]


def test_a_request_from_a_public_address_is_reported_about_its_user():
    from collectors.kubernetes.audit import trusted_networks

    listing = dict(item("list", "secrets", "", ns="shop", aid="a7"), sourceIPs=["8.8.4.4", "10.0.0.9"],  # via a proxy
                   requestURI="/api/v1/namespaces/shop/secrets")
    (ev,) = events_from_audit(body(listing))
    assert (ev.reason, ev.type, ev.entity.kind, ev.entity.name, ev.id) == (
        "APIRequestFromPublicIP", "Warning", "User", "alice", "audit-a7-APIRequestFromPublicIP")
    assert ev.labels == {"user": "alice", "verb": "list", "resource": "secrets", "source_ip": "8.8.4.4",
                         "public_ip": "8.8.4.4", "target": "secrets in shop", "user_agent": "kubectl/v1.34.3"}
    assert ev.message == "alice list secrets in shop from public address 8.8.4.4"
    # an action from the internet is both: the action about its object, the access about the person
    exec_ = dict(item("create", "pods", "cart-1", sub="exec", ns="shop", stage="ResponseStarted", code=101),
                 sourceIPs=["2a00:1450:4001::5"])
    assert [(e.reason, e.entity.kind, e.labels.get("target")) for e in events_from_audit(body(exec_))] == [
        ("PodExec", "Pod", None), ("APIRequestFromPublicIP", "User", "Pod shop/cart-1")]
    version = {"auditID": "a8", "stage": "ResponseComplete", "verb": "get", "user": {"username": "bob"},
               "sourceIPs": ["1.1.1.1"], "requestURI": "/logs/", "responseStatus": {"code": 200}, "stageTimestamp": T}
    assert [e.message for e in events_from_audit(body(version))] == ["bob get /logs/ from public address 1.1.1.1"]
    # not from the internet: private, carrier-grade NAT, loopback, link-local; an office's egress, trusted
    quiet = [dict(listing, sourceIPs=ips) for ips in (["10.0.0.9"], ["100.64.0.7", "127.0.0.1"], ["fe80::1"],
                                                       ["not-an-ip", "192.168.1.4"])]
    assert events_from_audit(body(*quiet)) == []
    assert events_from_audit(body(listing), trusted=trusted_networks("8.8.4.0/24")) == []
    # refused (401/403) or the control plane's own actors: not an access that happened, or not a person's
    assert events_from_audit(body(dict(listing, responseStatus={"code": 403}),
                                  dict(listing, user={"username": "system:node:w1"}))) == []


def test_owners_name_the_workload_and_team_of_a_pod_that_still_exists():
    from collectors.kubernetes.audit import attach_owners
    from collectors.kubernetes.owners import Owners

    objs = {("Pod", "shop", "cart-7d9f-x1"): {"metadata": {"ownerReferences": [
                {"kind": "ReplicaSet", "name": "cart-7d9f", "controller": True}]}},
            ("ReplicaSet", "shop", "cart-7d9f"): {"metadata": {"ownerReferences": [
                {"kind": "Deployment", "name": "cart", "controller": True}]}},
            ("Deployment", "shop", "cart"): {"metadata": {"labels": {"team": "payments"}}}}
    owners = Owners(lambda kind, ns, name: objs.get((kind, ns, name)), clock=lambda: 0.0)
    evs = events_from_audit(body(item("create", "pods", "cart-7d9f-x1", sub="exec", ns="shop", stage="ResponseStarted",
                                      code=101), item("patch", "nodes", "w1", req={"spec": {"unschedulable": True}})))
    got = [(e.reason, e.entity.workload, e.entity.owner) for e in attach_owners(evs, owners)]
    assert got == [("PodExec", "Deployment/cart", "payments"), ("NodeCordoned", "", "")]  # a node is nobody's


def test_other_namespaced_objects_get_the_namespace_team_cluster_scoped_ones_none():
    """A deleted PVC is no workload's, but its namespace's team owns it, as the Kubernetes collector gives it."""
    from collectors.kubernetes.audit import attach_owners
    from collectors.kubernetes.owners import Owners

    objs = {("Namespace", "", "shop"): {"metadata": {"labels": {"team": "web"}}}}
    owners = Owners(lambda kind, ns, name: objs.get((kind, ns, name)), clock=lambda: 0.0)
    evs = events_from_audit(body(item("delete", "persistentvolumeclaims", "data-cart-0", ns="shop", aid="a1"),
                                 item("delete", "persistentvolumes", "pv-1", aid="a2")))
    got = [(e.reason, e.entity.workload, e.entity.owner) for e in attach_owners(evs, owners)]
    assert got == [("VolumeClaimDeleted", "", "web"), ("VolumeDeleted", "", "")]


def test_the_intake_takes_the_kubernetes_collectors_owner_options_and_the_manifests_pass_the_same():
    """One set of owner options (``collect kubernetes``'s): with other keys on the intake, an audit event of a pod
    would go to another team than the pod's other alerts."""
    import yaml

    from collectors.kubernetes.cli import owners_for
    from core.settings import REPO
    from kubesight.cli import build_parser

    args = build_parser().parse_args(["collect", "cloud", "--kubernetes", "--owner-keys", "squad,team",
                                      "--cache-size", "50", "--cache-ttl", "60"])
    o = owners_for(args, lambda kind, ns, name: None)
    assert (o.keys, o.max_entries, o.ttl) == (("squad", "team"), 50, 60.0)

    def owner_args(manifest, command):
        docs = yaml.safe_load_all((REPO / "deploy" / "kubernetes" / manifest).read_text())
        dep = next(d for d in docs if d["kind"] == "Deployment")
        a = build_parser().parse_args(dep["spec"]["template"]["spec"]["containers"][0]["args"])
        assert a.func.__module__ == command
        return a.owner_keys, a.cache_size, a.cache_ttl
    assert owner_args("collector-cloud.yaml", "collectors.cloud.cli") == \
        owner_args("collector-kubernetes.yaml", "collectors.kubernetes.cli")
    assert "--owner-keys=team,owner,app.kubernetes.io/part-of" in \
        (REPO / "deploy" / "kubernetes" / "collector-cloud.yaml").read_text()


def test_a_retried_batch_gives_the_same_ids():
    one = item("patch", "nodes", "w1", req={"spec": {"unschedulable": False}}, aid="9f1c")
    assert [e.id for e in events_from_audit(body(one))] == [e.id for e in events_from_audit(body(one))] == [
        "audit-9f1c-NodeUncordoned"]


@pytest.mark.parametrize("payload, reason", [
    (b"{not json", "not valid JSON: unexpected character, expected a string key: line 1 column 2 (char 1)"),
    (b"[]", "expected an audit.k8s.io EventList object, got an array"),
    (b'{"kind": "PodList", "apiVersion": "v1"}',
     "expected kind EventList (apiVersion audit.k8s.io/v1), got kind 'PodList' (apiVersion 'v1')"),
    (b'{"kind": "EventList", "items": []}',  # the kind is right: the reason names the missing apiVersion
     "expected kind EventList (apiVersion audit.k8s.io/v1), got kind 'EventList' (apiVersion None)"),
    (body(5), "items[0]: expected an object, got a number"),
    (orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": {}}), "items: expected an array, got an object"),
    (body(dict(item("patch", "nodes", "w1"), responseStatus={"code": "200"})),
     "items[0].responseStatus.code: expected an integer, got a string"),
    (body(dict(item("delete", "namespaces", "shop"), stageTimestamp="yesterday")),
     "items[0].stageTimestamp: invalid time 'yesterday' (use RFC 3339, e.g. 2021-08-03T10:00:00Z)"),
    (body(dict(item("delete", "namespaces", "shop"), stageTimestamp=1e15)),  # microseconds: not written later, refused
     "items[0].stageTimestamp: time 1000000000000000.0 is not a time RFC 3339 can write (epoch seconds of years "
     "1-9999; milliseconds or microseconds?)"),
])
def test_a_bad_payload_is_refused_with_its_reason(payload, reason):
    with pytest.raises(PayloadError) as exc:
        events_from_audit(payload)
    assert str(exc.value) == reason


@pytest.mark.kafka
def test_the_intake_takes_audit_batches_and_dead_letters_a_bad_one(settings):
    token = b"audit-token-for-tests"

    async def run():
        sink = AsyncKafkaSink(settings.kafka, settings.topic, client_id="test-audit-intake")
        await sink.start()
        runner = web.AppRunner(create_app(sink, Auth([token], []), cluster="prod"), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/audit"
        auth = {"Authorization": f"Bearer {token.decode()}"}
        try:
            async with aiohttp.ClientSession() as s:
                good = body(item("delete", "namespaces", "shop"), item("delete", "pods", "x", ns="shop"))
                answers = []
                for data, headers in ((good, auth), (b"[]", auth), (good, {})):
                    async with s.post(url, data=data, headers=headers) as r:
                        answers.append((r.status, await r.json()))
                return answers
        finally:
            await runner.cleanup()
            await sink.stop()

    answers = asyncio.run(run())
    assert answers == [(200, {"accepted": 1, "ids": ["audit-a1-NamespaceDeleted"]}),
                       (400, {"error": "expected an audit.k8s.io EventList object, got an array"}),
                       (401, {"error": "unauthorized"})]
    (ev,) = [decode(r.value) for r in read_to_end(settings.kafka, settings.topic("events"))]
    assert (ev.reason, ev.entity.cluster, ev.entity.kind, ev.entity.name) == ("NamespaceDeleted", "prod", "Namespace", "shop")
    (dl,) = [orjson.loads(r.value) for r in read_to_end(settings.kafka, settings.topic("deadletter"))]
    assert dl["reason"] == "expected an audit.k8s.io EventList object, got an array" and dl["origin"] == "collector/cloud"
