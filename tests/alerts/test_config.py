"""One test per validation rule of the routing file, each asserting the exact message (file:line: path: msg)."""

import pytest

from alerts.config import load_text
from core.yamlconfig import ConfigError

OK_RECEIVERS = "receivers:\n  - name: r\n"


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_text(text, "routing.yaml")
    return exc.value.errors


def test_valid_minimal():
    cfg = load_text("route: {receiver: r}\n" + OK_RECEIVERS)
    assert cfg.route.receiver == "r"


def test_unknown_key():
    assert errors("route:\n  receiver: r\n  reciever: x\n" + OK_RECEIVERS) == [
        'routing.yaml:3: route.reciever: unknown key "reciever" (did you mean "receiver"?)']


def test_unknown_key_nested_in_receiver():
    assert errors("route: {receiver: r}\nreceivers:\n  - name: r\n    webhook_configs:\n      - url: http://x\n        tls: 1\n") == [
        'routing.yaml:6: receivers[0].webhook_configs[0].tls: unknown key "tls" '
        "(expected one of: http_config, max_alerts, send_resolved, timeout, url, url_file)"]


def test_undefined_receiver():
    assert errors("route:\n  receiver: r\n  routes:\n    - receiver: nobody\n" + OK_RECEIVERS) == [
        'routing.yaml:4: route.routes[0].receiver: undefined receiver "nobody" (defined: r)']


def test_root_with_matchers():
    assert errors("route:\n  receiver: r\n  matchers: ['a=b']\n" + OK_RECEIVERS) == [
        "routing.yaml:3: route.matchers: the root route must not have matchers (it receives every alert)"]


def test_root_without_receiver():
    assert errors("route:\n  group_by: [a]\n" + OK_RECEIVERS) == [
        "routing.yaml:1: route.receiver: the root route needs a receiver (the fallback for every alert)"]


def test_root_with_continue():
    assert errors("route:\n  receiver: r\n  continue: true\n" + OK_RECEIVERS) == [
        "routing.yaml:3: route.continue: the root route cannot have continue"]


def test_invalid_matcher():
    assert errors("route:\n  receiver: r\n  routes:\n    - matchers: ['team']\n" + OK_RECEIVERS) == [
        'routing.yaml:4: route.routes[0].matchers[0]: invalid matcher "team" '
        "(use name=value, name!=value, name=~regex, name!~regex)"]


def test_invalid_regex():
    assert errors("route:\n  receiver: r\n  routes:\n    - matchers: ['a=~\"(\"']\n" + OK_RECEIVERS) == [
        'routing.yaml:4: route.routes[0].matchers[0]: invalid regex "(" in matcher a=~"(": missing ): (']


def test_invalid_duration():
    assert errors("route:\n  receiver: r\n  group_wait: 5 min\n" + OK_RECEIVERS) == [
        'routing.yaml:3: route.group_wait: invalid duration "5 min" (use e.g. 30s, 5m, 1h30m)']


def test_zero_interval():
    assert errors("route:\n  receiver: r\n  repeat_interval: 0s\n" + OK_RECEIVERS) == [
        "routing.yaml:3: route.repeat_interval: must be greater than 0"]


def test_group_by_wildcard_with_labels():
    assert errors("route:\n  receiver: r\n  group_by: ['...', a]\n" + OK_RECEIVERS) == [
        'routing.yaml:3: route.group_by: "..." (group by all labels) cannot be combined with other labels']


def test_undefined_time_interval():
    assert errors("route:\n  receiver: r\n  routes:\n    - mute_time_intervals: [nights]\n" + OK_RECEIVERS) == [
        'routing.yaml:4: route.routes[0].mute_time_intervals[0]: undefined time interval "nights"']


def test_duplicate_receiver():
    assert errors("route: {receiver: r}\nreceivers:\n  - name: r\n  - name: r\n") == [
        'routing.yaml:4: receivers[1].name: duplicate receiver "r"']


def test_webhook_needs_exactly_one_url():
    assert errors("route: {receiver: r}\nreceivers:\n  - name: r\n    webhook_configs:\n      - send_resolved: true\n") == [
        "routing.yaml:5: receivers[0].webhook_configs[0]: exactly one of url or url_file is required"]


def test_url_scheme_and_no_secret_in_message():
    (msg,) = errors("route: {receiver: r}\nreceivers:\n  - name: r\n    slack_configs:\n      - api_url: ftp://T0/SECRET\n")
    assert msg == "routing.yaml:5: receivers[0].slack_configs[0].api_url: must be an http:// or https:// URL"
    assert "SECRET" not in msg


def test_missing_receivers():
    assert errors("route: {receiver: r}\n") == [
        "routing.yaml:1: receivers: required key missing",
        'routing.yaml:1: route.receiver: undefined receiver "r" (defined: none)']


def test_bad_time_interval_field():
    assert errors("route: {receiver: r}\n" + OK_RECEIVERS + "time_intervals:\n  - name: t\n    time_intervals:\n"
                  "      - weekdays: [funday]\n") == [
        "routing.yaml:7: time_intervals[0].time_intervals[0].weekdays: "
        "funday is not a valid weekday (use a name: sunday, monday, ... saturday)"]


def test_weekday_range_start_after_end_as_alertmanager_refuses_it():
    assert errors("route: {receiver: r}\n" + OK_RECEIVERS + "time_intervals:\n  - name: t\n    time_intervals:\n"
                  "      - weekdays: ['saturday:sunday']\n") == [
        "routing.yaml:7: time_intervals[0].time_intervals[0].weekdays: start day cannot be before end day"]


