"""Remote-write intake: requests built with the prompb schema, through a real endpoint, into the real broker."""

from __future__ import annotations

import asyncio

import aiohttp
import cramjam
import pytest
from aiohttp import web

from collectors.metrics.exposition import parse
from collectors.metrics.produce import BatchProducer
from collectors.metrics.remote_write import (
    Intake,
    PayloadError,
    WriteRequest,
    app,
    decode,
    encode,
    samples_of,
)
from collectors.metrics.scrape import SelfMetrics
from collectors.sink import AsyncKafkaSink
from tests.collectors.test_metrics_helpers import read_topic

HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
           "X-Prometheus-Remote-Write-Version": "0.1.0"}


def request_from_page(text: str, t_ms: int) -> WriteRequest:
    req = WriteRequest()
    for name, labels, value, _ in parse(text).points:
        ts = req.timeseries.add()
        ts.labels.add(name="__name__", value=name)
        for k, v in sorted(labels.items()):
            ts.labels.add(name=k, value=v)
        ts.samples.add(value=value, timestamp=t_ms)
        ts.samples.add(value=value + 1, timestamp=t_ms + 15_000)
    return req


async def _post_all(settings, bodies, *, stop_sink_first=False, kafka_timeout=10.0, tokens=None):
    sink = AsyncKafkaSink(settings.kafka, settings.topic)
    await sink.start()
    metrics = SelfMetrics()
    intake = Intake(BatchProducer(sink), metrics, max_bytes=8 * 2**20, labels={"cluster": "ack-1"},
                    kafka_timeout=kafka_timeout, tokens=tokens)
    runner = web.AppRunner(app(intake, registry=metrics.registry))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    if stop_sink_first:
        await sink.stop()
    out = []
    try:
        async with aiohttp.ClientSession() as s:
            for body, headers in bodies:
                async with s.post(url + "/api/v1/write", data=body, headers=headers) as r:
                    out.append((r.status, await r.text()))
            async with s.get(url + "/metrics") as r:
                out.append((r.status, await r.text()))
    finally:
        if not stop_sink_first:
            await sink.stop()
        await runner.cleanup()
    return out


@pytest.mark.kafka
def test_a_write_request_round_trips_into_kafka(data_dir, settings):
    text = (data_dir / "nri-kubernetes-testdata/1_35/controlplane/etcd/metrics").read_text()
    req = request_from_page(text, 1782468900000)
    (status, body), (_, selfm) = asyncio.run(_post_all(settings, [(encode(req), HEADERS)]))
    assert (status, body) == (204, "")
    got = read_topic(settings.kafka, settings.topic("samples"))
    assert len(got) == 2 * 1461
    want = {}
    for name, labels, value, _ in parse(text).points:
        lab = {**labels, "cluster": "ack-1"}
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(lab.items()))
        want[(f"{name}{{{inner}}}".encode(), "2026-06-26T10:15:00.000Z")] = value
        want[(f"{name}{{{inner}}}".encode(), "2026-06-26T10:15:15.000Z")] = value + 1
    assert {(k, v["time"]): v["value"] for k, v in got} == want
    assert 'kubesight_metrics_remote_write_samples_total 2922.0' in selfm
    assert 'kubesight_metrics_remote_write_requests_total{code="204"} 1.0' in selfm


def _no_name() -> bytes:
    req = WriteRequest()
    ts = req.timeseries.add()
    ts.labels.add(name="job", value="x")
    ts.samples.add(value=1, timestamp=1)
    return encode(req)


def _histogram() -> bytes:
    """A gauge and a native histogram in one request, as Prometheus sends them."""
    req = WriteRequest()
    ts = req.timeseries.add()
    ts.labels.add(name="__name__", value="g")
    ts.samples.add(value=7, timestamp=1_764_400_000_000)
    ts = req.timeseries.add()
    ts.labels.add(name="__name__", value="h")
    ts.histograms.append(b"\x08\x01")
    return encode(req)


