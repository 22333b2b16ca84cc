"""Interop with the real tools (issue 14 #6): a real node_exporter scraped by ``kubesight collect metrics``,
a real Prometheus remote-writing into kubesight's intake, and kcat reading every topic.

The binaries are Debian's ``prometheus-node-exporter``, ``prometheus`` and ``kcat`` (``.ci/run`` installs
them); each runs on a free loopback port with its own temp dir.  The reference for what a page holds is
prometheus_client's parser, not kubesight's.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from core.settings import REPO
from kubesight.cli import main
from tests.kafkatools import read_to_end
from tests.realtools import Daemon, binary, free_port, serve_get, stop_server, wait_for

pytestmark = pytest.mark.kafka

INSTALL = "apt-get install -y prometheus prometheus-node-exporter kcat; .ci/run does it"
MONOTONIC = ("counter", "summary", "histogram")  # their samples only grow (summary quantiles aside)
# other gauges move between reads (memory, load, go runtime) and are compared as series only
CONSTANT = re.compile(r"node_memory_\w*Total\w*|node_memory_Hugepagesize_bytes|node_scrape_collector_success"
                      r"|go_info|process_max_fds|process_start_time_seconds|process_virtual_memory_max_bytes")


def node_exporter(tmp_path) -> Daemon:
    """node_exporter with a few collectors whose series set does not change between scrapes
    (its own go_/process_/promhttp_ metrics stay: summaries, counters and gauges of another process)."""
    port = free_port()
    d = Daemon("node_exporter", [binary("prometheus-node-exporter", "node_exporter", install=INSTALL),
                                 f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
                                 "--collector.cpu", "--collector.meminfo", "--collector.loadavg"],
               tmp_path, f"http://127.0.0.1:{port}/metrics")
    d.hostport = f"127.0.0.1:{port}"
    return d


def page(url: str) -> dict:
    """{(name, sorted label items): (family type, value)} of the page at ``url``, by prometheus_client's parser."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            kind = fam.type if not (fam.type == "summary" and "quantile" in s.labels) else "gauge"
            out[(s.name, tuple(sorted(s.labels.items())))] = (kind, s.value)
    return out


def _value(v) -> float:
    return float(v) if not isinstance(v, str) else float(v.replace("+Inf", "inf").replace("-Inf", "-inf"))


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _env(settings) -> dict:
    return dict(os.environ, KUBESIGHT_KAFKA=settings.kafka, KUBESIGHT_TOPIC_PREFIX=settings.topic_prefix)


def test_a_real_node_exporter_scraped_once_lands_series_for_series(settings, tmp_path, monkeypatch, capsys):
    with node_exporter(tmp_path) as ne:
        url = f"http://{ne.hostport}/metrics"
        cfg = tmp_path / "metrics.yaml"
        cfg.write_text(f"targets:\n  - {{job: node, url: '{url}'}}\nremote_write: {{enabled: false}}\n")
        monkeypatch.setenv("KUBESIGHT_KAFKA", settings.kafka)
        monkeypatch.setenv("KUBESIGHT_TOPIC_PREFIX", settings.topic_prefix)
        before = page(url)
        assert main(["collect", "metrics", "--config", str(cfg), "--once"]) == 0, capsys.readouterr().err
        after = page(url)
    assert before.keys() == after.keys(), "node_exporter's series set moved between two reads"
    recs = [json.loads(r.value) for r in read_to_end(settings.kafka, settings.topic("samples"))]
    assert recs and all(r["v"] == 1 and r["kind"] == "sample" for r in recs)
    assert all(r["labels"]["job"] == "node" and r["labels"]["instance"] == ne.hostport for r in recs)
    got = {}
    for r in recs:
        labels = {k: v for k, v in r["labels"].items() if k not in ("job", "instance")}
        key = (r["name"], tuple(sorted(labels.items())))
        assert key not in got, f"{key} twice in one scrape"
        got[key] = _value(r["value"])
    own = {k: got.pop(k) for k in [k for k in got if k[0] in ("up", "scrape_duration_seconds", "scrape_samples_scraped",
                                                               "scrape_samples_post_metric_relabeling")]}
    assert own[("up", ())] == 1.0 and own[("scrape_samples_scraped", ())] == len(before)
    assert own[("scrape_samples_post_metric_relabeling", ())] == len(before)  # no relabelling here
    assert set(got) == set(before), (f"only on the page: {sorted(set(before) - set(got))[:5]}; "
                                     f"only on the topic: {sorted(set(got) - set(before))[:5]}")
    assert ("node_memory_MemTotal_bytes", ()) in got and any(k[0] == "node_cpu_seconds_total" for k in got)
    for key, v in got.items():
        kind, v0 = before[key]
        v1 = after[key][1]
        if kind in MONOTONIC:  # read before <= kubesight's scrape <= read after
            assert v0 <= v <= v1, (key, v0, v, v1)
        elif CONSTANT.fullmatch(key[0]):  # gauges that do not move while the machine runs: the same value
            assert _same(v0, v1) and _same(v, v0), (key, v0, v, v1)


