"""Resume across ``410 Gone`` from a real etcd compaction: 0 occurrences missing, 0 doubled.

A second collector (its own cluster name and topics, the least-privilege ServiceAccount) commits
some Event occurrences, stops; meanwhile Events are created and repeated (count bumps, as the
client-go recorder does) through both Event APIs; etcd is compacted at its current revision, so
the checkpointed resourceVersion no longer exists anywhere (Events bypass the watch cache);
the restarted collector's watch gets 410, it re-lists and emits exactly the occurrences it has not
emitted.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections import Counter

import orjson
import pytest
from kubernetes import client

from collectors.kubernetes import checkpoint
from collectors.kubernetes.events import occurrence_id
from tests.cluster.conftest import CollectorProcess, ensure_namespace, wait_for
from tests.kafkatools import read_to_end

NAME = "resume-local"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Events:
    """core/v1 Events written the way the old recorder writes them: create with count 1, then bump."""

    def __init__(self, api, ns: str):
        self.api, self.ns = api, ns
        self.count: dict[str, int] = {}  # uid -> occurrences written
        self.names: dict[str, str] = {}

    def create(self, reason: str) -> str:
        name = f"probe.{uuid.uuid4().hex[:10]}"
        ev = self.api.core.create_namespaced_event(self.ns, {
            "metadata": {"name": name}, "reason": reason, "type": "Warning", "message": f"{reason} happened",
            "involvedObject": {"kind": "Pod", "namespace": self.ns, "name": "probe", "apiVersion": "v1"},
            "source": {"component": "kubesight-test"}, "count": 1, "firstTimestamp": now(), "lastTimestamp": now()})
        self.count[ev.metadata.uid], self.names[ev.metadata.uid] = 1, name
        return ev.metadata.uid

    def repeat(self, uid: str, times: int = 1) -> str:
        for _ in range(times):
            self.count[uid] += 1
            rv = self.api.core.patch_namespaced_event(self.names[uid], self.ns,
                                                      {"count": self.count[uid], "lastTimestamp": now()}).metadata.resource_version
        return rv

    def expected(self) -> Counter:
        return Counter(occurrence_id(NAME, u, k) for u, n in self.count.items() for k in range(1, n + 1))


def committed_rv(bootstrap: str, prefix: str) -> dict[str, int]:
    """The collector's committed resourceVersion per stream (read_committed, the compacted checkpoints topic)."""
    key = checkpoint.key(NAME, "rv", "")
    out = {}
    for m in read_to_end(bootstrap, f"{prefix}checkpoints"):
        if m.key.startswith(key) and m.value:
            out[m.key[len(key):].decode()] = int(orjson.loads(m.value))
    return out


def test_resume_after_compaction(cluster, api, collector_kubeconfig, kafka_bootstrap, tmp_path):
    ns = f"resume-{uuid.uuid4().hex[:5]}"
    ensure_namespace(api, ns, {"team": "team-resume"})
    prefix = f"r{uuid.uuid4().hex[:8]}-"
    col = CollectorProcess(kafka_bootstrap, prefix, collector_kubeconfig, NAME, tmp_path).start()
    try:
        wait_for("the first list of all 4 streams", lambda: col.text().count("listed") >= 4 or not col.running(), 60)
        assert col.running(), col.text()[-3000:]
        evs = Events(api, ns)
        first = [evs.create(f"Before{i}") for i in range(4)]
        rv = int(evs.repeat(first[0], 2))
        wait_for("the first occurrences committed",
                 lambda: committed_rv(kafka_bootstrap, prefix).get("events", 0) >= rv, 30)
        assert col.stop() == 0, col.text()[-3000:]
        stopped_at = committed_rv(kafka_bootstrap, prefix)

        # while it is down: repeats of known Events, new Events (one repeated), through both APIs
        evs.repeat(first[1], 3)
        evs.repeat(first[2], 1)
        later = [evs.create(f"While{i}") for i in range(3)]
        evs.repeat(later[0], 4)
        ev2 = client.EventsV1Api(api.client).create_namespaced_event(ns, {
            "metadata": {"name": f"new-api.{uuid.uuid4().hex[:8]}"}, "eventTime": dt.datetime.now(dt.UTC).isoformat(),
            "reason": "NewApi", "action": "Probe", "type": "Normal", "note": "through events.k8s.io",
            "reportingController": "kubesight.io/test", "reportingInstance": "test-1",
            "regarding": {"kind": "Pod", "namespace": ns, "name": "probe", "apiVersion": "v1"}})
        evs.count[ev2.metadata.uid] = 1

        rev = cluster.compact_etcd()
        assert rev > max(stopped_at.values()), (rev, stopped_at)
        # the proof that history is gone: a list at the old resourceVersion, served by etcd, is refused
        with pytest.raises(client.ApiException) as gone:
            api.core.list_namespaced_event(ns, resource_version=str(stopped_at["events"]),
                                           resource_version_match="Exact")
        assert gone.value.status == 410

        col.start()
        last = int(evs.repeat(later[1], 1))
        wait_for("the restarted collector's checkpoint past the last change",
                 lambda: committed_rv(kafka_bootstrap, prefix).get("events", 0) >= last or not col.running(), 60)
        assert col.running(), col.text()[-3000:]
        log = col.text()
        relisted = re.findall(r"kubernetes: (events|events\.k8s\.io): .*; re-listing", log)
        assert {"events", "events.k8s.io"} <= set(relisted), f"no 410 met on resume:\n{log[-3000:]}"
    finally:
        col.stop()

    recs = [orjson.loads(m.value) for m in read_to_end(kafka_bootstrap, f"{prefix}events")]
    ids = Counter(r["id"] for r in recs)
    doubled = [i for i, k in ids.items() if k > 1]
    assert not doubled, f"{len(doubled)} occurrences doubled"
    mine = Counter(r["id"] for r in recs if r["entity"]["namespace"] == ns)
    expected = evs.expected()
    missing, extra = expected - mine, mine - expected
    assert (len(missing), len(extra)) == (0, 0), (missing, extra)
    assert sum(expected.values()) == 4 + 2 + 3 + 1 + 3 + 4 + 1 + 1 == len(mine)
    assert {r["entity"]["owner"] for r in recs if r["entity"]["namespace"] == ns} == {"team-resume"}
