"""Retry backoff past 1,024 attempts (found by an audit): a receiver answering 503 for long enough reaches its retry
budget and the notification is given up (dead-lettered, receiver-health ``failing``), instead of ``initial *
2**1024`` raising ``OverflowError``, which the delivery lane caught and began the delivery again from attempt 0, so
the budget never ran out.  A REAL local HTTP receiver; the waits on ``deliver``'s own clock (its ``clock`` and
``sleep``), so a day of retries takes the time of its requests."""

import asyncio
import random

import aiohttp

from alerts.config import load_text
from alerts.receivers import Receivers
from tests.alerts.test_receivers import note
from tests.alerts.webhook_server import ScriptedReceiver


def test_a_receiver_failing_past_1024_attempts_is_given_up_when_the_budget_is_spent():
    # waits of 0 to 2 ms (full jitter) against a budget of 1.5 s: some 1,500 attempts, past the 1,025th
    waited, now = [], [0.0]

    async def sleep(seconds):  # deliver's waits, on a clock of their own
        waited.append(seconds)
        now[0] += seconds

    async def go():
        server = ScriptedReceiver(after=503)
        url = await server.start()
        try:
            rcv = Receivers(load_text(f"""
route: {{receiver: team}}
receivers:
  - name: team
    webhook_configs: [{{url: "{url}/hook", timeout: 5s}}]
    retry: {{initial: 1ms, max_backoff: 2ms, budget: 1s500ms}}
"""))
            async with aiohttp.ClientSession() as session:
                [(_, out)] = await rcv.notify(session, note(1), rng=random.Random(7), clock=lambda: now[0],
                                              sleep=sleep)
            return out, server.requests
        finally:
            await server.stop()

    out, requests = asyncio.run(go())
    assert not out.ok and out.attempts > 1025 and requests == out.attempts
    assert out.reason == f"retry budget of 1.5s spent after {out.attempts} attempts; last: HTTP 503: status 503"
    assert len(waited) == out.attempts - 1 and all(0 <= w <= 0.002 for w in waited) and now[0] <= 1.5