def _prometheus_counters(url: str, names: tuple[str, ...]) -> dict:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in names:
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def test_a_real_prometheus_remote_writes_into_the_intake_sample_for_sample(settings, tmp_path):
    rw_port, prom_port = free_port(), free_port()
    cfg = tmp_path / "metrics.yaml"
    cfg.write_text(f"targets: []\nremote_write: {{host: 127.0.0.1, port: {rw_port}}}\n")
    collector = Daemon("collector", [sys.executable, "-m", "kubesight", "collect", "metrics", "--config", str(cfg)],
                       tmp_path, f"http://127.0.0.1:{rw_port}/healthz", ready_timeout=30, env=_env(settings))
    (tmp_path / "tsdb").mkdir()
    prom_url = f"http://127.0.0.1:{prom_port}"
    with node_exporter(tmp_path) as ne:
        # one shard, batches cut every 3 s: between two sends both counts stand still
        (tmp_path / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: node
    static_configs: [{{targets: ['{ne.hostport}']}}]
remote_write:
  - url: http://127.0.0.1:{rw_port}/api/v1/write
    queue_config: {{min_shards: 1, max_shards: 1, max_samples_per_send: 100000, capacity: 100000,
                    batch_send_deadline: 3s}}
""")
        prometheus = Daemon("prometheus", [
            binary("prometheus", install=INSTALL), f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn"], tmp_path, f"{prom_url}/-/ready")
        with collector, prometheus:
            with urllib.request.urlopen(f"{prom_url}/metrics", timeout=10) as r:
                text = r.read().decode()
            total = next(n for n in ("prometheus_remote_storage_samples_total",
                                     "prometheus_remote_storage_succeeded_samples_total") if f"\n{n}" in text)
            bad = ("prometheus_remote_storage_samples_failed_total", "prometheus_remote_storage_samples_retried_total",
                   "prometheus_remote_storage_samples_dropped_total")

            def on_topic() -> list:
                return [json.loads(r.value) for r in read_to_end(settings.kafka, settings.topic("samples"))]

            wait_for(lambda: _prometheus_counters(prom_url, (total,)).get(total, 0) > 300, 30,
                     "Prometheus to have remote-written a few scrapes", every=0.5)

            def quiescent():  # Prometheus counts a batch before sending it: equal, unmoved counts = all landed
                c1 = _prometheus_counters(prom_url, (total,))[total]
                recs = on_topic()
                c2 = _prometheus_counters(prom_url, (total, *bad))
                return (c1, recs, c2) if c1 == c2[total] == len(recs) else None

            try:
                c, recs, counters = wait_for(quiescent, 25, f"{total} and the topic to agree at a quiet moment",
                                             every=0.3)
            except AssertionError:
                c = _prometheus_counters(prom_url, (total,))[total]
                raise AssertionError(f"{total}={c}, topic={len(on_topic())}; collector log: "
                                     f"{collector.log_tail()}") from None
            query = urllib.parse.urlencode({"query": '{job="node"}[10m]'})
            with urllib.request.urlopen(f"{prom_url}/api/v1/query?{query}", timeout=10) as r:
                stored = json.loads(r.read())["data"]["result"]
    assert all(counters.get(n, 0) == 0 for n in bad), counters
    assert c == len(recs) > 300
    # sample for sample against Prometheus' own TSDB: name, labels, millisecond timestamp and value
    def ms(iso: str) -> int:
        return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)

    sent = sorted((r["name"], tuple(sorted(r["labels"].items())), ms(r["time"]), repr(_value(r["value"])))
                  for r in recs)
    tsdb = []
    for series in stored:
        labels = dict(series["metric"])
        name = labels.pop("__name__")
        tsdb += [(name, tuple(sorted(labels.items())), round(t * 1000), repr(_value(v))) for t, v in series["values"]]
    last = max(s[2] for s in sent)  # the TSDB runs ahead of the queue: compare up to the last sample sent
    assert len(set(sent)) == len(sent), "a sample written twice"
    assert sent == sorted(s for s in tsdb if s[2] <= last)



ROUTING = """
route:
  receiver: hook
  group_by: [alertname, pod]
  group_wait: 1s
  group_interval: 5s
receivers:
  - name: hook
    webhook_configs: [{{url: '{url}'}}]
"""
NOT_RECORDS = {"rules": "rule pack YAML text", "checkpoints": "a collector's own resume point (JSON, no v)",
               "silences": "Alertmanager's silence object (JSON, no v; README's 'v: 1 everywhere' is not true here)",
               **{n: "compact JSON state: objects or scalars (no v)" for n in ("state-changelog", "alerting-changelog",
                                                                       "incidents-changelog")}}
NOT_COVERED = {"actions"}  # written by `kubesight remediate`, which needs a Kubernetes API: tests/cluster covers it


def kcat(bootstrap: str, topic: str) -> list[str]:
    """Every committed value of ``topic`` as kcat prints it (one per line), from the start to the end."""
    res = subprocess.run([binary("kcat", "kafkacat", install=INSTALL), "-C", "-b", bootstrap, "-t", topic, "-e", "-q",
                          "-X", "isolation.level=read_committed", "-f", "%s\\n"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return [line for line in res.stdout.split("\n") if line]


def test_kcat_reads_every_topic_as_plain_json(settings, tmp_path):
    from collectors.kernel.checkpoint import KafkaCheckpoint
    from collectors.sink import KafkaSink
    from core.records import Entity, Event, owner_key, owner_record
    from core.topics import SPECS
    from tests.alerts.amtools import WebhookSink

    pack = REPO / "tests" / "streams" / "packs" / "skeleton.yaml"
    web_port = free_port()
    with WebhookSink() as hook, node_exporter(tmp_path) as ne:
        (tmp_path / "routing.yaml").write_text(ROUTING.format(url=hook.url))
        s = settings.model_copy(update={"clock": "wall", "default_pack": False, "rules": [str(pack)],
                                        "routing": str(tmp_path / "routing.yaml"), "web_port": web_port,
                                        "state_dir": str(tmp_path / "state"), "commit_interval": 0.2})
        (tmp_path / "settings.yaml").write_text(yaml.safe_dump(s.model_dump(mode="json", exclude_none=True)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
        worker = Daemon("worker", [sys.executable, "-m", "kubesight", "--config", str(tmp_path / "settings.yaml"),
                                   "worker", "--worker-id", "kcat"], tmp_path, f"http://127.0.0.1:{web_port}/ready",
                        ready_timeout=90, env=env)
        # what the Kubernetes collector writes of the pods it resolved: the events below name no team, so their
        # alerts take these (the worker reads the owners topic before any signal)
        sink = KafkaSink(s.kafka, s.topic)
        sink.send_raw("owners", owner_key("default", "shop"), owner_record("web"))
        sink.send_raw("owners", owner_key("default", "shop", "web-1"), owner_record("payments", "Deployment/web"))
        sink.flush(30)
        sink.close()
        with worker:
            # inputs through kubesight's own producers: events and a dead letter (sink), a checkpoint
            # (the kernel collector's), a rule pack, samples (a real scrape), a silence (the CLI)
            sink = KafkaSink(s.kafka, s.topic)
            now = time.time()
            for i, pod in enumerate(("web-1", "web-2")):
                sink.send(Event(source="k8s", reason="BackOff", type="Warning", time=now + i,
                                entity=Entity(namespace="shop", kind="Pod", name=pod), message="Back-off"))
            sink.reject("interop: not an event", b"\xff not json", origin="tests/interop", topic="events")
            KafkaCheckpoint(s.kafka, s.topic("checkpoints"), "kernel/c1/n1", sink).save(
                {"source": "kmsg:b1", "pos": 41, "emitted": [43]})
            sink.send_raw("rules", b"skeleton", pack.read_bytes())  # what an operator publishes: the pack's text
            sink.flush(30)
            sink.close()
            cfg = tmp_path / "metrics.yaml"
            cfg.write_text(f"targets:\n  - {{job: node, url: 'http://{ne.hostport}/metrics'}}\n"
                           f"remote_write: {{enabled: false}}\n")
            kenv = dict(env, KUBESIGHT_KAFKA=s.kafka, KUBESIGHT_TOPIC_PREFIX=s.topic_prefix)
            for argv in (["collect", "metrics", "--config", str(cfg), "--once"],
                         ["--config", str(tmp_path / "settings.yaml"), "silences", "add", "alertname=Interop",
                          "--comment", "interop", "--author", "tests", "--duration", "1h"]):
                res = subprocess.run([sys.executable, "-m", "kubesight", *argv], env=kenv, cwd=REPO,
                                     capture_output=True, text=True, timeout=60)
                assert res.returncode == 0, (argv, res.stdout, res.stderr)
            wait_for(lambda: len(hook.bodies) >= 1, 60, "the webhook notification (the alerting pipeline ran)",
                     every=0.3)
            owned = {a["labels"]["pod"]: a["labels"].get("owner") for a in (json.loads(r.value) for r in
                     read_to_end(s.kafka, s.topic("alerts"))) if a["labels"].get("alertname") == "KubeBackOff"}
            assert owned == {"web-1": "payments", "web-2": "web"}
            names = [spec.name for spec in SPECS if spec.name not in NOT_COVERED]
            read: dict[str, list[str]] = {}

            def every_topic_read() -> bool:  # kcat itself: kafka-python cannot read the zstd changelogs
                read.update({n: kcat(s.kafka, s.topic(n)) for n in names if not read.get(n)})
                return all(read.values())

            try:
                wait_for(every_topic_read, 40, "kcat to read a record on every topic", every=0.5)
            except AssertionError:
                raise AssertionError(f"empty: {[n for n in names if not read[n]]}; {worker.log_tail()}") from None
    for spec in SPECS:
        if spec.name in NOT_COVERED:
            continue
        values = kcat(s.kafka, s.topic(spec.name))
        assert values, f"kcat read nothing from {spec.name}"
        if spec.name == "rules":
            text = "\n".join(values)  # one record: the pack's text, lines and all
            assert yaml.safe_load(text)["metadata"]["name"] == "skeleton" and text.count("kind: RulePack") == 1
            continue
        for v in values:
            rec = json.loads(v)  # changelogs also hold scalars (a store's event-time watermark)
            assert isinstance(rec, dict) or spec.name.endswith("-changelog"), (spec.name, v[:200])
            if spec.name not in NOT_RECORDS:
                assert rec.get("v") == 1, (spec.name, v[:200])


# kubernetes-mixin's apiserver_request:burnrate<window> recording rules (kube_apiserver-burnrate.libsonnet), read and
# write, with its selectors and latency thresholds; the burn-rate alerts sum the two by cluster
_READ, _WRITE = 'verb=~"LIST|GET"', 'verb=~"POST|PUT|PATCH|DELETE"'
_NS = 'subresource!~"proxy|attach|log|exec|portforward"'
MIXIN_BURNRATE = f"""
(
  (
    sum by (cluster) (rate(apiserver_request_sli_duration_seconds_count{{job="apiserver",{_READ},{_NS}}}[1m]))
    -
    (
      (sum by (cluster) (rate(apiserver_request_sli_duration_seconds_bucket{{job="apiserver",{_READ},{_NS},scope=~"resource|",le="1"}}[1m])) or vector(0))
      + sum by (cluster) (rate(apiserver_request_sli_duration_seconds_bucket{{job="apiserver",{_READ},{_NS},scope="namespace",le="5"}}[1m]))
      + sum by (cluster) (rate(apiserver_request_sli_duration_seconds_bucket{{job="apiserver",{_READ},{_NS},scope="cluster",le="30"}}[1m]))
    )
  )
  + sum by (cluster) (rate(apiserver_request_total{{job="apiserver",{_READ},code=~"5.."}}[1m]))
)
/ sum by (cluster) (rate(apiserver_request_total{{job="apiserver",{_READ}}}[1m]))
+
(
  (
    sum by (cluster) (rate(apiserver_request_sli_duration_seconds_count{{job="apiserver",{_WRITE},{_NS}}}[1m]))
    - sum by (cluster) (rate(apiserver_request_sli_duration_seconds_bucket{{job="apiserver",{_WRITE},{_NS},le="1"}}[1m]))
  )
  + sum by (cluster) (rate(apiserver_request_total{{job="apiserver",{_WRITE},code=~"5.."}}[1m]))
)
/ sum by (cluster) (rate(apiserver_request_total{{job="apiserver",{_WRITE}}}[1m]))
"""


def test_the_error_budget_signal_is_kubernetes_mixins_burn_rate_as_prometheus_computes_it(data_dir, tmp_path):
    """``apiserver_error_ratio`` (what KubeAPIErrorBudgetBurn reads) against the mixin's own recording rules evaluated by
    a real Prometheus on the same two scrapes of the recorded 1.35 API server page: its counters again 30 s later
    (doubled), with a POST answered 503 seven times more (the recording has 5xx reads only; PromQL's expression has
    no value for a class without any 5xx series)."""

    from tests.streams.test_derived import API, Partitions, _scrape

    failed_post = ('apiserver_request_total{code="503",component="apiserver",dry_run="",group="",resource="pods",'
                   'scope="namespace",subresource="",verb="POST",version="v1"} 7\n')
    text = (data_dir / API).read_text()
    # the recorded requests were nearly all fast: add some on each side of each latency threshold (reads by scope,
    # writes, a streaming one the SLI leaves out), each a series of the SLI histogram and of the request counter
    les = ["0.05", "0.1", "0.2", "0.4", "0.6", "0.8", "1", "1.25", "1.5", "2", "3", "4", "5", "6", "8", "10", "15", "20",
           "30", "45", "60", "+Inf"]
    sli, total = [], [failed_post]
    for verb, scope, resource, sub, n, took in (("LIST", "namespace", "kubesight-a", "", 40, 3.0),
                                               ("LIST", "cluster", "kubesight-b", "", 30, 20.0),
                                               ("LIST", "cluster", "kubesight-c", "", 10, 40.0),
                                               ("POST", "namespace", "kubesight-d", "", 25, 1.5),
                                               ("GET", "resource", "pods", "log", 50, 20.0)):
        lab = (f'component="apiserver",group="",resource="{resource}",scope="{scope}",subresource="{sub}",'
               f'verb="{verb}",version="v1"')
        sli += [f'apiserver_request_sli_duration_seconds_bucket{{{lab},le="{le}"}} {n if took <= float(le) else 0}\n'
                for le in les]
        sli += [f"apiserver_request_sli_duration_seconds_count{{{lab}}} {n}\n",
                f"apiserver_request_sli_duration_seconds_sum{{{lab}}} {n * took}\n"]
        total.append(f'apiserver_request_total{{code="200",dry_run="",{lab}}} {n}\n')
    for family, extra in (("apiserver_request_total{", total), ("apiserver_request_sli_duration_seconds_bucket{", sli)):
        anchor = next(ln for ln in text.splitlines(keepends=True) if ln.startswith(family))
        text = text.replace(anchor, anchor + "".join(extra), 1)  # inside its family, as the text format wants
    now = time.time()
    t0, t1 = round(now) - 50.0, round(now) - 20.0
    ours = Partitions()
    ours.feed(_scrape(text, t0, "apiserver"))
    ours.feed(_scrape(text, t1, "apiserver", factor=2))
    ours.feed(_scrape(text, t1 + 10, "etcd"))  # later records move every partition's watermark past the settle time
    ((key, (at, value)),) = ours.latest("apiserver_error_ratio").items()
    assert (key, at) == ((("cluster", "ack-1"),), t1)

    def stamped(factor: float, t: float) -> bytes:  # the page as the API server would serve it, timestamped
        out = []
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, v = line.rpartition(" ")
                if name.split("{", 1)[0].endswith(("_total", "_bucket", "_count", "_sum")):
                    v = repr(float(v) * factor)
                line = f"{name} {v} {int(t * 1000)}"
            out.append(line)
        return ("\n".join(out) + "\n").encode()

    pages = [stamped(1, t0), stamped(2, t1)]
    served: list[int] = []

    def page() -> bytes:  # the first scrape gets the first page, every later one the second
        served.append(1)
        return pages[min(len(served) - 1, 1)]

    srv = serve_get(page, "text/plain; version=0.0.4")
    prom_port = free_port()
    prom_url = f"http://127.0.0.1:{prom_port}"
    (tmp_path / "tsdb").mkdir()
    (tmp_path / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: apiserver
    honor_timestamps: true
    static_configs: [{{targets: ['127.0.0.1:{srv.server_address[1]}'], labels: {{cluster: ack-1}}}}]
""")
    prometheus = Daemon("prometheus", [
        binary("prometheus", install=INSTALL), f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
        "--log.level=warn"], tmp_path, f"{prom_url}/-/ready")

    def mixin() -> list:
        query = urllib.parse.urlencode({"query": MIXIN_BURNRATE, "time": repr(t1)})
        with urllib.request.urlopen(f"{prom_url}/api/v1/query?{query}", timeout=10) as r:
            return json.loads(r.read())["data"]["result"]

    try:
        with prometheus:
            got = wait_for(lambda: len(served) >= 2 and mixin(), 30, "Prometheus to have both scrapes", every=0.5)
    finally:
        stop_server(srv)
    assert [(r["metric"], float(r["value"][1])) for r in got] == [({"cluster": "ack-1"}, pytest.approx(value, rel=1e-9))]
    assert 0.05 < value < 0.06  # slow reads and writes, 5xx of both: 5.4x a 99% budget


