"""One test per validation rule of the routing file, each asserting the exact message (file:line: path: msg)."""

import pytest

from alerts.config import load_text
from alerts.gotemplate import GoText
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


def test_zero_retry_initial():
    """``initial: 0s`` made every wait 0: a failing receiver got some 1,000 requests a second until the budget."""
    assert errors("route: {receiver: r}\nreceivers:\n  - name: r\n    retry: {initial: 0s, budget: 1h}\n") == [
        "routing.yaml:4: receivers[0].retry.initial: must be greater than 0"]
    cfg = load_text("route: {receiver: r}\nreceivers:\n  - name: r\n    retry: {initial: 1ms}\n")
    assert cfg.receivers[0].retry.initial == 0.001


def test_group_by_wildcard_with_labels():
    assert errors("route:\n  receiver: r\n  group_by: ['...', a]\n" + OK_RECEIVERS) == [
        'routing.yaml:3: route.group_by: "..." (group by all labels) cannot be combined with other labels']


def test_group_by_wildcard_twice_is_taken_as_alertmanager_takes_it():
    cfg = load_text("route:\n  receiver: r\n  group_by: ['...', '...']\n" + OK_RECEIVERS, "routing.yaml")
    assert "..." in cfg.route.group_by
    assert errors("route:\n  receiver: r\n  group_by: [a, a]\n" + OK_RECEIVERS) == [
        'routing.yaml:3: route.group_by[1]: duplicated label "a" in group_by']


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
    # a match_re is anchored as Alertmanager builds it (its text is in group keys)
    assert [str(m) for m in cfg.route.routes[0].matchers] == ['d="e"', 'a="b"', 'c=~"^(?:x|y)$"']
    rule = cfg.inhibit_rules[0]
    assert ([str(m) for m in rule.source_matchers], [str(m) for m in rule.target_matchers]) == (
        ['s="1"'], ['t=~"^(?:2.*)$"'])
    assert cfg.warnings == [
        "routing.yaml:4: route.routes[0].match: match is deprecated (in Alertmanager too); read as matchers: ['a=\"b\"']",
        "routing.yaml:5: route.routes[0].match_re: match_re is deprecated (in Alertmanager too); "
        "read as matchers: ['c=~\"^(?:x|y)$\"']",
        "routing.yaml:10: inhibit_rules[0].source_match: source_match is deprecated (in Alertmanager too); "
        "read as source_matchers: ['s=\"1\"']",
        "routing.yaml:11: inhibit_rules[0].target_match_re: target_match_re is deprecated (in Alertmanager too); "
        "read as target_matchers: ['t=~\"^(?:2.*)$\"']"]


def test_deprecated_match_errors_name_the_old_key():
    assert errors("route:\n  receiver: r\n  routes:\n    - match_re: {a: '(?!x)'}\n      match: {'b:c': d}\n"
                  + OK_RECEIVERS) == [
        'routing.yaml:4: route.routes[0].match_re.a: invalid regex "^(?:(?!x))$" in matcher a=~"^(?:(?!x))$": '
        "invalid perl operator: (?!",
        'routing.yaml:5: route.routes[0].match.b:c: invalid label name "b:c"']


RCV = "route: {receiver: r}\nreceivers:\n  - name: r\n"


def test_every_alertmanager_integration_loads_with_its_own_refusals():
    """No integration is refused by name any more; each kind refuses what Alertmanager refuses, in its words."""
    assert errors(RCV + "    pushover_configs: [{user_key: k}]\n    telegram_configs: [{bot_token: t}]\n"
                  "    webex_configs: [{room_id: x}]\n    sns_configs: [{topic_arn: a, target_arn: b}]\n"
                  "    victorops_configs: [{routing_key: r, custom_fields: {entity_id: x}}]\n"
                  "    wechat_configs: [{message_type: html}]\n    discord_configs: [{}]\n"
                  "    pagerduty_configs: [{client: x}]\n") == [
        "routing.yaml:4: receivers[0].pushover_configs[0]: missing token in Pushover config",
        "routing.yaml:5: receivers[0].telegram_configs[0]: missing chat_id on telegram_config",
        "routing.yaml:6: receivers[0].webex_configs[0]: missing webex_configs.http_config.authorization",
        "routing.yaml:7: receivers[0].sns_configs[0]: must provide either a Target ARN, Topic ARN, or Phone Number "
        "for SNS config",
        "routing.yaml:8: receivers[0].victorops_configs[0]: custom field entity_id cannot be used: it conflicts "
        "with the fixed/static fields",
        "routing.yaml:8: receivers[0].victorops_configs[0]: no api_key (set it here, api_key_file or "
        "global.victorops_api_key)",
        "routing.yaml:9: receivers[0].wechat_configs[0].message_type: expected 'text' or 'markdown', got \"html\"",
        "routing.yaml:9: receivers[0].wechat_configs[0]: no api_secret (set it here or global.wechat_api_secret)",
        "routing.yaml:9: receivers[0].wechat_configs[0]: no corp_id (set it here or global.wechat_api_corp_id)",
        "routing.yaml:10: receivers[0].discord_configs[0]: exactly one of webhook_url or webhook_url_file is required",
        "routing.yaml:11: receivers[0].pagerduty_configs[0]: missing service or routing key in PagerDuty config"]


