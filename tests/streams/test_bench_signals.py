"""Benchmarks stopped by a signal leave no process behind and print no child's traceback (a CLI audit: SIGTERM to
``bench latency`` left its webhook receiver and alerts reader running forever; ``bench scale`` interrupted left a
worker running forever; Ctrl-C printed a child's 20-line KeyboardInterrupt traceback).

Processes are found by an environment marker each test sets, as the audit's harness did: a child that outlived
its parent (reparented) is found too."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from core.settings import REPO

pytestmark = pytest.mark.kafka


def marked(mark: str) -> list[tuple[int, str]]:
    """Live processes (not zombies) whose environment holds ``BENCH_SIGNALS_MARK=mark``: (pid, command line)."""
    out = []
    for e in glob.glob("/proc/[0-9]*/environ"):
        pid = int(e.split("/")[2])
        try:
            with open(e, "rb") as fh:
                if f"BENCH_SIGNALS_MARK={mark}".encode() not in fh.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                out.append((pid, fh.read().replace(b"\0", b" ").decode(errors="replace")))
        except OSError:
            pass
    return out


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s")
        time.sleep(0.1)
    return got


def gone(mark: str, timeout: float = 30.0) -> list:
    """Marked processes still alive after ``timeout`` (they get that long to stop); [] once none is."""
    deadline = time.monotonic() + timeout
    while (left := marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def connected_to(pid: int, port: int) -> bool:
    """Whether ``pid`` holds an established TCP connection to ``port`` (the child is past start-up, talking to Kafka)."""
    inodes = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as fh:
                for line in list(fh)[1:]:
                    f = line.split()
                    if int(f[2].rsplit(":", 1)[1], 16) == port and f[3] == "01":
                        inodes.add(f[9])
        except OSError:
            pass
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def _start(cmd: list[str], mark: str, bootstrap: str, tmp_path, **kw) -> subprocess.Popen:
    env = dict(os.environ, BENCH_SIGNALS_MARK=mark, KUBESIGHT_KAFKA=bootstrap, KUBESIGHT_STATE_DIR=str(tmp_path),
               PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "stderr", "w"), start_new_session=True, **kw)


def _kill(proc: subprocess.Popen, mark: str) -> None:
    """The test's own cleanup: whatever the assertions found, nothing of the run stays."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for pid, _ in marked(mark):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _ctrl_c_is_quiet(proc: subprocess.Popen, mark: str, tmp_path, ready, what: str) -> None:
    """Once ``ready()``, Ctrl-C (SIGINT to the group) ends the child with exit 130 and no traceback."""
    try:
        wait_for(ready, 60, what)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 130
        err = (tmp_path / "stderr").read_text()
        assert "Traceback" not in err, err[-2000:]
    finally:
        _kill(proc, mark)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_sigterm_to_bench_latency_stops_its_children(kafka_bootstrap, tmp_path, sig):
    """SIGTERM (``kill``, ``timeout``) goes through the bench's ``finally`` as Ctrl-C does: receiver, reader and
    worker stopped, "interrupted", exit 130 (it died at once, -15, and the receiver and reader ran on).  SIGKILL
    skips the ``finally``: the children die with their parent."""
    mark = uuid.uuid4().hex
    proc = _start([sys.executable, "-m", "kubesight", "bench", "latency", "--rates", "1", "--seconds", "1"],
                  mark, kafka_bootstrap, tmp_path)
    try:
        # the receiver, the reader (ready) and the worker are started once this is printed
        wait_for(lambda: "in their own processes" in (tmp_path / "stderr").read_text(), 120, "bench latency start")
        assert any("alerts.localhooks" in c for _, c in marked(mark))
        assert any("bench_latency read" in c for _, c in marked(mark))
        proc.send_signal(sig)
        assert proc.wait(60) == (130 if sig == signal.SIGTERM else -sig), (tmp_path / "stderr").read_text()[-2000:]
        assert gone(mark) == []
    finally:
        _kill(proc, mark)


