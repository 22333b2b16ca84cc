"""Kubernetes collector end to end: the real client against the local API server, the real broker, a real process.

The collector runs as ``kubesight collect kubernetes`` in a subprocess; the tests cut its watch
connections mid-line, answer 410, kill it with SIGKILL mid-burst and restart it, then compare
the Event records committed to Kafka with the occurrences the server served: none missing,
none doubled.
"""

from __future__ import annotations

import copy
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest

from collectors.kubernetes import checkpoint
from collectors.kubernetes.api import STREAMS
from collectors.kubernetes.events import occurrence_id
from collectors.kubernetes.testing import (
    FakeApiServer,
    must_gather_events,
    nri_cluster,
    repeat,
    serve_cluster,
)
from core.records import decode
from tests.kafkatools import read_to_end

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.kafka
CLUSTER = "test-eu1"


class Checkpoints:
    """Tails the compacted checkpoints topic (read_committed): the collector's committed progress."""

    def __init__(self, settings):
        from kafka import KafkaConsumer, TopicPartition

        self.c = KafkaConsumer(bootstrap_servers=settings.kafka, enable_auto_commit=False, group_id=None,
                               isolation_level="read_committed", auto_offset_reset="earliest")
        self.c.assign([TopicPartition(settings.topic("checkpoints"), 0)])
        self.rv: dict[str, int] = {}

    def poll(self) -> dict[str, int]:
        prefix = checkpoint.key(CLUSTER, "rv", "")
        for batch in self.c.poll(timeout_ms=200).values():
            for m in batch:
                if m.key.startswith(prefix) and m.value:
                    self.rv[m.key[len(prefix):].decode()] = int(orjson.loads(m.value))
        return self.rv

    def close(self):
        self.c.close()


def read_all(settings, logical: str) -> list[bytes]:
    """Every committed value of a topic, from the beginning to its current end."""
    return [r.value for r in read_to_end(settings.kafka, settings.topic(logical))]


class Collector:
    def __init__(self, settings, kubeconfig: Path, logdir: Path, name: str = "collector", *extra: str):
        self.settings, self.kubeconfig, self.logdir = settings, kubeconfig, logdir
        self.name, self.extra = name, extra
        self.proc = None
        self.n = 0

    def start(self):
        self.n += 1
        env = dict(os.environ, KUBESIGHT_KAFKA=self.settings.kafka, KUBESIGHT_TOPIC_PREFIX=self.settings.topic_prefix,
                   PYTHONUNBUFFERED="1")
        self.log = self.logdir / f"{self.name}-{self.n}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubesight", "collect", "kubernetes", "--kubeconfig", str(self.kubeconfig),
             "--cluster", CLUSTER, "--commit-interval", "0.05", "--backoff-base", "0.05", "--backoff-max", "0.3",
             "--loglevel", "info", *self.extra],
            cwd=REPO, env=env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def wait(self, cps: Checkpoints, rv: int, timeout: float = 60.0):
        """Until the committed checkpoint of every stream is at ``rv`` (records are in the same transactions)."""
        deadline = time.monotonic() + timeout
        while True:
            got = cps.poll()
            if len(got) == len(STREAMS) and min(got.values()) >= rv:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"collector not at rv {rv} (at {got}); log:\n{self.log.read_text()[-3000:]}")


@pytest.fixture
def harness(settings, tmp_path):
    srv = FakeApiServer(bookmark_interval=0.05).start()
    cps = Checkpoints(settings)
    col = Collector(settings, srv.kubeconfig(tmp_path / "kubeconfig"), tmp_path)
    yield srv, cps, col
    if col.proc and col.proc.poll() is None:
        col.kill()
    cps.close()
    srv.stop()


