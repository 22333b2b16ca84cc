"""Derived signals over real control-plane pages, with the re-keying played through 4 partitions."""

from __future__ import annotations

import math
import zlib

import orjson
import pytest

from collectors.metrics.exposition import parse
from core.records import Alert, Sample, decode
from streams.derived import Derived, histogram_quantile

PARTS = 4
API = "nri-kubernetes-testdata/1_35/controlplane/api-server/metrics"
ETCD = "nri-kubernetes-testdata/1_35/controlplane/etcd/metrics"
SCHED = "nri-kubernetes-testdata/1_35/controlplane/scheduler/metrics"
CM = "nri-kubernetes-testdata/1_35/controlplane/controller-manager/metrics"


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
        if name.endswith(("_total", "_bucket", "_count", "_sum")):  # counters (a histogram's count and sum too)
            value = reset_to if reset_to is not None else value * factor
        out.append(Sample(name, value, t, {**labels, "job": job, "instance": f"{job}:443", "cluster": "ack-1"}))
    return out


@pytest.fixture(scope="module")
def pages(data_dir):
    return {k: (data_dir / p).read_text() for k, p in (("api", API), ("etcd", ETCD), ("sched", SCHED), ("cm", CM))}


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
    key = (("cluster", "ack-1"), ("instance", "apiserver:443"))
    rate = ps.latest("apiserver_request_rate")
    assert rate == {key: (1030.0, pytest.approx(total / 30))}
    assert total == 1873  # requests counted on the page
    ratio = ps.latest("apiserver_5xx_ratio")
    get = sum(v for lab, v in req if lab["verb"] == "GET")
    assert ratio[key + (("verb", "GET"),)] == (1030.0, pytest.approx(11 / get))
    assert ratio[key + (("verb", "LIST"),)] == (1030.0, 0.0)  # no 5xx series for LIST: none happened
    assert len(ratio) == 9  # every verb seen: APPLY CONNECT DELETE GET LIST PATCH POST PUT WATCH
    # the cluster's burn input (what the burn-rate rules read), kubernetes-mixin's: reads and writes, each (too slow
    # + 5xx) / requests, summed. Here the 11 5xx are GETs of /readyz, no write failed and no request was slower than
    # the SLI allows: 11 of the 850 reads. (tests/test_interop.py adds slow ones and checks the value against
    # Prometheus running the mixin's own expressions.)
    errors = sum(v for lab, v in req if lab["code"].startswith("5"))
    reads = sum(v for lab, v in req if lab["verb"] in ("GET", "LIST"))
    assert (errors, reads) == (11, 850) and all(lab["verb"] == "GET" for lab, v in req if lab["code"].startswith("5"))
    assert ps.latest("apiserver_error_ratio") == {(("cluster", "ack-1"),): (1030.0, pytest.approx(11 / reads))}
    # p99 per verb and resource from the page's buckets (rates scale, quantiles don't)
    buckets: dict[tuple, dict[float, float]] = {}
    for n, lab, v, _ in pts:
        if n == "apiserver_request_duration_seconds_bucket" and lab["verb"] not in ("WATCH", "CONNECT"):
            b = math.inf if lab["le"] == "+Inf" else float(lab["le"])
            per = buckets.setdefault((lab["resource"], lab["verb"]), {})
            per[b] = per.get(b, 0) + v
    p99 = ps.latest("apiserver_p99_latency_seconds")
    want = {key + (("resource", r), ("verb", vb)): histogram_quantile(0.99, bk) for (r, vb), bk in buckets.items()}
    assert p99.keys() == {k for k, v in want.items() if v is not None} and len(p99) == 120
    assert all(p99[k] == (1030.0, pytest.approx(want[k])) for k in p99)
    assert round(p99[key + (("resource", "pods"), ("verb", "GET"))][1], 6) == 0.0068
    # a restart of the apiserver: every counter starts again at 5
    ps.feed(_scrape(pages["api"], 1060.0, "apiserver", reset_to=5.0))
    ps.feed(_scrape(pages["sched"], 1062.0, "scheduler"))
    rate = ps.latest("apiserver_request_rate")
    # per series over [1000, 1060]: v before the restart, then 5 from zero -- unless 5 >= 2v, which
    # (as in PromQL) is no visible reset, just an increase of 5 - 2v
    want_rate = sum(v + (5 if 5 < 2 * v else 5 - 2 * v) for _, v in req) / 60
    assert rate[key] == (1060.0, pytest.approx(want_rate))
    assert sum(1 for _, v in req if 5 < 2 * v) == 83  # of 171 series, these visibly reset


def test_etcd_fsync_and_commit_p99_and_db_quota_ratio(pages):
    ps = Partitions()
    ps.feed(_scrape(pages["etcd"], 1000.0, "etcd") + _scrape(pages["sched"], 1000.0, "scheduler"))
    ps.feed(_scrape(pages["etcd"], 1030.0, "etcd", factor=2) + _scrape(pages["sched"], 1030.0, "scheduler"))
    ps.feed(_scrape(pages["sched"], 1040.0, "scheduler"))
    key = (("cluster", "ack-1"), ("instance", "etcd:443"))
    # 855 fsyncs again: rank 0.99 * 855 = 846.45 falls in (0.004, 0.008] holding 842..848
    assert ps.latest("etcd_fsync_p99_seconds") == {key: (1030.0, pytest.approx(0.004 + 0.004 * (846.45 - 842) / 6))}
    # 262 commits: rank 259.38 in (0.008, 0.016] holding 259..260
    assert ps.latest("etcd_commit_p99_seconds") == {key: (1030.0, pytest.approx(0.008 + 0.008 * 0.38))}
    # gauges need no second point: 2.093056e+06 of 2.147483648e+09 bytes
    assert ps.latest("etcd_db_quota_used_ratio") == {key: (1030.0, pytest.approx(2.093056e6 / 2.147483648e9))}
    # scheduler_pending_pods is used as scraped (by queue): no derived copy
    assert ps.latest("scheduler_pending_pods") == {}


