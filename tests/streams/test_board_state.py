"""The board's model without I/O: which deliveries failed (delivery's dead letters) and what the page is told."""

from __future__ import annotations

import orjson

from core.records import Alert, deadletter, format_time
from streams.board import BoardState


def firing(name: str, **labels) -> Alert:
    return Alert({"alertname": name, "severity": "critical", "cluster": "prod", **labels}, {}, "firing", 1000.0,
                 source=f"storage/{name}@1")


def note(receiver: str, at: float, *alerts: Alert) -> bytes:
    """A notification as alerting writes it for delivery (the notifications topic)."""
    return orjson.dumps({"v": 1, "kind": "notification", "id": f"n{at}", "receiver": receiver, "groupKey": "{}:{}",
                         "groupLabels": {}, "status": "firing", "alerts": [a.to_dict() for a in alerts],
                         "time": format_time(at)})


def failed(receiver: str, at: float, reason: str, *alerts: Alert) -> bytes:
    """Delivery's dead letter of that notification (streams.alerting.Deliverer._dead writes it so)."""
    return deadletter(reason, note(receiver, at, *alerts), origin="alerts/deliver", key=b"{}:{}",
                      topic="kubesight-notifications", partition=0, offset=7)


def test_a_failed_delivery_marks_the_alert_undelivered_until_a_later_notification():
    a, b = firing("KubePersistentVolumeFillingUp", namespace="db"), firing("KubeNodeNotReady", node="n1")
    m = BoardState()
    m.apply_alert(a.to_dict())
    m.apply_alert(b.to_dict())
    m.on_notification_record(b"{}:{}", note("team-db", 1010.0, a, b))
    m.on_notification_record(b"{}:{}", note("pager", 1010.0, a))
    v = m.version
    m.on_deadletter_record(b"{}:{}", failed("team-db", 1010.0, "team-db/webhook[0]: HTTP 503 after 5 attempts", a))
    assert m.version > v  # pushed to the pages
    assert m.deliveries(a.fingerprint) == [
        {"receiver": "pager", "at": format_time(1010.0), "failed": None},
        {"receiver": "team-db", "at": format_time(1010.0), "failed": "team-db/webhook[0]: HTTP 503 after 5 attempts"}]
    s = m.summary(1020.0)
    # of the cell's two firing alerts, one did not reach a receiver
    assert (s["total"]["undelivered"], [(c["col"], c["firing"], c["undelivered"]) for c in s["grid"]]) == (
        1, [("storage", 2, 1)])
    # the next notification to team-db (a repeat) is the latest: delivered as far as the board knows
    m.on_notification_record(b"{}:{}", note("team-db", 1070.0, a))
    assert m.deliveries(a.fingerprint)[1] == {"receiver": "team-db", "at": format_time(1070.0), "failed": None}
    assert m.summary(1080.0)["total"]["undelivered"] == 0
    # and it failed too: read before or after its notification record (the topics are read side by side)
    m.on_deadletter_record(b"{}:{}", failed("team-db", 1070.0, "team-db/webhook[0]: timed out", a))
    assert m.summary(1080.0)["total"]["undelivered"] == 1
    # resolved: forgotten
    m.apply_alert(dict(a.to_dict(), status="resolved"))
    assert m.deliveries(a.fingerprint) == [] and m.summary(1090.0)["total"]["undelivered"] == 0


def test_a_failure_read_before_its_alert_counts_once_the_alert_is_read():
    a = firing("KubePersistentVolumeFillingUp", namespace="db")
    m = BoardState()
    m.on_deadletter_record(None, failed("team-db", 1010.0, "team-db/webhook[0]: HTTP 429", a))
    m.apply_alert(a.to_dict())
    assert m.summary(1020.0)["total"]["undelivered"] == 1
    assert m.deliveries(a.fingerprint) == [{"receiver": "team-db", "at": format_time(1010.0),
                                            "failed": "team-db/webhook[0]: HTTP 429"}]


def test_other_dead_letters_are_not_deliveries():
    a = firing("KubePersistentVolumeFillingUp", namespace="db")
    m = BoardState()
    m.apply_alert(a.to_dict())
    for value in (deadletter("not valid JSON", b"{oops", origin="worker/signals", topic="events", offset=1),
                  deadletter("receiver 'x' is not in the routing file in force", b"not a notification",
                             origin="alerts/deliver"),
                  # a notification over the dead letter's 64 KiB, cut, and not named beside it: cannot be told
                  deadletter("team-db/webhook[0]: HTTP 503", note("team-db", 1010.0, a) + b" " * 70_000,
                             origin="alerts/deliver")):
        m.on_deadletter_record(None, value)
    assert m.failed == {} and m.summary(1020.0)["total"]["undelivered"] == 0


