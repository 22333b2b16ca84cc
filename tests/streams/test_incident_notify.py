"""Notification per incident (issue 15 #4): a route with ``incidents: true`` hands what it would notify to the
incident stage, which tells the root cause's owner the incident and every other receiver once; exactly once
across a restart of the incident processor in the middle of an incident (real broker)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from kafka import KafkaProducer

from alerts.config import load_text
from alerts.engine import Engine
from alerts.incidents import Incidents
from core.records import Alert, decode, encode
from streams.incidents import NOTIFY, REKEYED, IncidentStage, hand_off, incident_processor
from tests.kafkatools import read_to_end, until

T0 = 1_700_000_000.0
ROUTING = """
route:
  receiver: platform
  group_by: [alertname, namespace]
  group_wait: 10s
  group_interval: 1m
  incidents: {on}
  routes:
    - matchers: ['owner=~"team.+"']
      owner_receiver: true
receivers: [{{name: platform}}, {{name: team0}}, {{name: team1}}, {{name: team2}}, {{name: team3}}]
default_inhibit_rules: false  # its node-down rule would mute the teams' alerts, and so their notices
"""


def a(t, status="firing", **labels):
    labels.setdefault("cluster", "prod")
    return Alert(labels=labels, status=status, startsAt=t, endsAt=t if status == "resolved" else None,
                 annotations={"summary": labels["alertname"]})


def node_failure():
    """Node n1 fails; pods of four teams on it go not ready (two alerts for team0), then all resolve."""
    fire = [a(T0, alertname="KubeNodeNotReady", node="n1")]
    fire += [a(T0 + 5 + i, alertname="KubePodNotReady", namespace=f"ns{i}", workload=f"w{i}", node="n1",
               owner=f"team{i}") for i in range(4)]
    fire.append(a(T0 + 9, alertname="KubePodCrashLooping", namespace="ns0", workload="w0", node="n1", owner="team0"))
    fire.append(a(T0 + 12, alertname="KubePodNotReady", namespace="other", workload="x", node="n7", owner="team1"))
    resolve = [Alert(labels=x.labels, status="resolved", startsAt=x.startsAt, endsAt=T0 + 400) for x in fire]
    return fire, resolve


class Pipe:
    """The alerting stage's two steps (Engine) and the incident stage, in process, wired as the worker wires them."""

    def __init__(self, per_incident: bool):
        self.engine = Engine(load_text(ROUTING.format(on="true" if per_incident else "false")))
        self.stage = IncidentStage(Incidents(quiet=300), wall=True)  # its ticks end quiet periods
        self.astate, self.istate = {}, {}
        self.notes, self.incidents = [], []

    def _emit(self, topic, key, value):
        if topic == "notifications":
            self.notes.append(orjson.loads(value))
        elif topic == "incidents":
            self.incidents.append(orjson.loads(value))
        elif topic == "incident-alerts":
            self.stage.process(decode(value), self.istate, self._emit)

    def send(self, alert: Alert) -> None:
        self.stage.process(alert, self.istate, self._emit)  # the incident stage reads the alerts topic too
        self.engine.receive(alert, self.astate, max(alert.startsAt, alert.endsAt or 0.0))

    def tick(self, now: float) -> None:
        for note in self.engine.tick(self.astate, now):
            hand_off(note, self.engine.router, self._emit)
        self.stage.tick(now, self.istate, self._emit)


def _play(pipe: Pipe) -> Pipe:
    fire, resolve = node_failure()
    for x in fire:
        pipe.send(x)
        pipe.tick(x.startsAt)
    for t in range(int(T0) + 13, int(T0) + 100, 5):
        pipe.tick(float(t))
    for x in resolve:
        pipe.send(x)
    for t in range(int(T0) + 400, int(T0) + 1000, 30):
        pipe.tick(float(t))
    return pipe


