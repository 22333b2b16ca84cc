"""The one config loader: one test per error class, each pinned on the exact message, run for every config kind.

Every kind goes through its real loader (rule packs, routing, settings, metrics, kernel patterns),
so a kind that stops using the shared loader shows up here.
"""

from __future__ import annotations

import os

import pytest

from core import yamlconfig
from core.yamlconfig import ConfigError

from .kinds import KINDS, load_errors


def _keys(kind: str) -> str:
    """The top-level keys a kind's file may have, as the loader lists them (sorted, by alias)."""
    from alerts.config import RoutingConfig
    from alerts.silences import SilenceFile
    from collectors.kernel.patterns import PatternFile
    from collectors.metrics.config import MetricsConfig
    from core.settings import Settings
    from rules.schema import RulePack

    model = {"rules": RulePack, "routing": RoutingConfig, "settings": Settings, "metrics": MetricsConfig,
             "kernel": PatternFile, "silences": SilenceFile}[kind]
    return ", ".join(sorted(f.alias or name for name, f in model.model_fields.items()))


def _condition_types() -> str:
    """The rule condition types as the loader lists them: 'a', 'b' or 'c' (the schema's union order)."""
    import typing

    from rules.schema import Rule

    tags = [typing.get_args(m.model_fields["type"].annotation)[0]
            for m in typing.get_args(Rule.model_fields["condition"].annotation)]
    return ", ".join(f"'{t}'" for t in tags[:-1]) + f" or '{tags[-1]}'"


