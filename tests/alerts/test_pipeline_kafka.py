"""The alert pipeline end to end with the real broker: routing to owners, inhibition, silences, restarts."""

import asyncio
import time
from collections import Counter

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition

from alerts.config import load_text
from alerts.silences import Silence
from core.kafkaclient import client_config
from core.records import Alert, encode, format_time
from core.topics import ensure_topics
from streams.alerting import AlertingService
from tests.alerts.webhook_server import ScriptedReceiver
from tests.kafkatools import read_to_end

pytestmark = pytest.mark.kafka


@pytest.fixture
def settings(settings):
    """These tests run Alertmanager's timings on the wall clock (clock: wall, as in a live cluster)."""
    return settings.model_copy(update={"clock": "wall"})

ROUTING = """
route:
  receiver: platform
  group_by: [alertname, node]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 24h
  routes:
    - matchers: ['owner=~".+"']
      owner_receiver: true
default_inhibit_rules: true
receivers:
  - name: team-a
    webhook_configs: [{{url: "{a}/hook", timeout: 500ms}}]
    retry: {{initial: 50ms, max_backoff: 200ms, budget: 1h}}
  - name: platform
    webhook_configs: [{{url: "{p}/hook", timeout: 500ms}}]
    retry: {{initial: 50ms, max_backoff: 200ms, budget: 1h}}
"""


async def produce(settings, alerts):
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka, acks="all", enable_idempotence=True)
    await p.start()
    try:
        for a in alerts:
            await p.send_and_wait(settings.topic("alerts"), encode(a), key=a.key())
    finally:
        await p.stop()


async def wait_for(cond, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.1)


def seen(server):
    """(group labels, alert names/pods, status of each) per accepted notification."""
    return [(tuple(sorted(x["body"]["groupLabels"].items())),
             tuple(sorted((a["labels"].get("pod", a["labels"]["alertname"]), a["status"]) for a in x["body"]["alerts"])))
            for x in server.accepted]


def written(settings, receiver: str) -> list:
    """What the alerting engine wrote to ``notifications`` for ``receiver`` (read_committed), as ``seen`` shows it."""
    notes = [orjson.loads(m.value) for m in read_to_end(settings.kafka, settings.topic("notifications"))]
    return sorted((tuple(sorted(n["groupLabels"].items())),
                   tuple(sorted((a["labels"].get("pod", a["labels"]["alertname"]), a["status"]) for a in n["alerts"])))
                  for n in notes if n["receiver"] == receiver)


async def routed(settings, timeout: float = 60.0) -> None:
    """Wait until the alerting processor has committed past every record on ``alerts``: each one is routed, and its
    group made (or its alert-groups record committed), so a group made after this flushes after theirs."""
    def wait() -> None:
        c = KafkaConsumer(**client_config(settings.kafka, "kafka-python"), group_id=f"{settings.app_id}-alerting",
                          enable_auto_commit=False)
        try:
            tps = [TopicPartition(settings.topic("alerts"), p) for p in range(settings.partitions)]
            ends, deadline = c.end_offsets(tps), time.monotonic() + timeout
            while any((c.committed(tp) or 0) < ends[tp] for tp in tps):
                assert time.monotonic() < deadline, f"gave up waiting for the alerts to be routed ({ends})"
                time.sleep(0.1)
        finally:
            c.close()

    await asyncio.to_thread(wait)