def test_etcd_grpc_failed_ratio_counts_etcd_mixins_failure_codes_only(pages):
    unavailable = 'grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"}'
    assert unavailable + " 0\n" in pages["etcd"]  # the page exports every code, at 0 here
    later = pages["etcd"].replace(unavailable + " 0\n", unavailable + " 15\n")  # 15 Range calls fail meanwhile
    other = [Sample("grpc_server_handled_total", v, t, {"grpc_code": "Internal", "grpc_method": "Get",
                                                        "grpc_service": "shop.Cart", "job": "cart", "instance": "cart:9000"})
             for t, v in ((1000.0, 0.0), (1030.0, 50.0))]  # another gRPC server's failures: not etcd's
    ps = Partitions()
    ps.feed(_scrape(pages["etcd"], 1000.0, "etcd") + other[:1])
    ps.feed(_scrape(later, 1030.0, "etcd", factor=2) + other[1:])
    ps.feed(_scrape(pages["sched"], 1040.0, "scheduler"))
    got = ps.latest("etcd_grpc_failed_ratio")

    def key(service, method):
        return (("cluster", "ack-1"), ("grpc_method", method), ("grpc_service", service), ("instance", "etcd:443"))

    # the later page has every counter doubled: Range got 1383 more OK calls and 2 x 15 = 30 Unavailable in 30 s
    assert got[key("etcdserverpb.KV", "Range")] == (1030.0, pytest.approx(30 / 1413))
    # Watch's one Canceled call is the client's doing, not a failure; Txn had none
    assert got[key("etcdserverpb.Watch", "Watch")] == (1030.0, 0.0)
    assert got[key("etcdserverpb.KV", "Txn")] == (1030.0, 0.0)
    # only the methods that were called (no requests: no ratio), and only etcd's
    assert len(got) == 5 and {dict(k)["instance"] for k in got} == {"etcd:443"}


def test_client_certificate_expiry_p1_on_the_recorded_apiserver_page(pages):
    """kubernetes-mixin's KubeClientCertificateExpiration input: the 1st percentile of the remaining lifetime of
    the client certificates presented between two scrapes (a rate of the histogram, so old observations age out)."""
    name = "apiserver_client_certificate_expiration_seconds_bucket"
    assert f'{name}{{le="+Inf"}} 990\n' in pages["api"] and f'{name}{{le="3.1104e+07"}} 0\n' in pages["api"]
    # 990 more requests with the same (over a year long) certificates, and 20 with one that has 3 days left
    later = pages["api"]
    for le in ("345600", "604800", "2.592e+06", "7.776e+06", "1.5552e+07", "3.1104e+07"):
        later = later.replace(f'{name}{{le="{le}"}} 0\n', f'{name}{{le="{le}"}} 20\n')
    later = later.replace(f'{name}{{le="+Inf"}} 990\n', f'{name}{{le="+Inf"}} 2000\n')
    key = (("cluster", "ack-1"), ("instance", "apiserver:443"), ("job", "apiserver"))
    ps = Partitions()
    ps.feed(_scrape(pages["api"], 1000.0, "apiserver"))
    ps.feed(_scrape(pages["api"].replace(f'{name}{{le="+Inf"}} 990\n', f'{name}{{le="+Inf"}} 1980\n'), 1030.0,
                    "apiserver"))
    ps.feed(_scrape(pages["sched"], 1040.0, "scheduler"))
    got = ps.latest("apiserver_client_certificate_expiry_p1_seconds")
    # only long-lived certificates: PromQL's answer for the +Inf bucket, the highest finite bound (a year): quiet
    assert got[key] == (1030.0, 31104000.0)
    ps.feed(_scrape(later, 1060.0, "apiserver"))
    ps.feed(_scrape(pages["sched"], 1070.0, "scheduler"))
    # 1,010 presented: rank 10.1 falls among the 20 in (2 d, 4 d] -> 2 d + 2 d * 10.1 / 20, under the 7 d warning
    got = ps.latest("apiserver_client_certificate_expiry_p1_seconds")
    assert got[key] == (1060.0, pytest.approx(172800 + 172800 * 10.1 / 20))
    # the scheduler's page has the histogram too (certificates presented to it), unchanged between its two scrapes:
    # no certificate presented there lately is no value at all (not "0 s left")
    assert name in pages["sched"] and list(got) == [key]


