"""Issue 13 #4 with issue 20 #1: ``kubesight worker`` (--role all) runs alerting and delivery in child processes,
and its own ``/metrics`` still shows what they count (per-receiver deliveries, the alerting processor's figures)."""

from __future__ import annotations

import asyncio
import re
import threading

import pytest

from core.broker import free_port
from streams.cli_run import spawn_worker, stop_process
from tests.alerts.test_pipeline_kafka import alert, produce
from tests.alerts.webhook_server import ScriptedReceiver
from tests.streams.test_worker_ops import _get, _wait

ROUTING = """
route:
  receiver: hooked
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 24h
receivers:
  - name: hooked
    webhook_configs: [{{url: "{url}/hook", timeout: 2s}}]
"""


class ReceiverThread(threading.Thread):
    """tests.alerts.webhook_server on its own event loop, beside the worker process."""

    def __init__(self):
        super().__init__(daemon=True)
        self.server = ScriptedReceiver()
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start())
        self.started.set()
        self.loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.join(5)


def routed(settings, tmp_path, routing: str = ROUTING, after="ok"):
    """(a started ReceiverThread answering ``after``, settings routing to it by ``routing``, a free web port)."""
    hook = ReceiverThread()
    hook.server.after = after
    hook.start()
    assert hook.started.wait(10)
    path = tmp_path / "routing.yaml"
    path.write_text(routing.format(url=hook.server.url))
    port = free_port()
    s = settings.model_copy(update={"routing": str(path), "web_port": port, "clock": "wall",
                                    "shutdown_timeout": 10.0, "state_dir": str(tmp_path / "state")})
    return hook, s, port


@pytest.mark.kafka
def test_worker_metrics_include_the_children_delivery_figures(settings, tmp_path):
    hook, s, port = routed(settings, tmp_path)
    log = tmp_path / "worker.log"
    proc = spawn_worker(s, settings.kafka, log, worker_id="childmetrics")
    try:
        _wait(lambda: _get(port, "/ready")[0] == 200, "ready", proc, timeout=120)
        _wait(lambda: "kubesight worker --role delivery: pid" in log.read_text(), "the delivery child", proc)
        asyncio.run(produce(s, [alert("ChildMetricsTest", "node-1")]))
        _wait(lambda: hook.server.accepted, "the notification at the receiver", proc, timeout=120)

        line = re.compile(r'^kubesight_notifications_total\{(?=[^}]*receiver="hooked")(?=[^}]*result="delivered")'
                          r'(?=[^}]*role="delivery")[^}]*\} 1(\.0)?$', re.M)

        def shown():
            text = _get(port, "/metrics")[1].decode()
            return text if line.search(text) else None

        text = _wait(shown, "kubesight_notifications_total{receiver=hooked,result=delivered} 1 on the worker's /metrics",
                     proc, timeout=60)
        assert len(hook.server.accepted) == 1
        # the worker's own figures are still there, and the alerting child's processor is counted too
        assert 'kubesight_signals_in_total{processor="signals"}' in text
        assert re.search(r'^kubesight_signals_in_total\{processor="alerting",role="alerting"\} [1-9]', text, re.M), text
        assert 'kubesight_notification_groups_in_flight{receiver="hooked",role="delivery"}' in text
        assert re.search(r'^process_cpu_seconds_total\{role="delivery"\} ', text, re.M)
        # the delivery group's lag, from the delivery child (a self-metrics audit: no series for it at all)
        assert re.search(r'^kubesight_consumer_lag\{partition="0",processor="delivery",role="delivery",'
                         rf'topic="{s.topic("notifications")}"\}} ', text, re.M), text
        # one TYPE line per family: the merged page is valid exposition
        types = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE ")]
        assert len(types) == len(set(types)), sorted(t for t in types if types.count(t) > 1)
    finally:
        stop_process(proc)
        hook.stop()
