"""``kubesight remediate`` replicas on one cluster, against the real local control plane (kwok nodes, as
tests/cluster/test_remediation.py; the same named cluster when both run in one session) and the real broker: leader
election on the ``kubesight-remediation`` Lease (as the ServiceAccount and Role of remediation-rbac.yaml), and the
Events an action posts on its Node.

Two replicas once each applied ``max_nodes`` (3 let two cordon 6); a cordon left nothing for ``kubectl describe
node``. Lease timings are shortened here (client-go's 15/10/2 s in production) so that a takeover takes seconds.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import orjson
import pytest

from core.records import Alert
from core.settings import Remediation, Settings
from core.topics import ensure_topics
from rules.load import DEFAULT_PACK, load_packs
from streams.remediation import LEASE_NAME, LEASE_NAMESPACE, Kube, LeaderLease, Runner
from tests.cluster.conftest import MANIFESTS, Tail, ensure_namespace, manifest_docs, wait_for

pytestmark = pytest.mark.kafka

RULES = load_packs([DEFAULT_PACK])
TAG = uuid.uuid4().hex[:6]
POOL = f"lease-{TAG}"
NODES = [f"lease-{TAG}-{i}" for i in range(8)]


@pytest.fixture(scope="module")
def cluster():
    from deploy.cluster import launcher

    name = f"pytest-{os.getpid()}"  # tests/cluster's session cluster when it runs too: reused, left to it
    mine = launcher.status(name) is None
    c = launcher.start(name, attach=True, nodes=3, quiet=True)
    try:
        c.add_nodes(NODES, labels={"kubesight.io/pool": POOL})
        yield c
    finally:
        with c.api_client() as api:
            from kubernetes import client

            for n in NODES:
                try:
                    client.CoreV1Api(api).delete_node(n)
                except Exception:  # noqa: BLE001 - best effort
                    pass
        if mine:
            c.stop()


@pytest.fixture(scope="module")
def admin(cluster):
    """The admin's core and coordination APIs; the ServiceAccount, roles and bindings of remediation-rbac.yaml."""
    from types import SimpleNamespace

    from kubernetes import client

    from deploy.cluster import launcher

    api = cluster.api_client()
    a = SimpleNamespace(client=api, core=client.CoreV1Api(api), coord=client.CoordinationV1Api(api))
    ensure_namespace(a, "kubesight")
    launcher.create_objects(api, manifest_docs(MANIFESTS / "remediation-rbac.yaml"))
    yield a
    api.close()


@pytest.fixture
def sa_client(cluster, admin):
    """ApiClients as the remediator's ServiceAccount (remediation-rbac.yaml, nothing more); a clean Lease."""
    from kubernetes.client import ApiException

    from deploy.cluster import launcher

    token = launcher.service_account_token(admin.client, "kubesight", "kubesight-remediate")
    try:
        admin.coord.delete_namespaced_lease(LEASE_NAME, LEASE_NAMESPACE)
    except ApiException as exc:
        if exc.status != 404:
            raise
    made = []

    def make():
        c = cluster.api_client(token)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


class Replica:
    """One ``Runner`` with its own Kube and Lease, in a thread."""

    def __init__(self, settings: Settings, bootstrap: str, api_client, **timing):
        self.kube = Kube(api_client)
        self.lease = LeaderLease(api_client, **timing)
        self.runner = Runner(settings, bootstrap, self.kube, rules=RULES, tick_every=0.5, lease=self.lease)
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.runner.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.error.append(exc)

    def stop(self):
        self.runner.stop()
        self.thread.join(30)
        assert not self.thread.is_alive() and not self.error, self.error


