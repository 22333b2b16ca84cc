"""Pushover, Splunk On-Call (VictorOps), WeChat, Amazon SNS, Telegram, Webex, Discord, PagerDuty v1 and
``http_config`` against a REAL local HTTP server that fails (connection reset, 5xx), stalls past the timeout
and answers 429: each request in its service's format, every secret kept out of logs and reasons (the server
echoes what it received in a 400 body, so a secret that is not redacted would show)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from urllib.parse import parse_qsl

import aiohttp
import orjson
from aiohttp import web

from alerts.config import load_text
from alerts.payload import key_hash
from alerts.receivers import Receivers
from tests.alerts.test_receivers_services import FAILURES, RETRY, certs, note  # noqa: F401 (certs: a fixture)
from tests.alerts.test_receivers_services import run as run_against
from tests.alerts.webhook_server import ScriptedReceiver

GROUP = key_hash('{}:{alertname="KubePodCrashLooping", namespace="shop"}')


class ServiceReceiver(ScriptedReceiver):
    """ScriptedReceiver that reads form bodies and GETs too, answers 'ok' with the service's JSON
    (``replies``: path suffix -> JSON), and takes two more steps: ``echo400`` (a final 400 whose body is
    the request it got, secrets and all), ``throttle400`` (AWS's rate limit) and ``403``; a dict step answers 200
    with that JSON."""

    def __init__(self, script, replies: dict | None = None):
        super().__init__(list(script), stall=0.6)
        self.replies = replies or {}
        self.seen: list[dict] = []  # every request that reached the handler, answered or not

    async def handle(self, request: web.Request) -> web.StreamResponse:
        how = self.script[0] if self.script else self.after
        if how not in ("ok", "echo400", "throttle400") and not isinstance(how, dict):
            self.seen.append({"path": request.path, "method": request.method})
            return await super().handle(request)
        if self.script:
            self.script.pop(0)
        self.requests += 1
        raw = await request.read()
        form = request.content_type == "application/x-www-form-urlencoded"
        body = dict(parse_qsl(raw.decode())) if form else (orjson.loads(raw) if raw else None)
        got = {"path": request.path, "query": request.query_string, "method": request.method, "body": body,
               "raw": raw, "headers": dict(request.headers)}
        self.seen.append(got)
        if how == "throttle400":  # AWS's rate limit answer
            return web.Response(status=400, content_type="text/xml", text="<ErrorResponse><Error><Type>Sender</Type>"
                                "<Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>")
        if how == "echo400":
            return web.Response(status=400, text=f"{request.headers.get('Authorization', '')} {request.method} "
                                                 f"{request.path_qs} {raw.decode()}")
        self.accepted.append(got)
        if isinstance(how, dict):
            return web.json_response(how)
        for suffix, reply in self.replies.items():
            if request.path.endswith(suffix):
                return web.json_response(reply)
        return web.Response(text="ok")


async def run(yaml: str, notes: list[dict], server: ServiceReceiver):
    return (await run_against(yaml, notes, server=server))[1]


def deliver(yaml: str, notes: list[dict], script, replies=None) -> tuple[ServiceReceiver, list]:
    server = ServiceReceiver(script, replies)
    return server, asyncio.run(run(yaml, notes, server))


def clean(secrets: list[str], outs, caplog) -> None:
    """No secret in any outcome's reason or any log line, and the echoed 400 did reach the reasons."""
    text = caplog.text + "\n".join(o.reason for o in outs)
    for s in secrets:
        assert s not in text, s
    assert "<redacted>" in text


# ---------------------------------------------------------------- Pushover

def test_pushover_form_post_through_failures_priority_by_status(caplog):
    caplog.set_level(logging.DEBUG)
    user, token = "uQiRzpo4DXghDmr9QzzfQu27cmVRsG", "azGDORePK8gMaC0QOYAMyEEuzJnyUi"
    server, outs = deliver(f"    pushover_configs: [{{user_key: {user}, token: {token}, api_url: '{{url}}/1/messages.json',"
                           "\n      sound: siren, timeout: 300ms, title: '$label_alertname in $label_namespace'}]\n",
                           [note("firing"), note("resolved"), note("firing", 1)], FAILURES + ["ok", "ok", "echo400"])
    assert [o.ok for o in outs] == [True, True, False] and outs[0].attempts == 6
    (fire, res), final = server.accepted, outs[2]
    assert fire["path"] == "/1/messages.json" and fire["headers"]["Content-Type"].startswith(
        "application/x-www-form-urlencoded")
    f = fire["body"]
    assert (f["token"], f["user"], f["title"], f["priority"], f["retry"], f["expire"], f["sound"]) == (
        token, user, "KubePodCrashLooping in shop", "2", "60", "3600", "siren")
    assert f["url"] == "http://kubesight.local" and f["message"].startswith("FIRING KubePodCrashLooping (warning)")
    assert res["body"]["priority"] == "0"  # resolved: a normal message, not an emergency
    assert (final.retryable, final.status) == (False, 400)
    clean([user, token], outs, caplog)


# ---------------------------------------------------------------- Splunk On-Call (VictorOps)

def test_victorops_key_in_path_entity_id_and_recovery(caplog):
    caplog.set_level(logging.DEBUG)
    key = "b3a1c4e2-7f1d-4a55-9d3c-0e5f6a7b8c9d"
    server, outs = deliver(f"    victorops_configs: [{{api_key: '{key}', api_url: '{{url}}/integrations/alert',"
                           "\n      routing_key: team-shop, message_type: WARNING, custom_fields: {cluster: prod},"
                           " timeout: 300ms}]\n", [note("firing"), note("resolved"), note("firing", 1)],
                           ["stall", 503, "ok", 429, "ok", "echo400"])
    assert [o.ok for o in outs] == [True, True, False] and [o.attempts for o in outs[:2]] == [3, 2]
    fire, res = server.accepted
    assert fire["path"] == f"/integrations/alert/{key}/team-shop"
    b = fire["body"]
    assert (b["message_type"], b["entity_id"], b["monitoring_tool"], b["cluster"]) == ("WARNING", GROUP, "kubesight",
                                                                                     "prod")
    assert b["entity_display_name"] == "[FIRING:2] KubePodCrashLooping shop" and "cart-1" in b["state_message"]
    assert res["body"]["message_type"] == "RECOVERY" and res["body"]["entity_id"] == GROUP
    clean([key], outs, caplog)


# ---------------------------------------------------------------- WeChat

def test_wechat_token_then_message_and_a_new_token_after_42001(caplog):
    caplog.set_level(logging.DEBUG)
    secret, token = "WeChatCorpSecret-0123456789", "ACCESS-token-abcdef987654"
    gettoken = {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200}
    server, outs = deliver(f"    wechat_configs: [{{api_secret: '{secret}', corp_id: ww1234, api_url: '{{url}}/cgi-bin',"
                           "\n      to_user: '@all', agent_id: '1000002', send_resolved: true, timeout: 300ms}]\n",
                           [note("firing"), note("resolved")],
                           [500, gettoken, "stall", {"errcode": 42001, "errmsg": "access_token expired"}, gettoken,
                            {"errcode": 0, "errmsg": "ok"}, {"errcode": 0, "errmsg": "ok"}])
    assert [o.ok for o in outs] == [True, True] and outs[0].attempts == 4 and outs[1].attempts == 1
    paths = [(r["method"], r["path"]) for r in server.seen]
    assert paths == [("GET", "/cgi-bin/gettoken"), ("GET", "/cgi-bin/gettoken"), ("POST", "/cgi-bin/message/send"),
                     ("POST", "/cgi-bin/message/send"), ("GET", "/cgi-bin/gettoken"),
                     ("POST", "/cgi-bin/message/send"), ("POST", "/cgi-bin/message/send")]
    first_get = server.accepted[0]
    assert first_get["query"] == f"corpid=ww1234&corpsecret={secret}"
    sent = server.accepted[-1]
    assert sent["query"] == f"access_token={token}"
    b = sent["body"]
    assert (b["msgtype"], b["touser"], b["agentid"], b["safe"]) == ("text", "@all", "1000002", "0")
    assert b["text"]["content"].startswith("[RESOLVED] KubePodCrashLooping shop\nRESOLVED KubePodCrashLooping")
    text = caplog.text + "\n".join(o.reason for o in outs)
    assert secret not in text and token not in text and "errcode 42001" in caplog.text


# ---------------------------------------------------------------- Amazon SNS (SigV4 by botocore)

def _verify_sigv4(got: dict, url: str, access_key: str, secret_key: str, region: str) -> bool:
    """Recompute the signature of the request AS RECEIVED (host, date, body) with botocore, from the secret."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    h = got["headers"]
    req = AWSRequest(method="POST", url=url, data=got["raw"],
                     headers={"Content-Type": h["Content-Type"], "X-Amz-Date": h["X-Amz-Date"], "Host": h["Host"]})
    req.context["timestamp"] = h["X-Amz-Date"]
    auth = SigV4Auth(Credentials(access_key, secret_key), "sns", region)
    canonical = auth.canonical_request(req)
    signature = auth.signature(auth.string_to_sign(req, canonical), req)
    expected = (f"AWS4-HMAC-SHA256 Credential={access_key}/{h['X-Amz-Date'][:8]}/{region}/sns/aws4_request, "
                f"SignedHeaders={auth.signed_headers(auth.headers_to_sign(req))}, Signature={signature}")
    return h["Authorization"] == expected


def test_sns_publish_signed_with_sigv4_through_failures(caplog):
    caplog.set_level(logging.DEBUG)
    ak, sk = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    arn = "arn:aws:sns:eu-west-1:123456789012:alerts.fifo"
    server, outs = deliver(f"    sns_configs: [{{topic_arn: '{arn}', api_url: '{{url}}/', attributes: {{team: shop}},"
                           f"\n      sigv4: {{access_key: {ak}, secret_key: '{sk}'}}, timeout: 300ms,"
                           "\n      subject: '[$status] $label_alertname'}]\n", [note("firing"), note("firing", 1)],
                           ["reset", 500, "stall", 429, "throttle400", "ok", "echo400"])
    assert [o.ok for o in outs] == [True, False] and outs[0].attempts == 6  # AWS's Throttling 400 retried
    (got,) = server.accepted
    assert _verify_sigv4(got, server.url + "/", ak, sk, "eu-west-1")  # region read from the topic's ARN
    p = got["body"]
    assert (p["Action"], p["Version"], p["TopicArn"], p["Subject"]) == ("Publish", "2010-03-31", arn,
                                                                     "[firing] KubePodCrashLooping")
    assert p["MessageGroupId"] == p["MessageDeduplicationId"] == GROUP  # a FIFO topic
    assert (p["MessageAttributes.entry.1.Name"], p["MessageAttributes.entry.1.Value.DataType"],
            p["MessageAttributes.entry.1.Value.StringValue"]) == ("team", "String", "shop")
    assert "cart-1 restarts" in p["Message"]
    tampered = dict(got, raw=got["raw"].replace(b"shop", b"shoq"))
    assert not _verify_sigv4(tampered, server.url + "/", ak, sk, "eu-west-1")  # the check can fail
    clean([sk, ak], outs, caplog)


def test_sns_sms_to_a_phone_number_is_cut_to_140_characters():
    from alerts.receivers_more import sns_params

    rcv = Receivers(load_text("route: {receiver: t}\nreceivers:\n  - name: t\n    sns_configs: [{phone_number: "
                              "'+15551234567', sigv4: {region: us-east-1, access_key: A, secret_key: S}}]\n"))
    (integ,) = rcv.integrations["t"]
    p = sns_params(integ, note("firing", 5), "http://ks")
    assert p["PhoneNumber"] == "+15551234567" and len(p["Message"]) == 140 and "Subject" not in p


# ---------------------------------------------------------------- Telegram

def test_telegram_bot_token_in_path_html_escaped(caplog):
    caplog.set_level(logging.DEBUG)
    bot = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    n = note("firing", 1)
    n["alerts"][0]["annotations"]["summary"] = "queue <orders> & retries > 5"
    server, outs = deliver(f"    telegram_configs: [{{bot_token: '{bot}', chat_id: -1001234567890, api_url: '{{url}}',"
                           "\n      disable_notifications: true, timeout: 300ms}]\n", [n, note("firing", 1)],
                           ["reset", 429, {"ok": True, "result": {}}, "echo400"])
    assert [o.ok for o in outs] == [True, False] and outs[0].attempts == 3
    (got,) = server.accepted
    assert got["path"] == f"/bot{bot}/sendMessage"
    b = got["body"]
    assert (b["chat_id"], b["parse_mode"], b["disable_notification"]) == (-1001234567890, "HTML", True)
    assert "queue &lt;orders&gt; &amp; retries &gt; 5" in b["text"]  # plain text made safe for HTML mode
    clean([bot], outs, caplog)


# ---------------------------------------------------------------- Webex

def test_webex_bearer_from_http_config_markdown_message(caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    cred = "NjE3ZjQ4YmUtYzI0Ni00ZWQ3LWJhYWMtWebexBotToken"
    (tmp_path / "webex").write_text(cred + "\n")
    server, outs = deliver("    webex_configs: [{room_id: Y2lzY29zcGFyazovL3VzL1JPT00v, api_url: '{url}/v1/messages',"
                           f"\n      http_config: {{authorization: {{credentials_file: '{tmp_path / 'webex'}'}}}},"
                           " timeout: 300ms}]\n", [note("firing"), note("firing", 1)], [502, "stall", "ok", "echo400"])
    assert [o.ok for o in outs] == [True, False] and outs[0].attempts == 3
    (got,) = server.accepted
    assert got["path"] == "/v1/messages" and got["headers"]["Authorization"] == f"Bearer {cred}"
    assert got["body"]["roomId"] == "Y2lzY29zcGFyazovL3VzL1JPT00v"
    assert got["body"]["markdown"].startswith("[FIRING:2] KubePodCrashLooping shop\n")
    clean([cred], outs, caplog)


# ---------------------------------------------------------------- Discord

def test_discord_embed_colours_and_webhook_url_secret(caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    path = "/api/webhooks/112233445566778899/Zm9vYmFyLWRpc2NvcmQtdG9rZW4tc2VjcmV0"
    (tmp_path / "hook").write_text("{url}" + path)
    server = ServiceReceiver(["reset", 503, "ok", "ok", "echo400"])

    async def go():
        url = await server.start()
        (tmp_path / "hook").write_text(url + path + "\n")
        try:
            rcv = Receivers(load_text("route: {receiver: team}\nreceivers:\n  - name: team\n    discord_configs:\n"
                                      f"      - {{webhook_url_file: '{tmp_path / 'hook'}', timeout: 300ms}}\n" + RETRY))
            async with aiohttp.ClientSession() as session:
                return [o for n in (note("firing"), note("resolved"), note("firing", 1))
                        for _, o in await rcv.notify(session, n)]
        finally:
            await server.stop()

    outs = asyncio.run(go())
    assert [o.ok for o in outs] == [True, True, False] and outs[0].attempts == 3
    fire, res = (a["body"]["embeds"] for a in server.accepted)
    assert server.accepted[0]["path"] == path
    assert fire[0]["color"] == 0x992D22 and res[0]["color"] == 0x2ECC71
    assert fire[0]["title"] == "[FIRING:2] KubePodCrashLooping shop" and "cart-0 restarts" in fire[0]["description"]
    clean(["Zm9vYmFyLWRpc2NvcmQtdG9rZW4tc2VjcmV0"], outs, caplog)


# ---------------------------------------------------------------- PagerDuty v1 and v2 images/links

def test_pagerduty_v1_service_key_retries_403_and_resolves(caplog):
    caplog.set_level(logging.DEBUG)
    key = "e93facc04764012d7bfb002500d5d1a6"
    server, outs = deliver(f"    pagerduty_configs: [{{service_key: {key}, url: '{{url}}/generic/2010-04-15/create_event.json',"
                           "\n      timeout: 300ms, details: {cluster: prod}}]\n", [note("firing"), note("resolved")],
                           [403, 500, "ok", "ok"])
    assert [o.ok for o in outs] == [True, True] and outs[0].attempts == 3  # 403 is v1's rate limit: retried
    fire, res = (a["body"] for a in server.accepted)
    assert (fire["service_key"], fire["incident_key"], fire["event_type"]) == (key, GROUP, "trigger")
    assert fire["description"] == "[FIRING:2] KubePodCrashLooping shop (warning)" and fire["client"] == "Alertmanager"
    assert fire["details"]["num_firing"] == "2" and fire["details"]["cluster"] == "prod"
    assert (res["event_type"], res["incident_key"]) == ("resolve", GROUP) and "client" not in res
    assert key not in caplog.text


def test_pagerduty_v2_images_and_links_on_trigger():
    server, outs = deliver("    pagerduty_configs: [{routing_key: R0UTINGkeySECRET42, url: '{url}/v2/enqueue',\n"
                           "      images: [{src: 'https://grafana/x.png', alt: graph}],\n"
                           "      links: [{href: 'https://runbooks/crashloop', text: runbook}]}]\n",
                           [note("firing"), note("resolved")], [])
    assert all(o.ok for o in outs)
    fire, res = (a["body"] for a in server.accepted)
    assert fire["images"] == res["images"] == [{"src": "https://grafana/x.png", "alt": "graph", "href": ""}]
    assert fire["links"] == [{"href": "https://runbooks/crashloop", "text": "runbook"}]
    assert fire["payload"]["summary"] == "[FIRING:2] KubePodCrashLooping shop (warning)" and res["links"] == fire["links"]


# ---------------------------------------------------------------- http_config on any HTTP receiver

def test_http_config_basic_auth_and_the_formats_own_authorization_wins(caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    (tmp_path / "pw").write_text("b4sicPassw0rdSECRET\n")
    server, outs = deliver(
        "    webhook_configs: [{url: '{url}/hook', timeout: 300ms, http_config: {basic_auth: {username: am,\n"
        f"      password_file: '{tmp_path / 'pw'}'}}}}}}]\n"
        "    opsgenie_configs: [{api_key: GenieKeySECRET77, api_url: '{url}/', http_config: {authorization:\n"
        "      {credentials: 'b3arerSECRETtoken'}}}]\n", [note("firing")], ["echo400"])
    by_path = {a["path"]: a for a in server.seen}
    import base64

    assert by_path["/hook"]["headers"]["Authorization"] == "Basic " + base64.b64encode(
        b"am:b4sicPassw0rdSECRET").decode()
    assert by_path["/v2/alerts"]["headers"]["Authorization"] == "GenieKey GenieKeySECRET77"
    assert sorted(o.ok for o in outs) == [False, True]
    clean(["b4sicPassw0rdSECRET", base64.b64encode(b"am:b4sicPassw0rdSECRET").decode()], outs, caplog)


def test_http_config_proxy_url_carries_the_request():
    """The request goes to proxy_url (a real local server standing in for the proxy), not to the host named."""
    proxy = ServiceReceiver([])

    async def go():
        purl = await proxy.start()
        try:
            rcv = Receivers(load_text("route: {receiver: team}\nreceivers:\n  - name: team\n    discord_configs:\n"
                                      "      - {webhook_url: 'http://discord.invalid/api/webhooks/1/tok',\n"
                                      f"         http_config: {{proxy_url: '{purl}'}}}}\n" + RETRY))
            async with aiohttp.ClientSession() as session:
                return [o for _, o in await rcv.notify(session, note("firing"))]
        finally:
            await proxy.stop()

    (out,) = asyncio.run(go())
    assert out.ok and proxy.accepted[0]["headers"]["Host"] == "discord.invalid"
    assert proxy.accepted[0]["body"]["embeds"][0]["color"] == 0x992D22


# ---------------------------------------------------------------- email: CRAM-MD5 with auth_secret

CRAM_SECRET = "cr4mMD5sharedSECRET"


class CramHandler:
    """An aiosmtpd handler offering CRAM-MD5 (RFC 2195): the client answers the challenge with an HMAC-MD5."""

    def __init__(self):
        self.messages: list[bytes] = []
        self.logins: list[str] = []

    async def auth_CRAM__MD5(self, server, args):  # noqa: N802 - aiosmtpd names mechanisms after the method
        from aiosmtpd.smtp import MISSING, AuthResult

        challenge = f"<{time.time_ns()}@kubesight.test>".encode()
        answer = await server.challenge_auth(challenge)
        if answer is MISSING:
            return AuthResult(success=False)
        user, _, digest = answer.decode().rpartition(" ")
        ok = user == "alerts" and hmac.compare_digest(digest, hmac.new(CRAM_SECRET.encode(), challenge,
                                                                       hashlib.md5).hexdigest())
        if ok:
            self.logins.append(user)
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append(envelope.content)
        return "250 OK"


def test_email_auth_secret_logs_in_with_cram_md5(certs, caplog):  # noqa: F811 - certs is the fixture
    import ssl

    from aiosmtpd.controller import Controller

    from tests.alerts.amtools import free_port

    caplog.set_level(logging.DEBUG)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs[1].cert, certs[1].key)
    handler = CramHandler()
    ctl = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=ctx, require_starttls=True,
                     authenticator=lambda *a: False, auth_require_tls=True, auth_exclude_mechanism=["LOGIN", "PLAIN"])
    ctl.start()
    try:
        rcv = Receivers(load_text(f"""
global: {{smtp_smarthost: '127.0.0.1:{ctl.port}', smtp_from: alerts@kubesight.local}}
route: {{receiver: team}}
receivers:
  - name: team
    email_configs:
      - {{to: oncall@example.org, auth_username: alerts, auth_secret: '{CRAM_SECRET}', timeout: 2s,
         tls_config: {{ca_file: '{certs[0].cert}'}}}}
"""))

        async def go():
            async with aiohttp.ClientSession() as session:
                return [o for _, o in await rcv.notify(session, note("firing"))]

        (out,) = asyncio.run(go())
    finally:
        ctl.stop()
    assert out.ok, out
    assert handler.logins == ["alerts"] and b"cart-1 restarts" in handler.messages[0]
    assert CRAM_SECRET not in caplog.text


# ---------------------------------------------------------------- Slack's and Opsgenie's further fields

def test_slack_attachment_fields_actions_and_icons(caplog):
    caplog.set_level(logging.DEBUG)
    hook = "/services/T0000/B0000/XXXXslackSECRETxxxx"
    server, outs = deliver("    slack_configs:\n      - api_url: '{url}" + hook + "'\n        channel: '#shop'\n"
                           "        title: '$label_alertname ($firing)'\n        color: warning\n"
                           "        icon_emoji: ':fire:'\n        link_names: true\n        short_fields: true\n"
                           "        fields: [{title: cluster, value: prod}, {title: team, value: shop, short: false}]\n"
                           "        actions: [{type: button, text: Runbook, url: 'https://runbooks/crashloop'}]\n"
                           "        timeout: 300ms\n", [note("firing"), note("firing", 1)], [500, "stall", "ok", "echo400"])
    assert [o.ok for o in outs] == [True, False] and outs[0].attempts == 3
    (got,) = server.accepted
    b = got["body"]
    assert got["path"] == hook and (b["channel"], b["icon_emoji"], b["link_names"]) == ("#shop", ":fire:", True)
    (att,) = b["attachments"]
    assert (att["title"], att["color"], att["mrkdwn_in"]) == ("KubePodCrashLooping (2)", "warning",
                                                              ["fallback", "pretext", "text"])
    assert att["fields"] == [{"title": "cluster", "value": "prod", "short": True},
                             {"title": "team", "value": "shop", "short": False}]
    assert att["actions"] == [{"type": "button", "text": "Runbook", "url": "https://runbooks/crashloop"}]
    assert att["text"].startswith("FIRING KubePodCrashLooping (warning): cart-0 restarts")  # the default text
    clean(["XXXXslackSECRETxxxx"], outs, caplog)


def test_opsgenie_responders_entity_note_and_update_alerts():
    key = "GenieKeySECRET0042"
    server, outs = deliver(f"    opsgenie_configs: [{{api_key: {key}, api_url: '{{url}}/', entity: shop, note: 'from ks',\n"
                           "      actions: 'restart, page', update_alerts: true, timeout: 300ms,\n"
                           "      responders: [{name: SRE, type: Team}, {username: ana@example.org, type: user}]}]\n",
                           [note("firing"), note("resolved")], [429, "ok", 503, "ok", "ok", "ok"])
    assert [o.ok for o in outs] == [True, True] and outs[0].attempts == 3  # 429; create ok, update 503; all ok
    alias = GROUP
    paths = [(a["path"], a["query"]) for a in server.accepted]
    # the retry after the 503 on the message update starts over: create again (Opsgenie keys it by alias)
    assert paths == [("/v2/alerts", ""), ("/v2/alerts", ""), (f"/v2/alerts/{alias}/message", "identifierType=alias"),
                     (f"/v2/alerts/{alias}/description", "identifierType=alias"),
                     (f"/v2/alerts/{alias}/close", "identifierType=alias")]
    create = server.accepted[0]["body"]
    assert create["responders"] == [{"name": "SRE", "type": "team"}, {"username": "ana@example.org", "type": "user"}]
    assert (create["entity"], create["note"], create["actions"]) == ("shop", "from ks", ["restart", "page"])
    assert server.accepted[2]["body"] == {"message": create["message"]}
    assert server.accepted[3]["body"] == {"description": create["description"]}
    assert "responders" not in server.accepted[4]["body"]
    assert all(a["headers"]["Authorization"] == f"GenieKey {key}" for a in server.accepted)


def test_a_session_that_wraps_aiohttp_is_unwrapped():
    """Delivery may hand over its own session object (a lean client for plain webhooks) that exposes its
    aiohttp session as ``aiohttp()``: these kinds send through that."""

    class Wrapping:
        def __init__(self, inner):
            self.inner = inner

        def aiohttp(self):
            return self.inner

    server = ServiceReceiver([])

    async def go():
        url = await server.start()
        try:
            rcv = Receivers(load_text("route: {receiver: team}\nreceivers:\n  - name: team\n    discord_configs:\n"
                                      f"      - {{webhook_url: '{url}/api/webhooks/1/tok'}}\n"))
            async with aiohttp.ClientSession() as session:
                return [o for _, o in await rcv.notify(Wrapping(session), note("firing"))]
        finally:
            await server.stop()

    (out,) = asyncio.run(go())
    assert out.ok and server.accepted[0]["path"] == "/api/webhooks/1/tok"


# ---------------------------------------------------------------- http_config.oauth2: a token first

def test_oauth2_client_credentials_token_reused_until_refused(caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    import base64

    (tmp_path / "cs").write_text("cl1entSECRETvalue\n")
    tok = {"access_token": "AT-0001-secret-token", "token_type": "Bearer", "expires_in": 3600}
    tok2 = dict(tok, access_token="AT-0002-secret-token")
    # token 500 then ok; webhook reset then ok; 2nd note reuses the token; 3rd: 401 (dropped), 4th: new token
    server, outs = deliver("    webhook_configs:\n      - url: '{url}/hook'\n        timeout: 300ms\n"
                           "        http_config:\n          oauth2: {client_id: 'kube sight', client_secret_file: '"
                           + str(tmp_path / "cs") + "',\n            token_url: '{url}/oauth/token', scopes: [alerts, "
                           "write], endpoint_params: {audience: am}}\n",
                           [note("firing"), note("resolved"), note("firing", 1), note("firing", 1)],
                           [500, tok, "reset", "ok", "ok", 401, tok2, "echo400"])
    assert [o.ok for o in outs] == [True, True, False, False] and outs[0].attempts == 3
    assert (outs[2].status, outs[3].status) == (401, 400)
    paths = [a["path"] for a in server.seen]
    assert paths == ["/oauth/token", "/oauth/token", "/hook", "/hook", "/hook", "/hook", "/oauth/token", "/hook"]
    t = server.accepted[0]
    assert t["body"] == {"grant_type": "client_credentials", "scope": "alerts write", "audience": "am"}
    assert t["headers"]["Authorization"] == "Basic " + base64.b64encode(b"kube+sight:cl1entSECRETvalue").decode()
    assert [a["headers"]["Authorization"] for a in server.accepted[1:3]] == ["Bearer AT-0001-secret-token"] * 2
    assert server.seen[-1]["path"] == "/hook"
    clean(["cl1entSECRETvalue", "AT-0001-secret-token", "AT-0002-secret-token"], outs, caplog)
