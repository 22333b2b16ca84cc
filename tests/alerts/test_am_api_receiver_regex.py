"""``GET /api/v2/alerts?receiver=REGEX`` (and ``/alerts/groups``) reads REGEX as Alertmanager does, with
``core.matchers.full_match``: Go's syntax, the whole receiver name.  It was compiled with re2 directly, which
takes what Go's regexp refuses (``\\C``, ``(?<name>...)``): Alertmanager 0.25 answers 400, kubesight answered
200 with whatever matched (an audit)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
from aiohttp.test_utils import TestClient, TestServer

from alerts.api import AlertsState, app
from alerts.config import load_text
from alerts.engine import to_grouped
from alerts.grouping import Group
from alerts.silences import Silences
from core.records import Alert, encode


def state() -> AlertsState:
    """One alert firing in a group of receiver ``ops`` and one of ``opsx``."""
    st = AlertsState(load_text("route: {receiver: ops}\nreceivers: [{name: ops}, {name: opsx}]\n"))
    a = Alert({"alertname": "A"}, {}, "firing", 1000.0)
    for key, receiver in (("{}:a", "ops"), ("{}:b", "opsx")):
        g = Group(key, receiver, {"alertname": "A"}, "{}", 30.0, 300.0, 14400.0)
        st.apply(key.encode(), encode(to_grouped(g, a)))
    return st


def query(patterns: list[str]) -> list[tuple]:
    """(status of /alerts, status of /alerts/groups, receivers of the groups answered) for each pattern."""

    async def go():
        out = []
        async with TestClient(TestServer(app(SimpleNamespace(silences=Silences()), alerts=state()))) as client:
            for p in patterns:
                alerts = await client.get("/api/v2/alerts", params={"receiver": p})
                groups = await client.get("/api/v2/alerts/groups", params={"receiver": p})
                names = sorted(g["receiver"]["name"] for g in orjson.loads(await groups.read())) \
                    if groups.status == 200 else await groups.text()
                out.append((alerts.status, groups.status, names))
        return out

    return asyncio.run(go())


def test_receiver_regex_refuses_what_go_refuses():
    got = query([r"op\Cs", "(?<n>ops)", "a)(b", "ops", "ops.*"])
    assert [g[:2] for g in got] == [(400, 400), (400, 400), (200, 200), (200, 200), (200, 200)], got
    assert "invalid receiver regex" in got[0][2] and "invalid receiver regex" in got[1][2]
    assert [g[2] for g in got[2:]] == [[], ["ops"], ["ops", "opsx"]]  # the whole name: "ops" is not "opsx"
