"""``kubesight remediate`` across a change of leader, on an in-memory Lease store (resourceVersion locking, as the API
server's), the fake API server of test_remediation_safety and the real broker: what an audit of the leader election
(812ceae) and of the retries rebuilt from the trail (bbaf7f0) found wrong.

A candidate timed the Lease's expiry from before its read, so a slow GET let it take the Lease inside the holder's
renew deadline; no API call had a timeout, and a leader hung in one renewed the Lease from its other thread for good;
a 403 on the Lease was a warning every 2 s and no alert; Events had generated names, so a new leader posted a rule's
Event again, and a cordon it recorded as ``recovered`` had none; a retry rebuilt from the trail went out before the
backlog that resolves its alert was read.
"""

from __future__ import annotations

import copy
import logging
import socket
import threading
import time
import types
import uuid

import orjson
import pytest
from kubernetes.client import ApiException

from core.records import encode
from core.settings import Remediation, Settings
from core.topics import ensure_topics
from streams import remediation
from streams.remediation import (
    FORBIDDEN_ALERT,
    RBAC_HINT,
    RETRY_PERIOD,
    Kube,
    LeaderLease,
    NotLeader,
    Remediator,
    Runner,
    read_trail,
)
from tests.streams.test_remediation_safety import RULES, FakeKube, actions, alert, cordoned, settings

T = 1_000_000.0
FAST = {"duration": 4.0, "renew_deadline": 3.0, "retry": 0.5}


class FakeCoord:
    """coordination.k8s.io/v1 Leases in memory, one object: a write must carry the resourceVersion read (409
    otherwise), as the API server's. ``before_read``: called inside the next read before it is answered (a slow
    GET); ``fail``: identity -> what every call of that replica raises; ``timeouts``: each call's _request_timeout."""

    def __init__(self):
        self.obj, self.rv, self.before_read, self.fail, self.timeouts = None, 0, None, {}, []
        self.lock = threading.RLock()

    def view(self, who: LeaderLease):
        return _View(self, who)


class _View:
    def __init__(self, store: FakeCoord, who: LeaderLease):
        self.s, self.who = store, who

    def _enter(self, kw):
        self.s.timeouts.append(kw.get("_request_timeout"))
        exc = self.s.fail.get(self.who.identity)
        if exc is not None:
            raise exc

    def read_namespaced_lease(self, name, ns, **kw):
        with self.s.lock:
            self._enter(kw)
            if self.s.before_read:
                hook, self.s.before_read = self.s.before_read, None
                hook()
            if self.s.obj is None:
                raise ApiException(status=404)
            return types.SimpleNamespace(data=orjson.dumps(self.s.obj))

    def _store(self, body):
        self.s.rv += 1
        self.s.obj = copy.deepcopy(body)
        self.s.obj["metadata"]["resourceVersion"] = str(self.s.rv)
        return self.s.obj

    def create_namespaced_lease(self, ns, body, **kw):
        with self.s.lock:
            self._enter(kw)
            if self.s.obj is not None:
                raise ApiException(status=409)
            return self._store(body)

    def replace_namespaced_lease(self, name, ns, body, **kw):
        with self.s.lock:
            self._enter(kw)
            if body["metadata"].get("resourceVersion") != self.s.obj["metadata"]["resourceVersion"]:
                raise ApiException(status=409)
            return self._store(body)


def lease(store: FakeCoord, identity: str, clock=time.monotonic, **timing) -> LeaderLease:
    le = LeaderLease(None, identity=identity, clock=clock, **timing)
    le.coord = store.view(le)
    return le


class BlackHole:
    """Accepts TCP connections and never answers (an API server hung, a peer gone without a RST)."""

    def __init__(self):
        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        self.s.listen(64)
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.s.accept()[0])
            except OSError:
                return

    def client(self):
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = f"http://127.0.0.1:{self.s.getsockname()[1]}"
        return client.ApiClient(cfg)

    def close(self):
        for c in self.conns:
            c.close()
        self.s.close()


def wait_for(cond, what, within=30.0):
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _topics(kafka_bootstrap, **kw) -> Settings:
    tag = uuid.uuid4().hex[:8]
    s = Settings(kafka=kafka_bootstrap, topic_prefix=f"f{tag}-", app_id=f"fo-{tag}", partitions=1,
                 remediation=Remediation(dry_run=False, **kw))
    ensure_topics(s, kafka_bootstrap)
    return s


