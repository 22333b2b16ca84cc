"""Secrets never leak (issue 19 #5): ONE known secret in every secret-bearing slot, the paths that could print or
ship it run for real, and the secret appears nowhere but where it legitimately goes.

The secret is the SCRAM password of the real SASL_SSL broker of ``tests/core/test_kafka_security.py`` (its
fixtures are reused); the same string is the web config's basic-auth password (its bcrypt hash in the file),
a webhook URL's path and token (``url_file``), the Slack api_url, the DingTalk signing secret, the PagerDuty
routing_key, the Opsgenie api_key, the SMTP password (``smtp_auth_password_file``, a real aiosmtpd with STARTTLS
and AUTH) and the Alertmanager-forward URL.  A real ``kubesight worker`` subprocess (with its alerting and
delivery children) runs over SASL_SSL; one receiver accepts, one answers 500, one refuses connections, so
delivery retries and dead-letters.  Checked: the worker's whole stdout+stderr (start-up line, retry warnings),
every record of the run's topics (alerts, notifications, dead letters, ...), /metrics (fetched with the
basic-auth password), and every request the receivers got -- except the one place that carries each credential
to its destination (the URL path/query it is part of, Opsgenie's Authorization header, PagerDuty's routing_key
field), which is asserted to hold it.  Config errors in a secret slot never quote the value.
"""

from __future__ import annotations

import asyncio
import base64
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

import bcrypt
import orjson
import pytest
import yaml

from collectors.sink import KafkaSink
from core.broker import bootstrap_for
from core.settings import REPO, Settings
from tests.alerts import test_receivers_services as smtp_tests
from tests.alerts.amtools import free_port
from tests.alerts.webhook_server import ScriptedReceiver
from tests.core.test_kafka_security import PACK, PASSWORD, event, scram, secure_broker, tls  # noqa: F401 (fixtures)
from tests.kafkatools import read_to_end

SECRET = PASSWORD  # the broker's SCRAM password: one string in every slot


class LoopThread:
    """An asyncio loop in a thread for the scripted receivers (the worker is another process)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 15.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


ROUTING = """
global:
  external_url: http://kubesight.example
  smtp_smarthost: '127.0.0.1:{smtp}'
  smtp_from: alerts@kubesight.local
  smtp_auth_username: alerts
  smtp_auth_password_file: {pw}
route:
  receiver: ok
  group_by: [alertname, pod]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 24h
  routes:
    - matchers: ['pod="web-fail"']
      receiver: failing
receivers:
  - name: ok
    webhook_configs: [{{url_file: {url_file}}}]
    slack_configs: [{{api_url: "{ok}/slack/{s}", channel: "#ops"}}]
    dingtalk_configs: [{{url: "{ok}/ding", secret: "{s}"}}]
    pagerduty_configs: [{{url: "{ok}/pd", routing_key: "{s}"}}]
    opsgenie_configs: [{{api_url: "{ok}/og/", api_key: "{s}"}}]
    alertmanager_configs: [{{url: "{ok}/am/{s}"}}]
    email_configs: [{{to: oncall@example.org, tls_config: {{ca_file: "{smtp_ca}"}}, timeout: 5s}}]
    retry: {{initial: 50ms, max_backoff: 200ms, budget: 60s}}
  - name: failing
    webhook_configs:
      - {{url: "{bad}/hook?token={s}", timeout: 1s}}
      - {{url: "http://127.0.0.1:{closed}/x/{s}", timeout: 1s}}
    slack_configs: [{{api_url: "{bad}/slack/{s}"}}]
    retry: {{initial: 50ms, max_backoff: 100ms, budget: 2s}}