def test_rest_client_5xx_ratio_per_api_client(pages):
    """kubernetes-mixin's KubeClientErrors input, on the recorded controller-manager and scheduler pages: each
    client's 5xx share of its calls to the API server (403, 404, 409 are answers, not failures)."""
    get = 'rest_client_requests_total{code="200",host="192.168.67.2:8443",method="GET"} 189\n'
    assert get in pages["cm"] and 'code="409"' in pages["cm"]
    def failing(n):  # the page, with n GETs of the controller-manager answered 503 so far
        return pages["cm"].replace(get, get + get.replace('"200"', '"503"').replace(" 189", f" {n}"))

    ps = Partitions()
    ps.feed(_scrape(pages["cm"], 1000.0, "controller-manager") + _scrape(pages["sched"], 1000.0, "scheduler"))
    # the first 503s make a new series: one point, no rate yet (as PromQL's rate), so no failure is seen at 1030
    ps.feed(_scrape(failing(10), 1030.0, "controller-manager", factor=2)
            + _scrape(pages["sched"], 1030.0, "scheduler", factor=2))
    ps.feed(_scrape(failing(25), 1060.0, "controller-manager", factor=3)
            + _scrape(pages["sched"], 1060.0, "scheduler", factor=3))
    ps.feed(_scrape(pages["etcd"], 1070.0, "etcd"))
    got = ps.latest("rest_client_5xx_ratio")
    calls = sum(v for n, _, v, _ in parse(pages["cm"]).points if n == "rest_client_requests_total")
    key = lambda job: (("cluster", "ack-1"), ("instance", f"{job}:443"), ("job", job))  # noqa: E731
    # the page's calls again in each 30 s (counters x2, x3), and 3 x 25 - 2 x 10 = 55 more 503s in the last 30 s
    # (_scrape multiplies every counter, the 503 one too)
    assert got[key("controller-manager")] == (1060.0, pytest.approx(55 / (calls + 55)))
    first = [(d.time, d.value) for d in ps.derived if d.name == "rest_client_5xx_ratio"
             and d.labels["job"] == "controller-manager" and d.time == 1030.0]
    assert first == [(1030.0, 0.0)]
    assert got[key("scheduler")] == (1060.0, 0.0)  # no 5xx: 0, not silence
    assert set(got) == {key("controller-manager"), key("scheduler")}  # etcd's page has no such counter


def test_rollout_signals_on_the_recorded_kube_state_metrics_page(data_dir):
    """kubernetes-mixin's KubeDeploymentGenerationMismatch input: spec generation less the one the controller
    observed, per Deployment, from kube-state-metrics' own page; then a spec change the controller does not take."""
    page = (data_dir / "nri-kubernetes-testdata/1_35/ksm/metrics").read_text()
    ps = Partitions()
    ps.feed(_scrape(page, 1000.0, "kube-state-metrics"))
    ps.feed([Sample("up", 1, 1010.0, {"job": "x", "instance": str(i)}) for i in range(16)])  # watermarks move on
    got = ps.latest("kube_deployment_generation_mismatch")
    names = sorted(dict(k)["deployment"] for k in got)
    assert names == ["coredns", "e2e-deployment", "e2e-hpa", "e2e-kube-state-metrics", "e2e-scraper", "metrics-server"]
    assert {v for _, v in got.values()} == {0.0}  # every spec observed (coredns at generation 2)
    bumped = page.replace('kube_deployment_metadata_generation{namespace="kube-system",deployment="coredns"} 2',
                          'kube_deployment_metadata_generation{namespace="kube-system",deployment="coredns"} 3')
    assert bumped != page
    ps.feed(_scrape(bumped, 1030.0, "kube-state-metrics"))
    ps.feed([Sample("up", 1, 1040.0, {"job": "x", "instance": str(i)}) for i in range(16)])
    key = (("cluster", "ack-1"), ("deployment", "coredns"), ("namespace", "kube-system"))
    assert ps.latest("kube_deployment_generation_mismatch")[key] == (1030.0, 1.0)
    # the page's three DaemonSets each run their one pod: none left unscheduled
    assert sorted((dict(k)["daemonset"], v) for k, (_, v) in ps.latest("kube_daemonset_not_scheduled").items()) == [
        ("e2e-daemonset", 0.0), ("kindnet", 0.0), ("kube-proxy", 0.0)]


def test_admission_webhook_p99_and_coredns_request_rate():
    """Series no recorded page here has (an admission webhook's latency histogram, CoreDNS' query counter)."""
    hook = {"name": "policy.example.com", "type": "validating", "operation": "CREATE", "rejected": "false",
            "job": "apiserver", "instance": "10.0.0.1:6443", "cluster": "c1"}
    dns = {"job": "coredns", "instance": "10.0.0.5:9153", "cluster": "c1", "server": "dns://:53", "zone": "."}

    def scrape(t, n):  # n webhook calls so far, 90 % within 0.5 s, the rest within 2.5 s; CoreDNS A and AAAA queries
        out = [Sample("apiserver_admission_webhook_admission_duration_seconds_bucket", v, t, {**hook, "le": le})
               for le, v in (("0.5", 0.9 * n), ("2.5", n), ("+Inf", n))]
        out += [Sample("coredns_dns_requests_total", q, t, {**dns, "type": typ}) for typ, q in (("A", 3 * n), ("AAAA", n))]
        return out

    ps = Partitions()
    ps.feed(scrape(1000.0, 100))
    ps.feed(scrape(1030.0, 400))
    ps.feed([Sample("up", 1, 1040.0, {"job": "x", "instance": str(i)}) for i in range(16)])  # every partition's
    # watermark past the settle time
    key = (("cluster", "c1"), ("instance", "10.0.0.1:6443"), ("name", "policy.example.com"), ("operation", "CREATE"),
           ("type", "validating"))
    # 300 calls: rank 297 falls in (0.5, 2.5] holding calls 270..300 -> 0.5 + 2 * 27 / 30
    assert ps.latest("apiserver_webhook_p99_latency_seconds") == {key: (1030.0, pytest.approx(0.5 + 2 * 27 / 30))}
    # (900 + 300) more queries over 30 s, A and AAAA together
    assert ps.latest("coredns_request_rate") == {(("cluster", "c1"), ("instance", "10.0.0.5:9153")): (1030.0, 40.0)}


