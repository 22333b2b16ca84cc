"""The Watchdog on the real broker: while the hot path runs, a dead man's switch is notified again and again; when
the hot path stops, the Watchdog resolves by itself and the repeats stop."""

import asyncio

import pytest

from alerts.config import load_text
from streams.alerting import AlertingService
from streams.hotpath import Pipeline, TransactionalProcessor
from streams.stages import RulePacks, signal_stages, watchdog
from tests.alerts.test_pipeline_kafka import wait_for
from tests.alerts.webhook_server import ScriptedReceiver

pytestmark = pytest.mark.kafka

ROUTING = """
route:
  receiver: platform
  routes:
    - matchers: ['alertname="Watchdog"']
      receiver: deadman
      group_wait: 0s
      group_interval: 500ms
      repeat_interval: 1s
receivers:
  - {{name: platform}}
  - name: deadman
    webhook_configs: [{{url: "{url}/ping", send_resolved: true, timeout: 500ms}}]
"""


def test_the_watchdog_beats_while_the_hot_path_runs_and_resolves_when_it_stops(settings):
    settings = settings.model_copy(update={"clock": "wall", "watchdog_interval": 0.5, "default_pack": False})
    assert watchdog(settings.model_copy(update={"clock": "event"})) is None  # a replay has no now

    def pings(status):
        return [x for x in deadman.accepted for a in x["body"]["alerts"]
                if a["labels"]["alertname"] == "Watchdog" and a["status"] == status]

    async def go():
        global deadman
        deadman = ScriptedReceiver()
        svc = AlertingService(settings, settings.kafka, load_text(ROUTING.format(url=await deadman.start())))
        hot = TransactionalProcessor(settings, settings.kafka, "signals", ["events", "samples"],
                                     Pipeline(signal_stages(settings, RulePacks(settings))), urgent=("alerts",),
                                     heartbeat=watchdog(settings))
        await svc.start()
        await hot.start()
        try:
            await wait_for(lambda: len(pings("firing")) >= 3,
                           "three Watchdog notifications: the first and its repeats")
            labels = pings("firing")[0]["body"]["alerts"][0]["labels"]
            assert labels == {"alertname": "Watchdog", "severity": "none", "cluster": "default"}
        finally:
            await hot.stop()  # the hot path stops: no more beats
        try:
            await wait_for(lambda: pings("resolved"), "the Watchdog resolved 4 intervals after the last beat", 30)
        finally:
            await svc.stop()
            await deadman.stop()

    asyncio.run(go())