"""

TOPICS = ("events", "samples", "alerts", "alert-groups", "notifications", "deadletter", "incidents",
          "incident-alerts", "silences")


def _get(url: str, auth: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except OSError as exc:
        return 0, str(exc)


def _wait(cond, what: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the worker exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.3)


def _scrub(req: dict) -> dict:
    """A received request without the one place that legitimately carries the credential to this receiver."""
    req = {**req, "headers": {str(k): str(v) for k, v in req["headers"].items()}, "body": req["body"]}
    path = req["path"]
    if path.startswith(("/hook/", "/slack/", "/am/")):  # the secret is part of the receiver's URL
        assert SECRET in path + req["query"], req
        req["path"], req["query"] = "<url>", "<url>"
    elif path.startswith("/og/"):
        assert req["headers"].pop("Authorization") == f"GenieKey {SECRET}"
    elif path == "/pd":
        assert req["body"].pop("routing_key") == SECRET
    return req


@pytest.mark.kafka
def test_one_secret_in_every_slot_appears_nowhere_it_should_not(secure_broker, tls, tmp_path, monkeypatch):  # noqa: F811
    # -- the secret in every slot
    (tmp_path / "password").write_text(SECRET + "\n")
    web = tmp_path / "web-config.yml"
    web.write_text(yaml.safe_dump({"basic_auth_users": {
        "alice": bcrypt.hashpw(SECRET.encode(), bcrypt.gensalt(4)).decode()}}))
    loop = LoopThread()
    ok, bad = ScriptedReceiver(), ScriptedReceiver(after=500)
    ok_url, bad_url = loop.run(ok.start()), loop.run(bad.start())
    (tmp_path / "url").write_text(f"{ok_url}/hook/{SECRET}?token={SECRET}\n")
    certs = _smtp_certs(tmp_path)
    monkeypatch.setattr(smtp_tests, "PASSWORD", SECRET)  # the aiosmtpd authenticator accepts alerts/SECRET
    ctl, smtp = smtp_tests.smtp_server(certs, [], "LOGIN")
    ctl.start()
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING.format(smtp=ctl.port, pw=tmp_path / "password", url_file=tmp_path / "url", ok=ok_url,
                                      bad=bad_url, closed=free_port(), s=SECRET, smtp_ca=certs[0].cert))
    tag = uuid.uuid4().hex[:8]
    port = free_port()
    settings = Settings(kafka=secure_broker.secure_bootstrap, kafka_security=scram(tls, password_file=str(
        tmp_path / "password")), topic_prefix=f"leak{tag}-", app_id=f"leak-{tag}", partitions=2, clock="wall",
        default_pack=False, rules=[str(PACK)], routing=str(routing), web_port=port, web_config=str(web),
        state_dir=str(tmp_path / "state"))
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True)))
    assert SECRET not in config.read_text()  # the settings hold where the password is, not the password
    log = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")} | {"PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "kubesight", "--config", str(config), "worker",
                                 "--worker-id", "leak", "--loglevel", "debug"], env=env, cwd=REPO, stdout=fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    metrics = ""
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: _get(f"{base}/ready")[0] == 200, "the worker's /ready", 180, proc, log)
        bootstrap = bootstrap_for(settings)
        sink = KafkaSink(bootstrap, settings.topic)  # kafka-python over SASL_SSL
        now = time.time()
        for i, pod in enumerate(("web-ok", "web-fail")):
            sink.send(event(pod, now + i))
        sink.flush(30)
        sink.close()

        def kinds() -> set[str]:
            return {r["path"].split("/")[1] for r in ok.accepted}

        want = {"hook", "slack", "ding", "pd", "og", "am"}
        _wait(lambda: want <= kinds() and smtp.messages, "every kind of the ok receiver and the email", 150,
              proc, log)

        def deadletters() -> list[dict]:
            return [orjson.loads(r.value) for r in read_to_end(bootstrap, settings.topic("deadletter"), 10)]

        _wait(lambda: len([d for d in deadletters() if d.get("origin") == "alerts/deliver"]) >= 3,
              "three dead letters from the failing receiver", 90, proc, log)
        assert bad.requests >= 2  # the 500s were retried before dead-lettering
        status, denied = _get(f"{base}/metrics")
        assert status == 401, status
        status, metrics = _get(f"{base}/metrics", f"alice:{SECRET}")
        assert status == 200 and "kubesight_" in metrics, metrics[:500]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        ctl.stop()
        loop.run(ok.stop())
        loop.run(bad.stop())
        loop.close()

    output = log.read_text()
    assert "kubesight worker:" in output and "2 receivers (ok, failing)" in output, output[:2000]  # start-up line
    assert "retrying in" in output, output[-3000:]  # the failing delivery was logged, attempt by attempt
    assert SECRET not in output, [ln for ln in output.splitlines() if SECRET in ln][:5]
    assert SECRET not in metrics and SECRET not in denied
    records = {t: [(r.key or b"") + b" " + (r.value or b"") for r in read_to_end(bootstrap, settings.topic(t), 10)]
               for t in TOPICS}
    assert records["alerts"] and records["notifications"] and records["deadletter"], {k: len(v) for k, v in
                                                                                      records.items()}
    for t, values in records.items():
        leaked = [v[:300] for v in values if SECRET.encode() in v]
        assert not leaked, (t, leaked)
    reasons = [orjson.loads(r.value)["reason"] for r in read_to_end(bootstrap, settings.topic("deadletter"), 10)]
    assert any("HTTP 500" in r for r in reasons) and any("Connect" in r for r in reasons), reasons
    for req in ok.accepted:
        rest = orjson.dumps(_scrub(req)).decode()
        assert SECRET not in rest, rest[:500]
    assert {r["path"] for r in ok.accepted if r["path"].startswith("/ding")} == {"/ding"}  # signed, not the secret
    for _, _, content in smtp.messages:
        assert SECRET.encode() not in content


def _smtp_certs(tmp_path: Path):
    from tests import tlsfiles

    d = tmp_path / "smtp-tls"
    d.mkdir()
    ca = tlsfiles.ca(d)
    return ca, tlsfiles.signed(d, ca, "smtp")


# ---------------------------------------------------------------- config errors never quote a secret slot

BAD_ROUTING = f"""
route: {{receiver: a}}
receivers:
  - name: a
    webhook_configs: [{{url: "ftp://hooks.example/{SECRET}"}}]
    pagerduty_configs: [{{routing_key: ["{SECRET}"]}}]
    opsgenie_configs: [{{api_key: {{key: "{SECRET}"}}}}]
    dingtalk_configs: [{{url: "http://d.example", secret: ["{SECRET}"]}}]
    slack_configs: [{{api_url: ["http://s.example/{SECRET}"]}}]
    email_configs: [{{to: a@b.c, from: k@b.c, smarthost: 'h:25', auth_password: ["{SECRET}"]}}]
