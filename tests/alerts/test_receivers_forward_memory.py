"""The alertmanager_configs forwarders' memory survives a restart: rebuilt from the ``notifications`` topic of
a REAL broker, then re-sent to a REAL Alertmanager, read back with the real amtool (issue 14 #4's re-send)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from alerts.config import load_text
from alerts.receivers import Receivers
from core.records import format_time
from streams.forward_memory import restore_forwarders
from tests.alerts.amtools import Alertmanager, amtool

pytestmark = pytest.mark.kafka

ROUTING = """
route: {receiver: upstream}
receivers:
  - name: upstream
    alertmanager_configs: [{url: '{url}', resend_delay: 1m}]
  - name: hook
    webhook_configs: [{url: '{url}/hook'}]
"""


def note(receiver: str, group: str, firing: list[str], resolved: list[str], at: float) -> dict:
    def alert(name, status):
        return {"labels": {"alertname": name, "group": group}, "annotations": {}, "status": status,
                "startsAt": format_time(at - 600), "endsAt": None if status == "firing" else format_time(at),
                "fingerprint": f"{group}-{name}", "generatorURL": ""}

    alerts = [alert(n, "firing") for n in firing] + [alert(n, "resolved") for n in resolved]
    return {"id": f"{receiver}-{group}-{at}", "receiver": receiver, "groupKey": f'{{}}:{{group="{group}"}}',
            "groupLabels": {"group": group}, "status": "firing" if firing else "resolved", "alerts": alerts,
            "time": format_time(at)}


def active(am: Alertmanager) -> set[str]:
    res = amtool(f"--alertmanager.url={am.url}", "alert", "query", "-o", "json")
    assert res.returncode == 0, res.stderr
    return {a["labels"]["alertname"] for a in json.loads(res.stdout)}


def test_a_restarted_deliverer_resends_what_still_fires(settings, tmp_path):
    now = time.time()
    notes = [note("upstream", "a", ["A1", "A2"], [], now - 300),        # still firing: re-sent
             note("upstream", "b", ["B1"], [], now - 290),
             note("upstream", "b", [], ["B1"], now - 200),              # resolved since: not re-sent
             note("upstream", "c", ["C1", "C2"], [], now - 280),
             note("upstream", "c", ["C2"], ["C1"], now - 100),          # C1 resolved, C2 still fires
             note("hook", "d", ["D1"], [], now - 50)]                   # another receiver: no forwarder

    async def go():
        p = AIOKafkaProducer(bootstrap_servers=settings.kafka, acks="all", enable_idempotence=True)
        await p.start()
        try:
            for n in notes:
                await p.send_and_wait(settings.topic("notifications"), orjson.dumps(n), key=n["groupKey"].encode())
        finally:
            await p.stop()
        with Alertmanager("route: {receiver: sink}\nreceivers: [{name: sink}]\n", tmp_path) as am:
            rcv = Receivers(load_text(ROUTING.replace("{url}", am.url)))  # a fresh process: nothing in memory
            assert rcv.forwarders()[0].forward.groups == {}
            fed = await asyncio.wait_for(restore_forwarders(settings, settings.kafka, rcv), 60)
            async with aiohttp.ClientSession() as session:
                outs = await rcv.resend_due(session, now=time.time())
                again = await rcv.resend_due(session)  # nothing due again at once
            deadline = time.monotonic() + 15
            while (got := await asyncio.to_thread(active, am)) != {"A1", "A2", "C2"}:
                assert time.monotonic() < deadline, got
                await asyncio.sleep(0.2)
        return fed, outs, again

    fed, outs, again = asyncio.run(go())
    assert fed == 5 and [o.ok for _, o in outs] == [True] and again == []
