"""Pattern files: the shipped examples classify right; bad files fail at load with file, line and path."""

from __future__ import annotations

import textwrap

import pytest

from collectors.kernel.classify import Classifier
from collectors.kernel.lines import parse_line
from collectors.kernel.patterns import load_patterns
from core.yamlconfig import ConfigError

# The reasons other components (the default rule pack) match on: they must exist.
REQUIRED = {"OOMKilling", "TaskHung", "SoftLockup", "HardLockup", "RCUStall", "KernelOops", "KernelPanic",
            "KernelWarning", "UnregisterNetDevice", "Ext4Error", "Ext4Warning", "XFSShutdown", "FilesystemReadOnly",
            "IOError", "NetLinkDown", "NetdevTxTimeout", "MCE", "EDACError", "NvidiaXid", "ConntrackFull",
            "DockerHung", "CorruptDockerOverlay2"}


@pytest.fixture(scope="module")
def patterns():
    return load_patterns()


def classify(patterns, text: str):
    c = Classifier(patterns, node="n1")
    evs = [e for i, raw in enumerate(text.splitlines(), 1) for e in c.feed(parse_line(raw), i)]
    return evs + c.flush()


def test_required_reasons_exist(patterns):
    assert REQUIRED <= patterns.reasons()


def test_every_shipped_example_classifies_to_its_reason(patterns):
    wrong = []
    for c in patterns.patterns:
        for ex in c.p.examples:
            evs = classify(patterns, ex)
            got = [e.reason for e in evs]
            if got != [c.reason]:
                wrong.append(f"{c.p.id}: {ex!r} -> {got}")
    assert not wrong, "\n".join(wrong)


def test_every_event_has_the_node_entity_and_a_family(patterns):
    for c in patterns.patterns:
        (e,) = classify(patterns, c.p.examples[0])
        assert e.source == "kernel" and e.entity.node == "n1" and e.labels["family"], c.p.id
        assert e.severity in ("critical", "warning", "info")


def test_ignored_look_alikes_yield_nothing(patterns):
    assert classify(patterns, "WARNING: the mand mount option is being deprecated and") == []
    assert classify(patterns, "IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready") == []
    assert classify(patterns, "ata3: SATA link down (SStatus 0 SControl 300)") == []


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_invalid_file_lists_every_error_with_file_line_and_path(tmp_path):
    p = write(tmp_path, "bad.yaml", """\
        version: 1
        patterns:
          - id: ok-one
            reason: Fine
            severity: warning
            match: 'fine'
            examples: ['fine']
          - id: broken-regex
            reason: Broken
            severity: warning
            match: 'unbalanced ('
            examples: ['x']
          - id: bad-severity
            reason: Sev
            severity: urgent
            match: 'sev'
            examples: ['sev']
          - id: extra-field
            reason: Extra
            severity: info
            match: 'extra'
            examples: ['extra']
            colour: red
        """)
    with pytest.raises(ConfigError) as exc:
        load_patterns(p)
    msg = str(exc.value)
    assert f"{p}:11: patterns[1].match: invalid regular expression 'unbalanced ('" in msg
    assert f"{p}:15: patterns[2].severity:" in msg
    assert f'{p}:23: patterns[3].colour: unknown key "colour" (expected one of: continue, enrich, examples, id, ' \
        "idents, labels, match, max_lines, merge, npd, reason, report, severity, type, until)" in msg


@pytest.mark.parametrize("body, expected", [
    ("""\
     version: 1
     patterns:
       - {id: a, reason: A, severity: info, match: 'a', examples: ['b']}
     """, ":3: patterns[0].examples[0]: example does not match this pattern's 'match': \"b\""),
    ("""\
     version: 1
     patterns:
       - {id: a, reason: A, severity: info, match: 'a', examples: ['a']}
       - {id: a, reason: A, severity: info, match: 'a', examples: ['a']}
     """, ':4: patterns[1].id: duplicate id "a" (first at patterns[0])'),
    ("""\
     version: 1
     patterns:
       - {id: a, reason: A, severity: info, match: 'a', until: 'b', examples: ['a']}
     """, "patterns[0].until: only a report (report: true) has an end line"),
    ("""\
     version: 1
     patterns:
       - {id: a, reason: not_camel, severity: info, match: 'a', examples: ['a']}
     """, ":3: patterns[0].reason: reason 'not_camel' must be CamelCase"),
    ("""\
     version: 1
     patterns:
       - {id: a, reason: A, severity: info, match: '(?P<BadName>a)', examples: ['a']}
     """, "group name 'BadName' must be lower_snake_case"),
    ("""\
     version: 1
     patterns:
       - {id: a, reason: A, severity: info, match: 'a'}
     """, ":3: patterns[0].examples: required key missing"),
    ("""\
     version: 1
     replace:
       - {id: no-such-id, reason: A, severity: info, match: 'a', examples: ['a']}
     """, ':3: replace[0].id: no earlier pattern has id "no-such-id"'),
    ("""\
     version: 1
     patterns:
       - {id: task-hung, reason: A, severity: info, match: 'a', examples: ['a']}
     """, ':3: patterns[0].id: id "task-hung" already exists (use \'replace:\' to change it)'),
    ("version: 2\n", ":1: version: expected 1, got 2"),
    ("version: 1\npatterns: [\n", ":3: YAML syntax error: did not find expected node content"),
])
def test_each_validation_rule_names_the_problem(tmp_path, body, expected):
    p = write(tmp_path, "p.yaml", body)
    with pytest.raises(ConfigError) as exc:
        load_patterns(p)
    assert expected in str(exc.value)


