"""One test per validation rule of rule packs, each asserting the exact message (file:line: path: what)."""

from __future__ import annotations

import textwrap
from types import SimpleNamespace

import pytest

from core.yamlconfig import ConfigError
from rules.load import load_packs

HEAD = """\
apiVersion: kubesight.io/v1
kind: RulePack
metadata: {name: t, version: "1"}
"""
OK_RULE = """\
  - alert: A
    match: {source: k8s, reason: BackOff}
    condition: {type: event_count}
"""


def errors(tmp_path, body: str, head: str = HEAD, name: str = "p.yaml") -> list[str]:
    f = tmp_path / name
    f.write_text(head + textwrap.dedent(body))
    with pytest.raises(ConfigError) as exc:
        load_packs([f])
    return [e.replace(str(tmp_path) + "/", "") for e in exc.value.errors]


def one_rule(tmp_path, rule: str, extra: str = "") -> list[str]:
    return errors(tmp_path, extra + "rules:\n" + textwrap.indent(textwrap.dedent(rule), "  "))


def test_invalid_duration(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count}
          for: 5 min
        """)
    assert got == ['p.yaml:8: rules[0].for: invalid duration "5 min" (use e.g. 30s, 5m, 1h30m)']


def test_unknown_key_in_rule(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count}
          severty: critical
        """)
    assert got == ['p.yaml:8: rules[0].severty: unknown key "severty" (did you mean "severity"?)']


def test_unknown_key_in_match(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: k8s, reasons: BackOff}
          condition: {type: event_count}
        """)
    assert got == ['p.yaml:6: rules[0].match.reasons: unknown key "reasons" (did you mean "reason"?)']


def test_unknown_key_in_condition(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: up}
          condition: {type: threshold, op: "<", value: 1, windw: 5m}
        """)
    assert got == ['p.yaml:7: rules[0].condition.windw: unknown key "windw" (did you mean "window"?)']


def test_required_field_missing(tmp_path):
    got = one_rule(tmp_path, """\
        - match: {source: k8s, reason: BackOff}
          condition: {type: event_count}
        """)
    assert got == ["p.yaml:5: rules[0].alert: required key missing"]


def test_rules_missing(tmp_path):
    assert errors(tmp_path, "") == ["p.yaml:1: rules: required key missing"]


def test_unknown_condition_type(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: up}
          condition: {type: treshold, op: "<", value: 1}
        """)
    assert got == ["p.yaml:7: rules[0].condition.type: expected 'event_count', 'state', 'threshold', 'burn_rate', "
                   "'predict', 'absent', "
                   "'anomaly' or 'anomaly_vector', got \"treshold\" (did you mean \"threshold\"?)"]


def test_condition_type_missing(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: up}
          condition: {op: "<", value: 1}
        """)
    assert got == ["p.yaml:7: rules[0].condition.type: required key missing "
                   "(expected 'event_count', 'state', 'threshold', 'burn_rate', 'predict', 'absent', 'anomaly' or 'anomaly_vector')"]


def test_wrong_type(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count, count: three}
        """)
    assert got == ['p.yaml:7: rules[0].condition.count: expected an integer, got "three"']


def test_number_bound(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count, count: 0}
        """)
    assert got == ["p.yaml:7: rules[0].condition.count: must be >= 1, got 0"]


def test_literal_choice(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: up}
          condition: {type: threshold, op: "=", value: 0}
        """)
    assert got == ["p.yaml:7: rules[0].condition.op: expected '>', '>=', '<', '<=', '==' or '!=', got \"=\""]


def test_invalid_matcher(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: k8s, reason: BackOff, matchers: ['namespace="a"', 'namespace~kube']}
          condition: {type: event_count}
        """)
    assert got == ['p.yaml:6: rules[0].match.matchers[1]: invalid matcher "namespace~kube" '
                   "(use name=value, name!=value, name=~regex, name!~regex)"]


def test_invalid_regex(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match:
            source: k8s
            matchers:
              - 'namespace=~"kube-("'
          condition: {type: event_count}
        """)
    assert got == ['p.yaml:9: rules[0].match.matchers[0]: invalid regex "kube-(" in matcher namespace=~"kube-(": '
                   "missing ): kube-("]


def test_invalid_severity(tmp_path):
    got = one_rule(tmp_path, OK_RULE.replace("  - ", "- ").replace("\n    ", "\n  ") + "  severity: page\n")
    assert got == ['p.yaml:8: rules[0].severity: invalid severity "page" (use critical, warning, info)']


def test_invalid_label_name(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count}
          labels: {team-name: x}
        """)
    assert got == ['p.yaml:8: rules[0].labels.team-name: invalid label name "team-name" '
                   "(use letters, digits and _, not starting with a digit)"]


