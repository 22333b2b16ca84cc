"""Silences through the HTTP API and the CLI, stored in the compacted topic (real broker)."""

import asyncio
import contextlib
import time

import aiohttp
import orjson
import pytest

from alerts.api import app
from core.records import format_time
from kubesight.cli import main
from streams.alerting import SilenceBook
from tests.realtools import serve_app

pytestmark = pytest.mark.kafka


@contextlib.asynccontextmanager
async def silence_api(settings):
    """kubesight's silences API over a SilenceBook of ``settings``' topics, on a free loopback port: its root URL."""
    book = SilenceBook(settings, settings.kafka)
    await book.start()
    await book.caught_up.wait()
    try:
        async with serve_app(app(book)) as root:
            yield root
    finally:
        await book.stop()


def test_api_create_list_get_expire_and_other_workers_see_it(settings):
    async def go():
        async with silence_api(settings) as root:
            await check(root + "/api/v2")

    async def check(base):
        now = time.time()
        body = {"matchers": [{"name": "namespace", "value": "shop", "isRegex": False, "isEqual": True}],
                "startsAt": format_time(now - 1), "endsAt": format_time(now + 3600),
                "createdBy": "ana", "comment": "load test"}
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{base}/silences", data=orjson.dumps(body)) as r:
                assert r.status == 200
                sid = (await r.json())["silenceID"]
            async with s.post(f"{base}/silences", data=orjson.dumps(dict(body, comment=""))) as r:
                assert (r.status, (await r.json())["error"]) == (
                    400, "comment: String should have at least 1 character")
            async with s.post(f"{base}/silences", data=orjson.dumps(dict(body, id=[]))) as r:  # was a bare 500
                assert (r.status, (await r.json())["error"]) == (400, "id: expected a string, got list")
            async with s.get(f"{base}/silences") as r:
                (got,) = await r.json()
                assert (got["id"], got["status"]["state"], got["createdBy"]) == (sid, "active", "ana")
            # another worker (a fresh book reading the compacted topic) sees it
            other = SilenceBook(settings, settings.kafka)
            await other.start()
            await other.caught_up.wait()
            assert other.silences.muting({"namespace": "shop"}, time.time()) == [sid]
            async with s.delete(f"{base}/silence/{sid}") as r:
                assert r.status == 200
            async with s.get(f"{base}/silence/{sid}") as r:
                assert (await r.json())["status"]["state"] == "expired"
            async with s.delete(f"{base}/silence/nope") as r:
                assert r.status == 404
            for _ in range(100):  # the expiry reaches the other worker through the topic
                if not other.silences.muting({"namespace": "shop"}, time.time()):
                    break
                await asyncio.sleep(0.05)
            assert other.silences.muting({"namespace": "shop"}, time.time()) == []
            await other.stop()

    asyncio.run(go())


def test_cli_silences_add_list_expire_through_the_topic(settings, monkeypatch, capsys):
    monkeypatch.setenv("KUBESIGHT_KAFKA", settings.kafka)
    monkeypatch.setenv("KUBESIGHT_TOPIC_PREFIX", settings.topic_prefix)
    assert main(["silences", "add", 'pod=~"cart-.*"', "--comment", "rollout", "--author", "bo", "-d", "2h"]) == 0
    sid = capsys.readouterr().out.strip()
    assert main(["silences", "list"]) == 0
    out = capsys.readouterr().out
    assert sid in out and 'pod=~"cart-.*"' in out and "active" in out and "rollout" in out
    assert main(["silences", "expire", sid]) == 0
    capsys.readouterr()
    assert main(["silences", "list"]) == 0
    assert capsys.readouterr().out.strip() == "no silences"
    assert main(["silences", "list", "--all"]) == 0
    assert "expired" in capsys.readouterr().out


def test_a_writer_deletes_forgotten_silences_from_the_compacted_topic(settings):
    """The compacted topic keeps each silence's last record: without tombstones it would hold every silence ever
    made. A book that writes a silence also writes a tombstone for each one it forgot (ended more than 120 h
    before the latest change); a reader clears its note of the forgotten one when the tombstone arrives."""
    from alerts.silences import RETENTION, Silence
    from tests.kafkatools import read_to_end

    def made(at: float, name: str) -> Silence:
        return Silence.create({"matchers": [{"name": "node", "value": name}], "startsAt": format_time(at),
                               "endsAt": format_time(at + 3600), "createdBy": "t", "comment": "c"}, at)

    now = time.time()
    old, new = made(now - RETENTION - 3 * 3600, "a"), made(now, "b")

    async def go():
        book = SilenceBook(settings, settings.kafka)
        await book.start()
        await book.caught_up.wait()
        try:
            await book.put(old)
            assert old.id in book.silences.by_id  # the latest change is old itself: kept
            await book.put(new)  # old ended more than 120 h before it: forgotten, and deleted from the topic
            assert not book.silences.gone  # every forgotten silence got its tombstone
            # the book follows the topic too: it may read old's record again, then its tombstone
            deadline = time.monotonic() + 20
            while set(book.silences.by_id) != {new.id} and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert set(book.silences.by_id) == {new.id}
            reader = SilenceBook(settings, settings.kafka)
            await reader.start()
            await reader.caught_up.wait()
            assert set(reader.silences.by_id) == {new.id} and not reader.silences.gone
            await reader.stop()
        finally:
            await book.stop()

    asyncio.run(go())
    records = [(r.key.decode(), r.value) for r in read_to_end(settings.kafka, settings.topic("silences"))]
    assert [(k, v is None) for k, v in records] == [(old.id, False), (new.id, False), (old.id, True)]


def test_cli_silences_add_past_the_year_9999_is_an_error_not_a_traceback(capsys):
    """--start 9999-06-01 with --duration 1y raised in format_time (a traceback, exit 1) before reaching Kafka."""
    assert main(["silences", "add", 'a="1"', "--start", "9999-06-01T00:00:00Z", "--duration", "1y",
                 "--comment", "x"]) == 2
    assert capsys.readouterr().err == "kubesight silences add: --start + --duration ends after the year 9999\n"
