"""The benchmarks' webhook receiver process (alerts.localhooks.RecordingReceiver): a real local HTTP/1.1 server
in its own process.  Accepted notifications are recorded with their delay, a failing path answers its status, a
stalled path never answers, requests on one kept-alive connection are answered in order."""

from __future__ import annotations

import asyncio
import re
import socket
import time

import aiohttp
import orjson

from alerts.localhooks import read_recorded, spawn_receiver


def _note(n: int) -> bytes:
    return orjson.dumps({"alerts": [{"startsAt": "2026-11-28T15:00:00.000Z"}] * n})


def test_receiver_records_fails_stalls_and_keeps_alive(tmp_path):
    out = tmp_path / "got.txt"
    proc, url = spawn_receiver(str(out), fail={"/fail": 503}, stall={"/stall"})
    try:
        async def run():
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as s:
                async def post(path, body, timeout=10.0):
                    async with s.post(url + path, data=body, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                        return r.status, await r.read()

                ok = await asyncio.gather(*[post("/team-a", _note(2)) for _ in range(50)])
                failed = await post("/fail", _note(1))
                bad = await post("/team-a", b"{not json")
                try:
                    await post("/stall", _note(1), timeout=0.5)
                    stalled = False
                except TimeoutError:
                    stalled = True
                return ok, failed, bad, stalled

        ok, failed, bad, stalled = asyncio.run(run())
        assert {s for s, _ in ok} == {200}
        assert failed[0] == 503 and bad[0] == 400 and stalled
        # two pipelined requests on one raw connection, then a GET: answered in order, then closed
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5) as c:
            body = _note(1)
            req = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            c.sendall(req + req + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while (chunk := c.recv(65536)):
                got += chunk
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", got) == [b"200", b"200", b"405"]
        deadline = time.monotonic() + 10
        while True:  # the receiver flushes its record every 0.2 s
            delays, notes = read_recorded(str(out))
            if notes.get("/team-a") == 50 and notes.get("/p") == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert notes == {"/team-a": 50, "/p": 2}
        assert len(delays["/team-a"]) == 100 and all(d > 0 for _, d in delays["/team-a"])
    finally:
        proc.kill()
        proc.wait()


def test_the_demo_receivers_refuse_what_is_not_a_webhook_payload():
    """They answered 500 and still counted a body that parsed as JSON (``{}``) as a notification in the summary."""
    import asyncio

    import aiohttp
    import orjson

    from alerts.config import load_text
    from alerts.localhooks import LocalHooks
    from core.broker import free_port

    port = free_port()
    cfg = load_text(f"route: {{receiver: team-a}}\nreceivers:\n  - name: team-a\n    webhook_configs:\n"
                    f"      - url: http://127.0.0.1:{port}/hook\n")
    hooks = LocalHooks(cfg)
    good = {"status": "firing", "groupLabels": {}, "alerts": [{"status": "firing", "labels": {"alertname": "A"}}]}

    async def go():
        await hooks.start()
        try:
            async with aiohttp.ClientSession() as s:
                out = []
                for body in (b"not json", b"[]", b"{}", orjson.dumps({**good, "alerts": [1]}), orjson.dumps(good)):
                    async with s.post(f"http://127.0.0.1:{port}/hook", data=body) as r:
                        out.append(r.status)
                return out
        finally:
            await hooks.stop()

    assert asyncio.run(go()) == [400, 400, 400, 400, 200]
    assert hooks.summary() == {"team-a": 1}
