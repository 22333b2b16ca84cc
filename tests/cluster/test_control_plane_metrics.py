"""The real control plane's /metrics through the project's metrics collector, with the auth each needs.

- kube-apiserver, kube-scheduler, kube-controller-manager: HTTPS and a bearer token authorized for
  ``get`` on the non-resource URL ``/metrics``: the metrics collector's own ServiceAccount and
  ClusterRole (deploy/kubernetes/collector-metrics.yaml), token from the TokenRequest API. The
  scheduler and controller-manager check it through the API server (TokenReview +
  SubjectAccessReview: delegated authn/authz); a token without that right gets 403.
- etcd: plain HTTP on loopback, no auth (a real cluster uses client certificates).

Then every rule of the default control-plane pack is checked against what real 1.34 components
export: the metric it matches, or for a derived signal, the inputs of the derivation
(``streams.derived.SIGNALS``), and the derived signals are computed from two real scrapes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml

from tests.cluster.conftest import create_docs, manifest_docs, sa_token, wait_for
from tests.realtools import serve_get, stop_server

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / "rules" / "packs" / "default" / "control-plane.yaml"
# job names as the collector's discovery names them (collectors/metrics/discovery.py)
JOBS = {"kube-apiserver": "apiserver", "etcd": "etcd", "kube-scheduler": "scheduler",
        "kube-controller-manager": "controller-manager"}
# rule inputs no component of this cluster can export: CoreDNS is not part of it (kube-dns is an add-on)
# not run by the local control plane: CoreDNS; and no admission webhook is registered, so the apiserver has no series
# of its webhook latency histogram (a labelled histogram appears once observed); and the aggregator's counter of
# APIServices that became unavailable is exported once one has (test_an_unavailable_aggregated_api_fires provokes it)
NOT_RUN_HERE = {"CoreDNSDown", "CoreDNSPanic", "CoreDNSNoRequests", "KubeAPIAdmissionWebhookSlow",
                "KubeAggregatedAPIErrors"}
# Rules whose input never appears in real 1.34 output: bugs in the rule or the derivation (see the
# report of issue 12). Empty is the goal; the test fails when this list and reality disagree.
KNOWN_MISSING: dict[str, str] = {}


@pytest.fixture(scope="module")
def scrape_config(cluster, api, tmp_path_factory):
    docs = [d for d in manifest_docs(REPO / "deploy" / "kubernetes" / "collector-metrics.yaml")
            if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")]
    from tests.cluster.conftest import ensure_namespace

    ensure_namespace(api, "kubesight")
    create_docs(api, docs)
    d = tmp_path_factory.mktemp("metrics")
    token = sa_token(api, "kubesight", "kubesight-metrics")
    (d / "token").write_text(token)
    targets = []
    for comp, url in cluster.metrics_urls.items():
        # static targets: discovery's apiserver role reads Endpoints default/kubernetes, which a cluster
        # bound to loopback cannot have (the API server refuses to publish 127.0.0.1 there)
        t = {"job": JOBS[comp], "url": url, "labels": {"cluster": "local"}}
        if url.startswith("https"):  # the API server's CA is known; the others' certificates are self-signed
            t.update(bearer_token_file=str(d / "token"),
                     tls={"ca_file": str(cluster.ca_file)} if comp == "kube-apiserver" else {"insecure_skip_verify": True})
        targets.append(t)
    cfg = d / "metrics.yaml"
    cfg.write_text(yaml.safe_dump({"defaults": {"interval": "30s", "timeout": "10s", "max_series": 200000},
                                   "targets": targets, "remote_write": {"enabled": False}}))
    return cfg


def scrape(cfg: Path) -> tuple[list[dict], str]:
    """One round of ``kubesight collect metrics --once --stdout``: (samples, the per-target table)."""
    res = subprocess.run([sys.executable, "-m", "kubesight", "collect", "metrics", "--config", str(cfg), "--once",
                          "--stdout"], cwd=REPO, capture_output=True, timeout=120,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    table = res.stderr.decode(errors="replace")
    assert res.returncode == 0, f"a control-plane target is down or the scrape failed:\n{table[-3000:]}"
    return [orjson.loads(line) for line in res.stdout.splitlines() if line.strip()], table


def client_cert(cluster, d: Path, cn: str, days: int) -> tuple[Path, Path]:
    """A client certificate for user ``cn`` signed by the cluster's client CA, valid ``days`` from now (openssl CLI)."""
    pki = cluster.run_dir / "pki"
    key, csr, crt = d / f"{cn}.key", d / f"{cn}.csr", d / f"{cn}.crt"
    for cmd in (["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", str(key),
                 "-out", str(csr)],
                ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki / "client-ca.crt"), "-CAkey",
                 str(pki / "client-ca.key"), "-CAcreateserial", "-days", str(days), "-out", str(crt)]):
        subprocess.run(cmd, check=True, capture_output=True)
    return crt, key