def test_ingress_error_ratio_and_certificate_expiry():
    """ingress-nginx's series (no recorded page here has them): 5xx share per ingress, seconds left on a certificate."""
    base = {"job": "ingress-nginx", "instance": "10.0.0.9:10254", "cluster": "c1", "namespace": "shop",
            "ingress": "storefront", "controller_class": "k8s.io/ingress-nginx", "method": "GET"}

    def scrape(t, ok, bad):
        return [Sample("nginx_ingress_controller_requests", ok, t, {**base, "status": "200"}),
                Sample("nginx_ingress_controller_requests", bad, t, {**base, "status": "503"}),
                Sample("nginx_ingress_controller_requests", 7.0, t, {**base, "status": "404"}),  # not a server error
                Sample("nginx_ingress_controller_ssl_expire_time_seconds", 1_000_000.0 + 86400 * 3, t,
                       {**base, "host": "shop.example.com", "secret_name": "shop-tls"})]

    ps = Partitions()
    ps.feed(scrape(1_000_000.0, 1000.0, 10.0))
    ps.feed(scrape(1_000_030.0, 1180.0, 30.0))
    ps.feed([Sample("up", 1, 1_000_040.0, {"job": "x", "instance": str(i)}) for i in range(16)])
    key = (("cluster", "c1"), ("ingress", "storefront"), ("namespace", "shop"))
    assert ps.latest("ingress_5xx_ratio") == {key: (1_000_030.0, pytest.approx(20 / 200))}  # 404s count as requests
    cert = tuple(sorted(key + (("host", "shop.example.com"), ("secret_name", "shop-tls"))))
    # per series, at once (no second point needed): 3 days from the first scrape, 30 s less at the second
    assert ps.latest("ingress_certificate_expiry_seconds") == {cert: (1_000_030.0, 86400 * 3 - 30.0)}


def test_node_container_and_kube_state_ratios(data_dir):
    node = (data_dir / "node-exporter-fixtures/e2e-output.txt").read_text()
    cad = (data_dir / "nri-kubernetes-testdata/1_35/kubelet/metrics/cadvisor").read_text()
    ksm = (data_dir / "nri-kubernetes-testdata/1_35/ksm/metrics").read_text()
    ps = Partitions()
    ps.feed(_scrape(node, 1000.0, "node") + _scrape(cad, 1000.0, "cadvisor") + _scrape(ksm, 1000.0, "ksm"))
    ps.feed(_scrape(node, 1030.0, "node", factor=2) + _scrape(cad, 1030.0, "cadvisor", factor=2))
    ps.feed(_scrape(ksm, 1040.0, "ksm"))
    nk = (("cluster", "ack-1"), ("instance", "node:443"))
    assert ps.latest("node_nf_conntrack_usage_ratio") == {nk: (1030.0, pytest.approx(123 / 65536))}
    cpu = [(lab["mode"], v) for n, lab, v, _ in parse(node).points if n == "node_cpu_seconds_total"]
    idle = sum(v for m, v in cpu if m == "idle") / sum(v for _, v in cpu)
    assert ps.latest("node_cpu_utilisation") == {nk: (1030.0, pytest.approx(1 - idle))}
    assert ps.latest("node_memory_available_ratio") == {}  # this fixture's kernel has no MemAvailable
    mem = ps.latest("container_memory_limit_ratio")
    ws = {(lab["namespace"], lab["pod"], lab["container"]): v for n, lab, v, _ in parse(cad).points
          if n == "container_memory_working_set_bytes" and lab["container"] not in ("", "POD")}
    k = (("cluster", "ack-1"), ("container", "compute-pi-digits"), ("namespace", "scraper"),
         ("pod", "e2e-statefulset-0"))
    assert mem[k][1] == pytest.approx(ws[("scraper", "e2e-statefulset-0", "compute-pi-digits")] / 3.145728e7)
    assert len(mem) == 7  # containers with a memory limit (0 = none: no ratio)
    quota = ps.latest("kube_resourcequota_used_ratio")
    qk = (("cluster", "ack-1"), ("namespace", "nri-test-namespace"), ("resource", "limits.cpu"),
          ("resourcequota", "nri-test-namespace-quota"))
    assert quota[qk] == (1000.0, 0.0) and len(quota) == 13  # the 1040 round waits for a later watermark
    sts = ps.latest("kube_statefulset_status_replicas_unavailable")
    assert sts == {(("cluster", "ack-1"), ("namespace", "scraper"), ("statefulset", "e2e-statefulset")): (1000.0, 0.0)}
    # the recorded HPA wants 0 replicas (it has no metrics) and has 1, its minimum: it cannot go lower, so (as in the
    # mixin) no mismatch
    assert ps.latest("kube_hpa_replicas_mismatch") == {}
    hk = (("cluster", "ack-1"), ("horizontalpodautoscaler", "e2e-hpa"), ("namespace", "scraper"))
    lab = {"job": "ksm", "instance": "ksm:443", "cluster": "ack-1", "namespace": "scraper", "horizontalpodautoscaler": "e2e-hpa"}

    def hpa(t, current, desired, labels=lab):
        ps.feed([Sample(f"kube_horizontalpodautoscaler_{n}", v, t, labels) for n, v in (
            ("status_current_replicas", current), ("status_desired_replicas", desired), ("spec_min_replicas", 1),
            ("spec_max_replicas", 10))])
        ps.feed([Sample("up", 1, t + 30, {"job": "x", "instance": str(i)}) for i in range(16)])

    # it scales to 3 of 1-10 replicas and wants 5: 2 short, but its count changed at 1050, so (the mixin's
    # `changes(current[15m]) == 0`) no value until it has stayed at 3 for 15m
    for t in (1050.0, 1290.0, 1530.0, 1770.0, 1949.0):
        hpa(t, 3, 5)
    assert ps.latest("kube_hpa_replicas_mismatch") == {}
    hpa(1950.0, 3, 5)
    assert ps.latest("kube_hpa_replicas_mismatch") == {hk: (1950.0, 2.0)}
    # at its maximum of 10 wanting 12 it is not counted (the bounds), nor at 4 wanting 5 (it moved again)
    hpa(2100.0, 10, 12)
    hpa(3100.0, 10, 12)
    hpa(3200.0, 4, 5)
    assert ps.latest("kube_hpa_replicas_mismatch") == {hk: (1950.0, 2.0)}
    # an HPA first seen short, its count unchanged since: counted at once (PromQL's `changes` over a short history)
    other = {**lab, "horizontalpodautoscaler": "cart"}
    hpa(3300.0, 2, 4, other)
    assert ps.latest("kube_hpa_replicas_mismatch")[(*hk[:1], ("horizontalpodautoscaler", "cart"), hk[2])] == (3300.0, 2.0)
    # no PodDisruptionBudget on the page; one built after kube-state-metrics' series: 3 healthy wanted, 2 healthy
    pdb = {"job": "ksm", "instance": "ksm:443", "cluster": "ack-1", "namespace": "shop", "poddisruptionbudget": "cart"}
    ps.feed([Sample("kube_poddisruptionbudget_status_desired_healthy", 3, 1100.0, pdb),
             Sample("kube_poddisruptionbudget_status_current_healthy", 2, 1100.0, pdb)])
    ps.feed([Sample("up", 1, 1110.0, {"job": "x", "instance": str(i)}) for i in range(16)])
    assert ps.latest("kube_pdb_healthy_shortfall") == {
        (("cluster", "ack-1"), ("namespace", "shop"), ("poddisruptionbudget", "cart")): (1100.0, 1.0)}


