"""Derived signals over real control-plane pages, with the re-keying played through 4 partitions."""

from __future__ import annotations

import math
import zlib

import orjson
import pytest

from collectors.metrics.exposition import parse
from streams.derived import Derived, histogram_quantile
from streams.records import Sample, decode

PARTS = 4
API = "nri-kubernetes-testdata/1_35/controlplane/api-server/metrics"
ETCD = "nri-kubernetes-testdata/1_35/controlplane/etcd/metrics"
SCHED = "nri-kubernetes-testdata/1_35/controlplane/scheduler/metrics"


class Partitions:
    """A key-hash partitioner over PARTS partitions (crc32: Kafka's murmur2 in Python is slow), each with its own state and watermark;
    what a stage emits to `samples` is fed back in, like the worker reading its own output."""

    def __init__(self):
        self.stage = Derived()
        self.states = [{} for _ in range(PARTS)]
        self.marks = [-math.inf] * PARTS
        self.derived: list[Sample] = []

    def _part(self, key: bytes) -> int:
        return zlib.crc32(key) % PARTS

    def feed(self, samples: list[Sample]) -> None:
        queue = [(s.key(), s) for s in samples]
        while queue:
            out = []

            def emit(topic, key, value, out=out):
                assert topic == "samples"
                out.append((key, decode(value)))

            for key, s in queue:
                p = self._part(key)
                self.marks[p] = max(self.marks[p], s.time)
                self.stage.process(s, self.states[p], emit)
            for p in range(PARTS):
                self.stage.tick(self.marks[p], self.states[p], emit)
                # the changelog keeps JSON: a restore gives back exactly this
                self.states[p] = orjson.loads(orjson.dumps(self.states[p]))
            self.derived += [s for _, s in out if s.labels.get("kubesight") == "derived"]
            queue = out

    def latest(self, name: str) -> dict[tuple, tuple[float, float]]:
        got = {}
        for s in self.derived:
            if s.name == name:
                got[tuple(sorted((k, v) for k, v in s.labels.items() if k != "kubesight"))] = (s.time, s.value)
        return got


def _scrape(text: str, t: float, job: str, factor: float = 1.0, reset_to: float | None = None) -> list[Sample]:
    out = []
    for name, labels, value, _ in parse(text).points:
        if name.endswith(("_total", "_bucket")):
            value = reset_to if reset_to is not None else value * factor
        out.append(Sample(name, value, t, {**labels, "job": job, "instance": f"{job}:443", "cluster": "ack-1"}))
    return out


@pytest.fixture(scope="module")
def pages(data_dir):
    return {k: (data_dir / p).read_text() for k, p in (("api", API), ("etcd", ETCD), ("sched", SCHED))}


def test_apiserver_rate_ratio_and_p99_across_a_reset(pages):
    pts = parse(pages["api"]).points
    req = [(lab, v) for n, lab, v, _ in pts if n == "apiserver_request_total"]
    total = sum(v for _, v in req)
    assert len(req) == 171
    ps = Partitions()
    ps.feed(_scrape(pages["api"], 1000.0, "apiserver"))
    assert ps.derived == []  # one point of a counter: no rate yet (silence, not 0)
    ps.feed(_scrape(pages["api"], 1030.0, "apiserver", factor=2))  # the same traffic again in 30 s
    ps.feed(_scrape(pages["sched"], 1032.0, "scheduler"))  # later records move the watermark on
    rate = ps.latest("apiserver_request_rate")
    assert rate == {(("cluster", "ack-1"),): (1030.0, pytest.approx(total / 30))}
    assert total == 1873  # requests counted on the page
    ratio = ps.latest("apiserver_5xx_ratio")
    get = sum(v for lab, v in req if lab["verb"] == "GET")
    assert ratio[(("cluster", "ack-1"), ("verb", "GET"))] == (1030.0, pytest.approx(11 / get))
    assert ratio[(("cluster", "ack-1"), ("verb", "LIST"))] == (1030.0, 0.0)
    assert len(ratio) == 9  # every verb seen: APPLY CONNECT DELETE GET LIST PATCH POST PUT WATCH
    # p99 from the page's buckets summed over every non-WATCH/CONNECT series (rates scale, quantiles don't)
    buckets: dict[float, float] = {}
    for n, lab, v, _ in pts:
        if n == "apiserver_request_duration_seconds_bucket" and lab["verb"] not in ("WATCH", "CONNECT"):
            b = math.inf if lab["le"] == "+Inf" else float(lab["le"])
            buckets[b] = buckets.get(b, 0) + v
    (t, p99), = ps.latest("apiserver_p99_latency_seconds").values()
    assert t == 1030.0 and p99 == pytest.approx(histogram_quantile(0.99, buckets))
    assert round(p99, 6) == 0.023755  # a fresh single-node cluster: fast
    # a restart of the apiserver: every counter starts again at 5
    ps.feed(_scrape(pages["api"], 1060.0, "apiserver", reset_to=5.0))
    ps.feed(_scrape(pages["sched"], 1062.0, "scheduler"))
    rate = ps.latest("apiserver_request_rate")
    # per series over [1000, 1060]: v before the restart, then 5 from zero -- unless 5 >= 2v, which
    # (as in PromQL) is no visible reset, just an increase of 5 - 2v
    want = sum(v + (5 if 5 < 2 * v else 5 - 2 * v) for _, v in req) / 60
    assert rate[(("cluster", "ack-1"),)] == (1060.0, pytest.approx(want))
    assert sum(1 for _, v in req if 5 < 2 * v) == 83  # of 171 series, these visibly reset


