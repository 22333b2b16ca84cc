"""A body over an HTTP intake's size limit is answered 413 and kept (its beginning, its size, why) on the dead-letter
topic, never read whole into memory; over real HTTP into the real broker (the cloud intake, remote-write)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip

import aiohttp
import orjson
import pytest
from aiohttp import web

from collectors import bodies
from collectors.cloud.auth import SIGNATURE_HEADER, Auth, sign
from collectors.cloud.server import create_app
from collectors.metrics.remote_write import Intake, app
from collectors.sink import AsyncKafkaSink
from core.records import PAYLOAD_LIMIT
from tests.collectors.test_cloud_intake import KEY, TOKEN, bearer, intake, post, read_topic

pytestmark = pytest.mark.kafka

BIG = b'{"pad": "' + b"x" * 300_000 + b'"}'  # 300,011 bytes: over the limit and over what a dead letter keeps


async def chunks(body: bytes, size: int = 50_000):
    """A body sent without Content-Length (chunked)."""
    for i in range(0, len(body), size):
        yield body[i:i + size]


def dead_letters(settings) -> dict[str, dict]:
    return {d["reason"]: d for d in (orjson.loads(v) for _, v in read_topic(settings, "deadletter"))}


def test_a_cloud_body_over_the_limit_is_kept_cut_with_its_size(settings):
    bomb = gzip.compress(b"x" * 100_000)  # 132 bytes as sent, 100,000 decompressed

    async def run():
        async with intake(settings, max_body=2048) as (url, session):
            return (await post(session, url, BIG, bearer()),
                    await post(session, url, chunks(BIG), bearer()),
                    await post(session, url, bomb, bearer() | {"Content-Encoding": "gzip", "ce-id": "c1"}),
                    # a signature covers the whole body, which is not read past the limit: not kept
                    await post(session, url, BIG, {SIGNATURE_HEADER: sign(KEY, BIG)}))

    answers = asyncio.run(run())
    assert answers == ((413, {"error": "body larger than 2048 bytes"}),) * 4
    dead = dead_letters(settings)
    assert sorted(dead) == ["body of 132 bytes decompresses to over the 2048-byte limit",
                            "body of 300011 bytes over the 2048-byte limit"]
    sized = dead["body of 300011 bytes over the 2048-byte limit"]  # one reason, two dead letters: both the same
    assert [orjson.loads(v)["reason"] for _, v in read_topic(settings, "deadletter")].count(sized["reason"]) == 2
    assert (sized["payload"], sized["truncated"], sized["size"]) == (BIG[:PAYLOAD_LIMIT].decode(), True, 300_011)
    assert (sized["origin"], sized["where"]["path"]) == ("collector/cloud", "/events")
    kept = dead["body of 132 bytes decompresses to over the 2048-byte limit"]
    assert (base64.b64decode(kept["payload"]), kept["truncated"]) == (bomb, False)  # as sent, whole
    assert kept["where"]["headers"] == {"ce-id": "c1"}
    assert read_topic(settings, "events") == []


def test_a_remote_write_body_over_the_limit_is_kept_cut_with_its_size(settings):
    async def run():
        sink = AsyncKafkaSink(settings.kafka, settings.topic)
        await sink.start()
        runner = web.AppRunner(app(Intake(sink, max_bytes=4096)))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/api/v1/write"
        out = []
        try:
            async with aiohttp.ClientSession() as s:
                for data in (BIG, chunks(BIG)):
                    async with s.post(url, data=data, headers={"Content-Encoding": "snappy"}) as r:
                        out.append((r.status, await r.text()))
        finally:
            await runner.cleanup()
            await sink.stop()
        return out

    assert asyncio.run(run()) == [(413, "body exceeds 4096 bytes\n")] * 2
    dead = [orjson.loads(v) for _, v in read_topic(settings, "deadletter")]
    assert [(d["reason"], d["origin"], d["truncated"], d["size"], d["payload"]) for d in dead] == \
        [("remote-write: body of 300011 bytes over the 4096-byte limit", "collector/metrics", True, 300_011,
          BIG[:PAYLOAD_LIMIT].decode())] * 2


class Endless:
    """A request whose body never ends (as a StreamReader is read): counts what was taken from it."""

    def __init__(self, content_length):
        self.content_length = content_length
        self.content = self
        self.taken = 0

    async def read(self, n: int) -> bytes:
        self.taken += min(n, 1000)
        return b"x" * min(n, 1000)


def test_only_the_kept_beginning_of_a_body_over_the_limit_is_read():
    from collectors.bodies import TooLarge, read_body

    # announced: the kept bytes only; chunked: the limit + 1 (to know it is over), or the kept bytes if more
    for length, keep, taken in ((10**12, 100, 100), (None, 100, 2049), (None, 5000, 5000)):
        req = Endless(length)
        with pytest.raises(TooLarge) as exc:
            asyncio.run(read_body(req, 2048, keep=keep))
        assert (exc.value.head, exc.value.size, req.taken) == (b"x" * keep, length, taken)


DEADLINE = 20.0  # waits for an answer: far past the measure's bounds, far short of aiohttp's lingering below


@contextlib.asynccontextmanager
async def served(settings, application):
    """``application`` on an ephemeral loopback port (yields it), producing to the test's topics, with aiohttp's
    lingering after an answer (reading on what the handler left of a body) made long: only the intake ends it."""
    sink = AsyncKafkaSink(settings.kafka, settings.topic, client_id="test-limits")
    await sink.start()
    runner = web.AppRunner(application(sink), access_log=None, lingering_time=600, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()
        await sink.stop()


def cloud(sink):
    return create_app(sink, Auth([TOKEN], [KEY]), max_body=2048)


def remote_write(sink):
    return app(Intake(sink, max_bytes=2048, tokens=[TOKEN.decode()]))


async def send(port: int, path: str, first: int, *, length: int | None = None, endless: bool = False):
    """POST ``first`` bytes of a body (chunked, or with ``length`` announced), then stall or (``endless``) go on
    sending; the answer and how the connection ended: "closed" by the intake (EOF or reset) or "open" at DEADLINE."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = f"Content-Length: {length}" if length else "Transfer-Encoding: chunked"
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN.decode()}\r\n{framing}\r\n"
                 f"Content-Type: application/x-protobuf\r\n\r\n".encode())

    def piece(n: int) -> bytes:
        return b"x" * n if length else b"%x\r\n%s\r\n" % (n, b"x" * n)

    got = bytearray()

    async def answer():  # read as it comes, before the intake's close can reset the connection
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                got.extend(chunk)

    async def stream():
        while True:
            writer.write(piece(16384))
            await writer.drain()

    reading = asyncio.create_task(answer())
    writer.write(piece(first))
    streaming = asyncio.create_task(stream()) if endless else None
    try:
        await asyncio.wait_for(reading, DEADLINE)
        ended = "closed"
    except TimeoutError:
        ended = "open"
    if streaming:
        streaming.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await streaming
    writer.close()
    return bytes(got).split(b"\r\n", 1)[0].decode(), ended