def test_time_range_start_not_before_end():
    assert errors("route: {receiver: r}\n" + OK_RECEIVERS + "time_intervals:\n  - name: t\n    time_intervals:\n"
                  "      - times: [{start_time: '17:00', end_time: '09:00'}]\n") == [
        "routing.yaml:7: time_intervals[0].time_intervals[0].times[0]: "
        "start time cannot be equal or greater than end time"]


def test_inhibit_rule_without_matchers_is_alertmanagers_match_all():
    cfg = load_text("route: {receiver: r}\n" + OK_RECEIVERS + "inhibit_rules:\n  - equal: [node]\n")
    assert (cfg.inhibit_rules[0].source_matchers, cfg.inhibit_rules[0].target_matchers) == ((), ())


def test_invalid_yaml():
    assert errors("route: [\n") == ["routing.yaml:2: YAML syntax error: did not find expected node content"]


def test_all_errors_at_once_sorted_by_line():
    errs = errors("route:\n  receiver: nobody\n  group_wait: x\n  routes:\n    - matchers: ['bad']\n      foo: 1\n"
                  + OK_RECEIVERS)
    assert [e.split(": ")[0] for e in errs] == ["routing.yaml:2", "routing.yaml:3", "routing.yaml:5", "routing.yaml:6"]


def test_deprecated_match_forms_are_converted_with_one_warning_each():
    cfg = load_text("route:\n  receiver: r\n  routes:\n    - match: {a: b}\n      match_re: {c: 'x|y'}\n"
                    "      matchers: ['d=\"e\"']\n" + OK_RECEIVERS +
                    "inhibit_rules:\n  - source_match: {s: '1'}\n    target_match_re: {t: '2.*'}\n    equal: [n]\n",
                    "routing.yaml")
    assert [str(m) for m in cfg.route.routes[0].matchers] == ['d="e"', 'a="b"', 'c=~"x|y"']
    rule = cfg.inhibit_rules[0]
    assert ([str(m) for m in rule.source_matchers], [str(m) for m in rule.target_matchers]) == (['s="1"'], ['t=~"2.*"'])
    assert cfg.warnings == [
        "routing.yaml:4: route.routes[0].match: match is deprecated (in Alertmanager too); read as matchers: ['a=\"b\"']",
        "routing.yaml:5: route.routes[0].match_re: match_re is deprecated (in Alertmanager too); "
        "read as matchers: ['c=~\"x|y\"']",
        "routing.yaml:10: inhibit_rules[0].source_match: source_match is deprecated (in Alertmanager too); "
        "read as source_matchers: ['s=\"1\"']",
        "routing.yaml:11: inhibit_rules[0].target_match_re: target_match_re is deprecated (in Alertmanager too); "
        "read as target_matchers: ['t=~\"2.*\"']"]


def test_deprecated_match_errors_name_the_old_key():
    assert errors("route:\n  receiver: r\n  routes:\n    - match_re: {a: '(?!x)'}\n      match: {'b:c': d}\n"
                  + OK_RECEIVERS) == [
        'routing.yaml:4: route.routes[0].match_re.a: invalid regex "(?!x)" in matcher a=~"(?!x)": '
        "invalid perl operator: (?!",
        'routing.yaml:5: route.routes[0].match.b:c: invalid label name "b:c"']


def test_integrations_kubesight_does_not_deliver_are_refused_by_name():
    assert errors("route: {receiver: r}\nreceivers:\n  - name: r\n    pushover_configs: [{user_key: k}]\n") == [
        "routing.yaml:4: receivers[0].pushover_configs: kubesight does not deliver pushover_configs yet "
        "(it delivers webhook_configs, slack_configs, dingtalk_configs, alertmanager_configs, email_configs, "
        "pagerduty_configs, opsgenie_configs, msteams_configs)"]


def test_alertmanager_globals_and_templates_load_and_slack_takes_the_global_url():
    cfg = load_text("global: {resolve_timeout: 5m, smtp_smarthost: 'mail:25', slack_api_url: 'https://hooks/x'}\n"
                    "templates: ['/etc/am/*.tmpl']\nroute: {receiver: r}\nreceivers:\n  - name: r\n"
                    "    slack_configs: [{channel: '#ops'}]\n", "routing.yaml")
    assert cfg.global_.resolve_timeout == 300.0 and cfg.receivers[0].slack_configs[0].api_url == "https://hooks/x"
    assert cfg.warnings == ["routing.yaml:2: templates: accepted but not used (kubesight sends its own message formats)"]


def test_duplicated_group_by_label():
    assert errors("route:\n  receiver: r\n  group_by: [a, b, a]\n" + OK_RECEIVERS) == [
        'routing.yaml:3: route.group_by[2]: duplicated label "a" in group_by']


def test_brace_matchers_as_alertmanager_accepts_them():
    cfg = load_text("route:\n  receiver: r\n  routes:\n    - matchers: ['{owner=\"team-C\", severity=~\"crit.*\"}']\n"
                    + OK_RECEIVERS)
    assert [str(m) for m in cfg.route.routes[0].matchers] == ['owner="team-C"', 'severity=~"crit.*"']


def test_duplicate_key():
    assert errors("route: {receiver: r}\n" + OK_RECEIVERS + "route: {receiver: r}\n") == [
        'routing.yaml:4: route: duplicate key "route" (first at line 1)']
