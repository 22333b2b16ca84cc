"""Receivers that echo what they were sent in a refusal: the reason (worker log, dead letters, receiver health,
the board) never carries a query value, a URL's password or the ``Basic`` credentials built from it.

A real local aiohttp server answers 401 quoting the ``token`` query value (as API gateways do), the
``Authorization`` header and the ``Proxy-Authorization`` header it got; delivery goes through the worker's own
session (``alerts.http1``) and, for userinfo and proxies, aiohttp.
"""

from __future__ import annotations

import asyncio
import base64

from aiohttp import web

from alerts import http1
from alerts.config import load_text
from alerts.receivers import Receivers
from tests.alerts.test_receivers import note


async def _echo(request: web.Request) -> web.Response:
    h = request.headers
    return web.Response(status=401, text=f"rejected token={request.query.get('token', '')} "
                                         f"auth={h.get('Authorization', '')} proxy={h.get('Proxy-Authorization', '')}")


def _reasons(urls: list[str], http_config: str = "{}") -> list[str]:
    async def go():
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", _echo)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        hooks = "".join(f'      - {{url: "{u}", http_config: {http_config}}}\n' for u in urls).replace("PORT", str(port))
        rcv = Receivers(load_text("route: {receiver: team}\nreceivers:\n  - name: team\n    webhook_configs:\n"
                                  + hooks))
        try:
            async with http1.DeliverySession() as session:
                return [out.reason for _, out in await rcv.notify(session, note(1))]
        finally:
            await runner.cleanup()

    return asyncio.run(go())


def test_a_query_value_echoed_back_is_redacted_as_written_and_decoded():
    got = _reasons(["http://127.0.0.1:PORT/hook?v=2&token=QUERYsecret0001",
                    "http://127.0.0.1:PORT/hook?token=PCT%2Bsecret0002"])
    assert got == ["HTTP 401: rejected token=<redacted> auth= proxy="] * 2


def test_a_urls_password_and_its_basic_header_echoed_back_are_redacted():
    basic = base64.b64encode(b"alice:USERINFO!pw0003").decode()
    (reason,) = _reasons(["http://alice:USERINFO%21pw0003@127.0.0.1:PORT/hook"])
    assert reason == "HTTP 401: rejected token= auth=Basic <redacted> proxy=" and basic not in reason


def test_a_proxy_urls_basic_header_echoed_back_is_redacted():
    """An http URL goes to the proxy as it is: this one answers for the receiver, quoting Proxy-Authorization."""
    (reason,) = _reasons(["http://hooks.example.invalid/hook"], "{proxy_url: 'http://bob:PROXYpw0004@127.0.0.1:PORT'}")
    assert reason == "HTTP 401: rejected token= auth= proxy=Basic <redacted>"


def test_short_query_values_are_not_secrets():
    """They would blank common words of every reason ("2", "json"); the whole query still is one."""
    rcv = Receivers(load_text("route: {receiver: team}\nreceivers:\n  - name: team\n    webhook_configs:\n"
                              "      - url: 'http://h/hook?v=2&format=json&key=LONGsecret05'\n"))
    (integ,) = rcv.integrations["team"]
    secrets = integ.secrets()
    assert "LONGsecret05" in secrets and "v=2&format=json&key=LONGsecret05" in secrets
    assert "2" not in secrets and "json" not in secrets


STATUS = """\
# routing for the demo cluster; old hook: https://hooks.example.com/services/T0/B0/OLDsecretCOMMENT1
route:
  receiver: team  # the default
receivers:
  - name: team
    webhook_configs:
      # rotated 2026-11-01
      - url: http://127.0.0.1:9/hook?token=NEWsecret2   # was ?token=OLDsecretTRAILING3
        http_config:
          basic_auth:
            username: u
            password: |  # from the vault, was OLDsecretHEADER4
              BLOCKsecret5
    email_configs:
      - {to: a@b.c, from: k@b.c, smarthost: '127.0.0.1:25',  # a mail relay
         auth_username: u, auth_password: !!str TAGGEDsecret6}
      - to: a@b.c
        from: k@b.c
        smarthost: 127.0.0.1:25
        html: |+  # kept as written, OLDsecretHEADER8
          kept # not a comment

#  OLDsecretKEEP7

    pagerduty_configs:
      - routing_key: &rk RKsecret8
        description: "a # in a string stays"
      - routing_key: *rk
"""


def test_the_status_original_has_no_comment_and_loads_as_the_config_with_its_secrets_replaced():
    """``/api/v2/status`` ``config.original`` (``amtool config show``): Alertmanager re-marshals its config, so no
    comment (where old tokens are kept) survives; a block scalar replaced keeps the line break after it."""
    import yaml

    shown = load_text(STATUS).original
    expected = yaml.safe_load(STATUS)
    r = expected["receivers"][0]
    r["webhook_configs"][0]["url"] = r["webhook_configs"][0]["http_config"]["basic_auth"]["password"] = "<secret>"
    r["email_configs"][0]["auth_password"] = "<secret>"
    r["pagerduty_configs"][0]["routing_key"] = r["pagerduty_configs"][1]["routing_key"] = "<secret>"
    assert yaml.safe_load(shown) == expected
    assert r["email_configs"][1]["html"] == "kept # not a comment\n\n"
    assert "secret" not in shown.replace("<secret>", "") and "old" not in shown.lower()
    assert shown.count("#") == 3  # in the block scalar, the bare one ending it, in the quoted string
