"""The lean HTTP/1.1 client of delivery (alerts.http1) against real local servers: aiohttp's and raw sockets."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from alerts.config import Retry
from alerts.http1 import DeliverySession, Pool, plain
from alerts.receivers import Integration, deliver, send_once

NOTE = {"id": "n1", "receiver": "r", "groupKey": "{}:{}", "groupLabels": {}, "status": "firing",
        "alerts": [{"labels": {"alertname": "A"}, "annotations": {}, "status": "firing",
                    "startsAt": "2021-08-03T10:00:00.000Z", "endsAt": None, "fingerprint": "f", "generatorURL": ""}]}


async def _aiohttp_server(handler):
    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


def test_webhook_through_lean_client_keeps_alive_and_reports_statuses():
    async def run():
        got, peers = [], set()

        async def handle(request):
            got.append((request.path, request.headers.get("Idempotency-Key"), await request.json()))
            peers.add(request.transport.get_extra_info("peername"))
            if request.path == "/bad":
                return web.Response(status=400, text="nope")
            if request.path == "/busy":
                return web.Response(status=503, text="later", headers={"Retry-After": "7"})
            return web.Response(text="ok")

        runner, port = await _aiohttp_server(handle)
        try:
            async with DeliverySession() as s:
                ok = Integration("r", "r/webhook[0]", "webhook", f"http://127.0.0.1:{port}/hook")
                outs = [await send_once(s, ok, NOTE, "http://ks") for _ in range(5)]
                bad = await send_once(s, Integration("r", "r/webhook[1]", "webhook",
                                                     f"http://127.0.0.1:{port}/bad"), NOTE, "")
                busy = await send_once(s, Integration("r", "r/webhook[2]", "webhook",
                                                      f"http://127.0.0.1:{port}/busy"), NOTE, "")
                assert s._aiohttp is None  # plain URLs never needed aiohttp
        finally:
            await runner.cleanup()
        assert all(o.ok and o.status == 200 for o in outs), outs
        assert [g[0] for g in got[:5]] == ["/hook"] * 5 and got[0][1] == "n1"
        assert got[0][2]["version"] == "4" and got[0][2]["dedupKey"] == "n1"
        assert len(peers) == 1  # one keep-alive connection for all seven requests
        assert not bad.ok and not bad.retryable and bad.reason == "HTTP 400: nope"
        assert not busy.ok and busy.retryable and busy.retry_after == 7.0

    asyncio.run(run())


async def _raw_server(respond):
    """A server that answers each request (read up to the end of its body) with respond(n) bytes, or closes."""
    async def handle(reader, writer):
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int([ln.split(b":")[1] for ln in head.split(b"\r\n")
                              if ln.lower().startswith(b"content-length")][0])
                await reader.readexactly(length)
                n += 1
                out = respond(n)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
                if b"Connection: close" in out or b"Content-Length" not in out and b"chunked" not in out:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("response,body", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n", b"abcde"),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", b"hi"),
    (b"HTTP/1.0 200 OK\r\n\r\nto the end", b"to the end"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
])
def test_response_framings(response, body):
    async def run():
        server, port = await _raw_server(lambda n: response)
        try:
            pool = Pool()
            r = await pool.post(plain(f"http://127.0.0.1:{port}/x"), b"{}", {}, 5.0)
            pool.close()
        finally:
            server.close()
        return r

    r = asyncio.run(run())
    assert r.status in (200, 204) and r.body == body


def test_idle_close_by_server_is_sent_again_on_a_new_connection_not_retried_with_backoff():
    async def run():
        # each connection answers one request, then the server closes it without saying so
        server, port = await _raw_server(lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" if n == 1 else None)
        try:
            pool = Pool()
            where = plain(f"http://127.0.0.1:{port}/x")
            first = await pool.post(where, b"{}", {}, 5.0)
            await asyncio.sleep(0.2)  # the server has closed the kept connection meanwhile
            second = await pool.post(where, b"{}", {}, 5.0)
            pool.close()
        finally:
            server.close()
        return first, second

    first, second = asyncio.run(run())
    assert first.status == second.status == 200


def test_refused_and_stalled_receivers_are_retryable_with_reasons_without_the_secret_path():
    async def run():
        stall = asyncio.Event()

        async def hang(reader, writer):
            await stall.wait()

        server = await asyncio.start_server(hang, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        free = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        try:
            async with DeliverySession() as s:
                slow = Integration("r", "r/webhook[0]", "webhook", f"http://127.0.0.1:{port}/T0/SECRETPATH", timeout=0.3)
                down = Integration("r", "r/webhook[1]", "webhook", f"http://127.0.0.1:{free}/T0/SECRETPATH")
                timed_out = await send_once(s, slow, NOTE, "")
                refused = await deliver(s, down, NOTE, Retry(initial="10ms", max_backoff="20ms", budget="50ms"), "")
        finally:
            stall.set()
            server.close()
        return timed_out, refused

    timed_out, refused = asyncio.run(run())
    assert not timed_out.ok and timed_out.retryable and timed_out.reason == "timeout after 0.3s"
    assert not refused.ok and refused.retryable and "ConnectionRefusedError" in refused.reason
    assert "SECRETPATH" not in refused.reason and refused.reason.startswith("retry budget of 0.05s spent")


def test_urls_that_need_aiohttp():
    assert plain("http://user:pw@127.0.0.1/hook") is None  # credentials in the URL
    assert plain("http://127.0.0.1/a b") is None and plain("http://bücher.example/") is None  # quoting, IDNA
    assert plain("ftp://127.0.0.1/") is None
    assert plain("https://hooks.example/T0/B1") == ("https", "hooks.example", 443, "hooks.example", "/T0/B1")


def test_connection_close_http10_and_bytes_beyond_the_response_are_not_reused_headers_any_case():
    async def run():
        peers = []

        async def handle(reader, writer):
            peers.append(writer.get_extra_info("peername"))
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]))
            writer.write(answers[len(peers) - 1])
            await writer.drain()
            await asyncio.sleep(0.3)  # the connection stays open: only the response says not to reuse it
            writer.close()

        answers = [b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-Trace: a\r\nContent-Length: 2\r\n\r\nok",
                   b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
                   b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
                   b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"]
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        where = plain(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x")
        try:
            pool = Pool()
            rs = [await pool.post(where, b"{}", {}, 5.0) for _ in answers]
            pool.close()
        finally:
            server.close()
        return rs, peers

    rs, peers = asyncio.run(run())
    assert [r.status for r in rs] == [200, 200, 200, 201] and rs[0].body == b"ok"
    assert rs[0].headers.get("x-trace") == rs[0].headers.get("X-TRACE") == "a"
    assert len(set(peers)) == 4  # none of the first three connections was reused


@pytest.mark.parametrize("response,error", [
    (b"garbage\r\n\r\n", "malformed HTTP response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "malformed HTTP response"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed HTTP response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", "incomplete HTTP response body"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", "incomplete HTTP response headers"),
])
def test_malformed_and_cut_responses_are_value_errors(response, error):
    async def run():
        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(response)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        try:
            pool = Pool()
            with pytest.raises(ValueError) as e:
                await pool.post(plain(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x"), b"{}", {}, 5.0)
            pool.close()
        finally:
            server.close()
        return str(e.value)

    assert asyncio.run(run()).startswith(error)


def test_bad_header_values_are_refused_before_connecting_without_quoting_them():
    async def run():
        pool, where = Pool(), plain("http://127.0.0.1:9/x")  # nothing listens: refused if it ever connected
        errors = []
        for headers in ({"X-Evil": "a\r\nInjected: 1"}, {"Authorization": "Bearer SECRET\x00TOKEN"},
                        {"Bad Name": "v"}):
            with pytest.raises(ValueError) as e:
                await pool.post(where, b"{}", headers, 5.0)
            errors.append(str(e.value))
        return errors

    crlf, nul, name = asyncio.run(run())
    assert "line breaks are not allowed" in crlf and "Injected" not in crlf
    assert "'Authorization'" in nul and "SECRET" not in nul and "TOKEN" not in nul
    assert "'Bad Name'" in name
