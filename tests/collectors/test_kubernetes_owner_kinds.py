"""Owner kinds beyond Deployments and Jobs: a ReplicationController (core/v1) is read like a ReplicaSet's
Deployment, through the official client against the local API server; a CRD's controller is named, not read,
unless its kind is opted into (``--owner-kind``): then it is read for its team (the GET of the custom object on a
real API server: tests/cluster/test_owners.py)."""

from __future__ import annotations

import pytest

from collectors.kubernetes.api import Api, OwnerKind, api_client
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


# ---------------------------------------------------------------- custom kinds opted into (--owner-kind)

ROLLOUT = OwnerKind("argoproj.io", "v1alpha1", "rollouts", "Rollout")
PODSET = OwnerKind("core.strimzi.io", "v1beta2", "strimzipodsets", "StrimziPodSet")
KAFKA = OwnerKind("kafka.strimzi.io", "v1beta2", "kafkas", "Kafka")


class Forbidden(Exception):
    status = 403
    body = b'{"message": "rollouts.argoproj.io \\"web\\" is forbidden"}'


def argo_objects() -> dict:
    """What Argo Rollouts makes: a ReplicaSet per revision, controlled by the Rollout, in a namespace of team web."""
    return {("Namespace", "", "shop"): {"metadata": {"labels": {"team": "web"}}},
            ("ReplicaSet", "shop", "web-6c9f"): {"metadata": {"uid": "rs1", "ownerReferences": [
                {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web", "uid": "ro1",
                 "controller": True}]}},
            ("Rollout", "shop", "web"): {"metadata": {"uid": "ro1", "labels": {"team": "delivery"}}},
            ("StrimziPodSet", "shop", "kafka-brokers"): {"metadata": {"uid": "ps1", "ownerReferences": [
                {"kind": "Kafka", "name": "events", "uid": "k1", "controller": True}]}},
            ("Kafka", "shop", "events"): {"metadata": {"uid": "k1", "annotations": {"owner": "streaming"}}}}


def fetcher(objs: dict, calls: list):
    """A ``fetch`` as ``Api.read``: a custom kind is asked with its OwnerKind (the resource to GET)."""
    def fetch(kind, ns, name, custom=None):
        calls.append((kind, name, custom))
        obj = objs.get((kind, ns, name))
        if isinstance(obj, Exception):
            raise obj
        return obj
    return fetch


def test_a_listed_rollout_gives_its_pods_and_replicasets_its_team():
    """An Argo Rollout's pods were named after it with the namespace's team: Rollouts were never read."""
    calls: list = []
    o = Owners(fetcher(argo_objects(), calls), clock=lambda: 0.0, kinds=(ROLLOUT,))
    assert o.resolve("shop", "Pod", "web-6c9f-x", ("ReplicaSet", "web-6c9f", "rs1"), "6c9f") == ("Rollout/web", "delivery")
    assert ("Rollout", "web", ROLLOUT) in calls  # read through its resource, not a built-in reader
    # the ReplicaSet's own Events (SuccessfulCreate), and the Rollout's (RolloutUpdated), name it the same
    assert o.resolve("shop", "ReplicaSet", "web-6c9f") == ("Rollout/web", "delivery")
    assert o.resolve("shop", "Rollout", "web") == ("Rollout/web", "delivery")
    assert sum(1 for c in calls if c[0] == "Rollout") == 1  # cached like a Deployment
    # an audit event naming the pod only: the controller read from the pod
    objs = argo_objects() | {("Pod", "shop", "web-6c9f-y"): {"metadata": {"ownerReferences": [
        {"kind": "ReplicaSet", "name": "web-6c9f", "uid": "rs1", "controller": True}]}}}
    o = Owners(fetcher(objs, []), clock=lambda: 0.0, kinds=(ROLLOUT,))
    assert o.resolve_named("shop", "Pod", "web-6c9f-y") == ("Rollout/web", "delivery")