def present(cluster, cert: tuple[Path, Path], times: int) -> None:
    """``times`` requests to the API server authenticated by ``cert`` (what a kubelet's client certificate does)."""
    import ssl
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    ctx.load_cert_chain(*map(str, cert))
    for _ in range(times):
        with urllib.request.urlopen(f"{cluster.server}/version", context=ctx, timeout=10) as r:
            assert r.status == 200


@pytest.fixture(scope="module")
def rounds(cluster, scrape_config, tmp_path_factory):
    first = scrape(scrape_config)
    # a client with a year-long certificate meanwhile, as kubelets are (the components here use tokens): the
    # certificate-expiry signal is computed from what was presented between two scrapes
    present(cluster, client_cert(cluster, tmp_path_factory.mktemp("certs"), "kubesight-test-kubelet", 365), 5)
    time.sleep(2)  # two points per counter series: the derivations need a rate
    second = scrape(scrape_config)
    return first, second


def by_job(samples) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for s in samples:
        out.setdefault(s["labels"].get("job", ""), set()).add(s["name"])
    return out


def test_every_component_is_scraped(rounds):
    (samples, table), _ = rounds
    names = by_job(samples)
    assert set(names) == set(JOBS.values()), table
    for job, got in names.items():
        assert len(got) > 50, f"{job}: only {sorted(got)}"
    ups = {s["labels"]["job"]: s["value"] for s in samples if s["name"] == "up"}
    assert ups == {j: 1.0 for j in JOBS.values()}, table
    assert "apiserver_request_total" in names["apiserver"] and "etcd_server_has_leader" in names["etcd"]
    assert "scheduler_pending_pods" in names["scheduler"]
    assert "workqueue_adds_total" in names["controller-manager"]


def test_metrics_need_an_authorized_token(cluster, api, collector_kubeconfig):
    """The Kubernetes collector's token authenticates but is not allowed /metrics: every secure endpoint says 403."""
    import ssl
    import urllib.error
    import urllib.request

    token = json.loads(collector_kubeconfig.read_text())["users"][0]["user"]["token"]
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    for comp, url in cluster.metrics_urls.items():
        if not url.startswith("https"):
            continue
        for tok, want in ((token, 403), ("not-a-token", 401)):
            req = urllib.request.Request(url, headers={"Authorization": f"Bearer {tok}"})
            with pytest.raises(urllib.error.HTTPError) as exc:
                urllib.request.urlopen(req, context=ctx, timeout=10)
            assert exc.value.code == want, (comp, tok == token, exc.value.code)


def rule_inputs() -> list[tuple[str, str, list[str]]]:
    """(alert, matched metric, the raw metrics it needs) of every metric rule of the control-plane pack."""
    from streams.derived import SIGNALS

    derived = {s.name: [m for m, _, _ in s.inputs] for s in SIGNALS}
    out = []
    for r in yaml.safe_load(PACK.read_text())["rules"]:
        metric = r["match"].get("metric")
        if metric:
            out.append((r["alert"], metric, derived.get(metric, [metric])))
    return out