def test_per_alert_routing_notifies_every_group_and_per_incident_routing_once_per_receiver():
    before = _play(Pipe(per_incident=False)).notes
    after_pipe = _play(Pipe(per_incident=True))
    after = after_pipe.notes
    assert not [n for n in before if n["groupKey"].startswith("incident:")]
    assert len([n for n in before if n["status"] == "firing"]) == 7  # one group per (alertname, namespace)
    firing = [n for n in after if n["status"] == "firing"]
    node_inc = next(r["id"] for r in after_pipe.incidents if r["blastRadius"]["nodes"] == ["n1"])
    on_node = [n for n in firing if n["groupKey"] == f"incident:{node_inc}"]
    # the platform team (the node's receiver) gets the incident; each team one informational notice
    assert sorted((n["receiver"], n["incident"]["role"]) for n in on_node) == [
        ("platform", "cause"), ("team0", "impacted"), ("team1", "impacted"), ("team2", "impacted"),
        ("team3", "impacted")]
    cause = next(n for n in on_node if n["incident"]["role"] == "cause")
    assert cause["incident"]["candidates"][0]["entity"] == "node/n1"
    assert cause["incident"]["candidates"][0]["evidence"] and cause["incident"]["blastRadius"]["owners"] == [
        "team0", "team1", "team2", "team3"]
    assert [x["labels"]["alertname"] for x in cause["alerts"]] == ["KubeNodeNotReady"]
    said = cause["alerts"][0]["annotations"]  # what a webhook's commonAnnotations, Slack or e-mail show
    assert said["incident_role"] == "cause" and said["incident_evidence"].startswith("KubeNodeNotReady since")
    assert "explains 5/5 other alerts" in said["incident_evidence"]
    assert said["blast_radius"] == "4 workloads in 4 namespaces; owners: team0, team1, team2, team3; nodes: n1"
    team0 = next(n for n in on_node if n["receiver"] == "team0")
    assert team0["alerts"][0]["annotations"]["probable_cause"] == "node/n1: KubeNodeNotReady"
    # team1's pod on another node is an incident of its own: one more notification, its own cause
    other = [n for n in firing if n["groupKey"] != f"incident:{node_inc}"]
    assert [(n["receiver"], n["incident"]["role"]) for n in other] == [("team1", "cause")]
    # the incident record says who was told and as what; show prints it
    from alerts.incidents import render

    last = [r for r in after_pipe.incidents if r["id"] == node_inc][-1]
    assert last["notified"] == {"platform": "cause", "team0": "impacted", "team1": "impacted", "team2": "impacted",
                                "team3": "impacted"}
    assert "NOTIFIED: platform (the incident), team0 (a notice), team1 (a notice)" in render(last)
    # resolved: each receiver told once that its incident is over; nothing else
    resolved = [n for n in after if n["status"] == "resolved"]
    assert sorted(n["receiver"] for n in resolved) == ["platform", "team0", "team1", "team1", "team2", "team3"]
    assert len(after) == len(firing) + len(resolved) and len({n["id"] for n in after}) == len(after)


def test_no_route_with_the_option_changes_nothing():
    engine = Engine(load_text(ROUTING.format(on="false")))
    got = []
    note = {"groupKey": '{}:{alertname="A"}', "receiver": "platform", "alerts": []}
    hand_off(note, engine.router, lambda *x: got.append(x))
    assert [(t, k) for t, k, _ in got] == [("notifications", note["groupKey"].encode())]


def test_a_notice_for_an_alert_handed_over_before_the_stage_saw_it_and_upgraded_when_its_alert_becomes_the_cause():
    inc = Incidents()
    st: dict = {}
    pod = a(T0, alertname="KubePodNotReady", namespace="ns0", workload="w0", node="n1", owner="team0")
    inc.handed(pod, "team0", st, T0 + 10)  # alerting was quicker than the re-keyed copy: it joins here
    notes = inc.take_notes()
    assert [(n["receiver"], n["incident"]["role"]) for n in notes] == [("team0", "cause")]
    inc.observe(pod, st, T0 + 11)  # the re-keyed copy, later: a duplicate
    node = a(T0 - 30, alertname="CloudInstanceMaintenance", node="n1")
    inc.observe(node, st, T0 + 12)
    inc.handed(node, "platform", st, T0 + 20)
    inc.handed(node, "platform", st, T0 + 21)  # a repeat of the group: nothing new
    notes = inc.take_notes()
    assert [(n["receiver"], n["incident"]["role"], n["status"]) for n in notes] == [("platform", "cause", "firing")]


