"""Per-receiver isolation with real local receivers: one answers 500, one is down, one stalls; the healthy one is served.

The four receivers' groups share the partitions of ``notifications`` (keys hash across them), so a
receiver that blocked its partition would hold the healthy one's notifications too.
"""

import asyncio
import socket
from collections import Counter

import pytest

from alerts.config import load_text
from streams.alerting import AlertingService
from tests.alerts.test_pipeline_kafka import alert, produce, wait_for
from tests.alerts.webhook_server import ScriptedReceiver

pytestmark = pytest.mark.kafka


@pytest.fixture
def settings(settings):
    """These tests run Alertmanager's timings on the wall clock (clock: wall, as in a live cluster)."""
    return settings.model_copy(update={"clock": "wall"})

ROUTING = """
route:
  receiver: healthy
  group_by: [alertname, node]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 24h
  routes:
    - matchers: ['owner=~".+"']
      owner_receiver: true
receivers:
  - name: healthy
    webhook_configs: [{{url: "{healthy}/hook", timeout: 500ms}}]
  - name: failing
    webhook_configs: [{{url: "{failing}/hook", timeout: 500ms}}]
    retry: {{initial: 50ms, max_backoff: 200ms, budget: 1h}}
  - name: down
    webhook_configs: [{{url: "{down}/hook", timeout: 500ms}}]
    retry: {{initial: 50ms, max_backoff: 200ms, budget: 1h}}
  - name: stalled
    webhook_configs: [{{url: "{stalled}/hook", timeout: 300ms}}]
    retry: {{initial: 50ms, max_backoff: 200ms, budget: 1h}}
"""

TEAMS = ("healthy", "failing", "down", "stalled")


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there: connection refused


def round_of(first: int, n: int):
    """n alerts per team, interleaved, each its own group (node n<i>)."""
    return [alert("PodDown", f"n{i}", pod=f"{team}-{i}", owner=team) for i in range(first, first + n) for team in TEAMS]


def pods(server) -> Counter:
    return Counter(a["labels"]["pod"] for x in server.accepted for a in x["body"]["alerts"])


def health_records(settings) -> dict[str, list[dict]]:
    """Each integration's receiver-health records, in the order delivery wrote them."""
    import orjson

    from tests.kafkatools import read_to_end

    out: dict[str, list[dict]] = {}
    for m in read_to_end(settings.kafka, settings.topic("receiver-health")):
        d = orjson.loads(m.value)
        assert m.key.decode() == d["integration"] and d["v"] == 1 and d["kind"] == "receiver-health"
        out.setdefault(d["integration"], []).append(d)
    return out


def health(settings) -> dict[str, list[str]]:
    """Each integration's states on receiver-health, in the order delivery wrote them (a record that changed only
    the waiting alerts repeats the state: counted once)."""
    out: dict[str, list[str]] = {}
    for name, recs in health_records(settings).items():
        states = out[name] = []
        for d in recs:
            if not states or states[-1] != d["state"]:
                states.append(d["state"])
    return out


def test_failing_down_and_stalled_receivers_never_hold_back_a_healthy_one(settings):
    async def go():
        healthy, failing = ScriptedReceiver(), ScriptedReceiver(after=500)
        stalled = ScriptedReceiver(after="stall", stall=3.0)
        cfg = load_text(ROUTING.format(healthy=await healthy.start(), failing=await failing.start(),
                                       down=closed_port_url(), stalled=await stalled.start()))
        svc = AlertingService(settings, settings.kafka, cfg, worker_id="w1")
        await svc.start()
        try:
            await produce(settings, round_of(0, 10))
            await wait_for(lambda: len(healthy.accepted) >= 10, "the healthy receiver's ten notifications")
            assert pods(healthy) == Counter({f"healthy-{i}": 1 for i in range(10)})
            await wait_for(lambda: failing.requests >= 10 and stalled.requests >= 10, "attempts at the others")
            assert failing.accepted == [] and stalled.accepted == []
            lanes = svc.deliverer.receiver_stats()
            assert lanes["healthy"]["delivered"] == 10 and lanes["healthy"]["groups_in_flight"] == 0
            assert lanes["failing"]["groups_in_flight"] == lanes["down"]["groups_in_flight"] == 10
            from prometheus_client import REGISTRY

            assert REGISTRY.get_sample_value("kubesight_notifications_total",
                                             {"receiver": "healthy", "result": "delivered"}) >= 10
            assert REGISTRY.get_sample_value("kubesight_notification_groups_in_flight", {"receiver": "down"}) >= 10
            # receiver-health says which fail now: one record per change, not one per attempt
            await wait_for(lambda: len(health(settings)) == 4, "a receiver-health record of every integration")
            assert health(settings) == {"healthy/webhook[0]": ["ok"], "failing/webhook[0]": ["retrying"],
                                        "down/webhook[0]": ["retrying"], "stalled/webhook[0]": ["retrying"]}
            # and which alerts wait for each: the ten in retry (a change of those alone is written within a second)
            await wait_for(lambda: health_records(settings)["failing/webhook[0]"][-1]["waitingAlerts"] == 10,
                           "the ten waiting alerts on receiver-health")
            last = health_records(settings)["failing/webhook[0]"]
            assert len(last[-1]["waiting"]) == 10 and len(last) < 10  # coalesced, not one record per notification
            assert len({d["since"] for d in last}) == 1  # the state's start, not the write's
        finally:
            await svc.stop()  # the failing ones are still retrying: their notifications stay uncommitted

        # a new worker: the failing receivers held every partition's offset back, yet what the healthy one
        # took is not sent again; new alerts reach it while the others still fail
        await produce(settings, round_of(10, 5))
        svc = AlertingService(settings, settings.kafka, cfg, worker_id="w2")
        await svc.start()
        try:
            await wait_for(lambda: len(healthy.accepted) >= 15, "the healthy receiver's new notifications")
            assert svc.deliverer.stats["skipped"] > 0
            failing.after = "ok"  # recovers: it gets each of its notifications once
            await wait_for(lambda: len(failing.accepted) >= 15, "the recovered receiver's notifications")
            # the recovery (a new worker writes what it sees first: retrying again, unless the fix came first)
            await wait_for(lambda: health(settings)["failing/webhook[0]"][-1] == "ok", "the recovery on receiver-health")
            await wait_for(lambda: health_records(settings)["failing/webhook[0]"][-1]["waitingAlerts"] == 0,
                           "no alert waits for the recovered receiver")
            states = health(settings)["failing/webhook[0]"]
            assert states[0] == "retrying" and set(states[:-1]) == {"retrying"} and len(states) <= 3, states
            await asyncio.sleep(1.0)  # group intervals pass: nothing more may arrive
        finally:
            await svc.stop()
            for s in (healthy, failing, stalled):
                await s.stop()
        assert pods(healthy) == Counter({f"healthy-{i}": 1 for i in range(15)})
        assert pods(failing) == Counter({f"failing-{i}": 1 for i in range(15)})
        assert stalled.accepted == []

    asyncio.run(go())