def notes_done(settings) -> tuple[int, int]:
    """(done, written): how many of the notifications on ``notifications`` the delivery group's commit counts as
    done, and how many there are. Done: below the committed offset, or beyond it and marked done for its receiver
    in the commit's metadata (``Progress``), i.e. what a restarted worker skips: a 2xx (or a dead letter) that
    is committed."""
    from streams.alerting import Progress

    topic = settings.topic("notifications")
    notes = read_to_end(settings.kafka, topic)
    c = KafkaConsumer(**client_config(settings.kafka, "kafka-python"), group_id=f"{settings.app_id}-deliver",
                      enable_auto_commit=False)
    try:
        done = 0
        for p in range(settings.partitions):
            om = c.committed(TopicPartition(topic, p), metadata=True)
            if om is None:
                continue
            prog = Progress(om.offset, om.metadata or "")
            for m in sorted((m for m in notes if m.partition == p), key=lambda m: m.offset):
                done += m.offset < om.offset or prog.seen(orjson.loads(m.value)["receiver"], m.offset) is True
        return done, len(notes)
    finally:
        c.close()


async def delivered(settings, at_least: int | None = None, timeout: float = 60.0) -> None:
    """Wait until the delivery group has committed every notification on ``notifications`` as done (or ``at_least``
    of them): whatever was sent by then is on the receivers' lists, and none of it is sent again."""
    def wait() -> None:
        deadline = time.monotonic() + timeout
        while True:
            done, written = notes_done(settings)
            if done >= (written if at_least is None else at_least):
                return
            assert time.monotonic() < deadline, f"gave up waiting for the deliveries to be committed ({done}/{written})"
            time.sleep(0.1)

    await asyncio.to_thread(wait)


async def marker(settings, platform, name: str) -> None:
    """A positive sign that nothing more is coming: an alert for the platform in a group of its own, produced once
    the alerts before it are routed and their notifications have arrived, and waited for. It starts now, so its
    group waits its whole group_wait (one that started longer ago is told at once, as Alertmanager does); made last,
    it flushes after every earlier group's next flush (their group_interval is as long): by the time its
    notification arrives, whatever those flushes wrote is on ``notifications`` too (``written``). Then it waits for
    the delivery group's commit to cover every notification (``delivered``): each was sent to its receiver as often
    as it ever will be (a notification is sent again only when read again, i.e. not yet committed as done)."""
    await routed(settings)
    await produce(settings, [alert(name, "n9", t=time.time() + 1)])  # startsAt: now
    await wait_for(lambda: any(name in str(s) for s in seen(platform)), f"the {name} notification")
    await delivered(settings)


def alert(name, node, pod="", owner="", ns="shop", status="firing", t=None):
    labels = {"alertname": name, "node": node, "namespace": ns, "severity": "warning"}
    if pod:
        labels.update(pod=pod, workload=f"Deployment/{pod}")
    if owner:
        labels["owner"] = owner
    now = time.time() if t is None else t
    return Alert(labels, status=status, startsAt=now - 1, endsAt=now if status == "resolved" else None)


