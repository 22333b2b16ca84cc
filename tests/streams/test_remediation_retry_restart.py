"""Retries of failed actions across a restart (or a change of leader), on the fake API server of
test_remediation_safety and the real broker: the retry queue lived in memory, so an action that failed on a 503 was
retried after a restart only if its alert came again, never for an alert that fired once (a kernel Xid, an event
rule): the node kept its fault and nobody cordoned it. The queue is now rebuilt from the actions topic."""

from __future__ import annotations

from kubernetes.client import ApiException

from streams.remediation import RESUME_GAP, Forbidden, Remediator
from tests.streams.test_remediation_safety import RULES, FakeKube, actions, alert, cordoned, settings

T = 1_000_000.0


def _failing(kube, clock, calls, exc=None):
    """The node list of the limits (read once per attempt) answers ``exc`` (a 503) until healed."""

    def nodes():
        calls.append((clock[0] - T, len(kube.writes)))
        raise exc or ApiException(status=503, reason="Service Unavailable")

    kube.nodes = nodes


def _heal(kube):
    del kube.nodes  # the FakeKube's own again


def _patches(kube, node):
    return sum(w == ("patch", node) for w in kube.writes)


def _failed_once(clock, **kw):
    """A cordon failed on a 503 at T (its trail), the remediator then stopped."""
    kube, calls, trail = FakeKube(["n0", "n1", "n2", "n3"]), [], []
    _failing(kube, clock, calls)
    Remediator(settings(max_percent=100, **kw), RULES, kube, trail.append, now=lambda: clock[0]).handle(
        alert("NodeKernelDeadlock", "n0", T), at=T)
    assert actions(trail) == [("n0", "cordon", "failed")] and trail[-1]["retry_in"] == 10
    assert trail[-1]["alert_at"] == T and trail[-1]["tries"] == 1
    return kube, calls, trail


def _restarted(kube, trail, clock, **kw) -> Remediator:
    return Remediator(settings(max_percent=100, **kw), RULES, kube, trail.append, history=list(trail),
                      now=lambda: clock[0])


def _ticks(r, clock, until, step=5.0):
    while clock[0] < until:
        clock[0] += step
        r.tick()


def test_a_failed_action_is_retried_after_a_restart_when_due_once_with_its_backoff_going_on():
    clock = [T]
    kube, _, trail = _failed_once(clock)
    _heal(kube)
    clock[0] = T + 4  # restarted before the retry was due (T + 10): it waits for it
    r = _restarted(kube, trail, clock)
    r.tick()
    assert _patches(kube, "n0") == 0 and list(r.retrying) == [(trail[-1]["key"], False)]
    _ticks(r, clock, T + 60)
    assert actions(trail) == [("n0", "cordon", "failed"), ("n0", "cordon", "done")] and cordoned(kube) == ["n0"]
    assert _patches(kube, "n0") == 1 and not r.retrying
    _restarted(kube, trail, clock).tick()  # and not again after the next restart: the trail says done
    assert _patches(kube, "n0") == 1

    # the backoff goes on from the tries recorded (each error said: a new message each time), not from zero
    clock[0] = T
    kube, calls, trail = FakeKube(["n0", "n1", "n2"]), [], []
    n = iter(range(100))

    def nodes():
        calls.append(clock[0] - T)
        raise ApiException(status=503, reason=f"Service Unavailable #{next(n)}")

    kube.nodes = nodes
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0])
    r.handle(alert("NodeKernelDeadlock", "n0", T), at=T)
    _ticks(r, clock, T + 100)
    assert calls == [0, 10, 30, 70] and trail[-1]["tries"] == 4 and trail[-1]["retry_in"] == 80
    r = _restarted(kube, trail, clock)  # at T + 100; the next try was due at T + 150
    _ticks(r, clock, T + 400)
    assert calls == [0, 10, 30, 70, 150, 310]  # 80 s, then 160 s: tries 5 and 6


