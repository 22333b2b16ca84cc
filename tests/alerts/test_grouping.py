"""Grouping timelines on a fake clock: group_wait, group_interval, repeat_interval, dedup, resolved."""

from alerts.config import load_text
from alerts.engine import Engine
from core.records import Alert

CFG = """
route:
  receiver: ops
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
receivers:
  - name: ops
    webhook_configs: [{url: "http://127.0.0.1:1/x", send_resolved: %s}]
"""


def A(pod, t, status="firing", name="PodDown"):
    return Alert({"alertname": name, "pod": pod}, status=status, startsAt=t, endsAt=t if status == "resolved" else None)


def run(inputs: dict, until: float, step: float = 5.0, send_resolved: bool = True):
    """Feed alerts at their times, tick every ``step``; return [(t, [(pod, status)...])] per notification."""
    eng, st, out = Engine(load_text(CFG % str(send_resolved).lower())), {}, []
    t = 0.0
    while t <= until:
        for a in inputs.get(t, []):
            eng.receive(a, st, now=t)
        for n in eng.tick(st, now=t):
            out.append((t, [(a["labels"]["pod"], a["status"]) for a in n["alerts"]]))
        t += step
    return out, st


def test_group_wait_gathers_alerts_into_one_notification():
    out, _ = run({0.0: [A("p1", 0.0)], 10.0: [A("p2", 10.0)], 20.0: [A("p3", 20.0)]}, until=60)
    assert out == [(30.0, [("p1", "firing"), ("p2", "firing"), ("p3", "firing")])]


def test_duplicates_never_notify():
    dups = {t: [A("p1", 0.0)] for t in range(0, 600, 5)}
    out, _ = run({float(k): v for k, v in dups.items()}, until=1200)
    assert out == [(30.0, [("p1", "firing")])]


def test_group_interval_batches_later_changes():
    out, _ = run({0.0: [A("p1", 0.0)], 100.0: [A("p2", 100.0)], 200.0: [A("p3", 200.0)]}, until=700)
    # first at group_wait, then the changes wait for the next group_interval tick (30 + 300)
    assert out == [(30.0, [("p1", "firing")]),
                   (330.0, [("p1", "firing"), ("p2", "firing"), ("p3", "firing")])]


def test_repeat_interval_resends_unchanged_group():
    out, _ = run({0.0: [A("p1", 0.0)]}, until=8000)
    # the group is evaluated every 5 m from t=30; the unchanged group repeats at the first tick more than 1 h later
    # (Alertmanager's strict Before: a 4h repeat with a 5m interval comes at 4h05m)
    assert [t for t, _ in out] == [30.0, 3930.0, 7830.0]


def test_resolved_is_sent_once_then_dropped():
    out, st = run({0.0: [A("p1", 0.0), A("p2", 0.0)], 100.0: [A("p1", 100.0, "resolved")],
                   400.0: [A("p2", 400.0, "resolved")]}, until=1000)
    assert out == [(30.0, [("p1", "firing"), ("p2", "firing")]),
                   (330.0, [("p1", "resolved"), ("p2", "firing")]),  # Alertmanager's order: by labels
                   (630.0, [("p2", "resolved")])]
    assert st == {}  # lifecycle and group state gone once everything resolved and was notified


def test_without_send_resolved_a_partial_resolve_waits_but_the_last_one_clears():
    out, _ = run({0.0: [A("p1", 0.0), A("p2", 0.0)], 100.0: [A("p1", 100.0, "resolved")],
                  400.0: [A("p2", 400.0, "resolved")]}, until=1000, send_resolved=False)
    # Alertmanager: no notification for p1's resolve; when nothing fires any more, one to clear the log
    assert out == [(30.0, [("p1", "firing"), ("p2", "firing")]), (630.0, [("p2", "resolved")])]


def test_fired_and_resolved_within_group_wait_is_never_sent():
    out, st = run({0.0: [A("p1", 0.0)], 10.0: [A("p1", 10.0, "resolved")]}, until=400)
    assert out == []
    assert st == {}


def test_old_alert_flushes_without_waiting():
    eng, st = Engine(load_text(CFG % "true")), {}
    eng.receive(A("p1", 1.0), st, now=500.0)  # started long before it reached us
    assert [len(n["alerts"]) for n in eng.tick(st, now=500.0)] == [1]


def test_notification_ids_are_stable_and_distinct():
    first, _ = run({0.0: [A("p1", 0.0)], 100.0: [A("p2", 100.0)]}, until=400)
    eng1, eng2 = Engine(load_text(CFG % "true")), Engine(load_text(CFG % "true"))
    ids = []
    for eng in (eng1, eng2):
        st = {}
        eng.receive(A("p1", 0.0), st, 0.0)
        n1 = eng.tick(st, 30.0)
        eng.receive(A("p2", 100.0), st, 100.0)
        n2 = eng.tick(st, 330.0)
        ids.append([n["id"] for n in n1 + n2])
    assert ids[0] == ids[1] and len(set(ids[0])) == 2  # same inputs -> same ids (replay dedup key)


