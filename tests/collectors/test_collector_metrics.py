"""The Kubernetes and kernel collectors' own counters on ``/metrics``, and the Kubernetes collector's ``/ready``.

An audit (self-metrics) found neither collector served a ``kubesight_*`` series: the kernel collector printed its
counts on exit only, and with the API server gone the Kubernetes collector logged "list/watch failed" for every
stream while ``/ready`` said ready. Both run here as real processes (the Kubernetes one against the local API
server and the real broker); the page they serve must pass ``promtool check metrics``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collectors.kubernetes import testing as fake
from collectors.kubernetes.api import STREAMS
from collectors.kubernetes.collector import Collector, Options
from collectors.kubernetes.watch import Watcher
from tests.realtools import binary, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _samples(port: int) -> dict[tuple, float]:
    """The kubesight_* samples of ``/metrics``: (name, sorted labels) -> value."""
    status, body = _get(port, "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body.decode()) for s in fam.samples
            if s.name.startswith("kubesight_")}


def _metric(port: int, name: str, **labels) -> float | None:
    return _samples(port).get((name, tuple(sorted(labels.items()))))


def _promtool_clean(port: int) -> None:
    promtool = binary("promtool", install="Prometheus' promtool (.ci/run installs it)")
    _, body = _get(port, "/metrics")
    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()


class Proc:
    """A collector process with its web port; fails a wait with the tail of its log when it has exited."""

    def __init__(self, argv: list[str], env: dict, log: Path, stdin=None):
        self.port = free_port()
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "kubesight", *argv], cwd=REPO, stdin=stdin,
                                     env={**env, "KUBESIGHT_WEB_PORT": str(self.port), "PYTHONUNBUFFERED": "1"},
                                     stdout=subprocess.DEVNULL, stderr=open(log, "wb"))

    def wait(self, cond, what: str, deadline: float = 60.0):
        def check():
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                return cond()
            except OSError:  # not listening yet
                return None

        return wait_for(check, deadline, what, every=0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.mark.kafka
def test_kubernetes_collector_counts_and_says_not_ready_without_the_api_server(settings, data_dir, tmp_path):
    srv = fake.FakeApiServer(bookmark_interval=0.05).start()
    events = fake.must_gather_events(data_dir)[::40]
    fake.serve_cluster(srv, fake.nri_cluster(data_dir), events)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
    env.update(KUBESIGHT_KAFKA=settings.kafka, KUBESIGHT_TOPIC_PREFIX=settings.topic_prefix)
    col = Proc(["collect", "kubernetes", "--kubeconfig", str(srv.kubeconfig(tmp_path / "kubeconfig")),
                "--cluster", "metrics-eu1", "--commit-interval", "0.05", "--backoff-base", "0.05",
                "--backoff-max", "0.3"], env, tmp_path / "collector.log")
    try:
        def listed():
            got = _samples(col.port)
            ok = [got.get(("kubesight_kubernetes_watch_last_success_timestamp_seconds", (("stream", s),)), 0) > 0
                  for s in STREAMS]
            return got if all(ok) and got.get(("kubesight_kubernetes_transactions_total", ())) else None

        first = col.wait(listed, "every stream listed and a transaction committed")
        assert first[("kubesight_kubernetes_records_total", ())] >= 1
        assert first[("kubesight_kubernetes_owner_records_total", ())] >= 1
        assert col.wait(lambda: _get(col.port, "/ready")[0] == 200, "/ready 200")
        _promtool_clean(col.port)

        # one more occurrence of an Event, and a watch line that is no JSON: both counted as they are committed
        srv.put("events", fake.repeat(events[0]))
        srv.inject("pods", b'{"type":"MODIFIED","object":{"kind":"Pod"')
        col.wait(lambda: _metric(col.port, "kubesight_kubernetes_records_total")
                 > first[("kubesight_kubernetes_records_total", ())], "records_total rising")
        col.wait(lambda: _metric(col.port, "kubesight_kubernetes_deadletters_total") == 1, "the dead letter counted")
        assert _metric(col.port, "kubesight_kubernetes_transactions_total") > \
            first[("kubesight_kubernetes_transactions_total", ())]
        assert _metric(col.port, "kubesight_kubernetes_watch_failures_total", stream="pods") == 0

        # the API server gone: every stream fails, the failures are counted, and /ready says so. Its open watches are
        # cut first and further requests answered 500 meanwhile, or its stop would wait for them (aiohttp's cleanup)
        for s in STREAMS:
            srv.fail(s, 10**9)
        srv.cut()
        srv.stop()
        before = {s: _metric(col.port, "kubesight_kubernetes_watch_failures_total", stream=s) for s in STREAMS}

        def failing():
            return all(_metric(col.port, "kubesight_kubernetes_watch_failures_total", stream=s) >= before[s] + 3
                       for s in STREAMS)

        col.wait(failing, "failures counted on every stream")
        status, body = col.wait(lambda: (r := _get(col.port, "/ready"))[0] == 503 and r, "/ready 503")
        report = orjson.loads(body)["checks"]
        assert report["broker"]["ok"] and not report["watches"]["ok"]
        assert "every stream's list/watch failing" in report["watches"]["detail"]
        assert _get(col.port, "/health")[0] == 200
        _promtool_clean(col.port)
    finally:
        col.stop()
        srv.stop()


def test_watch_check_needs_every_stream_down_for_backoff_max():
    """One stream failing, or all failing for less than ``backoff_max``, leaves the collector ready."""

    class Api:
        read = None

    c = Collector(Api(), sink=None, options=Options(streams=("events", "pods"), backoff_max=10.0))
    stop = threading.Event()
    c.watchers = [Watcher(None, STREAMS[s], None, None, stop) for s in ("events", "pods")]
    assert c.watch_check()[0]
    ev, pods = c.watchers
    ev.failing, ev.failing_since, ev.last_error = 5, time.monotonic() - 60, "MaxRetryError: refused"
    ok, detail = c.watch_check()
    assert ok and "1 of 2 streams watched; events failing for 60s (MaxRetryError: refused)" in detail
    pods.failing, pods.failing_since = 5, time.monotonic() - 5  # a blip shorter than backoff_max
    assert c.watch_check()[0]
    pods.failing_since = time.monotonic() - 11
    assert c.watch_check()[0] is False
    pods.failing = 2  # fewer than DOWN_AFTER attempts in a row
    assert c.watch_check()[0]
    ev._ok()  # the API server answered events again
    assert ev.failing == 0 and ev.last_ok > 0 and c.watch_check()[0]


def test_kernel_collector_counts_lines_events_and_dead_letters(data_dir, tmp_path):
    text = (data_dir / "gpud-testdata" / "xid" / "dmesg-with-xid-119.log").read_bytes()
    text += b"x" * 70_000 + b"\n"  # longer than a line may be: dead-lettered
    nlines = text.count(b"\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
    col = Proc(["collect", "kernel", "--from-file", "-", "--stdout", "--node", "n2"], env, tmp_path / "kernel.log",
               stdin=subprocess.PIPE)
    try:
        col.proc.stdin.write(text)
        col.proc.stdin.flush()  # and left open: a follower of stdin, still running while scraped

        def counted():
            got = _samples(col.port)
            return got if got.get(("kubesight_kernel_events_total", ())) == 5 else None

        got = col.wait(counted, "the 5 Xid events counted")
        assert got[("kubesight_kernel_lines_total", ())] == nlines - 1
        assert got[("kubesight_kernel_deadletters_total", ())] == 1
        assert got[("kubesight_kernel_events_skipped_total", ())] == 0
        _promtool_clean(col.port)
    finally:
        col.stop()