@pytest.mark.kafka
def test_bad_payloads_get_400_and_are_dead_lettered_with_reasons(settings):
    good = encode(request_from_page("up 1\n", 1000))
    bodies = [
        (b"not snappy at all", HEADERS),
        (bytes(cramjam.snappy.compress_raw(b"\xff\xff\xff garbage")), HEADERS),
        (_no_name(), HEADERS),
        (_histogram(), HEADERS),
        (good, {**HEADERS, "Content-Encoding": "lz4"}),
        # a corrupt gzip body: was a 500, then a dead letter without its bytes (aiohttp had decompressed it)
        (b"xxxx", {**HEADERS, "Content-Encoding": "gzip", "Connection": "close"}),
        (good, HEADERS),
        # remote-write 2.0 parses as an empty 1.0 request: it was answered 204 and lost; 415 makes Prometheus fall back
        (good, {**HEADERS, "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"}),
        (_histogram(), HEADERS),  # the same histogram again: counted, not dead-lettered again within the hour
    ]
    res = asyncio.run(_post_all(settings, bodies))
    # a native histogram is kept with why, and its request's float series are taken: a 400 made Prometheus drop
    # the whole batch for good (it does not retry a 4xx)
    assert [s for s, _ in res[:-1]] == [400, 400, 400, 204, 400, 400, 204, 415, 204]
    assert 'kubesight_metrics_remote_write_series_skipped_total{name="h"} 2.0' in res[-1][1]
    assert res[0][1].startswith("snappy: ")
    assert res[1][1].startswith("protobuf: ")
    assert res[2][1] == "timeseries[0]: no __name__ label\n"
    assert res[4][1] == "unsupported Content-Encoding 'lz4' (remote-write 1.0 uses snappy)\n"
    assert res[5][1] == "unsupported Content-Encoding 'gzip' (remote-write 1.0 uses snappy)\n"
    assert res[7][1].startswith("unsupported remote-write message 'io.prometheus.write.v2.Request'")
    dead = [d for _, d in read_topic(settings.kafka, settings.topic("deadletter"))]
    assert sorted(d["reason"] for d in dead) == sorted(
        ["remote-write: " + t.strip() for i, (_, t) in enumerate(res[:6]) if i != 3]
        + ["remote-write: 1 series not taken: timeseries[1] ('h'): native histograms are not supported"])
    assert all(d["origin"] == "collector/metrics" and d["payload"] for d in dead)  # each body as it came
    samples = [v for _, v in read_topic(settings.kafka, settings.topic("samples"))]
    assert len(samples) == 4 and [v["value"] for v in samples if v["name"] == "g"] == [7.0, 7.0]


@pytest.mark.kafka
def test_a_bad_series_is_dead_lettered_and_the_others_in_its_request_are_taken(settings):
    """One series Prometheus would refuse (a timestamp out of range, a duplicate label) made the whole request a 400,
    which Prometheus drops for good (a 4xx is not retried): the good series beside it were lost."""
    req = WriteRequest()
    for name, extra, t in (("ok_a", (), 1_764_400_000_000), ("bad_time", (), 2**63 - 1),
                           ("bad_labels", (("job", "x"), ("job", "y")), 1_764_400_000_000),
                           ("ok_b", (), 1_764_400_000_000)):
        ts = req.timeseries.add()
        ts.labels.add(name="__name__", value=name)
        for k, v in extra:
            ts.labels.add(name=k, value=v)
        ts.samples.add(value=1, timestamp=t)
    res = asyncio.run(_post_all(settings, [(encode(req), HEADERS)]))
    assert res[0] == (204, "")
    samples = [v for _, v in read_topic(settings.kafka, settings.topic("samples"))]
    assert sorted(v["name"] for v in samples) == ["ok_a", "ok_b"]
    dead = [d for _, d in read_topic(settings.kafka, settings.topic("deadletter"))]
    assert [d["reason"] for d in dead] == [
        "remote-write: 2 series refused: timeseries[1] ('bad_time'): timestamp 9223372036854775807 ms is not a time of "
        "years 1-9999; timeseries[2]: duplicate label 'job'"]
    assert dead[0]["encoding"] == "base64" and dead[0]["truncated"] is False  # the whole request, as sent


@pytest.mark.kafka
def test_big_bad_bodies_get_400_and_dead_letters_that_fit_the_topic(settings):
    """Issue 13 #1: 900 KB and 2 MB of garbage, and a body that decompresses to 40 MB, answered 503
    because their dead letters (the whole payload) exceeded the broker's 1 MB message limit."""
    import hashlib
    import os

    from core.records import PAYLOAD_LIMIT

    garbage_900k, garbage_2m = os.urandom(900 * 1024), os.urandom(2 * 2**20)
    bomb = bytes(cramjam.snappy.compress_raw(b"\0" * (40 * 2**20)))
    res = asyncio.run(_post_all(settings, [(garbage_900k, HEADERS), (garbage_2m, HEADERS), (bomb, HEADERS)]))
    assert [s for s, _ in res[:-1]] == [400, 400, 400], res[:-1]
    assert "exceeds the 8388608-byte limit" in res[2][1]
    dead = {d["size"]: d for _, d in read_topic(settings.kafka, settings.topic("deadletter"))}
    assert sorted(dead) == sorted(len(b) for b in (garbage_900k, garbage_2m, bomb))
    for body in (garbage_900k, garbage_2m, bomb):
        d = dead[len(body)]
        assert d["truncated"] is True and d["sha256"] == hashlib.sha256(body).hexdigest()
        assert d["encoding"] == "base64" and len(d["payload"]) <= PAYLOAD_LIMIT * 4 // 3 + 4
    assert 'kubesight_metrics_remote_write_requests_total{code="400"} 3.0' in res[-1][1]