def test_retries_due_at_a_restart_go_to_the_api_server_one_by_one_not_at_once():
    clock = [T]
    kube, calls, trail = FakeKube([f"n{i}" for i in range(10)]), [], []
    _failing(kube, clock, calls)
    r = Remediator(settings(max_percent=100, max_nodes=10, max_unschedulable_percent=100), RULES, kube,
                   trail.append, now=lambda: clock[0])
    for i in range(6):
        r.handle(alert("NodeKernelDeadlock", f"n{i}", T), at=T)
    assert len(calls) == 6
    clock[0] = T + 120  # down for two minutes: every retry overdue; healed
    listed = FakeKube.nodes

    def nodes():
        calls.append((clock[0] - T, len(kube.writes)))
        return listed(kube)

    kube.nodes = nodes
    r = _restarted(kube, trail, clock, max_nodes=10, max_unschedulable_percent=100)
    due = sorted(q["next"] for q in r.retrying.values())
    assert len(due) == 6 and due[0] == T + 120
    assert all(b - a >= RESUME_GAP - 1e-6 for a, b in zip(due, due[1:], strict=False))
    r.tick()
    assert len(calls) == 7 and cordoned(kube) == ["n0"]  # the first tick: one of them
    _ticks(r, clock, T + 125, step=0.05)
    tried = [t for t, _ in calls[6:]]
    assert len(tried) == 6 and len(set(tried)) == 6 and cordoned(kube) == [f"n{i}" for i in range(6)]
    assert not r.retrying


def test_an_alert_the_trail_says_resolved_is_not_retried_after_a_restart():
    """Its resolution was handled (the condition cleared) but the remediator stopped before it wrote the retry's
    abandonment: the trail's resolved alert ends the retry all the same."""
    clock = [T]
    kube, _, trail = _failed_once(clock)
    r = _restarted(kube, trail, clock)
    r.handle(alert("NodeKernelDeadlock", "n0", T, status="resolved"), at=T + 5)
    assert actions(trail)[-1] == ("n0", "cordon", "abandoned") and [x for x in trail if x["kind"] == "condition"]
    trail = [x for x in trail if x.get("outcome") != "abandoned"]
    _heal(kube)
    r = _restarted(kube, trail, clock)
    _ticks(r, clock, T + 120)
    assert not r.retrying and _patches(kube, "n0") == 0 and actions(trail) == [("n0", "cordon", "failed")]


def test_a_refused_or_forbidden_or_invalid_action_is_not_retried_after_a_restart():
    clock = [T]
    # refused by a limit at its retry: the refusal is its last word (the kill switch holds it instead: below)
    kube, _, trail = _failed_once(clock)
    _heal(kube)
    r = _restarted(kube, trail, clock, max_nodes=0)
    _ticks(r, clock, T + 15)
    assert actions(trail)[-1] == ("n0", "cordon", "refused") and not r.retrying
    r = _restarted(kube, trail, clock)
    _ticks(r, clock, T + 120)
    assert not r.retrying and _patches(kube, "n0") == 0
    # a missing permission (403) and an invalid change (422): failed for good, never queued
    for exc, where in ((Forbidden("forbidden: list nodes"), "nodes"), (ApiException(status=422), "patch_node")):
        clock[0] = T
        kube, trail = FakeKube(["n0", "n1", "n2"]), []

        def failing(*_, exc=exc):
            raise exc

        setattr(kube, where, failing)
        Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0]).handle(
            alert("NodeKernelDeadlock", "n0", T), at=T)
        assert [o for _, _, o in actions(trail)] in (["refused"], ["failed"]) and "retry_in" not in trail[-1]
        delattr(kube, where)
        r = _restarted(kube, trail, clock)
        _ticks(r, clock, T + 120)
        assert not r.retrying and _patches(kube, "n0") == 0, exc


