"""A change of leader between two ``kubesight remediate`` replicas, on the in-memory Lease store and the fake API
server of test_remediation_failover and the real broker. The retries rebuilt from the trail were tested across a
restart only (one Remediator, then another on its trail); a leader change runs that code inside a live replica that
was a candidate until then, while the old leader lives on beside it: this is the test of its own the README lacked.

Replica A leads: it cordons n0, posts n1's rule Event, and two cordons (n2, n4) fail on the API server throttling
(429) and wait for a retry. A cannot renew the Lease any more and stops; while nobody leads, n0's and n1's alerts are
read again (a replay), n3's alert fires and resolves, n4's resolves. B takes the Lease over and must: retry n2 once,
its backoff going on from A's tries; redo nothing A did; act on neither n3 nor n4.
"""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes.client import ApiException

from core.records import encode
from streams import remediation
from streams.remediation import Kube, Runner, read_trail
from tests.streams.test_remediation_failover import (
    FAST,
    FakeCoord,
    NamedEvents,
    _started,
    _topics,
    lease,
    wait_for,
)
from tests.streams.test_remediation_safety import RULES, alert, cordoned

pytestmark = pytest.mark.kafka

RETRY_FIRST = 0.25  # s: A's tries of a failed cordon at 0, 0.25, 0.75, 1.75, 3.75 s after it first failed


class Throttled(NamedEvents):
    """The API server the replicas share: Events by name (409 on a second create), and every Event create counted
    (a 409 too: a replica that posts an Event again is seen even though the server keeps one). ``throttle``: how
    many node lists fail with a 429 still (None: every one), each with its own message (so each try of a retry is
    in the trail, not once per DRAIN_ERROR_REPEAT); only a cordon's checks list the nodes."""

    def __init__(self, names):
        super().__init__(names)
        self.throttle: int | None = 0
        self.throttled = 0
        self.posts: list[str] = []
        self.lock = threading.Lock()

    def nodes(self):
        with self.lock:
            if self.throttle is None or self.throttle > 0:
                self.throttled += 1
                if self.throttle is not None:
                    self.throttle -= 1
                raise ApiException(status=429, reason=f"Too Many Requests #{self.throttled}")
        return super().nodes()

    def event(self, body):
        self.posts.append(body["metadata"].get("name"))
        return super().event(body)


class Replica:
    """One replica's client of the shared API server: its writes gated by its own Lease (the Runner sets ``gate``),
    as Kube's, and each of them noted with who made it."""

    gate = None
    progress = None

    def __init__(self, api: Throttled, who: str, log: list):
        self.api, self.who, self.log = api, who, log

    def _write(self, what: str, node: str) -> None:
        Kube._writing(self, f"{what} {node}")
        self.log.append((self.who, what, node))

    def node(self, name):
        return self.api.node(name)

    def nodes(self):
        return self.api.nodes()

    def pods_on(self, node):
        return self.api.pods_on(node)

    def patch_node(self, name, body):
        self._write("patch", name)
        return self.api.patch_node(name, body)

    def apply_conditions(self, name, conds):
        self._write("conditions", name)
        return self.api.apply_conditions(name, conds)

    def event(self, body):
        self._write("event", body["involvedObject"]["name"])
        return self.api.event(body)

    def evict(self, ns, name):
        self._write("evict", f"{ns}/{name}")
        return self.api.evict(ns, name)


def _of(trail: list, node: str, who: str | None = None) -> list[dict]:
    """The action records of ``node`` (written by replica ``who``)."""
    return [r for r in trail if r["kind"] == "action" and r["node"] == node and who in (None, r.get("replica"))]