def derive(samples: list[dict], stage: tuple | None = None) -> list:
    """The derived signals the stream stage computes from these samples (one partition, in memory); ``stage``: the
    (Derived, state) of an earlier call to go on with (counters counted from their first scrape)."""
    from core.records import decode
    from streams.derived import Derived

    (d, state), out = stage or (Derived(), {}), []
    queue = [decode(orjson.dumps(s)) for s in samples]
    latest = max(r.time for r in queue)
    while queue:  # partials go back through the stage, as they would through the samples topic
        emitted: list = []
        sink = lambda topic, key, value, emitted=emitted: emitted.append(decode(value))  # noqa: E731
        for rec in queue:
            d.process(rec, state, sink)
        out += emitted
        queue = [r for r in emitted if r.labels.get("kubesight") == "partial"]
    d.tick(latest + 10, state, lambda topic, key, value: out.append(decode(value)))
    return [r for r in out if r.labels.get("kubesight") == "derived"]


def test_control_plane_rules_have_their_inputs(rounds):
    """Every metric rule of the default control-plane pack matches at least one real series (its
    metric, derived or raw, with its label matchers), and the rule engine runs over all of it."""
    from core.records import decode
    from rules.engine import Engine
    from rules.load import load_packs

    (s1, _), (s2, _) = rounds
    raw = [decode(orjson.dumps(s)) for s in s1 + s2]
    derived = derive(s1 + s2)
    seen = {r.name for r in raw}
    made = {r.name for r in derived}
    inputs = {alert: need for alert, _, need in rule_inputs()}
    rs = load_packs([PACK])
    missing = {}
    for rule in rs.rules:
        if rule.on != "sample" or rule.alert in NOT_RUN_HERE:
            continue
        hits = [r for r in raw + derived if r.name in rule.metrics and all(m.matches(r.labels) for m in rule.matchers)]
        if hits:
            continue
        metric = rule.metrics[0]
        absent = [m for m in inputs[rule.alert] if m not in seen]
        if absent:
            missing[rule.alert] = f"{metric}: input(s) never exported: {', '.join(absent)}"
        elif metric not in seen and metric not in made:
            missing[rule.alert] = f"{metric}: inputs present but the derivation emits nothing"
        else:
            missing[rule.alert] = f"{metric}: present, but the matchers {[str(m) for m in rule.matchers]} exclude every series"
    print("\ncontrol-plane rules without input in real 1.34 output:",
          json.dumps(missing, indent=1) if missing else "none", "\nderived:", sorted(made))
    assert missing == KNOWN_MISSING
    # the engine takes the real series as they come: nothing fires on a healthy cluster
    eng, state, fired = Engine(rs), {}, []
    for rec in sorted(raw + derived, key=lambda r: r.time):
        fired += eng.process(rec, state, rec.time)
    fired += eng.tick(max(r.time for r in raw) + 1, state)
    assert [a.labels["alertname"] for a in fired if a.status == "firing"] == []


def test_a_refused_scrape_fires_its_down_rule(cluster, scrape_config, tmp_path):
    """The scheduler scraped with a token it refuses: ``up`` is 0, and KubeSchedulerDown fires after its 15 m."""
    from core.records import decode

    cfg = yaml.safe_load(scrape_config.read_text())
    (tmp_path / "token").write_text("not-a-valid-token")
    cfg["targets"] = [dict(t, bearer_token_file=str(tmp_path / "token")) for t in cfg["targets"] if t["job"] == "scheduler"]
    (tmp_path / "metrics.yaml").write_text(yaml.safe_dump(cfg))
    res = subprocess.run([sys.executable, "-m", "kubesight", "collect", "metrics", "--config",
                          str(tmp_path / "metrics.yaml"), "--once", "--stdout"], cwd=REPO, capture_output=True, timeout=120)
    assert res.returncode == 1 and "401" in res.stderr.decode(), res.stderr.decode()
    up = [decode(line) for line in res.stdout.splitlines() if b'"up"' in line]
    assert [(s.name, s.labels["job"], s.value) for s in up] == [("up", "scheduler", 0.0)]
    # the same refused scrape every 30 s (the scrape interval) for 16 minutes of event time
    assert replay(up[0], 33) == [(30, "KubeSchedulerDown", "firing", "platform", "critical")]  # after its `for: 15m`


