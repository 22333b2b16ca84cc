"""Lifecycle timeouts, inhibition (defaults and configured) and silences through the engine, on a fake clock."""

import pytest

from alerts.config import load_text
from alerts.engine import Engine
from alerts.silences import Silence, SilenceError, Silences
from core.records import Alert, format_time

CFG = """
global: {resolve_timeout: %s}
route: {receiver: ops, group_by: [alertname, node], group_wait: 10s, group_interval: 1m}
receivers: [{name: ops}]
inhibit_rules:
  - source_matchers: ['alertname="KubeAPIDown"']
    target_matchers: ['alertname="KubeAPILatencyHigh"']
    equal: [cluster]
"""

DEFAULTS = "default_inhibit_rules: true\n"  # kubesight's topology set (an extension; off unless asked for)


def notified(eng, st, t):
    return sorted((a["labels"]["alertname"], a["labels"].get("pod", ""), a["status"])
                  for n in eng.tick(st, now=t) for a in n["alerts"])


def test_resolve_timeout_resolves_a_quiet_alert():
    eng, st = Engine(load_text(CFG % "5m")), {}
    eng.receive(Alert({"alertname": "X", "pod": "p"}, startsAt=1.0), st, now=1.0)
    assert notified(eng, st, 11.0) == [("X", "p", "firing")]
    eng.receive(Alert({"alertname": "X", "pod": "p"}, startsAt=1.0), st, now=200.0)  # refreshed: timer restarts
    assert notified(eng, st, 491.0) == []
    assert notified(eng, st, 501.0) == []  # expired at 500 and grouped; flushed at the next group tick
    assert notified(eng, st, 551.0) == [("X", "p", "resolved")]


def test_node_not_ready_inhibits_pods_on_that_node_only():
    eng, st = Engine(load_text((CFG % "0s") + DEFAULTS)), {}
    eng.receive(Alert({"alertname": "KubeNodeNotReady", "node": "n1", "severity": "critical"}, startsAt=1.0), st, 1.0)
    for pod, node in (("a", "n1"), ("b", "n1"), ("c", "n2")):
        eng.receive(Alert({"alertname": "KubePodNotReady", "pod": pod, "node": node, "workload": f"Deployment/{pod}",
                           "severity": "warning"}, startsAt=2.0), st, 2.0)
    assert notified(eng, st, 12.0) == [("KubeNodeNotReady", "", "firing"), ("KubePodNotReady", "c", "firing")]
    # the node recovers: the pods on it are no longer muted and are notified at the next group tick
    eng.receive(Alert({"alertname": "KubeNodeNotReady", "node": "n1", "severity": "critical"}, status="resolved",
                      startsAt=1.0, endsAt=30.0), st, 30.0)
    assert notified(eng, st, 72.0) == [("KubeNodeNotReady", "", "resolved"), ("KubePodNotReady", "a", "firing"),
                                       ("KubePodNotReady", "b", "firing")]


def test_maintenance_reboot_inhibits_pods_on_the_node():
    eng, st = Engine(load_text((CFG % "0s") + DEFAULTS)), {}
    eng.receive(Alert({"alertname": "CloudMaintenanceReboot", "node": "n1"}, startsAt=1.0), st, 1.0)
    eng.receive(Alert({"alertname": "KubePodCrashLooping", "pod": "a", "node": "n1"}, startsAt=1.0), st, 1.0)
    assert notified(eng, st, 12.0) == [("CloudMaintenanceReboot", "", "firing")]


def test_critical_inhibits_warning_of_same_alert_and_entity():
    eng, st = Engine(load_text((CFG % "0s") + DEFAULTS)), {}
    base = {"alertname": "DiskFull", "node": "n1"}
    eng.receive(Alert(dict(base, severity="critical"), startsAt=1.0), st, 1.0)
    eng.receive(Alert(dict(base, severity="warning"), startsAt=1.0), st, 1.0)
    eng.receive(Alert(dict(base, severity="warning", node="n2"), startsAt=1.0), st, 1.0)
    got = sorted((n["groupLabels"]["node"], a["labels"]["severity"]) for n in eng.tick(st, 12.0) for a in n["alerts"])
    assert got == [("n1", "critical"), ("n2", "warning")]


