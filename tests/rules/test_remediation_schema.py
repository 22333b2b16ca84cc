"""The rule-pack fields that act on a node (``actions``, ``node_condition``, ``node_event``): one test per
validation rule with the exact message (file:line: yaml.path: message)."""

from __future__ import annotations

import pytest

from core.yamlconfig import ConfigError
from rules.load import DEFAULT_PACK, load_packs

HEAD = '''apiVersion: kubesight.io/v1
kind: RulePack
metadata: {name: p, version: "1"}
rules:
  - alert: A
    match: {source: kernel, reason: NvidiaXid}
    condition: {type: event_count}
'''


def errors(tmp_path, extra: str) -> list[str]:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + extra)
    with pytest.raises(ConfigError) as e:
        load_packs([f])
    return [x.replace(str(tmp_path) + "/", "") for x in e.value.errors]


def test_actions_compile_onto_the_rule(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "    actions: [{type: cordon}, {type: taint, key: kubesight.io/gpu-unhealthy}]\n"
                 "    node_condition: {type: GPUUnhealthy, reason: FatalXid}\n")
    r = load_packs([f]).rules[0]
    assert [a.type for a in r.actions] == ["cordon", "taint"]
    assert (r.actions[1].effect, r.actions[1].value) == ("NoSchedule", "")
    assert (r.node_condition.type, r.node_condition.ok_reason) == ("GPUUnhealthy", None)


def test_unknown_action_type(tmp_path):
    assert errors(tmp_path, "    actions: [{type: reboot}]\n") == [
        'p.yaml:8: rules[0].actions[0]: type: expected one of cordon, taint, drain, label, got "reboot"']


def test_unknown_action_field(tmp_path):
    got = errors(tmp_path, "    actions: [{type: cordon, key: x}]\n")
    assert got == ['p.yaml:8: rules[0].actions[0].key: unknown key "key" (expected one of: type)']


def test_taint_needs_a_valid_key_and_effect(tmp_path):
    got = errors(tmp_path, "    actions: [{type: taint, key: 'bad key', effect: NoWay}]\n")
    assert "p.yaml:8: rules[0].actions[0].key: invalid key \"bad key\" (a Kubernetes label/taint key: [prefix/]name, " \
           "e.g. kubesight.io/gpu-unhealthy)" in got
    assert any(e.startswith("p.yaml:8: rules[0].actions[0].effect: ") and "NoSchedule" in e for e in got)


def test_duplicate_action(tmp_path):
    assert errors(tmp_path, "    actions: [{type: cordon}, {type: cordon}]\n") == [
        "p.yaml:8: rules[0].actions[1]: duplicate action (same as actions[0])"]


def test_drain_with_cordon(tmp_path):
    assert errors(tmp_path, "    actions: [{type: cordon}, {type: drain}]\n") == [
        "p.yaml:8: rules[0].actions: drain already cordons: drop the cordon action"]


def test_condition_names_are_camel_case(tmp_path):
    assert errors(tmp_path, "    node_condition: {type: gpu-unhealthy, reason: FatalXid}\n") == [
        'p.yaml:8: rules[0].node_condition.type: invalid name "gpu-unhealthy" (UpperCamelCase, as Node conditions '
        'and reasons are, e.g. GPUUnhealthy)']


def test_ok_reason_differs_from_reason(tmp_path):
    assert errors(tmp_path, "    node_condition: {type: X, reason: Bad, ok_reason: Bad}\n") == [
        'p.yaml:8: rules[0].node_condition.ok_reason: must differ from reason ("Bad")']


def test_default_pack_fatal_gpu_xid_acts_and_everything_is_opt_in():
    rs = load_packs([DEFAULT_PACK])
    by = {r.alert: r for r in rs.rules}
    assert [a.type for a in by["GPUXidFatal"].actions] == ["cordon", "taint"]
    assert by["GPUXidFatal"].node_condition.type == "GPUUnhealthy"
    conds = {r.node_condition.type for r in rs.rules if r.node_condition}
    assert conds == {"GPUUnhealthy", "KernelDeadlock", "ReadonlyFilesystem", "FrequentKernelOops",
                     "CloudMaintenanceScheduled", "SpotInterruption"}
    assert {"drain"} == {a.type for a in by["CloudSpotInterruption"].actions}