class Served:
    """What the server served, as occurrences: uid -> (first count reported, latest count)."""

    def __init__(self, srv: FakeApiServer, events: list[dict]):
        self.srv = srv
        self.cur = {e["metadata"]["uid"]: e for e in events}
        self.first = {u: self.count(e) for u, e in self.cur.items()}
        self.rng = random.Random(3)
        self.deleted: set[str] = set()

    @staticmethod
    def count(e):
        """Occurrences so far: the recorded series (OpenShift 4.8's recorder) start at 1 on the first repeat."""
        return e["series"]["count"] + 1 if e.get("series") else e.get("count") or 1

    def repeats(self, n: int) -> int:
        live = sorted(u for u in self.cur if u not in self.deleted)
        rv = 0
        for _ in range(n):
            u = self.rng.choice(live)
            self.cur[u] = repeat(self.cur[u], "2021-08-03T12:00:00Z")
            rv = self.srv.put("events", self.cur[u], notify=False)
        return rv

    def new(self, template: dict, repeats: int) -> int:
        e = copy.deepcopy(template)
        uid = str(uuid.uuid4())
        e["metadata"].update(uid=uid, name=f"{e['metadata']['name']}.{uid[:8]}")
        e.pop("series", None)
        e["count"] = 1
        self.cur[uid], self.first[uid] = e, 1
        rv = self.srv.put("events", e, notify=False)
        for _ in range(repeats):
            self.cur[uid] = repeat(self.cur[uid])
            rv = self.srv.put("events", self.cur[uid], notify=False)
        return rv

    def delete(self, uid: str) -> int:
        self.deleted.add(uid)
        m = self.cur[uid]["metadata"]
        return self.srv.delete("events", m["namespace"], m["name"])

    def expected(self) -> Counter:
        return Counter(occurrence_id(CLUSTER, u, k) for u, e in self.cur.items()
                       for k in range(self.first[u], self.count(e) + 1))

    def describe(self, ids) -> list[str]:
        """Which occurrences these ids are (for a failure message)."""
        names = {occurrence_id(CLUSTER, u, k): f"{u} #{k} (first {self.first[u]}, now {self.count(e)}, "
                 f"deleted {u in self.deleted})" for u, e in self.cur.items() for k in range(1, self.count(e) + 1)}
        return [names.get(i, i) for i in sorted(ids)][:20]


