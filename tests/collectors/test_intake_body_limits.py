"""A body over an HTTP intake's size limit is answered 413 and kept (its beginning, its size, why) on the dead-letter
topic, never read whole into memory; over real HTTP into the real broker (the cloud intake, remote-write)."""

from __future__ import annotations

import asyncio
import base64
import gzip

import aiohttp
import orjson
import pytest
from aiohttp import web

from collectors.cloud.auth import SIGNATURE_HEADER, sign
from collectors.metrics.remote_write import Intake, app
from collectors.sink import AsyncKafkaSink
from core.records import PAYLOAD_LIMIT
from tests.collectors.test_cloud_intake import KEY, bearer, intake, post, read_topic

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
