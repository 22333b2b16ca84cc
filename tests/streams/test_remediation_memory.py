"""The remediator's memory stays bounded without a cluster: the missing-permission alert ends on its own (endsAt)
and is said again while the permission still fails; only the limits' window of actions is kept."""

from __future__ import annotations

from core.settings import Settings
from rules.load import DEFAULT_PACK, load_packs
from streams.remediation import FORBIDDEN_ALERT, FORBIDDEN_REPEAT, Forbidden, Remediator


def test_the_forbidden_alert_ends_by_itself_and_is_said_again_while_it_lasts():
    clock = [1000.0]
    alerts, trail = [], []
    r = Remediator(Settings(), load_packs([DEFAULT_PACK]), kube=None, publish=trail.append,
                   publish_alert=alerts.append, now=lambda: clock[0])
    no = Forbidden("forbidden: patch nodes/n1 (apply deploy/kubernetes/remediation-rbac.yaml)")
    r._forbidden("n1", no, None)
    r._forbidden("n1", no, None)  # the same failure again at once: said once
    [a] = alerts
    assert a.labels["alertname"] == FORBIDDEN_ALERT and a.status == "firing"
    assert a.endsAt == 1000.0 + 2 * FORBIDDEN_REPEAT  # it resolves by itself if never said again
    clock[0] += FORBIDDEN_REPEAT  # still failing half a day later: said again, its end moves on
    r._forbidden("n1", no, None)
    assert len(alerts) == 2 and alerts[1].endsAt == clock[0] + 2 * FORBIDDEN_REPEAT
    other = Forbidden("forbidden: create events (apply deploy/kubernetes/remediation-rbac.yaml)")
    clock[0] += 2 * FORBIDDEN_REPEAT
    r._forbidden("n2", other, None)
    assert list(r.forbidden_said) == [other.args[0]]  # the old message was forgotten: memory bounded


def test_only_the_limits_window_of_actions_is_kept():
    clock = [0.0]
    r = Remediator(Settings(), load_packs([DEFAULT_PACK]), kube=None, publish=lambda rec: None, now=lambda: clock[0])
    w = r.cfg.window
    r.acted = [(float(t), f"n{t}", False) for t in range(0, int(3 * w), int(w // 10))]  # 30 actions over 3 windows
    clock[0] = 3 * w
    r._limits("n-new", False, [{"metadata": {"name": f"n{i}"}} for i in range(1000)])
    assert 0 < len(r.acted) <= 11 and all(t >= clock[0] - w for t, _, _ in r.acted)


def test_an_odd_record_of_the_trail_does_not_stop_start_up_and_an_api_failure_is_recorded():
    """The actions topic is the remediator's memory: a record without its fields is skipped with a warning (start-up
    used to raise). The API server failing (a 503, not a 403) gives a failed action record, not an exit."""
    from core.records import Alert

    class Flaky:
        def node(self, name):
            raise ConnectionError("503 Service Unavailable")

        def nodes(self):
            raise ConnectionError("503 Service Unavailable")

    trail = []
    good = {"v": 1, "kind": "action", "key": "k1", "outcome": "done", "t": 5.0, "node": "n1", "dry_run": False}
    rules = load_packs([DEFAULT_PACK])
    r = Remediator(Settings(), rules, kube=Flaky(), publish=trail.append, now=lambda: 100.0,
                   history=[{"kind": "action"}, {"kind": "condition", "node": "n1"}, good])
    assert (("k1", False) in r.done) and r.acted == [(5.0, "n1", False)]
    settings = Settings().model_copy(update={"remediation": Settings().remediation.model_copy(
        update={"dry_run": False})})
    r = Remediator(settings, rules, kube=Flaky(), publish=trail.append, now=lambda: 100.0)
    rule = next(x for x in rules.rules if x.actions)
    alert = Alert({"alertname": rule.alert, "node": "n1", "severity": "critical"}, {}, "firing", 50.0, source=rule.origin)
    r.handle(alert)  # no exception
    failed = [rec for rec in trail if rec.get("kind") == "action" and rec.get("outcome") == "failed"]
    assert failed and failed[0]["reason"] == "ConnectionError: 503 Service Unavailable"


def test_what_was_done_for_an_alert_episode_is_forgotten_once_no_record_of_it_can_come_back():
    """``done``, ``refused`` and ``noted`` hold one entry per alert episode acted on: kept while the episode's alerts
    can still be read (last seen less than EPISODE_FORGET ago, past the alerts topic's retention), then forgotten.
    A trail read at start counts as seen then; an alert of the episode handled again renews it."""
    from core.records import Alert
    from streams.remediation import EPISODE_FORGET, SWEEP_EVERY

    rules = load_packs([DEFAULT_PACK])
    rule = next(x for x in rules.rules if x.alert == "NodeFrequentTaskHung")
    a1, a2 = (Alert({"alertname": rule.alert, "node": n, "severity": "warning"}, {}, "firing", 50.0, source=rule.origin)
              for n in ("n1", "n2"))
    k1, k2 = Remediator._key(a1, "cordon"), Remediator._key(a2, "cordon")
    history = [{"v": 1, "kind": "action", "key": k1, "outcome": "done", "t": 60.0, "node": "n1", "dry_run": False},
               {"v": 1, "kind": "action", "key": k2, "outcome": "refused", "reason": "kill switch", "t": 60.0,
                "node": "n2", "dry_run": False},
               {"v": 1, "kind": "action", "key": k2, "outcome": "respected", "t": 61.0, "node": "n2", "dry_run": False}]
    clock = [1000.0]
    r = Remediator(Settings(), rules, kube=None, publish=lambda rec: None, history=history, now=lambda: clock[0])
    assert set(r.done) == {(k1, False)} and set(r.refused) == {(k2, False)} and r.noted == {(k2, False)}
    clock[0] += EPISODE_FORGET - SWEEP_EVERY
    r.forget()
    assert (k1, False) in r.done and (k2, False) in r.refused  # not yet
    r.handle(Alert(a1.labels, {}, "resolved", 50.0, endsAt=clock[0], source=rule.origin))  # episode 1 seen again
    clock[0] += 2 * SWEEP_EVERY
    r.forget()
    assert set(r.done) == {(k1, False)} and not r.refused and not r.noted  # episode 2 forgotten, episode 1 renewed
    clock[0] += EPISODE_FORGET
    r.forget()
    assert not r.done and not r.episodes