class Storm:
    """Topics of one test: alerts in (to a chosen partition), the actions trail out, the consumer group's members."""

    def __init__(self, bootstrap: str, **remediation):
        from kafka import KafkaProducer
        from kafka.admin import KafkaAdminClient

        tag = uuid.uuid4().hex[:8]
        self.settings = Settings(kafka=bootstrap, topic_prefix=f"l{tag}-", app_id=f"lease-{tag}", partitions=2,
                                 remediation=Remediation(dry_run=False, pool_labels=["kubesight.io/pool"], **remediation))
        ensure_topics(self.settings, bootstrap)
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        self.trail = Tail(bootstrap, self.settings.topic("actions"))

    def send(self, alert: Alert, partition: int = 0) -> None:
        self.producer.send(self.settings.topic("alerts"), key=alert.key(), value=orjson.dumps(alert.to_dict()),
                           partition=partition).get(30)

    def members(self) -> list | None:
        """The group's members once it is Stable, [] when it has none (None while it rebalances)."""
        g = self.admin.describe_groups([f"{self.settings.app_id}-remediation"])
        g = next(iter(g.values())) if isinstance(g, dict) else g[0]
        g = g if isinstance(g, dict) else g._asdict()
        state = g.get("group_state", g.get("state"))
        return g.get("members") if state == "Stable" else [] if state in ("Empty", "Dead") else None

    def cordons(self, outcome: str) -> list[dict]:
        return self.trail.find(kind="action", action__type="cordon", outcome=outcome)

    def close(self):
        self.producer.close()
        self.admin.close()
        self.trail.close()


def deadlock(node: str, t: float, tag: str = "") -> Alert:
    rule = next(r for r in RULES.rules if r.alert == "NodeKernelDeadlock")  # its condition and a cordon
    return Alert({"alertname": "NodeKernelDeadlock", "node": node, "severity": "critical", "test": tag},
                 {"summary": f"kernel deadlock on {node}"}, "firing", t, source=rule.origin)


def unschedulable(admin) -> list[str]:
    return sorted(n for n in NODES if admin.core.read_node(n).spec.unschedulable)


def uncordon_all(admin) -> None:
    for n in NODES:
        admin.core.patch_node(n, {"spec": {"unschedulable": False}})


FAST = {"duration": 4.0, "renew_deadline": 3.0, "retry": 0.5}


def test_two_replicas_one_lease_a_storm_cordons_max_nodes_once_and_the_other_takes_over(kafka_bootstrap, admin,
                                                                                        sa_client):
    uncordon_all(admin)
    s = Storm(kafka_bootstrap, max_nodes=3, max_percent=100, max_unschedulable_percent=100)
    a, b = (Replica(s.settings, kafka_bootstrap, sa_client(), **FAST) for _ in range(2))
    try:
        reps = {r.lease.identity: r for r in (a, b)}
        lead = wait_for("one replica leading, the other a candidate that saw it", lambda: next((
            r for r in reps.values() if r.runner.leading.is_set() and all(
                o.lease.holder == r.lease.identity and not o.runner.leading.is_set()
                for o in reps.values() if o is not r)), None), 30)
        other = next(r for r in reps.values() if r is not lead)
        # the candidate is in no consumer group: the group, once stable, is the leader alone (both partitions)
        members = wait_for("the consumer group stable", lambda: s.members() or None, 30)
        leaders = sum(r.runner.leading.is_set() for r in reps.values())
        assert len(members) == leaders == 1, members

        t0 = time.time()
        for i, n in enumerate(NODES[:6]):  # both partitions: two group members would get three each
            s.send(deadlock(n, t0 + i), partition=i % 2)
        wait_for("every cordon of the storm decided", lambda: len(s.cordons("done")) + len(s.cordons("refused")) >= 6,
                 60)
        done = s.cordons("done")
        assert len(done) == 3 and len(unschedulable(admin)) == 3, (done, unschedulable(admin))
        assert {r["replica"] for r in s.trail.find(kind="action")} == {lead.lease.identity}

        # the leader stops (it releases the Lease): the other takes over, reads what the first did, and acts
        lead.stop()
        wait_for("the other replica leading", other.runner.leading.is_set, 15)
        cordoned = unschedulable(admin)
        again = deadlock(cordoned[0], time.time())  # a new episode on a node already acted on: within max_nodes
        fresh = NODES[6]  # a node never acted on: max_nodes already reached by the first leader
        s.send(again, partition=0)
        s.send(deadlock(fresh, time.time()), partition=1)

        def mine(**w):
            return [r for r in s.trail.find(kind="action", **w) if r["replica"] == other.lease.identity]

        wait_for("the new leader's cordon of the new episode", lambda: mine(node=cordoned[0], outcome="done"), 30)
        [refused] = wait_for("the new leader's refusal past max_nodes", lambda: mine(node=fresh, outcome="refused"), 30)
        assert "max_nodes 3" in refused["reason"]
        assert unschedulable(admin) == cordoned
    finally:
        for r in (a, b):
            r.runner.stop()
        for r in (a, b):
            r.thread.join(30)
        s.close()


