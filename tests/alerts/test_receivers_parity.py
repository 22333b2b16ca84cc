"""PagerDuty and email against a REAL Alertmanager 0.25 on the same alerts, request by request: both send to the same
local servers (a PagerDuty Events v2 endpoint, an aiosmtpd server) and what each sent is compared.

An audit found kubesight's PagerDuty severity taken from the alerts' label (Alertmanager: ``error``), its resolve
events without their payload, images and links, its source not the client, its email text/plain only (Alertmanager
sends its HTML) and its default texts naming kubesight.  Where the Go template helper is built, a field left unset
is Alertmanager's default (``alerts.config.AM_DEFAULTS``); without it, kubesight's own texts, with the same shape.
"""

from __future__ import annotations

import asyncio
import email
import http.server
import json
import socket
import threading
import time
from email.message import Message

import aiohttp
import pytest
from aiosmtpd.controller import Controller

from alerts.config import load, load_text
from alerts.receivers import Receivers, email_message
from core.records import format_time
from tests.alerts.amtools import Alertmanager, free_port, wait_for

GROUP = '{}:{alertname="KubePodCrashLooping", namespace="shop"}'
AM_ROUTE = ("route: {receiver: team, group_by: [alertname, namespace], group_wait: 1s, group_interval: 1s,"
            " repeat_interval: 1h}\n")


class Capture:
    """A local HTTP server that records each JSON body posted (path, body) and answers as PagerDuty does."""

    def __init__(self):
        self.got: list[tuple[str, dict]] = []
        cap = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                cap.got.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "success"}')

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Capture:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mails:
    def __init__(self):
        self.got: list[Message] = []

    async def handle_DATA(self, server, session, envelope):
        self.got.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def alerts(started: float) -> list[dict]:
    return [{"labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "severity": "warning",
                        "pod": f"cart-{i}"}, "annotations": {"summary": f"cart-{i} restarts"},
             "startsAt": format_time(started)} for i in range(2)]


def note(status: str, sent: list[dict], ended: float) -> dict:
    return {"id": f"k-{status}", "receiver": "team", "groupKey": GROUP, "status": status,
            "groupLabels": {"alertname": "KubePodCrashLooping", "namespace": "shop"},
            "alerts": [dict(a, status=status, endsAt=None if status == "firing" else format_time(ended),
                            fingerprint=f"f{i}", generatorURL="") for i, a in enumerate(sent)]}


def both(receiver: str, tmp_path, count, n: int) -> None:
    """``receiver`` (YAML under ``- name: team``) fired then resolved by a real Alertmanager, then by kubesight's
    receivers on the same alerts: the first ``2 * n`` requests received are Alertmanager's, the next kubesight's
    (``count()``: how many were received so far; ``n``: how many one notification makes)."""
    started = time.time() - 60
    with Alertmanager(AM_ROUTE + "receivers:\n  - name: team\n" + receiver, tmp_path) as am:
        sent = alerts(started)
        am.post_alerts(sent)
        wait_for(lambda: count() >= n, 20, "Alertmanager's firing notification")
        ended = time.time() - 1
        am.post_alerts([dict(a, endsAt=format_time(ended)) for a in sent])
        wait_for(lambda: count() >= 2 * n, 20, "Alertmanager's resolved notification")
        external = f"http://{socket.gethostname()}:{am.port}"  # Alertmanager's own without --web.external-url
    rcv = Receivers(load_text(f"global: {{external_url: '{external}'}}\nroute: {{receiver: team}}\n"
                              "receivers:\n  - name: team\n" + receiver))

    async def go():
        async with aiohttp.ClientSession() as session:
            for status in ("firing", "resolved"):
                assert [o.ok for _, o in await rcv.notify(session, note(status, sent, ended))] == [True] * n

    asyncio.run(go())


def test_pagerduty_events_are_alertmanagers_trigger_and_resolve(amtemplate, tmp_path):
    with Capture() as cap:
        both(f"    pagerduty_configs:\n"
             f"      - {{routing_key: DEFAULTS, url: '{cap.url}/v2/enqueue',\n"
             f"         images: [{{src: 'http://grafana/x.png', alt: graph}}, {{alt: no-src}}],\n"
             f"         links: [{{href: 'http://runbooks/crashloop', text: runbook}}]}}\n"
             f"      - {{routing_key: SET, url: '{cap.url}/v2/enqueue', client: 'pager {{{{ .Receiver }}}}',\n"
             f"         description: '{{{{ .CommonLabels.alertname }}}} in {{{{ .CommonLabels.namespace }}}}',\n"
             f"         details: {{cluster: prod}}}}\n", tmp_path, lambda: len(cap.got), 2)
        by = {}
        for i, (path, body) in enumerate(cap.got):
            assert path == "/v2/enqueue"
            by.setdefault(("am", "ks")[i >= 4], {})[(body["routing_key"], body["event_action"])] = body
    assert sorted(by["am"]) == sorted(by["ks"]) == [("DEFAULTS", "resolve"), ("DEFAULTS", "trigger"),
                                                    ("SET", "resolve"), ("SET", "trigger")]
    for key, am in by["am"].items():
        assert by["ks"][key] == am, key
    # what the audit found, as Alertmanager sends it
    trigger, resolve, own = (by["ks"][k] for k in (("DEFAULTS", "trigger"), ("DEFAULTS", "resolve"), ("SET", "resolve")))
    assert trigger["payload"]["severity"] == "error"  # the alerts say "warning"
    assert resolve["payload"]["summary"] == "[RESOLVED] KubePodCrashLooping shop (warning)"
    assert resolve["images"] == [{"src": "http://grafana/x.png", "alt": "graph", "href": ""}]
    assert (trigger["client"], trigger["payload"]["source"]) == ("Alertmanager", "Alertmanager")
    assert (own["client"], own["payload"]["source"], own["payload"]["custom_details"]["cluster"]) == (
        "pager team", "pager team", "prod")


