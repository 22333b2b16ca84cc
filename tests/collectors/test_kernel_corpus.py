"""Accuracy on real kernel logs: syzkaller's labelled crash reports and GPUd's GPU/OOM/pstore captures."""

from __future__ import annotations

from collections import Counter

import pytest

from collectors.kernel.accuracy import classify_lines, score
from collectors.kernel.classify import Classifier
from collectors.kernel.patterns import load_patterns
from collectors.kernel.sources import from_path


@pytest.fixture(scope="module")
def patterns():
    return load_patterns()


def events_of(patterns, path, **kw):
    c = Classifier(patterns, node="gpu-7", cluster="prod", **kw)
    out = []
    for it in from_path(path, year=2025):
        assert it.kind in ("line", "file"), it
        if it.kind == "line":
            out += c.feed(it.line, it.pos)
    return out + c.flush()


def test_syzkaller_accuracy_at_least_95_percent(data_dir, patterns):
    results, nlines, _ = score(patterns, data_dir / "syzkaller-kernel-reports")
    assert len(results) == 249 and nlines > 15000
    accuracy = sum(r.ok for r in results) / len(results)
    misses = [f"{r.file}: {r.type} {r.title!r} -> {r.got or 'none'}" for r in results if not r.ok]
    print(f"syzkaller accuracy {accuracy:.1%}; misses:\n" + "\n".join(misses))
    assert accuracy >= 0.95, "\n".join(misses)


def test_syzkaller_clean_logs_yield_no_event_at_all(data_dir, patterns):
    results, _, _ = score(patterns, data_dir / "syzkaller-kernel-reports")
    clean = [r for r in results if not r.title]
    assert len(clean) == 11
    assert [(r.file, r.events) for r in clean if r.events] == []


def test_syzkaller_hangs_are_hang_events(data_dir, patterns):
    results, _, _ = score(patterns, data_dir / "syzkaller-kernel-reports")
    hangs = Counter(r.got for r in results if r.type == "HANG")
    assert set(hangs) <= {"RCUStall", "TaskHung", "SoftLockup"} and hangs["TaskHung"] >= 10 and hangs["RCUStall"] >= 25


def test_an_oops_with_its_call_trace_is_one_event(data_dir, patterns):
    (e,) = events_of(patterns, data_dir / "gpud-testdata" / "pstore" / "dmesg-erst.txt", boot_time=1_700_000_000.0)
    assert e.reason == "KernelOops" and e.labels["bug"] == "null-pointer-dereference"
    assert int(e.labels["lines"]) > 30 and "Call Trace:" in e.message and e.message.endswith("]---")
    assert e.time == pytest.approx(1_700_000_201.654822)
    assert (e.entity.kind, e.entity.name, e.entity.node, e.entity.cluster) == ("Node", "gpu-7", "gpu-7", "prod")


def test_pstore_panic_record(data_dir, patterns):
    evs = events_of(patterns, data_dir / "gpud-testdata" / "pstore" / "7530486857247" / "dmesg.txt")
    (panic,) = [e for e in evs if e.reason == "KernelPanic"]
    assert panic.labels["cause"] == "Test panic triggered by crash_test module"
    assert "Call Trace:" in panic.message
    assert not [e for e in evs if e.reason == "NetLinkDown"], "SATA link down is not a NIC"


def test_xid_bursts_get_catalogue_labels(data_dir, patterns):
    evs = events_of(patterns, data_dir / "gpud-testdata" / "memory" / "dmesg.decode.iso.log")
    xids = Counter(e.labels["xid"] for e in evs if e.reason == "NvidiaXid")
    assert xids == {"13": 16, "43": 1}
    x13 = next(e for e in evs if e.labels.get("xid") == "13")
    assert x13.labels["xid_description"] == "Graphics Engine Exception"
    assert (x13.labels["xid_action"], x13.labels["xid_class"], x13.severity) == ("RESTART_APP", "application", "warning")
    assert x13.labels["pci"] == "PCI:0000:38:00"


def test_xid_119_report_keeps_its_gsp_dump_and_stack(data_dir, patterns):
    evs = events_of(patterns, data_dir / "gpud-testdata" / "xid" / "dmesg-with-xid-119.log")
    assert Counter(e.reason for e in evs) == {"NvidiaXid": 5}, "the stack's 'WARNING: kernel stack' line stays in the Xid"
    first = evs[0]
    assert (first.labels["xid"], first.labels["xid_mnemonic"], first.labels["xid_fatal"], first.severity) == (
        "119", "GSP_RPC_TIMEOUT", "true", "critical")
    assert first.labels["process"] == "nvidia-smi" and int(first.labels["lines"]) > 20
    assert "RPC history" in first.message and "</TASK>" in first.message


def test_which_xid_codes_are_fatal_is_configurable(data_dir):
    ps = load_patterns(xid_fatal=[13])
    evs = events_of(ps, data_dir / "gpud-testdata" / "memory" / "dmesg.decode.iso.log")
    x13 = next(e for e in evs if e.labels.get("xid") == "13")
    assert (x13.labels["xid_class"], x13.labels["xid_fatal"], x13.severity) == ("fatal", "true", "critical")
    ps = load_patterns(xid_fatal=[])
    evs = events_of(ps, data_dir / "gpud-testdata" / "xid" / "dmesg-with-xid-119.log")
    assert {e.labels["xid_fatal"] for e in evs} == {"false"}


