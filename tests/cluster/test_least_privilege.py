"""Least privilege, proved by the real authenticator and authorizer of a real kube-apiserver.

The collector's ClusterRole (deploy/kubernetes/collector-kubernetes.yaml) is applied as shipped, the
collector authenticates with a ServiceAccount token from the TokenRequest API, and:
- every request the collector's code makes (its watched streams, its owner reads) is allowed;
- nothing else is: SelfSubjectRulesReview lists no other resource rule, and writes or secret
  reads are refused both by SelfSubjectAccessReview and by the real request (403).
"""

from __future__ import annotations

import pytest
from kubernetes import client

from collectors.kubernetes.api import READERS, STREAMS

# what the code calls -> (API group, resource); a new stream or reader must be added here and to the role
RESOURCES = {
    "events": ("", "events"), "events.k8s.io": ("events.k8s.io", "events"), "nodes": ("", "nodes"),
    "pods": ("", "pods"), "namespaces": ("", "namespaces"), "Namespace": ("", "namespaces"), "Pod": ("", "pods"),
    "ReplicaSet": ("apps", "replicasets"), "Deployment": ("apps", "deployments"),
    "StatefulSet": ("apps", "statefulsets"), "DaemonSet": ("apps", "daemonsets"), "Job": ("batch", "jobs"),
    "CronJob": ("batch", "cronjobs"), "ReplicationController": ("", "replicationcontrollers"),
}


def needs() -> set[tuple[str, str, str]]:
    """(verb, group, resource) of every request the collector's code makes."""
    out = set()
    for name in STREAMS:
        g, r = RESOURCES[name]
        out |= {("list", g, r), ("watch", g, r)}
    for kind in READERS:
        g, r = RESOURCES[kind]
        out.add(("get", g, r))
    return out


NEVER = [  # (verb, group, resource, subresource): what a read-only collector must never be able to do
    ("create", "", "pods", ""), ("delete", "", "pods", ""), ("patch", "", "nodes", ""),
    ("update", "", "nodes", "status"), ("create", "", "events", ""), ("delete", "", "events", ""),
    ("get", "", "secrets", ""), ("list", "", "secrets", ""), ("get", "", "configmaps", ""),
    ("create", "", "pods", "exec"), ("create", "", "serviceaccounts", "token"),
    ("update", "apps", "deployments", ""), ("delete", "", "namespaces", ""),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", ""),
]


@pytest.fixture(scope="module")
def sa(cluster, collector_kubeconfig):
    from kubernetes import config

    cfg = client.Configuration()
    config.load_kube_config(str(collector_kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as c:
        yield c


def review(sa, verb, group, resource, sub="", namespace=""):
    r = client.AuthorizationV1Api(sa).create_self_subject_access_review({
        "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                        "subresource": sub, "namespace": namespace}}})
    return r.status.allowed


def test_token_authenticates_as_the_service_account(sa):
    who = client.AuthenticationV1Api(sa).create_self_subject_review({})
    assert who.status.user_info.username == "system:serviceaccount:kubesight:kubesight-kubernetes"
    assert "system:masters" not in (who.status.user_info.groups or [])


def test_everything_the_collector_needs_is_allowed(sa):
    denied = [(v, g, r) for v, g, r in sorted(needs()) if not review(sa, v, g, r)]
    assert not denied, f"the shipped ClusterRole refuses what the collector does: {denied}"
    # and in a namespace, as the owner reads happen
    assert review(sa, "get", "apps", "replicasets", namespace="default")


def test_nothing_else_is_allowed(sa):
    allowed = [n for n in NEVER if review(sa, n[0], n[1], n[2], n[3], namespace="default")]
    assert not allowed, f"the collector's ServiceAccount may do more than it should: {allowed}"
    rules = client.AuthorizationV1Api(sa).create_self_subject_rules_review({"spec": {"namespace": "default"}})
    granted = set()
    for rule in rules.status.resource_rules:
        for g in rule.api_groups or [""]:
            for r in rule.resources or []:
                for v in rule.verbs:
                    granted.add((v, g, r))
    # what every authenticated user may do (system:basic-user, system:discovery) is not the collector's
    granted = {x for x in granted if x[1] not in ("authorization.k8s.io", "authentication.k8s.io")}
    extra = granted - needs()
    assert not extra, f"the ClusterRole grants more than the collector uses: {sorted(extra)}"
    assert needs() <= granted


def test_real_requests_are_refused(sa, api):
    core = client.CoreV1Api(sa)
    with pytest.raises(client.ApiException) as exc:
        core.list_namespaced_secret("kube-system")
    assert exc.value.status == 403
    with pytest.raises(client.ApiException) as exc:
        core.create_namespaced_event("default", {
            "metadata": {"name": "ks-forged"}, "reason": "Forged", "message": "must be refused",
            "involvedObject": {"kind": "Pod", "name": "x", "namespace": "default"}})
    assert exc.value.status == 403
    node = api.core.list_node().items[0].metadata.name
    with pytest.raises(client.ApiException) as exc:
        core.patch_node(node, {"metadata": {"labels": {"pwned": "yes"}}})
    assert exc.value.status == 403
    assert "pwned" not in (api.core.read_node(node).metadata.labels or {})
    # while the reads it needs work
    assert core.list_pod_for_all_namespaces(limit=1).items is not None
    assert core.read_namespace("default").metadata.name == "default"
