"""``kubesight worker`` (--role all): ``/ready`` includes the child processes, and only the children that load the
routing file export its reload gauges.

A child that died at start (the alerting one on a routing file it refused: exit 2) was started again every second
while the worker's ``/ready`` said 200 and "notifications off (no routing file)"; and the incidents child exported
``kubesight_routing_config_last_reload_successful{role="incidents"} 0`` for ever (an ``== 0`` alert fired)."""

from __future__ import annotations

import os
import re
import signal

import orjson
import pytest

from core.broker import free_port
from streams.cli_run import spawn_worker, stop_process
from tests.streams.test_worker_ops import _get, _wait
from tests.streams.test_worker_roles import ROUTING, _children


def _ready(port: int) -> tuple[int, dict]:
    code, body = _get(port, "/ready")
    return code, orjson.loads(body)["checks"]


@pytest.mark.kafka
def test_ready_follows_the_children_and_only_routing_children_export_reload_gauges(settings, tmp_path):
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING)
    port = free_port()
    s = settings.model_copy(update={"routing": str(routing), "web_port": port, "shutdown_timeout": 10.0,
                                    "state_dir": str(tmp_path / "state")})
    proc = spawn_worker(s, settings.kafka, tmp_path / "worker.log", worker_id="childready")
    try:
        _wait(lambda: _ready(port)[0] == 200, "ready", proc, timeout=120)
        checks = _ready(port)[1]
        assert checks["children"]["ok"], checks
        for role in ("incidents", "alerting", "delivery"):
            assert f"{role}: pid " in checks["children"]["detail"], checks
        assert "alerting and delivery child processes" in checks["routing"]["detail"], checks
        assert "no routing file" not in checks["routing"]["detail"], checks

        # the routing-reload gauges: from the children that load the file, never from incidents (nor the worker)
        gauge = re.compile(r'^kubesight_routing_config_last_reload_success\w*?(\{[^}]*\})? (\S+)$', re.M)

        def scraped():
            text = _get(port, "/metrics")[1].decode()
            shown = set(re.findall(r'^process_cpu_seconds_total\{role="(\w+)"\}', text, re.M))
            return text if {"incidents", "alerting", "delivery"} <= shown else None

        text = _wait(scraped, "every child's samples on /metrics", proc, timeout=60)
        shown = gauge.findall(text)
        assert ('{role="delivery"}', "1.0") in shown, text
        assert not [g for g in shown if "incidents" in g[0]], shown
        # nor from the worker itself (an unlabelled sample: it loads no routing file in --role all)
        assert {labels for labels, _ in shown} == {'{role="alerting"}', '{role="delivery"}'}, shown

        # the alerting child dies again each time it is started (as one refusing its routing file at start does)
        killed: set[int] = set()

        def crash_loop():
            pid = _children(proc.pid).get("alerting")
            if pid is not None and pid not in killed:
                killed.add(pid)
                os.kill(pid, signal.SIGKILL)
            code, checks = _ready(port)
            alerting = re.search(r"alerting: [^;]*", checks["children"]["detail"])
            return (code == 503 and not checks["children"]["ok"] and alerting and "last exit -9" in alerting[0]
                    and "a crash loop" in alerting[0] and checks)

        checks = _wait(crash_loop, "/ready 503 naming the alerting child, its exit code and its crash loop", proc,
                       timeout=60)
        assert not checks["routing"]["ok"] and "alerting" in checks["routing"]["detail"], checks
        assert _get(port, "/health")[0] == 200  # liveness unchanged: the worker itself answers

        # left alone, the child runs: ready again once it has stayed up (20 s after a crash loop)
        _wait(lambda: _ready(port)[0] == 200, "ready again", proc, timeout=90)
        checks = _ready(port)[1]
        assert checks["children"]["ok"] and "last exit -9" in checks["children"]["detail"], checks
        assert checks["routing"]["ok"], checks
    finally:
        stop_process(proc)
