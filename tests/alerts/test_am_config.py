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
    # ---- refused by Alertmanager: kubesight must refuse them
    "lookahead regex": ROOT + "  routes:\n    - matchers: ['a=~\"(?!x).*\"']\n      receiver: s\n" + R,
    "backreference in match_re": ROOT + "  routes:\n    - match_re: {a: '(x)\\1'}\n      receiver: s\n" + R,
    "weekdays saturday:sunday": ti("{weekdays: ['saturday:sunday']}"),
    "weekday as a number": ti("{weekdays: ['1']}"),
    "times start after end": ti("{times: [{start_time: '17:00', end_time: '09:00'}]}"),
    "time with one hour digit": ti("{times: [{start_time: '9:00', end_time: '17:00'}]}"),
    "days_of_month negative to positive": ti("{days_of_month: ['-1:5']}"),
    "days_of_month zero": ti("{days_of_month: ['0']}"),
    "months march:january": ti("{months: ['march:january']}"),
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