def test_reserved_label(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count}
          labels: {severity: critical}
        """)
    assert got == ["p.yaml:8: rules[0].labels.severity: reserved label (set it with the rule's severity field)"]


def test_unknown_template_field(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count}
          annotations: {summary: "{{ pod }} is backing off"}
        """)
    assert got == ['p.yaml:8: rules[0].annotations.summary: unknown template field "pod" '
                   "(use labels.NAME, value, score, count, message, expected_low, expected_high, since, feature)"]


def test_malformed_template(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count}
          annotations: {summary: "{{ labels.pod } is backing off"}
        """)
    assert got == ['p.yaml:8: rules[0].annotations.summary: malformed template near "{{ labels.pod } is backing off" '
                   "(use {{ labels.NAME }}, {{ value }}, {{ value | percent }})"]


def test_unknown_source(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: kernal, reason: OOMKilling}
          condition: {type: event_count}
        """)
    assert got == ['p.yaml:6: rules[0].match.source: unknown source "kernal" '
                   "(use k8s, k8s-state, k8s-audit, kernel, cloud, controlplane, metrics)"]


def test_source_and_metric(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: k8s, metric: up}
          condition: {type: absent, after: 5m}
        """)
    assert got == ["p.yaml:6: rules[0].match: give either source (events) or metric (samples), not both"]


def test_neither_source_nor_metric(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {reason: BackOff}
          condition: {type: event_count}
        """)
    assert got == ["p.yaml:6: rules[0].match: required: source (events) or metric (samples)"]


def test_reason_on_metric_rule(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: up, reason: BackOff}
          condition: {type: threshold, op: "==", value: 0}
        """)
    assert got == ["p.yaml:6: rules[0].match.reason: only for event rules (this rule matches a metric)"]


def test_group_by_on_metric_rule(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: up}
          condition: {type: threshold, op: "==", value: 0}
          group_by: [job]
        """)
    assert got == ["p.yaml:8: rules[0].group_by: only for event rules (a metric rule's group is its series)"]


def test_event_condition_on_metric(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: up}
          condition: {type: event_count}
        """)
    assert got == ["p.yaml:7: rules[0].condition.type: event_count needs an event rule (match.source), not a metric"]


def test_metric_condition_on_events(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: k8s, reason: BackOff}
          condition: {type: threshold, op: ">", value: 1}
        """)
    assert got == ["p.yaml:7: rules[0].condition.type: threshold needs a metric rule (match.metric), not events"]


def test_state_resolve_is_also_firing_reason(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: k8s-state, reason: [NodeNotReady, NodeReady]}
          condition: {type: state, resolve_reasons: NodeReady}
        """)
    assert got == ['p.yaml:7: rules[0].condition.resolve_reasons: "NodeReady" is also a firing reason (match.reason)']


def test_state_needs_reason(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: k8s-state}
          condition: {type: state, resolve_reasons: NodeReady}
        """)
    assert got == ["p.yaml:6: rules[0].match.reason: required for a state condition (the reasons that set it)"]


def test_resolve_on_wrong_side(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: cpu}
          condition: {type: threshold, op: ">", value: 0.9, resolve: 0.95}
        """)
    assert got == ['p.yaml:7: rules[0].condition.resolve: must be <= value (0.9) for op ">" '
                   "(it is the level that clears the alert)"]


def test_resolve_with_equality(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: up}
          condition: {type: threshold, op: "==", value: 0, resolve: 1}
        """)
    assert got == ['p.yaml:7: rules[0].condition.resolve: only with op >, >=, < or <= (not "==")']


def test_rate_needs_window(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: errors_total}
          condition: {type: threshold, op: ">", value: 1, agg: rate}
        """)
    assert got == ["p.yaml:7: rules[0].condition.window: required for agg rate (e.g. 5m)"]


def test_burn_rate_short_window_must_be_shorter(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: err}
          condition:
            type: burn_rate
            objective: 0.99
            windows: [{long: 1h, short: 5m, factor: 14.4}, {long: 30m, short: 1h, factor: 6}]
        """)
    assert got == ["p.yaml:10: rules[0].condition.windows[1].short: must be shorter than long (30m): "
                   "it says the burn is still going on"]


def test_predict_needs_a_window_and_a_known_test(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: free}
          condition: {type: predict, op: "<", value: 0, window: 0s, horizon: 1d, now: {op: "=", value: 0.4}}
        """)
    assert got == ["p.yaml:7: rules[0].condition.now.op: expected '>', '>=', '<' or '<=', got \"=\""]
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: free}
          condition: {type: predict, op: "<", value: 0, window: 0s, horizon: 1d}
        """)
    assert got == ["p.yaml:7: rules[0].condition.window: must be more than 0 (the history the line is fitted on, e.g. 6h)"]


