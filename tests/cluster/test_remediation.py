"""``kubesight remediate`` against the real local control plane (kwok nodes) and the real broker.

A kernel line ``NVRM: Xid ...: 79`` goes through the kernel collector's classifier and the production
rules engine (default pack) in process; the alert it yields is produced to the ``alerts`` topic and the
remediator (``streams.remediation.Runner``, as the ServiceAccount of deploy/kubernetes/remediation-rbac.yaml)
acts on the cluster. Asserted on the API server's objects and on the ``actions`` topic (the audit trail).
"""

from __future__ import annotations

import threading
import time
import uuid

import orjson
import pytest

from core.records import Alert
from core.settings import Remediation, Settings
from core.topics import ensure_topics
from rules.load import DEFAULT_PACK, load_packs
from streams.remediation import ANNOTATION, FORBIDDEN_ALERT, Kube, Runner
from tests.cluster.conftest import (
    MANIFESTS,
    Tail,
    create_docs,
    ensure_namespace,
    manifest_docs,
    sa_token,
    wait_for,
)

TAG = uuid.uuid4().hex[:6]
POOL = f"rem-{TAG}"
NODES = [f"rem-{TAG}-{i}" for i in range(5)]
SOLO = f"rem-{TAG}-solo"
XID79 = "NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus."


@pytest.fixture(scope="module")
def ruleset():
    return load_packs([DEFAULT_PACK])


@pytest.fixture(scope="module")
def rem_nodes(cluster, api):
    cluster.add_nodes(NODES, labels={"kubesight.io/pool": POOL})
    cluster.add_nodes([SOLO], labels={"kubesight.io/pool": f"{POOL}-solo"})
    yield
    for n in NODES + [SOLO]:
        try:
            api.core.delete_node(n)
        except Exception:  # noqa: BLE001 - best effort
            pass


@pytest.fixture(scope="module")
def kube(cluster, api, rem_nodes):
    """The remediator's API access: the ServiceAccount and ClusterRole of remediation-rbac.yaml, nothing more."""
    ensure_namespace(api, "kubesight")
    create_docs(api, manifest_docs(MANIFESTS / "remediation-rbac.yaml"))
    token = sa_token(api, "kubesight", "kubesight-remediate")
    k = Kube(cluster.api_client(token))
    wait_for("the remediate role to be effective", lambda: _can(k), 30)
    return k


def _can(k: Kube) -> bool:
    try:
        k.nodes()
        return True
    except Exception:  # noqa: BLE001
        return False


def xid_alert(ruleset, node: str, t: float) -> Alert:
    """The kernel line through the real classifier and rules engine: the GPUXidFatal alert for ``node``."""
    from collectors.kernel.classify import Classifier
    from collectors.kernel.lines import parse_line
    from collectors.kernel.patterns import load_patterns
    from rules.engine import Engine

    clf = Classifier(load_patterns(), node=node, fallback_time=t)
    events = clf.feed(parse_line(XID79), 1) + clf.flush()
    alerts = [a for ev in events for a in Engine(ruleset).process(ev, {}, now=ev.time)]
    assert [a.labels["alertname"] for a in alerts] == ["GPUXidFatal"], alerts
    return alerts[0]


class Harness:
    """One topic prefix: produce alerts, run remediators (threads), read the trail."""

    def __init__(self, bootstrap: str, kube: Kube, ruleset, **remediation):
        tag = uuid.uuid4().hex[:8]
        self.settings = Settings(kafka=bootstrap, topic_prefix=f"r{tag}-", app_id=f"rem-{tag}", partitions=2,
                                 remediation=Remediation(pool_labels=["kubesight.io/pool"], **remediation))
        ensure_topics(self.settings, bootstrap)
        self.bootstrap, self.kube, self.ruleset = bootstrap, kube, ruleset
        from kafka import KafkaProducer

        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.trail = Tail(bootstrap, self.settings.topic("actions"))
        self.alerts = Tail(bootstrap, self.settings.topic("alerts"))
        self.runner: Runner | None = None
        self.thread: threading.Thread | None = None
        self.error: list[BaseException] = []

    def send(self, alert: Alert) -> None:
        self.producer.send(self.settings.topic("alerts"), key=alert.key(), value=orjson.dumps(alert.to_dict())).get(30)

    def start(self, group: str) -> None:
        self.runner = Runner(self.settings, self.bootstrap, self.kube, rules=self.ruleset, group=group, tick_every=0.5)

        def run():
            try:
                self.runner.run()
            except BaseException as exc:  # noqa: BLE001 - surfaced by the test
                self.error.append(exc)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        wait_for("the remediator to start", lambda: self.runner.ready.is_set() or self.error, 60)
        assert not self.error, self.error

    def stop(self) -> None:
        self.runner.stop()
        self.thread.join(20)
        assert not self.thread.is_alive() and not self.error, self.error

    def records(self, **want) -> list[dict]:
        return self.trail.find(**want)

    def close(self):
        if self.thread and self.thread.is_alive():
            self.runner.stop()
            self.thread.join(20)
        self.producer.close()
        self.trail.close()
        self.alerts.close()


