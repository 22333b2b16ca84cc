"""The collector loop: checkpoints survive restarts (no loss, no repeat), dead letters, lost records, the CLI."""

from __future__ import annotations

import io
import subprocess
import sys

import orjson
import pytest

from collectors.kernel.checkpoint import FileCheckpoint
from collectors.kernel.classify import Classifier
from collectors.kernel.collector import KernelCollector
from collectors.kernel.patterns import load_patterns
from collectors.kernel.sources import from_path, kmsg_items
from collectors.sink import StdoutSink
from core.settings import REPO
from kubesight.cli import main


@pytest.fixture(scope="module")
def patterns():
    return load_patterns()


@pytest.fixture(scope="module")
def mixed_log(tmp_path_factory, data_dir):
    """One node log stitched from real captures: interleaved [ T..] reports, Xid, OOM, pstore, NPD problems."""
    parts = [data_dir / "syzkaller-kernel-reports" / "report" / n for n in ("69", "264", "171", "12", "36", "432", "540", "153", "615", "684")]
    lines = []
    for p in parts:
        lines += p.read_text(errors="replace").partition("\n\n")[2].splitlines()
    for rel in ("gpud-testdata/xid/dmesg-with-xid-119.log", "gpud-testdata/memory/dmesg.decode.iso.log",
                "gpud-testdata/pstore/dmesg-erst.txt", "node-problem-detector/kernel_log_problems/null_pointer",
                "node-problem-detector/kernel_log_problems/oom_kill"):
        lines += (data_dir / rel).read_text().splitlines()
    path = tmp_path_factory.mktemp("kernel") / "node.log"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(patterns, path, *, checkpoint=None, max_lines=None):
    out = io.StringIO()
    c = Classifier(patterns, node="n1", source_id="file")
    col = KernelCollector(c, StdoutSink(out), checkpoint=checkpoint, source_id="file:node.log")
    col.resume()
    col.run(from_path(path), max_lines=max_lines)
    return [orjson.loads(ln) for ln in out.getvalue().splitlines()], col


def test_reference_run(patterns, mixed_log):
    events, col = run(patterns, mixed_log)
    reasons = {e["reason"] for e in events}
    assert {"TaskHung", "SoftLockup", "RCUStall", "KernelOops", "NvidiaXid", "OOMKilling"} <= reasons
    assert col.bad == 0 and col.lines > 1000


@pytest.mark.parametrize("step", [301, 450, 613])
def test_restarts_neither_lose_nor_repeat_events(patterns, mixed_log, tmp_path, step):
    """Stop after every `step` lines (often inside an open report) and restart from the checkpoint file.

    A restart re-reads the open reports, so a run must last longer than one report (max_lines, 300)
    to make progress: the steps here are all longer.
    """
    reference, _ = run(patterns, mixed_log)
    cp = FileCheckpoint(tmp_path / "cp.json")
    got, runs, held = [], 0, 0
    while True:
        events, col = run(patterns, mixed_log, checkpoint=cp, max_lines=step)
        got += events
        runs += 1
        saved = cp.load()
        held += saved["pos"] < col.last_pos  # stopped inside a report: the checkpoint stays before it
        if col.lines < step:
            break
        assert runs < 1000
    assert [e["id"] for e in got] == [e["id"] for e in reference]
    assert got == reference  # same content too, not only the same ids
    assert runs > 1 and held >= 1


def test_checkpoint_of_another_source_is_ignored(patterns, mixed_log, tmp_path):
    cp = FileCheckpoint(tmp_path / "cp.json")
    cp.save({"source": "kmsg:other-boot", "pos": 10**9, "emitted": []})
    events, _ = run(patterns, mixed_log, checkpoint=cp)
    assert events, "a checkpoint from another boot/file must not skip this input"


def test_bad_lines_are_dead_lettered_with_reason_and_position(patterns, tmp_path, capsys):
    p = tmp_path / "k.log"
    p.write_bytes(b"[ 1.0] unregister_netdevice: waiting for lo to become free. Usage count = 1\n"
                  b"6,zz,1,-;broken record\n"
                  b"garbage\x00bytes\n")
    events, col = run(patterns, p)
    assert [e["reason"] for e in events] == ["UnregisterNetDevice"] and col.bad == 2
    err = capsys.readouterr().err
    assert "malformed /dev/kmsg record header" in err and "'line': 2" in err
    assert "NUL bytes" in err and "'line': 3" in err


