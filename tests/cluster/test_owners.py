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
