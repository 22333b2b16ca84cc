"""`kubesight collect metrics`: config validation, --once, and the long-running process end to end."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import aiohttp
import pytest
import yaml

from collectors.metrics.config import load
from collectors.metrics.remote_write import encode
from core.settings import REPO
from core.yamlconfig import ConfigError
from kubesight.cli import main
from tests.collectors.test_metrics_helpers import PageServer, read_topic
from tests.collectors.test_metrics_remote_write import HEADERS, request_from_page


def _write(tmp_path, text: str):
    p = tmp_path / "metrics.yaml"
    p.write_text(text)
    return p


def test_the_example_config_and_the_manifest_configmap_load(tmp_path):
    cfg = load(str(REPO / "deploy" / "metrics.example.yaml"))
    assert [t.job for t in cfg.targets] == ["apiserver", "node-exporter"]
    assert (cfg.targets[1].interval, cfg.targets[1].timeout, cfg.remote_write.port) == (15.0, 5.0, 9201)
    docs = list(yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "collector-metrics.yaml").read_text()))
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    assert load(str(_write(tmp_path, cm["data"]["metrics.yaml"]))).discovery.kubernetes.enabled


@pytest.mark.parametrize("text, message", [
    ("targets:\n  - job: a\n    url: ftp://x/metrics\n",
     "3: targets[0].url: expected text matching ^https?://[^\\s/]+(/\\S*)?$, got a value not shown (a secret slot)"),
    ("targets:\n  - job: a\n    url: http://x/m\n    interval: soon\n",
     '4: targets[0].interval: invalid duration "soon" (use e.g. 30s, 5m, 1h30m)'),
    ("targets:\n  - job: a\n    url: http://x/m\n    interval: 1.5m\n",
     '4: targets[0].interval: invalid duration "1.5m" (use e.g. 30s, 5m, 1h30m)'),
    ("defaults:\n  timeout: 1m\n", "2: defaults.timeout: timeout 1m is longer than interval 30s"),
    ("targets:\n  - job: a\n    url: http://x/m\n    bearer_token: t\n    bearer_token_file: /f\n",
     "2: targets[0]: bearer_token and bearer_token_file are exclusive"),
    ("targets:\n  - job: a\n    url: http://x/m\n  - job: a\n    url: http://x/m\n",
     "4: targets[1]: target a http://x/m listed twice (first: targets[0])"),  # the duplicate's line
    ("targets:\n  - job: a\n    url: http://x/m\n    labels: {9bad: x}\n",
     "4: targets[0].labels: invalid label name(s) ['9bad']"),
    ("targets:\n  - job: a\n    url: http://x/m\n    relabel:\n      - {action: replace, regex: x}\n",
     "5: targets[0].relabel[0].action: expected 'keep' or 'drop', got \"replace\""),
    ("targets:\n  - job: a\n    url: http://x/m\n    tls: {cert_file: /c}\n",
     "4: targets[0].tls: cert_file and key_file go together"),
    ("discovery:\n  kubernetes:\n    roles: [apiserver, kube-proxy]\n",
     "3: discovery.kubernetes.roles[1]: expected 'apiserver', 'kubelet', 'cadvisor', 'etcd', 'scheduler', "
     "'controller-manager', 'node-exporter', 'kube-state-metrics', 'dcgm-exporter', 'coredns' or 'annotated', got \"kube-proxy\""),
    ("remote_write:\n  port: 99999\n", "2: remote_write.port: must be <= 65535, got 99999"),
    # 0 scraped (or listed the API server's targets) in a busy loop, thousands of times a second
    ("defaults:\n  interval: 0s\n  timeout: 0s\n", "2: defaults.interval: must be > 0.0, got 0.0"),
    ("targets:\n  - job: a\n    url: http://x/m\n    interval: 0s\n", '4: targets[0].interval: must be > 0, got "0s"'),
    ("discovery:\n  kubernetes:\n    refresh: 0s\n", "3: discovery.kubernetes.refresh: must be > 0.0, got 0.0"),
    ("scrape_configs: []\n", '1: scrape_configs: unknown key "scrape_configs" (expected one of: defaults, discovery, '
                              'remote_write, targets)'),
    ("targets: [\n", "2: YAML syntax error: "),
])
def test_each_config_error_names_file_line_and_path(tmp_path, text, message):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load(str(p))
    assert str(exc.value).startswith(f"{p}:{message}")


def test_unreadable_tls_files_are_a_config_error(tmp_path, capsys):
    p = _write(tmp_path, "targets:\n  - {job: a, url: 'https://x/m', tls: {ca_file: /nonexistent/ca.crt}}\n")
    assert main(["collect", "metrics", "--config", str(p), "--once", "--stdout"]) == 2
    assert capsys.readouterr().err.splitlines()[1] == (  # at its line (was a message without one)
        f"{p}:2: targets[0].tls.ca_file: cannot read /nonexistent/ca.crt: No such file or directory")


def test_an_invalid_config_exits_2_listing_every_error(tmp_path, capsys):
    p = _write(tmp_path, "defaults:\n  timeout: 1m\ntargets:\n  - job: a\n    url: nope\n")
    assert main(["collect", "metrics", "--config", str(p), "--once"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "kubesight collect metrics: invalid config"
    assert err[1] == f"{p}:2: defaults.timeout: timeout 1m is longer than interval 30s"
    assert err[2].startswith(f"{p}:5: targets[0].url: expected text matching")


def test_every_file_the_config_names_is_checked_at_load_at_its_key(tmp_path, capsys):
    """A missing token file or kubeconfig was seen only when scraping or discovering (a target DOWN, a kube-config
    error without a line), a missing remote-write web config as an error of that file, and the token file not at all."""
    binary = tmp_path / "bin.tok"
    binary.write_bytes(b"\xff\xfe")
    p = _write(tmp_path, "targets:\n  - job: a\n    url: http://x/m\n    bearer_token_file: /nonexistent/tok\n"
                         f"  - job: b\n    url: http://x/m\n    bearer_token_file: {binary}\n"
                         "discovery:\n  kubernetes:\n    enabled: true\n    kubeconfig: /nonexistent/kc\n"
                         "    kubelet_tls: {ca_file: /nonexistent/ca}\n"
                         "remote_write:\n  bearer_token_file: /nonexistent/rw.tok\n  web_config: /nonexistent/web.yaml\n")
    assert main(["collect", "metrics", "--config", str(p), "--stdout"]) == 2
    nope = "No such file or directory"
    assert capsys.readouterr().err.splitlines() == [
        "kubesight collect metrics: invalid config",
        f"{p}:4: targets[0].bearer_token_file: cannot read /nonexistent/tok: {nope}",
        f"{p}:7: targets[1].bearer_token_file: cannot read {binary}: 'utf-8' codec can't decode byte 0xff in "
        "position 0: invalid start byte",
        f"{p}:11: discovery.kubernetes.kubeconfig: cannot read /nonexistent/kc: {nope}",
        f"{p}:12: discovery.kubernetes.kubelet_tls.ca_file: cannot read /nonexistent/ca: {nope}",
        f"{p}:14: remote_write.bearer_token_file: cannot read /nonexistent/rw.tok: {nope}",
        f"{p}:15: remote_write.web_config: cannot read /nonexistent/web.yaml: {nope}"]
    # what nothing reads is not asked for: a disabled section's files, and any file of a config only validated
    p = _write(tmp_path, "discovery:\n  kubernetes: {enabled: false, kubeconfig: /nonexistent/kc}\n"
                         "remote_write: {enabled: false, web_config: /nonexistent/web.yaml}\n")
    assert load(str(p), files=True).discovery.kubernetes.kubeconfig == "/nonexistent/kc"
    assert load(str(_write(tmp_path, "targets: [{job: a, url: 'http://x/m', bearer_token_file: /nonexistent/t}]\n")))


def test_a_remote_write_token_file_without_a_token_is_refused_at_start(tmp_path, capsys):
    """A blank token file made the token list empty, and the intake then let every request in, even on 0.0.0.0."""
    tok = tmp_path / "token"
    tok.write_text("\n  \n")
    p = _write(tmp_path, f"remote_write: {{enabled: true, host: 0.0.0.0, port: 19999, bearer_token_file: {tok}}}\n")
    assert main(["collect", "metrics", "--config", str(p)]) == 2
    assert capsys.readouterr().err.splitlines() == [  # at its key (was a message naming only the token file)
        "kubesight collect metrics: invalid config",
        f"{p}:1: remote_write.bearer_token_file: the token file holds no token (refusing to run open)"]


class _ServerThread:
    """The page server on its own loop in a thread (the CLI runs its own event loop)."""

    def __init__(self, data_dir):
        self.loop = asyncio.new_event_loop()
        self.server = PageServer(data_dir, hang_seconds=5)
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.base = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10).base

    def close(self):
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.mark.kafka
def test_once_scrapes_every_target_and_exits_1_when_one_is_down(data_dir, settings, tmp_path, monkeypatch, capsys):
    srv = _ServerThread(data_dir)
    try:
        p = _write(tmp_path, f"targets:\n  - {{job: etcd, url: '{srv.base}/etcd', labels: {{cluster: c1}}}}\n"
                             f"  - {{job: bad, url: '{srv.base}/bad'}}\nremote_write: {{enabled: false}}\n")
        monkeypatch.setenv("KUBESIGHT_KAFKA", settings.kafka)
        monkeypatch.setenv("KUBESIGHT_TOPIC_PREFIX", settings.topic_prefix)
        assert main(["collect", "metrics", "--config", str(p), "--once"]) == 1
    finally:
        srv.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:4] == ["etcd", f"{srv.base}/etcd", "1461", "up"]
    assert lines[2].split()[:5] == ["bad", f"{srv.base}/bad", "0", "DOWN:", "line"]
    got = read_topic(settings.kafka, settings.topic("samples"))
    assert len(got) == 1461 + 4 + 4  # up, scrape_duration_seconds, scrape_samples_scraped, ..._post_metric_relabeling


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.kafka
def test_the_collector_process_scrapes_on_schedule_and_takes_remote_write(data_dir, settings, tmp_path):
    srv = _ServerThread(data_dir)
    port = _free_port()
    p = _write(tmp_path, f"defaults: {{interval: 1s, timeout: 1s}}\n"
                         f"targets:\n  - {{job: dcgm, url: '{srv.base}/dcgm'}}\n"
                         f"remote_write: {{host: 127.0.0.1, port: {port}, labels: {{via: rw}}}}\n")
    env = dict(os.environ, KUBESIGHT_KAFKA=settings.kafka, KUBESIGHT_TOPIC_PREFIX=settings.topic_prefix)
    proc = subprocess.Popen([sys.executable, "-m", "kubesight", "collect", "metrics", "--config", str(p)],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        async def post():
            body = encode(request_from_page("up 1\n", 1_700_000_000_000))
            deadline = time.monotonic() + 90  # the process's start on a loaded box (not a timing assertion)
            async with aiohttp.ClientSession() as s:
                while time.monotonic() < deadline and proc.poll() is None:
                    try:
                        async with s.post(f"http://127.0.0.1:{port}/api/v1/write", data=body, headers=HEADERS) as r:
                            return r.status
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
            return None

        assert asyncio.run(post()) == 204
        scrapes = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the second scheduled scrape has landed
            scrapes = [v for _, v in read_topic(settings.kafka, settings.topic("samples"))
                       if v["name"] == "up" and v["labels"].get("job") == "dcgm"]
            if len(scrapes) >= 2:
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        srv.close()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert len(scrapes) >= 2 and all(v["value"] == 1 for v in scrapes)
    rw = [v for _, v in read_topic(settings.kafka, settings.topic("samples")) if v["labels"].get("via") == "rw"]
    assert [(v["name"], v["value"]) for v in rw] == [("up", 1.0), ("up", 2.0)]
    assert b"remote-write intake on http://127.0.0.1:" in err


def test_bench_parse_only_prints_the_figures(data_dir, capsys):
    assert main(["bench", "metrics", "--parse-only", "--rounds", "1", "--data", str(data_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "apiserver page: 3.0 MB, 22853 samples"
    assert [line.split()[:2] for line in out[1:3]] == [["parse", "kubesight"], ["parse", "prometheus_client"]]
    assert out[4].split()[:2] == ["decode", "snappy"] and "samples/s" in out[4]


def test_bench_derived_prints_the_figure(data_dir, capsys):
    assert main(["bench", "derived", "--data", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("derived stage (rates, partials)") and "samples/s" in out and "of 22853 samples" in out