def test_http_config_rules_are_prometheus_commons():
    def http(body: str) -> list[str]:
        return errors(RCV + "    webhook_configs:\n      - url: http://x/\n        http_config: " + body + "\n")

    assert http("{basic_auth: {username: u, password: p}, bearer_token: t}") == [
        "routing.yaml:6: receivers[0].webhook_configs[0].http_config: at most one of basic_auth, oauth2, "
        "bearer_token & bearer_token_file must be configured"]
    assert http("{authorization: {type: Basic, credentials: c}}") == [
        'routing.yaml:6: receivers[0].webhook_configs[0].http_config: authorization type cannot be set to "basic", '
        'use "basic_auth" instead']
    assert http("{oauth2: {client_id: a, token_url: 'http://t'}}") == [
        "routing.yaml:6: receivers[0].webhook_configs[0].http_config: either oauth2 client_secret or "
        "client_secret_file must be configured"]
    assert http("{oauth2: {client_id: a, client_secret: b, token_url: 'http://t'}, basic_auth: {username: u}}") == [
        "routing.yaml:6: receivers[0].webhook_configs[0].http_config: at most one of basic_auth, oauth2 & "
        "authorization must be configured"]
    cfg = load_text(RCV + "    webex_configs: [{room_id: x, http_config: {bearer_token: t0ken}}]\n", "routing.yaml")
    auth = cfg.receivers[0].webex_configs[0].http_config.authorization
    assert (auth.type, auth.credentials) == ("Bearer", "t0ken")  # bearer_token read as authorization


GLOBALS = ("global:\n  wechat_api_secret: s\n  wechat_api_corp_id: c\n  victorops_api_key: k\n"
           "  telegram_api_url: https://tg.example\n  http_config: {basic_auth: {username: u, password: p}}\n"
           + RCV + "    wechat_configs: [{to_user: '@all'}]\n    victorops_configs: [{routing_key: rk}]\n"
           "    telegram_configs: [{bot_token: t, chat_id: -1, message: '{{ template \"%s\" . }}'}]\n")


def test_globals_fill_the_new_integrations_and_go_templates_are_checked(amtemplate):
    cfg = load_text(GLOBALS % "telegram.default.message", "routing.yaml")
    r = cfg.receivers[0]
    assert (r.wechat_configs[0].api_secret, r.wechat_configs[0].corp_id, r.victorops_configs[0].api_key) == \
        ("s", "c", "k")
    assert r.telegram_configs[0].api_url == "https://tg.example"
    assert isinstance(r.telegram_configs[0].message, GoText) and cfg.warnings == []  # Alertmanager's runs it
    assert r.victorops_configs[0].http_config.basic_auth.username == "u"  # the global http_config
    with pytest.raises(ConfigError) as exc:
        load_text(GLOBALS % "x", "routing.yaml")
    assert exc.value.errors == ['routing.yaml:12: receivers[0].telegram_configs[0].message: template: :1:12: '
                                'executing "" at <{{template "x" .}}>: template "x" not defined']


def test_without_the_helper_a_go_template_is_warned_and_the_default_used(monkeypatch):
    monkeypatch.setenv("KUBESIGHT_AMTEMPLATE", "/nonexistent/kubesight-amtemplate")
    cfg = load_text(GLOBALS % "x", "routing.yaml")
    assert cfg.receivers[0].telegram_configs[0].message == "$title\n$alerts"
    assert cfg.warnings == ["routing.yaml:12: receivers[0].telegram_configs[0].message: a Go template needs "
                            "kubesight-amtemplate (make amtemplate); kubesight's default is used here (its own "
                            "templates are $title, $alerts, $label_NAME ...)"]


