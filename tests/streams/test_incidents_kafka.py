"""The incident processor with the real broker: re-keyed by cluster, and a restart in the middle of an incident."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from kafka import KafkaProducer

from core.records import Alert, encode
from streams.incidents import incident_processor
from tests.kafkatools import read_to_end, until

pytestmark = pytest.mark.kafka

T0 = 1_700_000_000.0


def _alerts():
    """A cloud maintenance takes node n1 down; pods of three teams on it alert; everything resolves; then a
    heartbeat alert of the same cluster carries the event time past the quiet period (closing the incident)."""
    def a(t, status="firing", **labels):
        labels.setdefault("cluster", "prod")
        return Alert(labels=labels, status=status, startsAt=t, endsAt=(t if status == "resolved" else None))
    first = [a(T0, alertname="CloudInstanceMaintenance", node="n1", owner="platform"),
             a(T0 + 30, alertname="KubeNodeNotReady", node="n1", owner="platform")]
    first += [a(T0 + 60 + i, alertname="KubePodNotReady", namespace=f"team{i}", workload="api", node="n1",
                owner=f"team{i}") for i in range(3)]
    first.append(a(T0 + 70, alertname="KubePodNotReady", namespace="other", workload="x", node="n9", cluster="dev"))
    second = [Alert(labels=x.labels, status="resolved", startsAt=x.startsAt, endsAt=T0 + 600) for x in first[:5]]
    second.append(a(T0 + 2000, "resolved", alertname="Heartbeat", node="n5"))  # a resolution of no member: time only
    return first, second


async def _send(prod, s, alerts, proc):
    """One at a time, each (and its re-keyed copy) processed before the next: one order in every run."""
    for x in alerts:
        n = proc.stats["in"]
        prod.send(s.topic("alerts"), encode(x), key=x.key())
        prod.flush()
        await until(lambda n=n: proc.stats["in"] >= n + 2, "an alert and its re-keyed copy processed", 60)


def _run(s, bootstrap, restart: bool) -> list[dict]:
    first, second = _alerts()
    prod = KafkaProducer(bootstrap_servers=bootstrap, acks="all")

    async def phase(alerts, n_before):
        proc = incident_processor(s, bootstrap, worker_id="w", tick_interval=5.0)
        await proc.start()
        try:
            await _send(prod, s, alerts, proc)
            await until(lambda: not proc._outputs_pending(), "outputs committed", 60)
            await proc._commit()
            return proc.stats["restored"]
        finally:
            await proc.stop()

    async def main():
        if restart:
            await phase(first, 0)
            restored = await phase(second, 0)
            assert restored > 0, "the second worker must start from the changelog"
        else:
            proc = incident_processor(s, bootstrap, worker_id="w", tick_interval=5.0)
            await proc.start()
            try:
                await _send(prod, s, first, proc)
                await _send(prod, s, second, proc)
                await until(lambda: not proc._outputs_pending(), "outputs committed", 60)
                await proc._commit()
            finally:
                await proc.stop()

    asyncio.run(main())
    prod.close()
    return [orjson.loads(m.value) for m in read_to_end(bootstrap, s.topic("incidents"))]


def _by_id(records):
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["id"], []).append(r)
    return out


def test_a_restart_in_the_middle_of_an_incident_publishes_what_an_uninterrupted_run_does(settings, kafka_bootstrap):
    plain = _run(settings, kafka_bootstrap, restart=False)
    s2 = settings.model_copy(update={"topic_prefix": settings.topic_prefix + "r-", "app_id": settings.app_id + "-r"})
    from core.topics import ensure_topics

    ensure_topics(s2, kafka_bootstrap)
    restarted = _run(s2, kafka_bootstrap, restart=True)

    inc = _by_id(plain)
    assert len(inc) == 2  # the node incident of prod, the lone pod of dev
    node = next(v for v in inc.values() if v[0]["cluster"] == "prod")
    final = node[-1]
    assert final["status"] == "resolved" and len(final["members"]) == 5
    assert final["candidates"][0]["entity"] == "node/n1" and final["candidates"][0]["cause"] == "CloudInstanceMaintenance"
    assert final["blastRadius"]["owners"] == ["platform", "team0", "team1", "team2"]
    assert final["resolvedAt"] == "2023-11-14T22:23:20.000Z"  # last member's end (T0 + 600), not the heartbeat
    # per incident, the same sequence of records (order across partitions is not defined)
    assert _by_id(restarted) == inc