def _started(r: Runner) -> threading.Thread:
    th = threading.Thread(target=r.run, daemon=True)
    th.start()
    return th


# ---------------------------------------------------------------- the Lease


def test_a_candidate_whose_read_is_answered_late_times_the_lease_from_the_answer_not_from_its_request():
    clock = [0.0]
    store = FakeCoord()
    a, b = lease(store, "A", lambda: clock[0]), lease(store, "B", lambda: clock[0])  # production timings 15/10/2
    assert a.try_acquire_or_renew() and a.leading()
    clock[0] = 1.0  # B's try begins ...

    def slow_get():  # ... its GET is answered at 9; meanwhile (at 8) A renewed
        clock[0] = 8.0
        assert a.try_acquire_or_renew()
        clock[0] = 9.0

    store.before_read = slow_get
    assert not b.try_acquire_or_renew()
    store.fail["A"] = ApiException(status=503)  # A cannot renew any more: it leads until 8 + 10 by its own clock
    t, took = 9.0, None
    while t < 30.0:
        t = clock[0] = t + RETRY_PERIOD
        try:
            a.try_acquire_or_renew()
        except ApiException:
            pass
        if b.try_acquire_or_renew() and took is None:
            took = t
        assert not (a.leading() and b.leading()), f"two leaders at {t}: A until 18, B took the Lease at {took}"
    assert took is not None and took >= 9.0 + 15.0  # B took it once it saw the record unchanged for 15 s


def test_every_lease_and_kube_call_has_a_timeout_and_a_hung_one_ends(monkeypatch):
    store = FakeCoord()
    le = lease(store, "A", **FAST)
    assert le.try_acquire_or_renew() and le.try_acquire_or_renew()  # read and create, then read and replace
    le.release()  # read and replace
    assert len(store.timeouts) == 6 and all(t is not None and t < FAST["renew_deadline"] for t in store.timeouts)

    hole = BlackHole()
    try:
        stop = threading.Event()  # a Lease request that hangs: a failed try, and the thread ends on stop
        th = threading.Thread(target=LeaderLease(hole.client(), identity="C", **FAST).run, args=(stop,), daemon=True)
        th.start()
        time.sleep(0.5)
        stop.set()
        th.join(30)
        assert not th.is_alive(), "the lease thread still blocked in its first GET"

        monkeypatch.setattr(remediation, "KUBE_TIMEOUT", 0.5)
        kube, got, beats = Kube(hole.client()), [], []
        kube.progress = lambda: beats.append(1)

        def get():
            try:
                kube.node("n1")
            except Exception as exc:  # noqa: BLE001 - what the test looks at
                got.append(exc)

        th = threading.Thread(target=get, daemon=True)
        th.start()
        th.join(30)
        assert not th.is_alive() and got and beats, "a node GET to an API server that never answers never returned"
    finally:
        hole.close()


class HangingKube(FakeKube):
    """The node list hangs (a request the API server never answers) until ``free`` is set; writes are gated by the
    Lease as Kube's (``gate``: the Runner's)."""

    gate = None

    def __init__(self, names):
        super().__init__(names)
        self.free, self.hung = threading.Event(), threading.Event()

    def nodes(self):
        self.hung.set()
        self.free.wait(60)
        return super().nodes()

    def patch_node(self, name, body):
        Kube._writing(self, f"patch nodes/{name}")
        return super().patch_node(name, body)


@pytest.mark.kafka
def test_a_leader_stuck_in_its_work_lets_its_lease_lapse_and_another_replica_takes_over(kafka_bootstrap):
    s = _topics(kafka_bootstrap, max_percent=100)
    store, kube = FakeCoord(), HangingKube(["n0", "n1", "n2", "n3"])
    la = lease(store, "A", **FAST)
    r = Runner(s, kafka_bootstrap, kube, rules=RULES, tick_every=0.5, lease=la, stall=1.5)
    th, stop = _started(r), threading.Event()
    try:
        wait_for(r.caught_up.is_set, "A caught up as leader")
        from kafka import KafkaProducer

        p = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        a = alert("NodeKernelDeadlock", "n0", time.time())
        p.send(s.topic("alerts"), key=a.key(), value=encode(a)).get(30)
        p.close()
        wait_for(kube.hung.is_set, "A's work hung in a node list")
        lb = lease(store, "B", **FAST)
        threading.Thread(target=lb.run, args=(stop,), daemon=True).start()
        wait_for(lb.leading, "B never took over: the stuck leader kept renewing the Lease", within=20)
        assert not la.leading() and store.obj["spec"]["holderIdentity"] == "B"
    finally:
        stop.set()
        kube.free.set()
        r.stop()
        th.join(30)
    assert cordoned(kube) == []  # A, freed after losing the Lease, wrote nothing


