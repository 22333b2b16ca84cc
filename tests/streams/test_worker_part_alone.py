"""A self-metrics audit: ``kubesight worker --role incidents|alerting|delivery`` run alone (as the README allows) served
no ``/metrics``, ``/health`` or ``/ready`` on its web port, and the delivery group's lag was in no series, though
delivery is the group that backs up when a receiver is slow (161 behind, nothing to alert on)."""

from __future__ import annotations

import orjson
import pytest

from core.broker import free_port
from streams.cli_run import spawn_worker, stop_process
from tests.kafkatools import write_transaction
from tests.streams.test_worker_child_metrics import routed
from tests.streams.test_worker_ops import _get, _metric, _wait

ROUTING = """
route:
  receiver: hooked
  group_by: [alertname]
receivers:
  - name: hooked
    webhook_configs: [{{url: "{url}/hook", timeout: 2s}}]
    retry: {{initial: 100ms, max_backoff: 300ms, budget: 10m}}
"""


def notification(i: int) -> bytes:
    return orjson.dumps({"id": f"n{i}", "receiver": "hooked", "groupKey": f"{{}}:{{alertname=\"A{i}\"}}",
                         "groupLabels": {"alertname": f"A{i}"}, "status": "firing",
                         "alerts": [{"labels": {"alertname": f"A{i}"}, "status": "firing", "fingerprint": f"f{i}",
                                     "startsAt": "2024-01-01T00:00:00Z"}]})


def _ready(port: int, *names: str):
    code, body = _get(port, "/ready")
    checks = orjson.loads(body)["checks"]
    return code == 200 and all(checks.get(n, {}).get("ok") for n in names) and checks


@pytest.mark.kafka
def test_delivery_alone_serves_its_web_port_and_its_lag_counts_what_a_failing_receiver_holds(settings, tmp_path):
    """Notifications read and retried against a receiver that answers 500 are past the consumer's position, not past
    its commit: the lag series says so while it fails and goes back to 0 once it takes them (the transaction's
    commit marker after them included)."""
    hook, s, port = routed(settings, tmp_path, ROUTING, after=500)  # the receiver down from the start
    proc = spawn_worker(s, settings.kafka, tmp_path / "delivery.log", worker_id="alone-d", role="delivery")
    topic = s.topic("notifications")
    series = f'kubesight_consumer_lag{{partition="0",processor="delivery",topic="{topic}"}}'
    try:
        checks = _wait(lambda: _ready(port, "broker", "delivery"), "/ready 200 with broker and delivery", proc)
        assert "notifications assigned" in checks["delivery"]["detail"]
        assert _get(port, "/health")[0] == 200
        write_transaction(settings.kafka, topic, [notification(i) for i in range(3)], tid=f"{s.app_id}-t")

        def behind():
            if hook.server.requests < 4:  # retried: read, sent, failed, in flight
                return None
            return _metric(_get(port, "/metrics")[1].decode(), series)
        lag = _wait(behind, f"{series} > 0 while the receiver fails", proc, timeout=60)
        assert lag >= 3 and not hook.server.accepted

        hook.server.after = "ok"
        _wait(lambda: len(hook.server.accepted) == 3 and _metric(_get(port, "/metrics")[1].decode(), series) == 0,
              f"the 3 notifications taken and {series} back to 0", proc, timeout=60)
    finally:
        stop_process(proc)
        hook.stop()


@pytest.mark.kafka
@pytest.mark.parametrize("role, checks", [("incidents", ("incidents",)), ("alerting", ("alerting", "views"))])
def test_a_part_alone_serves_metrics_and_ready_on_its_web_port(settings, tmp_path, role, checks):
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING.format(url="http://127.0.0.1:9"))
    port = free_port()
    s = settings.model_copy(update={"web_port": port, "shutdown_timeout": 10.0, "state_dir": str(tmp_path / "state"),
                                    "routing": str(routing)})
    log = tmp_path / f"{role}.log"
    proc = spawn_worker(s, settings.kafka, log, worker_id=f"alone-{role}", role=role)
    try:
        got = _wait(lambda: _ready(port, "broker", *checks), f"/ready 200 with broker and {checks}", proc)
        assert "assigned and restored" in got[role]["detail"]
        text = _get(port, "/metrics")[1].decode()
        assert f'kubesight_signals_in_total{{processor="{role}"}}' in text
        assert f'kubesight_consumer_lag{{partition="0",processor="{role}",topic="{s.topic("alerts")}"}}' in text
        assert _get(port, "/health")[0] == 200
        assert f"/metrics, /health, /ready on http://127.0.0.1:{port}" in log.read_text()
    finally:
        stop_process(proc)


@pytest.mark.kafka
def test_one_process_worker_exports_the_delivery_lag_too(settings, tmp_path):
    """``--role one``: delivery runs inside the Faust worker, and its lag is on that worker's ``/metrics``."""
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING.format(url="http://127.0.0.1:9"))
    port = free_port()
    s = settings.model_copy(update={"routing": str(routing), "web_port": port, "shutdown_timeout": 10.0,
                                    "state_dir": str(tmp_path / "state")})
    proc = spawn_worker(s, settings.kafka, tmp_path / "one.log", worker_id="alone-1", role="one")
    series = f'kubesight_consumer_lag{{partition="0",processor="delivery",topic="{s.topic("notifications")}"}}'
    try:
        _wait(lambda: series in _get(port, "/metrics")[1].decode(), series, proc, timeout=120)
    finally:
        stop_process(proc)
