"""A scrape target behind basic auth: by a password in the URL's userinfo, or by ``basic_auth`` with a
``password_file``.  Either way the target is scraped, and the password is in no label, log line, dead letter,
``--once`` table or self-metric (a secrets audit found it in all five: ``instance`` was the URL's netloc)."""

from __future__ import annotations

import asyncio
import base64
import io
import logging

import aiohttp
import pytest
from aiohttp import web

from collectors.metrics.cli import _once
from collectors.metrics.config import load
from collectors.metrics.scrape import Scraper, ScrapeTarget, SelfMetrics, from_config
from core.yamlconfig import ConfigError
from tests.realtools import serve_app

USER, PASSWORD = "scrapeuser", "SCRAPEsecretPW9"
PAGE = "# TYPE node_load1 gauge\nnode_load1 0.5\n"


class MemSink:
    """The async sink interface of ``AsyncKafkaSink``: what was produced and what was dead-lettered."""

    def __init__(self):
        self.samples, self.dead = [], []

    async def send_all(self, recs) -> None:
        self.samples += recs

    async def reject(self, reason, payload, *, origin, key=None, **where) -> None:
        self.dead.append((reason, where))


def _exporter() -> web.Application:
    """A local exporter that answers only ``scrapeuser:SCRAPEsecretPW9``: ``/metrics`` a good page, ``/bad`` one
    that does not parse (a dead letter)."""
    want = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    async def page(request):
        if request.headers.get("Authorization") != want:
            return web.Response(status=401, text="no")
        return web.Response(text=PAGE if request.path == "/metrics" else "node_load1{ 0.5\n")

    app = web.Application()
    app.router.add_get("/metrics", page)
    app.router.add_get("/bad", page)
    return app


async def _scrape(targets):
    """``targets(host:port of the exporter)`` scraped once each, as ``--once`` does: the sink, the scraper, the
    table, the exit code and the exporter's host:port."""
    async with serve_app(_exporter()) as base, aiohttp.ClientSession() as session:
        sink, address = MemSink(), base.removeprefix("http://")
        scraper = Scraper(sink, session, SelfMetrics(), clock=lambda: 1782468900.0)
        out = io.StringIO()
        down = await _once(scraper, targets(address), out)
        return sink, scraper, out.getvalue(), down, address


def test_a_password_in_the_url_scrapes_and_shows_nowhere(caplog):
    def targets(address):
        base = f"http://{USER}:{PASSWORD}@{address}"
        return [ScrapeTarget(job="node", url=f"{base}/metrics"), ScrapeTarget(job="bad", url=f"{base}/bad"),
                ScrapeTarget(job="wrong", url=f"http://{USER}:not-{PASSWORD}@{address}/metrics"),
                ScrapeTarget(job="badport", url=f"http://{USER}:{PASSWORD}@127.0.0.1:99999/metrics")]

    with caplog.at_level(logging.WARNING, logger="kubesight.metrics"):
        sink, scraper, table, down, address = asyncio.run(_scrape(targets))
    up = {s.labels["job"]: s.value for s in sink.samples if s.name == "up"}
    assert up == {"node": 1.0, "bad": 0.0, "wrong": 0.0, "badport": 0.0} and down == 1  # node is: userinfo is sent
    load1 = [s for s in sink.samples if s.name == "node_load1"]
    assert [(s.value, s.labels) for s in load1] == [(0.5, {"job": "node", "instance": address})]
    assert {s.labels["instance"] for s in sink.samples} == {address, "127.0.0.1:99999"}  # as Prometheus
    # the failure's log line and dead letter name the target, its password as Prometheus shows one
    shown = f"http://{USER}:xxxxx@{address}/bad"
    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) == 3 and any(m.startswith(f"scrape bad {shown} failed: line 1") for m in failed)
    # the HTTP client quotes a URL it cannot use, password and all: the message keeps the URL, not the password
    errors = {t.split("|")[0]: e for t, e in scraper.last_error.items()}
    assert errors["badport"] == f"InvalidUrlClientError: http://{USER}:xxxxx@127.0.0.1:99999/metrics"
    (reason, where), = sink.dead
    assert reason.startswith("parse_error: ") and where == {"url": shown, "job": "bad"}
    assert f"{USER}:xxxxx@{address}/bad" in table and "DOWN: HTTP 401" in table
    gauge = scraper.metrics.registry.get_sample_value("kubesight_metrics_last_scrape_duration_seconds",
                                                       {"job": "node", "instance": address})
    assert gauge is not None  # its instance label is host:port too
    from prometheus_client import generate_latest

    everything = [repr(sink.samples), repr(sink.dead), table, generate_latest(scraper.metrics.registry).decode(),
                  repr(scraper.last_error.values()), *(r.getMessage() for r in caplog.records)]
    assert not [text for text in everything if "SCRAPEsecretPW9" in text]