def test_two_signals_holding_on_one_series_each_see_its_age():
    """A series' age is updated once per point and read by every signal that holds on it (the second signal
    must not take the first one's update for a duplicate point)."""
    from streams.derived import Signal

    sigs = tuple(Signal(name, "difference", (("want", "num", None), ("have", "den", None), ("have", "held", None)),
                        by=("job",), hold=hold) for name, hold in (("short_hold", 60.0), ("long_hold", 120.0)))
    ps = Partitions()
    ps.stage = Derived(signals=sigs)
    for t, have in ((0.0, 1), (100.0, 2), (170.0, 2), (230.0, 2)):
        ps.feed([Sample("want", 5, t, {"job": "a"}), Sample("have", have, t, {"job": "a"})])
        ps.feed([Sample("up", 1, t + 5, {"job": str(i)}) for i in range(16)])
    # the count changed at 100: held 70 s at 170 (enough for 60 s, not for 120 s), 130 s at 230
    assert ps.latest("short_hold") == {(("job", "a"),): (230.0, 3.0)}
    assert [(s.time, s.value) for s in ps.derived if s.name == "short_hold"] == [(0.0, 4.0), (170.0, 3.0), (230.0, 3.0)]
    assert [(s.time, s.value) for s in ps.derived if s.name == "long_hold"] == [(0.0, 4.0), (230.0, 3.0)]


def test_series_that_went_away_leave_no_state_behind():
    """Pods come and go: a source series silent for ``forget`` loses its counter (and held) state, and a derived
    series whose every contribution went stale loses its aggregate, at the next sweep; live series keep theirs."""
    from streams.derived import AGG, PREFIX, SWEEP_EVERY

    d, state, out = Derived(forget=3600.0), {}, []

    def emit(topic, key, value):
        out.append(decode(value))

    def feed(t, pods):
        for pod in pods:
            for code in ("200", "500"):
                s = Sample("apiserver_request_total", t, t, {"code": code, "verb": "GET", "instance": pod})
                d.process(s, state, emit)
        for p in list(out):  # partials come back (one partition here)
            if p.labels.get("kubesight") == "partial":
                d.process(p, state, emit)
        out.clear()
        d.tick(t + 2, state, emit)

    feed(0.0, ["a", "b"])
    feed(30.0, ["a", "b"])
    counters = lambda: sorted(k for k in state if k.startswith(PREFIX + "c|"))  # noqa: E731
    aggs = lambda: sorted((state[k]["n"], state[k]["l"].get("instance", "")) for k in state if k.startswith(AGG))  # noqa: E731
    per_instance = [("apiserver_5xx_ratio", "a"), ("apiserver_5xx_ratio", "b"), ("apiserver_error_ratio", ""),
                    ("apiserver_request_rate", "a"), ("apiserver_request_rate", "b")]
    assert len(counters()) == 4 and aggs() == per_instance  # rate and 5xx ratio per instance, the cluster's budget
    t = 60.0
    while t < 3600.0 + 2 * SWEEP_EVERY:  # b is gone; a stays
        feed(t, ["a"])
        t += 300.0
    assert len(counters()) == 2 and aggs() == [x for x in per_instance if x[1] != "b"]
    assert all(state[k][2] >= t - 600 for k in counters())  # what is left is a's, current
    before = dict(state)
    feed(t, ["a"])  # no sweep is due again yet: nothing else changes but the new points
    assert set(state) == set(before)