def test_a_user_file_extends_and_replaces_the_shipped_patterns(tmp_path):
    p = write(tmp_path, "site.yaml", """\
        version: 1
        ignore:
          - 'unregister_netdevice: waiting for lo '
        xid:
          fatal: [13]
        patterns:
          - id: site-raid
            reason: RaidDegraded
            severity: critical
            match: 'md/raid\\d+:(?P<array>md\\d+): Disk failure on (?P<device>[^,\\s]+)'
            labels: {family: storage}
            examples: ['md/raid1:md0: Disk failure on sdb1, disabling device.']
        replace:
          - id: conntrack-full
            reason: ConntrackFull
            severity: warning
            match: 'nf_conntrack: table full'
            labels: {family: network, site: 'yes'}
            examples: ['nf_conntrack: table full, dropping packet']
        """)
    ps = load_patterns(p)
    (raid,) = classify(ps, "md/raid1:md0: Disk failure on sdb1, disabling device.")
    assert (raid.reason, raid.labels["array"], raid.labels["device"]) == ("RaidDegraded", "md0", "sdb1")
    (ct,) = classify(ps, "nf_conntrack: table full, dropping packet")
    assert (ct.severity, ct.labels["site"]) == ("warning", "yes")
    assert classify(ps, "unregister_netdevice: waiting for lo to become free. Usage count = 1") == []
    (xid,) = classify(ps, "NVRM: Xid (PCI:0000:38:00): 13, pid=1, name=x, Graphics Exception")
    assert (xid.labels["xid_class"], xid.severity) == ("fatal", "critical")


def test_a_pattern_with_its_own_flags_works_beside_the_others(tmp_path):
    """``(?i)`` passed each pattern's own check, then failed the combined pre-filter (global flags not at the start)
    with a raw re.error out of `kubesight collect kernel`."""
    p = write(tmp_path, "site.yaml", """\
        version: 1
        ignore: ['(?i)noise from the bmc']
        patterns:
          - id: site-gpu
            reason: GpuFellOff
            severity: critical
            match: '(?i)gpu has fallen off the bus'
            labels: {family: gpu}
            examples: ['GPU has fallen off the bus.']
        """)
    ps = load_patterns(p)
    assert [e.reason for e in classify(ps, "gpu HAS fallen off the bus")] == ["GpuFellOff"]
    assert classify(ps, "NOISE from the BMC: gpu has fallen off the bus") == []


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_patterns(tmp_path / "nope.yaml")


def test_hardware_and_network_reports(patterns):
    text = """\
[ 100.1] {1}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 0
[ 100.1] {1}[Hardware Error]: event severity: fatal
[ 100.1] {1}[Hardware Error]:  Error 0, type: fatal
[ 100.1] {1}[Hardware Error]:   section_type: memory error
[ 100.2] EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0_Chan#1_DIMM#0 (channel:1 slot:0 page:0x8a2c)
[ 101.0] NETDEV WATCHDOG: eth0 (ixgbe): transmit queue 3 timed out
[ 101.0] WARNING: CPU: 2 PID: 0 at net/sched/sch_generic.c:477 dev_watchdog+0x2b0/0x2c0
[ 101.0] Call Trace:
[ 101.0] ---[ end trace 1234 ]---
[ 104.0] watchdog: Watchdog detected hard LOCKUP on cpu 5"""
    evs = classify(patterns, text)
    got = [(e.reason, e.severity, e.labels["lines"]) for e in evs]
    assert got == [("EDACError", "critical", "4"), ("EDACError", "info", "1"), ("NetdevTxTimeout", "warning", "4"),
                   ("HardLockup", "critical", "1")]
    assert (evs[0].labels["cper_severity"], evs[0].labels["condition"]) == ("fatal", "CperHardwareErrorFatal")
    assert evs[1].labels["cper_severity"] == "corrected"
    assert (evs[2].labels["device"], evs[2].labels["driver"], evs[2].labels["queue"]) == ("eth0", "ixgbe", "3")


