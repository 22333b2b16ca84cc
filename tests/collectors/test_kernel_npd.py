"""node-problem-detector parity: every NPD log rule has a pattern of ours, and NPD's injected problems classify right."""

from __future__ import annotations

import json
import re

import pytest

from collectors.kernel.classify import Classifier
from collectors.kernel.lines import parse_line
from collectors.kernel.patterns import load_patterns
from collectors.kernel.sources import from_path

# NPD rule reason -> our Event reason (NPD's condition reasons map to the problem they report).
NPD_TO_OURS = {
    "OOMKilling": "OOMKilling", "TaskHung": "TaskHung", "UnregisterNetDevice": "UnregisterNetDevice",
    "KernelOops": "KernelOops", "Ext4Error": "Ext4Error", "Ext4Warning": "Ext4Warning", "IOError": "IOError",
    "XfsHasShutdown": "XFSShutdown", "MemoryReadError": "EDACError", "CperHardwareErrorCorrected": "EDACError",
    "CperHardwareErrorRecoverable": "EDACError", "CperHardwareErrorFatal": "EDACError", "DockerHung": "DockerHung",
    "FilesystemIsReadOnly": "FilesystemReadOnly", "CorruptDockerOverlay2": "CorruptDockerOverlay2",
    "CorruptDockerImage": "CorruptDockerImage", "DockerContainerStartupFailure": "DockerContainerStartupFailure",
    "KubeletStart": "KubeletStart", "DockerStart": "DockerStart", "ContainerdStart": "ContainerdStart",
    "FrequentKubeletRestart": "KubeletStart", "FrequentDockerRestart": "DockerStart",
    "FrequentContainerdRestart": "ContainerdStart", "DiskBadBlock": "DiskBadBlock", "CCPPCrash": "CCPPCrash",
    "UncaughtException": "UncaughtException", "XorgCrash": "XorgCrash", "VMcore": "VMcore",
}

INJECTED = {  # NPD's kernel log generator problems -> (reason, labels that must be set)
    "oom_kill": ("OOMKilling", {"pid": "1012", "process": "heapster", "lines": "2"}),
    "docker_hung": ("DockerHung", {"process": "docker", "pid": "20744", "condition": "KernelDeadlock"}),
    "aufs_umount_hung": ("AUFSUmountHung", {"process": "umount.aufs", "pid": "21568", "seconds": "120", "lines": "19",
                                            "condition": "KernelDeadlock"}),  # older NPD configs' AUFSUmountHung rule
    "null_pointer": ("KernelOops", {"bug": "null-pointer-dereference", "address": "0000000000000078", "lines": "36"}),
    "divide_zero": ("KernelOops", {"bug": "divide-error", "lines": "36"}),
    "readonly_filesystem": ("FilesystemReadOnly", {"device": "sda1", "condition": "ReadonlyFilesystem"}),
    "unregister_netdevice": ("UnregisterNetDevice", {"device": "lo", "usage_count": "1"}),
    "au_opts_verify": (None, {}),  # aufs notice: NPD has no rule for it either
}


def npd_rules(data_dir):
    """(file, reason, Go regexp) for every NPD rule that matches log text (pattern, or log-counter --pattern)."""
    out = []
    for f in sorted((data_dir / "node-problem-detector" / "config").glob("*.json")):
        cfg = json.loads(f.read_text())
        for rule in cfg.get("rules", []):
            pats = [rule["pattern"]] if "pattern" in rule else [
                a.split("=", 1)[1] for a in rule.get("args", []) if a.startswith("--pattern=")]
            out += [(f.name, rule["reason"], p) for p in pats]
    return out


@pytest.fixture(scope="module")
def patterns():
    return load_patterns()


def test_npd_config_has_the_rules_we_expect(data_dir):
    rules = npd_rules(data_dir)
    assert len(rules) >= 35
    assert {r for _, r, _ in rules} == set(NPD_TO_OURS)


def test_every_npd_rule_has_a_pattern_that_flags_what_npd_flags(data_dir, patterns):
    """For each NPD rule: a pattern of ours declares it (npd:), and one of its examples is a message
    NPD's own regexp matches which we classify to the mapped reason."""
    problems = []
    for fname, reason, go_rx in npd_rules(data_dir):
        rx = re.compile(go_rx)  # NPD's Go RE2 patterns are valid Python regexps
        ours = [c for c in patterns.patterns if reason in c.p.npd]
        if not ours:
            problems.append(f"{fname}: {reason}: no pattern declares npd: [{reason}]")
            continue
        ok = False
        for c in ours:
            for ex in c.p.examples:
                if not rx.search(ex):
                    continue
                cl = Classifier(patterns, node="n1")
                evs = cl.feed(parse_line(ex), 1)
                evs += cl.flush()
                if [e.reason for e in evs] == [NPD_TO_OURS[reason]]:
                    ok = True
        if not ok:
            problems.append(f"{fname}: {reason} /{go_rx}/: no example both matched by NPD and classified "
                            f"{NPD_TO_OURS[reason]}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(INJECTED))
def test_npd_injected_problems_classify_right(data_dir, patterns, name):
    reason, labels = INJECTED[name]
    c = Classifier(patterns, node="n1")
    events = []
    for it in from_path(data_dir / "node-problem-detector" / "kernel_log_problems" / name):
        if it.kind == "line":
            events += c.feed(it.line, it.pos)
    events += c.flush()
    if reason is None:
        assert events == []
        return
    assert [e.reason for e in events] == [reason], "one report -> one event"
    (e,) = events
    for k, v in labels.items():
        assert e.labels.get(k) == v, (k, e.labels)