def test_an_apiservices_losses_are_summed_over_reasons_and_api_servers():
    """kubernetes-mixin's KubeAggregatedAPIErrors: sum by (name) of the losses; each API server counts its own, and
    one that restarts (its counter back to 0) does not make the sum drop: each counter's resets are added back."""
    ps = Partitions()
    svc = "v1beta1.metrics.k8s.io"

    def loss(t: float, instance: str, reason: str, value: float, name: str = svc) -> Sample:
        return Sample("aggregator_unavailable_apiservice_total", value, t,
                      {"job": "apiserver", "cluster": "ack-1", "instance": instance, "name": name, "reason": reason})

    def scrape(t: float, a_failed: float, b_failed: float, a_missing: float, other: float) -> list[Sample]:
        return [loss(t, "a:6443", "FailedDiscoveryCheck", a_failed), loss(t, "b:6443", "FailedDiscoveryCheck", b_failed),
                loss(t, "a:6443", "MissingEndpoints", a_missing), loss(t, "a:6443", "FailedDiscoveryCheck", other, "v1.other")]

    ticks = [Sample("up", 1, 1100.0, {"job": "x", "instance": str(i)}) for i in range(16)]
    ps.feed(scrape(1000.0, 3, 20, 2, 7) + ticks)  # counted from here: 0 so far
    ps.feed(scrape(1060.0, 5, 1, 3, 7))  # a: 2 more and 1 more; b restarted and lost it once since
    ps.feed([Sample("up", 1, 1200.0, {"job": "x", "instance": str(i)}) for i in range(16)])
    got = {dict(k)["name"]: tv for k, tv in ps.latest("aggregator_unavailable_apiservice_all_reasons_total").items()}
    assert got == {svc: (1060.0, 4.0), "v1.other": (1060.0, 0.0)}
    firsts = [s.value for s in ps.derived if s.name == "aggregator_unavailable_apiservice_all_reasons_total"
              and s.labels["name"] == svc]
    assert firsts == [0.0, 4.0]


def test_a_read_only_or_excluded_claim_has_no_volume_ratio():
    """kubernetes-mixin's PersistentVolume alerts skip claims mounted ReadOnlyMany and claims labelled
    excluded_from_alerts=true (kube-state-metrics' series, scraped apart from the kubelet's)."""
    ps = Partitions()
    out = []
    for pvc, mode, excluded in (("data-0", "ReadWriteOnce", None), ("shared", "ReadOnlyMany", None),
                                ("scratch", "ReadWriteOnce", "true")):
        kubelet = {"job": "kubelet", "instance": "n1:10250", "cluster": "ack-1", "namespace": "shop",
                   "persistentvolumeclaim": pvc}
        ksm = {"job": "ksm", "instance": "ksm:8080", "cluster": "ack-1", "namespace": "shop", "persistentvolumeclaim": pvc}
        out += [Sample("kubelet_volume_stats_available_bytes", 1.0, 1000.0, kubelet),
                Sample("kubelet_volume_stats_capacity_bytes", 10.0, 1000.0, kubelet),
                Sample("kubelet_volume_stats_inodes_free", 1.0, 1000.0, kubelet),
                Sample("kubelet_volume_stats_inodes", 4.0, 1000.0, kubelet),
                Sample("kube_persistentvolumeclaim_access_mode", 1.0, 1000.0, {**ksm, "access_mode": mode})]
        if excluded:
            out.append(Sample("kube_persistentvolumeclaim_labels", 1.0, 1000.0, {**ksm, "label_excluded_from_alerts": excluded}))
    ps.feed(out + [Sample("up", 1, 1100.0, {"job": "x", "instance": str(i)}) for i in range(16)])
    for name, value in (("kubelet_volume_avail_ratio", 0.1), ("kubelet_volume_inodes_free_ratio", 0.25)):
        got = {dict(k)["persistentvolumeclaim"]: tv for k, tv in ps.latest(name).items()}
        assert got == {"data-0": (1000.0, value)}, name