def test_lines_of_other_programs_only_meet_patterns_that_name_them(patterns):
    """/var/log/messages or a journal export mixes programs: a userland "WARNING:" is not a kernel warning,
    and dockerd/systemd/smartd lines meet only the patterns that read them (NPD's journald sources)."""
    text = """\
Nov 10 14:17:41 n1 kernel: [ 12.000000] WARNING: CPU: 0 PID: 1 at kernel/x.c:1 f+0x1/0x2
Nov 10 14:17:41 n1 myapp[77]: WARNING: CPU: 0 PID: 1 at kernel/x.c:1 f+0x1/0x2
Nov 10 14:17:42 n1 kernel: [ 12.100000] ---[ end trace 0 ]---
Nov 10 14:17:43 n1 systemd[1]: Started Kubernetes kubelet.
Nov 10 14:17:43 n1 kernel: Started Kubernetes kubelet.
Nov 10 14:17:44 n1 dockerd[900]: time="x" level=error msg="Handler for GET /containers/json returned error: readlink /var/lib/docker/overlay2/l: invalid argument"
Nov 10 14:17:45 n1 smartd[812]: Device: /dev/sda [SAT], 120 Currently unreadable (pending) sectors"""
    c = Classifier(patterns, node="n1")
    evs = [e for i, raw in enumerate(text.splitlines(), 1) for e in c.feed(parse_line(raw, year=2025), i)]
    evs += c.flush()
    assert [(e.reason, e.labels["lines"]) for e in evs] == [
        ("KernelWarning", "2"), ("KubeletStart", "1"), ("CorruptDockerOverlay2", "1"), ("DiskBadBlock", "1")]
    assert evs[1].type == "Normal" and evs[1].severity == "info"


def test_linux_6_10_oopses_name_their_trap_after_oops(patterns):
    """Since Linux 6.10 die() prints "Oops: <trap>: <code> [#n]"; the trap's own pattern still reads it."""
    text = """\
[ 29.672319] Oops: general protection fault, probably for non-canonical address 0xffff88909a3be3: 0000 [#1] PREEMPT SMP NOPTI
[ 29.675503] CPU: 82 UID: 0 PID: 5145 Comm: tar Kdump: loaded Not tainted 6.13.0 #917
[ 29.679004] ---[ end trace 0000000000000000 ]---
[566.393619] Oops: divide error: 0000 [#1] PREEMPT SMP NOPTI
[566.393900] ---[ end trace 0000000000000000 ]---
[600.000000] Oops: invalid opcode: 0000 [#1] PREEMPT SMP NOPTI
[600.000100] ---[ end trace 0000000000000000 ]---
[700.000000] Oops: Oops: 0002 [#1] PREEMPT SMP NOPTI
[700.000100] ---[ end trace 0000000000000000 ]---"""
    evs = classify(patterns, text)
    assert [(e.reason, e.labels["bug"], e.labels["lines"]) for e in evs] == [
        ("KernelOops", "general-protection-fault", "3"), ("KernelOops", "divide-error", "2"),
        ("KernelOops", "general-protection-fault", "2"), ("KernelOops", "oops", "2")]
    assert evs[0].labels["address"] == "0xffff88909a3be3" and evs[3].labels["code"] == "0002"


POD_MEMCG = ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda8697f49_441d_4d4f_90d2_6d8e1fa3bbe7.slice/"
             "cri-containerd-3fc28fa1c647ceede9f6b340d0b16c9f1f663698972d22a52e296f291638e014.scope")


def global_oom(tasks: int) -> str:
    """A node-wide OOM report as a 5.15 kernel prints it, with `tasks` lines of task dump."""
    lines = ["containerd-shim invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, "
             "oom_score_adj=-998",
             "CPU: 5 PID: 2311 Comm: containerd-shim Not tainted 5.15.0-112-generic #122-Ubuntu",
             "Call Trace:", " <TASK>", " dump_stack_lvl+0x4a/0x63", " </TASK>", "Mem-Info:",
             "Tasks state (memory values in pages):",
             "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name"]
    lines += [f"[{1000 + i:7d}]     0 {1000 + i:5d}   182436     3120   237568        0          -999 pause"
              for i in range(tasks)]
    lines += ["oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,"
              f"task_memcg={POD_MEMCG},task=java,pid=863987,uid=0",
              "Out of memory: Killed process 863987 (java) total-vm:31461480kB, anon-rss:30521112kB, "
              "file-rss:40952kB, shmem-rss:0kB, UID:0 pgtables:61456kB oom_score_adj:999"]
    return "\n".join(f"[ 8123.400000] {x}" for x in lines)


