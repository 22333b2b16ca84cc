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


def test_a_schema_error_does_not_hide_the_meaning_and_cross_pack_errors(tmp_path):
    """One unknown key made the whole pack fail the schema, and the checks that need a validated pack (unknown
    source, duplicate alert, unknown disable) were skipped: ``rules check`` listed one error of four."""
    (tmp_path / "a.yaml").write_text(HEAD.replace("name: t", "name: a") + "rules:\n" + OK_RULE)
    (tmp_path / "b.yaml").write_text(HEAD.replace("name: t", "name: a") + textwrap.dedent("""\
        disable: [Nope]
        detectors:
          d: {type: zscor}
        rules:
          - alert: A
            match: {source: k8s, reason: BackOff}
            condition: {type: event_count}
          - alert: BadSource
            match: {source: kubernetes, reason: Foo}
            condition: {type: event_count}
          - alert: Typo
            match: {metric: foo}
            condition: {type: threshold, op: ">", value: 1, windw: 5m}
          - alert: Typo
            match: {metric: foo}
            condition: {type: anomaly, detector: d, above: 0.9}
        """))
    with pytest.raises(ConfigError) as exc:
        load_packs([tmp_path])
    assert [e.replace(str(tmp_path) + "/", "") for e in exc.value.errors] == [
        'b.yaml:3: metadata.name: duplicate pack name "a" (first in a.yaml:3)',
        'b.yaml:4: disable[0]: unknown alert "Nope" (not in the loaded packs)',
        'b.yaml:6: detectors.d.type: unknown detector type "zscor" (available: mahalanobis, novelty, onset, seasonal, zscore)',
        'b.yaml:8: rules[0].alert: duplicate alert name "A" (first at a.yaml:5)',
        'b.yaml:12: rules[1].match.source: unknown source "kubernetes" (use k8s, k8s-state, k8s-audit, kernel, cloud, '
        'controlplane, metrics)',
        'b.yaml:16: rules[2].condition.windw: unknown key "windw" (did you mean "window"?)',
        # a rule that failed the schema still has its name: its duplicate is found
        'b.yaml:17: rules[3].alert: duplicate alert name "Typo" (first at b.yaml:14)',
    ]


def test_a_detector_with_an_invalid_spec_is_not_also_unknown_to_its_rules(tmp_path):
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: m}
          condition: {type: anomaly, detector: d, above: 0.9}
        """, extra="detectors:\n  d: {type: zscore, parms: {}}\n")
    assert got == ['p.yaml:5: detectors.d.parms: unknown key "parms" (did you mean "params"?)']


def test_a_rule_that_failed_the_schema_can_still_be_disabled(tmp_path):
    (tmp_path / "a.yaml").write_text(HEAD.replace("name: t", "name: a") + "rules:\n"
                                     + OK_RULE.replace("{type: event_count}", "{type: event_count, cuont: 2}"))
    (tmp_path / "b.yaml").write_text(HEAD.replace("name: t", "name: b") + "disable: [A]\nrules: []\n")
    with pytest.raises(ConfigError) as exc:
        load_packs([tmp_path])
    assert [e.replace(str(tmp_path) + "/", "") for e in exc.value.errors] == [
        'a.yaml:7: rules[0].condition.cuont: unknown key "cuont" (did you mean "count"?)']


@pytest.mark.parametrize("metric, at", [
    ("'up{job=\"api\"}'", 'match.metric: not a metric name: "up{job=\\"api\\"}"'),
    ("'rate(http_requests_total[5m])'", 'match.metric: not a metric name: "rate(http_requests_total[5m])"'),
    ("[up, 'sum(up)']", 'match.metric[1]: not a metric name: "sum(up)"'),
    ("9up", 'match.metric: not a metric name: "9up"'),
])
def test_metric_is_a_name_not_promql(tmp_path, metric, at):
    """A selector or expression was taken as a metric name that no sample has: the rule never matched."""
    got = one_rule(tmp_path, f"""\
        - alert: A
          match: {{metric: {metric}}}
          condition: {{type: threshold, op: ">", value: 1}}
        """)
    assert got == [f"p.yaml:6: rules[0].{at} (names only, not PromQL: select series with matchers, e.g. "
                   "matchers: ['job=\"api\"'], and take a rate with condition: {agg: rate, window: 5m})"]


def test_metric_names_with_colons_and_underscores_are_fine(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "rules:\n  - alert: A\n    match: {metric: ['job:up:avg5m', _x, ns:cpu]}\n"
                 "    condition: {type: threshold, op: '>', value: 1}\n")
    assert load_packs([f]).rules[0].metrics == ("job:up:avg5m", "_x", "ns:cpu")


@pytest.mark.parametrize("cond, above", [
    ("{type: anomaly, detector: d, above: 4}", "4"),
    ("{type: anomaly, detector: d, above: 1}", "1"),
    ("{type: anomaly_vector, detector: v, by: [pod], above: 0}", "0"),
    ("{type: anomaly_vector, detector: v, by: [pod], above: -0.5}", "-0.5"),
])
def test_anomaly_above_is_a_score_between_0_and_1(tmp_path, cond, above):
    """Detector scores are in [0, 1]: ``above: 4`` was accepted and could never fire."""
    got = one_rule(tmp_path, f"""\
        - alert: A
          match: {{metric: m}}
          condition: {cond}
        """, extra="detectors:\n  d: {type: zscore}\n  v: {type: mahalanobis}\n")
    assert got == [f"p.yaml:10: rules[0].condition.above: must be between 0 and 1, exclusive (a detector's score "
                   f"is in [0, 1]), got {above}"]


def test_labels_are_static_not_templates(tmp_path):
    """``{{ ... }}`` in a label was sent to Alertmanager as its literal text."""
    got = one_rule(tmp_path, """\
        - alert: A
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count}
          labels: {team: "{{ labels.namespace }}", sev_hint: "{{ $labels.severity }}", tier: web}
        """, extra='defaults: {labels: {owner: "{{labels.owner}}"}}\n')
    why = "is not rendered (templates go in annotations; the signal's labels, e.g. namespace, are already on the alert)"
    assert got == [f'p.yaml:4: defaults.labels.owner: labels are static: "{{{{labels.owner}}}}" {why}',
                   f'p.yaml:9: rules[0].labels.sev_hint: labels are static: "{{{{ $labels.severity }}}}" {why}',
                   f'p.yaml:9: rules[0].labels.team: labels are static: "{{{{ labels.namespace }}}}" {why}']


BASE = HEAD.replace("name: t", "name: base") + """\
rules:
  - alert: A
    match: {source: k8s, reason: BackOff}
    condition: {type: event_count, count: 1}
  - alert: B
    match: {source: k8s, reason: Failed}
    condition: {type: event_count}
