"""Delivery against a REAL local HTTP receiver that fails, stalls, returns 500/429, then recovers."""

import asyncio
import logging
from collections import Counter

import aiohttp
import pytest

from alerts.config import load_text
from alerts.receivers import Receivers
from tests.alerts.webhook_server import ScriptedReceiver

SECRET = "T0SECRETTOKEN/B1abcdefgh"


def note(i: int, receiver: str = "team") -> dict:
    return {"id": f"n{i}", "receiver": receiver, "groupKey": f'{{}}:{{alertname="A{i}"}}',
            "groupLabels": {"alertname": f"A{i}"}, "status": "firing",
            "alerts": [{"labels": {"alertname": f"A{i}", "severity": "warning"}, "annotations": {"summary": "s"},
                        "status": "firing", "startsAt": "2021-08-03T10:00:00.000Z", "endsAt": None,
                        "fingerprint": f"f{i}", "generatorURL": ""}]}


def receivers(url: str, kind: str = "webhook_configs", budget: str = "30s") -> Receivers:
    key = "api_url" if kind == "slack_configs" else "url"
    return Receivers(load_text(f"""
route: {{receiver: team}}
receivers:
  - name: team
    {kind}: [{{{key}: "{url}/hook/{SECRET}", timeout: 300ms}}]
    retry: {{initial: 10ms, max_backoff: 50ms, budget: {budget}}}
"""))


async def _deliver_all(server: ScriptedReceiver, notes: list[dict], kind="webhook_configs", budget="30s"):
    url = await server.start()
    try:
        rcv = receivers(url, kind, budget)
        async with aiohttp.ClientSession() as session:
            results = await asyncio.gather(*(rcv.notify(session, n) for n in notes))
    finally:
        await server.stop()
    return [out for r in results for _, out in r]


def test_every_notification_delivered_exactly_once_after_recovery(caplog):
    caplog.set_level(logging.DEBUG)
    script = ["reset", 500, "stall", 429, 502, "reset", 500, 429, "stall", 503] * 3
    server = ScriptedReceiver(script, stall=0.6)
    outs = asyncio.run(_deliver_all(server, [note(i) for i in range(12)]))
    assert all(o.ok for o in outs)
    got = Counter(a["body"]["dedupKey"] for a in server.accepted)
    assert got == Counter({f"n{i}": 1 for i in range(12)})
    assert server.requests == 12 + 30  # every failure was retried, every success ended the retries
    first = server.accepted[0]
    assert first["body"]["version"] == "4" and first["headers"]["Idempotency-Key"] == first["body"]["dedupKey"]
    assert SECRET not in caplog.text and "SECRETTOKEN" not in caplog.text
    assert "retrying" in caplog.text


def test_each_failed_attempt_that_will_be_retried_is_reported_redacted():
    """``on_retry`` hears of every failed attempt before its wait (the deliverer's receiver-health), never of the
    last one: a success, or a failure that ends the retries, is the returned outcome."""
    heard = []

    async def on_retry(integ, out, wait):
        heard.append((integ.name, out.attempts, out.reason, wait >= 0))

    async def go():
        server = ScriptedReceiver([503, "reset", 400])
        url = await server.start()
        try:
            async with aiohttp.ClientSession() as session:
                return await receivers(url).notify(session, note(1), on_retry=on_retry)
        finally:
            await server.stop()

    [(integ, out)] = asyncio.run(go())
    assert [(n, a, w) for n, a, _, w in heard] == [("team/webhook[0]", 1, True), ("team/webhook[0]", 2, True)]
    assert heard[0][2].startswith("HTTP 503") and all(SECRET not in r for _, _, r, _ in heard)
    assert not out.ok and out.attempts == 3 and out.reason.startswith("HTTP 400")


def test_4xx_is_final_with_reason_and_no_secret():
    server = ScriptedReceiver([400])
    (out,) = asyncio.run(_deliver_all(server, [note(1)]))
    assert (out.ok, out.retryable, out.status, out.attempts) == (False, False, 400, 1)
    assert out.reason == "HTTP 400: status 400"
    assert server.accepted == []


def test_retry_budget_spent_gives_a_reason():
    server = ScriptedReceiver(after=500)
    (out,) = asyncio.run(_deliver_all(server, [note(1)], budget="200ms"))
    assert not out.ok and out.reason.startswith("retry budget of 0.2s spent after ")
    assert out.reason.endswith("; last: HTTP 500: status 500")


def test_connection_refused_reason_is_redacted():
    async def go():
        rcv = receivers("http://127.0.0.1:9", budget="50ms")
        async with aiohttp.ClientSession() as session:
            return await rcv.notify(session, note(1))

    ((_, out),) = asyncio.run(go())
    assert not out.ok and out.retryable and out.reason.startswith("retry budget of 0.05s spent")
    assert "ClientConnectorError" in out.reason and "SECRET" not in out.reason


@pytest.mark.parametrize("kind,check", [
    ("slack_configs", lambda b: b["attachments"][0]["title"] == "[FIRING:1] A1"),
    ("dingtalk_configs", lambda b: b["msgtype"] == "markdown" and b["markdown"]["title"] == "[FIRING:1] A1"),
])
def test_slack_and_dingtalk_bodies(kind, check):
    server = ScriptedReceiver()
    (out,) = asyncio.run(_deliver_all(server, [note(1)], kind=kind))
    assert out.ok and check(server.accepted[0]["body"])