@pytest.mark.kafka
def test_kafka_unavailable_answers_503_so_the_sender_retries(settings):
    res = asyncio.run(_post_all(settings, [(encode(request_from_page("up 1\n", 1000)), HEADERS)],
                                stop_sink_first=True, kafka_timeout=1.0))
    assert res[0][0] == 503 and res[0][1].startswith("Kafka unavailable")
    assert 'kubesight_metrics_remote_write_requests_total{code="503"} 1.0' in res[1][1]


def test_decode_limits_and_duplicates():
    big = WriteRequest()
    ts = big.timeseries.add()
    ts.labels.add(name="__name__", value="x" * 5000)
    with pytest.raises(PayloadError, match=r"^decompressed size 50\d\d exceeds the 1024-byte limit$"):
        decode(encode(big), max_bytes=1024)
    dup = WriteRequest()
    ts = dup.timeseries.add()
    for k, v in (("__name__", "a"), ("job", "1"), ("job", "2")):
        ts.labels.add(name=k, value=v)
    with pytest.raises(PayloadError, match=r"^timeseries\[0\]: duplicate label 'job'$"):
        samples_of(decode(encode(dup)))
    far = WriteRequest()  # nanoseconds sent as milliseconds: refused (400, dead letter), not a 503 retried for ever
    ts = far.timeseries.add()
    ts.labels.add(name="__name__", value="up")
    ts.samples.add(value=1.0, timestamp=1627984800000000000)
    with pytest.raises(PayloadError, match=r"^timeseries\[0\] \('up'\): timestamp 1627984800000000000 ms is not a "
                                           r"time of years 1-9999$"):
        samples_of(decode(encode(far)))


@pytest.mark.kafka
def test_a_configured_token_is_required(settings):
    body = encode(request_from_page("up 1\n", 1000))
    res = asyncio.run(_post_all(settings, [(body, HEADERS), (body, {**HEADERS, "Authorization": "Bearer nope"}),
                                           (body, {**HEADERS, "Authorization": "Bearer t2"})], tokens=["t1", "t2"]))
    assert [s for s, _ in res[:3]] == [401, 401, 204]
    assert len(read_topic(settings.kafka, settings.topic("samples"))) == 2


def test_staleness_markers_are_left_out():
    import struct

    req = WriteRequest()
    ts = req.timeseries.add()
    ts.labels.add(name="__name__", value="up")
    stale = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
    for t, v in ((1000, 1.0), (2000, float("nan")), (3000, stale)):
        ts.samples.add(value=v, timestamp=t)
    got = samples_of(decode(encode(req)))
    assert [s.time for s in got] == [1.0, 2.0] and got[1].value != got[1].value


def test_metric_names_from_the_input_make_at_most_a_thousand_series_of_self_metrics():
    """A native histogram per new metric name made a child of kubesight_metrics_remote_write_series_skipped per name
    for ever (an audit: 100,000); past 1,000 names they are counted as name="other"."""
    from collectors.metrics.remote_write import Intake
    from collectors.metrics.scrape import SelfMetrics

    metrics = SelfMetrics()
    intake = Intake(None, metrics)
    for i in range(1500):
        intake._skipped_to_say([(f"h{i}", "native histograms are not supported")], float(i))
    names = {s.labels["name"] for m in metrics.registry.collect() if m.name.endswith("series_skipped")
             for s in m.samples if s.name.endswith("_total")}
    assert len(names) == 1001 and "other" in names and "h0" in names and "h1499" not in names
    other = metrics.registry.get_sample_value("kubesight_metrics_remote_write_series_skipped_total", {"name": "other"})
    assert other == 500


def test_the_intake_s_labels_are_added_where_a_series_has_none_and_never_overwrite_the_sender_s():
    """As Prometheus' external_labels: a federating Prometheus sends queue_depth for cluster "a" and "b"; the intake's
    ``labels: {cluster: production}`` made both "production", one series whose values alternated 1, 999, 1, ...
    (a threshold on it read mixed data, and two points at one time were one)."""
    req = WriteRequest()
    for cluster, value in (("a", 1.0), ("b", 999.0), ("", 5.0)):
        ts = req.timeseries.add()
        ts.labels.add(name="__name__", value="queue_depth")
        if cluster:
            ts.labels.add(name="cluster", value=cluster)
        ts.labels.add(name="job", value="q")
        ts.samples.add(value=value, timestamp=1000)
    got = samples_of(decode(encode(req)), {"cluster": "production", "region": "eu"})
    assert [(s.labels["cluster"], s.labels["region"], s.value) for s in got] == \
        [("a", "eu", 1.0), ("b", "eu", 999.0), ("production", "eu", 5.0)]
    assert len({s.series() for s in got}) == 3