def test_a_listed_kind_s_controller_is_followed_one_step_if_listed_too():
    """A StrimziPodSet owns its pods directly; its Kafka holds the team when both are listed, not when only one is."""
    both = Owners(fetcher(argo_objects(), []), clock=lambda: 0.0, kinds=(PODSET, KAFKA))
    assert both.resolve("shop", "Pod", "kafka-brokers-0", ("StrimziPodSet", "kafka-brokers", "ps1")) == \
        ("Kafka/events", "streaming")
    calls: list = []
    one = Owners(fetcher(argo_objects(), calls), clock=lambda: 0.0, kinds=(PODSET,))
    assert one.resolve("shop", "Pod", "kafka-brokers-0", ("StrimziPodSet", "kafka-brokers", "ps1")) == \
        ("StrimziPodSet/kafka-brokers", "web")
    assert not [c for c in calls if c[0] == "Kafka"]


def test_an_unlisted_kind_is_named_and_never_asked(caplog):
    calls: list = []
    o = Owners(fetcher(argo_objects(), calls), clock=lambda: 0.0, kinds=(PODSET,))
    with caplog.at_level("INFO", "kubesight.collect.kubernetes"):
        for pod in ("web-6c9f-x", "web-6c9f-y"):
            assert o.resolve("shop", "Pod", pod, ("ReplicaSet", "web-6c9f", "rs1")) == ("Rollout/web", "web")
    assert not [c for c in calls if c[0] == "Rollout"]
    said = [r.getMessage() for r in caplog.records if "Rollout/web" in r.getMessage()]
    assert len(said) == 1 and "--owner-kind GROUP/VERSION/PLURAL=Rollout" in said[0], said


def test_a_listed_kind_refused_is_said_once_and_gets_the_namespace_s_team(caplog):
    """A 403 (the role lacks the rule the manifest leaves commented out): today's behaviour, one warning."""
    calls: list = []
    objs = argo_objects() | {("Rollout", "shop", "web"): Forbidden()}
    o = Owners(fetcher(objs, calls), clock=lambda: 0.0, kinds=(ROLLOUT,))
    with caplog.at_level("WARNING", "kubesight.collect.kubernetes"):
        for _ in range(3):
            assert o.resolve("shop", "Pod", "web-6c9f-x", ("ReplicaSet", "web-6c9f", "rs1")) == ("Rollout/web", "web")
        assert o.resolve("shop", "Rollout", "web") == ("Rollout/web", "web")
    assert sum(1 for c in calls if c[0] == "Rollout") == 1
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "403" in refused[0] and "Rollout" in refused[0], refused


def test_owner_kind_flag_reaches_the_collector_s_and_the_audit_intake_s_owners():
    from collectors.kubernetes.cli import owners_for
    from collectors.kubernetes.collector import Collector, Options
    from kubesight.cli import build_parser

    args = build_parser().parse_args(["collect", "kubernetes", "--owner-kind", "argoproj.io/v1alpha1/rollouts=Rollout",
                                      "--owner-kind", " core.strimzi.io/v1beta2/strimzipodsets = StrimziPodSet "])
    assert args.owner_kinds == [ROLLOUT, PODSET]
    assert owners_for(args, None).kinds == {"Rollout": ROLLOUT, "StrimziPodSet": PODSET}
    assert build_parser().parse_args(["collect", "kubernetes"]).owner_kinds == []
    audit = build_parser().parse_args(["collect", "cloud", "--owner-kind", "argoproj.io/v1alpha1/rollouts=Rollout"])
    assert owners_for(audit, None).kinds == {"Rollout": ROLLOUT}

    class FakeApi:
        def read(self, *a):
            return None

    c = Collector(FakeApi(), None, Options(owner_kinds=(ROLLOUT,)))
    assert c.owners.kinds == {"Rollout": ROLLOUT}
    assert Collector(FakeApi(), None, Options()).owners.kinds == {}


@pytest.mark.parametrize("bad", ["argoproj.io/rollouts=Rollout", "argoproj.io/v1alpha1/rollouts",
                                 "argoproj.io/v1alpha1/rollouts=", "apps/v1/deployments=Deployment"])
def test_a_malformed_owner_kind_is_refused_at_the_command_line(bad, capsys):
    from kubesight.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["collect", "kubernetes", "--owner-kind", bad])
    assert exc.value.code == 2
    assert "--owner-kind" in capsys.readouterr().err
