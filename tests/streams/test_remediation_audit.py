"""Findings of an audit of ``kubesight remediate`` on a fake API server (the FakeKube of test_remediation_safety):
what a drain evicts, alerts resolved before they were read, limits on what is held cordoned at once, drains that
failed or crashed half-way, pending drains the API server keeps failing, and nodes re-created under the same name."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from rules.schema import Drain
from streams.remediation import Remediator
from tests.streams.test_remediation_safety import RULES, FakeKube, actions, alert, cordoned, settings

T = 1_000_000.0


def _pods() -> list[dict]:
    def pod(name, owner=None, volumes=(), mirror=False):
        md = {"namespace": "a", "name": name, "annotations": {"kubernetes.io/config.mirror": "x"} if mirror else {}}
        if owner:
            md["ownerReferences"] = [{"kind": owner, "controller": True}]
        return {"metadata": md, "spec": {"volumes": list(volumes)}, "status": {"phase": "Running"}}

    return [pod("web", "ReplicaSet"), pod("bare"), pod("cache", "StatefulSet", [{"name": "s", "emptyDir": {}}]),
            pod("agent", "DaemonSet", [{"name": "s", "emptyDir": {}}]), pod("static", mirror=True),
            {"metadata": {"namespace": "a", "name": "orphaned", "ownerReferences": [{"kind": "ReplicaSet"}]},
             "spec": {}, "status": {"phase": "Running"}}]  # an owner that is not its controller re-creates nothing


def test_a_drain_keeps_pods_nothing_recreates_and_emptydir_data_unless_opted_in():
    """The drain evicted a bare pod (a hand-started migration: gone for good) and a pod's emptyDir data, where
    ``kubectl drain`` needs --force and --delete-emptydir-data."""
    kube = FakeKube(["n0", "n1", "n2"])
    kube.pods["n0"] = _pods()
    trail: list[dict] = []
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: T)
    r.handle(alert("NodeFrequentKernelOops", "n0", T), at=T)
    assert [w[2] for w in kube.writes if w[0] == "evict"] == ["web"]  # DaemonSet and mirror pods stay, as before
    assert actions(trail) == [("n0", "drain", "blocked")]
    rec = trail[-1]
    assert sorted(rec["kept"]) == ["a/bare", "a/cache", "a/orphaned"] and sorted(rec["blocked"]) == sorted(rec["kept"])
    assert "no controller" in rec["kept"]["a/bare"] and "emptyDir" in rec["kept"]["a/cache"]
    assert "not evicted: a/bare" in rec["reason"]
    # opted in: every pod but the DaemonSet's and the mirror pod is evicted, the drain is done
    opted = Drain.model_validate({"type": "drain", "evict_unreplicated": True, "delete_emptydir_data": True})
    rule = next(x for x in RULES.rules if x.alert == "NodeFrequentKernelOops")
    rules = SimpleNamespace(rules=[dataclasses.replace(rule, actions=[opted])])
    kube2 = FakeKube(["n0", "n1", "n2"])
    kube2.pods["n0"] = _pods()
    trail2: list[dict] = []
    r2 = Remediator(settings(max_percent=100), rules, kube2, trail2.append, now=lambda: T)
    r2.handle(alert("NodeFrequentKernelOops", "n0", T), at=T)
    assert sorted(w[2] for w in kube2.writes if w[0] == "evict") == ["bare", "cache", "orphaned", "web"]
    assert actions(trail2) == [("n0", "drain", "done")]


def test_an_alert_resolved_before_it_was_read_is_not_acted_on_and_an_old_episode_posts_no_event():
    """Both records of an episode over 9 min ago in one poll (a restart, a backlog): the node was cordoned now, and a
    6-day-old episode of the backlog posted a Warning Event now."""
    clock = [T + 600]
    kube = FakeKube(["n0", "n1", "n2", "n3"])
    trail: list[dict] = []
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0])
    r.handle_batch([(alert("NodeKernelDeadlock", "n0", T), T),
                    (alert("NodeKernelDeadlock", "n0", T, status="resolved"), T + 60)])
    assert actions(trail) == [] and cordoned(kube) == [] and r.conds.get("n0", {}) == {}
    # a firing record whose endsAt passed is the episode's end (its resolution is in a later poll, or lost)
    late = alert("NodeKernelDeadlock", "n1", T)
    late.endsAt = T + 300
    r.handle_batch([(late, T + 240)])
    assert actions(trail) == [] and cordoned(kube) == []
    # an episode of the backlog older than max_alert_age: no Event, the refusal said once
    old = T - 6 * 86400
    for _ in range(2):
        r.handle_batch([(alert("NodeKernelOops", "n2", old), old)])
    assert not [w for w in kube.writes if w[0] == "event"]
    [ev] = [x for x in trail if x["kind"] == "event"]
    assert ev["outcome"] == "refused" and "stale" in ev["reason"]
    # a firing record on its own, fresh, still acts
    r.handle_batch([(alert("NodeKernelDeadlock", "n3", clock[0] - 10), clock[0] - 10)])
    assert actions(trail) == [("n3", "cordon", "done")]


def test_a_slow_storm_never_takes_more_than_the_cap_of_nodes_out_at_once():
    """max_nodes / max_percent count actions within a window: three alerts an hour cordoned 19 of 20 nodes in 7 h."""
    clock = [T]
    kube = FakeKube([f"n{i:02d}" for i in range(20)])
    kube.n["n19"]["spec"]["unschedulable"] = True  # cordoned by a person: it counts too
    trail: list[dict] = []
    r = Remediator(settings(), RULES, kube, trail.append, now=lambda: clock[0])  # defaults: 3 nodes, 25 % an hour
    for i in range(12):
        r.handle(alert("NodeKernelDeadlock", f"n{i:02d}", clock[0]), at=clock[0])
        clock[0] += 1201  # three an hour: the per-window limits never refuse
    assert len(cordoned(kube)) == 5  # 25 % of 20
    refused = [x for x in trail if x["kind"] == "action" and x["outcome"] == "refused"]
    assert len(refused) == 8 and all("max_unschedulable_percent" in x["reason"] for x in refused)
    # the node already cordoned may still be tainted (no one more out); and a cap set apart from max_percent
    r2 = Remediator(settings(max_percent=100, max_unschedulable_percent=50), RULES, FakeKube(["a", "b", "c", "d"]),
                    trail.append, now=lambda: clock[0])
    for n in ("a", "b", "c"):
        r2.handle(alert("NodeKernelDeadlock", n, clock[0]), at=clock[0])
    assert cordoned(r2.kube) == ["a", "b"]
    r2.handle(alert("GPUXidFatal", "a", clock[0]), at=clock[0])  # cordon (already) + taint on a node already out
    assert actions(trail)[-2:] == [("a", "cordon", "done"), ("a", "taint", "done")]


def test_a_drain_that_failed_or_crashed_half_way_is_resumed_not_taken_as_done():
    """The drain's key went into the node's annotation with its cordon, before any eviction: after evictions that
    failed, or a crash that lost the 'blocked' record, the next attempt found it and recorded the drain recovered."""
    from streams.remediation import _done_map

    clock = [T]
    drain = alert("NodeFrequentKernelOops", "n0", T)
    # A: the evictions answer 500; the alert again (a replay) once the API server is healthy
    kube = FakeKube(["n0", "n1", "n2"], pods_each=2)
    kube.evict_error = RuntimeError("(500) Internal Server Error")
    trail: list[dict] = []
    Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0]).handle(drain, at=T)
    key = trail[-1]["key"]
    assert actions(trail) == [("n0", "drain", "failed")] and list(_done_map(kube.n["n0"])) == [key + "|cordoned"]
    kube.evict_error = None
    clock[0] += 60
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, history=list(trail), now=lambda: clock[0])
    r.handle(drain, at=clock[0] - 5)
    assert actions(trail)[-1] == ("n0", "drain", "done") and "resumed" in trail[-1]["reason"]
    assert [w[2] for w in kube.writes if w[0] == "evict"][-2:] == ["n0-0", "n0-1"]
    assert trail[-1]["key"] in _done_map(kube.n["n0"])  # noted done only now: a lost 'done' record is recovered
    # B: blocked by a PodDisruptionBudget, the 'blocked' record lost in a crash: the redelivered alert resumes it
    kube = FakeKube(["n0", "n1", "n2"], pods_each=2)
    kube.evict_code = 429
    trail = []
    Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0]).handle(drain, at=clock[0])
    assert trail.pop()["outcome"] == "blocked"
    kube.evict_code = 201
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, history=list(trail), now=lambda: clock[0])
    r.handle(drain, at=clock[0])
    assert actions(trail) == [("n0", "drain", "done")] and sum(w[0] == "evict" for w in kube.writes) == 4
    # C: a person uncordoned the node after the failed drain: the replay evicts nothing
    kube = FakeKube(["n0", "n1", "n2"], pods_each=1)
    kube.evict_error = RuntimeError("(500) Internal Server Error")
    trail = []
    Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0]).handle(drain, at=clock[0])
    kube.evict_error, kube.n["n0"]["spec"]["unschedulable"] = None, False
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, history=list(trail), now=lambda: clock[0])
    r.handle(drain, at=clock[0])
    assert actions(trail)[-1] == ("n0", "drain", "respected") and sum(w[0] == "evict" for w in kube.writes) == 1


def test_a_pending_drain_the_api_server_keeps_failing_is_paced_said_and_ends_at_its_timeout():
    """A blocked drain whose retries met a 500: tried every 5 s tick (2155 times in 3 h), never timed out, no trail."""
    from streams.remediation import DRAIN_ERROR_REPEAT

    clock = [T]
    kube = FakeKube(["n0", "n1", "n2"], pods_each=1)
    kube.evict_code = 429
    trail: list[dict] = []
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0])
    r.handle(alert("NodeFrequentKernelOops", "n0", T), at=T)
    calls = [0]

    def failing(node):
        calls[0] += 1
        raise RuntimeError("(500) Internal Server Error")

    kube.pods_on = failing
    for _ in range(3 * 3600 // 5):  # three hours of 5 s ticks; the drain's retry is 30s, its timeout 1h
        clock[0] += 5
        r.tick()
    assert 100 <= calls[0] <= 121  # every 30 s for an hour, then never again
    said = [x for x in trail if x.get("outcome") == "retry-failed"]
    assert 1 < len(said) <= 3600 / DRAIN_ERROR_REPEAT + 1 and "500" in said[0]["reason"]
    assert actions(trail)[-1] == ("n0", "drain", "failed") and "gave up after 3600s" in trail[-1]["reason"]
    assert "500" in trail[-1]["reason"] and not r.drains and not r.drain_tried


def test_a_node_recreated_under_the_same_name_after_the_alert_started_is_not_acted_on():
    """The cloud replaced gpu-7 two minutes after its Xid (new uid): the new, healthy node was cordoned and tainted."""
    from core.records import format_time

    kube = FakeKube(["gpu-7", "gpu-8", "gpu-9"])
    kube.n["gpu-7"]["metadata"].update(uid="uid-new", creationTimestamp=format_time(T + 120))
    kube.n["gpu-8"]["metadata"].update(uid="uid-8", creationTimestamp=format_time(T - 86400))
    trail: list[dict] = []
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: T + 300)
    r.handle(alert("GPUXidFatal", "gpu-7", T), at=T + 200)
    assert [o for _, _, o in actions(trail)] == ["refused", "refused"] and cordoned(kube) == []
    assert all("node re-created" in x["reason"] and x["node_uid"] == "uid-new" for x in trail if x["kind"] == "action")
    r.handle(alert("GPUXidFatal", "gpu-8", T), at=T + 200)  # a node older than the alert: acted on, its uid noted
    assert actions(trail)[-2:] == [("gpu-8", "cordon", "done"), ("gpu-8", "taint", "done")]
    assert trail[-1]["node_uid"] == "uid-8"



def test_a_failed_action_is_retried_with_backoff_until_done_resolved_too_old_or_refused_by_the_limits():
    """A cordon that met one 429 (API throttling) or a 5xx was recorded 'failed' and never tried again, though its
    alert still fired (published once per transition): the node kept taking pods. Condition writes were retried."""
    from kubernetes.client import ApiException

    from streams.remediation import RETRY_FIRST, RETRY_MAX

    clock = [T]
    kube = FakeKube(["gpu-1", "gpu-2", "gpu-3"])
    get = kube.node

    def flaky(name):
        if clock[0] < T + 10:  # a 10 s blip: API priority and fairness throttling
            raise ApiException(status=429, reason="Too Many Requests")
        return get(name)

    kube.node = flaky
    trail: list[dict] = []
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0])
    r.handle(alert("GPUXidFatal", "gpu-1", T), at=T)
    assert actions(trail) == [("gpu-1", "cordon", "failed"), ("gpu-1", "taint", "failed")]
    assert trail[-1]["retry_in"] == RETRY_FIRST and "429" in trail[-1]["reason"]
    for _ in range(60):
        clock[0] += 5
        r.tick()
    assert actions(trail)[2:] == [("gpu-1", "cordon", "done"), ("gpu-1", "taint", "done")] and not r.retrying
    assert cordoned(kube) == ["gpu-1"] and kube.n["gpu-1"]["spec"]["taints"]
    assert [w for w in kube.writes if w[0] == "patch"] == [("patch", "gpu-1")] * 2  # once each, then never again

    # the API server failing for good: backoff doubling to RETRY_MAX, the same error said once, abandoned at 900 s
    clock[0] = T
    kube = FakeKube(["n0", "n1", "n2"])
    calls = []

    def failing():  # the node list of the limits (the node itself is read each tick for its bootID too)
        calls.append(clock[0] - T)
        raise RuntimeError("(500) Internal Server Error")

    kube.nodes = failing
    trail = []
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0])
    r.handle(alert("NodeKernelDeadlock", "n0", T), at=T)
    for _ in range(3600 // 5):
        clock[0] += 5
        r.tick()
    assert calls == [0, 10, 30, 70, 150, 310, 610]  # 10, 20, 40, 80, 160, 300 s between tries (RETRY_MAX)
    assert RETRY_MAX == 300
    assert actions(trail) == [("n0", "cordon", "failed"), ("n0", "cordon", "abandoned")] and not r.retrying
    assert "900s" in trail[-1]["reason"] and "500" in trail[-1]["reason"] and cordoned(kube) == []

    # the alert resolves while the retry waits: abandoned, never tried again
    clock[0] = T
    trail = []
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0])
    r.handle(alert("NodeKernelDeadlock", "n1", T), at=T)
    tried = len(calls)
    r.handle(alert("NodeKernelDeadlock", "n1", T, status="resolved"), at=T + 5)
    for _ in range(100):
        clock[0] += 5
        r.tick()
    assert len(calls) == tried and actions(trail) == [("n1", "cordon", "failed"), ("n1", "cordon", "abandoned")]
    assert "resolved" in trail[-1]["reason"]

    # the retry goes through the limits: another node acted on meanwhile takes the only place (max_nodes 1)
    clock[0] = T
    kube = FakeKube(["n0", "n1", "n2", "n3"])
    get, kube.node = kube.node, flaky  # n0 fails until T + 10
    trail = []
    r = Remediator(settings(max_percent=100, max_nodes=1), RULES, kube, trail.append, now=lambda: clock[0])
    r.handle(alert("NodeKernelDeadlock", "n0", T), at=T)
    clock[0] = T + 11
    r.handle(alert("NodeKernelDeadlock", "n1", T + 11), at=T + 11)
    for _ in range(10):
        clock[0] += 5
        r.tick()
    assert actions(trail) == [("n0", "cordon", "failed"), ("n1", "cordon", "done"), ("n0", "cordon", "refused")]
    assert "max_nodes" in trail[-1]["reason"] and cordoned(kube) == ["n1"] and not r.retrying

    # an error that stays (422: an invalid change) is not retried
    kube = FakeKube(["n0", "n1", "n2"])

    def invalid(name, body):
        raise ApiException(status=422, reason="Unprocessable Entity")

    kube.patch_node = invalid
    trail = []
    r = Remediator(settings(max_percent=100), RULES, kube, trail.append, now=lambda: clock[0])
    r.handle(alert("NodeKernelDeadlock", "n0", clock[0]), at=clock[0])
    assert actions(trail) == [("n0", "cordon", "failed")] and "retry_in" not in trail[-1] and not r.retrying


def test_an_eviction_throttled_by_the_api_server_is_an_error_not_a_disruption_budget():
    """Kube.evict took every 429 for a PodDisruptionBudget's refusal: API throttling was recorded as a budget
    holding the drain. Only the Eviction API's budget message is one."""
    from kubernetes.client import ApiException

    from streams.remediation import Kube

    def answering(body):
        def evict(name, ns, eviction, **kw):
            exc = ApiException(status=429, reason="Too Many Requests")
            exc.body = body
            raise exc

        k = Kube.__new__(Kube)
        k.core = SimpleNamespace(create_namespaced_pod_eviction=evict)
        return k

    pdb = ('{"kind":"Status","status":"Failure","message":"Cannot evict pod as it would violate the pod\'s '
           'disruption budget.","reason":"TooManyRequests","code":429}')
    assert answering(pdb).evict("a", "web") == 429
    throttled = answering('{"kind":"Status","message":"Too many requests, please try again later.","code":429}')
    try:
        throttled.evict("a", "web")
        raise AssertionError("a throttled eviction was taken for a disruption budget")
    except ApiException as exc:
        assert exc.status == 429


