"""The intake over real HTTP (aiohttp, loopback) into the real broker: every sample payload, auth, limits, 503."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import orjson
import pytest
from aiohttp import web

from collectors.cloud.auth import SIGNATURE_HEADER, Auth, sign
from collectors.cloud.nodes import NodeMap
from collectors.cloud.server import create_app
from collectors.sink import AsyncKafkaSink
from core.records import decode
from tests.collectors.test_cloud_payloads import EXPECTED, NOW, assert_outcome, cases, node_map, summary
from tests.kafkatools import read_to_end

pytestmark = pytest.mark.kafka

TOKEN = b"t0ken-for-tests"
KEY = b"hmac-key-for-tests"


@contextlib.asynccontextmanager
async def intake(settings, nodes=None, topic=None, **kw):
    """The intake app on an ephemeral loopback port, producing to the test's topics; yields (url, session)."""
    sink = AsyncKafkaSink(settings.kafka, topic or settings.topic, client_id="test-cloud")
    await sink.start()
    app = create_app(sink, Auth([TOKEN], [KEY]), nodes or NodeMap(), clock=lambda: NOW, **kw)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            yield f"http://127.0.0.1:{port}", session
    finally:
        await runner.cleanup()
        await sink.stop()


async def post(session, url, body: bytes, headers=None, params=None):
    async with session.post(f"{url}/events", data=body, headers=headers or {}, params=params) as resp:
        return resp.status, await resp.json(content_type=None)


def bearer(token: bytes = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token.decode()}"}


def read_topic(settings, logical: str) -> list[tuple[bytes, bytes]]:
    """Everything on a topic: its end offsets are exact once the intake answered (acks=all), so read up to them."""
    return [(r.key, r.value) for r in read_to_end(settings.kafka, settings.topic(logical))]


def test_every_sample_payload_through_kafka(settings, data_dir):
    all_cases = cases(data_dir)

    async def run():
        got = {}
        async with intake(settings, NodeMap(node_map(data_dir))) as (url, session):
            for i, (key, (body, instance)) in enumerate(sorted(all_cases.items())):
                # half signed with HMAC, half with the bearer token: both paths carry real traffic
                headers = {SIGNATURE_HEADER: sign(KEY, body)} if i % 2 else bearer()
                got[key] = await post(session, url, body, headers, {"instance": instance} if instance else None)
        return got

    responses = asyncio.run(run())
    events = {}
    for key, value in read_topic(settings, "events"):
        ev = decode(value)
        assert key == ev.key()
        events.setdefault(ev.id, []).append(ev)
    dead = [orjson.loads(v) for _, v in read_topic(settings, "deadletter")]

    expected_dead = []
    for key, want in EXPECTED.items():
        status, body = responses[key]
        if isinstance(want, list):
            assert status == 200 and body["accepted"] == len(want), (key, body)
            assert_outcome([summary(events[i][0]) for i in body["ids"]], want)
        else:
            assert status == 400, (key, body)
            assert_outcome(f"400: {body['error']}", want)
            expected_dead.append((all_cases[key][0].decode(), body["error"], "collector/cloud"))
    n_events = sum(len(w) for w in EXPECTED.values() if isinstance(w, list))
    assert sum(len(v) for v in events.values()) == n_events
    # every refused body is on the dead-letter topic, whole, with the reason it was given
    assert sorted((d["payload"], d["reason"], d["origin"]) for d in dead) == sorted(expected_dead)
    assert len(dead) == sum(isinstance(w, str) for w in EXPECTED.values())
    # the same delivery twice (two identical NTH test messages) -> the same id, for downstream dedup
    assert responses["aws-node-termination-handler:1:filled"][1]["ids"] == \
           responses["aws-node-termination-handler:2:filled"][1]["ids"]
    assert len(events[responses["aws-node-termination-handler:1:filled"][1]["ids"][0]]) == 2


