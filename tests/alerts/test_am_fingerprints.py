"""Fingerprints and group keys bit for bit as the real Alertmanager computes them (issue 14 #2).

Alerts are posted to a real Alertmanager; its ``/api/v2/alerts`` gives each alert's fingerprint and
its webhook notifications give each group's ``groupKey``.  kubesight's ``fingerprint()`` and its
router's group keys must be the same strings, for the same config, on every label set of the table.
"""

from __future__ import annotations

from datetime import UTC, datetime

from alerts.config import load_text
from alerts.routing import Router
from core.records import Alert, fingerprint
from tests.alerts.amtools import Alertmanager, WebhookSink, wait_for

ROUTES = r"""
route:
  receiver: sink
  group_by: [alertname, namespace]
  group_wait: 0s
  group_interval: 1h
  repeat_interval: 24h
  routes:
    - matchers: ['team="b"', 'severity=~"crit.*"', 'team!="a"']   # sorted in the key: name, value, operator
      group_by: [alertname, team, msg]
      continue: true
    - matchers: ['{msg=~"say \"hi\".*"}']
      group_by: ['...']
    - matchers: ['unicode="é✓"']
      routes:
        - matchers: ['x!~"y|z"', 'alertname="Nested"']
        - matchers: ['alertname=~"Nested|Other"']
    - matchers: ['tab=~"a\tb"', "line=\"a\\nb\""]
      group_by: [tab, line, alertname, namespace]
receivers:
  - name: sink
    webhook_configs: [{url: URL, send_resolved: false}]
"""

LABELS = [
    {"alertname": "Watchdog"},
    {"alertname": "X", "namespace": "shop", "severity": "critical", "team": "b"},
    {"alertname": "X", "namespace": "shop", "severity": "critical", "team": "b", "msg": "with, comma and = sign"},
    {"alertname": "Quote", "msg": 'say "hi" \\ now', "namespace": "n"},
    {"alertname": "U", "unicode": "é✓", "namespace": "ns-ü 🚀"},
    {"alertname": "Nested", "unicode": "é✓", "x": "w", "namespace": "a"},
    {"alertname": "Nested", "unicode": "é✓", "x": "y", "namespace": "a"},
    {"alertname": "Ctl", "tab": "a\tb", "line": "a\nb", "namespace": "zero\u200bwidth\x85\x7f"},
    {"Z": "1", "a": "2", "alertname": "Case", "_u": "3", "namespace": "B"},
    {"alertname": "Empty", "namespace": "", "team": ""},
    {"alertname": "Long", "namespace": "x" * 300, "pod": "cart-7d9f6c-abcde", "node": "ip-10-0-0-1.ec2.internal"},
]


def test_fingerprints_and_group_keys_match_the_real_alertmanager(tmp_path):
    with WebhookSink() as sink:
        config = ROUTES.replace("URL", sink.url)
        router = Router(load_text(config, "am.yaml"))
        expected = {fingerprint(ls): sorted(d.group_key for d in router.destinations(ls)) for ls in LABELS}
        assert len(expected) == len(LABELS)
        with Alertmanager(config, tmp_path) as am:
            now = datetime.now(UTC).isoformat()
            am.post_alerts([{"labels": ls, "annotations": {}, "startsAt": now} for ls in LABELS])
            got = wait_for(lambda: len(x := am.get("/api/v2/alerts")) == len(LABELS) and x, 10,
                           "the alerts in Alertmanager's API")
            # fingerprints: Alertmanager's, kubesight's function, and the Alert record's (the Kafka key)
            theirs = {a["fingerprint"]: a["labels"] for a in got}
            assert sorted(theirs) == sorted(expected)
            for fp, ls in theirs.items():
                assert Alert(ls).fingerprint == fingerprint(ls) == fp
            # group keys: every (group key, fingerprint) pair Alertmanager notified
            want = sorted((k, fp) for fp, keys in expected.items() for k in keys)

            def pairs():
                return sorted({(b["groupKey"], a["fingerprint"]) for b in list(sink.bodies) for a in b["alerts"]})

            wait_for(lambda: len(pairs()) >= len(want), 15, f"{len(want)} (group, alert) pairs by webhook")
            assert pairs() == want
            # the group labels the webhook carries are the ones kubesight groups by
            for b in sink.bodies:
                ls = next(a["labels"] for a in b["alerts"])
                (d,) = [d for d in router.destinations(ls) if d.group_key == b["groupKey"]]
                assert d.group_labels == b["groupLabels"]


def test_a_few_fingerprints_as_constants():
    """Known values (taken from Alertmanager 0.25), so a regression shows without the binary."""
    assert fingerprint({}) == "cbf29ce484222325"
    assert fingerprint({"alertname": "Watchdog"}) == "003b0a0f7d3fa569"