def test_alertmanager_globals_and_templates_load_and_slack_takes_the_global_url(amtemplate):
    cfg = load_text("global: {resolve_timeout: 5m, smtp_smarthost: 'mail:25', slack_api_url: 'https://hooks/x'}\n"
                    "templates: ['/etc/am/*.tmpl']\nroute: {receiver: r}\nreceivers:\n  - name: r\n"
                    "    slack_configs: [{channel: '#ops'}]\n", "routing.yaml")
    assert cfg.global_.resolve_timeout == 300.0 and cfg.receivers[0].slack_configs[0].api_url == "https://hooks/x"
    assert cfg.warnings == []  # with Alertmanager's template package (matching no file is no error there either)


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


def test_the_original_text_served_to_amtool_hides_every_secret():
    """``/api/v2/status`` serves ``original`` (``amtool config show``): secrets show as <secret>, as in Alertmanager."""
    secrets = ["whSECRET1", "rkSECRET2", "pwSECRET3", "tkSECRET4", "skSECRET5", "csSECRET6", "akSECRET7"]
    text = ("global: {smtp_auth_password: pwSECRET3, external_url: 'http://ks.example'}\n"
            "route: {receiver: r}  # the root\n"
            "receivers:\n  - name: r\n"
            "    webhook_configs: [{url: 'http://h/whSECRET1'}]\n"
            "    pagerduty_configs: [{routing_key: rkSECRET2, client: kubesight}]\n"
            "    telegram_configs: [{bot_token: tkSECRET4, chat_id: 1}]\n"
            "    sns_configs: [{topic_arn: t, sigv4: {access_key: akSECRET7, secret_key: skSECRET5}}]\n"
            "    discord_configs:\n      - webhook_url: 'http://d/x'\n        http_config:\n          oauth2:\n"
            "            client_id: kubesight\n            client_secret: csSECRET6\n"
            "            token_url: 'https://idp/token'\n")
    shown = load_text(text, "routing.yaml").original
    assert not [s for s in secrets if s in shown]
    assert shown.count("<secret>") == 8  # the discord URL too (receiver URLs carry tokens)
    assert "route: {receiver: r}\n" in shown and "# the root" not in shown and "client: kubesight" in shown
    assert "external_url: 'http://ks.example'" in shown and "token_url: 'https://idp/token'" in shown


def test_a_literal_dollar_in_message_text_is_sent_as_written_with_a_warning():
    # Alertmanager sends "$5" as written; kubesight's own fields ($title ...) keep working beside it
    cfg = load_text("route: {receiver: r}\nreceivers:\n  - name: r\n    slack_configs:\n"
                    "      - {api_url: 'https://h/x', text: 'costs $5 on $podname', title: 'see $title'}\n",
                    "routing.yaml")
    slack = cfg.receivers[0].slack_configs[0]
    assert slack.text == "costs $$5 on $$podname" and slack.title == "see $title"
    assert cfg.warnings == ["routing.yaml:5: receivers[0].slack_configs[0].text: not a kubesight template ($title, "
                            "$alerts, $label_NAME ...); sent as written, as Alertmanager would"]


def test_any_value_of_the_demo_routing_files_replaced_by_a_wrong_type_is_a_config_error():
    """Every problem is a ConfigError naming file, line and path: never a TypeError of the checks that run before the
    schema (``receivers: 5``, ``routes: true`` raised one, and a followed file was never read again)."""
    from pathlib import Path

    import yaml

    from tests.collectors.test_cloud_robustness import _paths, _replace

    root = Path(__file__).resolve().parents[2] / "deploy" / "demo"
    tried, crashes = 0, []
    for name in ("routing.yaml", "cluster-routing.yaml"):
        doc = yaml.safe_load((root / name).read_text())
        for path in _paths(doc):
            for new in (None, 5, True, "x", [], {}, ["x"], {"a": 1}):
                tried += 1
                try:
                    load_text(yaml.safe_dump(_replace(doc, path, new)), name)
                except ConfigError:
                    pass
                except Exception as exc:  # noqa: BLE001 - the point of the test
                    crashes.append(f"{name} {list(path)} = {new!r}: {type(exc).__name__}: {exc}")
    assert tried > 500 and crashes[:20] == []


def test_what_alertmanager_accepts_loads_an_empty_child_receiver_and_an_interval_without_ranges():
    """``receiver: ''`` on a child inherits the parent's, and a named time interval may list no ranges (it never
    holds): both were refused at load."""
    from alerts.routing import Router
    from alerts.timeintervals import active

    cfg = load_text("""
route:
  receiver: r
  routes:
    - {matchers: ['a="1"'], receiver: '', mute_time_intervals: [never]}
receivers: [{name: r}]
time_intervals:
  - name: never
""")
    router = Router(cfg)
    (d,) = router.destinations({"a": "1"})
    assert d.receiver == "r" and not active(router.intervals["never"], 0.0) and not router.muted(d.route, 0.0)