def test_lost_kmsg_records_become_one_event_with_the_count(patterns, data_dir):
    recs = [ln.encode() for ln in (data_dir / "gpud-testdata" / "kmsg" / "kmsg.1.log").read_text().splitlines()]
    out = io.StringIO()
    col = KernelCollector(Classifier(patterns, node="n1"), StdoutSink(out), source_id="kmsg:b")
    col.run(kmsg_items(recs[:5] + [BrokenPipeError(32, "Broken pipe")] + recs[20:]))
    (lost,) = [orjson.loads(ln) for ln in out.getvalue().splitlines()]
    assert (lost["reason"], lost["labels"]["missed"], lost["labels"]["cause"]) == ("KernelLogLost", "15", "overrun")
    assert "15 kernel log records were lost" in lost["message"]


# ---------------------------------------------------------------- CLI


def test_cli_from_file_stdout(data_dir, capsys):
    rc = main(["collect", "kernel", "--from-file", str(data_dir / "node-problem-detector" / "kernel_log_problems"),
               "--stdout", "--node", "worker-9", "--cluster", "c1"])
    out, err = capsys.readouterr()
    assert rc == 0
    events = [orjson.loads(ln) for ln in out.splitlines()]
    assert sorted(e["reason"] for e in events) == sorted(
        ["DockerHung", "AUFSUmountHung", "KernelOops", "KernelOops", "OOMKilling", "FilesystemReadOnly",
         "UnregisterNetDevice"])
    assert {(e["entity"]["node"], e["entity"]["cluster"], e["source"]) for e in events} == {("worker-9", "c1", "kernel")}
    assert {e["labels"]["file"].rsplit("/", 1)[1] for e in events} == {
        "docker_hung", "aufs_umount_hung", "null_pointer", "divide_zero", "oom_kill", "readonly_filesystem",
        "unregister_netdevice"}
    assert "7 events, 0 dead-lettered" in err