def test_a_read_only_filesystem_has_no_space_or_inode_ratio():
    """node-exporter-mixin guards every filesystem alert with node_filesystem_readonly == 0: a read-only filesystem
    neither fills nor empties.  A mount that goes read-only loses its ratios; one without the gauge keeps them."""
    ps = Partitions()

    def scrape(t: float, readonly: dict) -> list[Sample]:
        out = []
        for mp, ro in readonly.items():
            lab = {"job": "node", "instance": "n1:9100", "cluster": "ack-1", "device": f"/dev/{mp[1:] or 'root'}",
                   "fstype": "ext4", "mountpoint": mp}
            out += [Sample("node_filesystem_avail_bytes", 10.0, t, lab), Sample("node_filesystem_size_bytes", 40.0, t, lab),
                    Sample("node_filesystem_files_free", 5.0, t, lab), Sample("node_filesystem_files", 10.0, t, lab)]
            if ro is not None:
                out.append(Sample("node_filesystem_readonly", ro, t, lab))
        return out

    ps.feed(scrape(1000.0, {"/var": 0.0, "/usr": 1.0, "/old": None}))
    ps.feed(scrape(1030.0, {"/var": 1.0, "/usr": 1.0, "/old": None}))  # /var is remounted read-only
    ps.feed([Sample("up", 1, 1100.0, {"job": "x", "instance": str(i)}) for i in range(16)])
    for name, value in (("node_filesystem_avail_ratio", 0.25), ("node_filesystem_files_free_ratio", 0.5)):
        got = {dict(k)["mountpoint"]: tv for k, tv in ps.latest(name).items()}
        assert got == {"/var": (1000.0, value), "/old": (1030.0, value)}, name


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


def test_each_partial_is_keyed_by_the_derived_series_it_is_part_of(pages):
    """Partials go to their derived series' partition (the stage remembers each series' key: a wrong one would
    split a series' partials across partitions); two API servers make two series of each signal."""
    d, state, out = Derived(), {}, []
    for t, factor in ((1000.0, 1.0), (1030.0, 2.0)):
        for host in ("a", "b"):
            for s in _scrape(pages["api"], t, "apiserver", factor=factor):
                s.labels["instance"] = f"{host}:443"
                d.process(s, state, lambda topic, key, value: out.append((key, decode(value))))
    parts = [(k, s) for k, s in out if s.name.endswith(":partial")]
    assert len({k for k, _ in parts}) >= 4
    for key, p in parts:
        labels = {k: v for k, v in p.labels.items() if k not in ("src", "part")}
        assert key == Sample(p.name[:-len(":partial")], 0.0, 0.0, {**labels, "kubesight": "derived"}).key(), p


def test_derived_md_defines_every_signal():
    """collectors/metrics/DERIVED.md is the reference of what each derived signal means: none may be missing."""
    from core.settings import REPO
    from streams.derived import SIGNALS

    text = (REPO / "collectors" / "metrics" / "DERIVED.md").read_text()
    assert [s.name for s in SIGNALS if f"| `{s.name}` |" not in text] == []


class OnePartition(Partitions):
    """Every series in one partition, ticked at each batch's newest time (the audit's harness)."""

    def _part(self, key: bytes) -> int:
        return 0


def test_an_apiservices_total_stays_a_counter_when_an_api_server_goes_away_and_comes_back():
    """The sum of each API server's total fell when one went quiet (its part dropped: a false reset, 'increase' 11
    against PromQL's 3, and KubeAggregatedAPIErrors fired) and jumped when it came back. Now each part counts from
    when it (re)joined and a part that leaves hands its count to the sum: sum(increase(...)), as PromQL has it."""
    from rules.conditions import _agg

    ps = OnePartition()
    for t in range(0, 4800, 30):
        batch = [Sample("aggregator_unavailable_apiservice_total", 5 + t // 400, float(t),
                        {"cluster": "c", "name": "x", "instance": "b", "reason": "r"})]
        if not 3000 <= t < 3600:  # a's API server away for 10 minutes, then back (with no new loss meanwhile)
            batch.append(Sample("aggregator_unavailable_apiservice_total", 100 + min(t, 2999) // 300, float(t),
                                {"cluster": "c", "name": "x", "instance": "a", "reason": "r"}))
        ps.feed(batch)
    pts = [[s.time, s.value] for s in ps.derived if s.name == "aggregator_unavailable_apiservice_all_reasons_total"]
    worst = max(_agg("increase", [p for p in pts if end - 600 <= p[0] <= end]) for end in range(3000, 4800, 30))
    assert worst <= 3.0  # b's one or two losses in any 10 minutes (a lost nothing after 2999)


def test_le_as_prometheus_3_writes_it_counts_a_request_as_fast_and_a_bad_le_is_skipped():
    """Prometheus 3 writes le="1.0": the latency SLI matched the string "1", so every request counted as slow (a
    false error-budget burn). A bucket whose le is not a number ("0,5") made every tick of its partition raise."""
    def page(le: str, t: float, n: float) -> list[Sample]:
        lab = {"cluster": "c", "job": "apiserver", "instance": "a", "verb": "GET", "scope": "resource",
               "resource": "pods", "component": "apiserver", "group": "", "version": "v1"}
        return [Sample("apiserver_request_sli_duration_seconds_bucket", n, t, {**lab, "le": le}),
                Sample("apiserver_request_sli_duration_seconds_bucket", n, t, {**lab, "le": "+Inf"}),
                Sample("apiserver_request_sli_duration_seconds_count", n, t, lab),
                Sample("apiserver_request_total", n, t, {**lab, "code": "200"})]

    ratios = {}
    for le in ("1", "1.0", "1e+00"):
        ps = OnePartition()
        for i in range(12):
            ps.feed(page(le, 1000.0 + 30 * i, 100.0 * i))
        ratios[le] = [v for _, v in ps.latest("apiserver_error_ratio").values()]
    assert ratios["1"] == ratios["1.0"] == ratios["1e+00"] and ratios["1"] and max(ratios["1"]) == 0.0
    ps = OnePartition()  # a bucket with le="0,5" beside good ones: skipped, the others computed, no tick raises
    for i in range(12):
        t = 1000.0 + 30 * i
        ps.feed([Sample("etcd_disk_wal_fsync_duration_seconds_bucket", 10.0 * i, t, {"instance": "e0", "le": le})
                 for le in ("0.001", "0,5", "0.01", "+Inf")])
    assert ps.latest("etcd_fsync_p99_seconds")