def test_owners_inhibition_and_silences_end_to_end(settings):
    async def go():
        team, platform = ScriptedReceiver(), ScriptedReceiver()
        cfg = load_text(ROUTING.format(a=await team.start(), p=await platform.start()))
        svc = AlertingService(settings, settings.kafka, cfg, worker_id="w1")
        await svc.start()
        try:
            now = time.time()
            await svc.book.put(Silence.create({
                "matchers": [{"name": "namespace", "value": "muted"}], "startsAt": format_time(now - 5),
                "endsAt": format_time(now + 3600), "createdBy": "test", "comment": "maintenance"}, now=now, id="sil-1"))
            await produce(settings, [
                alert("KubeNodeNotReady", "n1", severity := ""),  # noqa: F841 - node alert, no owner
                alert("KubePodNotReady", "n1", pod="cart", owner="team-a"),      # inhibited by n1 NotReady
                alert("KubePodNotReady", "n2", pod="web", owner="team-a"),       # team-a
                alert("KubePodNotReady", "n2", pod="db", owner="team-zzz"),      # unknown owner -> platform
                alert("KubePodNotReady", "n3", pod="job", owner="team-a", ns="muted"),  # silenced
            ])
            await wait_for(lambda: len(team.accepted) >= 1 and len(platform.accepted) >= 2, "first notifications")
            await marker(settings, platform, "Marker1")  # the inhibited and the silenced alert's groups flushed by now
            assert written(settings, "team-a") == sorted(seen(team)) == [((("alertname", "KubePodNotReady"), ("node", "n2"), ("owner", "team-a")),
                                           (("web", "firing"),))]
            assert written(settings, "platform") == sorted(seen(platform)) == [
                ((("alertname", "KubeNodeNotReady"), ("node", "n1")), (("KubeNodeNotReady", "firing"),)),
                ((("alertname", "KubePodNotReady"), ("node", "n2"), ("owner", "team-zzz")), (("db", "firing"),)),
                ((("alertname", "Marker1"), ("node", "n9")), (("Marker1", "firing"),)),
            ]
            # the node recovers -> its pod alert is no longer inhibited; the silence expires -> the muted one arrives
            await produce(settings, [alert("KubeNodeNotReady", "n1", status="resolved")])
            await svc.book.expire("sil-1")
            await wait_for(lambda: len(team.accepted) >= 3, "un-muted notifications")
            await marker(settings, platform, "Marker2")  # their groups' next flushes are written by now: no repeat
            assert written(settings, "team-a") == sorted(seen(team))
            assert sorted(seen(team))[:2] == [
                ((("alertname", "KubePodNotReady"), ("node", "n1"), ("owner", "team-a")), (("cart", "firing"),)),
                ((("alertname", "KubePodNotReady"), ("node", "n2"), ("owner", "team-a")), (("web", "firing"),)),
            ]
            assert sorted(seen(team))[2] == (
                (("alertname", "KubePodNotReady"), ("node", "n3"), ("owner", "team-a")), (("job", "firing"),))
            assert len(team.accepted) == 3
            assert svc.deliverer.stats["deadletter"] == 0
        finally:
            await svc.stop()
            await team.stop()
            await platform.stop()

    asyncio.run(go())


def test_failing_receiver_and_restart_lose_and_double_nothing(settings):
    """The receiver fails, stalls and throttles; the worker restarts in the middle; each change arrives once."""

    async def go():
        team = ScriptedReceiver(["reset", 500, "stall", 429, 503, "stall", 500], stall=1.0)
        platform = ScriptedReceiver()
        cfg = load_text(ROUTING.format(a=await team.start(), p=await platform.start()))
        svc = AlertingService(settings, settings.kafka, cfg, worker_id="w1")
        await svc.start()
        await produce(settings, [alert("PodDown", f"n{i}", pod=f"p{i}", owner="team-a") for i in range(6)])
        await wait_for(lambda: len(team.accepted) >= 3, "some deliveries before the restart")
        await svc.stop()
        # while no worker runs: more alerts, and two of the first ones resolve (notified or not yet: either way
        # the receiver must get the firing and then the resolution, each once)
        done = (0, 1)
        await produce(settings, [alert("PodDown", f"n{i}", pod=f"p{i}", owner="team-a") for i in range(6, 10)]
                      + [alert("PodDown", f"n{i}", pod=f"p{i}", owner="team-a", status="resolved") for i in done])
        svc2 = AlertingService(settings, settings.kafka, cfg, worker_id="w2")
        await svc2.start()
        try:
            await wait_for(lambda: len(team.accepted) >= 12, "all deliveries after the restart")
            await marker(settings, platform, "Marker")  # every flush written and every delivery committed by now
        finally:
            await svc2.stop()
            await team.stop()
            await platform.stop()
        got = Counter(seen(team))
        expected = Counter({((("alertname", "PodDown"), ("node", f"n{i}"), ("owner", "team-a")), ((f"p{i}", "firing"),)): 1
                            for i in range(10)})
        expected.update({((("alertname", "PodDown"), ("node", f"n{i}"), ("owner", "team-a")), ((f"p{i}", "resolved"),)): 1
                         for i in done})
        assert got == expected
        assert len({x["body"]["dedupKey"] for x in team.accepted}) == len(team.accepted) == 12
        assert seen(platform) == [((("alertname", "Marker"), ("node", "n9")), (("Marker", "firing"),))]

    asyncio.run(go())


