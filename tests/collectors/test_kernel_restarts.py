"""Restarts of ``--from-file`` with a checkpoint while the file is still written, rotated or given by another path;
ids that name one event only (the rules drop a second event with an id already seen)."""

from __future__ import annotations

import io
import os

import orjson
import pytest

from collectors.kernel.checkpoint import FileCheckpoint
from collectors.kernel.classify import Classifier
from collectors.kernel.collector import KernelCollector
from collectors.kernel.patterns import load_patterns
from collectors.kernel.sources import from_path, from_stream
from collectors.sink import StdoutSink

EXT4 = "[  111.000000] EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0\n"
OOM = """[  200.000000] node invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=999
[  200.000001] CPU: 3 PID: 863987 Comm: node Not tainted 5.15.0 #1
[  200.000002] Call Trace:
[  200.000003]  dump_stack_lvl+0x45/0x5b
[  200.000004]  oom_kill_process.cold+0xb/0x10
[  200.000005] memory: usage 524288kB, limit 524288kB, failcnt 120
[  200.000006] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=cri-containerd-3fc2.scope,mems_allowed=0-1,\
oom_memcg=/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda8697f49_441d_4d4f_90d2_6d8e1fa3bbe7.slice,\
task_memcg=/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda8697f49_441d_4d4f_90d2_6d8e1fa3bbe7.slice/\
cri-containerd-3fc28fa1c647.scope,task=node,pid=863987,uid=0
[  200.000007] Memory cgroup out of memory: Killed process 863987 (node) total-vm:1000kB, anon-rss:500kB, file-rss:0kB, \
shmem-rss:0kB, UID:0 pgtables:100kB oom_score_adj:999
"""


@pytest.fixture(scope="module")
def patterns():
    return load_patterns()


def link_down(first: int, n: int) -> str:
    return "".join(f"[  {first + i}.000000] e1000e: eth{first + i} NIC Link is Down\n" for i in range(n))


def run(patterns, path, cp=None, *, max_lines=None, source_id=None):
    """One ``collect kernel --from-file PATH [--checkpoint]`` run, as the CLI wires it: its events."""
    out = io.StringIO()
    sid = source_id or f"file:{os.path.realpath(path)}"
    col = KernelCollector(Classifier(patterns, node="n1", source_id=sid, boot_time=1.7e9), StdoutSink(out),
                          checkpoint=cp, source_id=sid)
    col.resume()
    col.run(from_path(path), max_lines=max_lines)
    return [orjson.loads(ln) for ln in out.getvalue().splitlines()]


def test_a_half_written_last_line_is_read_once_finished(patterns, tmp_path):
    """The last line without its newline is the writer's, not done: a run with a checkpoint leaves it (not sent, not
    counted in the checkpoint), the next run reads it whole; a run without checkpoint does not go on: it takes it."""
    log, cp = tmp_path / "kern.log", FileCheckpoint(tmp_path / "cp.json")
    log.write_text(link_down(101, 2) + EXT4[:22])
    assert [e["reason"] for e in run(patterns, log, cp)] == ["NetLinkDown"] * 2
    assert cp.load()["pos"] == 2 and cp.load()["file"]["size"] == len(link_down(101, 2))
    with open(log, "a") as f:
        f.write(EXT4[22:] + link_down(121, 1))
    (ext4, down) = run(patterns, log, cp)
    assert (ext4["reason"], ext4["labels"]["device"], ext4["labels"]["line"]) == ("Ext4Error", "sda1", "3")
    assert ext4["message"] == EXT4.strip()[15:] and down["labels"]["line"] == "4"
    assert run(patterns, log, cp) == []

    log.write_text(link_down(101, 1) + EXT4.rstrip("\n"))  # the end of a one-shot read: the line as it is
    assert [e["labels"].get("device") for e in run(patterns, log)] == ["eth101", "sda1"]


def test_a_report_open_at_the_end_is_left_to_the_run_that_sees_it_whole(patterns, tmp_path):
    """An OOM report 3 lines in when the run ends: one event (on the Pod) once the writer wrote the rest, as one run
    over the whole file gives; a file that did not grow since has its report sent as it is by the next run."""
    log, cp = tmp_path / "kern.log", FileCheckpoint(tmp_path / "cp.json")
    head, rest = OOM.splitlines(keepends=True)[:3], OOM.splitlines(keepends=True)[3:]
    log.write_text(link_down(101, 1) + "".join(head))
    assert [e["reason"] for e in run(patterns, log, cp)] == ["NetLinkDown"]
    assert cp.load()["pos"] == 1  # before the report: the next run reads it again
    with open(log, "a") as f:
        f.writelines(rest)
    got = run(patterns, log, cp) + run(patterns, log, cp)
    whole = run(patterns, log)
    assert [(e["reason"], e["entity"]["kind"]) for e in got] == [("OOMKilling", "Pod")]
    assert got == whole[1:]

    log.write_text(link_down(101, 1) + "".join(head))  # a writer that never finishes the report
    cp.path.unlink()
    assert len(run(patterns, log, cp)) == 1
    (oom,) = run(patterns, log, cp)
    assert (oom["reason"], oom["entity"]["kind"], oom["labels"]["lines"]) == ("OOMKilling", "Node", "3")
    assert run(patterns, log, cp) == []