def test_unauthenticated_requests_store_nothing(settings, data_dir):
    good = (data_dir / "aws-ec2-health-events" / "aws-health-tools" / "testevent.json").read_bytes()
    bad_json = b'{"ver": "1.0",'
    attempts = [
        (good, {}),
        (good, bearer(b"wrong")),
        (good, {"Authorization": f"Basic {TOKEN.decode()}"}),
        (good, {"Authorization": TOKEN.decode()}),
        (good, {SIGNATURE_HEADER: sign(b"other key", good)}),
        (good, {SIGNATURE_HEADER: sign(KEY, good + b" ")}),
        (good, {SIGNATURE_HEADER: sign(KEY, good)[7:]}),  # no sha256= prefix
        (bad_json, bearer(b"wrong")),  # malformed AND unauthenticated: 401, not even dead-lettered
        (bad_json, {}),
    ]

    async def run():
        async with intake(settings) as (url, session):
            return [await post(session, url, body, headers) for body, headers in attempts]

    results = asyncio.run(run())
    assert [s for s, _ in results] == [401] * len(attempts)
    assert all(b == {"error": "unauthorized"} for _, b in results)
    assert read_topic(settings, "events") == [] and read_topic(settings, "deadletter") == []


def test_body_limit_and_kafka_unavailable(settings, data_dir):
    body = (data_dir / "aws-ec2-health-events" / "aws-health-tools" / "testevent.json").read_bytes()
    big = b'{"pad": "' + b"x" * 4096 + b'"}'

    async def chunks():
        yield big[:2000]
        yield big[2000:]

    async def run():
        async with intake(settings, max_body=2048) as (url, session):
            small = await post(session, url, body, bearer())
            sized = await post(session, url, big, bearer())
            async with session.post(f"{url}/events", data=chunks(), headers=bearer()) as resp:  # no Content-Length
                chunked = resp.status
            health = await (await session.get(f"{url}/healthz")).text()
            metrics = await (await session.get(f"{url}/metrics")).text()
        # a sink whose topics the broker refuses: no acknowledgement within kafka_timeout -> 503, retry later
        async with intake(settings, topic=lambda name: "refused topic!", kafka_timeout=1.0) as (url, session):
            unavailable = await post(session, url, body, bearer())
            unavailable_dead = await post(session, url, b"{oops", bearer())
        return small, sized, chunked, health, metrics, unavailable, unavailable_dead

    small, sized, chunked, health, metrics, unavailable, unavailable_dead = asyncio.run(run())
    assert small[0] == 200 and small[1]["accepted"] == 1
    assert sized == (413, {"error": "body larger than 2048 bytes"})
    assert chunked == 413
    assert health == "ok\n"
    assert 'kubesight_cloud_requests_total{code="413"} 2.0' in metrics
    assert 'kubesight_cloud_events_total{reason="DiskStalled"} 1.0' in metrics
    assert unavailable == (503, {"error": "Kafka unavailable, retry"})
    assert unavailable_dead == (503, {"error": "Kafka unavailable, retry"})  # a dead letter must be stored too
    assert len(read_topic(settings, "events")) == 1
    # both bodies over the limit are kept (their first 64 KiB: here whole) with why (tests/collectors/
    # test_intake_body_limits.py)
    assert [orjson.loads(v)["reason"] for _, v in read_topic(settings, "deadletter")] == \
        ["body of 4107 bytes over the 2048-byte limit"] * 2


def test_cloudevents_binary_mode_over_http(settings):
    data = {"eventId": "e-bp11trd0pqum2", "publishTime": "2019-04-09T04:18:26Z", "notBefore": "2019-04-12T01:01:01Z",
            "instanceId": "i-bp1ecr5go2go", "eventType": "SystemMaintenance.Reboot", "eventStatus": "Scheduled"}
    headers = bearer() | {"ce-specversion": "1.0", "ce-id": "eb-7", "ce-source": "acs.ecs",
                          "ce-type": "ecs:Instance:SystemMaintenance.Reboot", "ce-time": "2019-04-09T04:18:27Z",
                          "ce-subject": "acs:ecs:cn-hangzhou:1690700000000030:instance/i-bp1ecr5go2go",
                          "Content-Type": "application/json"}

    async def run():
        async with intake(settings, NodeMap({"i-bp1ecr5go2go": "cn-hangzhou.192.168.0.10"})) as (url, session):
            refused = await post(session, url, orjson.dumps(data), headers | {"ce-type": "ecs:Instance:Nope"})
            return refused, *await post(session, url, orjson.dumps(data), headers)

    refused, status, body = asyncio.run(run())
    assert refused == (400, {"error": "unknown Alibaba ECS event 'Instance:Nope'"})
    [dead] = [orjson.loads(v) for _, v in read_topic(settings, "deadletter")]
    assert dead["payload"] == orjson.dumps(data).decode()
    assert dead["where"]["headers"]["ce-type"] == "ecs:Instance:Nope" and dead["where"]["headers"]["ce-id"] == "eb-7"
    assert status == 200
    [(key, value)] = read_topic(settings, "events")
    ev = decode(value)
    assert key == b"default//Node/cn-hangzhou.192.168.0.10"
    assert (ev.id, ev.reason, ev.severity, ev.entity.node, ev.labels["scheduled_time"], ev.labels["phase"]) == \
           (body["ids"][0], "InstanceRebootScheduled", "critical", "cn-hangzhou.192.168.0.10",
            "2019-04-12T01:01:01.000Z", "Scheduled")


