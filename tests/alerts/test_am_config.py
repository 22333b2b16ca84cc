"""Alertmanager config parity with the real amtool (issue 14 #1, #6).

* check-config: on a table of valid and broken files, kubesight accepts what ``amtool check-config``
  accepts and refuses what it refuses;
* routing: on a table of configs x label sets, ``kubesight``'s router names the receivers that
  ``amtool config routes test`` names, in the same order.
"""

from __future__ import annotations

import pytest

from alerts.config import load_text
from alerts.routing import Router
from core.matchers import quote
from core.yamlconfig import ConfigError
from tests.alerts.amtools import amtool

R = "receivers: [{name: r}, {name: s}, {name: t}]\n"
ROOT = "route:\n  receiver: r\n"
RX = "receivers:\n  - name: r\n"  # one receiver r, its integrations follow (a file starts with ROOT + RX)
# the *_file keys below name /dev/null: kubesight reads them at load and refuses a file that cannot be read, which
# amtool check-config does not look at (test_config.test_unreadable_secret_files_are_reported_with_their_lines)


# prometheus/alertmanager's config/testdata/conf.good.yml (its comments left out): every integration of a real file
ALERTMANAGER_GOOD = r"""global:
  smtp_smarthost: 'localhost:25'
  smtp_from: 'alertmanager@example.org'
  smtp_auth_username: 'alertmanager'
  smtp_auth_password: "multiline\nmysecret"
  smtp_hello: "host.example.org"
  slack_api_url: "http://mysecret.example.com/"
  http_config:
    proxy_url: 'http://127.0.0.1:1025'
templates:
  - '/etc/alertmanager/template/*.tmpl'
route:
  group_by: ['alertname', 'cluster', 'service']
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 3h
  receiver: team-X-mails
  routes:
    - match_re:
        service: ^(foo1|foo2|baz)$
      receiver: team-X-mails
      routes:
        - match:
            severity: critical
          receiver: team-X-pager
    - match:
        service: files
      receiver: team-Y-mails
      routes:
        - match:
            severity: critical
          receiver: team-Y-pager
    - match:
        service: database
      receiver: team-DB-pager
      group_by: [alertname, cluster, database]
      routes:
        - match:
            owner2: team-X
          receiver: team-X-pager
          continue: true
        - match:
            owner: team-Y
          receiver: team-Y-pager
inhibit_rules:
  - source_match:
      severity: 'critical'
    target_match:
      severity: 'warning'
    equal: ['alertname', 'cluster', 'service']
receivers:
  - name: 'team-X-mails'
    email_configs:
      - to: 'team-X+alerts@example.org'
  - name: 'team-X-pager'
    email_configs:
      - to: 'team-X+alerts-critical@example.org'
    pagerduty_configs:
      - routing_key: "mysecret"
  - name: 'team-Y-mails'
    email_configs:
      - to: 'team-Y+alerts@example.org'
  - name: 'team-Y-pager'
    pagerduty_configs:
      - routing_key: "mysecret"
  - name: 'team-DB-pager'
    pagerduty_configs:
      - routing_key: "mysecret"
  - name: victorOps-receiver
    victorops_configs:
      - api_key: mysecret
        routing_key: Sample_route
  - name: opsGenie-receiver
    opsgenie_configs:
      - api_key: mysecret
  - name: pushover-receiver
    pushover_configs:
      - token: mysecret
        user_key: key
  - name: slack-receiver
    slack_configs:
      - channel: '#my-channel'
        image_url: 'http://some.img.com/img.png'
"""


def ti(body: str) -> str:
    return ROOT + R + "time_intervals:\n  - name: ti\n    time_intervals:\n      - " + body + "\n"