def test_event_ids_name_one_generation_of_a_file(patterns, tmp_path, monkeypatch):
    """Line 1 of the file logrotate or a truncation put in place of another is another line: other ids. A re-read of
    the same file (after a kill -9) gives the same ids, whatever path names it."""
    log = tmp_path / "kern.log"
    log.write_text(link_down(101, 3))
    first = [e["id"] for e in run(patterns, log)]
    assert [e["id"] for e in run(patterns, log)] == first
    monkeypatch.chdir(tmp_path)
    assert [e["id"] for e in run(patterns, "kern.log")] == first
    (tmp_path / "sub").mkdir()
    assert [e["id"] for e in run(patterns, "sub/../kern.log")] == first
    log.rename(tmp_path / "kern.log.1")
    log.write_text(link_down(101, 3).replace("Down", "Down "))
    rotated = [e["id"] for e in run(patterns, log)]
    with open(log, "r+") as f:  # copytruncate: the same inode
        f.truncate(0)
        f.write(link_down(201, 3))
    truncated = [e["id"] for e in run(patterns, log)]
    assert len(set(first + rotated + truncated)) == 9


def test_event_ids_on_stdin_come_from_the_lines(patterns, tmp_path):
    """Line numbers on stdin restart at 1 on every run: two runs with other lines give other ids, the same line
    re-sent (a writer restarted) the same id; the same line twice in one run, two ids."""

    def ids(text: str) -> list[str]:
        r, w = os.pipe()
        os.write(w, text.encode())
        os.close(w)
        out = io.StringIO()
        col = KernelCollector(Classifier(patterns, node="n1", source_id="stdin", boot_time=1.7e9),
                              StdoutSink(out), source_id="stdin")
        col.run(from_stream(r, idle=None))
        os.close(r)
        return [orjson.loads(ln)["id"] for ln in out.getvalue().splitlines()]

    a, b = ids(link_down(101, 3)), ids(link_down(201, 3))
    assert len(set(a + b)) == 6
    assert ids(link_down(102, 2)) == a[1:]
    assert len(set(ids(link_down(101, 1) * 2))) == 2


@pytest.mark.parametrize("how", ["create", "copytruncate"])
def test_a_rotated_file_is_finished_from_where_rotation_put_it(patterns, tmp_path, how):
    """kern.log read up to line 2 (then killed); 3 more lines, and logrotate: its rest is read from kern.log.1, as
    from kern.log (the same ids a re-read after the kill gives), then the new kern.log."""
    log, cp = tmp_path / "kern.log", FileCheckpoint(tmp_path / "cp.json")
    log.write_text(link_down(101, 2))
    got = run(patterns, log, cp, max_lines=2)
    with open(log, "a") as f:
        f.write(link_down(103, 3))
    reference = run(patterns, log)
    if how == "create":
        log.rename(tmp_path / "kern.log.1")
    else:
        (tmp_path / "kern.log.1").write_bytes(log.read_bytes())
        with open(log, "r+") as f:
            f.truncate(0)
    with open(log, "a") as f:
        f.write(link_down(301, 2))
    got += run(patterns, log, cp)
    assert [e["labels"]["device"] for e in got] == [f"eth{i}" for i in (101, 102, 103, 104, 105, 301, 302)]
    assert [e["id"] for e in got[:5]] == [e["id"] for e in reference]
    assert run(patterns, log, cp) == []


def test_a_rotated_file_not_found_is_reported_lost(patterns, tmp_path):
    """The previous file is gone (deleted, compressed): a KernelLogLost event says from which line it was not read."""
    log, cp = tmp_path / "kern.log", FileCheckpoint(tmp_path / "cp.json")
    log.write_text(link_down(101, 2) + "".join(OOM.splitlines(keepends=True)[:3]))
    run(patterns, log, cp)  # the report is left open: the checkpoint is at line 2
    log.unlink()
    log.write_text(link_down(301, 1))
    lost, new = run(patterns, log, cp)
    assert (lost["reason"], lost["labels"]["cause"], lost["labels"]["missed"]) == ("KernelLogLost", "rotated", "3")
    assert "its lines after line 2 were not read (3 of the 5 lines" in lost["message"]
    assert new["labels"]["device"] == "eth301" and run(patterns, log, cp) == []