def test_a_corrupt_gzip_body_or_raw_bytes_in_a_ce_header_is_a_400_and_kept(settings, data_dir):
    """A corrupt gzip body was a 500 (the sender retries any 5xx for ever); a ce-* header of raw bytes made the dead
    letter unwritable, so the sender got 503 for ever. Both are refused with the reason and dead-lettered. The body
    is kept as it came: aiohttp's own decompression dropped a corrupt body's bytes (the dead letter's payload was
    empty), took a cut-short gzip body as a short JSON, and answered br or zstd itself, keeping nothing."""
    import base64
    import gzip

    body = (data_dir / "aws-ec2-health-events" / "aws-health-tools" / "testevent.json").read_bytes()
    cut = gzip.compress(body)[:-12]

    async def run():
        async with intake(settings) as (url, session):
            corrupt = await post(session, url, b"xxxx", bearer() | {"Content-Encoding": "gzip"})
            short = await post(session, url, cut, bearer() | {"Content-Encoding": "gzip"})
            brotli = await post(session, url, b"\x8b\x02\x80{}\x03", bearer() | {"Content-Encoding": "br"})
            good = await post(session, url, gzip.compress(body), bearer() | {"Content-Encoding": "gzip"})
            host, port = url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN + b"\r\n"
                         b"ce-specversion: 1.0\r\nce-id: c1\xff\r\nce-source: acs.ecs\r\nce-type: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            await writer.drain()
            raw = await reader.read()
            writer.close()
            return corrupt, short, brotli, good, raw

    corrupt, short, brotli, good, raw = asyncio.run(run())
    assert corrupt == (400, {"error": "Content-Encoding gzip: corrupt body (Error -3 while decompressing data: "
                                      "incorrect header check)"})
    assert short == (400, {"error": "Content-Encoding gzip: the body is cut short"})
    assert brotli == (400, {"error": "unsupported Content-Encoding 'br' (this intake takes gzip, deflate or none)"})
    assert good[0] == 200 and good[1]["accepted"] == 1
    assert raw.startswith(b"HTTP/1.1 400") and b"header ce-id is not UTF-8 text" in raw
    dead = {d["reason"]: d for d in (orjson.loads(v) for _, v in read_topic(settings, "deadletter"))}
    assert sorted(dead) == sorted([corrupt[1]["error"], short[1]["error"], brotli[1]["error"],
                                   "CloudEvent (binary mode): header ce-id is not UTF-8 text"])
    assert dead[corrupt[1]["error"]]["payload"] == "xxxx"
    kept = dead[short[1]["error"]]
    assert kept["encoding"] == "base64" and base64.b64decode(kept["payload"]) == cut  # as sent, not decompressed
    assert dead["CloudEvent (binary mode): header ce-id is not UTF-8 text"]["where"]["headers"]["ce-id"] == "c1\ufffd"


