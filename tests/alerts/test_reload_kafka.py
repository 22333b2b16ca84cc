"""Routing reload on the real broker: a new file version re-routes what fires, a bad one changes nothing, and a
worker restarted with another file routes the firing alerts it restores again."""

import asyncio
import os

import pytest

from streams.alerting import AlertingService
from tests.alerts.test_pipeline_kafka import alert, produce, wait_for
from tests.alerts.webhook_server import ScriptedReceiver

pytestmark = pytest.mark.kafka

ROUTING = """
route:
  receiver: platform
  group_by: [alertname, pod]
  group_wait: 500ms
  group_interval: 500ms
  repeat_interval: 24h
  routes:
    - matchers: ['namespace="shop"']
      receiver: {shop}
receivers:
  - {{name: platform, webhook_configs: [{{url: "{platform}/hook", timeout: 500ms}}]}}
  - {{name: team-a, webhook_configs: [{{url: "{a}/hook", timeout: 500ms}}]}}
  - {{name: team-b, webhook_configs: [{{url: "{b}/hook", timeout: 500ms}}]}}
"""


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"clock": "wall"})


def told(server, status="firing"):
    """The pods the receiver was told about with this status."""
    return {a["labels"]["pod"] for x in server.accepted for a in x["body"]["alerts"] if a["status"] == status}


def test_reload_reroutes_what_fires_and_a_refused_version_changes_nothing(settings, tmp_path):
    path = tmp_path / "routing.yaml"

    def write(text, stamp):
        path.write_text(text)
        os.utime(path, ns=(stamp, stamp))  # a new stamp whatever the file system's time resolution

    async def go():
        platform, a, b = ScriptedReceiver(), ScriptedReceiver(), ScriptedReceiver()
        urls = {"platform": await platform.start(), "a": await a.start(), "b": await b.start()}
        write(ROUTING.format(shop="team-a", **urls), 1)
        svc = AlertingService(settings, settings.kafka, str(path), worker_id="w1")
        await svc.start()
        try:
            await produce(settings, [alert("KubePodCrashLooping", "n1", pod="cart")])
            await wait_for(lambda: told(a) == {"cart"}, "team-a told of cart")
            # a version that does not validate: refused, the running one stays
            write(ROUTING.format(shop="team-zzz", **urls), 2)
            await wait_for(lambda: svc.routing_file.errors, "the bad version refused")
            assert "team-zzz" in " ".join(svc.routing_file.errors)
            await produce(settings, [alert("KubePodCrashLooping", "n1", pod="web")])
            await wait_for(lambda: told(a) == {"cart", "web"}, "team-a told of web: the running version stayed")
            # a good version: what fires moves to team-b without a new transition; team-a hears nothing more
            write(ROUTING.format(shop="team-b", **urls), 3)
            await wait_for(lambda: told(b) == {"cart", "web"}, "team-b told of what fires")
            await produce(settings, [alert("KubePodCrashLooping", "n1", pod="cart", status="resolved")])
            await wait_for(lambda: told(b, "resolved") == {"cart"}, "team-b told cart resolved")
            assert told(a, "resolved") == set() and not told(platform)
            assert svc.deliverer.stats["deadletter"] == 0
        finally:
            await svc.stop()
        # restarted with another file: the firing alert it restores is routed by it (web: shop -> platform)
        write(ROUTING.format(shop="platform", **urls).replace('namespace="shop"', 'namespace="none"'), 4)
        svc = AlertingService(settings, settings.kafka, str(path), worker_id="w1")
        await svc.start()
        try:
            await wait_for(lambda: told(platform) == {"web"}, "platform told of web after the restart")
            assert told(b, "resolved") == {"cart"} and told(a, "resolved") == set()
        finally:
            await svc.stop()
        for r in (platform, a, b):
            await r.stop()

    asyncio.run(go())


def test_delivery_in_a_process_of_its_own_follows_the_file(settings, tmp_path):
    """``kubesight worker --role delivery``: a receiver the new version adds is delivered to; one it removes has
    its notifications dead-lettered with the reason, not counted delivered."""
    import orjson
    from aiokafka import AIOKafkaProducer

    from alerts.receivers import Receivers
    from streams.alerting import Deliverer, RoutingFile

    path = tmp_path / "routing.yaml"
    one = "route: {{receiver: old}}\nreceivers:\n  - {{name: old, webhook_configs: [{{url: '{u}/old'}}]}}\n"
    both = one + "  - {{name: new, webhook_configs: [{{url: '{u}/new'}}]}}\n"
    only_new = "route: {{receiver: new}}\nreceivers:\n  - {{name: new, webhook_configs: [{{url: '{u}/new'}}]}}\n"

    def note(receiver, i):
        return orjson.dumps({"v": 1, "kind": "notification", "id": f"{receiver}-{i}", "receiver": receiver,
                             "groupKey": "{}:{x=" + str(i) + "}", "groupLabels": {"x": str(i)}, "status": "firing",
                             "alerts": [], "time": "2026-11-28T10:00:00.000Z"})

    async def go():
        hooks = ScriptedReceiver()
        u = await hooks.start()
        path.write_text(one.format(u=u))
        os.utime(path, ns=(1, 1))
        routing = RoutingFile(str(path))
        d = Deliverer(settings, settings.kafka, Receivers(routing.cfg), routing_file=routing)
        await d.start()
        p = AIOKafkaProducer(bootstrap_servers=settings.kafka, acks="all")
        await p.start()
        try:
            path.write_text(both.format(u=u))
            os.utime(path, ns=(2, 2))
            await wait_for(lambda: "new" in d.receivers.integrations, "delivery took the new version")
            await p.send_and_wait(settings.topic("notifications"), note("new", 1), key=b"1")
            await wait_for(lambda: [x for x in hooks.accepted if x["path"] == "/new"], "the added receiver delivered to")
            path.write_text(only_new.format(u=u))
            os.utime(path, ns=(3, 3))
            await wait_for(lambda: "old" not in d.receivers.integrations, "delivery took the version without old")
            await p.send_and_wait(settings.topic("notifications"), note("old", 2), key=b"2")
            await wait_for(lambda: d.stats["deadletter"] == 1, "the removed receiver's notification dead-lettered")
            assert not [x for x in hooks.accepted if x["path"] == "/old"]
        finally:
            await p.stop()
            await d.stop()
            await hooks.stop()

    asyncio.run(go())