def test_cgroup_oom_in_four_kernel_formats(data_dir, patterns):
    evs = [e for e in events_of(patterns, data_dir / "gpud-testdata" / "memory" / "dmesg.decode.iso.log")
           if e.reason == "OOMKilling"]
    got = [(e.labels.get("process"), e.labels.get("pid"), e.labels.get("constraint")) for e in evs]
    assert got == [(None, None, "CONSTRAINT_MEMCG"), ("httpd", "123", None), ("python", "456", None),
                   ("httpd", "123", None), ("node", "863987", "CONSTRAINT_MEMCG"), (None, None, "OTHER_CONSTRAINT")]
    pod = evs[4]
    assert (pod.entity.kind, pod.entity.uid, pod.entity.node) == ("Pod", "a8697f49-441d-4d4f-90d2-6d8e1fa3bbe7", "gpu-7")
    assert pod.labels["container_id"] == "3fc28fa1c647ceede9f6b340d0b16c9f1f663698972d22a52e296f291638e014"
    assert (pod.labels["container_runtime"], pod.labels["qos_class"]) == ("cri-containerd", "burstable")


def test_full_oom_report_is_one_event_with_memcg(patterns):
    text = """\
[ 5000.000001] node invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=999
[ 5000.000002] CPU: 3 PID: 863987 Comm: node Not tainted 5.15.0 #1
[ 5000.000003] memory: usage 524288kB, limit 524288kB, failcnt 93
[ 5000.000004] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=x,mems_allowed=0,oom_memcg=/kubepods/burstable/pod0b3f2e1c-9d8a-4a5b-8c7d-1e2f3a4b5c6d,task_memcg=/kubepods/burstable/pod0b3f2e1c-9d8a-4a5b-8c7d-1e2f3a4b5c6d/4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0,task=node,pid=863987,uid=0
[ 5000.000005] Memory cgroup out of memory: Killed process 863987 (node) total-vm:1461480kB, anon-rss:521112kB, file-rss:40952kB, shmem-rss:0kB, UID:0 pgtables:1456kB oom_score_adj:999
[ 5000.000006] oom_reaper: reaped process 863987 (node), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB"""
    (e,) = classify_lines(patterns, text.splitlines())
    assert (e.reason, e.labels["lines"], e.labels["invoker"], e.labels["process"], e.labels["anon_rss_kb"]) == (
        "OOMKilling", "5", "node", "node", "521112")
    assert e.entity.uid == "0b3f2e1c-9d8a-4a5b-8c7d-1e2f3a4b5c6d"
    assert e.labels["container_id"].startswith("4f1e2d3c")


def test_raw_kmsg_and_other_gpud_captures(data_dir, patterns):
    peer = events_of(patterns, data_dir / "gpud-testdata" / "kmsg" / "kmsg.2.peermem.log")
    assert Counter(e.reason for e in peer)["NvidiaPeermemError"] == 7
    assert peer[0].labels["seq"] == "3973"
    assert events_of(patterns, data_dir / "gpud-testdata" / "kmsg" / "kmsg.1.log") == []
    seg = events_of(patterns, data_dir / "gpud-testdata" / "nccl" / "dmesg.decode.iso.log")
    assert [(e.reason, e.labels["object"]) for e in seg] == [("ProcessSegfault", "libnccl.so.2")] * 2
    fm = events_of(patterns, data_dir / "gpud-testdata" / "os" / "dmesg.decode.iso.log")
    assert [e.reason for e in fm] == ["FileMaxReached"] * 2


def test_interleaved_callers_keep_their_reports_apart(patterns):
    text = """\
[  100.000001][ T5001] INFO: task kworker/u4:2:5001 blocked for more than 143 seconds.
[  100.000002][  T900] WARNING: CPU: 1 PID: 900 at net/core/dev.c:8210 free_netdev+0x2ad/0x370
[  100.000003][ T5001]       Not tainted 5.10.0 #1
[  100.000004][  T900] Modules linked in:
[  100.000005][ T5001] Call Trace:
[  100.000006][  T900] Call Trace:
[  100.000007][  T900] ---[ end trace 0000000000000000 ]---"""
    evs = classify_lines(patterns, text.splitlines())
    assert [(e.reason, e.labels["caller"], e.labels["lines"]) for e in evs] == [
        ("TaskHung", "T5001", "3"), ("KernelWarning", "T900", "4")]


def test_event_ids_are_stable_across_reads(data_dir, patterns):
    path = data_dir / "gpud-testdata" / "xid" / "dmesg-with-xid-119.log"
    a = [e.id for e in events_of(patterns, path, source_id="x")]
    b = [e.id for e in events_of(patterns, path, source_id="x")]
    assert a == b and len(set(a)) == len(a)