def test_etcd_fsync_p99_and_scheduler_pending(pages):
    ps = Partitions()
    ps.feed(_scrape(pages["etcd"], 1000.0, "etcd") + _scrape(pages["sched"], 1000.0, "scheduler"))
    ps.feed(_scrape(pages["etcd"], 1030.0, "etcd", factor=2) + _scrape(pages["sched"], 1030.0, "scheduler"))
    ps.feed(_scrape(pages["sched"], 1040.0, "scheduler"))
    # 855 fsyncs again: rank 0.99 * 855 = 846.45 falls in (0.004, 0.008] holding 842..848
    fsync = ps.latest("etcd_fsync_p99_seconds")
    assert fsync == {(("cluster", "ack-1"), ("instance", "etcd:443")):
                     (1030.0, pytest.approx(0.004 + 0.004 * (846.45 - 842) / 6))}
    # queues active 0, backoff 0, gated 0, unschedulable 1
    # the round at 1040 waits for a later record to move the watermark past it
    assert ps.latest("scheduler_pending_pods") == {(("cluster", "ack-1"),): (1030.0, 1.0)}


def test_gpu_xid_errors_counts_new_codes_in_the_window(data_dir):
    text = (data_dir / "datadog-integrations-fixtures/dcgm/metrics.txt").read_text()
    (name, labels, value, _), = [p for p in parse(text).points if p[0] == "DCGM_FI_DEV_XID_ERRORS"]
    ps = Partitions()
    for t, code in [(0, value), (30, 79), (60, 79), (90, 48), (400, 48), (700, 0)]:
        ps.feed([Sample(name, code, float(t), labels)])
    got = [(s.time, s.value) for s in ps.derived if s.name == "gpu_xid_errors"]
    assert got == [(0, 0), (30, 1), (60, 1), (90, 2), (400, 0), (700, 0)]
    assert {s.labels["UUID"] for s in ps.derived} == {"GPU-20c56d28-0da5-6d26-a36a-e7af1ce2586e"}


def test_partials_of_one_derived_series_share_a_partition_and_outputs_do_not_loop(pages):
    d, state, out = Derived(), {}, []
    samples = _scrape(pages["etcd"], 1000.0, "etcd") + _scrape(pages["etcd"], 1030.0, "etcd", factor=2)
    for s in samples:
        d.process(s, state, lambda topic, key, value: out.append((key, decode(value))))
    parts = [(k, s) for k, s in out if s.name == "etcd_fsync_p99_seconds:partial"]
    assert len(parts) == 15 and len({k for k, _ in parts}) == 1
    assert parts[0][0] == b'etcd_fsync_p99_seconds{cluster="ack-1",instance="etcd:443",kubesight="derived"}'
    assert {s.labels["part"] for _, s in parts} >= {"0.001", "+Inf"}
    again: list = []
    derived = Sample("etcd_fsync_p99_seconds", 0.007, 1030.0, {"kubesight": "derived"})
    d.process(derived, state, lambda *a: again.append(a))
    assert again == []
    assert all(isinstance(orjson.loads(orjson.dumps(v)), list | dict) for v in state.values())