def test_exactly_once_across_cuts_410_and_kills(harness, settings, data_dir):
    srv, cps, col = harness
    events = must_gather_events(data_dir)[::8]  # 672 real Events, every namespace, series and plain
    rv = serve_cluster(srv, nri_cluster(data_dir), events)
    served = Served(srv, events)
    col.start()
    col.wait(cps, rv)

    # a burst with malformed objects in it (dead-lettered, the collector keeps going), every watch
    # connection cut in the middle of a line after 100 lines, and the API server failing the reconnects
    with srv.held():
        served.repeats(150)
        srv.inject("events", b'{"type":"MODIFIED","object":{"kind":"Event","metadata":{"name":"x"')
        bad = copy.deepcopy(events[7])
        bad["metadata"]["uid"], bad["count"] = "bad-uid", "many"
        srv.inject("events", orjson.dumps({"type": "ADDED", "object": bad}))
        pod = copy.deepcopy(srv.get("pods", "scraper", "e2e-statefulset-1"))
        pod["status"]["containerStatuses"][0]["restartCount"] = "three"
        srv.inject("pods", orjson.dumps({"type": "MODIFIED", "object": pod}))
        served.repeats(150)
        srv.cut(after=100)
        srv.fail("events", 2)  # the reconnects meet a failing API server twice: backoff, then resume
        srv.fail("events.k8s.io", 2)
    rv = served.repeats(1)
    col.wait(cps, rv)
    assert (srv.count("500 events"), srv.count("500 events.k8s.io")) == (2, 2)

    # history compacted while the watches are behind: ERROR 410, re-list, reconcile (counts jumped,
    # Events created and deleted meanwhile; a malformed Event in the list is dead-lettered)
    uids = sorted(served.cur)
    with srv.held():
        for u in uids[10:15]:  # deleted, not repeated: what repeats and goes inside a gap, no API can tell
            served.delete(u)
        served.repeats(300)
        for t in events[:5]:
            served.new(t, repeats=2)
        nouid = copy.deepcopy(events[8])
        nouid["metadata"].pop("uid")
        nouid["metadata"]["name"] += ".nouid"
        srv.load("events", [nouid])
        srv.compact()
        srv.cut(after=50)
        rv = served.repeats(20)
    col.wait(cps, rv)
    assert srv.count("410 events") >= 1 and srv.count("410 events.k8s.io") >= 1

    # SIGKILL in the middle of a burst; more happens while it is down; restart resumes by resourceVersion
    lists_before = srv.count("list events")
    with srv.held():
        served.repeats(1000)
    deadline = time.monotonic() + 20
    while cps.poll().get("events", 0) <= rv and time.monotonic() < deadline:
        pass  # the burst is being committed: kill it now
    col.kill()
    served.repeats(200)
    col.start()
    rv = served.repeats(1)
    col.wait(cps, rv)
    # resumed from the checkpoint: no re-list, no replay (one list of one object: the checkpoint's
    # resourceVersion compared with the cluster's, see watch.py)
    assert srv.count("list events") == lists_before + 1

    # SIGKILL again, compaction while down: the checkpointed resourceVersion is gone -> 410 -> re-list
    gone_before = srv.count("410 events")
    with srv.held():
        served.repeats(600)
    time.sleep(0.2)
    col.kill()
    served.repeats(100)
    served.new(events[9], repeats=3)
    rv = srv.compact()
    col.start()
    col.wait(cps, rv)
    assert srv.count("410 events") > gone_before

    col.proc.send_signal(signal.SIGTERM)
    assert col.proc.wait(20) == 0

    got = Counter()
    for raw in read_all(settings, "events"):
        rec = decode(raw)
        if rec.source == "k8s":
            got[rec.id] += 1
    expected = served.expected()
    missing = expected - got
    doubled = {k: n for k, n in got.items() if n > 1}
    unexpected = set(got) - set(expected)
    assert (len(missing), len(doubled), len(unexpected)) == (0, 0, 0), (
        served.describe(missing), served.describe(doubled), served.describe(unexpected))
    assert sum(got.values()) == sum(expected.values()) > len(events) + 2000

    dead = [orjson.loads(x) for x in read_all(settings, "deadletter")]
    reasons = Counter(d["reason"].split(":")[0] for d in dead)
    assert reasons == {  # watch: served once on each Event API; list: twice (two re-lists) on each
        "watch line is not JSON": 2,
        "malformed Event (RecordError)": 2 + 4,
        "malformed Pod (RecordError)": 1,
    }, [d["reason"] for d in dead]
    assert {d["reason"] for d in dead if d["reason"].startswith("malformed")} == {
        "malformed Event (RecordError): count must be an integer from 0 to 2147483647, got 'many'",
        "malformed Event (RecordError): Event without metadata.uid",
        "malformed Pod (RecordError): restartCount must be an integer, got 'three'",
    }
    assert {d["origin"] for d in dead} == {"collector/kubernetes"}
    assert all(d["where"]["cluster"] == CLUSTER for d in dead)
    bad_pod = next(d for d in dead if "Pod" in d["reason"])
    assert orjson.loads(bad_pod["payload"])["metadata"]["name"] == "e2e-statefulset-1"  # kept whole


def _set_cond(node, typ, status, when, reason):
    for c in node["status"]["conditions"]:
        if c["type"] == typ:
            c.update(status=status, lastTransitionTime=when, reason=reason)
    return node