CHECK = {
    # ---- accepted by Alertmanager: kubesight must load them
    "minimal": ROOT + R,
    "deprecated match and match_re": ROOT + "  routes:\n    - match: {team: a}\n      match_re: {sev: 'crit.*'}\n"
                                            "      receiver: s\n" + R,
    "brace matchers": ROOT + "  routes:\n    - matchers: ['{owner=\"team-C\", sev=~\"crit|warn\"}']\n      receiver: s\n" + R,
    "RE2 unicode class": ROOT + "  routes:\n    - matchers: ['team=~\"\\\\p{Lu}.*\"']\n      receiver: s\n" + R,
    "deprecated source_match/target_match": ROOT + R + "inhibit_rules:\n  - source_match: {a: b}\n"
                                                       "    target_match_re: {c: 'd.*'}\n    equal: [node]\n",
    "inhibit rule without matchers": ROOT + R + "inhibit_rules:\n  - equal: [node]\n",
    "deprecated top-level mute_time_intervals": ROOT + "  routes:\n    - matchers: [a=b]\n      receiver: s\n"
                                                "      mute_time_intervals: [w]\n" + R
                                                + "mute_time_intervals:\n  - name: w\n    time_intervals:\n"
                                                  "      - weekdays: [saturday, sunday]\n",
    "time intervals, every field": ti("{weekdays: ['sunday:saturday', monday], days_of_month: ['1:5', '-3:-1'], "
                                      "months: ['january:march', '12'], years: ['2020:2030'], location: Europe/Berlin, "
                                      "times: [{start_time: '00:00', end_time: '24:00'}]}"),
    "route with time intervals": ROOT + "  routes:\n    - matchers: [a=b]\n      receiver: s\n"
                                        "      active_time_intervals: [ti]\n" + R
                                 + "time_intervals:\n  - name: ti\n    time_intervals: [{weekdays: [monday]}]\n",
    "globals, templates, Slack's global URL": "global:\n  resolve_timeout: 5m\n  smtp_smarthost: 'mail:25'\n"
                                              "  smtp_from: am@example.com\n  slack_api_url: https://hooks.example/x\n"
                                              "templates: ['/etc/alertmanager/*.tmpl']\n" + ROOT
                                              + "receivers:\n  - name: r\n    slack_configs: [{channel: '#ops'}]\n",
    "group by all, durations": "route:\n  receiver: r\n  group_by: ['...']\n  group_wait: 500ms\n"
                               "  group_interval: 1h30m\n  repeat_interval: 1d\n" + R,
    "webhook": ROOT + "receivers:\n  - name: r\n    webhook_configs:\n      - url: http://127.0.0.1:9/hook\n"
                      "        send_resolved: false\n        max_alerts: 10\n",
    # every other integration Alertmanager 0.25 knows (issue 14 #1: "any config amtool accepts loads")
    "pushover": ROOT + RX + "    pushover_configs: [{user_key: u, token: t, priority: '1', retry: 1m, expire: 2h, html: true,\n"
                     "                        url_title: k8s, sound: siren, title: 'x {{ .Status }}'}]\n",
    "victorops, global key": "global: {victorops_api_key: k, victorops_api_url: 'https://vo.example/x/'}\n" + ROOT
                             + RX + "    victorops_configs: [{routing_key: ops, message_type: WARNING,\n"
                             "                         custom_fields: {team: a}}]\n",
    "victorops, api_key_file": ROOT + RX + "    victorops_configs: [{routing_key: ops, api_key_file: /dev/null}]\n",
    "wechat, globals": "global: {wechat_api_secret: s, wechat_api_corp_id: c}\n" + ROOT + RX
                       + "    wechat_configs: [{to_user: '@all', agent_id: '1', message_type: markdown}]\n",
    "sns topic, sigv4 keys": ROOT + RX + "    sns_configs: [{topic_arn: 'arn:aws:sns:eu-west-1:1:t', subject: s,\n"
                             "                   attributes: {a: b}, sigv4: {region: eu-west-1, access_key: AK,\n"
                             "                   secret_key: SK}}]\n",
    "sns phone, no sigv4": ROOT + RX + "    sns_configs: [{phone_number: '+15551234567'}]\n",
    "sns with all three targets": ROOT + RX + "    sns_configs: [{topic_arn: a, target_arn: b, phone_number: c}]\n",
    "telegram": ROOT + RX + "    telegram_configs: [{bot_token: t, chat_id: -100123, parse_mode: MarkdownV2,\n"
                     "                        disable_notifications: true}]\n",
    "webex, bearer_token": ROOT + RX + "    webex_configs: [{room_id: r, http_config: {bearer_token: t}}]\n",
    "webex, authorization file": ROOT + RX + "    webex_configs: [{room_id: r, http_config: {authorization:\n"
                                      "                     {credentials_file: /dev/null}}}]\n",
    "discord": ROOT + RX + "    discord_configs: [{webhook_url: 'https://discord.example/api/webhooks/1/x', title: t}]\n",
    "pagerduty v1 service_key, images, links, http_config": ROOT + RX + "    pagerduty_configs:\n"
        "      - {service_key: k, images: [{src: a, alt: b, href: c}], links: [{href: a, text: b}],\n"
        "         http_config: {proxy_url: 'http://proxy:3128', tls_config: {server_name: pd, min_version: TLS12}}}\n",
    "email auth_secret, global smtp_auth_secret": "global: {smtp_auth_secret: g}\n" + ROOT + RX
                                                  + "    email_configs: [{to: a@b, from: c@d, smarthost: 'h:25',\n"
                                                  "                     auth_secret: s, auth_username: u}]\n",
    "http_config on webhook and opsgenie": ROOT + RX + "    webhook_configs: [{url: 'http://x/', http_config: {basic_auth:\n"
                                                "                      {username: u, password_file: /dev/null},\n"
                                                "                      follow_redirects: false}}]\n"
                                                "    opsgenie_configs: [{api_key: k, http_config: {authorization:\n"
                                                "                       {type: GenieKey, credentials: k}}}]\n",
    "global http_config": "global: {http_config: {bearer_token: t}}\n" + ROOT + RX
                          + "    discord_configs: [{webhook_url: 'http://x/y'}]\n",
    "slack, Alertmanager's attachment fields": ROOT + RX + "    slack_configs:\n      - api_url: https://hooks.example/x\n"
        "        title: '{{ template \"slack.default.title\" . }}'\n        text: 'see $title'\n"
        "        color: '{{ if eq .Status \"firing\" }}danger{{ else }}good{{ end }}'\n        icon_emoji: ':fire:'\n"
        "        link_names: true\n        short_fields: true\n        mrkdwn_in: [text]\n"
        "        fields: [{title: cluster, value: prod}]\n"
        "        actions: [{type: button, text: Runbook, url: 'https://runbooks/x'},\n"
        "                  {type: button, text: Ack, name: ack, value: 'yes', confirm: {text: 'Sure?'}}]\n",
    "opsgenie responders, entity, note, templated priority": ROOT + RX + "    opsgenie_configs:\n"
        "      - {api_key: k, entity: shop, note: n, actions: 'a, b', update_alerts: true,\n"
        "         priority: '{{ if eq .CommonLabels.severity \"critical\" }}P1{{ else }}P3{{ end }}',\n"
        "         responders: [{name: sre, type: Team}, {id: 4513b7ea, type: schedule}, {username: a@b, type: user}]}\n",
    "http_config oauth2": ROOT + RX + "    webhook_configs: [{url: 'http://x/', http_config: {oauth2: {client_id: a,\n"
                                      "      client_secret_file: /dev/null, token_url: 'https://idp/token', scopes: [alerts],\n"
                                      "      endpoint_params: {audience: am}, tls_config: {insecure_skip_verify: true},\n"
                                      "      proxy_url: 'http://proxy:3128'}}}]\n",
    "a literal $ in message text": ROOT + RX + "    slack_configs: [{api_url: 'https://h/x', text: 'costs $5 on $podname',"
                                    " title: 'see $title'}]\n",
    "Alertmanager's own config/testdata/conf.good.yml": ALERTMANAGER_GOOD,
    # ---- refused by Alertmanager: kubesight must refuse them
    "oauth2 without a secret": ROOT + RX + "    webhook_configs: [{url: 'http://x/', http_config: {oauth2: {client_id: a,"
                                           " token_url: 'http://t'}}}]\n",
    "oauth2 without token_url": ROOT + RX + "    webhook_configs: [{url: 'http://x/', http_config: {oauth2: {client_id: a,"
                                            " client_secret: b}}}]\n",
    "oauth2 and basic_auth": ROOT + RX + "    webhook_configs: [{url: 'http://x/', http_config: {oauth2: {client_id: a,"
                                         " client_secret: b, token_url: 'http://t'}, basic_auth: {username: u}}}]\n",
    "slack action without text": ROOT + RX + "    slack_configs: [{api_url: 'https://h/x', actions: [{type: button, "
                                             "url: 'https://r'}]}]\n",
    "slack action without url or name": ROOT + RX + "    slack_configs: [{api_url: 'https://h/x', actions: [{type: "
                                                    "button, text: t}]}]\n",
    "slack field without value": ROOT + RX + "    slack_configs: [{api_url: 'https://h/x', fields: [{title: t}]}]\n",
    "opsgenie responder of an unknown type": ROOT + RX + "    opsgenie_configs: [{api_key: k, responders: [{name: n, "
                                                         "type: squad}]}]\n",
    "opsgenie responder without id, name or username": ROOT + RX + "    opsgenie_configs: [{api_key: k, responders: "
                                                                   "[{type: team}]}]\n",
    "pushover without token": ROOT + RX + "    pushover_configs: [{user_key: u}]\n",
    "pushover, bad retry": ROOT + RX + "    pushover_configs: [{user_key: u, token: t, retry: 10x}]\n",
    "pushover, unknown key": ROOT + RX + "    pushover_configs: [{user_key: u, token: t, devices: d}]\n",
    "victorops without api key": ROOT + RX + "    victorops_configs: [{routing_key: ops}]\n",
    "victorops without routing key": ROOT + RX + "    victorops_configs: [{api_key: k}]\n",
    "victorops, reserved custom field": ROOT + RX + "    victorops_configs: [{routing_key: r, api_key: k,\n"
                                             "                         custom_fields: {entity_state: x}}]\n",
    "victorops, api_key and api_key_file": ROOT + RX + "    victorops_configs: [{routing_key: r, api_key: k, "
                                                "api_key_file: /dev/null}]\n",
    "wechat without corp_id": ROOT + RX + "    wechat_configs: [{api_secret: s}]\n",
    "wechat, html message type": "global: {wechat_api_secret: s, wechat_api_corp_id: c}\n" + ROOT + RX
                                 + "    wechat_configs: [{message_type: html}]\n",
    "wechat, ftp api_url": ROOT + RX + "    wechat_configs: [{api_secret: s, corp_id: c, api_url: 'ftp://x/'}]\n",
    "sns with two targets": ROOT + RX + "    sns_configs: [{topic_arn: a, target_arn: b}]\n",
    "sns without a target": ROOT + RX + "    sns_configs: [{subject: s}]\n",
    "sns access key without secret": ROOT + RX + "    sns_configs: [{topic_arn: a, sigv4: {access_key: AK}}]\n",
    "telegram without chat_id": ROOT + RX + "    telegram_configs: [{bot_token: t}]\n",
    "telegram without bot_token": ROOT + RX + "    telegram_configs: [{chat_id: 1}]\n",
    "telegram, unknown parse_mode": ROOT + RX + "    telegram_configs: [{bot_token: t, chat_id: 1, parse_mode: Foo}]\n",
    "telegram, chat name instead of id": ROOT + RX + "    telegram_configs: [{bot_token: t, chat_id: '@ops'}]\n",
    "webex without authorization": ROOT + RX + "    webex_configs: [{room_id: r}]\n",
    "webex, authorization only in the global http_config": "global: {http_config: {bearer_token: t}}\n" + ROOT
                                                           + RX + "    webex_configs: [{room_id: r}]\n",
    "webex without room_id": ROOT + RX + "    webex_configs: [{http_config: {bearer_token: t}}]\n",
    "discord without url": ROOT + RX + "    discord_configs: [{title: t}]\n",
    "discord, ftp url": ROOT + RX + "    discord_configs: [{webhook_url: 'ftp://x/y'}]\n",
    "pagerduty without any key": ROOT + RX + "    pagerduty_configs: [{client: x}]\n",
    "pagerduty service_key and its file": ROOT + RX + "    pagerduty_configs: [{service_key: k, service_key_file: /dev/null}]\n",
    "email http_config": ROOT + RX + "    email_configs: [{to: a@b, from: c@d, smarthost: 'h:25', http_config: {}}]\n",
    "http_config basic_auth and bearer_token": ROOT + RX + "    webhook_configs: [{url: 'http://x/', http_config:\n"
                                                    "      {basic_auth: {username: u, password: p}, bearer_token: t}}]\n",
    "http_config authorization type Basic": ROOT + RX + "    webhook_configs: [{url: 'http://x/', http_config:\n"
                                                 "      {authorization: {type: Basic, credentials: c}}}]\n",
    "http_config password and password_file": ROOT + RX + "    webhook_configs: [{url: 'http://x/', http_config:\n"
                                                   "      {basic_auth: {username: u, password: p, password_file: /dev/null}}}]\n",
    "http_config unknown key": ROOT + RX + "    webhook_configs: [{url: 'http://x/', http_config: {no_proxy: x}}]\n",
    "lookahead regex": ROOT + "  routes:\n    - matchers: ['a=~\"(?!x).*\"']\n      receiver: s\n" + R,
    "backreference in match_re": ROOT + "  routes:\n    - match_re: {a: '(x)\\1'}\n      receiver: s\n" + R,
    "weekdays saturday:sunday": ti("{weekdays: ['saturday:sunday']}"),
    "weekday as a number": ti("{weekdays: ['1']}"),
    "times start after end": ti("{times: [{start_time: '17:00', end_time: '09:00'}]}"),
    "time with one hour digit": ti("{times: [{start_time: '9:00', end_time: '17:00'}]}"),
    "days_of_month negative to positive": ti("{days_of_month: ['-1:5']}"),
    "days_of_month zero": ti("{days_of_month: ['0']}"),
    "months march:january": ti("{months: ['march:january']}"),
    # ---- read as Go's yaml.v2 reads them (an audit of 2026-11-29 against amtool 0.25)
    "unquoted times, days and years are their text": ti("{times: [{start_time: 09:00, end_time: 17:00}], "
                                                        "days_of_month: [1:5], years: [2024]}"),
    "an unquoted number in match is its text": ROOT + "  routes:\n    - match: {code: 500}\n      receiver: s\n" + R,
    "nulls are absent": "route:\n  receiver: r\n  routes:\n    - matchers: ~\n      receiver: s\n"
                        "      mute_time_intervals: ~\n" + R + "inhibit_rules: ~\ntime_intervals: ~\nglobal: ~\n",
    "a null inside a time interval is absent": ti("{weekdays: ~, times: ~, location: ~}"),
    "empty lists in a time interval": ti("{weekdays: [], times: [], years: []}"),
    "a year Go's Atoi refuses": ti("{years: ['2_024']}"),
    "a day Go's Atoi refuses": ti("{days_of_month: [' 1']}"),
    "a regex with \\C (RE2 takes it, Go does not)": ROOT + "  routes:\n    - match_re: {a: 'x\\C'}\n      receiver: s\n" + R,
    "a regex with (?<name>) (Go of Alertmanager 0.25 refuses it)": ROOT + "  routes:\n    - matchers: ['a=~\"(?<n>x)\"']\n"
                                                                         "      receiver: s\n" + R,
    "years backwards": ti("{years: ['2030:2020']}"),
    "unknown location": ti("{location: Mars/Olympus_Mons}"),
    "undefined receiver": "route:\n  receiver: nobody\n" + R,
    "root with matchers": ROOT + "  matchers: [a=b]\n" + R,
    "root with continue": ROOT + "  continue: true\n" + R,
    "unknown key": ROOT + "  reciever: s\n" + R,
    "duplicate receiver": ROOT + "receivers: [{name: r}, {name: r}]\n",
    "undefined time interval": ROOT + "  routes:\n    - matchers: [a=b]\n      mute_time_intervals: [nope]\n" + R,
    "duplicated group_by label": "route:\n  receiver: r\n  group_by: [a, a]\n" + R,
    "match with an invalid label name": ROOT + "  routes:\n    - match: {a-b: c}\n      receiver: s\n" + R,
    "repeat_interval zero": "route:\n  receiver: r\n  repeat_interval: 0s\n" + R,
    "bad duration": "route:\n  receiver: r\n  group_wait: soon\n" + R,
    "slack without any URL": ROOT + "receivers:\n  - name: r\n    slack_configs: [{channel: '#ops'}]\n",
    "invalid matcher": ROOT + "  routes:\n    - matchers: ['team']\n      receiver: s\n" + R,
}