def test_mute_time_interval_holds_notifications_until_it_ends():
    cfg = load_text("""
route:
  receiver: ops
  group_wait: 10s
  group_interval: 1m
  routes:
    - matchers: ['team="a"']
      mute_time_intervals: [night]
receivers: [{name: ops}]
time_intervals:
  - name: night
    time_intervals: [{times: [{start_time: "00:00", end_time: "06:00"}]}]
""")
    eng, st = Engine(cfg), {}
    night = 1627948800.0  # 2021-08-03 00:00 UTC
    eng.receive(Alert({"alertname": "X", "team": "a"}, startsAt=night + 1), st, night + 1)
    assert eng.tick(st, night + 11) == []  # muted: nothing sent, nothing logged
    morning = night + 6 * 3600 + 11
    assert [len(n["alerts"]) for n in eng.tick(st, morning)] == [1]


def test_webhook_payload_truncation_and_common_labels():
    from alerts.payload import webhook

    alerts = [{"labels": {"alertname": "A", "pod": f"p{i}", "ns": "x"}, "annotations": {"runbook": "r"},
               "status": "firing", "startsAt": "2021-08-03T10:00:00.000Z", "endsAt": None, "fingerprint": f"f{i}"}
              for i in range(5)]
    body = webhook({"id": "k", "receiver": "ops", "groupKey": "g", "groupLabels": {"alertname": "A"},
                    "status": "firing", "alerts": alerts}, "http://ks", max_alerts=2)
    assert (body["truncatedAlerts"], len(body["alerts"])) == (3, 2)
    assert body["commonLabels"] == {"alertname": "A", "ns": "x"}
    assert body["commonAnnotations"] == {"runbook": "r"}


def test_dingtalk_signature():
    from alerts.payload import dingtalk_sign

    url = dingtalk_sign("https://oapi.dingtalk.com/robot/send?access_token=T", "SEC", 1627984800000)
    # base64(HMAC-SHA256("SEC", "1627984800000\nSEC")), URL-encoded
    import base64
    import hashlib
    import hmac
    from urllib.parse import parse_qs, urlsplit

    q = parse_qs(urlsplit(url).query)
    want = base64.b64encode(hmac.new(b"SEC", b"1627984800000\nSEC", hashlib.sha256).digest()).decode()
    assert (q["access_token"], q["timestamp"], q["sign"]) == (["T"], ["1627984800000"], [want])


def test_send_resolved_of_any_integration_counts_and_the_others_skip_a_notification_only_of_resolved_alerts():
    """Alertmanager dedups per integration: PagerDuty (send_resolved by default) hears of p1's resolve while p2 still
    fires (kubesight looked at webhook, Slack and DingTalk only, and said nothing); an integration without
    send_resolved skips that notification instead of getting the firing p2 again."""
    import asyncio

    from alerts.receivers import Receivers, send_once

    cfg = load_text("""
route: {receiver: ops, group_by: [alertname], group_wait: 30s, group_interval: 5m, repeat_interval: 1h}
receivers:
  - name: ops
    pagerduty_configs: [{routing_key: k, url: "http://127.0.0.1:1/pd"}]
    slack_configs: [{api_url: "http://127.0.0.1:1/slack", channel: "#ops"}]
""")
    eng, st = Engine(cfg), {}
    eng.receive(A("p1", 0.0), st, now=0.0)
    eng.receive(A("p2", 0.0), st, now=0.0)
    notes = eng.tick(st, now=30.0)
    eng.receive(A("p1", 100.0, "resolved"), st, now=100.0)
    notes += eng.tick(st, now=330.0)
    assert [[(a["labels"]["pod"], a["status"]) for a in n["alerts"]] for n in notes] == [
        [("p1", "firing"), ("p2", "firing")], [("p1", "resolved"), ("p2", "firing")]]
    assert "resolvedOnly" not in notes[0] and notes[1]["resolvedOnly"] is True
    slack = next(i for i in Receivers(cfg).integrations["ops"] if "slack" in i.name)
    out = asyncio.run(send_once(None, slack, notes[1], ""))  # skipped before any request
    assert out.ok and out.reason == "skipped (nothing new but resolved alerts; send_resolved is off)"


def test_max_alerts_keeps_what_alertmanager_keeps_and_describes_only_that():
    """Alertmanager sorts a group's alerts by job, instance, then labels, truncates to max_alerts, and builds
    commonLabels and status from what it kept (kubesight kept the firing-first, oldest alert, and described all)."""
    from alerts.payload import webhook

    cfg = load_text("""
route: {receiver: ops, group_by: [alertname], group_wait: 30s}
receivers: [{name: ops}]
""")
    eng, st = Engine(cfg), {}
    eng.receive(Alert({"alertname": "T", "instance": "b"}, startsAt=0.0), st, now=0.0)
    eng.receive(Alert({"alertname": "T", "instance": "a"}, startsAt=5.0), st, now=5.0)
    eng.receive(Alert({"alertname": "T"}, startsAt=1.0), st, now=5.0)  # no instance: after those with one
    (note,) = eng.tick(st, now=30.0)
    assert [a["labels"].get("instance") for a in note["alerts"]] == ["a", "b", None]
    body = webhook(note, "", max_alerts=1)
    assert (body["truncatedAlerts"], body["commonLabels"]) == (2, {"alertname": "T", "instance": "a"})
