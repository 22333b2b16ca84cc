"""Owners from real ownership chains: the controllers of a real controller-manager create the
ReplicaSets, Pods and Jobs, the real scheduler binds the Pods (its ``Scheduled`` Events), and the
collector -- running with its least-privilege ServiceAccount -- resolves each Event to its workload and
team: from the workload's labels, its annotations, or the namespace's labels and annotations.
"""

from __future__ import annotations

import uuid

import pytest

from tests.cluster.conftest import ensure_namespace

IMAGE = "registry.k8s.io/pause:3.10"


def pod_template(labels: dict, **spec) -> dict:
    return {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "main", "image": IMAGE}], "terminationGracePeriodSeconds": 0, **spec}}


@pytest.fixture(scope="module")
def workloads(api, collector):
    """One namespace labelled for a team, one annotated, and a workload of every kind in them."""
    tag = uuid.uuid4().hex[:5]
    shop, batch = f"shop-{tag}", f"batch-{tag}"
    ensure_namespace(api, shop, {"team": "web"})
    api.core.create_namespace({"metadata": {"name": batch, "annotations": {"owner": "data"}}})
    ensure_namespace(api, batch)
    sel = lambda app: {"matchLabels": {"app": app}}  # noqa: E731
    # team on the Deployment's labels
    api.apps.create_namespaced_deployment(shop, {
        "metadata": {"name": "cart", "labels": {"team": "payments"}},
        "spec": {"replicas": 2, "selector": sel("cart"), "template": pod_template({"app": "cart"})}})
    # team on the StatefulSet's annotations
    api.apps.create_namespaced_stateful_set(shop, {
        "metadata": {"name": "db", "annotations": {"owner": "storage"}},
        "spec": {"replicas": 1, "serviceName": "db", "selector": sel("db"), "template": pod_template({"app": "db"})}})
    # no team on the DaemonSet: the namespace's label
    api.apps.create_namespaced_daemon_set(shop, {
        "metadata": {"name": "agent"},
        "spec": {"selector": sel("agent"), "template": pod_template({"app": "agent"})}})
    # a Job started from a CronJob (what `kubectl create job --from=cronjob/report` does): the CronJob's team
    cj = api.batch.create_namespaced_cron_job(batch, {
        # a team key on the CronJob (app.kubernetes.io/part-of, an application's name, would lose to the
        # namespace's owner annotation: tests/collectors test_a_team_key_anywhere_beats_the_application_key_part_of)
        "metadata": {"name": "report", "labels": {"team": "analytics"}},
        "spec": {"schedule": "0 0 1 1 *", "suspend": True,
                 "jobTemplate": {"spec": {"template": pod_template({}, restartPolicy="Never")}}}})
    api.batch.create_namespaced_job(batch, {
        "metadata": {"name": "report-manual", "ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "CronJob", "name": "report", "uid": cj.metadata.uid,
            "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"template": pod_template({}, restartPolicy="Never")}})
    # a plain Job in the annotated namespace: the namespace's annotation
    api.batch.create_namespaced_job(batch, {"metadata": {"name": "etl"},
                                            "spec": {"template": pod_template({}, restartPolicy="Never")}})
    return shop, batch


def scheduled(collector, ns: str, prefix: str, n: int = 1) -> list[dict]:
    """Wait for the ``Scheduled`` Event records of ``n`` distinct Pods named ``prefix-...`` in ``ns``."""
    recs = []

    def probe():
        recs[:] = collector.events.find(source="k8s", reason="Scheduled", entity__namespace=ns,
                                        entity__name=lambda v: str(v).startswith(prefix + "-"))
        return len({r["entity"]["name"] for r in recs}) >= n

    from tests.cluster.conftest import wait_for

    wait_for(f"Scheduled records of {n} pod(s) {ns}/{prefix}-*", probe, 90,
             detail=lambda: f"; got {[(r['entity']['name'], r['entity'].get('owner')) for r in collector.events.poll() if r['entity'].get('namespace') == ns]}")
    return recs


@pytest.mark.parametrize("prefix, workload, owner", [
    ("cart", "Deployment/cart", "payments"),  # Pod -> ReplicaSet -> Deployment, workload label
    ("db", "StatefulSet/db", "storage"),  # workload annotation
    ("agent", "DaemonSet/agent", "web"),  # namespace label
])
def test_shop_workloads(collector, workloads, prefix, workload, owner):
    shop, _ = workloads
    n = {"cart": 2, "agent": 3}.get(prefix, 1)
    recs = scheduled(collector, shop, prefix, n)
    got = {(r["entity"]["kind"], r["entity"]["workload"], r["entity"]["owner"]) for r in recs}
    assert got == {("Pod", workload, owner)}
    assert all(r["entity"]["node"].startswith("kwok-") for r in recs), [(r["entity"]["name"], r["entity"]["node"])
                                                                        for r in recs]
    assert all(r["entity"]["cluster"] == collector.cluster for r in recs)


def test_replicaset_events_name_the_deployment(collector, workloads):
    shop, _ = workloads
    recs = collector.events.wait("SuccessfulCreate of ReplicaSet cart-*", source="k8s", reason="SuccessfulCreate",
                                 entity__namespace=shop, entity__kind="ReplicaSet")
    assert {(r["entity"]["workload"], r["entity"]["owner"]) for r in recs} == {("Deployment/cart", "payments")}


@pytest.mark.parametrize("prefix, workload, owner", [
    ("report-manual", "CronJob/report", "analytics"),  # Pod -> Job -> CronJob, the CronJob's team label
    ("etl", "Job/etl", "data"),  # namespace annotation
])
def test_batch_workloads(collector, workloads, prefix, workload, owner):
    _, batch = workloads
    recs = scheduled(collector, batch, prefix)
    assert {(r["entity"]["workload"], r["entity"]["owner"]) for r in recs} == {(workload, owner)}
    # kwok completes Job pods; the Job controller reports it, resolved the same way
    done = collector.events.wait(f"Completed of Job {prefix}", 60, source="k8s", reason="Completed",
                                 entity__namespace=batch, entity__kind="Job", entity__name=prefix)
    assert {(r["entity"]["workload"], r["entity"]["owner"]) for r in done} == {(workload, owner)}


def test_a_replication_controller_s_pods_take_its_team(api, collector, workloads):
    """A ReplicationController (core/v1) is read for its team as a Deployment is: its pods had the namespace's."""
    shop, _ = workloads
    api.core.create_namespaced_replication_controller(shop, {
        "metadata": {"name": "legacy", "labels": {"team": "billing"}},
        "spec": {"replicas": 1, "selector": {"app": "legacy"}, "template": pod_template({"app": "legacy"})}})
    recs = scheduled(collector, shop, "legacy")
    assert {(r["entity"]["workload"], r["entity"]["owner"]) for r in recs} == \
        {("ReplicationController/legacy", "billing")}


def test_the_owners_topic_gives_scraped_series_of_the_cart_pods_their_team(api, collector, workloads):
    """What the workers join onto alerts from kube-state-metrics' series (streams.owners): each cart pod's team,
    workload and ReplicaSet, the namespace's team, and a tombstone for a pod deleted (its replacement written)."""
    from streams.owners import OwnerDirectory
    from tests.cluster.conftest import wait_for
    from tests.kafkatools import read_to_end

    shop, _ = workloads
    scheduled(collector, shop, "cart", 2)
    topic = f"{collector.prefix}owners"
    latest: dict = {}

    def read() -> dict:
        for r in read_to_end(collector.bootstrap, topic):
            latest[r.key.decode()] = r.value
        return latest

    prefix = f"{collector.cluster}/{shop}/Pod/cart-"
    wait_for("two cart pods on the owners topic", lambda: sum(1 for k, v in read().items()
                                                              if k.startswith(prefix) and v) >= 2, 60)
    d = OwnerDirectory(collector.cluster)
    for k, v in latest.items():
        d.apply(k.encode(), v)
    carts = {k: v for k, v in d.pods.items() if k[1] == shop and k[2].startswith("cart-")}
    assert {(team, wl, ctrl.rpartition("-")[0]) for team, wl, ctrl in carts.values()} == \
        {("payments", "Deployment/cart", "ReplicaSet/cart")}
    assert d.owner_of({"namespace": shop, "deployment": "cart"}) == "payments"
    assert d.owner_of({"namespace": shop, "persistentvolumeclaim": "data"}) == "web"
    victim = sorted(carts)[0][2]
    api.core.delete_namespaced_pod(victim, shop, grace_period_seconds=0)
    wait_for(f"the tombstone of {victim}", lambda: read().get(prefix[:-5] + victim, b"") is None, 60)
    wait_for("its replacement", lambda: sum(1 for k, v in read().items() if k.startswith(prefix) and v) >= 2, 60)


def owners_directory(collector, latest: dict):
    """The owners topic read to its end into ``latest`` (key -> last value), as the workers' directory."""
    from streams.owners import OwnerDirectory
    from tests.kafkatools import read_to_end

    for r in read_to_end(collector.bootstrap, f"{collector.prefix}owners"):
        latest[r.key.decode()] = r.value
    d = OwnerDirectory(collector.cluster)
    for k, v in latest.items():
        d.apply(k.encode(), v)
    return d


def test_a_deployment_whose_pods_the_quota_refuses_is_its_own_team_s_not_its_namespace_s(api, collector):
    """KubeDeploymentReplicasMismatch of a Deployment that has never had a pod (the real ResourceQuota admission
    refuses them, the real ReplicaSet controller says FailedCreate): no pod names its team, so its alert went to the
    namespace's. The collector writes the Deployment's own team from that Event."""
    from tests.cluster.conftest import wait_for

    ns = f"full-{uuid.uuid4().hex[:5]}"
    ensure_namespace(api, ns, {"team": "web"})
    api.core.create_namespaced_resource_quota(ns, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}})
    api.apps.create_namespaced_deployment(ns, {
        "metadata": {"name": "search", "labels": {"team": "search"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "search"}},
                 "template": pod_template({"app": "search"})}})
    collector.events.wait(f"FailedCreate of ReplicaSet {ns}/search-*", 90, source="k8s", reason="FailedCreate",
                          entity__namespace=ns, entity__kind="ReplicaSet")
    latest: dict = {}
    directory = lambda: owners_directory(collector, latest)  # noqa: E731

    wait_for("the Deployment's own record", lambda: directory().owner_of({"namespace": ns, "deployment": "search"})
             == "search", 60, detail=lambda: f"; {ns} records: {[k for k in latest if f'/{ns}' in k]}")
    d = directory()
    assert not [k for k in d.pods if k[1] == ns]  # no pod at all: the record is the workload's own
    assert d.owner_of({"namespace": ns, "persistentvolumeclaim": "data"}) == "web"