def test_a_cloudevents_batch_takes_its_good_items_and_keeps_the_bad_ones(settings):
    """One bad item refused the whole batch (400), and its good events were lost: a sender does not retry a 4xx."""
    def item(i, **kw):
        return {"specversion": "1.0", "id": f"b{i}", "source": "acs.ecs", "time": "2019-04-09T04:18:27Z",
                "type": "ecs:Instance:PreemptibleInstanceInterruption",
                "subject": "acs:ecs:cn-hangzhou:1690700000000030:instance/i-bp1ecr5go2go",
                "data": {"action": "delete"}} | kw

    bad = {"specversion": "1.0", "id": "b1"}
    batch = [item(0), bad, item(2, type="ecs:Instance:Nope")]
    headers = bearer() | {"Content-Type": "application/cloudevents-batch+json"}

    async def run():
        async with intake(settings) as (url, session):
            part = await post(session, url, orjson.dumps(batch + [item(3)]), headers)
            none = await post(session, url, orjson.dumps([bad]), headers)
            return part, none

    part, none = asyncio.run(run())
    assert part[0] == 200 and part[1]["accepted"] == 2
    assert part[1]["rejected"] == [
        {"index": 1, "error": "CloudEvents batch[1]: CloudEvent attribute 'source' missing or not a string"},
        {"index": 2, "error": "CloudEvents batch[2]: unknown Alibaba ECS event 'Instance:Nope'"}]
    assert none == (400, {"error": "CloudEvents batch[0]: CloudEvent attribute 'source' missing or not a string"})
    assert sorted(decode(v).id for _, v in read_topic(settings, "events")) == sorted(part[1]["ids"])
    dead = sorted((orjson.loads(v) for _, v in read_topic(settings, "deadletter")),
                  key=lambda d: d["where"].get("index", -1))
    assert dead[0]["reason"] == none[1]["error"] and orjson.loads(dead[0]["payload"]) == [bad]
    assert [(d["where"]["index"], d["reason"], orjson.loads(d["payload"])) for d in dead[1:]] == [
        (1, part[1]["rejected"][0]["error"], bad), (2, part[1]["rejected"][1]["error"], batch[2])]


def test_bench_command_prints_its_figure(kafka_bootstrap, monkeypatch, capsys):
    import re

    from kubesight.cli import main

    monkeypatch.setenv("KUBESIGHT_KAFKA", kafka_bootstrap)
    assert main(["bench", "cloud", "--events", "40", "--concurrency", "4"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert re.match(r"^cloud intake: 40 events in 40 requests \(1/request, 4 in flight\) in [\d.]+ s -> [\d,]+ events/s, "
                    r".*HTTP \{200: 40\}; 40 on the events topic \(\+1 warm-up\)$", line), line


def test_node_joining_after_the_listing_is_found_on_a_miss(settings, data_dir):
    """The intake lists nodes with the official client; an unknown instance re-lists (min_interval 0 here)."""
    import yaml
    from kubernetes import client

    from collectors.cloud.nodes import kubernetes_lister
    from tests.collectors.test_cloud_nodes import NODES_DIR, api_server

    state = {"nodes": []}
    spot = orjson.dumps({"version": "0", "id": "e1", "detail-type": "EC2 Spot Instance Interruption Warning",
                         "source": "aws.ec2", "time": "2024-05-01T09:59:00Z", "region": "us-east-1",
                         "detail": {"instance-id": "i-0bb916cc32a8034eb", "instance-action": "terminate"}})

    async def run():
        async with api_server(state) as api_url:
            api = client.ApiClient(client.Configuration(host=api_url))
            nodes = NodeMap(lister=kubernetes_lister(api), refresh=3600, min_interval=0)
            async with intake(settings, nodes) as (url, session):
                before = await post(session, url, spot, bearer())  # listed: no node has this instance yet
                state["nodes"] = [yaml.safe_load(f.read_text()) for f in (data_dir / NODES_DIR).glob("*.yaml")]
                after = await post(session, url, spot, bearer())  # miss -> re-list -> found
            api.close()
            return before, after

    before, after = asyncio.run(run())
    assert before[0] == after[0] == 200
    evs = [decode(v) for _, v in read_topic(settings, "events")]
    assert sorted(e.entity.node for e in evs) == ["", "ip-10-0-195-177.ec2.internal"]
    assert {e.id for e in evs} == set(before[1]["ids"]) == set(after[1]["ids"])  # same delivery, same id