def test_burn_rate_objective_and_windows_bounds(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: err}
          condition: {type: burn_rate, objective: 1, windows: []}
        """)
    assert got == ["p.yaml:7: rules[0].condition.objective: must be < 1.0, got 1",
                   "p.yaml:7: rules[0].condition.windows: must not be empty"]


ANOMALY_HEAD = "detectors:\n  latency: {type: zscore, params: {warmup: 30}}\n"


def test_unknown_detector_reference(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: latency}
          condition: {type: anomaly, detector: latncy, above: 0.9}
        """, extra=ANOMALY_HEAD)
    assert got == ['p.yaml:9: rules[0].condition.detector: unknown detector "latncy" (declared: latency)']


def test_anomaly_needs_one_level(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: latency}
          condition: {type: anomaly, detector: latency, above: 0.9, quantile: 0.99}
        """, extra=ANOMALY_HEAD)
    assert got == ["p.yaml:9: rules[0].condition: give exactly one of above (a fixed score) or quantile (adaptive)"]


def test_anomaly_k_of_n(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: latency}
          condition: {type: anomaly, detector: latency, above: 0.9, k: 4, n: 3}
        """, extra=ANOMALY_HEAD)
    assert got == ["p.yaml:9: rules[0].condition.k: must be <= n (3)"]


def test_vector_detector_in_anomaly_rule(tmp_path):
    """No registered detector scores a vector today (iforest was removed: it failed the detection
    contract), so a registry that has one stands in: the check reads ``Detector.input``."""
    from detectors import registry
    from detectors.base import Detector

    class Pod(Detector):
        name, input = "podforest", "vector"

    stub = SimpleNamespace(CLASSES={**registry.CLASSES, "podforest": Pod}, build=lambda name, params: None,
                           names=lambda: sorted([*registry.names(), "podforest"]))
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "detectors:\n  pod: {type: podforest}\nrules:\n" + textwrap.indent(textwrap.dedent("""\
        - alert: A
          match: {metric: latency}
          condition: {type: anomaly, detector: pod, above: 0.9}
        """), "  "))
    with pytest.raises(ConfigError) as exc:
        load_packs([f], registry=stub)
    got = [e.replace(str(tmp_path) + "/", "") for e in exc.value.errors]
    assert got == ['p.yaml:9: rules[0].condition.detector: detector "pod" is podforest, which scores a vector '
                   "(a dict of metrics); an anomaly rule gives it one value per sample"]


def test_unknown_detector_type(tmp_path):
    got = one_rule(tmp_path, OK_RULE.replace("  - ", "- ").replace("\n    ", "\n  "),
                   extra="detectors:\n  latency: {type: zscor}\n")
    assert got == ['p.yaml:5: detectors.latency.type: unknown detector type "zscor" '
                   "(available: mahalanobis, novelty, onset, seasonal, zscore)"]


def test_bad_detector_params(tmp_path):
    got = one_rule(tmp_path, OK_RULE.replace("  - ", "- ").replace("\n    ", "\n  "),
                   extra="detectors:\n  latency: {type: zscore, params: {alpah: 0.1}}\n")
    assert got == ["p.yaml:5: detectors.latency.params: invalid parameters for zscore: detector 'zscore': "
                   "unknown parameter(s) alpah; valid: alpha, clip, level_scale, step_scale, short, long, warmup"]


def test_duplicate_alert_name(tmp_path):
    got = errors(tmp_path, "rules:\n" + OK_RULE + OK_RULE)
    assert got == ['p.yaml:8: rules[1].alert: duplicate alert name "A" (first at p.yaml:5)']


def test_duplicate_alert_name_across_files(tmp_path):
    (tmp_path / "a.yaml").write_text(HEAD.replace("name: t", "name: a") + "rules:\n" + OK_RULE)
    (tmp_path / "b.yaml").write_text(HEAD.replace("name: t", "name: b") + "rules:\n" + OK_RULE)
    with pytest.raises(ConfigError) as exc:
        load_packs([tmp_path])
    assert exc.value.errors == [f'{tmp_path}/b.yaml:5: rules[0].alert: duplicate alert name "A" (first at {tmp_path}/a.yaml:5)']


def test_duplicate_pack_name(tmp_path):
    (tmp_path / "a.yaml").write_text(HEAD + "rules:\n" + OK_RULE)
    (tmp_path / "b.yaml").write_text(HEAD + "rules:\n" + OK_RULE.replace("alert: A", "alert: B"))
    with pytest.raises(ConfigError) as exc:
        load_packs([tmp_path])
    assert exc.value.errors == [f'{tmp_path}/b.yaml:3: metadata.name: duplicate pack name "t" (first in {tmp_path}/a.yaml:3)']