# ---------------------------------------------------------------- a CRD's controller opted into (--owner-kind)

ROLLOUTS = "argoproj.io/v1alpha1/rollouts=Rollout"


def manifest_rollouts_rule() -> dict:
    """The manifest's commented-out example rule, uncommented as an operator would: what the granted role adds."""
    import yaml

    from tests.cluster.conftest import MANIFESTS

    lines = (MANIFESTS / "collector-kubernetes.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# - apiGroups: [argoproj.io]")
    (rule,) = yaml.safe_load("\n".join(line.replace("# ", "", 1) for line in lines[start:start + 3]))
    return rule


@pytest.fixture(scope="module")
def rollout(api):
    """What Argo Rollouts makes, without Argo: its CRD, a Rollout labelled team=delivery in a namespace of team web,
    and a ReplicaSet controlled by the Rollout (one per revision, as Argo names them); the real ReplicaSet
    controller makes its pod, kwok runs it."""
    from kubernetes import client

    from tests.cluster.conftest import wait_for

    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "rollouts.argoproj.io"},
           "spec": {"group": "argoproj.io", "scope": "Namespaced",
                    "names": {"plural": "rollouts", "singular": "rollout", "kind": "Rollout", "listKind": "RolloutList"},
                    "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                        "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
    ext = client.ApiextensionsV1Api(api.client)
    try:
        ext.create_custom_resource_definition(crd)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    wait_for("the Rollout CRD established", lambda: any(
        c.type == "Established" and c.status == "True"
        for c in ext.read_custom_resource_definition("rollouts.argoproj.io").status.conditions or []), 30)
    ns = f"argo-{uuid.uuid4().hex[:5]}"
    ensure_namespace(api, ns, {"team": "web"})
    custom = client.CustomObjectsApi(api.client)
    ro = wait_for("the Rollout created", lambda: _create_rollout(custom, ns), 30)
    rs = api.apps.create_namespaced_replica_set(ns, {
        "metadata": {"name": "web-6c9f5b7d4", "labels": {"app": "web", "rollouts-pod-template-hash": "6c9f5b7d4"},
                     "ownerReferences": [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web",
                                          "uid": ro["metadata"]["uid"], "controller": True,
                                          "blockOwnerDeletion": True}]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": pod_template({"app": "web"})}})
    pod = wait_for("the Rollout's pod running on a kwok node", lambda: next(
        (p for p in api.core.list_namespaced_pod(ns, label_selector="app=web").items
         if p.spec.node_name and p.metadata.owner_references), None), 90)
    ref = pod.metadata.owner_references[0]
    assert (ref.kind, ref.name, ref.uid) == ("ReplicaSet", rs.metadata.name, rs.metadata.uid)
    return ns, pod.metadata.name, (ref.kind, ref.name, ref.uid)


def _create_rollout(custom, ns: str) -> dict | None:
    """The Rollout; None while the just-established CRD's endpoint still answers 404."""
    from kubernetes import client

    try:
        return custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", ns, "rollouts", {
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "labels": {"team": "delivery"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}}})
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        return None


