"""Owner kinds beyond Deployments and Jobs: a ReplicationController (core/v1) is read like a ReplicaSet's
Deployment, through the official client against the local API server; a CRD's controller is named, not read."""

from __future__ import annotations

from collectors.kubernetes.api import Api, api_client
from collectors.kubernetes.owners import Owners
from collectors.kubernetes.testing import FakeApiServer


def test_a_replication_controller_s_pods_and_events_take_its_team(tmp_path):
    """A pod of a ReplicationController was named after it with the namespace's team: RCs were not read."""
    with FakeApiServer() as srv:
        srv.put("namespaces", {"metadata": {"name": "shop", "labels": {"team": "web"}}})
        srv.put("replicationcontrollers", {"kind": "ReplicationController", "apiVersion": "v1", "metadata": {
            "name": "legacy", "namespace": "shop", "uid": "rc1", "labels": {"team": "billing"}}})
        srv.put("replicationcontrollers", {"kind": "ReplicationController", "apiVersion": "v1", "metadata": {
            "name": "old", "namespace": "shop", "uid": "rc2", "annotations": {"owner": "archive"}}})
        client = api_client(str(srv.kubeconfig(tmp_path / "kubeconfig")))
        try:
            o = Owners(Api(client, timeout=10).read, clock=lambda: 0.0)
            assert o.resolve("shop", "Pod", "legacy-x2x", ("ReplicationController", "legacy", "rc1")) == \
                ("ReplicationController/legacy", "billing")
            # its own Events (SuccessfulCreate) name it too, as a StatefulSet's do
            assert o.resolve("shop", "ReplicationController", "old") == ("ReplicationController/old", "archive")
            # a CRD's controller: named, its team the namespace's, not asked for (no role reads every CRD)
            assert o.resolve("shop", "Pod", "kafka-0", ("StrimziPodSet", "kafka")) == ("StrimziPodSet/kafka", "web")
            assert srv.requests == {"get replicationcontrollers": 2, "get namespaces": 1}
        finally:
            client.close()