def test_an_empty_list_in_a_time_interval_matches_nothing_and_a_null_is_absent():
    """Alertmanager (Go's empty slice): `weekdays: []` never matches, so a mute interval of it never mutes and an
    active interval of it never lets through; kubesight read [] as "not set" and muted the route for good."""
    from alerts.routing import Router

    cfg = load_text("""
route:
  receiver: r
  routes:
    - {matchers: ['a="1"'], receiver: r, mute_time_intervals: [empty]}
    - {matchers: ['a="2"'], receiver: r, active_time_intervals: [empty]}
    - {matchers: ['a="3"'], receiver: r, mute_time_intervals: [nulls]}
receivers: [{name: r}]
time_intervals:
  - name: empty
    time_intervals: [{weekdays: [], times: [], days_of_month: [], months: [], years: []}]
  - name: nulls
    time_intervals: [{weekdays: ~, times: ~, years: ~, location: ~}]
""")
    router = Router(cfg)
    (mute,), (act,), (null,) = (router.destinations({"a": v}) for v in "123")
    now = 1_764_400_000.0
    assert not router.muted(mute.route, now)  # never mutes
    assert router.muted(act.route, now)  # never active: always muted
    assert router.muted(null.route, now)  # nulls are absent: the interval is any time


def test_a_null_in_a_match_map_is_the_empty_value_as_in_go():
    """Go's yaml.v2 stores "" for a null map value (only a null field is left unset): `match: {severity: ~}` is
    Alertmanager's `severity=""` (alerts without a severity), not a route for every severity."""
    cfg = load_text("route:\n  receiver: r\n  routes:\n    - match: {team: db, severity: ~}\n      receiver: r\n"
                    "receivers: [{name: r}]\ninhibit_rules:\n  - source_match: {a: ~}\n    target_match: {b: x}\n")
    assert [str(m) for m in cfg.route.routes[0].matchers] == ['team="db"', 'severity=""']
    assert [str(m) for m in cfg.inhibit_rules[0].source_matchers] == ['a=""']


def test_unreadable_secret_files_are_reported_with_their_lines(tmp_path, monkeypatch):
    """Every ``*_file`` of a receiver, its http_config (TLS too) and the globals is opened at load, as the worker
    reads them there: a missing one is the file's error, with its line (it was accepted, then stopped the worker).
    Relative paths from the working directory, where the worker looks; amtool check-config does not look at all."""
    (tmp_path / "ca.pem").write_text("x\n")
    monkeypatch.chdir(tmp_path)
    text = ("global:\n  smtp_auth_password_file: /nonexistent/g\n"
            "route: {receiver: r}\nreceivers:\n  - name: r\n    webhook_configs:\n      - url_file: /nonexistent/url\n"
            "        http_config:\n          tls_config: {ca_file: ca.pem, cert_file: c.pem, key_file: /nonexistent/k}\n"
            "    email_configs:\n      - to: a@b\n        from: c@d\n        smarthost: h:25\n        auth_username: u\n"
            "        auth_password_file: /nonexistent/pw\n"
            "    pagerduty_configs: [{routing_key_file: " + str(tmp_path) + "}]\n")
    assert errors(text) == [
        "routing.yaml:2: global.smtp_auth_password_file: cannot read the file named there: No such file or directory",
        "routing.yaml:7: receivers[0].webhook_configs[0].url_file: cannot read the file named there: No such file or "
        "directory",
        f"routing.yaml:9: receivers[0].webhook_configs[0].http_config.tls_config.cert_file: cannot read c.pem "
        f"(relative to the working directory, {tmp_path}): No such file or directory",
        "routing.yaml:9: receivers[0].webhook_configs[0].http_config.tls_config.key_file: cannot read /nonexistent/k: "
        "No such file or directory",
        "routing.yaml:15: receivers[0].email_configs[0].auth_password_file: cannot read the file named there: No such "
        "file or directory",
        "routing.yaml:16: receivers[0].pagerduty_configs[0].routing_key_file: cannot read the file named there: "
        "Is a directory"]
    assert load_text(text, "routing.yaml", files=False).receivers[0].webhook_configs[0].url_file == "/nonexistent/url"