def test_at_start_the_backlog_is_one_batch_an_episode_over_in_it_acts_on_nothing(kafka_bootstrap):
    """The Runner on the broker: an episode whose firing record and resolution are 600 records apart in the alerts
    topic fell into different polls (500 records each) at start, and its node was cordoned though the alert was over."""
    import threading
    import time
    import uuid

    from kafka import KafkaProducer

    from core.records import Alert, encode
    from core.topics import ensure_topics
    from streams.remediation import Runner

    tag = uuid.uuid4().hex[:8]
    s = settings(max_percent=100).model_copy(update={"kafka": kafka_bootstrap, "topic_prefix": f"t{tag}-",
                                                     "app_id": f"ks-{tag}", "partitions": 1})
    ensure_topics(s, kafka_bootstrap)
    now = time.time()
    over, fresh = alert("NodeKernelDeadlock", "n0", now - 120), alert("NodeKernelDeadlock", "n2", now - 60)
    filler = [Alert({"alertname": f"Filler{i}", "node": "n3"}, {}, "firing", now - 100, source="test")
              for i in range(600)]  # no rule: nothing to do
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    for a in [over, fresh, *filler, alert("NodeKernelDeadlock", "n0", now - 120, status="resolved")]:
        producer.send(s.topic("alerts"), key=a.key(), value=encode(a))
    producer.flush()
    kube = FakeKube(["n0", "n1", "n2", "n3"])
    runner = Runner(s, kafka_bootstrap, kube, rules=RULES, tick_every=0.5)
    th = threading.Thread(target=runner.run, daemon=True)
    th.start()
    try:
        assert runner.caught_up.wait(60) and runner.backlog == 603
        # after the backlog, a new alert: once it is acted on, every record before it was handled
        late = alert("NodeKernelDeadlock", "n1", time.time())
        producer.send(s.topic("alerts"), key=late.key(), value=encode(late)).get(10)
        deadline = time.monotonic() + 30
        while "n1" not in cordoned(kube) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cordoned(kube) == ["n1", "n2"]  # the over episode's n0 untouched; a firing of the backlog still acts
        assert ("patch", "n0") not in kube.writes
    finally:
        runner.stop()
        th.join(30)
        producer.close()