# Each error class, per kind: (text appended to the kind's valid file, the exact messages).
# Lines: the valid files are 7 (rules), 4 (routing), 1 (settings), 3 (metrics), 3 (kernel) and 1 (silences) lines long.
CASES = {
    "duplicate_key": {
        "rules": ("kind: RulePack\n", ['f.yaml:8: kind: duplicate key "kind" (first at line 2)']),
        "routing": ("route: {receiver: r}\n", ['f.yaml:5: route: duplicate key "route" (first at line 1)']),
        "settings": ("partitions: 8\n", ['f.yaml:2: partitions: duplicate key "partitions" (first at line 1)']),
        "metrics": ("targets: []\n", ['f.yaml:4: targets: duplicate key "targets" (first at line 1)']),
        "kernel": ("version: 1\n", ['f.yaml:4: version: duplicate key "version" (first at line 1)']),
        "silences": ("name: other\n", ['f.yaml:2: name: duplicate key "name" (first at line 1)']),
    },
    "unknown_key_with_nearest": {
        "rules": ("disabel: []\n", ['f.yaml:8: disabel: unknown key "disabel" (did you mean "disable"?)']),
        "routing": ("inhibit_rule: []\n", ['f.yaml:5: inhibit_rule: unknown key "inhibit_rule" (did you mean "inhibit_rules"?)']),
        "settings": ("partitons: 8\n", ['f.yaml:2: partitons: unknown key "partitons" (did you mean "partitions"?)']),
        "metrics": ("remote_writ: {}\n", ['f.yaml:4: remote_writ: unknown key "remote_writ" (did you mean "remote_write"?)']),
        "kernel": ("ignroe: []\n", ['f.yaml:4: ignroe: unknown key "ignroe" (did you mean "ignore"?)']),
        "silences": ("silence: []\n", ['f.yaml:2: silence: unknown key "silence" (did you mean "silences"?)']),
    },
    "unknown_key_listing_the_keys": {  # the list is the model's own keys: the message format is what is pinned
        kind: ("zzz: 1\n", [f'f.yaml:{line}: zzz: unknown key "zzz" (expected one of: {_keys(kind)})'])
        for kind, line in (("rules", 8), ("routing", 5), ("settings", 2), ("metrics", 4), ("kernel", 4),
                           ("silences", 2))
    },
    "wrong_type": {
        "rules": ("disable: 5\n", ["f.yaml:8: disable: expected a list, got 5"]),
        "routing": ("default_inhibit_rules: maybe\n",
                    ['f.yaml:5: default_inhibit_rules: expected true or false, got "maybe"']),
        "settings": ("max_batch: lots\n", ['f.yaml:2: max_batch: expected an integer, got "lots"']),
        "metrics": ("remote_write: {port: http}\n", ['f.yaml:4: remote_write.port: expected an integer, got "http"']),
        "kernel": ("ignore: x\n", ['f.yaml:4: ignore: expected a list, got "x"']),
        "silences": ("silences: x\n", ['f.yaml:2: silences: expected a list, got "x"']),
    },
    "required_key_missing": {
        "rules": ("  - match: {source: k8s, reason: BackOff}\n    condition: {type: event_count}\n",
                  ["f.yaml:8: rules[1].alert: required key missing"]),
        "routing": ("  - webhook_configs: []\n", ["f.yaml:5: receivers[1].name: required key missing"]),
        "metrics": ("  - job: b\n", ["f.yaml:4: targets[1].url: required key missing"]),
        "kernel": ("  - {id: b, reason: B, severity: info, match: 'b'}\n",
                   ["f.yaml:4: patterns[1].examples: required key missing"]),
        "silences": ("silences:\n  - {id: b, matchers: [a=b], duration: 1h}\n",
                     ["f.yaml:3: silences[0].comment: required key missing"]),
    },
    "not_one_of_the_choices": {
        "rules": ("  - alert: B\n    match: {metric: up}\n    condition: {type: threshold, op: '>', value: 1, agg: avgg}\n",
                  ["f.yaml:10: rules[1].condition.agg: expected 'last', 'avg', 'min', 'max', 'sum', 'count', 'rate' "
                   "or 'increase', got \"avgg\" (did you mean \"avg\"?)"]),
        "settings": ("clock: wal\n", ["f.yaml:2: clock: expected 'event' or 'wall', got \"wal\" (did you mean \"wall\"?)"]),
        "metrics": ("discovery: {kubernetes: {roles: [kubelett]}}\n",
                    ["f.yaml:4: discovery.kubernetes.roles[0]: expected 'apiserver', 'kubelet', 'cadvisor', 'etcd', "
                     "'scheduler', 'controller-manager', 'node-exporter', 'kube-state-metrics', 'dcgm-exporter', 'coredns' or "
                     "'annotated', got \"kubelett\" (did you mean \"kubelet\"?)"]),
        "kernel": ("  - {id: b, reason: B, severity: urgent, match: 'b', examples: [b]}\n",
                   ["f.yaml:4: patterns[1].severity: expected 'critical', 'warning' or 'info', got \"urgent\""]),
    },
    "unknown_union_tag": {
        "rules": ("  - alert: B\n    match: {metric: up}\n    condition: {type: treshold, op: '>', value: 1}\n",
                  [f"f.yaml:10: rules[1].condition.type: expected {_condition_types()}, "
                   "got \"treshold\" (did you mean \"threshold\"?)"]),
    },
    "out_of_bounds": {
        "rules": ("  - alert: B\n    match: {source: k8s, reason: BackOff}\n    condition: {type: event_count, count: 0}\n",
                  ["f.yaml:10: rules[1].condition.count: must be >= 1, got 0"]),
        "routing": ("    webhook_configs: [{url: 'http://x', max_alerts: -1}]\n",
                    ["f.yaml:5: receivers[0].webhook_configs[0].max_alerts: must be >= 0, got -1"]),
        "settings": ("max_batch: 0\n", ["f.yaml:2: max_batch: must be >= 1, got 0"]),
        "metrics": ("remote_write: {port: 70000}\n", ["f.yaml:4: remote_write.port: must be <= 65535, got 70000"]),
        "kernel": ("defaults: {max_lines: 0}\n", ["f.yaml:4: defaults.max_lines: must be >= 1, got 0"]),
    },
    "invalid_duration": {
        "rules": ("defaults: {for: 5 min}\n", ['f.yaml:8: defaults.for: invalid duration "5 min" (use e.g. 30s, 5m, 1h30m)']),
        "routing": ("global: {resolve_timeout: 1h 30m}\n",
                    ['f.yaml:5: global.resolve_timeout: invalid duration "1h 30m" (use e.g. 30s, 5m, 1h30m)']),
        "metrics": ("defaults: {interval: 1.5m}\n",
                    ['f.yaml:4: defaults.interval: invalid duration "1.5m" (use e.g. 30s, 5m, 1h30m)']),
        "silences": ("silences:\n  - {id: b, matchers: [a=b], comment: c, duration: 2 hours}\n",
                     ['f.yaml:3: silences[0].duration: invalid duration "2 hours" (use e.g. 30s, 5m, 1h30m)']),
    },
    "invalid_matcher": {
        "rules": ("  - alert: B\n    match: {source: k8s, reason: BackOff, matchers: ['a=1', 'team~x']}\n"
                  "    condition: {type: event_count}\n",
                  ['f.yaml:9: rules[1].match.matchers[1]: invalid matcher "team~x" '
                   "(use name=value, name!=value, name=~regex, name!~regex)"]),
        "routing": ("inhibit_rules: [{source_matchers: ['a=~\"(?!x)\"'], target_matchers: [b=c]}]\n",
                    ['f.yaml:5: inhibit_rules[0].source_matchers[0]: invalid regex "(?!x)" in matcher a=~"(?!x)": '
                     "invalid perl operator: (?!"]),
        "silences": ("silences:\n  - {id: b, matchers: ['team~x'], comment: c, duration: 1h}\n",
                     ['f.yaml:3: silences[0].matchers[0]: invalid matcher "team~x" '
                      "(use name=value, name!=value, name=~regex, name!~regex)"]),
    },
    "unquoted_non_string": {  # YAML 1.1 reads no/on/yes as booleans and 0x20, 1_000 as numbers: the message says so
        "rules": ("defaults: {labels: {region: no}}\n",
                  ['f.yaml:8: defaults.labels.region: expected a string, got false (YAML reads no as a boolean: quote it, "no")']),
        # (a routing file is read as Alertmanager reads it: the text written, tests/alerts/test_am_config.py)
        "settings": ("topic_prefix: 0x20\n",
                     ['f.yaml:2: topic_prefix: expected a string, got 32 (YAML reads 0x20 as a number: quote it, "0x20")']),
        "metrics": ("  - {job: 1_000, url: 'http://b:1/metrics'}\n",
                    ['f.yaml:4: targets[1].job: expected a string, got 1000 (YAML reads 1_000 as a number: quote it, "1_000")']),
        "kernel": ("  - {id: b, reason: on, severity: info, match: 'b', examples: [b]}\n",
                   ['f.yaml:4: patterns[1].reason: expected a string, got true (YAML reads on as a boolean: quote it, "on")']),
        "silences": ("silences:\n  - {id: b, matchers: [a=b], comment: yes, duration: 1h}\n",
                     ['f.yaml:3: silences[0].comment: expected a string, got true (YAML reads yes as a boolean: quote it, "yes")']),
    },
    "yaml_syntax_error": {
        kind: ("zzz: [1\n", ["f.yaml:{}: YAML syntax error: did not find expected ',' or ']'"]) for kind in KINDS
    },
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_valid_file_loads(tmp_path, kind):
    assert load_errors(kind, KINDS[kind].valid, tmp_path) == []


@pytest.mark.parametrize("kind, extra, expected", [
    pytest.param(kind, *by_kind[kind], id=f"{error_class}-{kind}")
    for error_class, by_kind in CASES.items() for kind in KINDS if kind in by_kind])
def test_error_class(tmp_path, kind, extra, expected):
    """One case per error class and kind: the valid file plus a few lines -> exactly these messages."""
    text = KINDS[kind].valid + extra
    assert load_errors(kind, text, tmp_path) == [e.replace("{}", str(text.count("\n") + 1)) for e in expected]


@pytest.mark.parametrize("kind", list(KINDS))
def test_not_a_mapping(tmp_path, kind):
    assert load_errors(kind, "- 1\n- 2\n", tmp_path) == ["f.yaml:1: expected a mapping, got [1, 2]"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_cannot_read(tmp_path, kind):
    assert load_errors(kind, None, tmp_path) == ["f.yaml:1: cannot read: No such file or directory"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_error_of_a_file_at_once_in_line_order(tmp_path, kind):
    k = KINDS[kind]
    extra = CASES["wrong_type"][kind][0] + CASES["unknown_key_listing_the_keys"][kind][0]
    got = load_errors(kind, k.valid + CASES["duplicate_key"][kind][0] + extra, tmp_path)
    n = k.valid.count("\n")
    assert [e.split(": ")[0] for e in got] == [f"f.yaml:{n + 1}", f"f.yaml:{n + 2}", f"f.yaml:{n + 3}"]
    assert [e.split(": ", 2)[2].split(" ")[0] for e in got] == ["duplicate", "expected", "unknown"]


# ---------------------------------------------------------------- the loader's own API


def test_load_from_text_and_from_a_path(tmp_path):
    from core.settings import Settings

    assert yamlconfig.load("partitions: 3\n", Settings, source="s.yaml").partitions == 3
    (tmp_path / "s.yaml").write_text("partitions: 5\n")
    assert yamlconfig.load(tmp_path / "s.yaml", Settings).partitions == 5
    assert yamlconfig.load("", Settings, source="empty.yaml").partitions == 4  # an empty file is an empty mapping


def test_error_carries_the_list():
    from core.settings import Settings

    with pytest.raises(ConfigError) as exc:
        yamlconfig.load("partitions: 0\nclock: x\n", Settings, source="s.yaml")
    assert exc.value.errors == ["s.yaml:1: partitions: must be >= 1, got 0",
                                "s.yaml:2: clock: expected 'event' or 'wall', got \"x\""]
    assert str(exc.value) == "\n".join(exc.value.errors)


def test_document_steps_for_loaders_with_more_checks():
    from core.settings import Settings

    doc = yamlconfig.parse("partitions: 2\nrules: [a, b]\n", "s.yaml")
    s = doc.validate(Settings)
    doc.error(("rules", 1), "no such pack")
    assert (s.partitions, doc.errors) == (2, ["s.yaml:2: rules[1]: no such pack"])
    with pytest.raises(ConfigError):
        doc.raise_for_errors()


def test_merge_keys_keep_positions():
    doc = yamlconfig.parse("base: &b {x: 1}\nitem:\n  <<: *b\n  y: 2\n", "m.yaml")
    assert doc.data["item"] == {"x": 1, "y": 2} and doc.errors == [] and doc.lines[("item", "y")] == 4


def test_a_merge_key_overridden_is_not_a_duplicate_and_a_key_written_twice_still_is(tmp_path):
    """The constructor spreads ``<<: *base`` into the mapping in place, and the duplicate-key walk that ran after it
    took ``url`` (merged, then written) for a key given twice: every kind refused valid YAML."""
    text = ("targets:\n  - &base\n    job: node\n    url: http://127.0.0.1:9/metrics\n    interval: 30s\n"
            "  - <<: *base\n    url: http://127.0.0.1:10/metrics\n")
    assert load_errors("metrics", text, tmp_path) == []
    doc = yamlconfig.parse(text, "m.yaml")
    assert doc.errors == [] and doc.data["targets"][1] == {"job": "node", "url": "http://127.0.0.1:10/metrics",
                                                            "interval": "30s"}
    # a merged value is at the line it is written on; the override at its own
    assert [doc.line_of(("targets", 1, k)) for k in ("job", "url", "interval")] == [3, 7, 5]
    # of several merged mappings the first gives the key (as YAML says): not a duplicate either
    doc = yamlconfig.parse("a: &a {x: 1}\nb: &b {x: 2, y: 3}\nc: {<<: [*a, *b]}\n", "m.yaml")
    assert doc.errors == [] and doc.data["c"] == {"x": 1, "y": 3}
    # a key written twice in one mapping is still one, merge key or not
    assert load_errors("metrics", text + "    url: http://127.0.0.1:11/metrics\n", tmp_path) == [
        'f.yaml:8: targets[1].url: duplicate key "url" (first at line 7)']


def test_an_alias_inside_its_own_anchor_is_a_problem_not_a_hang():
    """``a: &a [*a]`` is a node that holds itself: counting its values never ended."""
    for text in ("a: &a [*a]\n", "a: &a {b: {c: *a}}\n"):
        assert yamlconfig.parse(text, "c.yaml").errors == [
            "c.yaml:1: an alias is used inside the value its anchor names (a cycle): cannot be read"]


def test_union_type_errors_are_said_once():
    from pydantic import BaseModel

    class X(BaseModel):
        v: int | list[int]

    assert yamlconfig.parse("v: a\n", "u.yaml").validate(X) is None
    doc = yamlconfig.parse("v: a\n", "u.yaml")
    doc.validate(X)
    assert doc.errors == ['u.yaml:1: v: expected an integer or a list, got "a"']
    doc = yamlconfig.parse("v: [1, b]\n", "u.yaml")
    doc.validate(X)
    assert doc.errors == ['u.yaml:1: v[1]: expected an integer, got "b"']


@pytest.mark.parametrize(("text", "error"), [
    ("a: 1\nends: 2026-02-30T22:00:00Z\n",
     "f.yaml:2: ends: cannot read '2026-02-30T22:00:00Z' as timestamp: day is out of range for month"),
    ("x: !!int abc\n", "f.yaml:1: x: cannot read 'abc' as int: invalid literal for int() with base 10: 'abc'"),
    ("x:\n  y: [1, !!bool maybe]\n", "f.yaml:2: x.y[1]: cannot read 'maybe' as bool"),
    ("x: !!timestamp soon\n", "f.yaml:1: x: cannot read 'soon' as timestamp"),
])
def test_a_scalar_its_tag_cannot_make_is_a_problem_with_its_line_and_path(text, error):
    """PyYAML's constructors raise ValueError, KeyError or AttributeError for these: they went out of every loader as a
    traceback (and out of the rule packs' poll timer, which then stopped following the files)."""
    assert yamlconfig.parse(text, "f.yaml").errors == [error]


def test_an_alias_bomb_is_refused_before_anything_expands_it():
    """Eight levels of ten aliases each: 10^8 values once expanded (the position walk and the schema expand them)."""
    bomb, prev = "a: &a [x, x, x, x, x, x, x, x, x, x]\n", "a"
    for name in "bcdefgh":
        bomb += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
        prev = name
    assert yamlconfig.parse(bomb, "b.yaml").errors == [
        f"b.yaml:1: its aliases expand to more than {yamlconfig.EXPANDED_MAX:,} values: an alias bomb?"]
    fine = yamlconfig.parse("a: &x {k: 1}\nb: *x\nc: [*x, *x]\n", "ok.yaml")  # aliases as people use them
    assert fine.errors == [] and fine.data["c"] == [{"k": 1}, {"k": 1}]


def test_an_environment_variable_is_blamed_for_its_own_problem_and_ports_are_ports(tmp_path, monkeypatch):
    """KUBESIGHT_PARTITIONS=abc was reported at a line of the settings file that does not hold partitions; a web_port
    of 99999 loaded and failed at bind()."""
    from core.settings import Settings

    f = tmp_path / "s.yaml"
    f.write_text("cluster: x\nweb_port: 70000\n")
    monkeypatch.setenv("KUBESIGHT_PARTITIONS", "abc")
    with pytest.raises(ConfigError) as exc:
        Settings.load(f)
    assert exc.value.errors == [f"{f}:2: web_port: must be <= 65535, got 70000",
                                "KUBESIGHT_PARTITIONS='abc': expected an integer, got \"abc\""]
    monkeypatch.setenv("KUBESIGHT_PARTITIONS", "6")
    f.write_text("cluster: x\n")
    assert Settings.load(f).partitions == 6


def test_every_file_the_settings_name_is_checked_at_load_at_its_key(tmp_path, monkeypatch, capsys):
    """A missing password or CA file was found when a client first connected, a missing routing file, rule pack or
    kubeconfig by the command that read it, without the settings' line: now every one, at its key, at once (and
    from the CLI, exit 2)."""
    from core.settings import Settings
    from kubesight.cli import main

    (tmp_path / "packs").mkdir()
    (tmp_path / "kc").write_text("{}\n")
    f = tmp_path / "settings.yaml"
    f.write_text("kafka: k:9093\n"
                 "kafka_security:\n  protocol: SASL_SSL\n  sasl_mechanism: PLAIN\n  username: u\n"
                 "  password_file: /nonexistent/pw\n  ca_file: /nonexistent/ca.pem\n"
                 "  cert_file: /nonexistent/c.pem\n  key_file: /nonexistent/k.pem\n"
                 "web_config: /nonexistent/web.yaml\nrouting: routing.yaml\nrules: [packs, /nonexistent/pack]\n"
                 "remediation: {kubeconfig: /nonexistent/kc}\n")
    monkeypatch.chdir(tmp_path)  # relative paths are the working directory's, as the code that opens them reads them
    want = [f"{f}:6: kafka_security.password_file: no such file",  # a secret slot: its value is never quoted
            f"{f}:7: kafka_security.ca_file: no such file: /nonexistent/ca.pem",
            f"{f}:8: kafka_security.cert_file: no such file: /nonexistent/c.pem",
            f"{f}:9: kafka_security.key_file: no such file: /nonexistent/k.pem",
            f"{f}:10: web_config: no such file: /nonexistent/web.yaml",
            f"{f}:11: routing: no such file: routing.yaml",
            f"{f}:12: rules[1]: no such file or folder: /nonexistent/pack",
            f"{f}:13: remediation.kubeconfig: no such file: /nonexistent/kc"]
    with pytest.raises(ConfigError) as exc:
        Settings.load(f)
    assert exc.value.errors == want
    capsys.readouterr()
    assert main(["--config", str(f), "rules", "list"]) == 2
    assert capsys.readouterr().err == "kubesight: " + "\n".join(want) + "\n"
    # a kubeconfig is a list as the Kubernetes client reads it: one of them there is enough
    f.write_text(f"remediation: {{kubeconfig: '/nonexistent/kc{os.pathsep}~/nothing{os.pathsep}kc'}}\n")
    assert Settings.load(f).remediation.kubeconfig
    monkeypatch.setenv("KUBESIGHT_WEB_CONFIG", "/nonexistent/web.yaml")  # said under its own name
    with pytest.raises(ConfigError) as exc:
        Settings.load(f)
    assert exc.value.errors == ["KUBESIGHT_WEB_CONFIG='/nonexistent/web.yaml': no such file: /nonexistent/web.yaml"]


def test_a_remediation_window_of_zero_is_refused():
    """``window: 0s`` counted no node acted on, so max_nodes and max_percent let every node be acted on."""
    from core.settings import Settings

    with pytest.raises(ConfigError) as exc:
        yamlconfig.load("remediation:\n  max_nodes: 1\n  window: 0s\n", Settings, source="s.yaml")
    assert exc.value.errors == ["s.yaml:3: remediation.window: must be > 0.0, got 0.0"]