@pytest.fixture
def harness(kafka_bootstrap, kube, ruleset):
    made = []

    def make(**remediation):
        h = Harness(kafka_bootstrap, kube, ruleset, **remediation)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def node(api, name: str):
    return api.core.read_node(name)


def condition(n, ctype: str):
    return next((c for c in n.status.conditions or () if c.type == ctype), None)


def test_dry_run_default_changes_nothing(api, harness, ruleset):
    h = harness()  # the default settings: dry_run true
    assert h.settings.remediation.dry_run is True
    before = node(api, NODES[4])
    h.start("g1")
    h.send(xid_alert(ruleset, NODES[4], time.time()))
    h.trail.wait("the would-be cordon", kind="action", node=NODES[4], outcome="dry-run", action__type="cordon")
    h.trail.wait("the would-be taint", kind="action", node=NODES[4], outcome="dry-run", action__type="taint")
    h.trail.wait("the would-be condition", kind="condition", node=NODES[4], outcome="dry-run",
                 condition__type="GPUUnhealthy", condition__status="True")
    h.trail.wait("the would-be event", kind="event", node=NODES[4], outcome="dry-run")
    h.stop()
    after = node(api, NODES[4])
    assert not after.spec.unschedulable and not after.spec.taints
    assert condition(after, "GPUUnhealthy") is None
    assert ANNOTATION not in (after.metadata.annotations or {})
    assert after.metadata.resource_version == before.metadata.resource_version or \
        [c.type for c in after.status.conditions] == [c.type for c in before.status.conditions]  # only kwok's heartbeats
    evs = api.core.list_namespaced_event("default", field_selector=f"involvedObject.name={NODES[4]}").items
    assert not [e for e in evs if e.source and e.source.component == "kubesight"]
    assert all(r["dry_run"] for r in h.records())


def test_xid79_conditions_cordon_limits_restart_and_a_persons_uncordon(api, harness, ruleset):
    h = harness(dry_run=False, max_nodes=3, max_percent=100)
    h.start("g1")
    t0 = time.time()
    first = xid_alert(ruleset, NODES[0], t0)
    h.send(first)
    # condition (server-side apply, manager kubesight), cordon, taint, event
    n0 = wait_for("GPUUnhealthy on the node", lambda: (lambda n: condition(n, "GPUUnhealthy") and n)(node(api, NODES[0])), 30)
    c = condition(n0, "GPUUnhealthy")
    assert (c.status, c.reason) == ("True", "FatalXid") and "Xid 79" in c.message
    assert condition(n0, "Ready").status == "True"  # kwok's conditions are untouched
    assert any(m.manager == "kubesight" and m.subresource == "status" for m in n0.metadata.managed_fields)
    # the pack's cordon and taint are two actions, two writes: wait for both (CI once saw the cordon alone)
    tainted = lambda n: any(t.key == "kubesight.io/gpu-unhealthy" and t.effect == "NoSchedule"  # noqa: E731
                            for t in n.spec.taints or ())
    n0 = wait_for("the cordon and the taint", lambda: (lambda n: n.spec.unschedulable and tainted(n) and n)(
        node(api, NODES[0])), 30)
    assert first.fingerprint in n0.metadata.annotations[ANNOTATION]
    wait_for("the Event on the node", lambda: [e for e in api.core.list_namespaced_event(
        "default", field_selector=f"involvedObject.name={NODES[0]}").items if e.reason == "GPUXidFatal"], 30)

    # limits: three nodes within the window, the fourth is refused
    for i in (1, 2):  # one after the other: alerts of different nodes may sit on different partitions
        h.send(xid_alert(ruleset, NODES[i], t0 + i))
        wait_for(f"{NODES[i]} cordoned", lambda i=i: node(api, NODES[i]).spec.unschedulable, 30)
    h.send(xid_alert(ruleset, NODES[3], t0 + 3))
    refused = h.trail.wait("the fourth node refused", kind="action", node=NODES[3], outcome="refused",
                           action__type="cordon")
    assert "max_nodes 3" in refused[0]["reason"] and refused[0]["alert"]["labels"]["node"] == NODES[3]
    assert not node(api, NODES[3]).spec.unschedulable
    cordons = lambda: [r for r in h.records(kind="action", action__type="cordon")  # noqa: E731
                       if r["outcome"] in ("done", "recovered")]
    assert sorted(r["node"] for r in cordons()) == sorted(NODES[:3])

    # a person uncordons NODES[0]; the remediator restarts and every alert is replayed (a new consumer group)
    h.stop()
    api.core.patch_node(NODES[0], {"spec": {"unschedulable": False}})
    rv1 = node(api, NODES[1]).metadata.resource_version
    seen = len(h.records())
    h.start("g2-replay")
    h.send(first)  # and the same alert once more, for good measure
    h.trail.wait("the person's uncordon noted", kind="action", node=NODES[0], outcome="respected",
                 action__type="cordon")
    time.sleep(2)  # let the replay finish: it must add nothing else
    new = h.records()[seen:]
    assert all(r["outcome"] in ("respected", "refused") for r in new), new
    assert not [r for r in new if r["outcome"] == "refused" and r["node"] != NODES[3]]
    assert not node(api, NODES[0]).spec.unschedulable  # the person's uncordon stands
    assert node(api, NODES[1]).spec.unschedulable and node(api, NODES[1]).metadata.resource_version == rv1 or \
        node(api, NODES[1]).spec.unschedulable  # (kwok heartbeats may bump it; no second cordon record)
    assert len(cordons()) == 3

    # the alert resolves: the condition goes False with NPD's style of reason; the cordon is not undone
    h.send(Alert(labels=first.labels, annotations=first.annotations, status="resolved", startsAt=first.startsAt,
                 endsAt=t0 + 3600, source=first.source))
    wait_for("GPUUnhealthy cleared", lambda: (lambda c: c and c.status == "False")(
        condition(node(api, NODES[0]), "GPUUnhealthy")), 30)
    c = condition(node(api, NODES[0]), "GPUUnhealthy")
    assert c.reason == "GPUIsHealthy"
    assert condition(node(api, NODES[1]), "GPUUnhealthy").status == "True"
    h.stop()