"""
SITE = HEAD.replace("name: t", "name: site") + """\
disable: [A]
rules:
  - alert: A
    match: {source: k8s, reason: BackOff}
    condition: {type: event_count, count: 2}
    labels: {team: site}
"""


def test_a_rule_is_replaced_under_its_own_name(tmp_path, capsys):
    """``disable: [A]`` plus the pack's own ``A`` was a duplicate of the disabled rule, and the disable filter
    (by name) would have dropped the replacement too; routes, inhibit rules and silences match on alertname."""
    from core.records import Entity, Event
    from rules.cli import _list
    from rules.engine import Engine

    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "site.yaml").write_text(SITE)
    rs = load_packs([tmp_path / "base.yaml", tmp_path / "site.yaml"])
    assert [(r.pack, r.alert, r.cond.count) for r in rs.rules] == [("base", "B", 1), ("site", "A", 2)]
    assert [(p.name, p.rules) for p in rs.packs] == [("base", 1), ("site", 1)]
    assert set(rs.by_sid) == {r.sid for r in rs.rules}
    _list(SimpleNamespace(paths=[tmp_path / "base.yaml", tmp_path / "site.yaml"]))
    assert [ln.split(" | ")[:2] for ln in capsys.readouterr().out.splitlines()[2:]] == [["| B", "base"], ["| A", "site"]]
    eng, state = Engine(rs), {}
    ev = lambda t: Event(source="k8s", reason="BackOff", type="Warning", time=t,  # noqa: E731
                         entity=Entity(namespace="shop", kind="Pod", name="cart-1"))
    assert eng.process(ev(0.0), state, 0.0) == []  # the replacement's count: 2, not the disabled rule's 1
    assert [(a.labels["alertname"], a.labels["team"], a.source) for a in eng.process(ev(60.0), state, 60.0)] == [
        ("A", "site", "site/A@1")]


def test_rules_test_runs_a_replacement(tmp_path):
    from rules.testing import run_tests

    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "site.yaml").write_text(SITE)
    (tmp_path / "t.yaml").write_text(textwrap.dedent("""\
        rule_files: [base.yaml, site.yaml]
        tests:
          - name: the site's A needs two
            input_events:
              - {at: 0s, repeat: 2, every: 1m, source: k8s, reason: BackOff, entity: {namespace: shop, kind: Pod, name: c}}
            alert_rule_test:
              - {eval_time: 0s, alertname: A, exp_alerts: []}
              - eval_time: 1m
                alertname: A
                exp_alerts: [{labels: {alertname: A, severity: warning, team: site, cluster: default, namespace: shop,
                                       pod: c}}]
        """))
    rep = run_tests([tmp_path / "t.yaml"])
    assert (rep.passed, rep.failed, rep.failures) == (1, 0, [])


def test_a_disable_is_of_other_packs_rules_and_two_live_rules_of_one_name_stay_an_error(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "site.yaml").write_text(SITE + """\
  - alert: A
    match: {source: k8s, reason: BackOff}
    condition: {type: event_count, count: 3}
""")
    (tmp_path / "zz.yaml").write_text(HEAD.replace("name: t", "name: zz") + "disable: [C]\nrules:\n"
                                      + OK_RULE.replace("alert: A", "alert: C"))
    with pytest.raises(ConfigError) as exc:
        load_packs([tmp_path])
    assert [e.replace(str(tmp_path) + "/", "") for e in exc.value.errors] == [
        'site.yaml:10: rules[1].alert: duplicate alert name "A" (first at site.yaml:6)',
        'zz.yaml:4: disable[0]: unknown alert "C" (only this pack has it: disable switches off the rules of that '
        "name in the other loaded packs, and leaves the pack's own)",
    ]


def test_threshold_under_must_make_a_range(tmp_path):
    """``under`` is PromQL's second bound (`> 0.9 < 1`): below ``value``, or with ``<``, the rule could never fire."""
    got = one_rule(tmp_path, """\
        - alert: A
          match: {metric: up}
          condition: {type: threshold, op: ">", value: 0.9, under: 0.5}
        """)
    assert got == ["p.yaml:7: rules[0].condition.under: must be above value (0.9) with op > or >= (the range op value"
                   " .. under): as it stands the rule could never fire"]  # (the default pack's KubeQuotaAlmostFull loads)