def test_an_alertmanager_file_inhibits_by_its_own_rules_only():
    """Alertmanager's file does not ask for kubesight's default set, so it does not get it: a critical and a warning
    of the same alert, and a pod on a NotReady node, are all notified, as Alertmanager notifies them."""
    eng, st = Engine(load_text(CFG % "0s")), {}
    for labels in ({"alertname": "DiskFull", "node": "n1", "severity": "critical"},
                   {"alertname": "DiskFull", "node": "n1", "severity": "warning"},
                   {"alertname": "KubeNodeNotReady", "node": "n1", "severity": "critical"},
                   {"alertname": "KubePodNotReady", "node": "n1", "pod": "a", "severity": "warning"}):
        eng.receive(Alert(labels, startsAt=1.0), st, 1.0)
    got = sorted((a["labels"]["alertname"], a["labels"]["severity"]) for n in eng.tick(st, 12.0) for a in n["alerts"])
    assert got == [("DiskFull", "critical"), ("DiskFull", "warning"), ("KubeNodeNotReady", "critical"),
                   ("KubePodNotReady", "warning")]


def test_configured_inhibit_rule_and_no_defaults():
    cfg = load_text((CFG % "0s") + "default_inhibit_rules: false\n")
    eng, st = Engine(cfg), {}
    eng.receive(Alert({"alertname": "KubeAPIDown", "cluster": "c1"}, startsAt=1.0), st, 1.0)
    eng.receive(Alert({"alertname": "KubeAPILatencyHigh", "cluster": "c1"}, startsAt=1.0), st, 1.0)
    eng.receive(Alert({"alertname": "KubeNodeNotReady", "node": "n1"}, startsAt=1.0), st, 1.0)
    eng.receive(Alert({"alertname": "KubePodNotReady", "node": "n1", "pod": "a"}, startsAt=1.0), st, 1.0)
    assert [x[0] for x in notified(eng, st, 12.0)] == ["KubeAPIDown", "KubeNodeNotReady", "KubePodNotReady"]


def test_silence_mutes_until_it_ends_or_is_expired():
    silences = Silences()
    eng, st = Engine(load_text(CFG % "0s"), silences=silences), {}
    silences.put(Silence.create({"matchers": [{"name": "pod", "value": "a|b", "isRegex": True}],
                                 "startsAt": format_time(0.0), "endsAt": format_time(1000.0),
                                 "createdBy": "ana", "comment": "rollout"}, now=0.0, id="s1"))
    for pod in ("a", "c"):
        eng.receive(Alert({"alertname": "X", "pod": pod}, startsAt=1.0), st, 1.0)
    assert notified(eng, st, 12.0) == [("X", "c", "firing")]
    silences.expire("s1", now=50.0)
    assert silences.by_id["s1"].state(50.0) == "expired"
    assert notified(eng, st, 72.0) == [("X", "a", "firing"), ("X", "c", "firing")]


def test_expiring_a_pending_silence_makes_it_expired_not_pending():
    """Alertmanager's expire moves a pending silence's start to now as well (silences.go): amtool and Grafana then
    list it as expired; kubesight kept its start, so it stayed pending."""
    silences = Silences()
    silences.put(Silence.create({"matchers": [{"name": "pod", "value": "a"}], "startsAt": format_time(100.0),
                                 "endsAt": format_time(1000.0), "createdBy": "ana", "comment": "later"}, now=0.0,
                                id="s1"))
    assert silences.by_id["s1"].state(50.0) == "pending"
    s = silences.expire("s1", now=50.0)
    assert (s.state(50.0), s.state(500.0), s.startsAt, s.endsAt) == ("expired", "expired", 50.0, 50.0)


