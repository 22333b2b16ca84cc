"""Email's ``tls_config`` is built as every HTTP receiver's (``receivers_more.tls_context``): ``server_name``,
``min_version`` and ``max_version`` hold for STARTTLS too, against a REAL aiosmtpd server.  Email used to build
its own context, and a server_name was ignored (a certificate for mail.test failed against 127.0.0.1) as were
the versions (min_version TLS13 delivered over TLS 1.2)."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import pytest
from aiosmtpd.controller import Controller

from alerts.config import load_text
from alerts.receivers import Receivers
from tests import tlsfiles
from tests.alerts.amtools import free_port

NOTE = {"id": "n1", "receiver": "team", "status": "firing", "groupKey": "g", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "", "truncatedAlerts": 0,
        "alerts": [{"status": "firing", "labels": {"alertname": "X"}, "annotations": {},
                    "startsAt": "2026-01-01T00:00:00Z", "endsAt": None, "fingerprint": "f", "generatorURL": ""}]}


class Handler:
    def __init__(self):
        self.messages = 0

    async def handle_DATA(self, server, session, envelope):
        self.messages += 1
        return "250 OK"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA and a certificate for mail.test only (not 127.0.0.1, where the server listens)."""
    folder = tmp_path_factory.mktemp("smtp-name")
    ca = tlsfiles.ca(folder)
    return ca, tlsfiles.signed(folder, ca, "mail", sans="DNS:mail.test")


def deliver(certs, tls: str, *, server_min=None, server_max=None):
    """One notification (one attempt: no retry budget) to a STARTTLS server; its outcome and the messages it got."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs[1].cert, certs[1].key)
    if server_min:
        ctx.minimum_version = server_min
    if server_max:
        ctx.maximum_version = server_max
    handler = Handler()
    ctl = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=ctx, require_starttls=True)
    rcv = Receivers(load_text(f"""
global: {{smtp_smarthost: '127.0.0.1:{ctl.port}', smtp_from: a@x.org}}
route: {{receiver: team}}
receivers:
  - name: team
    email_configs: [{{to: b@x.org, send_resolved: true, tls_config: {{ca_file: '{certs[0].cert}', {tls}}}, timeout: 5s}}]
    retry: {{initial: 10ms, max_backoff: 10ms, budget: 0s}}
"""))

    async def send():
        async with aiohttp.ClientSession() as session:
            (out,) = [o for _, o in await rcv.notify(session, NOTE)]
            return out

    ctl.start()
    try:
        return asyncio.run(send()), handler.messages
    finally:
        ctl.stop()


def test_email_checks_the_certificate_against_server_name(certs):
    named, got = deliver(certs, "server_name: mail.test")
    assert named.ok and got == 1, named
    unnamed, got = deliver(certs, "")  # the certificate is not for 127.0.0.1: still refused without server_name
    assert not unnamed.ok and unnamed.reason.startswith("TLS: ") and got == 0, unnamed


def test_email_honours_min_and_max_version(certs):
    both12, got = deliver(certs, "server_name: mail.test, max_version: TLS12", server_max=ssl.TLSVersion.TLSv1_2)
    assert both12.ok and got == 1, both12
    too_old, got = deliver(certs, "server_name: mail.test, min_version: TLS13", server_max=ssl.TLSVersion.TLSv1_2)
    assert not too_old.ok and got == 0, too_old
    too_new, got = deliver(certs, "server_name: mail.test, max_version: TLS12", server_min=ssl.TLSVersion.TLSv1_3)
    assert not too_new.ok and got == 0, too_new


def test_one_builder_for_every_tls_config():
    """HTTP receivers and their oauth2 token requests build their context with the same helper as email (the
    token request's tls_config ignored min_version before)."""
    from alerts.config import HTTPConfig
    from alerts.receivers_more import http_options

    opts = http_options(HTTPConfig.model_validate({
        "tls_config": {"min_version": "TLS13"},
        "oauth2": {"client_id": "c", "client_secret": "s", "token_url": "https://t.example/token",
                   "tls_config": {"max_version": "TLS12"}}}))
    assert opts.ssl.minimum_version == ssl.TLSVersion.TLSv1_3
    assert opts.oauth2.ssl.maximum_version == ssl.TLSVersion.TLSv1_2