def test_worker_killed_mid_delivery_loses_and_doubles_nothing(settings, tmp_path):
    """SIGKILL the worker while a delivery is in flight; the restarted worker finishes: each change once."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]

    def spawn(routing):
        return subprocess.Popen([sys.executable, "-m", "tests.alerts.run_alerting", settings.kafka,
                                 settings.topic_prefix, settings.app_id, str(routing), "w1"], cwd=repo,
                                stdout=subprocess.DEVNULL, stderr=open(tmp_path / "worker.log", "ab"))

    done = None

    async def go():
        nonlocal done
        # three deliveries succeed, then every request stalls: the worker is killed while one is in flight
        # (and not between a 2xx and its commit, the one window where a notification can be doubled)
        team = ScriptedReceiver(["ok", "ok", "ok"], after="stall", stall=5.0)
        platform = ScriptedReceiver()
        routing = tmp_path / "routing.yaml"
        routing.write_text(ROUTING.format(a=await team.start(), p=await platform.start())
                           .replace("timeout: 500ms", "timeout: 20s"))
        proc = spawn(routing)
        try:
            await produce(settings, [alert("PodDown", f"n{i}", pod=f"p{i}", owner="team-a") for i in range(6)])
            await wait_for(lambda: team.requests >= 4, "the stalled delivery")
            await delivered(settings, at_least=3)  # the three 2xx are committed: the kill is not in their window
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            team.after = "ok"
            # resolve one whose firing may or may not have been delivered: firing then resolved, each once
            done = 5
            await produce(settings, [alert("PodDown", f"n{i}", pod=f"p{i}", owner="team-a") for i in range(6, 8)]
                          + [alert("PodDown", f"n{done}", pod=f"p{done}", owner="team-a", status="resolved")])
            proc = spawn(routing)
            await wait_for(lambda: len(team.accepted) >= 9, "every change after the restart", timeout=90)
            await marker(settings, platform, "Marker")  # every flush written and every delivery committed by now
        finally:
            proc.kill()
            proc.wait(10)
            await team.stop()
            await platform.stop()
        got = Counter(seen(team))
        expected = Counter({((("alertname", "PodDown"), ("node", f"n{i}"), ("owner", "team-a")), ((f"p{i}", "firing"),)): 1
                            for i in range(8)})
        expected[((("alertname", "PodDown"), ("node", f"n{done}"), ("owner", "team-a")), ((f"p{done}", "resolved"),))] = 1
        assert got == expected, (tmp_path / "worker.log").read_text()[-3000:]

    asyncio.run(go())


def test_4xx_goes_to_deadletter_with_reason_and_no_secret(settings):
    async def go():
        team, platform = ScriptedReceiver([400]), ScriptedReceiver()
        url = await team.start()
        cfg = load_text(ROUTING.format(a=url + "/SECRET-TOKEN-123", p=await platform.start()))
        svc = AlertingService(settings, settings.kafka, cfg, worker_id="w1")
        await svc.start()
        try:
            await produce(settings, [alert("PodDown", "n1", pod="p1", owner="team-a")])
            await wait_for(lambda: svc.deliverer.stats["deadletter"] == 1, "the dead letter")
        finally:
            await svc.stop()
            await team.stop()
            await platform.stop()

    asyncio.run(go())
    (rec,) = [orjson.loads(m.value) for m in read_to_end(settings.kafka, settings.topic("deadletter"))]
    assert rec["reason"] == "team-a/webhook[0]: HTTP 400: status 400"
    # a final answer is no retry: receiver-health goes straight to failing, with the reason and no secret
    [h] = [orjson.loads(m.value) for m in read_to_end(settings.kafka, settings.topic("receiver-health"))]
    assert (h["integration"], h["state"], h["attempts"], h["reason"]) == (
        "team-a/webhook[0]", "failing", 1, "HTTP 400: status 400")
    assert rec["origin"] == "alerts/deliver" and orjson.loads(rec["payload"])["receiver"] == "team-a"
    assert "SECRET" not in orjson.dumps(rec).decode()


def test_two_workers_group_where_routed_or_where_read_each_change_once(settings):
    """Two workers share the partitions: a transition whose group's alert-groups partition is held by the worker that
    routes it is grouped there at once (marked applied), the others by the worker that reads alert-groups; every
    group's firing and resolution still arrive exactly once."""

    async def go():
        team, platform = ScriptedReceiver(), ScriptedReceiver()
        cfg = load_text(ROUTING.format(a=await team.start(), p=await platform.start()))
        svcs = [AlertingService(settings, settings.kafka, cfg, worker_id=w) for w in ("w1", "w2")]
        for s in svcs:
            await s.start()
        try:
            await wait_for(lambda: all(s.processor.consumer is not None and len(s.processor.consumer.assignment()) == 4
                                       for s in svcs), "both workers assigned half of the partitions")
            n, done = 16, range(0, 16, 4)
            await produce(settings, [alert("PodDown", f"n{i}", pod=f"p{i}", owner="team-a") for i in range(n)])
            await wait_for(lambda: len(team.accepted) >= n, "one notification per group")
            await produce(settings, [alert("PodDown", f"n{i}", pod=f"p{i}", owner="team-a", status="resolved")
                                     for i in done])
            await wait_for(lambda: len(team.accepted) >= n + len(done), "the resolutions")
            await marker(settings, platform, "Marker")  # the groups' next flushes are written and sent by now
        finally:
            for s in svcs:
                await s.stop()
            await team.stop()
            await platform.stop()
        expected = Counter({((("alertname", "PodDown"), ("node", f"n{i}"), ("owner", "team-a")), ((f"p{i}", "firing"),)): 1
                            for i in range(n)})
        expected.update({((("alertname", "PodDown"), ("node", f"n{i}"), ("owner", "team-a")), ((f"p{i}", "resolved"),)): 1
                         for i in done})
        assert Counter(seen(team)) == expected
        marks = Counter(await applied_marks(settings))
        assert marks[True] and marks[False], marks  # both ways were taken (which one is fixed by the keys' hashes)

    asyncio.run(go())