def test_a_sender_that_stalls_past_the_limit_is_answered_and_kept(settings, monkeypatch):
    """Without a Content-Length, the rest of a body over the limit was read to learn its size, for ever: a sender that
    stalled mid-body had no answer and nothing was kept (aiohttp's own limit answered 413 at once). Read for at most
    MEASURE_SECONDS, then kept with the bytes read as an "at least" size; the connection is closed, not read on."""
    monkeypatch.setattr(bodies, "MEASURE_SECONDS", 0.2)

    async def run():
        async with served(settings, cloud) as port:
            out = [await send(port, "/events", 10_000),  # stalls before the kept beginning is whole
                   await send(port, "/events", 100_000),  # after it, while measured
                   await send(port, "/events", 10_000, length=10**9)]  # announced, before the kept beginning
        async with served(settings, remote_write) as port:
            out.append(await send(port, "/api/v1/write", 100_000))
        return out

    assert asyncio.run(run()) == [("HTTP/1.1 413 Request Entity Too Large", "closed")] * 4
    dead = [orjson.loads(v) for _, v in read_topic(settings, "deadletter")]
    stalled = "(not read to its end: 0.2 s passed) over the 2048-byte limit"
    # the size: the body's where announced, else what came (also all that is kept when under PAYLOAD_LIMIT)
    assert sorted((d["reason"], d.get("size"), d["where"].get("size_at_least"), len(d["payload"])) for d in dead) == [
        ("body of 1000000000 bytes over the 2048-byte limit", 10**9, None, 10_000),
        (f"body of at least 10000 bytes {stalled}", None, 10_000, 10_000),
        (f"body of at least 100000 bytes {stalled}", 100_000, 100_000, PAYLOAD_LIMIT),
        (f"remote-write: body of at least 100000 bytes {stalled}", 100_000, 100_000, PAYLOAD_LIMIT)]


def test_a_sender_that_streams_without_end_is_answered_and_cut_off(settings, monkeypatch):
    """A sender streaming a body without end was read for ever, never answered. Read up to MEASURE_BYTES past the
    limit (the time bound out of reach here), then answered 413 and its connection closed."""
    monkeypatch.setattr(bodies, "MEASURE_SECONDS", 600.0)
    monkeypatch.setattr(bodies, "MEASURE_BYTES", 300_000)

    async def run():
        async with served(settings, cloud) as port:
            out = [await send(port, "/events", 16384, endless=True)]
        async with served(settings, remote_write) as port:
            out.append(await send(port, "/api/v1/write", 16384, endless=True))
        return out

    assert asyncio.run(run()) == [("HTTP/1.1 413 Request Entity Too Large", "closed")] * 2
    dead = [orjson.loads(v) for _, v in read_topic(settings, "deadletter")]
    assert [d["reason"].split(" bytes (", 1)[1] for d in dead] == \
        ["not read to its end: 300000 bytes past the limit read) over the 2048-byte limit"] * 2
    assert [(d["where"]["size_at_least"] == d["size"] >= 302_048, len(d["payload"])) for d in dead] == \
        [(True, PAYLOAD_LIMIT)] * 2
