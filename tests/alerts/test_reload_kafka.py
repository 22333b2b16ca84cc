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