def test_invalid_pack_name(tmp_path):
    got = errors(tmp_path, "rules:\n" + OK_RULE, head=HEAD.replace("name: t", "name: My_Pack"))
    assert got == ['p.yaml:3: metadata.name: invalid pack name "My_Pack" (use lower-case letters, digits, "-" and ".")']


def test_duplicate_yaml_key(tmp_path):
    got = errors(tmp_path, "rules:\n" + OK_RULE + "    alert: B\n")
    assert got == ['p.yaml:8: rules[0].alert: duplicate key "alert" (first at line 5)']


def test_yaml_syntax_error(tmp_path):
    got = errors(tmp_path, "rules:\n  - alert: [A\n")
    assert got == ["p.yaml:6: YAML syntax error: did not find expected ',' or ']'"]


def test_empty_file(tmp_path):
    assert errors(tmp_path, "", head="") == [  # an empty file is an empty mapping
        "p.yaml:1: apiVersion: required key missing", "p.yaml:1: kind: required key missing",
        "p.yaml:1: metadata: required key missing", "p.yaml:1: rules: required key missing"]


def test_wrong_api_version(tmp_path):
    got = errors(tmp_path, "rules:\n" + OK_RULE, head=HEAD.replace("kubesight.io/v1", "kubesight.io/v2"))
    assert got == ['p.yaml:1: apiVersion: expected "kubesight.io/v1", got "kubesight.io/v2"']


def test_wrong_kind(tmp_path):
    got = errors(tmp_path, "rules:\n" + OK_RULE, head=HEAD.replace("RulePack", "PrometheusRule"))
    assert got == ['p.yaml:2: kind: expected "RulePack", got "PrometheusRule"']


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_packs([tmp_path / "missing.yaml"])
    assert exc.value.errors == [f"{tmp_path}/missing.yaml:1: cannot read: No such file or directory"]


def test_no_pack_files(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_packs([tmp_path])
    assert exc.value.errors == [f"{tmp_path}: no rule pack files (*.yaml) found"]


def test_all_errors_at_once_in_line_order(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count, window: 10 min}
          for: 5 min
        - alert: bad-name
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count}
          severity: page
        """)
    assert got == [
        'p.yaml:7: rules[0].condition.window: invalid duration "10 min" (use e.g. 30s, 5m, 1h30m)',
        'p.yaml:8: rules[0].for: invalid duration "5 min" (use e.g. 30s, 5m, 1h30m)',
        'p.yaml:9: rules[1].alert: invalid alert name "bad-name" (use letters, digits and _, e.g. KubeNodeNotReady)',
        'p.yaml:12: rules[1].severity: invalid severity "page" (use critical, warning, info)',
    ]


def test_absent_forget_shorter_than_after(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: up}
          condition: {type: absent, after: 10m, forget: 5m}
        """)
    assert got == ["p.yaml:7: rules[0].condition.forget: must be longer than after (or 0: never forget)"]


def test_disable_unknown_alert(tmp_path):
    got = errors(tmp_path, "disable: [KubeSchedulerDwn]\nrules:\n" + OK_RULE)
    assert got == ['p.yaml:4: disable[0]: unknown alert "KubeSchedulerDwn" (not in the loaded packs)']


def test_an_onset_member_without_a_name_is_a_parameter_error_and_a_loader_bug_keeps_the_running_set(tmp_path,
                                                                                                  monkeypatch):
    """A member spec without its name raised KeyError through every catch: ``rules check`` crashed, and a pack
    received on the rules topic stayed on disk, failing every later record and every restart."""
    from rules import holder as holder_mod
    from rules.holder import EngineHolder
    from rules.ruleset import RuleSet

    assert errors(tmp_path, """\
        detectors:
          d: {type: onset, params: {members: [{params: {}}], weights: [1]}}
        rules: []
        """) == ["p.yaml:5: detectors.d.params: invalid parameters for onset: detector 'onset': bad parameters "
                 "{'members': [{'params': {}}], 'weights': [1]}: members[0]: expected {name: <detector>, params: "
                 "{...}}, got {'params': {}}"]
    h = EngineHolder(RuleSet.empty())
    running = h.engine

    def broken(paths, registry=None):
        raise KeyError("name")

    monkeypatch.setattr(holder_mod, "load_packs", broken)
    assert h.reload([tmp_path]) == ["the rule pack loader failed (KeyError: 'name')"] and h.engine is running