def replay(sample, steps: int, pack=PACK) -> list[tuple[int, str, str, str, str]]:
    """The engine fed ``sample`` again every 30 s (a scrape interval) for ``steps`` scrapes: its transitions."""
    from core.records import Sample
    from rules.engine import Engine
    from rules.load import load_packs

    eng, state, fired = Engine(load_packs([pack])), {}, []
    for i in range(steps):
        s = Sample(sample.name, sample.value, sample.time + 30 * i, dict(sample.labels))
        fired += [(i, a.labels["alertname"], a.status, a.labels["owner"], a.labels["severity"])
                  for a in eng.process(s, state, s.time) + eng.tick(s.time, state)]
    return fired


def test_a_client_certificate_about_to_expire_fires(cluster, scrape_config, tmp_path):
    """A client presents a certificate with a day left: the API server's histogram of what clients present, through
    the collector and the derivation, gives a 1st percentile under a day, and both expiry rules fire after their 5m."""
    cfg = yaml.safe_load(scrape_config.read_text())
    cfg["targets"] = [t for t in cfg["targets"] if t["job"] == "apiserver"]
    (tmp_path / "metrics.yaml").write_text(yaml.safe_dump(cfg))
    cert = client_cert(cluster, tmp_path, "kubesight-test-expiring", 1)
    first, _ = scrape(tmp_path / "metrics.yaml")
    present(cluster, cert, 10)
    time.sleep(1)
    second, _ = scrape(tmp_path / "metrics.yaml")
    p1 = [d for d in derive(first + second) if d.name == "apiserver_client_certificate_expiry_p1_seconds"]
    assert len(p1) == 1, p1
    # a day less the seconds since it was signed: the (12 h, 1 d] bucket, 1 % into it
    assert 43200 < p1[0].value < 86400, p1[0]
    assert p1[0].labels["job"] == "apiserver"
    fired = replay(p1[0], 12)
    assert fired == [(10, "KubeClientCertificateExpiration", "firing", "platform", "warning"),
                     (10, "KubeClientCertificateExpirationCritical", "firing", "platform", "critical")], fired


class ExtensionServer:
    """A stand-in for an extension API server (metrics-server, say): HTTPS on loopback answering its group's discovery,
    stopped and started again on the same port to make the aggregator lose it and find it."""

    def __init__(self, cluster, group_version: str):
        self.body = orjson.dumps({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                                  "resources": []})
        pki = cluster.run_dir / "pki"
        self.tls, self.port, self.server = (pki / "audit.crt", pki / "audit.key"), 0, None  # a loopback serving cert

    def start(self) -> None:
        self.server = serve_get(lambda: self.body, "application/json", port=self.port, tls=self.tls)
        self.port = self.server.server_address[1]

    def stop(self) -> None:
        if self.server is not None:
            stop_server(self.server)
            self.server = None