def _kubesight_accepts(text: str) -> tuple[bool, str]:
    try:
        load_text(text, "am.yml")
        return True, ""
    except ConfigError as exc:
        return False, str(exc)


@pytest.mark.parametrize("name", list(CHECK))
def test_check_config_parity_with_amtool(name, tmp_path):
    path = tmp_path / "am.yml"
    path.write_text(CHECK[name])
    am = amtool("check-config", str(path))
    ours, why = _kubesight_accepts(CHECK[name])
    assert (am.returncode == 0) == ours, (
        f"amtool {'accepts' if am.returncode == 0 else 'refuses'}: {am.stdout.strip()} {am.stderr.strip()}\n"
        f"kubesight {'accepts' if ours else 'refuses'}: {why}")


def test_the_table_has_both_sides(tmp_path):
    """The parity above means something only if amtool accepts some files and refuses others."""
    verdicts = set()
    for text in CHECK.values():
        (tmp_path / "am.yml").write_text(text)
        verdicts.add(amtool("check-config", str(tmp_path / "am.yml")).returncode == 0)
    assert verdicts == {True, False}


CONFIGS = {
    "tree": r"""
route:
  receiver: r
  group_by: [alertname]
  routes:
    - matchers: ['severity="critical"']
      receiver: s
      continue: true
    - match_re: {namespace: 'kube-.*'}
      receiver: t
      routes:
        - match: {alertname: KubeNodeNotReady}
          receiver: s
        - matchers: ['env=~"prod"', 'env!~"prod-.+"']
          receiver: r
          continue: true
        - matchers: ['{env="prod", team=~"\\p{Lu}.*"}']
          receiver: t
    - matchers: ['team=~".+"', 'team!="c"']
      receiver: s
      routes:
        - matchers: ['severity=~"info|warning"']
receivers: [{name: r}, {name: s}, {name: t}]
""",
    "continue everywhere": r"""
route:
  receiver: r
  routes:
    - {matchers: ['a=~"1|2"'], receiver: s, continue: true}
    - {matchers: ['a="1"'], receiver: t, continue: true}
    - {matchers: ['b!="x"'], receiver: r, continue: true}
    - {match: {a: "2"}, receiver: s}
    - {matchers: ['a=~".*"'], receiver: t}
receivers: [{name: r}, {name: s}, {name: t}]
""",
}

