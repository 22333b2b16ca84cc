"""PagerDuty Events v2, Opsgenie, Microsoft Teams against a REAL local HTTP server that fails, stalls, answers
429/5xx; email against a REAL aiosmtpd server with STARTTLS (a test CA) and AUTH PLAIN / LOGIN."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

import aiohttp
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from alerts.config import load_text
from alerts.payload import key_hash
from alerts.receivers import Receivers
from core.yamlconfig import ConfigError
from tests import tlsfiles
from tests.alerts.amtools import free_port
from tests.alerts.webhook_server import ScriptedReceiver

KEY = "R0UTINGkeySECRET42"
FAILURES = ["reset", 500, "stall", 429, 503]


def note(status: str = "firing", n: int = 2) -> dict:
    alerts = [{"labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "severity": "warning",
                          "pod": f"cart-{i}"},
               "annotations": {"summary": f"cart-{i} restarts"}, "status": status,
               "startsAt": "2021-08-03T10:00:00.000Z", "endsAt": None if status == "firing" else
               "2021-08-03T10:05:00.000Z", "fingerprint": f"f{i}", "generatorURL": ""} for i in range(n)]
    return {"id": f"k-{status}", "receiver": "team", "groupKey": '{}:{alertname="KubePodCrashLooping", '
            'namespace="shop"}', "groupLabels": {"alertname": "KubePodCrashLooping", "namespace": "shop"},
            "status": status, "alerts": alerts}


RETRY = "    retry: {initial: 10ms, max_backoff: 50ms, budget: 30s}\n"


async def run(kind_yaml: str, notes: list[dict], script=None, server=None):
    """Notify ``notes`` through one receiver of ``kind_yaml`` (``{url}`` = the server's) against ``server``
    (a ScriptedReceiver of ``script`` unless given); returns the server and every delivery outcome."""
    server = server or ScriptedReceiver(list(script or []), stall=0.6)
    url = await server.start()
    try:
        rcv = Receivers(load_text("route: {receiver: team}\nreceivers:\n  - name: team\n"
                                  + kind_yaml.replace("{url}", url) + RETRY))
        outs = []
        async with aiohttp.ClientSession() as session:
            for n in notes:
                outs += [o for _, o in await rcv.notify(session, n)]
    finally:
        await server.stop()
    return server, outs


def test_pagerduty_events_v2_trigger_then_resolve_through_failures(caplog):
    caplog.set_level(logging.DEBUG)
    server, outs = asyncio.run(run(
        f"    pagerduty_configs: [{{routing_key: {KEY}, url: '{{url}}/v2/enqueue', timeout: 300ms,\n"
        "                         description: '$label_namespace: $title ($firing firing)'}]\n",
        [note("firing"), note("resolved")], FAILURES + FAILURES))
    assert all(o.ok for o in outs) and [o.attempts for o in outs] == [11, 1]
    trig, res = (a["body"] for a in server.accepted)
    assert [a["path"] for a in server.accepted] == ["/v2/enqueue"] * 2
    dedup = key_hash('{}:{alertname="KubePodCrashLooping", namespace="shop"}')
    assert trig["routing_key"] == KEY and trig["event_action"] == "trigger" and trig["dedup_key"] == dedup
    assert trig["payload"]["summary"] == "shop: [FIRING:2] KubePodCrashLooping shop (2 firing)"
    assert trig["payload"]["severity"] == "error" and trig["payload"]["source"] == "Alertmanager"
    assert trig["payload"]["custom_details"]["num_firing"] == "2"
    assert (res["routing_key"], res["dedup_key"], res["event_action"], res["payload"]["summary"]) == (
        KEY, dedup, "resolve", "shop: [RESOLVED] KubePodCrashLooping shop (0 firing)")
    assert KEY not in caplog.text and "retrying" in caplog.text


def test_opsgenie_create_and_close_by_alias_key_never_logged(caplog):
    caplog.set_level(logging.DEBUG)
    server, outs = asyncio.run(run(
        f"    opsgenie_configs: [{{api_key: {KEY}, api_url: '{{url}}/', priority: P2, tags: 'k8s, shop',\n"
        "                        message: '$label_alertname in $label_namespace', timeout: 300ms}]\n",
        [note("firing"), note("resolved")], FAILURES + [429]))
    assert all(o.ok for o in outs)
    create, close = server.accepted
    alias = key_hash('{}:{alertname="KubePodCrashLooping", namespace="shop"}')
    assert create["path"] == "/v2/alerts" and create["headers"]["Authorization"] == f"GenieKey {KEY}"
    b = create["body"]
    assert (b["message"], b["alias"], b["priority"], b["tags"]) == ("KubePodCrashLooping in shop", alias, "P2",
                                                                   ["k8s", "shop"])
    assert b["description"].count("\n") == 1 and "cart-1 restarts" in b["description"]
    assert close["path"] == f"/v2/alerts/{alias}/close" and close["query"] == "identifierType=alias"
    assert close["body"]["source"] == "kubesight"
    assert KEY not in caplog.text


def test_msteams_message_card_and_final_4xx_without_secret(tmp_path):
    (tmp_path / "hook").write_text("{url}/webhookb2/" + KEY)
    server, outs = asyncio.run(run(
        "    msteams_configs: [{webhook_url: '{url}/webhookb2/" + KEY + "', timeout: 300ms,\n"
        "                       title: '$status: $group', text: '$alerts'}]\n",
        [note("firing"), note("firing", 1)], ["stall", 502, "ok", 400]))
    ok, final = outs
    assert ok.ok and ok.attempts == 3
    card = server.accepted[0]["body"]
    assert card["@type"] == "MessageCard" and card["themeColor"] == "8C1A1A"
    assert card["title"] == "firing: alertname=KubePodCrashLooping namespace=shop"
    assert card["text"].splitlines()[0].startswith("FIRING KubePodCrashLooping (warning): cart-0 restarts")
    assert (final.ok, final.retryable, final.status) == (False, False, 400) and KEY not in final.reason


def test_template_errors_and_go_templates(amtemplate, monkeypatch):
    with pytest.raises(ConfigError) as exc:
        load_text("route: {receiver: r}\nreceivers:\n  - name: r\n    msteams_configs:\n"
                  "      - {webhook_url: 'http://x/y', title: '$podname'}\n", "routing.yaml")
    assert exc.value.errors == [
        'routing.yaml:5: receivers[0].msteams_configs[0].title: unknown template field "$podname" (use $status, '
        "$title, $alerts, $receiver, $group, $count, $firing, $resolved, $external_url, $label_NAME, "
        "$annotation_NAME)"]
    email = ("global: {smtp_smarthost: 'h:25', smtp_from: a@b.c}\nroute: {receiver: r}\nreceivers:\n"
             "  - name: r\n    email_configs:\n      - {to: x@y.z, html: '{{ template \"email.default.html\" . }}'}\n")
    cfg = load_text(email, "routing.yaml")
    html = cfg.receivers[0].email_configs[0].html
    assert html.html and html.files == () and cfg.warnings == []  # Alertmanager's own email.default.html, escaped
    monkeypatch.setenv("KUBESIGHT_AMTEMPLATE", "/nonexistent/kubesight-amtemplate")
    cfg = load_text(email, "routing.yaml")
    assert cfg.receivers[0].email_configs[0].html is None and cfg.receivers[0].email_configs[0].smarthost == "h:25"
    assert cfg.warnings == ["routing.yaml:6: receivers[0].email_configs[0].html: a Go template needs "
                            "kubesight-amtemplate (make amtemplate); kubesight's default is used here (its own "
                            "templates are $title, $alerts, $label_NAME ...)"]
    with pytest.raises(ConfigError) as exc:
        load_text("route: {receiver: r}\nreceivers:\n  - name: r\n    email_configs: [{to: x@y.z}]\n", "routing.yaml")
    assert exc.value.errors == [
        "routing.yaml:4: receivers[0].email_configs[0]: no from (set it here or global.smtp_from)",
        "routing.yaml:4: receivers[0].email_configs[0]: no smarthost (set it here or global.smtp_smarthost)"]


# ---------------------------------------------------------------- SMTP, a real aiosmtpd server

PASSWORD = "SMTPpassw0rdSECRET"


class Handler:
    """Answers DATA following ``script``: 'ok', a reply line (e.g. '451 ...'), or 'stall'."""

    def __init__(self, script):
        self.script = list(script)
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.tries = 0

    async def handle_DATA(self, server, session, envelope):
        self.tries += 1
        how = self.script.pop(0) if self.script else "ok"
        if how == "stall":
            await asyncio.sleep(1.5)
            return "451 too late"
        if how != "ok":
            return how
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.content))
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == b"alerts" and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smtp-tls")
    ca = tlsfiles.ca(folder)
    return ca, tlsfiles.signed(folder, ca, "smtp")


def smtp_server(certs, script, exclude: str):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs[1].cert, certs[1].key)
    handler = Handler(script)
    ctl = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=ctx, require_starttls=True,
                     authenticator=authenticator, auth_require_tls=True, auth_exclude_mechanism=[exclude])
    return ctl, handler


def email_receivers(certs, port: int, password=PASSWORD, ca=True) -> Receivers:
    ca_line = f"tls_config: {{ca_file: '{certs[0].cert}'}}, " if ca else ""
    return Receivers(load_text(f"""
global: {{smtp_smarthost: '127.0.0.1:{port}', smtp_from: alerts@kubesight.local, smtp_auth_username: alerts}}
route: {{receiver: team}}
receivers:
  - name: team
    email_configs:
      - {{to: 'oncall@example.org, lead@example.org', auth_password: '{password}', {ca_line}timeout: 1s,
         send_resolved: true, subject: '[$status] $label_alertname in $label_namespace'}}
    retry: {{initial: 10ms, max_backoff: 50ms, budget: 30s}}
"""))


async def _notify(rcv: Receivers, n: dict):
    async with aiohttp.ClientSession() as session:
        return [o for _, o in await rcv.notify(session, n)]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_email_starttls_auth_through_451_and_a_stall(certs, mechanism, caplog):
    caplog.set_level(logging.DEBUG)
    ctl, handler = smtp_server(certs, ["451 4.3.0 try again later", "stall"], "LOGIN" if mechanism == "PLAIN" else "PLAIN")
    ctl.start()
    try:
        (out,) = asyncio.run(_notify(email_receivers(certs, ctl.port), note("firing")))
        assert out.ok and out.attempts == 3, out
        deadline = time.monotonic() + 10
        while not handler.messages:  # the stalled attempt's reply comes after the client gave up
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        ctl.stop()
    assert handler.tries == 3
    sender, rcpts, content = handler.messages[-1]
    assert sender == "alerts@kubesight.local" and rcpts == ["oncall@example.org", "lead@example.org"]
    text = content.decode()
    assert "Subject: [firing] KubePodCrashLooping in shop" in text and "cart-1 restarts" in text
    assert PASSWORD not in caplog.text


def test_email_wrong_password_and_untrusted_cert_are_final_and_redacted(certs, caplog):
    ctl, handler = smtp_server(certs, [], "LOGIN")
    ctl.start()
    try:
        (bad,) = asyncio.run(_notify(email_receivers(certs, ctl.port, password="WRONGpassSECRET"), note()))
        (untrusted,) = asyncio.run(_notify(email_receivers(certs, ctl.port, ca=False), note()))
    finally:
        ctl.stop()
    assert (bad.ok, bad.retryable, bad.status, bad.attempts) == (False, False, 535, 1)
    assert "WRONGpassSECRET" not in bad.reason
    assert (untrusted.ok, untrusted.retryable, untrusted.attempts) == (False, False, 1)
    assert untrusted.reason.startswith("TLS: ") and handler.messages == []
    assert "WRONGpassSECRET" not in caplog.text and PASSWORD not in caplog.text
