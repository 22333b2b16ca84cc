"""Issue 13 #3, #4, #7: the worker says what it runs, serves honest /metrics, /health and /ready on
127.0.0.1, and stops within ``shutdown_timeout`` whether Kafka is there or not."""

from __future__ import annotations

import signal
import socket
import time
import urllib.error
import urllib.request

import orjson
import pytest

from core import broker as launcher
from core.broker import free_port
from core.topics import ensure_topics
from streams.cli_run import spawn_worker, stop_process


def _get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait(cond, what: str, proc, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"worker exited with {proc.returncode} while waiting for {what}"
        try:
            got = cond()
        except OSError:
            got = None
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"no {what} within {timeout:.0f}s")


def _metric(text: str, line_start: str) -> float | None:
    for ln in text.splitlines():
        if ln.startswith(line_start):
            return float(ln.rsplit(" ", 1)[1])
    return None


@pytest.mark.kafka
def test_worker_says_what_it_runs_serves_probes_and_metrics_and_stops_in_time(settings, tmp_path):
    port = free_port()
    s = settings.model_copy(update={"web_port": port, "shutdown_timeout": 5.0})
    log = tmp_path / "worker.log"
    proc = spawn_worker(s, settings.kafka, log)
    try:
        _wait(lambda: _get(port, "/ready")[0] == 200, "ready", proc)
        text = log.read_text()
        assert "notifications are OFF (no routing file" in text and " rules (" in text
        assert _get(port, "/health")[0] == 200
        body = orjson.loads(_get(port, "/ready")[1])
        assert body["ready"] and set(body["checks"]) == {"broker", "signals", "rules", "routing", "children"}
        assert body["checks"]["children"]["detail"].startswith("incidents: pid ")  # no routing: incidents only
        assert body["checks"]["routing"]["detail"] == "notifications off (no routing file)"
        # bound to 127.0.0.1 only: another loopback address is refused (0.0.0.0 would answer)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.2", port), timeout=2).close()
        # a record that is not kubesight JSON: counted as a dead letter by reason, and as a signal in
        from kafka import KafkaProducer

        p = KafkaProducer(bootstrap_servers=settings.kafka)
        p.send(settings.topic("events"), b"{not json", key=b"k").get(30)
        p.close()

        def dead_counted():
            text = _get(port, "/metrics")[1].decode()
            dead = [ln for ln in text.splitlines() if ln.startswith('kubesight_deadletters_total{origin="worker/signals"')]
            return (text, dead) if dead and _metric(text, 'kubesight_signals_in_total{processor="signals"}') else None

        text, dead = _wait(dead_counted, "the dead letter on /metrics", proc)
        assert len(dead) == 1 and dead[0].endswith(" 1.0"), dead
        for name in ("process_cpu_seconds_total", 'kubesight_transactions_total{processor="signals",result="committed"}',
                     "kubesight_consumer_lag{", "kubesight_rule_evaluation_seconds_total",
                     'kubesight_late_signals_total{processor="signals"}'):
            assert name in text, name
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(5.0 + 5.0)
        assert time.monotonic() - t0 < 10.0 and proc.returncode is not None
    finally:
        stop_process(proc)


@pytest.mark.kafka
def test_worker_stops_within_the_bound_when_kafka_is_gone(settings, tmp_path):
    """Issue 13 #3: with the broker gone, SIGTERM took 96 s; now shutdown_timeout (3 s here), and
    /ready says the broker is unreachable meanwhile (#4: /health said ok)."""
    broker = launcher.start(f"pytest-gone-{tmp_path.name[-12:]}", attach=True, quiet=True)
    try:
        s = settings.model_copy(update={"kafka": broker.bootstrap, "web_port": free_port(), "shutdown_timeout": 3.0})
        ensure_topics(s, broker.bootstrap)
        proc = spawn_worker(s, broker.bootstrap, tmp_path / "worker.log")
        try:
            _wait(lambda: _get(s.web_port, "/ready")[0] == 200, "ready", proc)
            broker.stop()
            code, body = _wait(lambda: (lambda r: r if r[0] == 503 else None)(_get(s.web_port, "/ready")),
                               "/ready turning 503", proc, timeout=30)
            assert not orjson.loads(body)["checks"]["broker"]["ok"]
            assert _get(s.web_port, "/health")[0] == 200  # alive: nothing a restart would fix
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(3.0 + 5.0)  # the bound plus interpreter exit; was 96 s
            assert time.monotonic() - t0 < 8.0
        finally:
            stop_process(proc)
    finally:
        broker.stop()