def set_holder(admin, holder) -> None:
    """Write the Lease's holder by hand, as an operator would: read, change, replace with the read resourceVersion,
    again on a 409 (the leader renewed in between: it renews every 0.5 s here, so one try raced it now and then)."""
    from kubernetes.client.exceptions import ApiException

    deadline = time.monotonic() + 30
    while True:
        lease = admin.coord.read_namespaced_lease(LEASE_NAME, LEASE_NAMESPACE)
        lease.spec.holder_identity = holder
        try:
            admin.coord.replace_namespaced_lease(LEASE_NAME, LEASE_NAMESPACE, lease)
            return
        except ApiException as exc:
            if exc.status != 409 or time.monotonic() > deadline:
                raise


def test_a_leader_whose_lease_is_taken_stops_at_once_and_acts_again_only_once_it_holds_it(kafka_bootstrap, admin,
                                                                                          sa_client):
    """A renew deadline of 20 s: a leader that went on until it lapsed would still act when the alert comes."""
    uncordon_all(admin)
    s = Storm(kafka_bootstrap, max_nodes=10, max_percent=100, max_unschedulable_percent=100)
    r = Replica(s.settings, kafka_bootstrap, sa_client(), duration=30.0, renew_deadline=20.0, retry=0.5)
    try:
        wait_for("the replica leading", r.runner.leading.is_set, 30)
        lease = admin.coord.read_namespaced_lease(LEASE_NAME, LEASE_NAMESPACE)
        assert lease.spec.holder_identity == r.lease.identity and lease.spec.lease_duration_seconds == 30
        set_holder(admin, "someone-else")  # taken over by hand
        wait_for("the replica to stop acting", lambda: not r.runner.leading.is_set(), 10)
        wait_for("it to leave the consumer group", lambda: s.members() == [], 30)
        s.send(deadlock(NODES[0], time.time()))
        released = time.time()
        set_holder(admin, None)  # released: free to take at once
        [done] = s.trail.wait("the cordon once it leads again", kind="action", node=NODES[0], outcome="done",
                              action__type="cordon")
        assert done["t"] >= released and r.runner.terms == 2
        assert admin.core.read_node(NODES[0]).spec.unschedulable
    finally:
        r.runner.stop()
        r.thread.join(30)
        s.close()


def test_a_cordon_and_a_refusal_post_events_on_the_node(kafka_bootstrap, admin, sa_client):
    uncordon_all(admin)
    s = Storm(kafka_bootstrap, max_nodes=1, max_percent=100, max_unschedulable_percent=100)
    r = Replica(s.settings, kafka_bootstrap, sa_client(), **FAST)
    try:
        wait_for("the replica leading", r.runner.leading.is_set, 30)
        t0 = time.time()
        tag = uuid.uuid4().hex[:6]  # a label of this test: its alerts' fingerprints are its own
        first, second = deadlock(NODES[1], t0, tag), deadlock(NODES[2], t0 + 1, tag)
        s.send(first)
        s.send(second)

        def events(node: str, reason: str) -> list:  # of this test's alerts (the node may have older ones)
            return [e for e in admin.core.list_namespaced_event(
                "default", field_selector=f"involvedObject.name={node}").items
                if e.reason == reason and any(a.fingerprint in e.message for a in (first, second))]

        [ev] = wait_for("the cordon's Event", lambda: events(NODES[1], "KubesightCordon"), 30)
        assert (ev.type, ev.involved_object.kind, ev.involved_object.name) == ("Normal", "Node", NODES[1])
        assert ev.source.component == "kubesight" and ev.reporting_component == "kubesight"
        assert "NodeKernelDeadlock" in ev.message and first.fingerprint in ev.message and "cordoned" in ev.message
        [warn] = wait_for("the refusal's Event", lambda: events(NODES[2], "KubesightCordonRefused"), 30)
        assert warn.type == "Warning" and "max_nodes 1" in warn.message and second.fingerprint in warn.message
        assert not admin.core.read_node(NODES[2]).spec.unschedulable
    finally:
        r.runner.stop()
        r.thread.join(30)
        s.close()
