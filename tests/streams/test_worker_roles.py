"""Issue 20 #1: ``kubesight worker`` runs the hot path itself and incidents, alerting and delivery each in a child
process (``--role``) that it restarts when it dies and stops when it stops."""

from __future__ import annotations

import os
import signal
import time

import pytest

from streams.cli_run import spawn_worker, stop_process

ROUTING = """
route:
  receiver: r
  group_by: [alertname]
receivers:
  - name: r
    webhook_configs: [{url: "http://127.0.0.1:9/hook"}]
"""


def _children(pid: int) -> dict[str, int]:
    """--role -> pid of the live children of ``pid``."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                argv = fh.read().decode().split("\0")
        except OSError:
            continue
        if int(rest[1]) == pid and rest[0] != "Z" and "--role" in argv:
            out[argv[argv.index("--role") + 1]] = int(d)
    return out


def _wait(cond, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"no {what} within {timeout:.0f}s")


@pytest.mark.kafka
def test_worker_runs_its_parts_as_children_restarts_one_that_dies_and_stops_them(settings, tmp_path):
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING)
    s = settings.model_copy(update={"routing": str(routing), "shutdown_timeout": 10.0})
    log = tmp_path / "worker.log"
    proc = spawn_worker(s, settings.kafka, log, worker_id="roles")
    try:
        def three():
            k = _children(proc.pid)
            return k if len(k) == 3 else None

        kids = _wait(three, "three children")
        assert set(kids) == {"incidents", "alerting", "delivery"}
        _wait(lambda: "in child processes" in log.read_text(), "the start-up line")
        for role in kids:  # each announces its part under the worker's id
            _wait(lambda role=role: f"kubesight worker --role {role}: pid" in log.read_text(), f"{role} started")

        os.kill(kids["delivery"], signal.SIGKILL)
        def restarted():
            k = _children(proc.pid)
            return k if k.get("delivery") not in (None, kids["delivery"]) else None

        again = _wait(restarted, "the delivery process started again")
        assert again["alerting"] == kids["alerting"] and again["incidents"] == kids["incidents"]
        assert "the delivery process exited with -9; starting it again" in log.read_text()

        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        gone = [pid for pid in again.values() if os.path.exists(f"/proc/{pid}") and
                open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
        assert not gone, f"children left running after the worker stopped: {gone}"
        assert proc.returncode == 0
    finally:
        stop_process(proc)
