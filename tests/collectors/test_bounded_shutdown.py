"""Issue 13 #3, #4: each long-running collector serves /metrics, /health, /ready when asked, readiness
follows the broker, and SIGTERM ends it within ``shutdown_timeout`` even with the broker gone
(`collect cloud` and `collect metrics` ignored SIGTERM for 140 s)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from core import broker as launcher
from core.broker import free_port

REPO = Path(__file__).resolve().parents[2]
BOUND = 3.0


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_status(proc, port: int, path: str, want: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
        try:
            got = _get(port, path)
        except OSError:
            got = None
        if got == want:
            return
        time.sleep(0.3)
    raise AssertionError(f"{path} answered {got}, not {want}, within {timeout}s")


def commands(tmp_path: Path) -> dict[str, list[str]]:
    mcfg = tmp_path / "metrics.yaml"
    mcfg.write_text(f"targets: []\nremote_write: {{enabled: true, host: 127.0.0.1, port: {free_port()}}}\n")
    return {
        "cloud": ["collect", "cloud", f"--listen=127.0.0.1:{free_port()}", "--node", "i-1=n1"],
        "metrics": ["collect", "metrics", f"--config={mcfg}"],
        "kernel": ["collect", "kernel", "--from-file", "-", "--node", "n1"],
        "silences": ["silences", "serve", "--host", "127.0.0.1", "--port", str(free_port())],
    }


@pytest.mark.kafka
@pytest.mark.parametrize("which", ["cloud", "metrics", "kernel", "silences"])
def test_collector_probes_follow_the_broker_and_sigterm_is_bounded_without_it(which, tmp_path):
    broker = launcher.start(f"pytest-{which}-{os.getpid()}", attach=True, quiet=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
    env.update(KUBESIGHT_KAFKA=broker.bootstrap, KUBESIGHT_TOPIC_PREFIX=f"{which}-", KUBESIGHT_WEB_PORT=str(port),
               KUBESIGHT_SHUTDOWN_TIMEOUT=str(BOUND), KUBESIGHT_CLOUD_TOKEN="t0ken", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "kubesight", *commands(tmp_path)[which]], cwd=REPO, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_status(proc, port, "/ready", 200, 60)
        assert _get(port, "/health") == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert b"process_cpu_seconds_total" in r.read()
        broker.stop()
        _wait_status(proc, port, "/ready", 503, 20)  # the broker is gone and readiness says so
        assert _get(port, "/health") == 200
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(BOUND + 5)
        assert time.monotonic() - t0 < BOUND + 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        broker.stop()
