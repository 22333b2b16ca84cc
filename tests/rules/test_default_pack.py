"""The default pack: it validates, its own test cases pass through ``kubesight rules test``, every rule
has a firing and a non-firing case, it covers node-problem-detector, and it makes the demo's alerts."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import yaml

from kubesight.cli import main
from rules.engine import Engine
from rules.load import DEFAULT_PACK, load_packs

TESTS = DEFAULT_PACK / "tests"


def test_check_passes_and_the_pack_is_big_enough(capsys):
    assert main(["rules", "check", str(DEFAULT_PACK)]) == 0
    out = capsys.readouterr().out
    rs = load_packs([DEFAULT_PACK])
    assert len(rs) >= 60
    assert f"{len(rs)} rules" in out
    assert {p.name for p in rs.packs} == {"control-plane", "nodes", "kernel", "gpu", "workloads", "storage", "cloud", "resources",
                                         "audit"}
    for r in rs.rules:  # the README table is generated from these
        assert r.annotations.get("summary") and r.annotations.get("description"), r.alert


def test_every_anomaly_summary_says_what_was_expected_and_since_when():
    """A score alone tells the reader nothing (KubeAPIRequestRateAnomaly said only "unusual apiserver request rate
    400/s (score 0.5148)"): every anomaly rule says the range the value was expected in, its score and since when;
    where every feature is a ratio the value and the range are percentages ("20.0%, expected 57.0%-75.8%", not a
    bare 0.2 against 0.57-0.7579)."""
    rules = [r for r in load_packs([DEFAULT_PACK]).rules if r.cond.type in ("anomaly", "anomaly_vector")]
    assert len(rules) >= 5
    for r in rules:
        text = r.annotations["summary"].text
        for name in ("expected_low", "expected_high", "score", "since"):
            assert re.search(r"\{\{\s*" + name + r"\s*(?:\|\s*[a-z]+\s*)?\}\}", text), (r.alert, name)
        if all(m.endswith(("_ratio", "_utilisation")) for m in r.metrics):
            for name in ("value", "expected_low", "expected_high"):
                assert re.search(r"\{\{\s*" + name + r"\s*\|\s*percent\s*\}\}", text), (r.alert, name)


def test_own_test_cases_pass_through_the_cli(capsys):
    assert main(["rules", "test", str(TESTS)]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out


def test_every_rule_has_a_firing_and_a_non_firing_case():
    firing: Counter = Counter()
    quiet: Counter = Counter()
    for f in sorted(TESTS.glob("*.yaml")):
        for case in yaml.safe_load(f.read_text())["tests"]:
            names = {c["alertname"] for c in case["alert_rule_test"]}
            for name in names:
                checks = [c for c in case["alert_rule_test"] if c["alertname"] == name]
                if any(e.get("status", "firing") == "firing" for c in checks for e in c.get("exp_alerts") or []):
                    firing[name] += 1
                elif all(not c.get("exp_alerts") for c in checks):
                    quiet[name] += 1
    alerts = {r.alert for r in load_packs([DEFAULT_PACK]).rules}
    assert {a for a in alerts if not firing[a]} == set()
    assert {a for a in alerts if not quiet[a]} == set()


def test_a_wrong_expectation_fails_with_a_readable_diff(tmp_path, capsys):
    case = {
        "rule_files": [str(DEFAULT_PACK / "workloads.yaml")],
        "tests": [{
            "name": "wrong owner",
            "input_events": [{"at": "0s", "source": "k8s", "reason": "BackOff",
                              "entity": {"namespace": "shop", "kind": "Pod", "name": "p", "owner": "team-a"}}],
            "alert_rule_test": [{"eval_time": "1m", "alertname": "KubeContainerBackOff", "exp_alerts": [
                {"labels": {"alertname": "KubeContainerBackOff", "severity": "warning", "cluster": "default",
                            "namespace": "shop", "pod": "p", "owner": "team-b"}}]}],
        }],
    }
    f = tmp_path / "case.yaml"
    f.write_text(json.dumps(case))
    assert main(["rules", "test", str(f)]) == 1
    err = capsys.readouterr().err
    assert f'FAILED {f}:1: test "wrong owner": alertname KubeContainerBackOff at 1m:' in err
    assert '    expected firing {alertname="KubeContainerBackOff", cluster="default", namespace="shop", owner="team-b", pod="p", severity="warning"}' in err
    assert '    got      firing {alertname="KubeContainerBackOff", cluster="default", namespace="shop", owner="team-a", pod="p", severity="warning"}' in err


def test_check_lists_every_error_and_exits_1(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text((DEFAULT_PACK / "cloud.yaml").read_text().replace("window: 15m", "window: 15 min")
                   .replace("severity: info", "severity: low"))
    assert main(["rules", "check", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "2 error(s)"
    assert err[0].startswith(f"{bad}:") and 'invalid duration "15 min"' in err[0]
    assert sum('invalid severity "low"' in e for e in err) == 1


def test_covers_every_node_problem_detector_reason(data_dir):
    """Every reason that NPD's kernel, readonly, docker, disk, systemd and custom monitors emit reaches a rule."""
    rs = load_packs([DEFAULT_PACK])
    reasons = set()
    for f in sorted((data_dir / "node-problem-detector" / "config").glob("*.json")):
        doc = json.loads(f.read_text())
        for r in doc.get("rules") or ():
            if f.name.startswith(("abrt", "system-stats")) or r.get("reason") in ("CCPPCrash", "UncaughtException", "XorgCrash"):
                continue  # desktop crash reporters, not node problems
            reasons.add(r["reason"])
            if r.get("condition"):
                reasons.add(r["condition"])
    # permanent conditions are reported by their reason; these names are conditions or counters of events we count
    covered = {reason for (source, reason) in rs.by_event if source in ("k8s", "kernel")}
    conditions_by_rule = {"KernelDeadlock", "XfsShutdown", "ReadonlyFilesystem", "CperHardwareErrorFatal",
                          "FrequentUnregisterNetDevice", "FrequentKubeletRestart", "FrequentDockerRestart",
                          "FrequentContainerdRestart", "NTPProblem", "CorruptDockerOverlay2", "DiskBadBlock"}
    assert sorted(reasons - covered - conditions_by_rule) == []
    alerts = {r.alert for r in rs.rules}
    for a in ("NodeKernelDeadlock", "NodeXFSShutdown", "NodeFilesystemReadOnly", "NodeHardwareErrorFatal",
              "NodeFrequentUnregisterNetDevice", "NodeFrequentKubeletRestart", "NodeFrequentContainerRuntimeRestart",
              "NodeNTPDown", "NodeCorruptDockerOverlay2", "NodeDiskBadBlocks"):
        assert a in alerts


def test_kernel_collector_reasons_reach_a_rule():
    """The reasons the kernel collector's default patterns emit are all handled (except process-level noise)."""
    patterns = yaml.safe_load((Path(__file__).resolve().parents[2] / "collectors" / "kernel" / "patterns.yaml").read_text())
    emitted = {p["reason"] for p in patterns["patterns"]}
    rs = load_packs([DEFAULT_PACK])
    handled = {reason for (source, reason) in rs.by_event if source == "kernel"}
    ignored = {"ProcessSegfault", "CCPPCrash", "UncaughtException", "XorgCrash", "NvidiaPeermemError"}
    assert sorted(emitted - handled - ignored) == []


def test_recorded_events_give_the_demo_its_alerts(data_dir):
    from rules.bench import must_gather_events

    eng = Engine(load_packs([DEFAULT_PACK]))
    state: dict = {}
    alerts = []
    for e in must_gather_events(data_dir):
        alerts += eng.process(e, state, e.time)
        alerts += eng.tick(e.time, state)
    firing = Counter(a.labels["alertname"] for a in alerts if a.status == "firing")
    # the skeleton's four reasons (BackOff, FailedScheduling, FailedMount, Unhealthy) now come from the pack
    assert {"KubeContainerBackOff", "KubePodFailedScheduling", "KubePodFailedMount", "KubePodProbeFailing"} <= set(firing)
    assert firing["KubeContainerBackOff"] == 16  # one per backing-off pod of the recording
    assert all(a.source.startswith(("workloads/", "storage/", "control-plane/")) and "@1.0.0" in a.source for a in alerts)


def test_signals_md_names_every_reason_and_metric():
    from rules.cli import signals_tables

    text = (DEFAULT_PACK / "SIGNALS.md").read_text()
    assert signals_tables(load_packs([DEFAULT_PACK])) in text, "regenerate: kubesight rules signals"


def test_rules_list_prints_the_readme_table(capsys):
    assert main(["rules", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| rule | pack | what | severity | why | on the node (`kubesight remediate`) |"
    rows = [ln for ln in lines[2:] if ln.startswith("| ")]
    assert len(rows) == len(load_packs([DEFAULT_PACK]))
    assert any(r.startswith("| KubeNodeNotReady | nodes | node {{ labels.node }} is NotReady | critical | ") for r in rows)


def test_a_malformed_test_file_is_reported_with_file_line_and_path(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text(f"rule_files: [{DEFAULT_PACK / 'workloads.yaml'}]\ntests:\n  - name: x\n    input_event: []\n"
                 "    alert_rule_test: [{eval_time: 1 min, alertname: KubePodEvicted}]\n")
    assert main(["rules", "test", str(f)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f'FAILED {f}:4: tests[0].input_event: unknown key "input_event" (did you mean "input_events"?)',
        f'FAILED {f}:5: tests[0].alert_rule_test[0].eval_time: invalid duration "1 min" (use e.g. 30s, 5m, 1h30m)',
    ]


def test_rules_md_is_the_current_table(capsys):
    assert main(["rules", "list"]) == 0
    table = capsys.readouterr().out
    assert table in (DEFAULT_PACK / "RULES.md").read_text(), "regenerate: kubesight rules list"


def test_rules_list_and_signals_read_the_packs_of_the_settings(tmp_path, capsys, monkeypatch):
    """Without paths, `rules list` and `rules signals` show what a worker with --config would evaluate."""
    monkeypatch.delenv("KUBESIGHT_CONFIG", raising=False)
    pack = tmp_path / "mine.yaml"
    pack.write_text("apiVersion: kubesight.io/v1\nkind: RulePack\nmetadata: {name: mine, version: '1'}\nrules:\n"
                    "  - alert: MyPodCrash\n    match: {source: k8s, reason: BackOff}\n"
                    "    condition: {type: event_count, count: 2, window: 5m}\n")
    cfg = tmp_path / "settings.yaml"
    cfg.write_text(f"default_pack: false\nrules: [{pack}]\n")
    assert main(["--config", str(cfg), "rules", "list"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines()[2:] if ln.startswith("| ")]
    assert [r.split(" | ")[0:2] for r in rows] == [["| MyPodCrash", "mine"]]
    assert main(["--config", str(cfg), "rules", "signals"]) == 0
    assert "| k8s | BackOff | MyPodCrash |" in capsys.readouterr().out
    cfg.write_text(f"rules: [{pack}]\n")  # default pack on: both
    monkeypatch.setenv("KUBESIGHT_CONFIG", str(cfg))
    assert main(["rules", "list"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines()[2:] if ln.startswith("| ")]
    assert len(rows) == len(load_packs([DEFAULT_PACK])) + 1
    cfg.write_text("default_pack: false\n")
    assert main(["rules", "list"]) == 2
    assert "no rule packs" in capsys.readouterr().err
    cfg.write_text("default_pack: false\nrules: 3\n")
    assert main(["rules", "list"]) == 2
    assert f"{cfg}:2: rules" in capsys.readouterr().err