def test_state_changes_with_owners_survive_a_kill(harness, settings, data_dir):
    srv, cps, col = harness
    rv = serve_cluster(srv, nri_cluster(data_dir))
    col.start()
    col.wait(cps, rv)

    pod = srv.get("pods", "scraper", "e2e-deployment-79967c5968-8bnn8")
    cs = pod["status"]["containerStatuses"][0]
    cs.update(restartCount=1, state={"waiting": {"reason": "CrashLoopBackOff"}}, lastState={"terminated": {
        "exitCode": 137, "reason": "OOMKilled", "startedAt": "2026-06-26T10:13:53Z", "finishedAt": "2026-06-26T10:20:00Z"}})
    srv.put("pods", pod)
    ss = srv.get("pods", "scraper", "e2e-statefulset-0")
    ss["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ErrImagePull"}}
    srv.put("pods", ss)
    ss["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ImagePullBackOff"}}
    srv.put("pods", ss)
    node = srv.get("nodes", "", "datagen-1-35")
    gone = copy.deepcopy(node)
    gone["metadata"].update(name="spot-1", uid="uid-spot-1")
    srv.put("nodes", gone)
    rv = srv.put("nodes", _set_cond(node, "MemoryPressure", "True", "2026-06-26T11:00:00Z", "KubeletHasInsufficientMemory"))
    col.wait(cps, rv)

    col.kill()  # while it is down: the node goes NotReady, a pod is evicted, a spot node is deleted; then history is compacted
    srv.put("nodes", _set_cond(node, "Ready", "False", "2026-06-26T11:05:00Z", "KubeletNotReady"))
    srv.delete("nodes", "", "spot-1")  # seen at the re-list, by its absence
    ds = srv.get("pods", "scraper", "e2e-daemonset-kb65b")
    ds["status"].update(phase="Failed", reason="Evicted", message="The node was low on resource: memory.")
    srv.put("pods", ds)
    rv = srv.compact()
    col.start()
    col.wait(cps, rv)
    srv.put("nodes", _set_cond(_set_cond(node, "Ready", "True", "2026-06-26T11:10:00Z", "KubeletReady"),
                               "MemoryPressure", "False", "2026-06-26T11:10:00Z", "KubeletHasSufficientMemory"))
    rv = srv.delete("nodes", "", "datagen-1-35")  # seen on the watch
    col.wait(cps, rv)

    recs = [decode(raw) for raw in read_all(settings, "events")]
    got = sorted((r.reason, r.entity.kind, r.entity.name, r.entity.workload, r.entity.owner, r.entity.node)
                 for r in recs)
    dep = ("Pod", "e2e-deployment-79967c5968-8bnn8", "Deployment/e2e-deployment", "k8-team", "datagen-1-35")
    node_ent = ("Node", "datagen-1-35", "", "", "datagen-1-35")
    assert got == sorted([
        *[("ContainerError", "Pod", n, "Job/e2e-failjob", "", "datagen-1-35")
          for n in ("e2e-failjob-28dqq", "e2e-failjob-4kj9v", "e2e-failjob-64h4g", "e2e-failjob-p2w8g")],
        ("ContainerOOMKilled", *dep), ("ContainerRestarted", *dep), ("CrashLoopBackOff", *dep),
        ("ImagePullBackOff", "Pod", "e2e-statefulset-0", "StatefulSet/e2e-statefulset", "", "datagen-1-35"),
        ("NodeMemoryPressure", *node_ent), ("NodeNotReady", *node_ent),
        ("Evicted", "Pod", "e2e-daemonset-kb65b", "DaemonSet/e2e-daemonset", "", "datagen-1-35"),
        ("NodeReady", *node_ent), ("NodeMemoryPressureCleared", *node_ent),
        ("NodeDeleted", "Node", "spot-1", "", "", "spot-1"), ("NodeDeleted", *node_ent),
    ])
    assert {r.source for r in recs} == {"k8s-state"} and {r.entity.cluster for r in recs} == {CLUSTER}
    oom = next(r for r in recs if r.reason == "ContainerOOMKilled")
    assert (oom.labels["exit_code"], oom.labels["container"]) == ("137", "compute-pi-digits")
    assert oom.key() == f"{CLUSTER}/scraper/Deployment/e2e-deployment".encode()
    nr = next(r for r in recs if r.reason == "NodeNotReady")
    assert nr.key() == f"{CLUSTER}//Node/datagen-1-35".encode()


def test_a_second_collector_fences_the_first(harness, settings, data_dir, tmp_path):
    srv, cps, first = harness
    rv = serve_cluster(srv, nri_cluster(data_dir))
    first.extra = ("--heartbeat", "0.5")
    first.start()
    first.wait(cps, rv)
    second = Collector(settings, first.kubeconfig, tmp_path, "second")
    second.start()  # same cluster, same transactional id: it takes over
    try:
        assert first.proc.wait(30) == 1  # the idle first one learns at its next heartbeat commit
        assert "ProducerFenced" in first.log.read_text()
        node = srv.get("nodes", "", "datagen-1-35")
        rv = srv.put("nodes", _set_cond(node, "DiskPressure", "True", "2026-06-26T12:00:00Z", "KubeletHasDiskPressure"))
        second.wait(cps, rv)
    finally:
        if second.proc.poll() is None:
            second.kill()
    recs = [decode(raw) for raw in read_all(settings, "events")]
    assert sorted(r.reason for r in recs) == ["ContainerError"] * 4 + ["NodeDiskPressure"]