def test_max_alert_age_still_ends_a_retry_across_a_restart():
    clock = [T]
    kube, calls, trail = _failed_once(clock)
    clock[0] = T + 1000  # the alert is past max_alert_age (900 s): not retried, healed or not
    _heal(kube)
    r = _restarted(kube, trail, clock)
    _ticks(r, clock, T + 1100)
    assert not r.retrying and _patches(kube, "n0") == 0

    # resumed at T + 300, the API server still failing: abandoned once the alert is 900 s old
    _failing(kube, clock, calls)
    clock[0] = T + 300
    r = _restarted(kube, trail, clock)
    assert r.retrying
    _ticks(r, clock, T + 1200)
    assert actions(trail) == [("n0", "cordon", "failed"), ("n0", "cordon", "abandoned")] and not r.retrying
    assert "900s" in trail[-1]["reason"] and _patches(kube, "n0") == 0

    # an alert whose record was read 10 min after it started: its age counts from the record (alert_at); a record
    # written before alert_at existed counts from startsAt (sooner, never later)
    clock[0] = T
    kube, trail = FakeKube(["n0", "n1", "n2"]), []
    _failing(kube, clock, [])
    Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0]).handle(
        alert("NodeKernelDeadlock", "n0", T - 600), at=T)
    clock[0] = T + 400
    assert _restarted(kube, trail, clock).retrying
    old = [{k: v for k, v in x.items() if k != "alert_at"} for x in trail]
    assert not _restarted(kube, old, clock).retrying

    # an alert whose endsAt passed while the remediator was down, and dry_run changed since: not resumed
    clock[0] = T
    kube, trail = FakeKube(["n0", "n1", "n2"]), []
    _failing(kube, clock, [])
    ending = alert("NodeKernelDeadlock", "n0", T)
    ending.endsAt = T + 100
    Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0]).handle(ending, at=T)
    assert trail[-1]["alert_ends_at"] == T + 100
    clock[0] = T + 50
    assert _restarted(kube, trail, clock).retrying and not _restarted(kube, trail, clock, dry_run=True).retrying
    clock[0] = T + 200
    assert not _restarted(kube, trail, clock).retrying


def test_a_new_remediator_on_the_same_topics_does_the_action_once_without_the_alert_sent_again(
        kafka_bootstrap, monkeypatch):
    """The Runner on the broker: two cordons failed on a 503, the remediator stopped; one alert resolved meanwhile
    (the backlog says so), the API server healed; a new remediator cordons the other node once, from the trail."""
    import threading
    import time
    import uuid

    from kafka import KafkaProducer

    from core.records import encode
    from core.topics import ensure_topics
    from streams import remediation
    from streams.remediation import Runner, read_trail

    monkeypatch.setattr(remediation, "RETRY_FIRST", 0.5)  # the first retry due half a second after the failure
    tag = uuid.uuid4().hex[:8]
    s = settings(max_percent=100).model_copy(update={"kafka": kafka_bootstrap, "topic_prefix": f"t{tag}-",
                                                     "app_id": f"ks-{tag}", "partitions": 1})
    ensure_topics(s, kafka_bootstrap)
    kube, calls = FakeKube(["n0", "n1", "n2", "n3"]), []
    _failing(kube, [T], calls)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)

    def started() -> tuple[Runner, threading.Thread]:
        r = Runner(s, kafka_bootstrap, kube, rules=RULES, tick_every=0.2)
        th = threading.Thread(target=r.run, daemon=True)
        th.start()
        assert r.caught_up.wait(60)
        return r, th

    def wait_for(cond, what, within=30.0):
        deadline = time.monotonic() + within
        while not cond():
            assert time.monotonic() < deadline, what
            time.sleep(0.1)

    now = time.time()
    over, firing = alert("NodeKernelDeadlock", "n0", now - 5), alert("NodeKernelDeadlock", "n1", now - 5)
    runner, th = started()
    try:
        for a in (over, firing):
            producer.send(s.topic("alerts"), key=a.key(), value=encode(a))
        producer.flush()
        wait_for(lambda: sorted(n for n, _, o in actions(read_trail(kafka_bootstrap, s.topic("actions")))
                                if o == "failed") == ["n0", "n1"], "both cordons failed")
    finally:
        runner.stop()
        th.join(30)
    assert not th.is_alive() and cordoned(kube) == []
    producer.send(s.topic("alerts"), key=over.key(),
                  value=encode(alert("NodeKernelDeadlock", "n0", now - 5, status="resolved"))).get(10)
    _heal(kube)
    runner, th = started()
    try:
        assert runner.backlog == 1  # the resolution only: the firing alerts were not sent again
        wait_for(lambda: cordoned(kube) == ["n1"], "the failed cordon of n1 retried after the restart")
        trail = actions(read_trail(kafka_bootstrap, s.topic("actions")))
        assert ("n1", "cordon", "done") in trail and ("n0", "cordon", "abandoned") in trail
        assert _patches(kube, "n1") == 1 and _patches(kube, "n0") == 0
    finally:
        runner.stop()
        th.join(30)
        producer.close()