def test_a_held_incident_names_the_node_its_cause_even_when_a_pod_alert_came_first():
    """Without a hold the first alert's team is told it is the cause, and stays told; with one (incident_wait), the
    first notifications wait until the node's alert came, and the node's owner gets the cause, the team a notice.
    A restarted stage (a new Incidents over the same state) releases the hold as one that never stopped."""
    pod = a(T0, alertname="KubePodNotReady", namespace="ns0", workload="w0", node="n1", owner="team0")
    node = a(T0 + 2, alertname="KubeNodeNotReady", node="n1")

    def play(hold: float, restart: bool = False) -> list[tuple[str, str]]:
        inc, st = Incidents(hold=hold), {}
        inc.handed(pod, "team0", st, T0 + 1)
        inc.handed(node, "platform", st, T0 + 3)
        got = inc.take_notes()
        if restart:  # state only: the index is rebuilt from it
            inc = Incidents(hold=hold)
        if hold:  # nothing before the hold ends
            assert got == [] and inc.expire(st, T0 + 5) == [] and inc.take_notes() == []
        released = inc.expire(st, T0 + 12)
        got += inc.take_notes()
        if hold:
            assert [r["notified"] for r in released] == [{"platform": "cause", "team0": "impacted"}]
        return sorted((n["receiver"], n["incident"]["role"]) for n in got)

    assert play(0) == [("platform", "cause"), ("team0", "cause")]
    assert play(10) == [("platform", "cause"), ("team0", "impacted")]
    assert play(10, restart=True) == [("platform", "cause"), ("team0", "impacted")]


def test_a_held_incident_of_sixty_pods_is_ranked_again_when_its_hold_is_released():
    """A node's alert after 60 of its pods' (another collector's partition): the ranking kept from the incident's 50th
    member (a large one is ranked again only as it grows) put a pod's workload first at the hold's release, and
    its team was told it was the cause. The release ranks on every member. The 60 pods are one workload's, so they
    make one incident that the node's alert joins: pods each of their own workload would open 60 incidents for the
    node's alert to merge, and the release would never rank a held incident of 60."""
    inc, st = Incidents(hold=10), {}
    for i in range(60):
        pod = a(T0 + 1 + i * 0.01, alertname="KubePodNotReady", namespace="ns", workload="w", pod=f"w-{i}",
                node="n1", owner=f"team{i % 4}")
        inc.handed(pod, f"team{i % 4}", st, T0 + 1 + i * 0.01)
    inc.handed(a(T0, alertname="KubeNodeNotReady", node="n1"), "platform", st, T0 + 4)
    (released,) = inc.expire(st, T0 + 20)
    assert released["candidates"][0]["entity"] == "node/n1"
    assert released["notified"] == {"platform": "cause", "team0": "impacted", "team1": "impacted",
                                    "team2": "impacted", "team3": "impacted"}


# ---------------------------------------------------------------- exactly once across a restart (real broker)

def _handed(x: Alert, receiver: str) -> Alert:
    return Alert(x.labels, {**x.annotations, REKEYED: "1", NOTIFY: receiver}, x.status, x.startsAt, x.endsAt)


def _inputs():
    """(topic, alert) in order: each alert on ``alerts``, then handed over as the alerting stage would (10 s later),
    the resolutions, then a heartbeat carrying event time past the quiet period."""
    fire, resolve = node_failure()
    out = [("alerts", x) for x in fire]
    out += [("incident-alerts", _handed(x, x.labels.get("owner", "platform"))) for x in fire]
    half = len(out) // 2 + 2  # the restart falls after the platform's and team0's notifications, before the rest
    out += [("alerts", x) for x in resolve]
    out.append(("alerts", a(T0 + 2000, "resolved", alertname="Heartbeat", node="n5")))
    return out[:half], out[half:]


