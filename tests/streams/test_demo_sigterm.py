"""``kubesight demo --hold`` stopped with SIGTERM (a service manager, ``timeout``) goes through its cleanup, as with
Ctrl-C: workers stopped, board and receivers closed, then "interrupted" and exit 130 (it used to die at once)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from core.settings import REPO

pytestmark = pytest.mark.kafka


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def test_sigterm_stops_the_held_demo_through_its_cleanup(kafka_bootstrap, tmp_path):
    env = dict(os.environ, KUBESIGHT_KAFKA=kafka_bootstrap, KUBESIGHT_STATE_DIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "kubesight", "demo", "--hold", "--quiet"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        for line in proc.stdout:
            if "(until Ctrl-C)" in line:
                break
            assert time.monotonic() < deadline, "the demo did not get to its summary"
        else:
            pytest.fail(f"the demo ended early: {proc.wait()} {proc.stderr.read()[-2000:]}")
        workers = children(proc.pid)
        assert workers, "the held demo has its worker processes"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 130
        assert "interrupted" in proc.stderr.read()
        for pid in workers:  # stopped by the cleanup, not left behind
            assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    finally:
        if proc.poll() is None:
            proc.kill()