def test_never_the_last_ready_node_of_a_pool(api, harness, ruleset):
    h = harness(dry_run=False, max_nodes=10, max_percent=100)
    h.start("g1")
    h.send(xid_alert(ruleset, SOLO, time.time()))
    r = h.trail.wait("the refusal", kind="action", node=SOLO, outcome="refused", action__type="cordon")
    assert "last Ready schedulable node of pool kubesight.io/pool=" in r[0]["reason"]
    # the condition is information, not an action: it is set all the same
    wait_for("GPUUnhealthy on the solo node", lambda: condition(node(api, SOLO), "GPUUnhealthy"), 30)
    assert not node(api, SOLO).spec.unschedulable
    h.stop()


def test_kill_switch_refuses_every_action(api, harness, ruleset):
    h = harness(dry_run=False, kill_switch=True, max_nodes=10, max_percent=100)
    h.start("g1")
    h.send(xid_alert(ruleset, NODES[3], time.time() + 7))
    r = h.trail.wait("the refusal", kind="action", node=NODES[3], outcome="refused", action__type="cordon")
    assert "kill switch" in r[0]["reason"]
    assert not node(api, NODES[3]).spec.unschedulable
    h.stop()


def test_without_the_remediation_rbac_one_line_and_an_alert(cluster, api, kafka_bootstrap, ruleset, rem_nodes, caplog):
    ensure_namespace(api, "kubesight")
    create_docs(api, [{"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": "kubesight-no-remediate", "namespace": "kubesight"}}])
    weak = Kube(cluster.api_client(sa_token(api, "kubesight", "kubesight-no-remediate")))
    h = Harness(kafka_bootstrap, weak, ruleset, dry_run=False, max_nodes=10, max_percent=100)
    try:
        h.start("g1")
        with caplog.at_level("ERROR", logger="kubesight.remediation"):
            h.send(xid_alert(ruleset, NODES[3], time.time() + 9))
            rec = h.trail.wait("the failed condition", kind="condition", node=NODES[3], outcome="failed")
            assert rec[0]["reason"].startswith("forbidden: patch nodes/") and "remediation-rbac.yaml" in rec[0]["reason"]
            h.alerts.wait("the forbidden alert", labels__alertname=FORBIDDEN_ALERT)
            h.trail.wait("the refused action", kind="action", node=NODES[3], outcome="refused")
        assert h.thread.is_alive()  # not a crash
        lines = [r.getMessage() for r in caplog.records if "forbidden" in r.getMessage()]
        assert lines and all("\n" not in ln for ln in lines)
        assert not node(api, NODES[3]).spec.unschedulable
    finally:
        h.close()
