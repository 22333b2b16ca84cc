"""kube-apiserver audit events through its real webhook backend into the intake's ``/audit``, then Kafka.

The local control plane runs with ``deploy/kubernetes/audit-policy.yaml`` and posts to ``cluster.audit``: here the
intake listens there (TLS: client-go sends the webhook's bearer token over TLS only), a person (the admin token) evicts a pod,
cordons, relabels, uncordons and deletes a node and deletes a namespace, and each of those arrives on the events topic as a ``k8s-audit`` Event naming who did it, while the
control plane's own node changes (kwok's and the controllers') stay out.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid

import pytest
from aiohttp import web

from collectors.cloud.auth import Auth
from collectors.cloud.server import create_app
from collectors.kubernetes.api import Api
from collectors.kubernetes.owners import Owners
from collectors.sink import AsyncKafkaSink
from core.records import decode
from tests.cluster.conftest import ensure_namespace, wait_for
from tests.kafkatools import read_to_end

pytestmark = [pytest.mark.kafka, pytest.mark.cluster]


def audit_events(settings) -> list:
    return [e for e in (decode(r.value) for r in read_to_end(settings.kafka, settings.topic("events")))
            if e.source == "k8s-audit"]


def test_audit_webhook_reports_who_changed_nodes_and_deleted_a_namespace(cluster, api, settings):
    tag = uuid.uuid4().hex[:6]
    node, ns = f"kwok-audit-{tag}", f"audit-{tag}"
    cluster.add_nodes([node])
    ensure_namespace(api, ns, labels={"team": "payments"})
    labels = {"app": "cart"}
    api.apps.create_namespaced_deployment(ns, {
        "metadata": {"name": "cart"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "example.com/cart:1"}]}}}})
    pod = wait_for("the cart pod", lambda: next((p.metadata.name for p in api.core.list_namespaced_pod(ns).items), None))
    hostport, token, cert, key = cluster.audit

    def act() -> None:  # what a person does with kubectl drain (an eviction) / cordon / label / uncordon / delete
        api.core.create_namespaced_pod_eviction(pod, ns, {"metadata": {"name": pod, "namespace": ns}})
        # a person reading secrets through a proxy that says they came from the internet (X-Forwarded-For)
        api.core.list_namespaced_secret(ns, _headers={"X-Forwarded-For": "8.8.4.4"})
        api.core.patch_node(node, {"spec": {"unschedulable": True}})
        api.core.patch_node(node, {"metadata": {"labels": {"maintenance": "disk-swap"}}})
        api.core.patch_node(node, {"spec": {"unschedulable": False}})
        api.apps.delete_namespaced_deployment("cart", ns)
        api.core.delete_namespace(ns)
        api.core.delete_node(node)

    async def run() -> list:
        sink = AsyncKafkaSink(settings.kafka, settings.topic, client_id="test-audit")
        await sink.start()
        owners = Owners(Api(api.client).read)  # as `collect cloud --kubernetes` reads them
        runner = web.AppRunner(create_app(sink, Auth([token.encode()], []), cluster=settings.cluster, owners=owners),
                               access_log=None)
        await runner.setup()
        host, port = hostport.split(":")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        await web.TCPSite(runner, host, int(port), ssl_context=tls).start()
        try:
            await asyncio.to_thread(act)
            deadline = time.monotonic() + 60
            while True:  # the API server batches for up to 1 s, then retries a refused batch from 1 s on
                mine = [e for e in await asyncio.to_thread(audit_events, settings)
                        if e.entity.name in (node, ns, pod) or e.entity.namespace == ns
                        or e.labels.get("target") == f"secrets in {ns}"]
                if {e.reason for e in mine} >= {"PodEvictionRequested", "NodeCordoned", "NodeLabelsChanged", "NodeUncordoned",
                                                "NodeObjectDeleted", "WorkloadDeleted", "NamespaceDeleted",
                                                "APIRequestFromPublicIP"} \
                        or time.monotonic() > deadline:
                    return mine
                await asyncio.sleep(0.5)
        finally:
            await runner.cleanup()
            await sink.stop()

    mine = asyncio.run(run())
    got = sorted((e.reason, e.entity.kind, e.labels["user"], e.labels["verb"], e.labels.get("change", "")) for e in mine)
    assert got == [("APIRequestFromPublicIP", "User", "admin", "list", ""),
                   ("NamespaceDeleted", "Namespace", "admin", "delete", ""),
                   ("NodeCordoned", "Node", "admin", "patch", ""),
                   ("NodeLabelsChanged", "Node", "admin", "patch", "maintenance=disk-swap"),
                   ("NodeObjectDeleted", "Node", "admin", "delete", ""),
                   ("NodeUncordoned", "Node", "admin", "patch", ""),
                   ("PodEvictionRequested", "Pod", "admin", "create", ""),
                   ("WorkloadDeleted", "Deployment", "admin", "delete", "")]
    # the team, read through the API as the Kubernetes collector reads it (here the namespace's label: the evicted
    # pod and the deleted Deployment are gone by the time their audit events are read), so their alerts reach it
    owned = {e.reason: (e.entity.workload, e.entity.owner) for e in mine if e.entity.namespace == ns and e.entity.kind != "Namespace"}
    assert owned == {"PodEvictionRequested": ("", "payments"), "WorkloadDeleted": ("Deployment/cart", "payments")}
    cordon = next(e for e in mine if e.reason == "NodeCordoned")
    assert (cordon.entity.node, cordon.entity.cluster, cordon.source) == (node, settings.cluster, "k8s-audit")
    assert cordon.message == f"admin patch nodes of Node {node}"
    assert cordon.labels["source_ip"] == "127.0.0.1" and cordon.labels["user_agent"]
    public = next(e for e in mine if e.reason == "APIRequestFromPublicIP")
    assert (public.labels["public_ip"], public.labels["source_ip"], public.entity.name) == ("8.8.4.4", "8.8.4.4", "admin")
    assert public.message == f"admin list secrets in {ns} from public address 8.8.4.4"
    # every other request of the admin here came from loopback: recorded by the policy, reported as nothing
    assert [(e.labels["public_ip"], e.labels["target"]) for e in audit_events(settings)
            if e.reason == "APIRequestFromPublicIP"] == [("8.8.4.4", f"secrets in {ns}")]
    # kwok's heartbeats and the node controller's taints on this node are the control plane's own: not reported
    assert all(e.labels["user"] == "admin" for e in mine)
