"""A worker's children (``kubesight worker``, --role all) restarted while the routing file is refused keep running
the version the worker ran (README: "the running one stays"), and run where the worker was started (its relative
config and routing paths)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest
import yaml

from core.broker import die_with_parent
from streams.cli_run import spawn_worker, stop_process
from tests.alerts.test_pipeline_kafka import alert, produce
from tests.streams.test_worker_child_metrics import ROUTING, ReceiverThread
from tests.streams.test_worker_ops import _wait
from tests.streams.test_worker_roles import _children

KEPT = "routing file refused at start, the running version stays"


@pytest.fixture
def hook():
    """A webhook receiver on its own thread, beside the worker's processes."""
    receiver = ReceiverThread()
    receiver.start()
    assert receiver.started.wait(10)
    yield receiver
    receiver.stop()


def _restarted(proc, old: dict[str, int], roles: tuple[str, ...]):
    """The children once each of ``roles`` runs under a new pid."""
    def cond():
        k = _children(proc.pid)
        return k if all(k.get(r) not in (None, old[r]) for r in roles) else None
    return cond


def _names(hook) -> list[str]:
    return [a["labels"]["alertname"] for n in hook.server.accepted for a in n["body"]["alerts"]]


@pytest.mark.kafka
def test_children_restarted_while_the_routing_file_is_refused_or_gone_run_the_version_the_worker_ran(
        settings, tmp_path, hook):
    routing = tmp_path / "routing.yaml"
    good = ROUTING.format(url=hook.server.url)
    routing.write_text(good)
    state = tmp_path / "state"
    s = settings.model_copy(update={"routing": str(routing), "clock": "wall", "shutdown_timeout": 10.0,
                                    "state_dir": str(state)})
    log = tmp_path / "worker.log"
    snapshot = state / "routing" / f"{s.app_id}-keep.yaml"
    proc = spawn_worker(s, settings.kafka, log, worker_id="keep")
    try:
        kids = _wait(lambda: (k := _children(proc.pid)) and len(k) == 3 and k, "three children", proc, timeout=120)
        for role in ("alerting", "delivery"):
            _wait(lambda role=role: f"kubesight worker --role {role}: pid" in log.read_text(), f"{role}", proc)
        _wait(lambda: snapshot.exists() and snapshot.read_text() == good, "the routing text kept", proc)
        assert snapshot.stat().st_mode & 0o077 == 0  # receiver URLs and keys are secrets

        # a version that does not validate, then the alerting and delivery processes killed (an OOM kill)
        broken = good.replace("receiver: hooked", "receiver: nobody")
        routing.write_text(broken)
        os.kill(kids["alerting"], signal.SIGKILL)
        os.kill(kids["delivery"], signal.SIGKILL)
        again = _wait(_restarted(proc, kids, ("alerting", "delivery")), "alerting and delivery started again", proc)
        _wait(lambda: log.read_text().count(KEPT) >= 2, "both restarted children on the kept version", proc)
        asyncio.run(produce(s, [alert("KeptWhileBroken", "node-1")]))
        _wait(lambda: "KeptWhileBroken" in _names(hook), "the notification, by the kept version", proc, timeout=120)
        assert routing.read_text() == broken and snapshot.read_text() == good
        assert _children(proc.pid) == again  # running, not exiting 2 and started again in a loop
        assert "exited with 2" not in log.read_text()
        assert f"{routing}:" in log.read_text().split(KEPT, 1)[1]  # the file's errors, with their lines

        # the file gone (a ConfigMap deleted): every child restarted, incidents too (the settings name the file)
        routing.unlink()
        for pid in again.values():
            os.kill(pid, signal.SIGKILL)
        third = _wait(_restarted(proc, again, ("incidents", "alerting", "delivery")), "all three started again",
                      proc)
        _wait(lambda: log.read_text().count(KEPT) >= 4, "the restarted children on the kept version", proc)
        asyncio.run(produce(s, [alert("KeptWhileGone", "node-1")]))
        _wait(lambda: "KeptWhileGone" in _names(hook), "the notification with the file gone", proc, timeout=120)
        assert _children(proc.pid) == third and "exited with 2" not in log.read_text()

        # the file back, fixed: followed still, taken at the next poll and kept
        fixed = good.replace("repeat_interval: 24h", "repeat_interval: 12h")
        routing.write_text(fixed)
        _wait(lambda: log.read_text().count(f"routing file {routing} reloaded") >= 2, "the fixed file taken", proc)
        _wait(lambda: snapshot.read_text() == fixed, "the fixed version kept", proc)
    finally:
        stop_process(proc)