def test_a_new_leader_retries_the_old_ones_pending_action_once_backoff_going_on_and_redoes_nothing(
        kafka_bootstrap, monkeypatch):
    from kafka import KafkaProducer

    monkeypatch.setattr(remediation, "RETRY_FIRST", RETRY_FIRST)
    s = _topics(kafka_bootstrap, max_percent=100, max_nodes=10, max_unschedulable_percent=100)
    api, writes, store = Throttled([f"n{i}" for i in range(6)]), [], FakeCoord()
    la, lb = lease(store, "A", **FAST), lease(store, "B", **FAST)
    ra = Runner(s, kafka_bootstrap, Replica(api, "A", writes), rules=RULES, tick_every=0.5, lease=la)
    rb = Runner(s, kafka_bootstrap, Replica(api, "B", writes), rules=RULES, tick_every=0.5, lease=lb)
    p = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")

    def send(*alerts):
        for a in alerts:
            p.send(s.topic("alerts"), key=a.key(), value=encode(a)).get(30)

    def trail():
        return read_trail(kafka_bootstrap, s.topic("actions"))

    t = float(int(time.time()))  # whole seconds: the action keys as from the alerts decoded (startsAt in ms)
    deadlock = {n: alert("NodeKernelDeadlock", n, t) for n in ("n0", "n2", "n3", "n4")}
    oops = alert("NodeKernelOops", "n1", t)
    tha = _started(ra)
    wait_for(ra.caught_up.is_set, "A leads and caught up")
    thb = _started(rb)  # a candidate: it sees A hold the Lease
    try:
        wait_for(lambda: lb.holder == "A", "B saw A hold the Lease")
        send(deadlock["n0"], oops)
        wait_for(lambda: cordoned(api) == ["n0"] and api.names and len(api.posts) == 2, "A cordoned n0, posted 2 Events")
        api.throttle = None  # the API server throttles: the cordons of n2 and n4 fail, and each retry of them
        send(deadlock["n2"], deadlock["n4"])
        wait_for(lambda: [r["outcome"] for r in _of(trail(), "n2")][:2] == ["failed", "retry-failed"],
                 "A's cordon of n2 failed and its first retry too")
        with store.lock:  # A cannot renew any more (the API server away for it); B is kept out for now
            store.fail.update(A=ApiException(status=503), B=ApiException(status=503))
        wait_for(lambda: not la.leading() and not ra.leading.is_set(), "A stopped acting", within=10)
        api.throttle = 1  # B's first try of n2 is throttled still, the next one is served
        # while nobody leads: n0's and n1's alerts read again, n3's episode fires and resolves, n4's resolves
        send(deadlock["n0"], oops, deadlock["n3"], alert("NodeKernelDeadlock", "n3", t, status="resolved"),
             alert("NodeKernelDeadlock", "n4", t, status="resolved"))
        assert not la.leading() and not lb.leading() and not rb.terms
        before = trail()
        a_n2 = _of(before, "n2")
        assert {r.get("replica") for r in before} == {"A"} and a_n2[-1]["outcome"] == "retry-failed", a_n2
        with store.lock:
            del store.fail["B"]
        wait_for(lambda: rb.terms == 1 and rb.caught_up.is_set(), "B took the Lease over and caught up", within=20)
        wait_for(lambda: "done" in [r["outcome"] for r in _of(trail(), "n2", "B")], "B never cordoned n2")
        wait_for(lambda: [r["outcome"] for r in _of(trail(), "n4", "B")] == ["abandoned"],
                 "B did not abandon n4's retry (its alert resolved while nobody led)")
    finally:
        for r in (rb, ra):
            r.stop()
        for th in (thb, tha):
            th.join(30)
        p.close()
    assert not tha.is_alive() and not thb.is_alive()
    after = trail()
    assert [r.get("replica") for r in after] == ["A"] * len(before) + ["B"] * (len(after) - len(before)), \
        "A wrote after it lost the Lease, or B before it took it"

    # (iii) n3 fired and resolved while nobody led: nothing done, written or recorded for it; n4's retry is over
    assert not [w for w in writes if w[2] == "n3"] and not [r for r in after if r["node"] == "n3"]
    assert cordoned(api) == ["n0", "n2"] and not [w for w in writes if w[1] == "patch" and w[2] == "n4"]
    assert api.throttle == 0  # B's one throttled try was had

    # (ii) nothing A did is redone: n0's cordon and Event, n1's rule Event; every Event posted once
    assert [w for w in writes if w[0] == "B" and w[2] in ("n0", "n1")] == [], writes
    assert [r["outcome"] for r in _of(after, "n0")] == ["done"] and not [
        r for r in after if r["kind"] == "event" and r.get("replica") == "B"]
    assert len(api.posts) == len(set(api.posts)) == len(api.names), api.posts
    assert writes.count(("A", "patch", "n0")) == 1

    # (i) n2: retried by B once, from A's tries (the backoff goes on: not tries 1 after RETRY_FIRST, a new failure)
    last, by_b = a_n2[-1], _of(after, "n2", "B")
    assert [r["outcome"] for r in by_b] == ["retry-failed", "done"], by_b
    assert by_b[0]["tries"] == last["tries"] + 1 >= 3, (last, by_b[0])
    assert by_b[0]["retry_in"] == RETRY_FIRST * 2 ** last["tries"], (last, by_b[0])
    assert by_b[0]["t"] >= last["t"] + last["retry_in"]  # not before A's next try was due
    assert by_b[1]["t"] >= by_b[0]["t"] + by_b[0]["retry_in"] - 0.05  # its record a moment after the retry was set
    assert writes.count(("B", "patch", "n2")) == 1 and not [w for w in writes if w[:2] == ("A", "patch")
                                                           and w[2] != "n0"]