@pytest.fixture(scope="module")
def rollouts_kubeconfig(cluster, api, collector_rbac, tmp_path_factory):
    """A ServiceAccount with the collector's ClusterRole plus the manifest's example rollouts rule (its own role:
    the shipped collector's must stay as least-privileged as test_least_privilege proves it)."""
    from tests.cluster.conftest import create_docs, sa_token

    (role,) = [d for d in collector_rbac if d["kind"] == "ClusterRole"]
    name = "kubesight-rollouts-reader"
    create_docs(api, [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": "kubesight"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": [*role["rules"], manifest_rollouts_rule()]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "kubesight"}]}])
    return cluster.write_kubeconfig(tmp_path_factory.mktemp("rollouts") / "kubeconfig", sa_token(api, "kubesight", name),
                                    f"system:serviceaccount:kubesight:{name}")


def owners_of(kubeconfig, *kinds: str):
    """``Owners`` as the collector builds them from ``--owner-kind`` flags, reading through the real client."""
    from collectors.kubernetes.api import Api, api_client
    from collectors.kubernetes.collector import Collector, Options
    from kubesight.cli import build_parser

    args = build_parser().parse_args(["collect", "kubernetes", *(a for k in kinds for a in ("--owner-kind", k))])
    client = api_client(str(kubeconfig))
    return Collector(Api(client, timeout=10), None, Options(owner_kinds=tuple(args.owner_kinds))).owners, client