def test_the_webhook_receiver_dies_with_its_parent(tmp_path):
    """A bench killed past its ``finally`` (SIGKILL, the OOM killer) takes its receiver with it."""
    mark = uuid.uuid4().hex
    script = ("import sys, time\nfrom alerts.localhooks import spawn_receiver\n"
              f"p, url = spawn_receiver({str(tmp_path / 'hooks.txt')!r})\nprint(p.pid, flush=True)\ntime.sleep(600)\n")
    env = dict(os.environ, BENCH_SIGNALS_MARK=mark)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        receiver = int(parent.stdout.readline())
        assert receiver in [pid for pid, _ in marked(mark)]
        parent.kill()
        parent.wait()
        assert gone(mark, 10) == []
    finally:
        _kill(parent, mark)


def test_ctrl_c_to_the_latency_producer_is_quiet(kafka_bootstrap, tmp_path):
    """Ctrl-C reaches the bench's whole process group: its producer exits 130 without a traceback (the bench itself
    says "interrupted")."""
    from core.settings import Settings
    from core.topics import ensure_topics

    settings = Settings(kafka=kafka_bootstrap, topic_prefix=f"bench-signals-{uuid.uuid4().hex[:6]}-")
    ensure_topics(settings, kafka_bootstrap)
    port = int(kafka_bootstrap.rsplit(":", 1)[1])
    mark = uuid.uuid4().hex
    proc = _start([sys.executable, "-m", "streams.bench_latency", "produce", kafka_bootstrap,
                   settings.topic("events"), "1", "120", "sig"], mark, kafka_bootstrap, tmp_path)
    _ctrl_c_is_quiet(proc, mark, tmp_path, lambda: connected_to(proc.pid, port), "producer connected to Kafka")


@pytest.mark.parametrize("target", ["process", "group", "kill"])
def test_ctrl_c_to_bench_scale_stops_its_worker_quietly(kafka_bootstrap, tmp_path, target):
    """SIGINT to the bench alone (``kill -INT``): its ``finally`` stops the worker (it ran forever); to the whole
    group (Ctrl-C): the worker exits 130 without a traceback; SIGKILL to the bench: the worker dies with it."""
    mark = uuid.uuid4().hex
    proc = _start([sys.executable, "-m", "kubesight", "bench", "scale", "--series", "10", "--scrapes", "1",
                   "--kafka-signals", "200", "--kafka-partitions", "1", "--workload", "nodes"],
                  mark, kafka_bootstrap, tmp_path)
    try:
        cmd = wait_for(lambda: [c for _, c in marked(mark) if "bench_scale worker" in c], 120, "bench scale worker")[0]
        # in its loop, holding partitions (it says so in OUT.assigned), where the audit's Ctrl-C found it
        assigned = cmd.split()[-1] + ".assigned"
        wait_for(lambda: os.path.exists(assigned) and open(assigned).read() not in ("", "0"), 60, "worker assigned")
        if target == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGKILL if target == "kill" else signal.SIGINT)
        assert proc.wait(60) == (-signal.SIGKILL if target == "kill" else 130)
        assert gone(mark) == []
        err = (tmp_path / "stderr").read_text()
        assert "Traceback" not in err, err[-2000:]
    finally:
        _kill(proc, mark)


def test_ctrl_c_to_a_scale_worker_is_quiet(kafka_bootstrap, tmp_path):
    """A ``bench scale`` worker in its loop, holding partitions, gets Ctrl-C: exit 130, no traceback (in the whole
    bench the parent's SIGTERM often ends it first, so the worker is tested alone)."""
    from core.settings import Settings
    from core.topics import ensure_topics

    tag = uuid.uuid4().hex[:6]
    settings = Settings(kafka=kafka_bootstrap, topic_prefix=f"bench-signals-{tag}-", app_id=f"bench-signals-{tag}",
                        partitions=1)
    ensure_topics(settings, kafka_bootstrap)
    cfg, out = tmp_path / "settings.json", tmp_path / "w0.json"
    cfg.write_text(settings.model_dump_json())
    mark = uuid.uuid4().hex
    proc = _start([sys.executable, "-m", "streams.bench_scale", "worker", str(cfg), kafka_bootstrap, "w0", str(out)],
                  mark, kafka_bootstrap, tmp_path)
    assigned = tmp_path / "w0.json.assigned"
    _ctrl_c_is_quiet(proc, mark, tmp_path, lambda: assigned.exists() and assigned.read_text() not in ("", "0"),
                     "worker assigned")