@pytest.mark.kafka
def test_children_run_in_the_workers_directory_with_its_relative_config_and_routing(settings, tmp_path, hook):
    run = tmp_path / "run"
    run.mkdir()
    (run / "routing.yaml").write_text(ROUTING.format(url=hook.server.url))
    doc = settings.model_copy(update={"clock": "wall", "shutdown_timeout": 10.0}).model_dump(mode="json")
    doc.update(routing="routing.yaml", state_dir="state")  # relative: to the directory the worker starts in
    (run / "settings.yaml").write_text(yaml.safe_dump(doc))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
    env.update(KUBESIGHT_CONFIG="settings.yaml", PYTHONUNBUFFERED="1")
    log = tmp_path / "worker.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "kubesight", "worker", "--worker-id", "relative",
                                 "--loglevel", "info"], cwd=run, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
    try:
        kids = _wait(lambda: (k := _children(proc.pid)) and len(k) == 3 and k, "three children", proc, timeout=120)
        for role in kids:
            _wait(lambda role=role: f"kubesight worker --role {role}: pid" in log.read_text(), f"{role}", proc)
        asyncio.run(produce(settings, [alert("RelativePaths", "node-1")]))
        _wait(lambda: "RelativePaths" in _names(hook), "the notification", proc, timeout=120)
        assert _children(proc.pid) == kids and "exited with" not in log.read_text(), log.read_text()[-3000:]
        assert (run / "state" / "routing" / f"{settings.app_id}-relative.yaml").exists()
    finally:
        stop_process(proc)


def test_a_routing_file_refused_at_start_runs_the_kept_version_only_when_one_is_kept(tmp_path):
    """In process: no snapshot (a worker started by hand) stops at the file's error; a kept version runs, says the file
    is refused (``kubesight_routing_config_last_reload_successful`` 0) and the file is still followed."""
    from core.yamlconfig import ConfigError
    from streams.alerting import LAST_RELOAD_OK, RoutingFile

    path, kept = tmp_path / "routing.yaml", tmp_path / "state" / "kept.yaml"
    good = ROUTING.format(url="http://127.0.0.1:9")
    path.write_text(good)
    first = RoutingFile(str(path), snapshot=str(kept))
    assert kept.read_text() == good and not first.errors and LAST_RELOAD_OK._value.get() == 1
    path.write_text(good.replace("receiver: hooked", "receiver: nobody"))
    for snapshot in ("", str(tmp_path / "none.yaml")):
        with pytest.raises(ConfigError, match=r"routing.yaml:3: route.receiver: undefined receiver"):
            RoutingFile(str(path), snapshot=snapshot)
    restarted = RoutingFile(str(path), snapshot=str(kept))
    assert restarted.cfg.digest == first.cfg.digest and LAST_RELOAD_OK._value.get() == 0
    assert "route.receiver: undefined receiver" in restarted.errors[0]
    path.write_text(good.replace("24h", "12h"))
    os.utime(path, ns=(1, 1))
    assert restarted.poll() is not None and not restarted.errors and LAST_RELOAD_OK._value.get() == 1
    assert kept.read_text() == good.replace("24h", "12h")


@pytest.mark.kafka
def test_the_kept_routing_version_is_removed_when_the_worker_stops(settings, tmp_path):
    """The kept version holds receiver URLs and tokens.  It was removed only when the same worker id started again,
    and the default id is ``hostname-pid``: every worker run on a VM left one more copy of the secrets behind, and
    copies of rotated ones outlived the rotation.  Another worker's copy is its own."""
    routing = tmp_path / "routing.yaml"
    text = ROUTING.format(url="http://127.0.0.1:9/t0ken-s3cret")
    routing.write_text(text)
    state = tmp_path / "state"
    s = settings.model_copy(update={"routing": str(routing), "shutdown_timeout": 10.0, "state_dir": str(state)})
    snapshot = state / "routing" / f"{s.app_id}-gone.yaml"
    half = snapshot.with_name(f"{snapshot.name}.99999.tmp")  # a child killed while writing it
    other = snapshot.with_name(f"{s.app_id}-other.yaml")  # another worker's, running beside it
    log = tmp_path / "worker.log"
    proc = spawn_worker(s, settings.kafka, log, worker_id="gone")
    try:
        _wait(lambda: snapshot.exists() and snapshot.read_text() == text, "the routing text kept", proc, timeout=120)
        half.write_text(text)
        other.write_text(text)
        assert len(_children(proc.pid)) == 3
    finally:
        code = stop_process(proc)
    assert code == 0, log.read_text()[-3000:]
    assert not snapshot.exists() and not half.exists()
    assert other.read_text() == text