@pytest.mark.kafka
def test_a_forbidden_lease_is_one_error_line_and_one_alert(kafka_bootstrap, caplog):
    s = _topics(kafka_bootstrap)
    store = FakeCoord()
    store.fail["A"] = ApiException(status=403, reason="Forbidden")
    la = lease(store, "A", **FAST)
    r = Runner(s, kafka_bootstrap, FakeKube(["n1"]), rules=RULES, tick_every=0.5, lease=la)
    caplog.set_level(logging.DEBUG, logger="kubesight.remediation")
    th = _started(r)
    wait_for(lambda: len(store.timeouts) >= 6, "the lease tried six times")  # 0.5 s apart: about 3 s
    r.stop()
    th.join(30)
    said = [x for x in caplog.records if "lease" in x.getMessage() and x.levelno >= logging.WARNING]
    assert [x.levelname for x in said] == ["ERROR"], [x.getMessage() for x in said]
    assert RBAC_HINT in said[0].getMessage() and "--lease-namespace" in said[0].getMessage()
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None, auto_offset_reset="earliest")
    tp = TopicPartition(s.topic("alerts"), 0)
    c.assign([tp])
    alerts = [orjson.loads(m.value) for b in c.poll(timeout_ms=5000).values() for m in b]
    c.close()
    assert not r.terms
    assert [a["labels"]["alertname"] for a in alerts] == [FORBIDDEN_ALERT], alerts
    assert "node" not in alerts[0]["labels"] and RBAC_HINT in alerts[0]["annotations"]["summary"]


# ---------------------------------------------------------------- Events across a change of leader


class NamedEvents(FakeKube):
    """Events by metadata.name, as the API server: a second create of a name is 409 AlreadyExists."""

    def __init__(self, names):
        super().__init__(names)
        self.names: set[str] = set()

    def event(self, body):
        name = body["metadata"].get("name")
        if name is None or name in self.names:
            raise ApiException(status=409, reason="AlreadyExists") if name else ValueError("no metadata.name")
        self.names.add(name)
        return super().event(body)


def _lost_lease_at(kind: str, trail: list):
    """The old leader's publish: its Lease lapses right before its first record of ``kind``."""

    def publish(rec):
        if rec["kind"] == kind:
            raise NotLeader("not leader: nothing published")
        trail.append(rec)

    return publish


def test_a_rules_event_is_posted_once_across_a_change_of_leader():
    kube, trail = NamedEvents(["n0", "n1", "n2", "n3"]), []
    a = alert("NodeKernelOops", "n0", T)
    with pytest.raises(NotLeader):  # posted the Event, lost the Lease before its record
        Remediator(settings(max_percent=100), RULES, kube, _lost_lease_at("event", trail), now=lambda: T).handle(a, at=T)
    new = Remediator(settings(max_percent=100), RULES, kube, trail.append, history=list(trail), now=lambda: T + 20)
    new.handle(a, at=T)  # the uncommitted alert, read again by the next leader
    assert len([w for w in kube.writes if w[0] == "event"]) == 1, kube.writes
    assert [r["outcome"] for r in trail if r["kind"] == "event"] == ["done"]  # the 409 is the Event posted: done


