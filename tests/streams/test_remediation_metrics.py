"""``kubesight remediate`` serves /metrics, /health and /ready on web_port (a self-metrics audit: it served nothing, and
KUBESIGHT_WEB_PORT was ignored): a Deployment that changes the cluster, whose failed actions and leadership an SRE must
see. The Runner on the fake API server of test_remediation_safety and the real broker; the CLI itself once, on a
kubeconfig naming an API server nobody answers (nothing is asked of it until an alert names a node)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from kubernetes.client import ApiException
from prometheus_client.parser import text_string_to_metric_families

from core.broker import free_port
from core.records import encode
from core.topics import ensure_topics
from streams.remediation import Runner
from tests.realtools import wait_for
from tests.streams.test_remediation_safety import RULES, FakeKube, alert, cordoned, settings

REPO = Path(__file__).resolve().parents[2]


def _get(port: int, path: str) -> tuple[int | None, str]:
    """(status, body); (None, why) while nothing listens yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return None, str(exc)


def _sample(port: int, name: str, **labels) -> float | None:
    code, text = _get(port, "/metrics")
    if code != 200:
        return None
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


@contextlib.contextmanager
def kubesight(kafka: str, *args: str):
    """``python -m kubesight *args`` on topics of its own with ``KUBESIGHT_WEB_PORT`` set; yields its web port
    once /ready answers 200 (60 s at most); then SIGTERM, and it must end."""
    tag, port = uuid.uuid4().hex[:8], free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
    env.update(KUBESIGHT_KAFKA=kafka, KUBESIGHT_TOPIC_PREFIX=f"t{tag}-", KUBESIGHT_APP_ID=f"ks-{tag}",
               KUBESIGHT_WEB_PORT=str(port), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "kubesight", *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)

    def ready():
        assert proc.poll() is None, f"{args[0]} exited with {proc.returncode}: {proc.stderr.read()}"
        return _get(port, "/ready")[0] == 200

    try:
        wait_for(ready, 60, f"{args[0]}'s /ready on web_port {port}", every=0.2)
        yield port
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.kafka
def test_the_runner_counts_its_actions_by_kind_and_result_and_says_it_leads(kafka_bootstrap):
    tag = uuid.uuid4().hex[:8]
    s = settings(max_percent=100).model_copy(update={"kafka": kafka_bootstrap, "topic_prefix": f"t{tag}-",
                                                     "app_id": f"ks-{tag}", "partitions": 1, "web_port": 0})
    ensure_topics(s, kafka_bootstrap)
    kube = FakeKube(["n0", "n1", "n2", "n3"])
    runner = Runner(s, kafka_bootstrap, kube, rules=RULES, tick_every=0.5)
    server = runner.serve()
    port = server.server_address[1]
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=0)
    th = threading.Thread(target=runner.run, daemon=True)
    try:
        code, body = _get(port, "/ready")
        assert code == 503 and "not started" in body  # served before run(): the probes answer during start-up
        assert _sample(port, "kubesight_remediation_leader") == 0
        th.start()
        wait_for(lambda: _get(port, "/ready")[0] == 200, 30, "ready")
        assert _sample(port, "kubesight_remediation_leader") == 1
        a = alert("NodeKernelDeadlock", "n0", time.time())
        producer.send(s.topic("alerts"), key=a.key(), value=encode(a)).get(10)
        wait_for(lambda: _sample(port, "kubesight_remediation_actions_total", kind="cordon", result="done") == 1,
                 30, "cordon counted done")
        assert cordoned(kube) == ["n0"]

        def unavailable():
            raise ApiException(status=503, reason="Service Unavailable")

        kube.nodes = unavailable  # the limits' node list fails: the next action fails and waits for a retry
        b = alert("NodeKernelDeadlock", "n1", time.time())
        producer.send(s.topic("alerts"), key=b.key(), value=encode(b)).get(10)
        wait_for(lambda: _sample(port, "kubesight_remediation_actions_total", kind="cordon", result="failed") == 1,
                 30, "cordon counted failed")
        assert _sample(port, "kubesight_remediation_retries_pending", what="action") == 1
        assert _sample(port, "kubesight_remediation_backlog_read") == 1
        assert _sample(port, "kubesight_remediation_terms_total") == 1
    finally:
        runner.stop()
        th.join(30)
        producer.close()
        server.shutdown()
        server.server_close()
    assert not th.is_alive()


@pytest.mark.kafka
def test_kubesight_remediate_serves_its_probes_on_web_port(kafka_bootstrap, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{free_port()}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
    with kubesight(kafka_bootstrap, "remediate", "--no-leader-election", f"--kubeconfig={kubeconfig}") as port:
        assert _get(port, "/health")[0] == 200
        assert _sample(port, "kubesight_remediation_leader") == 1  # no leader election: it acts