def test_basic_auth_with_a_password_file_scrapes(tmp_path):
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")  # a trailing newline, as `echo > file` writes it: trimmed, as Prometheus
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")

    def targets(address):
        cfg = tmp_path / "metrics.yaml"
        cfg.write_text(f"targets:\n"
                       f"  - job: node\n    url: http://{address}/metrics\n"
                       f"    basic_auth: {{username: {USER}, password_file: {secret}}}\n"
                       f"  - job: wrong\n    url: http://{address}/metrics\n"
                       f"    basic_auth: {{username: {USER}, password_file: {wrong}}}\n"
                       f"  - job: gone\n    url: http://{address}/metrics\n"
                       f"    basic_auth: {{username: {USER}, password_file: {tmp_path / 'missing'}}}\n")
        return from_config(load(str(cfg)))

    sink, scraper, table, down, address = asyncio.run(_scrape(targets))
    up = {s.labels["job"]: s.value for s in sink.samples if s.name == "up"}
    assert up == {"node": 1.0, "wrong": 0.0, "gone": 0.0}
    assert [s.labels for s in sink.samples if s.name == "node_load1"] == [{"job": "node", "instance": address}]
    errors = {t.split("|")[0]: e for t, e in scraper.last_error.items()}
    assert errors["wrong"] == "HTTP 401 Unauthorized"
    assert errors["gone"] == f"cannot read basic_auth.password_file {tmp_path / 'missing'}: No such file or directory"


def test_instance_is_host_and_port_as_written():
    labels = {u: ScrapeTarget(job="j", url=u).target_labels()["instance"] for u in (
        "http://u:p@h:9100/metrics", "http://h/metrics", "https://u:p@[fd00::1]:9100/m", "http://u@h:1/m")}
    assert list(labels.values()) == ["h:9100", "h", "[fd00::1]:9100", "h:1"]  # no port added where none is written


@pytest.mark.parametrize("target, message", [
    ("{job: a, url: 'http://u:pw@h:1/m', basic_auth: {username: u, password: x}}",
     "at most one of basic_auth, authorization, bearer_token & userinfo in url must be configured "
     "(got basic_auth & userinfo in url)"),
    ("{job: a, url: 'http://h:1/m', basic_auth: {username: u, password: x, password_file: /f}}",
     "at most one of basic_auth password & password_file must be configured"),
    ("{job: a, url: 'http://h:1/m', authorization: {type: Basic, credentials: x}}",
     'authorization type cannot be set to "basic", use "basic_auth" instead'),
    ("{job: a, url: 'http://h:1/m', authorization: {credentials: x}, bearer_token: y}",
     "(got authorization & bearer_token)"),
])
def test_auth_settings_are_exclusive(tmp_path, target, message):
    cfg = tmp_path / "metrics.yaml"
    cfg.write_text(f"targets:\n  - {target}\n")
    with pytest.raises(ConfigError) as err:
        load(str(cfg))
    assert message in str(err.value) and "targets[0]" in str(err.value)


def test_authorization_credentials_file_is_sent_and_named_files_are_checked(tmp_path):
    cred = tmp_path / "cred"
    cred.write_text("tok3n\n")
    cfg = tmp_path / "metrics.yaml"
    cfg.write_text(f"targets:\n  - {{job: a, url: 'http://h:1/m', authorization: {{type: Token, credentials_file: {cred}}}}}\n"
                   f"  - {{job: b, url: 'http://h:1/m', basic_auth: {{username: u, password_file: {tmp_path}/no}}}}\n")
    a = from_config(load(str(cfg)))[0]
    assert a.headers()["Authorization"] == "Token tok3n"
    with pytest.raises(ConfigError) as err:
        load(str(cfg), files=True)
    assert f"targets[1].basic_auth.password_file: cannot read {tmp_path}/no" in str(err.value)


def test_a_target_listed_twice_is_named_without_its_password(tmp_path):
    cfg = tmp_path / "metrics.yaml"
    cfg.write_text(f"targets:\n  - {{job: b, url: 'http://u:{PASSWORD}@h:1/m'}}\n"
                   f"  - {{job: b, url: 'http://u:{PASSWORD}@h:1/m'}}\n")
    with pytest.raises(ConfigError) as err:
        load(str(cfg))
    assert "targets[1]: target b http://u:xxxxx@h:1/m listed twice" in str(err.value)
    assert PASSWORD not in str(err.value)