@pytest.mark.parametrize("body,message", [
    ({"matchers": [], "startsAt": "2021-01-01T00:00:00Z", "endsAt": "2021-01-02T00:00:00Z", "createdBy": "a",
      "comment": "c"}, "matchers: List should have at least 1 item after validation, not 0"),
    ({"matchers": [{"name": "a", "value": "b"}], "startsAt": "2021-01-02T00:00:00Z",
      "endsAt": "2021-01-01T00:00:00Z", "createdBy": "a", "comment": "c"}, "endsAt must be after startsAt"),
    ({"matchers": [{"name": "a", "value": ".*", "isRegex": True}], "startsAt": "2021-01-01T00:00:00Z",
      "endsAt": "2021-01-02T00:00:00Z", "createdBy": "a", "comment": "c"},
     "matchers would match every alert (at least one must not match an empty label set)"),
    ({"matchers": [{"name": "a", "value": "b"}], "startsAt": "2021-01-01T00:00:00Z",
      "endsAt": "2021-01-02T00:00:00Z", "comment": "c"}, "createdBy: Field required"),
])
def test_invalid_silences(body, message):
    with pytest.raises(SilenceError) as exc:
        Silence.create(body, now=1609459200.0)
    assert str(exc.value) == message


def test_a_silence_on_a_notified_alert_sends_nothing_and_its_end_nothing_new():
    """Alertmanager's pipeline stops at its mute stage when nothing is left: no empty 'resolved' notification (which
    PagerDuty takes as a resolve of the incident), and the log stays, so the silence's end sends nothing new
    before repeat_interval."""
    silences = Silences()
    eng, st = Engine(load_text(CFG % "0s"), silences=silences), {}
    eng.receive(Alert({"alertname": "X", "pod": "a"}, startsAt=1.0), st, 1.0)
    assert notified(eng, st, 12.0) == [("X", "a", "firing")]
    silences.put(Silence.create({"matchers": [{"name": "pod", "value": "a"}], "startsAt": format_time(20.0),
                                 "endsAt": format_time(1000.0), "createdBy": "ana", "comment": "c"}, now=20.0, id="s1"))
    assert notified(eng, st, 400.0) == []  # was: an empty resolved notification
    silences.expire("s1", now=500.0)
    assert notified(eng, st, 800.0) == []  # still the firing alert the log holds: nothing new to say


def test_two_alerts_that_match_both_sides_of_a_rule_do_not_mute_each_other():
    """Alertmanager's two-sided exclusion: for a target that matches the source side too, a source that matches the
    target side does not count (kubesight muted both alerts, and nothing was sent)."""
    from alerts.inhibit import Inhibitor, InhibitRule
    from core.records import fingerprint

    rule = InhibitRule.parse(['team="a"'], ['severity="warning"'], ["cluster"])
    inh = Inhibitor([rule])
    ia = {"alertname": "IA", "team": "a", "severity": "warning", "cluster": "c"}
    ib = {"alertname": "IB", "team": "a", "severity": "warning", "cluster": "c"}
    other = {"alertname": "O", "team": "b", "severity": "warning", "cluster": "c"}
    for labels in (ia, ib, other):
        inh.observe(labels, "firing")
    assert (inh.inhibited(ia), inh.inhibited(ib), inh.inhibiting(ia)) == (False, False, [])
    assert inh.inhibited(other) and len(inh.inhibiting(other)) == 2  # a target only: both sources count
    src = {"alertname": "S", "team": "a", "severity": "critical", "cluster": "c"}  # a source only
    inh.observe(src, "firing")
    assert inh.inhibited(ia) and inh.inhibiting(ia) == inh.inhibiting(ib) == [fingerprint(src)]
    inh.observe(src, "resolved")
    assert not inh.inhibited(ia)