def test_a_notification_too_big_for_its_dead_letter_still_marks_its_alerts():
    """A group of hundreds of alerts makes a notification over the dead letter's 64 KiB: kept cut, so delivery names
    its receiver, time and firing alerts beside it (``where.notification``) and the board marks them."""
    from streams.alerting import _whose

    many = [firing("KubePodNotReady", namespace="db", pod=f"db-{i}-" + "x" * 200) for i in range(300)]
    m = BoardState()
    for x in many:
        m.apply_alert(x.to_dict())
    payload = note("team-db", 1010.0, *many)
    assert len(payload) > 64 * 1024
    dead = deadletter("team-db/webhook[0]: HTTP 503", payload, origin="alerts/deliver", **_whose(payload))
    assert orjson.loads(dead)["truncated"]
    m.on_deadletter_record(None, dead)
    assert m.summary(1020.0)["total"]["undelivered"] == 300
    assert m.deliveries(many[7].fingerprint) == [{"receiver": "team-db", "at": format_time(1010.0),
                                                  "failed": "team-db/webhook[0]: HTTP 503"}]


def health(integration: str, state: str, reason: str = "", attempts: int = 1) -> bytes:
    """A receiver-health record as delivery writes it (streams.alerting.Deliverer._health)."""
    return orjson.dumps({"v": 1, "kind": "receiver-health", "receiver": integration.split("/")[0],
                         "integration": integration, "state": state, "since": format_time(1000.0),
                         "attempts": attempts, "reason": reason})


def test_receivers_that_fail_now_are_in_the_summary_until_they_recover():
    m = BoardState()
    assert m.summary(0)["receivers"] == []
    m.on_receiver_health_record(b"pager/webhook[0]", health("pager/webhook[0]", "ok"))
    v = m.version
    m.on_receiver_health_record(b"team-db/webhook[0]", health("team-db/webhook[0]", "retrying", "HTTP 503", 2))
    assert m.version > v  # pushed to the pages
    m.on_receiver_health_record(b"team-db/slack[0]", health("team-db/slack[0]", "failing", "HTTP 404: no_team"))
    assert [(r["integration"], r["state"], r["reason"]) for r in m.summary(0)["receivers"]] == [
        ("team-db/slack[0]", "failing", "HTTP 404: no_team"), ("team-db/webhook[0]", "retrying", "HTTP 503")]
    v = m.version
    m.on_receiver_health_record(b"team-db/webhook[0]", health("team-db/webhook[0]", "retrying", "HTTP 503", 2))
    assert m.version == v  # the same record again (a re-read): nothing to push
    m.on_receiver_health_record(b"team-db/webhook[0]", health("team-db/webhook[0]", "ok"))
    assert [r["integration"] for r in m.summary(0)["receivers"]] == ["team-db/slack[0]"]
    for bad in (b"{oops", orjson.dumps({"integration": "x"}), orjson.dumps({"integration": "x", "state": "odd"})):
        m.on_receiver_health_record(b"x", bad)  # not a receiver-health record: skipped
    assert [r["integration"] for r in m.summary(0)["receivers"]] == ["team-db/slack[0]"]


def test_a_firing_alert_whose_promised_end_passed_leaves_the_board():
    """The Watchdog, a silence reminder, the remediator's missing-permission alert send no resolution: each firing
    record says when it ends (endsAt) unless sent again, and the board ends it then, as Alertmanager does."""
    m = BoardState()
    beat = Alert({"alertname": "Watchdog", "severity": "info", "cluster": "prod"}, {}, "firing", 1000.0, 1240.0,
                 source="watchdog")
    plain = firing("KubeNodeNotReady", node="n1")
    m.apply_alert(beat.to_dict())
    m.apply_alert(plain.to_dict())
    m.expire(1200.0)
    assert m.summary(1200.0)["total"]["firing"] == 2
    m.apply_alert(dict(beat.to_dict(), endsAt=format_time(1480.0)))  # sent again: its end moves
    v = m.version
    m.expire(1300.0)
    assert m.summary(1300.0)["total"]["firing"] == 2 and m.version == v
    m.expire(1480.0)
    assert m.summary(1480.0)["total"]["firing"] == 1 and m.version > v  # the plain alert stays until resolved
    assert list(m.alerts) == [plain.fingerprint] and m.ends == {}


def test_an_incident_record_the_incidents_stage_never_writes_is_skipped():
    """A malformed incident (labels a string, a cluster an object, not JSON) used to be kept and made summary() raise:
    the board's push task stopped and every page froze."""
    m = BoardState()
    for value in (b'{"id": "i1", "labels": "c1"}', b'{"id": "i2", "cluster": {"a": 1}}', b"{oops", b"[1]",
                  b'{"id": "i3", "labels": {"cluster": ["c1"]}}'):
        m.on_incident_record(b"k", value)
    m.on_incident_record(b"i4", orjson.dumps({"id": "i4", "labels": {"cluster": "prod"}, "status": "open"}))
    s = m.summary(1000.0)
    assert s["incidents"] == {"open": 1, "byCluster": {"prod": 1}}