def test_an_opted_in_rollout_gives_its_pods_its_team(rollout, rollouts_kubeconfig):
    """An SRE running Argo Rollouts: the Rollout's team label routes its pods' alerts, as a Deployment's does
    (without --owner-kind the pod was named after the Rollout with the namespace's team)."""
    ns, pod, owner = rollout
    owners, client = owners_of(rollouts_kubeconfig, ROLLOUTS)
    try:
        assert owners.resolve(ns, "Pod", pod, owner) == ("Rollout/web", "delivery")
        assert owners.resolve(ns, "ReplicaSet", owner[1]) == ("Rollout/web", "delivery")  # its SuccessfulCreate
        assert owners.resolve_named(ns, "Pod", pod) == ("Rollout/web", "delivery")  # an audit event's
    finally:
        client.close()
    plain, client = owners_of(rollouts_kubeconfig)  # not listed: as before, never asked
    try:
        assert plain.resolve(ns, "Pod", pod, owner) == ("Rollout/web", "web")
    finally:
        client.close()


def test_an_opted_in_rollout_the_role_refuses_is_said_once_and_gets_the_namespace_s_team(
        rollout, collector_kubeconfig, caplog):
    """The shipped role (rollouts rule left commented out): the real 403 is said once, the kind not asked again."""
    ns, pod, owner = rollout
    owners, client = owners_of(collector_kubeconfig, ROLLOUTS)
    try:
        with caplog.at_level("WARNING", "kubesight.collect.kubernetes"):
            assert owners.resolve(ns, "Pod", pod, owner) == ("Rollout/web", "web")
            fetches = owners.fetches
            assert owners.resolve(ns, "Rollout", "web") == ("Rollout/web", "web")
            assert owners.fetches == fetches
    finally:
        client.close()
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "403" in refused[0] and "Rollout" in refused[0], refused