def test_an_unavailable_aggregated_api_fires(cluster, api, scrape_config, tmp_path):
    """An APIService served by an extension server that goes away: the API server's aggregator marks it unavailable
    (its gauge 1, its counter of losses +1, reason FailedDiscoveryCheck); KubeAggregatedAPIDown fires after 5m of
    that, and KubeAggregatedAPIErrors once it was lost more than 4 times in 10m (the server flapping).

    The aggregator checks each APIService every 30 s and on any change to it: a label patch after each start or stop
    makes it look at once. The APIService is removed at the end: an unavailable group stalls namespace deletion."""
    from kubernetes import client

    from core.records import decode, encode
    from tests.cluster.conftest import ensure_namespace

    name, group = "v1alpha1.kubesight-test.io", "kubesight-test.io"
    cfg = yaml.safe_load(scrape_config.read_text())
    cfg["targets"] = [t for t in cfg["targets"] if t["job"] == "apiserver"]
    (tmp_path / "metrics.yaml").write_text(yaml.safe_dump(cfg))
    ext = ExtensionServer(cluster, f"{group}/v1alpha1")
    ext.start()
    ensure_namespace(api, "kubesight")
    # ExternalName: the aggregator dials the name itself (a ClusterIP would need a real service network)
    api.core.create_namespaced_service("kubesight", {"metadata": {"name": "kubesight-test-extension"}, "spec": {
        "type": "ExternalName", "externalName": "127.0.0.1", "ports": [{"name": "https", "port": ext.port}]}})
    reg = client.ApiregistrationV1Api(api.client)
    reg.create_api_service({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": name},
                            "spec": {"group": group, "version": "v1alpha1", "groupPriorityMinimum": 1000,
                                     "versionPriority": 15, "insecureSkipTLSVerify": True,
                                     "service": {"namespace": "kubesight", "name": "kubesight-test-extension",
                                                 "port": ext.port}}})
    nudges = iter(range(1000))

    def becomes(available: bool) -> None:
        reg.patch_api_service(name, {"metadata": {"labels": {"kubesight-test/nudge": str(next(nudges))}}})
        want = "True" if available else "False"

        def status():
            conds = reg.read_api_service(name).status.conditions or []
            return [(c.status, c.reason) for c in conds if c.type == "Available" and c.status == want]

        wait_for(f"{name} Available={want}", status, timeout=60, interval=0.5)

    def series() -> dict[str, list]:
        samples, _ = scrape(tmp_path / "metrics.yaml")
        out: dict[str, list] = {}
        for s in samples:
            if s["name"].startswith("aggregator_unavailable_apiservice") and s["labels"].get("name") == name:
                out.setdefault(s["name"], []).append(decode(orjson.dumps(s)))
        return out

    try:
        becomes(True)
        ext.stop()
        becomes(False)
        first = series()
        assert [s.value for s in first["aggregator_unavailable_apiservice"]] == [1.0], first
        assert [(s.labels["reason"], s.value) for s in first["aggregator_unavailable_apiservice_total"]] == [
            ("FailedDiscoveryCheck", 1.0)], first
        assert replay(first["aggregator_unavailable_apiservice"][0], 14) == [
            (10, "KubeAggregatedAPIDown", "firing", "platform", "warning")]  # 5m after the first unavailable point
        for _ in range(5):  # the extension server flaps: found, lost, five times over
            ext.start()
            becomes(True)
            ext.stop()
            becomes(False)
        lost = series()["aggregator_unavailable_apiservice_total"]
        assert [(s.labels["reason"], s.value) for s in lost] == [("FailedDiscoveryCheck", 6.0)], lost
        # the two scrapes a minute apart (the scrape interval of a real collector), through the derived stage (the
        # losses summed over reasons and API servers, as the mixin sums them): 5 losses in 10m fire at once
        from rules.engine import Engine
        from rules.load import load_packs
        from streams.derived import Derived

        eng, state = Engine(load_packs([PACK])), {}
        before = first["aggregator_unavailable_apiservice_total"][0]
        after = lost[0].__class__(lost[0].name, lost[0].value, before.time + 60, dict(lost[0].labels))
        stage = (Derived(), {})
        sums = [d for s in (before, after) for d in derive([orjson.loads(encode(s))], stage)
                if d.name == "aggregator_unavailable_apiservice_all_reasons_total"]
        assert [(d.labels["name"], d.value) for d in sums] == [(name, 0.0), (name, 5.0)], sums  # counted from the first
        fired = [(a.labels["alertname"], a.annotations["summary"]) for d in sums for a in eng.process(d, state, d.time)]
        assert fired == [("KubeAggregatedAPIErrors", f"aggregated API {name} became unavailable 5 times in 10m")]
    finally:
        ext.stop()
        reg.delete_api_service(name)
        api.core.delete_namespaced_service("kubesight-test-extension", "kubesight")