def test_a_cordon_recorded_as_recovered_posts_its_event_once():
    kube, trail = NamedEvents(["n0", "n1", "n2", "n3"]), []
    a = alert("NodeKernelDeadlock", "n0", T)
    with pytest.raises(NotLeader):  # cordoned (annotation written), its Event posted, the Lease lost before the record
        Remediator(settings(max_percent=100), RULES, kube, _lost_lease_at("action", trail), now=lambda: T).handle(
            a, at=T)
    # the Event goes before its record: losing the Lease between the two no longer loses the Event
    assert cordoned(kube) == ["n0"] and [w for w in kube.writes if w[0] == "event"] == [("event", "KubesightCordon")]
    for at in (T + 20, T + 40):  # the next leader, and the one after it (the same alert read again)
        Remediator(settings(max_percent=100), RULES, kube, trail.append, history=list(trail), now=lambda at=at: at
                   ).handle(a, at=T)
    assert actions(trail) == [("n0", "cordon", "recovered")]
    assert [w for w in kube.writes if w[0] == "event"] == [("event", "KubesightCordon")]  # posted again: a 409
    # a done cordon's Event and a recovered one's are the same Event: another leader posting it is a 409
    done = Remediator(settings(max_percent=100), RULES, NamedEvents(["n0", "n1", "n2", "n3"]), [].append, now=lambda: T)
    done.handle(a, at=T)
    assert done.kube.names == kube.names


# ---------------------------------------------------------------- retries rebuilt from the trail, the backlog first


@pytest.mark.kafka
def test_retries_rebuilt_from_the_trail_wait_for_the_backlog_then_go_at_each_poll(kafka_bootstrap, monkeypatch, caplog):
    """The previous leader's consumer still in the group (hung in an API call, its heartbeat alive) holds the
    partitions: the catch-up times out without reading the backlog, in which n0's alert resolved. The retries wait;
    once the backlog is read n0's is abandoned and the others go, each at a poll (the tick here: once a minute)."""
    from kafka import KafkaConsumer, KafkaProducer

    monkeypatch.setattr(remediation, "RETRY_FIRST", 0.5)
    monkeypatch.setattr(remediation, "CATCH_UP", 2.0)
    s = _topics(kafka_bootstrap, max_percent=100, max_nodes=10, max_unschedulable_percent=100)
    p = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    kube = FakeKube(["n0", "n1", "n2", "n3", "n4"])

    def down():
        raise ApiException(status=503)

    kube.nodes = down  # the previous leader: three cordons failed on a 503 (retry_in 0.5 s)
    pub = lambda rec: p.send(s.topic("actions"), key=rec["node"].encode(), value=orjson.dumps(rec)).get(30)  # noqa: E731
    t = float(int(time.time()))  # whole seconds: the action keys as from the alerts decoded (startsAt in ms)
    old = Remediator(s, RULES, kube, pub)
    for n in ("n0", "n1", "n2"):
        old.handle(alert("NodeKernelDeadlock", n, t), at=t)
    fire = alert("NodeKernelDeadlock", "n0", t)
    p.send(s.topic("alerts"), key=fire.key(), value=encode(fire)).get(30)
    stuck = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"{s.app_id}-remediation",
                          enable_auto_commit=False, max_poll_interval_ms=120_000, auto_offset_reset="earliest")
    stuck.subscribe([s.topic("alerts")])
    deadline = time.monotonic() + 30
    while not stuck.assignment() and time.monotonic() < deadline:
        stuck.poll(timeout_ms=300)
    assert stuck.assignment()
    res = alert("NodeKernelDeadlock", "n0", t, status="resolved")
    p.send(s.topic("alerts"), key=res.key(), value=encode(res)).get(30)
    del kube.nodes  # the API server is back
    records = len(read_trail(kafka_bootstrap, s.topic("actions")))
    caplog.set_level(logging.INFO, logger="kubesight.remediation")
    r = Runner(s, kafka_bootstrap, kube, rules=RULES, tick_every=60.0)
    th = _started(r)
    try:
        wait_for(r.caught_up.is_set, "the catch-up ended")
        assert r.backlog == 0  # timed out: nothing of the backlog read
        time.sleep(2.0)  # retries due since; polls and the first tick went by
        assert cordoned(kube) == [], "a retry rebuilt from the trail went before the backlog was read"
        stuck.close()  # the old member leaves: the group assigns the partition, the backlog is read
        wait_for(lambda: cordoned(kube) == ["n1", "n2"], f"n1, n2 not cordoned at the polls: {cordoned(kube)}")
        wait_for(lambda: ("n0", "cordon", "abandoned") in actions(read_trail(kafka_bootstrap, s.topic("actions"))),
                 "n0's retry not abandoned by its resolution")
    finally:
        stuck.close()
        r.stop()
        th.join(30)
        p.close()
    assert cordoned(kube) == ["n1", "n2"] and not [w for w in kube.writes if w == ("patch", "n0")]
    assert any(f"{records} trail record(s) read" in x.getMessage() for x in caplog.records), records