LABELSETS = [
    {"alertname": "X"},
    {"alertname": "X", "severity": "critical"},
    {"alertname": "X", "severity": "critical", "namespace": "kube-system"},
    {"alertname": "KubeNodeNotReady", "namespace": "kube-system"},
    {"alertname": "Y", "namespace": "kube-system", "env": "prod"},
    {"alertname": "Y", "namespace": "kube-system", "env": "production"},
    {"alertname": "Y", "namespace": "kube-system", "env": "prod", "team": "Infra"},
    {"alertname": "Y", "namespace": "my-kube-system", "team": "a", "severity": "info"},
    {"alertname": "Y", "team": "c"},
    {"a": "1"},
    {"a": "2", "b": "x"},
    {"a": "3", "b": "x"},
    {"alertname": "Q", "team": 'say "hi"', "b": "x"},
]


@pytest.mark.parametrize("config", list(CONFIGS))
def test_routing_parity_with_amtool_routes_test(config, tmp_path):
    path = tmp_path / "am.yml"
    path.write_text(CONFIGS[config])
    assert amtool("check-config", str(path)).returncode == 0
    router = Router(load_text(CONFIGS[config], "am.yml"))
    mismatches, seen = [], set()
    for labels in LABELSETS:
        am = amtool("config", "routes", "test", f"--config.file={path}",
                    *[f"{k}={quote(v)}" for k, v in labels.items()])
        assert am.returncode == 0, am.stderr
        theirs = am.stdout.strip().split(",")
        ours = [d.receiver for d in router.destinations(labels)]
        seen.add(tuple(theirs))
        if ours != theirs:
            mismatches.append((labels, theirs, ours))
    assert mismatches == []
    assert len(seen) >= 3  # the label sets reach different receivers: the comparison is not trivial