def test_cli_reads_stdin(data_dir):
    text = (data_dir / "gpud-testdata" / "xid" / "dmesg-with-xid-119.log").read_bytes()
    r = subprocess.run([sys.executable, "-m", "kubesight", "collect", "kernel", "--from-file", "-", "--stdout",
                        "--node", "n2"], input=text, capture_output=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    events = [orjson.loads(ln) for ln in r.stdout.splitlines()]
    assert [e["reason"] for e in events] == ["NvidiaXid"] * 5
    assert events[0]["labels"]["xid_fatal"] == "true"


def test_cli_xid_fatal_option(data_dir, capsys):
    rc = main(["collect", "kernel", "--from-file", str(data_dir / "gpud-testdata" / "xid" / "dmesg-with-xid-119.log"),
               "--stdout", "--node", "n", "--xid-fatal", "48,79"])
    assert rc == 0
    assert {orjson.loads(ln)["labels"]["xid_fatal"] for ln in capsys.readouterr().out.splitlines()} == {"false"}


def test_cli_check_reports_every_pattern_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\npatterns:\n  - {id: x, reason: X, severity: loud, match: '(', examples: ['x']}\n")
    rc = main(["collect", "kernel", "--patterns", str(bad), "--check"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{bad}:3: patterns[0].severity" in err and f"{bad}:3: patterns[0].match: invalid regular expression" in err
    assert main(["collect", "kernel", "--check"]) == 0
    assert "ok:" in capsys.readouterr().out


def test_config_errors_exit_2_except_from_the_checker(tmp_path):
    """Pattern files the collector refuses are errors the user can fix: every problem at its line, exit 2 (README),
    no traceback (it exited 1); ``--check`` is a checker and exits 1 on what it finds, as ``rules check`` does.
    A --boot-time or --xid-fatal written wrong is an option's error: 2 (--boot-time exited 1 through SystemExit)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\npatterns:\n  - {id: x, reason: X, severity: loud, match: '(', examples: ['x']}\n")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "kubesight", "collect", "kernel", *args], input="x\n",
                              capture_output=True, text=True, cwd=REPO, timeout=60)

    lines = [f"{bad}:3: patterns[0].match: invalid regular expression '(': missing ), unterminated subpattern at "
             "position 0", f"{bad}:3: patterns[0].severity: expected 'critical', 'warning' or 'info', got \"loud\""]
    for args, code in ((("--from-file", "-", "--stdout"), 2), (("--check",), 1)):
        res = run("--patterns", str(bad), *args)
        assert (res.returncode, res.stderr.splitlines(), res.stdout) == (code, lines, ""), args
    for args, message in ((("--boot-time", "soon"), "--boot-time: invalid time 'soon'"),
                          (("--xid-fatal", "a,b", "--check"), "--xid-fatal: expected comma-separated integers")):
        res = run("--from-file", "-", "--stdout", *args)
        assert res.returncode == 2 and res.stderr.startswith(message) and "Traceback" not in res.stderr, res.stderr


def test_cli_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["collect", "kernel", "--help"])
    out = capsys.readouterr().out
    for opt in ("--from-file", "--kmsg", "--no-follow", "--stdout", "--node", "--cluster", "--patterns", "--check",
                "--xid-fatal", "--checkpoint", "--boot-time", "--year", "--tz", "NODE_NAME", "stdin"):
        assert opt in out, opt


def test_cli_bench_prints_accuracy_and_speed(capsys, data_dir):
    assert main(["bench", "kernel", "--repeat", "1", "--corpus", str(data_dir / "syzkaller-kernel-reports")]) == 0
    out = capsys.readouterr().out
    assert "syzkaller accuracy: " in out and "lines/s" in out
    pct = float(out.split("files = ")[1].split("%")[0])
    assert pct >= 95.0


def test_idle_input_emits_open_reports_and_commits(patterns, data_dir, tmp_path):
    """Live input that goes quiet: the open report is produced at the idle tick, not at the next line."""
    from collectors.kernel.sources import Item

    items = list(from_path(data_dir / "node-problem-detector" / "kernel_log_problems" / "docker_hung"))
    out = io.StringIO()
    cp = FileCheckpoint(tmp_path / "cp.json")
    col = KernelCollector(Classifier(patterns, node="n1"), StdoutSink(out), checkpoint=cp, source_id="stdin")

    def feed():
        yield from items
        yield Item("idle")
        assert [orjson.loads(ln)["reason"] for ln in out.getvalue().splitlines()] == ["DockerHung"]
        assert cp.load()["pos"] == len(items) - 1  # everything read is handled (items include the 'file' marker)

    col.run(feed())
    assert col.events == 1


def test_sigterm_on_live_kmsg_saves_the_checkpoint(tmp_path):
    """The DaemonSet path: follow the real /dev/kmsg; Kubernetes stops the pod with SIGTERM and the
    last sequence number read is saved."""
    import signal
    import time

    from collectors.kernel.sources import read_kmsg

    try:
        last = max(i.pos for i in read_kmsg("/dev/kmsg", follow=False) if i.kind == "line")
    except (PermissionError, FileNotFoundError):
        pytest.skip("/dev/kmsg is not readable here")
    cp = tmp_path / "cp.json"
    proc = subprocess.Popen([sys.executable, "-m", "kubesight", "collect", "kernel", "--stdout", "--node", "n3",
                             "--checkpoint", str(cp)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not cp.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # the first idle tick (2 s without records) saves a checkpoint
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, proc.stderr.read()
    saved = orjson.loads(cp.read_bytes())
    assert saved["source"].startswith("kmsg:") and saved["pos"] >= last and saved["emitted"] == []


def test_checkpoints_refuse_inputs_without_stable_positions(data_dir, tmp_path, capsys):
    assert main(["collect", "kernel", "--from-file", str(data_dir / "gpud-testdata"), "--stdout",
                 "--checkpoint", str(tmp_path / "cp.json")]) == 2
    assert "--checkpoint applies to /dev/kmsg or one file" in capsys.readouterr().err


def test_a_rotated_or_truncated_file_is_read_from_its_start(patterns, tmp_path):
    """The checkpoint's line number belongs to one file: after logrotate (a new file under the same name) or a
    truncation, the new file's lines up to that number were never read and must not be skipped. A truncation
    in place leaves the previous lines nowhere: a KernelLogLost event says so (none were unread here)."""
    log, cp = tmp_path / "kern.log", FileCheckpoint(tmp_path / "cp.json")
    line = "Mar 28 08:{:02d}:00 node-1 kernel: [ {}.0] EXT4-fs error (device {}): ext4_find_entry:1455: inode #2\n"

    def write(n, minute, dev, mode="w"):
        with open(log, mode) as f:
            f.writelines(line.format(minute + i, 100 * minute + i, dev) for i in range(n))

    def devices():
        events, _ = run(patterns, log, checkpoint=cp)
        return [e["labels"].get("device", e["reason"]) for e in events]

    write(5, 0, "sda1")
    assert devices() == ["sda1"] * 5
    write(2, 10, "sda1", "a")  # grown: only the new lines
    assert devices() == ["sda1"] * 2
    assert devices() == []  # unchanged: nothing again
    log.rename(tmp_path / "kern.log.1")  # logrotate: a new, shorter file
    write(3, 20, "sdb1")
    assert devices() == ["sdb1"] * 3
    write(9, 30, "sdc1")  # copytruncate, then more lines than before: same inode, other first line
    assert devices() == ["KernelLogLost"] + ["sdc1"] * 9