"""


def test_config_errors_name_the_slot_but_never_quote_the_secret(tmp_path):
    routing = tmp_path / "routing.yaml"
    routing.write_text(BAD_ROUTING)
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"kafka: k:9093\nkafka_security:\n  protocol: SASL_SSL\n  password: {SECRET}\n"
                        f"  password_file: [{SECRET}]\n")
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  alice: {SECRET}\n")  # the plaintext where its hash belongs
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
    runs = {
        "routes check": [sys.executable, "-m", "kubesight", "routes", "check", str(routing)],
        "settings": [sys.executable, "-m", "kubesight", "--config", str(settings), "worker"],
        "web config": [sys.executable, "-m", "kubesight", "silences", "serve", "--web-config", str(web)],
    }
    outputs = {}
    for what, cmd in runs.items():
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
        outputs[what] = res.stdout + res.stderr
        assert res.returncode != 0, (what, outputs[what])
        assert SECRET not in outputs[what], (what, outputs[what])
    errors = outputs["routes check"]
    for slot in ("webhook_configs[0].url", "pagerduty_configs[0].routing_key", "opsgenie_configs[0].api_key",
                 "dingtalk_configs[0].secret", "slack_configs[0].api_url", "email_configs[0].auth_password"):
        assert slot in errors, (slot, errors)
    assert "kafka_security.password" in outputs["settings"], outputs["settings"]
    assert "not a bcrypt hash for alice" in outputs["web config"], outputs["web config"]


@pytest.mark.kafka
def test_collector_tokens_appear_nowhere(settings, tmp_path):
    """The cloud intake's token, the remote-write bearer token and a scrape target's bearer token: wrong and
    right credentials, a bad payload that is dead-lettered, a target that refuses the scrape -- the secret
    is in no log line, dead letter or /metrics page (only in the request that carries it to the target)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    secret = "tok-" + "7f3a9c1e5b2d4f60"  # one collector secret in every collector slot
    token = tmp_path / "token"
    token.write_text(secret + "\n")
    seen: list[str] = []

    class Refusing(BaseHTTPRequestHandler):  # a scrape target that refuses its scraper
        def do_GET(self):  # noqa: N802
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(401)
            self.end_headers()

        def log_message(self, *a):
            pass

    target = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    rw_port, cloud_port = free_port(), free_port()
    cfg = tmp_path / "metrics.yaml"
    cfg.write_text(f"targets:\n  - job: refusing\n    url: http://127.0.0.1:{target.server_port}/metrics\n"
                   f"    bearer_token_file: {token}\n    interval: 1s\n    timeout: 1s\n"
                   f"remote_write: {{host: 127.0.0.1, port: {rw_port}, bearer_token_file: {token}}}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
    env.update(KUBESIGHT_KAFKA=settings.kafka, KUBESIGHT_TOPIC_PREFIX=settings.topic_prefix, PYTHONUNBUFFERED="1")
    procs, logs, ops = [], [], []
    for name, cmd in (("metrics", ["collect", "metrics", f"--config={cfg}"]),
                      ("cloud", ["collect", "cloud", f"--listen=127.0.0.1:{cloud_port}", f"--token-file={token}",
                                 "--node", "i-1=n1"])):
        port = free_port()
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as fh:
            procs.append(subprocess.Popen([sys.executable, "-m", "kubesight", "--config", os.devnull, *cmd],
                                          cwd=REPO, env={**env, "KUBESIGHT_WEB_PORT": str(port)},
                                          stdout=fh, stderr=subprocess.STDOUT))
        logs.append(log)
        ops.append(port)

    def post(url: str, body: bytes, auth: str) -> int:
        req = urllib.request.Request(url, data=body, method="POST", headers={"Authorization": auth})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    try:
        for proc, log, port in zip(procs, logs, ops, strict=True):
            _wait(lambda port=port: _get(f"http://127.0.0.1:{port}/ready")[0] == 200, "ready", 60, proc, log)
        rw = f"http://127.0.0.1:{rw_port}/api/v1/write"
        assert post(rw, b"junk", f"Bearer {secret}x") == 401
        assert post(rw, b"not snappy protobuf", f"Bearer {secret}") == 400  # dead-lettered
        cloud = f"http://127.0.0.1:{cloud_port}/events"
        assert post(cloud, b"{}", f"Bearer {secret}x") == 401
        assert post(cloud, b"[1, 2", f"Bearer {secret}") == 400  # dead-lettered
        _wait(lambda: any(a == f"Bearer {secret}" for a in seen), "a refused scrape", 30, procs[0], logs[0])
        pages = [_get(f"http://127.0.0.1:{port}/metrics")[1] for port in ops]
        assert all("process_cpu_seconds_total" in p for p in pages)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        target.shutdown()
    dead = read_to_end(settings.kafka, settings.topic("deadletter"))
    assert len(dead) >= 2, "both bad payloads were kept"
    assert "[1, 2" in " ".join(m.value.decode("utf-8", "replace") for m in dead)  # the cloud one, whole
    # a planted leak is found: the check reads what it should
    assert secret in "".join(seen) and "refusing" in "".join(p.read_text() for p in logs) + "".join(pages)
    for where, text in [*((str(p), p.read_text()) for p in logs), *(("metrics page", p) for p in pages),
                        *(("dead letter", m.value.decode("utf-8", "replace")) for m in dead)]:
        assert secret not in text, f"the collector secret leaked into {where}"
