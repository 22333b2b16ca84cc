"""Outbound TLS is verified by default: a receiver with a self-signed (private CA) certificate is refused
unless its ``http_config.tls_config.ca_file`` names that CA; the request then arrives, over a real HTTPS server."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from alerts.config import load
from alerts.receivers import Receivers, send_once
from core import webconfig
from tests import tlsfiles


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = tlsfiles.ca(folder)
    return {"folder": folder, "ca": ca, "server": tlsfiles.signed(folder, ca, "receiver")}


def _routing(folder, port: int, tls: str) -> str:
    path = folder / f"routing-{abs(hash(tls))}.yaml"
    path.write_text("route: {receiver: hook}\nreceivers:\n  - name: hook\n    webhook_configs:\n"
                    f"      - url: https://127.0.0.1:{port}/hook\n{tls}")
    return str(path)


def test_a_receiver_is_verified_against_its_configured_ca_only(pki):
    async def scenario():
        got = []

        async def hook(request):
            got.append(await request.json())
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        server = webconfig.WebConfig.model_validate(
            {"tls_server_config": {"cert_file": str(pki["server"].cert), "key_file": str(pki["server"].key)}})
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server.ssl_context())
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        note = {"id": "n1", "receiver": "hook", "status": "firing", "groupLabels": {}, "commonLabels": {},
                "commonAnnotations": {}, "groupKey": "{}:{}", "alerts": [], "truncatedAlerts": 0}
        try:
            async with aiohttp.ClientSession(trust_env=True) as session:
                default = Receivers(load(_routing(pki["folder"], port, ""))).integrations["hook"][0]
                refused = await send_once(session, default, note, "http://kubesight")
                trusted = Receivers(load(_routing(pki["folder"], port, (
                    f"        http_config:\n          tls_config:\n            ca_file: {pki['ca'].cert}\n"))))
                accepted = await send_once(session, trusted.integrations["hook"][0], note, "http://kubesight")
        finally:
            await runner.cleanup()
        return refused, accepted, got

    refused, accepted, got = asyncio.run(scenario())
    assert not refused.ok and "certificate verify failed" in refused.reason.lower(), refused
    assert accepted.ok, accepted
    assert len(got) == 1