def test_a_retry_waits_while_the_kill_switch_is_on_and_goes_once_it_is_off():
    """A retry rebuilt from the trail was refused by the kill switch, and the refusal ended it for good: an alert that
    fired once was never acted on after the switch went off. It waits now, as a pending drain does."""
    clock = [T]
    kube, _, trail = _failed_once(clock)  # the cordon of n0 failed on a 503 at T: due again at T + 10
    _heal(kube)
    clock[0] = T + 60
    r = _restarted(kube, trail, clock, kill_switch=True)  # an operator stops kubesight's actions for a while
    _ticks(r, clock, T + 120)
    assert cordoned(kube) == [] and actions(trail) == [("n0", "cordon", "failed")] and r.retrying
    clock[0] = T + 300
    r = _restarted(kube, trail, clock)  # the switch off again; the alert still fires (max_alert_age not reached)
    assert r.retrying, actions(trail)
    _ticks(r, clock, T + 400)
    assert cordoned(kube) == ["n0"] and actions(trail)[-1] == ("n0", "cordon", "done")
    # and max_alert_age (900 s) still ends a retry the switch holds
    clock[0] = T
    kube, _, trail = _failed_once(clock)
    _heal(kube)
    r = _restarted(kube, trail, clock, kill_switch=True)
    _ticks(r, clock, T + 1000, step=50.0)
    assert not r.retrying and actions(trail)[-1] == ("n0", "cordon", "abandoned") and cordoned(kube) == []


def test_retries_rebuilt_from_the_trail_go_one_per_call_resume_gap_apart_however_late_the_calls():
    """Spaced RESUME_GAP apart, the resumed retries were still sent together by a tick that came late (the Runner's
    tick is every 5 s): each call of retry_actions (the Runner makes one per poll) now sends one of them at most."""
    names = [f"n{i}" for i in range(12)]
    clock = [T]
    kube, calls, trail = FakeKube(names), [], []
    _failing(kube, clock, calls)
    cfg = {"max_nodes": 100, "max_unschedulable_percent": 100}
    r = Remediator(settings(max_percent=100, **cfg), RULES, kube, trail.append, now=lambda: clock[0])
    for n in names[:8]:
        r.handle(alert("NodeKernelDeadlock", n, T), at=T)
    listed, sent = FakeKube.nodes, []

    def nodes():
        sent.append(clock[0])
        return listed(kube)

    kube.nodes = nodes
    clock[0] = T + 120  # restarted two minutes later: every retry overdue
    r = _restarted(kube, trail, clock, **cfg)
    for _ in range(4):
        clock[0] += 5.0  # a call as late as the 5 s tick
        r.retry_actions()
    assert len(sent) == 4 and len(set(sent)) == 4, sent
    r.retry_actions()  # a second call at the same instant: nothing more
    assert len(sent) == 4
    for _ in range(10):
        clock[0] += RESUME_GAP
        r.tick()
    assert len(sent) == 8 and all(b - a >= RESUME_GAP - 1e-9 for a, b in zip(sent, sent[1:], strict=False))
    assert cordoned(kube) == names[:8] and not r.retrying