async def applied_marks(settings) -> list[bool]:
    """Per firing or resolved record on alert-groups: whether it was grouped by the worker that routed it."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from alerts.engine import GROUP_ANNOTATION, is_applied

    c = AIOKafkaConsumer(bootstrap_servers=settings.kafka, isolation_level="read_committed", enable_auto_commit=False)
    await c.start()
    try:
        tps = [TopicPartition(settings.topic("alert-groups"), p) for p in range(settings.partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        out, deadline = [], time.monotonic() + 20
        while time.monotonic() < deadline:  # until a second passes with nothing more (all was committed before)
            got = await c.getmany(timeout_ms=1000)
            if not got and out:
                break
            for msgs in got.values():
                out += [is_applied(orjson.loads(m.value)["annotations"][GROUP_ANNOTATION]) for m in msgs]
        return out
    finally:
        await c.stop()


def test_a_poison_notification_is_dead_lettered_and_the_next_one_is_delivered(settings):
    """Notifications are kubesight's own, but a record that no sender could take (a non-string receiver, an alert
    without labels, no id) must not stop delivery: each is dead-lettered with why, at once, and a good one after
    them reaches its receiver. Before, one raised in the delivery loop or was retried every second for ever."""

    from alerts.receivers import Receivers
    from streams.alerting import Deliverer

    good = {"v": 1, "kind": "notification", "id": "n9", "receiver": "platform", "groupKey": "{}:{}",
            "groupLabels": {"alertname": "A"}, "status": "firing", "time": "2021-08-03T10:00:00.000Z",
            "alerts": [{"labels": {"alertname": "A"}, "annotations": {}, "status": "firing", "fingerprint": "f1",
                        "startsAt": "2021-08-03T10:00:00.000Z", "endsAt": None, "generatorURL": ""}]}
    poison = [dict(good, receiver=7), dict(good, alerts=[{"status": "firing", "fingerprint": "f2"}]),
              {k: v for k, v in good.items() if k != "id"}]

    async def go():
        platform = ScriptedReceiver()
        cfg = load_text(ROUTING.format(a=await platform.start(), p=platform.url))
        p = AIOKafkaProducer(bootstrap_servers=settings.kafka, acks="all")
        await p.start()
        try:
            for n in poison + [good]:
                await p.send_and_wait(settings.topic("notifications"), orjson.dumps(n), key=b"{}:{}")
        finally:
            await p.stop()
        d = Deliverer(settings, settings.kafka, Receivers(cfg))
        await d.start()
        try:
            await wait_for(lambda: len(platform.accepted) == 1 and d.stats["deadletter"] == 3,
                           "the good notification and three dead letters")
        finally:
            await d.stop()
            await platform.stop()
        return platform

    platform = asyncio.run(go())
    reasons = sorted(orjson.loads(m.value)["reason"] for m in read_to_end(settings.kafka, settings.topic("deadletter")))
    assert reasons == ["not a notification: 'id': expected a string, got NoneType",
                       "not a notification: 'receiver': expected a string, got int",
                       "not a notification: alerts[0].labels: expected an object, got NoneType"]
    assert platform.accepted[0]["body"]["alerts"][0]["fingerprint"] == "f1"


def test_a_silence_made_now_mutes_a_replay_s_alerts_in_event_time(settings):
    """clock: event (a replay of 2021's events, the demo): silences are made now for the next hours, on the wall
    clock, and a silence cannot start in the past, so matched at the flush's event time none ever applied; the
    receivers were paged for what `silences list` called active. They are matched on the wall clock, as
    Alertmanager's and the board's."""
    # one partition: event time moves per partition (README), and these three alerts must share one clock
    event_settings = settings.model_copy(update={"clock": "event", "partitions": 1,
                                                 "topic_prefix": settings.topic_prefix + "ev-",
                                                 "app_id": settings.app_id + "-ev"})
    ensure_topics(event_settings, event_settings.kafka)

    async def go():
        team, platform = ScriptedReceiver(), ScriptedReceiver()
        cfg = load_text(ROUTING.format(a=await team.start(), p=await platform.start()))
        svc = AlertingService(event_settings, event_settings.kafka, cfg, worker_id="w1")
        await svc.start()
        try:
            now, t0 = time.time(), 1627984800.0  # 2021-08-03, the recorded events' day
            await svc.book.put(Silence.create({
                "matchers": [{"name": "namespace", "value": "muted"}], "startsAt": format_time(now),
                "endsAt": format_time(now + 3600), "createdBy": "test", "comment": "replay"}, now=now, id="sil-r"))
            await produce(event_settings, [
                alert("KubePodNotReady", "n2", pod="web", owner="team-a", t=t0),
                alert("KubePodNotReady", "n3", pod="job", owner="team-a", ns="muted", t=t0),
                alert("KubePodNotReady", "n4", pod="api", owner="team-a", t=t0 + 30),  # moves event time on
            ])
            await wait_for(lambda: any("web" in str(s) for s in seen(team)), "the first notification (t0 + 1 s)")
            await produce(event_settings, [alert("KubePodNotReady", "n5", pod="db", owner="team-a", t=t0 + 60)])
            await wait_for(lambda: any("api" in str(s) for s in seen(team)), "a notification after every flush of t0")
            pods = {p for _, alerts in seen(team) for p, _ in alerts}
            assert "web" in pods and "job" not in pods
        finally:
            await svc.stop()
            await team.stop()
            await platform.stop()

    asyncio.run(go())