def test_node_saturation_signals_from_a_real_node_exporter(data_dir, tmp_path):
    """The real node_exporter's filefd, loadavg and cpu collectors through kubesight's exposition parser and derived
    stage: load per CPU (node-exporter-mixin's NodeSystemSaturation input) counts this machine's CPUs, and the file
    descriptors in use are /proc/sys/fs/file-nr's share of its maximum."""
    from collectors.metrics.exposition import parse
    from core.records import Sample
    from tests.streams.test_derived import Partitions

    port = free_port()
    d = Daemon("node_exporter", [binary("prometheus-node-exporter", "node_exporter", install=INSTALL),
                                 f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
                                 "--collector.cpu", "--collector.loadavg", "--collector.filefd"],
               tmp_path, f"http://127.0.0.1:{port}/metrics")
    with d:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    points = parse(text).points
    got = {n: v for n, lab, v, _ in points if n in ("node_load1", "node_filefd_allocated", "node_filefd_maximum")}
    cpus = {lab["cpu"] for n, lab, v, _ in points if n == "node_cpu_seconds_total"}
    assert len(cpus) == os.cpu_count() and got["node_filefd_maximum"] == int(Path("/proc/sys/fs/file-nr").read_text().split()[2])
    ps = Partitions()
    labels = {"job": "node", "instance": f"127.0.0.1:{port}", "cluster": "local"}
    ps.feed([Sample(n, v, 1000.0, {**lab, **labels}) for n, lab, v, _ in points])
    ps.feed([Sample("up", 1.0, 1010.0, {"job": "x", "instance": str(i)}) for i in range(16)])  # watermarks move on
    key = (("cluster", "local"), ("instance", f"127.0.0.1:{port}"))
    assert ps.latest("node_load1_per_cpu") == {key: (1000.0, pytest.approx(got["node_load1"] / os.cpu_count()))}
    assert ps.latest("node_filefd_used_ratio") == {
        key: (1000.0, pytest.approx(got["node_filefd_allocated"] / got["node_filefd_maximum"]))}
