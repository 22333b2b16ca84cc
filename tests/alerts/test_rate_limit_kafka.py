"""A receiver's rate_limit on the real broker: its notifications wait their turn and arrive coalesced (the group's
latest state), while another receiver is served as usual."""

import asyncio

import pytest

from alerts.config import load_text
from streams.alerting import AlertingService
from tests.alerts.test_pipeline_kafka import alert, produce, wait_for
from tests.alerts.webhook_server import ScriptedReceiver

pytestmark = pytest.mark.kafka

ROUTING = """
route:
  receiver: free
  group_by: [alertname]
  group_wait: 0s
  group_interval: 200ms
  repeat_interval: 24h
  routes:
    - matchers: ['owner="limited"']
      receiver: limited
receivers:
  - name: free
    webhook_configs: [{{url: "{free}/hook", timeout: 500ms}}]
  - name: limited
    webhook_configs: [{{url: "{limited}/hook", timeout: 500ms}}]
    rate_limit: {{notifications: 1, per: 3s}}
"""


def test_a_rate_limited_receiver_gets_the_groups_latest_state_and_holds_no_one_back(settings):
    settings = settings.model_copy(update={"clock": "wall"})

    async def go():
        free, limited = ScriptedReceiver(), ScriptedReceiver()
        cfg = load_text(ROUTING.format(free=await free.start(), limited=await limited.start()))
        assert cfg.receivers[1].rate_limit.per == 3.0
        svc = AlertingService(settings, settings.kafka, cfg, worker_id="w1")
        await svc.start()
        try:
            await produce(settings, [alert("PodDown", "n1", pod="a-0", owner="limited")])
            await wait_for(lambda: len(limited.accepted) == 1, "the first notification: the bucket was full")
            # the group grows by one alert every group interval: four notifications are written while it waits
            for i in range(1, 5):
                await produce(settings, [alert("PodDown", "n1", pod=f"a-{i}", owner="limited")])
                await asyncio.sleep(0.3)
            await produce(settings, [alert("PodDown", "n2", pod="b-0", owner="free")])
            await wait_for(lambda: free.accepted, "the other receiver, served while the limited one waits")
            last = lambda: {a["labels"]["pod"] for a in limited.accepted[-1]["body"]["alerts"]}  # noqa: E731
            await wait_for(lambda: last() == {f"a-{i}" for i in range(5)}, "the group's latest state, at its turn")
            lane = svc.deliverer.lanes["limited"]
            assert lane.stats["rate_limited"] >= 1 and lane.stats["coalesced"] >= 1
            assert len(limited.accepted) < 5  # fewer than were written: the waiting ones were coalesced
        finally:
            await svc.stop()
            await free.stop()
            await limited.stop()

    asyncio.run(go())
