"""Scraping the real recorded pages from a local HTTP server into the real broker."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import orjson
import pytest
from aiokafka.partitioner import murmur2

from collectors.metrics.config import Relabel
from collectors.metrics.exposition import ExpositionError, parse
from collectors.metrics.produce import BatchProducer
from collectors.metrics.relabel import compile_rules
from collectors.metrics.scrape import Scraper, ScrapeTarget, SelfMetrics
from collectors.sink import AsyncKafkaSink
from core.records import decode, encode
from tests.collectors.test_metrics_helpers import PAGES, PageServer, read_topic

# points per page (OpenMetrics `_created` lines too: Prometheus stores them), each a sample, plus up,
# scrape_duration_seconds, scrape_samples_scraped, scrape_samples_post_metric_relabeling
COUNTS = {"apiserver": 22853, "etcd": 1461, "scheduler": 2334, "controller-manager": 2852, "cadvisor": 4621,
          "ksm": 1698, "node-exporter": 3027, "prometheus": 1857, "om-alltypes": 53, "om-histogram": 42,
          "dcgm": 38, "openshift": 125}


def _series(metric, /, **labels):
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{metric}{{{inner}}}".encode()


async def _scrape_all(data_dir, settings, targets_of):
    server = await PageServer(data_dir).start()
    sink = AsyncKafkaSink(settings.kafka, settings.topic)
    await sink.start()
    metrics = SelfMetrics()
    try:
        async with aiohttp.ClientSession() as session:
            scraper = Scraper(BatchProducer(sink), session, metrics, clock=lambda: 1782468900.0)
            targets = targets_of(server.base)
            results = await asyncio.gather(*(scraper.scrape_once(t) for t in targets))
            return dict(zip([t.job for t in targets], results, strict=True)), scraper, server
    finally:
        await sink.stop()
        await server.stop()


@pytest.mark.kafka
def test_every_real_page_becomes_one_sample_per_point(data_dir, settings):
    counts, scraper, server = asyncio.run(_scrape_all(
        data_dir, settings, lambda base: [ScrapeTarget(job=name, url=f"{base}/{name}") for name in PAGES]))
    assert counts == COUNTS
    got = read_topic(settings.kafka, settings.topic("samples"))
    by_job: dict[str, int] = {}
    values = {}
    for key, v in got:
        by_job[v["labels"]["job"]] = by_job.get(v["labels"]["job"], 0) + 1
        values[key] = v
    assert by_job == {job: n + 4 for job, n in COUNTS.items()}
    inst = server.base.removeprefix("http://")
    api = dict(subresource="/readyz", verb="GET", job="apiserver", instance=inst)  # its empty labels are none
    assert values[_series("apiserver_request_total", code="500", **api)]["value"] == 11
    assert values[_series("etcd_disk_wal_fsync_duration_seconds_bucket", le="0.002", job="etcd",
                          instance=inst)]["value"] == 815
    assert values[_series("scheduler_pending_pods", queue="unschedulable", job="scheduler",
                          instance=inst)]["value"] == 1
    # cAdvisor's empty labels (container="", image="" ...) are no labels, as in Prometheus
    cpu = values[_series("container_cpu_usage_seconds_total", cpu="total", id="/", job="cadvisor", instance=inst)]
    assert (cpu["value"], cpu["time"]) == (62.148052, "2026-06-26T10:14:35.486Z")  # the page's own timestamp
    assert values[_series("node_load1", job="node-exporter", instance=inst)]["value"] == 0.21
    # OpenShift federation: exposed job/instance kept as exported_*, millisecond timestamps honoured
    slow = [v for k, v in got if v["name"] == "etcd_server_slow_apply_total" and v["value"] == 8]
    assert len(slow) == 1 and slow[0]["labels"]["exported_job"] == "etcd"
    assert slow[0]["labels"]["exported_instance"] == "10.0.109.44:9979" and slow[0]["time"] == "2024-01-30T07:53:49.875Z"
    xid = [v for k, v in got if v["name"] == "DCGM_FI_DEV_XID_ERRORS"]
    assert [x["labels"]["modelName"] for x in xid][:1] == ["Tesla T4"] and xid[0]["value"] == 0
    ups = {v["labels"]["job"]: v["value"] for k, v in got if v["name"] == "up"}
    assert ups == {job: 1.0 for job in COUNTS}
    # the Accept header asks for OpenMetrics first, like Prometheus; pages came gzip-compressed
    assert server.seen_headers["etcd"]["Accept"].startswith("application/openmetrics-text")
    assert "gzip" in server.seen_headers["etcd"]["Accept-Encoding"]
    assert all(k == _series(v["name"], **v["labels"]) or not v["labels"] for k, v in got)
    # BatchProducer: Kafka's default partition for every key, values byte-identical to records.encode
    raw = read_topic(settings.kafka, settings.topic("samples"), raw=True)
    for part, key, value in raw[::97]:
        assert part == (murmur2(key) & 0x7FFFFFFF) % settings.partitions
        assert value == encode(decode(value)) or b'"value":"' in value  # non-finite: see below
    # non-finite values travel as "NaN"/"+Inf" (orjson would write null, which decode rejects)
    nan = [decode(v) for _, _, v in raw if b'"value":"NaN"' in v]
    inf = [decode(v) for _, _, v in raw if b'"value":"+Inf"' in v]
    assert len(nan) == 12 and all(s.value != s.value for s in nan)
    assert [s.name for s in inf] == ["rest_client_exec_plugin_ttl_seconds"] * 3 and inf[0].value == float("inf")


@pytest.mark.kafka
def test_bad_big_exploding_and_hanging_targets_fail_alone(data_dir, settings):
    async def main():
        server = await PageServer(data_dir, hang_seconds=30).start()
        sink = AsyncKafkaSink(settings.kafka, settings.topic)
        await sink.start()
        metrics = SelfMetrics()
        try:
            async with aiohttp.ClientSession() as session:
                scraper = Scraper(BatchProducer(sink), session, metrics, clock=lambda: 1782468900.0)
                b = server.base
                hang = ScrapeTarget(job="hang", url=f"{b}/hang", timeout=2.0)
                others = [ScrapeTarget(job="huge", url=f"{b}/huge", max_bytes=8 * 2**20),
                          ScrapeTarget(job="explode", url=f"{b}/explode", max_series=1000),
                          ScrapeTarget(job="bad", url=f"{b}/bad"),
                          ScrapeTarget(job="notoken", url=f"{b}/etcd", bearer_token_file="/nonexistent/token"),
                          ScrapeTarget(job="etcd", url=f"{b}/etcd")]
                hang_task = asyncio.ensure_future(scraper.scrape_once(hang))
                done = await asyncio.gather(*(scraper.scrape_once(t) for t in others))
                hang_pending = not hang_task.done()  # the others finished while the hanging one still waits
                await hang_task
                return done, hang_pending, scraper
        finally:
            await sink.stop()
            await server.stop()

    done, hang_pending, scraper = asyncio.run(main())
    assert done == [0, 0, 0, 0, 1461] and hang_pending
    errs = {tid.split("|")[0]: e for tid, e in scraper.last_error.items()}
    assert errs["hang"] == "no complete answer within 2s"
    assert errs["huge"] == "body exceeds the 8388608-byte limit"
    assert errs["explode"] == "5000 series exceed the per-target limit of 1000"
    assert errs["bad"].startswith("line 2: ") and errs["etcd"] == ""
    assert errs["notoken"] == "cannot read bearer_token_file /nonexistent/token: No such file or directory"
    assert scraper.metrics.registry.get_sample_value("kubesight_metrics_series_limit_exceeded_total",
                                                     {"job": "explode"}) == 1
    assert scraper.metrics.registry.get_sample_value("kubesight_metrics_scrapes_total",
                                                     {"job": "hang", "result": "timeout"}) == 1
    got = read_topic(settings.kafka, settings.topic("samples"))
    ups = {v["labels"]["job"]: v["value"] for _, v in got if v["name"] == "up"}
    assert ups == {"hang": 0, "huge": 0, "explode": 0, "bad": 0, "notoken": 0, "etcd": 1}
    dead = {d["where"]["job"]: d for _, d in read_topic(settings.kafka, settings.topic("deadletter"))}
    assert sorted(dead) == ["bad", "explode", "huge"]
    assert dead["bad"]["reason"].startswith("parse_error: line 2: ") and "broken{a=" in dead["bad"]["payload"]
    assert dead["explode"]["reason"] == "too_many_series: 5000 series exceed the per-target limit of 1000"
    assert dead["huge"]["reason"].startswith("too_large: ") and dead["huge"]["payload"].startswith("huge_series")


@pytest.mark.kafka
def test_bearer_token_is_sent_and_relabelling_applies(data_dir, settings, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    drop_go = compile_rules([Relabel(action="drop", regex="go_.*|process_.*"),
                             Relabel(action="keep", source_labels=["__name__", "queue"], regex="scheduler_pending_pods;.+|.*_total;")])
    counts, _, server = asyncio.run(_scrape_all(data_dir, settings, lambda b: [
        ScrapeTarget(job="scheduler", url=f"{b}/scheduler", bearer_token_file=str(token), keep=drop_go,
                     labels={"cluster": "ack-1"})]))
    assert server.seen_headers["scheduler"]["Authorization"] == "Bearer s3cret"
    got = [v for _, v in read_topic(settings.kafka, settings.topic("samples"))]
    names = {v["name"] for v in got}
    assert "go_goroutines" not in names and "scheduler_pending_pods" in names
    own = ("up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling")
    assert all(v["name"].endswith("_total") or v["name"] in ("scheduler_pending_pods", *own) for v in got)
    assert all(v["labels"]["cluster"] == "ack-1" for v in got)
    by_name = {v["name"]: v["value"] for v in got if v["name"] in own}
    # as Prometheus counts them: the page's points before relabelling, and what relabelling kept
    assert by_name["scrape_samples_post_metric_relabeling"] == counts["scheduler"] == len(got) - 4
    assert by_name["scrape_samples_scraped"] > counts["scheduler"]  # the page had more before relabelling


def test_hand_parser_agrees_with_prometheus_client(data_dir):
    """Sample for sample (prometheus_client renames counters without `_total`; compare names modulo that)."""
    from prometheus_client.parser import text_string_to_metric_families

    for name, (path, ctype) in PAGES.items():
        if ctype != "text/plain":
            continue
        text = (data_dir / path).read_text()
        mine = [(n, lab, v if v == v else "nan", ts) for n, lab, v, ts in parse(text).points]
        ref = [(s.name, s.labels, float(s.value) if s.value == s.value else "nan",
                None if s.timestamp is None else float(s.timestamp))
               for fam in text_string_to_metric_families(text) for s in fam.samples]
        assert len(mine) == len(ref) == COUNTS[name], name
        for a, b in zip(mine, ref, strict=True):
            if a != b:
                assert b[0] == a[0] + "_total" and a[1:] == b[1:], (name, a, b)


def test_openmetrics_exemplars_eof_and_created():
    text = ('# TYPE r counter\nr_total{s="a"} 2.0 # {trace="x"} 0.5 1.7e9\nr_created{s="a"} 1.7e9\n'
            '# TYPE h histogram\nh_bucket{le="+Inf"} 3\nh_sum -1.5\nh_count 3 1.7e9\n# EOF\n')
    page = parse(text, openmetrics=True)
    assert page.points == [("r_total", {"s": "a"}, 2.0, None), ("r_created", {"s": "a"}, 1.7e9, None),
                           ("h_bucket", {"le": "+Inf"}, 3.0, None),
                           ("h_sum", {}, -1.5, None), ("h_count", {}, 3.0, 1.7e9)]
    assert page.exemplars == 1 and page.types == {"r": "counter", "h": "histogram"}
    with pytest.raises(ExpositionError, match=r"^line 2: OpenMetrics page without '# EOF'$"):
        parse("# TYPE a gauge\na 1\n", openmetrics=True)
    with pytest.raises(ExpositionError, match=r"^line 3: content after '# EOF'$"):
        parse("a 1\n# EOF\nb 2\n", openmetrics=True)
    with pytest.raises(ExpositionError, match=r"^line 1: exemplars are only valid in OpenMetrics$"):
        parse('a 1 # {t="1"} 1\n')
    for ts in ("NaN", "+Inf", "1e300"):  # the whole scrape used to fail unnamed, its up sample with it
        with pytest.raises(ExpositionError, match=rf"^line 1: timestamp '{re.escape(ts)}' is not a time of years 1-9999$"):
            parse(f"a 1 {ts}\n# EOF\n", openmetrics=True)


@pytest.mark.parametrize("line, message", [
    ('x{a="1" 2', "line 1: expected ',' or '}' near '2'"),
    ('x{a="1",a="2"} 2', "line 1: duplicate label 'a'"),
    ("x", "line 1: no value in 'x'"),
    ("x 1 2 3", "line 1: expected 'value [timestamp]' after the name, got '1 2 3'"),
    ("x 1 soon", "line 1: invalid timestamp 'soon'"),
    ("x 1 1627984800000000000", "line 1: timestamp '1627984800000000000' is not a time of years 1-9999"),  # ns as ms
    ("x 1 " + "9" * 400, "line 1: invalid timestamp '" + "9" * 400 + "'"),  # OverflowError used to escape
    ("9x 1", "line 1: invalid metric name '9x'"),
    ("# TYPE x meter", "line 1: bad TYPE line '# TYPE x meter'"),
])
def test_malformed_lines_are_named(line, message):
    with pytest.raises(ExpositionError) as exc:
        parse(line + "\n")
    assert str(exc.value) == message


def test_escapes_and_odd_label_sets():
    page = parse('a{p="C:\\\\dir\\n",q="say \\"hi\\""} 1\nb{} 2\nc{x="}",} 3\nd{ y = "1" } +Inf\n')
    assert page.points == [("a", {"p": "C:\\dir\n", "q": 'say "hi"'}, 1.0, None), ("b", {}, 2.0, None),
                           ("c", {"x": "}"}, 3.0, None), ("d", {"y": "1"}, float("inf"), None)]
    assert orjson.loads(orjson.dumps(page.points[0][1]))["q"] == 'say "hi"'


@pytest.mark.kafka
def test_tls_targets_verify_against_the_configured_ca(data_dir, settings, tmp_path):
    import ssl
    import subprocess

    from aiohttp import web

    from collectors.metrics.config import TLS
    from collectors.metrics.scrape import ssl_context

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=kubesight-test",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)

    async def main():
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        app = web.Application()
        page = (data_dir / "datadog-integrations-fixtures/dcgm/metrics.txt").read_bytes()

        async def metrics(request):
            return web.Response(body=page, content_type="text/plain")

        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
        await site.start()
        url = f"https://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/metrics"
        sink = AsyncKafkaSink(settings.kafka, settings.topic)
        await sink.start()
        try:
            async with aiohttp.ClientSession() as session:
                scraper = Scraper(BatchProducer(sink), session)
                targets = [ScrapeTarget(job="with-ca", url=url, ssl=ssl_context(TLS(ca_file=str(cert)))),
                           ScrapeTarget(job="system-cas", url=url),
                           ScrapeTarget(job="skip-verify", url=url, ssl=ssl_context(TLS(insecure_skip_verify=True)))]
                counts = [await scraper.scrape_once(t) for t in targets]
                return counts, {t.job: scraper.last_error[t.id] for t in targets}
        finally:
            await sink.stop()
            await runner.cleanup()

    counts, errors = asyncio.run(main())
    assert counts == [38, 0, 38] and errors["with-ca"] == errors["skip-verify"] == ""
    assert errors["system-cas"].startswith("ClientConnectorCertificateError") and "CERTIFICATE_VERIFY_FAILED" in errors["system-cas"]


@pytest.mark.kafka
def test_a_target_that_discovery_drops_leaves_no_gauge_or_error_behind(data_dir, settings):
    from collectors.metrics.cli import _reconcile

    targets = lambda base: [ScrapeTarget(job=n, url=f"{base}/{n}") for n in ("dcgm", "om-alltypes")]  # noqa: E731
    _, scraper, server = asyncio.run(_scrape_all(data_dir, settings, targets))
    inst = server.base.removeprefix("http://")
    gauge = "kubesight_metrics_last_scrape_duration_seconds"
    reg = scraper.metrics.registry
    assert all(reg.get_sample_value(gauge, {"job": j, "instance": inst}) is not None for j in ("dcgm", "om-alltypes"))
    dcgm, om = targets(server.base)
    assert set(scraper.last_error) == {dcgm.id, om.id}

    async def drop_one():  # discovery lists only om-alltypes now: dcgm's scrape task goes, and what it left
        tasks = {dcgm.id: asyncio.create_task(asyncio.sleep(60)), om.id: asyncio.create_task(asyncio.sleep(60))}
        _reconcile(tasks, [om], scraper, asyncio.Event())
        for t in tasks.values():
            t.cancel()
        return tasks

    assert list(asyncio.run(drop_one())) == [om.id]
    assert reg.get_sample_value(gauge, {"job": "dcgm", "instance": inst}) is None
    assert reg.get_sample_value(gauge, {"job": "om-alltypes", "instance": inst}) is not None
    assert set(scraper.last_error) == {om.id}


def test_pages_are_read_and_labelled_as_prometheus_reads_them():
    """An audit against a real Prometheus 2.42 on the same pages (2026-11-29); each case was read differently."""
    from collectors.metrics.config import Relabel

    t = ScrapeTarget(job="j", url="http://h:1/metrics")

    def series(text: str, target=t):
        samples, scraped = Scraper(None, None).samples_of(target, text.encode(), False, 1_764_400_000.0)
        return sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in samples), scraped

    inst = ("instance", "h:1")
    # a taken exported_job makes exported_exported_job: two series, not one with two values
    assert series('m{job="x",exported_job="y"} 1\nm{job="x",exported_job="z"} 2\n')[0] == [
        ("m", (("exported_exported_job", "x"), ("exported_job", "y"), inst, ("job", "j")), 1.0),
        ("m", (("exported_exported_job", "x"), ("exported_job", "z"), inst, ("job", "j")), 2.0)]
    # an empty value is no label (cAdvisor's container="")
    assert series('m{a="",b="1"} 1\n')[0] == [("m", (("b", "1"), inst, ("job", "j")), 1.0)]
    # blanks are spaces or tabs, also between the name and its labels; a family typed twice is read
    assert series('m {a="1"} 1\nn\t2\n# TYPE m gauge\n# TYPE m gauge\nm{a="2"} 3\n')[0] == [
        ("m", (("a", "1"), inst, ("job", "j")), 1.0), ("m", (("a", "2"), inst, ("job", "j")), 3.0),
        ("n", (inst, ("job", "j")), 2.0)]
    # relabel regexes are Go's (RE2): a POSIX class keeps both; scrape_samples_scraped counts before relabelling
    keep = ScrapeTarget(job="j", url="http://h:1/metrics",
                        keep=compile_rules([Relabel(action="keep", source_labels=["code"], regex="[[:digit:]]00")]))
    kept, scraped = series('m{code="500"} 1\nm{code="200"} 2\nm{code="x"} 3\n', keep)
    assert ([s[1][0] for s in kept], scraped) == ([("code", "200"), ("code", "500")], 3)
    # what Prometheus refuses is refused: a label name that is not ASCII, a value Go's ParseFloat does not read
    for bad in ('m{café="1"} 1\n', "m 1_000\n", "m 1 1_700_000_000_000\n", "m \u0661\u0662\n"):
        with pytest.raises(ExpositionError):
            parse(bad)
