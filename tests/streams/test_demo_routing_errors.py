"""``kubesight demo --routing FILE`` reads the routing file with the worker's loader, before anything starts: a file
the loader refuses is refused in ``routes check``'s words, exit 2 (it started a broker, then died with a traceback
of its own YAML reading: ``ValueError: invalid duration "5x"``)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

import yaml

from alerts.config import load
from core.settings import REPO
from streams.cli_run import DemoReceivers

BAD = "route:\n  receiver: r\n  group_wait: 5x\nreceivers:\n  - name: r\n    webhook_configs:\n      - url: http://x/\n"


def kubesight(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "kubesight", *args], capture_output=True, text=True, cwd=REPO,
                          env=e, timeout=60)


def test_a_routing_file_the_loader_refuses_stops_the_demo_before_kafka(tmp_path):
    bad = tmp_path / "routing.yaml"
    bad.write_text(BAD)
    check = kubesight("routes", "check", str(bad))
    assert check.returncode == 1 and check.stderr.startswith(f'{bad}:3: route.group_wait: invalid duration "5x"')
    # a Kafka nobody listens at: were the file read after Kafka, no broker would be started for this test either
    res = kubesight("demo", "--routing", str(bad), "--quiet", "--timeout", "10",
                    env={"KUBESIGHT_KAFKA": "127.0.0.1:1", "KUBESIGHT_STATE_DIR": str(tmp_path)})
    assert res.returncode == 2
    assert res.stderr == check.stderr  # the lines `routes check` prints, and nothing about Kafka or a worker
    assert res.stdout == ""


def test_the_demo_receivers_copy_the_validated_file_with_their_own_urls(tmp_path):
    """The copy the demo's worker reads is the file the loader validated (its deprecated forms in their modern
    equivalents), every webhook pointing at the demo's servers (``url_file`` too), templates where they were."""
    (tmp_path / "url").write_text("http://elsewhere/\n")
    (tmp_path / "t.tmpl").write_text('{{ define "x" }}x{{ end }}\n')
    src = tmp_path / "routing.yaml"
    src.write_text("route:\n  receiver: a\n  group_interval: 2s\n  routes:\n    - match: {team: b}\n      receiver: b\n"
                   "receivers:\n  - name: a\n    webhook_configs: [{url: 'http://127.0.0.1:9/a'}]\n"
                   "  - name: b\n    webhook_configs: [{url_file: " + str(tmp_path / "url") + "}]\n"
                   "templates: [t.tmpl]\n")
    hooks = DemoReceivers(str(src), tmp_path / "out" / "routing.yaml", quiet=True)
    assert hooks.settle == 2 + 30 + 1  # the file's group_interval, Alertmanager's default group_wait
    hooks.start()
    try:
        assert hooks.ready.wait(10)
        copy = yaml.safe_load(hooks.out_path.read_text())
        cfg = load(hooks.out_path)
        assert copy["route"]["routes"][0]["matchers"] == ['team="b"']
        assert copy["templates"] == [str(tmp_path / "t.tmpl")]
        urls = {r.name: r.webhook_configs[0].url for r in cfg.receivers}
        assert all(u.startswith("http://127.0.0.1:") and u.endswith(f"/hook/{n}") for n, u in urls.items()), urls
        assert cfg.receivers[1].webhook_configs[0].url_file is None
        req = urllib.request.Request(urls["b"], data=b'{"status": "firing", "alerts": []}', method="POST",
                                     headers={"Content-Type": "application/json"})
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
        assert direct.open(req, timeout=5).status == 200
        assert hooks.got["b"] == [{"status": "firing", "alerts": []}]
    finally:
        hooks.stop()


def test_demo_receivers_that_never_started_stop_quietly(tmp_path):
    """The demo builds them before Kafka; its cleanup stops them whatever failed in between."""
    src = tmp_path / "routing.yaml"
    src.write_text(BAD.replace("5x", "1s"))
    DemoReceivers(str(src), tmp_path / "out.yaml", quiet=True).stop()