def _run(s, bootstrap, restart: bool) -> list[dict]:
    first, second = _inputs()
    prod = KafkaProducer(bootstrap_servers=bootstrap, acks="all")

    async def send(proc, items):
        for topic, x in items:
            n = proc.stats["in"]
            key = x.labels["cluster"].encode() if topic == "incident-alerts" else x.key()
            prod.send(s.topic(topic), encode(x), key=key)
            prod.flush()
            want = 2 if topic == "alerts" else 1  # an alert and its re-keyed copy
            await until(lambda n=n, want=want: proc.stats["in"] >= n + want, f"processed {topic} {x.labels} {proc.stats}", 60)
        await until(lambda: not proc._outputs_pending(), "outputs committed", 60)
        await proc._commit()

    async def main():
        parts = [first, second] if restart else [first + second]
        for i, items in enumerate(parts):
            proc = incident_processor(s, bootstrap, worker_id="w", tick_interval=5.0)
            await proc.start()
            try:
                await send(proc, items)
                if i:
                    assert proc.stats["restored"] > 0, "the second processor must start from the changelog"
            finally:
                await proc.stop()

    asyncio.run(main())
    prod.close()
    return [orjson.loads(m.value) for m in read_to_end(bootstrap, s.topic("notifications"))]


@pytest.mark.kafka
def test_a_restart_in_the_middle_of_an_incident_sends_each_notification_exactly_once(settings, kafka_bootstrap):
    from core.topics import ensure_topics

    plain = _run(settings, kafka_bootstrap, restart=False)
    s2 = settings.model_copy(update={"topic_prefix": settings.topic_prefix + "r-", "app_id": settings.app_id + "-r"})
    ensure_topics(s2, kafka_bootstrap)
    restarted = _run(s2, kafka_bootstrap, restart=True)

    def key(n):
        return (n["groupKey"], n["receiver"], n["status"], n["id"])

    assert sorted(map(key, restarted)) == sorted(map(key, plain))
    firing = [(n["receiver"], n["incident"]["role"]) for n in plain if n["status"] == "firing"]
    assert sorted(firing) == [("platform", "cause"), ("team0", "impacted"), ("team1", "cause"),
                              ("team1", "impacted"), ("team2", "impacted"), ("team3", "impacted")]
    assert sorted(n["receiver"] for n in plain if n["status"] == "resolved") == [
        "platform", "team0", "team1", "team1", "team2", "team3"]


def test_a_storm_s_incident_note_fits_a_kafka_record_and_says_what_it_left_out():
    """The API server down and 600 pods on 200 nodes not ready, all told to the platform receiver: one incident of
    500 members (the rest counted). Its note listed every alert, each repeating a blast radius that named every
    node: 3.5 MB, over what a Kafka record holds, so it was dead-lettered and the platform was never paged. Now the
    blast radius names ten of each, and the note is cut as an alert group's is (firing first, the totals said)."""
    from alerts.payload import webhook
    from core.records import RECORD_LIMIT

    inc, st = Incidents(hold=10), {}
    desc = "kubernetes-mixin KubePodNotReady: the pod has been Pending, Unknown or Failed; look at its events. " * 3
    inc.handed(Alert({"alertname": "KubeAPIDown", "cluster": "prod", "severity": "critical"},
                     {"summary": "the API server is down", "description": desc}, startsAt=T0), "platform", st, T0)
    for i in range(600):
        pod = Alert({"alertname": "KubePodNotReady", "cluster": "prod", "namespace": f"ns{i % 40}",
                     "workload": f"Deployment/app{i}", "pod": f"app{i}-7d9f8c6b5-x2x4z", "severity": "warning",
                     "node": f"ip-10-0-{i % 200}.ec2.internal", "owner": f"team{i % 30}"},
                    {"summary": f"pod app{i} not ready", "description": desc}, startsAt=T0 + 3 + i * 0.01)
        inc.handed(pod, "platform", st, T0 + 3 + i * 0.01)
    inc.expire(st, T0 + 30)
    (note,) = [n for n in inc.take_notes() if n["receiver"] == "platform"]
    assert len(orjson.dumps(note)) + len(note["groupKey"]) <= RECORD_LIMIT
    assert note["truncatedAlerts"] > 0 and note["numFiring"] == len(note["alerts"]) + note["truncatedAlerts"] > 500
    assert note["alerts"][0]["labels"]["alertname"] == "KubeAPIDown"  # the cause is kept (the earliest first)
    assert note["incident"]["candidates"][0]["entity"] == "controlplane/apiserver"
    said = note["alerts"][0]["annotations"]["blast_radius"]
    assert said.endswith("and 190 more") and len(said) < 1000, said
    assert webhook(note, "http://kubesight")["truncatedAlerts"] == note["truncatedAlerts"]  # what the receiver reads
