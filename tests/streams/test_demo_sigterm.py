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
        assert list((tmp_path / "demo").glob("worker-*.log")), "the worker's log is under KUBESIGHT_STATE_DIR"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 130
        assert "interrupted" in proc.stderr.read()
        for pid in workers:  # stopped by the cleanup, not left behind
            assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_demo_runs_to_its_summary_and_leaves_no_file_of_its_run(kafka_bootstrap, tmp_path):
    """`make demo`'s command end to end on the test broker: its summary, exit 0, and nothing left in the state
    directory (every run's worker log, settings, routing copy and Faust data stayed in the checkout: 83 files after
    a day of demos); KUBESIGHT_STATE_DIR is where it writes (a read-only checkout runs it too)."""
    env = dict(os.environ, KUBESIGHT_KAFKA=kafka_bootstrap, KUBESIGHT_STATE_DIR=str(tmp_path))
    res = subprocess.run([sys.executable, "-m", "kubesight", "demo", "--quiet"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "alerts out" in res.stdout and f"(log {tmp_path / 'demo'}" in res.stderr
    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert left == [], left