def parts(msg: Message) -> list[tuple[str, str]]:
    return [(p.get_content_type(), p.get_payload(decode=True).decode()) for p in msg.walk() if not p.is_multipart()]


def test_email_is_alertmanagers_html_with_text_only_where_set(amtemplate, tmp_path):
    mails = Mails()
    ctl = Controller(mails, hostname="127.0.0.1", port=free_port())
    ctl.start()
    try:
        both(f"    email_configs:\n"
             f"      - {{to: default@example.org, from: am@example.org, smarthost: '127.0.0.1:{ctl.port}',\n"
             f"         require_tls: false, send_resolved: true}}\n"
             f"      - {{to: text@example.org, from: am@example.org, smarthost: '127.0.0.1:{ctl.port}',\n"
             f"         require_tls: false, send_resolved: true, text: 'see the dashboard'}}\n",
             tmp_path, lambda: len(mails.got), 2)
    finally:
        ctl.stop()
    by = {}
    for i, m in enumerate(mails.got):
        by.setdefault(("am", "ks")[i >= 4], {})[(m["To"], m["Subject"])] = m
    assert sorted(by["am"]) == sorted(by["ks"]) == sorted(
        (to, f"{head} KubePodCrashLooping shop (warning)") for to in ("default@example.org", "text@example.org")
        for head in ("[FIRING:2]", "[RESOLVED]"))
    for key, am in by["am"].items():
        ks = by["ks"][key]
        assert ks.get_content_type() == am.get_content_type() == "multipart/alternative", key
        # the helper runs Alertmanager v0.35's email.tmpl: its one difference from 0.25's is this https
        got = [(t, body.replace("https://schema.org", "http://schema.org").rstrip()) for t, body in parts(ks)]
        assert got == [(t, body.rstrip()) for t, body in parts(am)], key
    assert [t for t, _ in parts(by["ks"][("text@example.org", "[RESOLVED] KubePodCrashLooping shop (warning)")])] \
        == ["text/plain", "text/html"]


# ---------------------------------------------------------------- without the helper: kubesight's texts, same shape

@pytest.fixture
def no_helper(monkeypatch):
    monkeypatch.setenv("KUBESIGHT_AMTEMPLATE", "/nonexistent/kubesight-amtemplate")


def test_without_the_helper_pagerduty_severity_source_and_resolve_are_alertmanagers(no_helper):
    with Capture() as cap:
        rcv = Receivers(load_text(f"route: {{receiver: team}}\nreceivers:\n  - name: team\n    pagerduty_configs:\n"
                                  f"      - {{routing_key: RK, url: '{cap.url}/v2/enqueue', client: pager,\n"
                                  "         links: [{href: 'http://runbooks/crashloop'}]}\n"))

        async def go():
            async with aiohttp.ClientSession() as session:
                for status in ("firing", "resolved"):
                    assert [o.ok for _, o in await rcv.notify(session, note(status, alerts(0.0), 60.0))] == [True]

        asyncio.run(go())
    (_, trigger), (_, resolve) = cap.got
    assert trigger["payload"]["severity"] == resolve["payload"]["severity"] == "error"
    assert (resolve["event_action"], resolve["client"], resolve["payload"]["source"]) == ("resolve", "pager", "pager")
    assert resolve["payload"]["summary"] == "[RESOLVED] KubePodCrashLooping shop"  # kubesight's $title
    assert resolve["payload"]["custom_details"]["num_resolved"] == 2
    assert resolve["links"] == [{"href": "http://runbooks/crashloop", "text": ""}]


def test_without_the_helper_email_is_kubesights_text_plain(no_helper):
    rcv = Receivers(load_text("route: {receiver: team}\nreceivers:\n  - name: team\n    email_configs:\n"
                              "      - {to: a@example.org, from: b@example.org, smarthost: 'h:25'}\n"))
    msg = email_message(rcv.integrations["team"][0], note("firing", alerts(0.0), 60.0), "http://ks")
    ((kind, text),) = parts(msg)
    assert kind == "text/plain" and text.startswith("[FIRING:2] KubePodCrashLooping shop\n")
    assert msg["Subject"] == "[FIRING:2] KubePodCrashLooping shop"


def test_a_templates_file_that_redefines_a_default_is_used_as_in_alertmanager(amtemplate, tmp_path):
    (tmp_path / "acme.tmpl").write_text('{{ define "pagerduty.default.client" }}acme {{ .Receiver }}{{ end }}\n')
    (tmp_path / "routing.yaml").write_text("templates: ['*.tmpl']\nroute: {receiver: team}\nreceivers:\n"
                                           "  - name: team\n    pagerduty_configs: [{routing_key: RK}]\n")
    integ = Receivers(load(tmp_path / "routing.yaml")).integrations["team"][0]
    body = json.loads(integ.request(note("resolved", alerts(0.0), 60.0), "http://ks", 0.0)[1])
    assert (body["client"], body["payload"]["source"], body["client_url"]) == (
        "acme team", "acme team", "http://ks/#/alerts?receiver=team")