def test_a_global_oom_kill_is_attributed_to_the_pod(patterns):
    """The summary of a node-wide OOM says ",global_oom" where a cgroup OOM says ",oom_memcg=...": the task's
    cgroup after it still names the pod."""
    (e,) = classify(patterns, global_oom(3))
    assert (e.reason, e.entity.kind, e.entity.uid, e.labels["pid"], e.labels["process"]) == (
        "OOMKilling", "Pod", "a8697f49-441d-4d4f-90d2-6d8e1fa3bbe7", "863987", "java")
    assert e.labels["constraint"] == "CONSTRAINT_NONE" and e.labels["container_id"].startswith("3fc28fa1c647")


def test_an_oom_dump_of_thousands_of_tasks_is_still_one_kill_and_its_text_is_bounded(patterns):
    """A task dump longer than the report's line cap split one kill into two events, the first without pid or pod."""
    (e,) = classify(patterns, global_oom(3000))
    assert (e.labels["lines"], e.labels["pid"], e.entity.uid) == ("3011", "863987", "a8697f49-441d-4d4f-90d2-6d8e1fa3bbe7")
    limit = patterns.defaults.max_message
    assert len(e.message) < limit + 100 and e.message.endswith("more characters)")
    assert e.message[:limit] == global_oom(3000).replace("[ 8123.400000] ", "")[:limit]


def test_ext4_rate_limit_summaries_are_not_errors(patterns):
    """lib/ratelimit.c prints "EXT4-fs error: N callbacks suppressed": no device, no error of its own (NPD skips it)."""
    assert classify(patterns, "EXT4-fs error: 6 callbacks suppressed") == []
    assert classify(patterns, "EXT4-fs warning: 3 callbacks suppressed") == []
    (e,) = classify(patterns, "EXT4-fs error (device loop5): __ext4_find_entry:1626: inode #5173: comm fsstress: "
                              "checksumming directory block 0")
    assert (e.reason, e.labels["device"]) == ("Ext4Error", "loop5")


def test_corrected_machine_checks_are_not_critical(patterns):
    """Without " Exception" __print_mce reports a polled/CMCI (corrected) record; "events logged" is pr_info."""
    got = [(e.severity, e.labels.get("cper_severity")) for line in (
        "<6>[ 9123.000001] mce: [Hardware Error]: Machine check events logged",
        "<0>[ 9123.000000] mce: [Hardware Error]: CPU 0: Machine Check: 0 Bank 7: 8c00004000010090",
        "[ 9124.0] mce: [Hardware Error]: CPU 3: Machine Check Exception: 5 Bank 4: be00000000800400",
        "[ 9125.0] mce: [Hardware Error]: Machine check: Processor context corrupt") for e in classify(patterns, line)]
    assert got == [("info", "corrected"), ("warning", "corrected"), ("critical", None), ("critical", None)]


def test_xid_154_severity_follows_the_recovery_action_it_names(patterns):
    def xid(action):
        (e,) = classify(patterns, f"[Sun Feb 23 16:40:00 2025] NVRM: Xid (PCI:0000:9b:00): 154, GPU recovery action "
                                  f"changed from 0x0 (None) to {action}")
        return e.severity, e.labels["xid_class"], e.labels["xid_recovery_action"]

    assert xid("0x2 (Node Reboot Required)") == ("critical", "fatal", "Node Reboot Required")
    assert xid("0x1 (GPU Reset Required)")[:2] == ("critical", "fatal")
    assert xid("0x4 (Drain and Reset)")[:2] == ("critical", "fatal")
    assert xid("0x0 (None)") == ("info", "informational", "None")


def test_an_oom_kill_summary_names_its_task_only_when_the_line_has_one(patterns):
    """The oom-kill:constraint line's task= is the killed process; a line cut before it (gpud's dmesg
    testdata) names none, and the default pack's NodeOOMKill summary must read without it."""
    (named,) = classify(patterns, "[ 1.0] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,"
                                  "mems_allowed=0,oom_memcg=/x,task_memcg=/x/y,task=java,pid=4242,uid=0")
    assert (named.labels["process"], named.labels["pid"]) == ("java", "4242")
    (cut,) = classify(patterns, "[ 1.0] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),")
    assert cut.reason == "OOMKilling" and "process" not in cut.labels
    (merged,) = classify(patterns, "[ 1.0] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),\n"
                                   "[ 1.0] Memory cgroup out of memory: Killed process 123 (httpd) total-vm:1kB, "
                                   "anon-rss:1kB, file-rss:1kB, shmem-rss:0kB")
    assert (merged.labels["process"], merged.labels["lines"]) == ("httpd", "2")