def test_a_give_up_of_an_earlier_episode_does_not_mark_the_next_firing():
    """Delivery retries for hours: its dead letter of a notification can be read after the alert resolved, and the
    alert fire again. That failure is older than the new firing and says nothing about it."""
    a = firing("KubePersistentVolumeFillingUp", namespace="db")
    m = BoardState()
    m.apply_alert(a.to_dict())
    m.on_notification_record(b"{}:{}", note("team-db", 1010.0, a))
    m.apply_alert(dict(a.to_dict(), status="resolved"))
    m.on_deadletter_record(None, failed("team-db", 1010.0, "team-db/webhook[0]: HTTP 503 after 9 attempts", a))
    m.apply_alert(dict(a.to_dict(), startsAt=format_time(9000.0)))
    assert m.summary(9010.0)["total"]["undelivered"] == 0
    assert m.deliveries(a.fingerprint) == []
    # a failure of the new episode still counts
    m.on_deadletter_record(None, failed("team-db", 9010.0, "team-db/webhook[0]: HTTP 503", a))
    assert m.summary(9020.0)["total"]["undelivered"] == 1
    assert m.deliveries(a.fingerprint) == [{"receiver": "team-db", "at": format_time(9010.0),
                                            "failed": "team-db/webhook[0]: HTTP 503"}]


def test_a_receiver_removed_from_the_routing_file_leaves_the_header():
    """It never succeeds again, so its last failing record would stay for ever (the topic is compacted)."""
    from alerts.config import load_text
    from alerts.routing import Router

    both = "route: {receiver: platform}\nreceivers: [{name: platform}, {name: team-db}]\n"
    m = BoardState(router=Router(load_text(both, "r.yaml")))
    m.on_receiver_health_record(b"team-db/webhook[0]", health("team-db/webhook[0]", "failing", "HTTP 503"))
    m.on_receiver_health_record(b"platform/webhook[0]", health("platform/webhook[0]", "retrying", "HTTP 429"))
    assert [r["integration"] for r in m.summary(0)["receivers"]] == ["platform/webhook[0]", "team-db/webhook[0]"]
    m.router = Router(load_text("route: {receiver: platform}\nreceivers: [{name: platform}]\n", "r.yaml"))
    v = m.version
    m.forget_unrouted()
    assert m.version > v and [r["integration"] for r in m.summary(0)["receivers"]] == ["platform/webhook[0]"]
    # read again (a restart reads the compacted topic from the start): not shown
    m.on_receiver_health_record(b"team-db/webhook[0]", health("team-db/webhook[0]", "failing", "HTTP 503"))
    assert [r["integration"] for r in m.summary(0)["receivers"]] == ["platform/webhook[0]"]


def test_a_receiver_health_record_of_another_shape_is_skipped():
    """summary() sorts and prints them: one record with a number for a name failed every page, for good."""
    m = BoardState()
    m.on_receiver_health_record(b"ok", health("team-db/webhook[0]", "failing", "HTTP 503"))
    for bad in ({"integration": 7}, {"reason": ["x"]}, {"since": 5}, {"waiting": "fp"}, {"receiver": None}):
        rec = {**orjson.loads(health("x/webhook[0]", "failing")), **bad}
        m.on_receiver_health_record(b"x", orjson.dumps(rec))
    m.on_receiver_health_record(b"x", orjson.dumps([1, 2]))
    assert [r["integration"] for r in m.summary(0)["receivers"]] == ["team-db/webhook[0]"]


def test_a_page_past_the_end_is_moved_back_to_the_last_page():
    """The page shown was 51-60 of 60 and 50 resolved: the drill-down said "51-10 of 10 firing" and showed nothing."""
    m = BoardState()
    alerts = [firing("KubePodNotReady", namespace="db", pod=f"db-{i}") for i in range(60)]
    for a in alerts:
        m.apply_alert(a.to_dict())
    p = m.page("grid", "prod", "storage", 50, 10)
    assert (p["total"], p["offset"], len(p["alerts"])) == (60, 50, 10)
    for a in alerts[:50]:
        m.apply_alert(dict(a.to_dict(), status="resolved"))
    p = m.page("grid", "prod", "storage", 50, 10)
    assert (p["total"], p["offset"], len(p["alerts"])) == (10, 0, 10)
    p = m.page("grid", "prod", "storage", 10**9, 4)
    assert (p["offset"], len(p["alerts"])) == (8, 2)
    assert m.page("grid", "prod", "nothing-here", 50, 10)["offset"] == 0
