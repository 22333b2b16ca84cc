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

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from core.settings import REPO
from kubesight.cli import main
from tests.kafkatools import read_to_end
from tests.realtools import Daemon, binary, free_port, wait_for

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
    own = {k: got.pop(k) for k in [k for k in got if k[0] in ("up", "scrape_duration_seconds",
                                                               "scrape_samples_scraped")]}
    assert own[("up", ())] == 1.0 and own[("scrape_samples_scraped", ())] == len(before)
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
    from core.records import Entity, Event
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
