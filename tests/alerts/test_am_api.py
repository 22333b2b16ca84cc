"""The Alertmanager v2 API over kubesight's topics, used by the real amtool (issue 14 #3; real broker).

Alerts go through kubesight's engine (lifecycle + routing) onto ``alert-groups`` as the worker writes
them; the API process state is read back from Kafka; amtool queries it.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from alerts.api import AlertsState, app
from alerts.config import load_text
from alerts.engine import Engine, to_grouped
from alerts.silences import Silences
from core.kafkaclient import client_config
from core.records import Alert, encode, fingerprint, format_time
from streams.alerting import AlertsView, SilenceBook
from tests.alerts.amtools import binary
from tests.kafkatools import until

pytestmark = pytest.mark.kafka

CONFIG = """
route:
  receiver: ops
  group_by: [alertname]
  routes:
    - match: {team: a}
      receiver: team-a
receivers: [{name: ops}, {name: team-a}]
inhibit_rules:
  - source_matchers: ['alertname="NodeDown"']
    target_matchers: ['alertname="PodDown"']
    equal: [node]
default_inhibit_rules: false
"""

ALERTS = [
    {"alertname": "Disk", "team": "a", "node": "n1"},
    {"alertname": "Disk", "team": "b", "node": "n2"},
    {"alertname": "NodeDown", "node": "n3"},
    {"alertname": "PodDown", "node": "n3", "team": "a"},
]


async def _amtool(url: str, *args: str) -> str:
    p = await asyncio.create_subprocess_exec(binary("amtool"), f"--alertmanager.url={url}", *args,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 30)
    assert p.returncode == 0, err.decode()
    return out.decode()


def test_amtool_alert_query_silence_query_and_config_show(settings):
    cfg = load_text(CONFIG, "routing.yaml")

    async def go():
        engine, state, now = Engine(cfg, Silences()), {}, time.time()
        producer = AIOKafkaProducer(**client_config(settings.kafka, "aiokafka"))
        await producer.start()
        for labels in ALERTS:  # what the worker writes to alert-groups, by kubesight's own engine
            for g, a in engine.route(Alert(labels, {"summary": "s"}, startsAt=now), state, now):
                await producer.send_and_wait(settings.topic("alert-groups"), encode(to_grouped(g, a)), key=g.key.encode())
        book, view = SilenceBook(settings, settings.kafka), AlertsView(settings, settings.kafka, AlertsState(cfg))
        await book.start()
        await view.start()
        runner = web.AppRunner(app(book, alerts=view.alerts, config=cfg), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        try:
            await until(lambda: len(view.alerts.by_fp) == 4, "4 alerts read back from alert-groups", interval=0.05)
            # a silence for team b (posted by amtool), one for another label
            sid = (await _amtool(url, "silence", "add", "team=b", "--comment=maintenance", "--author=ana",
                                 "--duration=1h")).strip()
            other = (await _amtool(url, "silence", "add", "alertname=Other", "--comment=x", "--author=bo")).strip()
            await until(lambda: len(book.silences.by_id) == 2, "both silences in the book", interval=0.05)

            # silence query <matcher> filters on the server
            got = orjson.loads(await _amtool(url, "-o", "json", "silence", "query", "team=b"))
            assert [s["id"] for s in got] == [sid]
            assert {s["id"] for s in orjson.loads(await _amtool(url, "-o", "json", "silence", "query"))} == {sid, other}

            # alert query: active only by default (silenced team b and inhibited PodDown left out)
            got = orjson.loads(await _amtool(url, "-o", "json", "alert", "query"))
            assert sorted((a["labels"]["alertname"], a["labels"].get("team", "")) for a in got) == [
                ("Disk", "a"), ("NodeDown", "")]
            assert {a["fingerprint"] for a in got} == {fingerprint(ALERTS[0]), fingerprint(ALERTS[2])}
            (disk_a,) = [a for a in got if a["labels"].get("team") == "a"]
            assert disk_a["receivers"] == [{"name": "team-a"}]
            # with silenced and inhibited ones, and their reasons
            got = orjson.loads(await _amtool(url, "-o", "json", "alert", "query", "--silenced", "--inhibited"))
            by_name = {(a["labels"]["alertname"], a["labels"].get("team", "")): a["status"] for a in got}
            assert by_name[("Disk", "b")] == {"state": "suppressed", "silencedBy": [sid], "inhibitedBy": []}
            assert by_name[("PodDown", "a")]["inhibitedBy"] == [fingerprint(ALERTS[2])]
            # a matcher filter and a receiver filter
            got = orjson.loads(await _amtool(url, "-o", "json", "alert", "query", "--inhibited", "alertname=~Pod.*"))
            assert [a["labels"]["alertname"] for a in got] == ["PodDown"]
            got = orjson.loads(await _amtool(url, "-o", "json", "alert", "query", "--receiver=team-a"))
            assert [a["labels"]["team"] for a in got] == ["a"]

            # config show: the file as loaded
            shown = await _amtool(url, "config", "show")
            assert "receivers: [{name: ops}, {name: team-a}]" in shown and "match: {team: a}" in shown

            # groups and receivers, as Grafana and Karma read them
            async with __import__("aiohttp").ClientSession() as s:
                async with s.get(f"{url}/api/v2/alerts/groups") as r:
                    groups = await r.json()
                async with s.get(f"{url}/api/v2/alerts/groups?silenced=false&inhibited=false") as r:
                    unmuted = await r.json()
                async with s.get(f"{url}/api/v2/receivers") as r:
                    assert await r.json() == [{"name": "ops"}, {"name": "team-a"}]
            # Alertmanager's defaults: silenced and inhibited alerts included
            assert sorted((g["receiver"]["name"], g["labels"]["alertname"], len(g["alerts"])) for g in groups) == [
                ("ops", "Disk", 1), ("ops", "NodeDown", 1), ("team-a", "Disk", 1), ("team-a", "PodDown", 1)]
            assert sorted((g["receiver"]["name"], g["labels"]["alertname"]) for g in unmuted) == [
                ("ops", "NodeDown"), ("team-a", "Disk")]

            # a resolution read from the topic takes the alert out of the API
            t = time.time()
            for g, a in engine.route(Alert(ALERTS[2], status="resolved", startsAt=now, endsAt=t), state, t):
                await producer.send_and_wait(settings.topic("alert-groups"), encode(to_grouped(g, a)), key=g.key.encode())
            await until(lambda: len(view.alerts.by_fp) == 3, "NodeDown resolved", interval=0.05)
            got = orjson.loads(await _amtool(url, "-o", "json", "alert", "query", "alertname=PodDown"))
            assert [a["status"]["state"] for a in got] == ["active"]  # its inhibitor is gone
            assert format_time(t)  # (times are RFC 3339)
        finally:
            await runner.cleanup()
            await view.stop()
            await book.stop()
            await producer.stop()

    asyncio.run(go())


def test_an_alert_withdrawn_from_its_last_group_leaves_the_api():
    """Resolved in one group, then withdrawn by a reload from the other: in no group any more, it is gone (an entry
    with no group used to stay for ever)."""
    from alerts.api import AlertsState
    from alerts.engine import to_grouped
    from alerts.grouping import Group
    from core.records import Alert, encode

    st = AlertsState()
    a = Alert({"alertname": "A", "team": "db"}, {}, "firing", 1000.0)
    g1, g2 = (Group(k, r, {"alertname": "A"}, "{}", 30.0, 300.0, 14400.0) for k, r in (("{}:a", "ops"), ("{}:b", "db")))
    for g in (g1, g2):
        st.apply(g.key.encode(), encode(to_grouped(g, a)))
    st.apply(g1.key.encode(), encode(to_grouped(g1, Alert(a.labels, {}, "resolved", 1000.0, 1100.0))))
    assert list(st.by_fp) == [a.fingerprint]  # still in g2
    st.apply(g2.key.encode(), encode(to_grouped(Group.leaving(g2.key), a)))
    assert st.by_fp == {}