def test_an_infinite_sample_does_not_poison_a_counters_rate():
    ps = OnePartition()
    for i in range(60):
        v = math.inf if i == 10 else 10.0 * 30 * i
        ps.feed([Sample("coredns_dns_requests_total", v, 1000.0 + 30 * i, {"cluster": "c", "instance": "d"})])
    (t, rate), = ps.latest("coredns_request_rate").values()
    assert t > 1000.0 + 30 * 50 and rate == pytest.approx(10.0)  # still emitted, and right (was: Inf, then nothing)


def test_pod_not_ready_network_error_ratios_and_an_unsynchronised_clock_as_the_mixins_define_them():
    """An audit against promtool (2026-11-29): KubePodNotReady per pod and not for a Job's pod, the network error
    alerts on errors over packets, NodeClockNotSynchronising only with a max error of 16 s or more."""
    ps = Partitions()

    def scrape(t: float, k: int) -> list[Sample]:
        c = {"cluster": "ack-1"}
        out = []
        for pod, phase, owner in (("web-1", "Failed", "ReplicaSet"), ("job-1", "Pending", "Job"),
                                  ("ok-1", "Running", "ReplicaSet")):
            for ph in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
                out.append(Sample("kube_pod_status_phase", float(ph == phase), t, {**c, "namespace": "shop", "pod": pod,
                                                                                    "phase": ph}))
            out.append(Sample("kube_pod_owner", 1.0, t, {**c, "namespace": "shop", "pod": pod, "owner_kind": owner,
                                                          "owner_name": "x"}))
        dev = {**c, "instance": "n1:9100", "device": "eth0"}
        out += [Sample("node_network_receive_errs_total", 2.0 * 30 * k, t, dev),
                Sample("node_network_receive_packets_total", 100.0 * 30 * k, t, dev),
                Sample("node_network_transmit_errs_total", 0.0, t, dev),
                Sample("node_network_transmit_packets_total", 100.0 * 30 * k, t, dev)]
        for inst, sync, maxerr in (("a:9100", 0.0, 16.5), ("b:9100", 1.0, 16.5)):
            lab = {**c, "instance": inst}
            out += [Sample("node_timex_sync_status", sync, t, lab), Sample("node_timex_maxerror_seconds", maxerr, t, lab)]
        return out

    for k in range(4):
        ps.feed(scrape(1000.0 + 30 * k, k))
    ps.feed([Sample("up", 1, 1200.0, {"job": "x", "instance": str(i)}) for i in range(16)])
    assert {dict(k)["pod"]: v for k, (_, v) in ps.latest("kube_pod_not_ready").items()} == {"web-1": 1.0, "ok-1": 0.0}
    assert [v for _, v in ps.latest("node_network_receive_error_ratio").values()] == [pytest.approx(0.02)]
    assert [v for _, v in ps.latest("node_network_transmit_error_ratio").values()] == [0.0]
    assert {dict(k)["instance"]: v for k, (_, v) in ps.latest("node_timex_unsynchronised_maxerror_seconds").items()} == {
        "a:9100": 16.5}


QUOTA = {"cluster": "c", "namespace": "shop", "resourcequota": "q", "resource": "pods", "kubesight": "derived"}


def _quota_alerts(minutes, value: float, st: dict, eng=None):
    """The default pack's KubeQuotaExceeded transitions for a derived quota ratio at ``value`` over ``minutes``."""
    from rules.engine import Engine
    from rules.load import DEFAULT_PACK, load_packs

    eng = eng or Engine(load_packs([DEFAULT_PACK]))
    out = []
    for m in minutes:
        out += eng.process(Sample("kube_resourcequota_used_ratio", value, 60.0 * m, QUOTA), st)
    return eng, [a for a in out if a.labels["alertname"] == "KubeQuotaExceeded"]


def test_an_alert_on_a_derived_signal_has_no_kubesight_label():
    """Upstream's alerts carry the expression's labels only: the derived mark would split Alertmanager's groups."""
    _, [alert] = _quota_alerts(range(20), 1.2, {})
    assert "kubesight" not in alert.labels and alert.labels["resourcequota"] == "q"


def test_an_alert_firing_with_the_old_mark_stays_the_same_alert_until_it_resolves():
    """State written before alerts lost the ``kubesight`` label: the firing alert keeps it (and its fingerprint) until
    it resolves, instead of resolving and firing again as a new alert at the upgrade."""
    st: dict = {}
    eng, [fired] = _quota_alerts(range(20), 1.2, st)
    for v in st.values():  # as the previous version saved it
        if isinstance(v, dict) and v.get("s") == 2 and v.get("l", {}).get("alertname") == "KubeQuotaExceeded":
            v["l"] = {**v["l"], "kubesight": "derived"}
    old_fp = Alert(dict(fired.labels, kubesight="derived"), startsAt=fired.startsAt).fingerprint
    assert _quota_alerts(range(20, 25), 1.2, st, eng)[1] == []  # no resolve, no new firing
    [end] = _quota_alerts(range(25, 27), 0.5, st, eng)[1]
    assert (end.status, end.fingerprint) == ("resolved", old_fp)
