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