# ---------------------------------------------------------------- a namespace relabelled, then deleted

def test_a_namespace_relabelled_gives_its_pods_the_new_team_at_once_and_its_deletion_a_tombstone(api, collector):
    """A team relabelled on a namespace reached the owners topic only at the hourly refresh of its pods (plus the
    owners cache's 5 minutes): alerts from kube-state-metrics' series paged the old team meanwhile. The collector
    watches Namespaces: the namespace's record and its pods' (their team is the namespace's) follow within seconds;
    the namespace deleted once its pods are gone, its record is tombstoned at once, not at the hourly sweep."""
    from tests.cluster.conftest import wait_for

    ns = f"move-{uuid.uuid4().hex[:5]}"
    ensure_namespace(api, ns, {"team": "web"})
    api.apps.create_namespaced_deployment(ns, {
        "metadata": {"name": "api"},  # no team of its own: the namespace's
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}}, "template": pod_template({"app": "api"})}})
    latest: dict = {}
    directory = lambda: owners_directory(collector, latest)  # noqa: E731

    def teams() -> tuple[set, str]:
        d = directory()
        return {team for (_, n, _), (team, _, _) in d.pods.items() if n == ns}, \
            d.owner_of({"namespace": ns, "persistentvolumeclaim": "data"})

    wait_for("the api pod's record, team web", lambda: teams() == ({"web"}, "web"), 90,
             detail=lambda: f"; {teams()}")
    api.core.patch_namespace(ns, {"metadata": {"labels": {"team": "search"}}})
    wait_for("the pod's and the namespace's records, team search", lambda: teams() == ({"search"}, "search"), 60,
             detail=lambda: f"; {teams()}")
    api.apps.delete_namespaced_deployment("api", ns, propagation_policy="Foreground")
    wait_for("the pod's tombstone", lambda: not teams()[0], 90, detail=lambda: f"; {teams()}")
    key = f"{collector.cluster}/{ns}"
    assert latest.get(key)  # the namespace still is, and so is its record
    api.core.delete_namespace(ns)
    wait_for("the namespace's tombstone", lambda: (directory(), latest.get(key, b""))[1] is None, 90,
             detail=lambda: f"; {latest.get(key)!r}")
