"""``rules check`` and ``rules test`` list every problem of a file in one run: the checks that need a validated
rule (its source, its condition against its match) and the test file's rule packs ran only once the schema passed,
so each fix of a schema error could bring up new errors in the next run (an audit, 2026-12)."""

from __future__ import annotations

import textwrap

import pytest

from core.yamlconfig import ConfigError
from kubesight.cli import main
from rules.load import load_packs

SOURCES = "use k8s, k8s-state, k8s-audit, kernel, cloud, controlplane, metrics"


def check(tmp_path, capsys, rules: str) -> list[str]:
    """The lines ``kubesight rules check`` prints for a pack of ``rules``, the folder shortened; exit 1 asserted."""
    f = tmp_path / "stage.yaml"
    f.write_text('apiVersion: kubesight.io/v1\nkind: RulePack\nmetadata: {name: stage, version: "1"}\nrules:\n'
                 + textwrap.dedent(rules))
    assert main(["rules", "check", str(f)]) == 1
    return [ln.replace(f"{tmp_path}/", "") for ln in capsys.readouterr().err.splitlines()]


def test_rules_check_lists_the_meaning_errors_of_a_rule_that_failed_the_schema(tmp_path, capsys):
    assert check(tmp_path, capsys, """\
        - alert: A
          match: {source: k8z, reason: BackOff}
          condition: {type: event_count}
          severity: page
        - alert: B
          match: {source: k8s, reason: BackOff, matchers: ['node=~"(?=x)y"']}
          condition: {type: event_count}
          extra: 1
        """) == [
        f'stage.yaml:6: rules[0].match.source: unknown source "k8z" ({SOURCES})',
        'stage.yaml:8: rules[0].severity: invalid severity "page" (use critical, warning, info)',
        'stage.yaml:10: rules[1].match.matchers[0]: invalid regex "(?=x)y" in matcher node=~"(?=x)y": invalid perl '
        'operator: (?=',
        'stage.yaml:12: rules[1].extra: unknown key "extra" (expected one of: actions, alert, annotations, condition, '
        'for, group_by, labels, match, node_condition, node_event, severity)',
        "4 error(s)",
    ]


def test_a_match_with_bad_matchers_still_has_its_source_and_kind_of_signal_checked(tmp_path, capsys):
    assert check(tmp_path, capsys, """\
        - alert: A
          match: {source: k8z, reason: BackOff, matchers: ['node=~"(?=x)y"']}
          condition: {type: threshold, op: ">", value: 1}
        """) == [
        'stage.yaml:6: rules[0].match.matchers[0]: invalid regex "(?=x)y" in matcher node=~"(?=x)y": invalid perl '
        'operator: (?=',
        f'stage.yaml:6: rules[0].match.source: unknown source "k8z" ({SOURCES})',
        "stage.yaml:7: rules[0].condition.type: threshold needs a metric rule (match.metric), not events",
        "3 error(s)",
    ]


@pytest.mark.parametrize("rule, where", [
    # an invalid source or metric is not "neither source nor metric"; a wrong reason is not a missing one
    ("{alert: A, match: {source: [k8s, [2]], reason: R}, condition: {type: threshold, op: '>', value: 1}}",
     ["rules[0].match.source[1]"]),
    ("{alert: A, match: {metric: 'sum(up)'}, condition: {type: event_count}}", ["rules[0].match.metric"]),
    ("{alert: A, match: {source: k8s, reason: [[R]]}, condition: {type: state, resolve_reasons: [R]}}",
     ["rules[0].match.reason[0]"]),
    # a condition or match that failed the schema is checked no further, against the other or otherwise
    ("{alert: A, match: {metric: up}, condition: {type: state, resolve_reasons: {}}}",
     ["rules[0].condition.resolve_reasons"]),
    ("{alert: A, match: [BackOff], condition: {type: state, resolve_reasons: [Started]}}", ["rules[0].match"]),
    ("{alert: A, match: [up], condition: {type: anomaly_vector, detector: d, by: [node], every: soon}}",
     ["rules[0].condition.every", "rules[0].match"]),
])
def test_a_part_that_failed_the_schema_adds_no_error_of_its_own(tmp_path, rule, where):
    f = tmp_path / "p.yaml"
    f.write_text('apiVersion: kubesight.io/v1\nkind: RulePack\nmetadata: {name: p, version: "1"}\nrules:\n'
                 f"  - {rule}\n")
    with pytest.raises(ConfigError) as exc:
        load_packs([f])
    assert [e.split(": ")[1] for e in exc.value.errors] == where, exc.value.errors


def test_rules_test_lists_a_missing_rule_file_with_the_schema_errors(tmp_path, capsys):
    f = tmp_path / "bad_test.yaml"
    f.write_text(textwrap.dedent("""\
        rule_files: [nope.yaml]
        tests:
          - name: t
            input_events:
              - {at: 1 m, source: k8s, entity: {kind: Node, name: n1}}
            alert_rule_test: []
        """))
    assert main(["rules", "test", str(f)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"FAILED {f}:1: rule_files: {tmp_path}/nope.yaml:1: cannot read: No such file or directory",
        f'FAILED {f}:5: tests[0].input_events[0].at: invalid duration "1 m" (use e.g. 30s, 5m, 1h30m)',
        f"FAILED {f}:5: tests[0].input_events[0].reason: required key missing",
    ]
