"""Alertmanager 0.25 runs more than the message fields through its templates: PagerDuty's severity, class and
details, VictorOps' routing key (in the URL), email's recipients and headers, Opsgenie's responders, details and
priority, Slack's channel, colour and fields, SNS attributes, WeChat's recipients, Pushover's priority ...
(alerts.config.GO_FIELDS).  An audit against Alertmanager 0.25 found kubesight sending those as literal
"{{ ... }}" text, or dropping them for its default; each is checked here against a REAL local server, and a
template left unrun anywhere is a warning at load."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtpd.controller import Controller

from alerts.config import load_text
from alerts.gotemplate import GoText
from alerts.receivers import Receivers
from core.yamlconfig import ConfigError
from tests.alerts.amtools import free_port
from tests.alerts.test_receivers_more import deliver
from tests.alerts.test_receivers_services import note

pytestmark = pytest.mark.usefixtures("amtemplate")

NS = "{{ .CommonLabels.namespace }}"
# the note's alerts are "warning": a template that turns it into something kubesight's default would not send
SEV = '{{ if eq .CommonLabels.severity "warning" }}critical{{ else }}info{{ end }}'


def test_pagerduty_v2_payload_fields_and_details_are_run():
    server, outs = deliver(
        f"    pagerduty_configs: [{{routing_key: RK, url: '{{url}}/v2/enqueue', severity: '{SEV}',\n"
        f"      class: '{{{{ .CommonLabels.alertname }}}}', component: '{NS}', group: 'grp-{NS}',\n"
        f"      source: '{NS}-cluster', client: '{{{{ .Receiver }}}} pager', client_url: 'http://ks/{NS}',\n"
        f"      details: {{ns: '{NS}', num: '{{{{ len .Alerts }}}}', plain: 'costs $5'}}}}]\n",
        [note("firing")], ["ok"])
    assert [o.ok for o in outs] == [True]
    b = server.accepted[0]["body"]
    p = b["payload"]
    assert (p["severity"], p["class"], p["component"], p["group"], p["source"]) == (
        "critical", "KubePodCrashLooping", "shop", "grp-shop", "shop-cluster")
    assert (b["client"], b["client_url"]) == ("team pager", "http://ks/shop")
    # a plain value is sent as written ("$" is text there, as in Alertmanager), a template is run
    assert (p["custom_details"]["ns"], p["custom_details"]["num"], p["custom_details"]["plain"]) == (
        "shop", "2", "costs $5")


def test_pagerduty_v1_details_and_v2_links_are_run():
    server, outs = deliver(
        f"    pagerduty_configs:\n"
        f"      - {{service_key: SK, url: '{{url}}/generic/2010-04-15/create_event.json', client: 'c-{NS}',\n"
        f"         details: {{ns: '{NS}'}}}}\n"
        f"      - {{routing_key: RK, url: '{{url}}/v2/enqueue', links: [{{href: 'http://runbooks/{NS}', text: '{NS}'}}]}}\n",
        [note("firing")], ["ok", "ok"])
    assert [o.ok for o in outs] == [True, True]
    v1 = next(a["body"] for a in server.accepted if "create_event" in a["path"])
    v2 = next(a["body"] for a in server.accepted if a["path"] == "/v2/enqueue")
    assert (v1["details"]["ns"], v1["client"]) == ("shop", "c-shop")
    assert v2["links"] == [{"href": "http://runbooks/shop", "text": "shop"}]


def test_victorops_routing_key_in_the_url_message_type_and_custom_fields_are_run():
    server, outs = deliver(
        f"    victorops_configs: [{{api_key: VOKEY, api_url: '{{url}}/vo/', routing_key: 'team-{NS}',\n"
        "      message_type: '{{ if eq .CommonLabels.severity \"warning\" }}WARNING{{ else }}CRITICAL{{ end }}',\n"
        f"      monitoring_tool: 'ks-{NS}', custom_fields: {{ns: '{NS}'}}}}]\n",
        [note("firing"), note("resolved")], ["ok", "ok"])
    assert [o.ok for o in outs] == [True, True]
    fire, res = server.accepted
    assert fire["path"] == res["path"] == "/vo/VOKEY/team-shop"  # the team picked per notification
    b = fire["body"]
    assert (b["message_type"], b["monitoring_tool"], b["ns"]) == ("WARNING", "ks-shop", "shop")
    assert res["body"]["message_type"] == "RECOVERY"


class _Sink:
    def __init__(self):
        self.got = []

    async def handle_DATA(self, server, session, envelope):
        self.got.append((envelope.mail_from, envelope.rcpt_tos, envelope.content.decode()))
        return "250 OK"


def test_email_recipients_from_and_headers_are_run():
    sink = _Sink()
    ctl = Controller(sink, hostname="127.0.0.1", port=free_port())
    ctl.start()
    try:
        rcv = Receivers(load_text(
            f"route: {{receiver: team}}\nreceivers:\n  - name: team\n    email_configs:\n"
            f"      - {{to: '{NS}@example.org, lead@example.org', from: 'alerts-{NS}@example.org',\n"
            f"         smarthost: '127.0.0.1:{ctl.port}', require_tls: false, timeout: 2s,\n"
            f"         headers: {{Subject: 'ALERT {{{{ .CommonLabels.alertname }}}}', X-Team: '{NS}'}}}}\n"))

        async def go():
            import aiohttp

            async with aiohttp.ClientSession() as session:
                return [o for _, o in await rcv.notify(session, note("firing"))]

        assert [o.ok for o in asyncio.run(go())] == [True]
    finally:
        ctl.stop()
    ((sender, rcpts, data),) = sink.got
    assert (sender, rcpts) == ("alerts-shop@example.org", ["shop@example.org", "lead@example.org"])
    headers = dict(line.split(": ", 1) for line in data.split("\n\n")[0].replace("\r", "").split("\n") if ": " in line)
    assert (headers["Subject"], headers["X-Team"], headers["To"], headers["From"]) == (
        "ALERT KubePodCrashLooping", "shop", "shop@example.org, lead@example.org", "alerts-shop@example.org")


@pytest.mark.parametrize("extra", ["", ", entity: 'e-{NS}', note: 'n-{NS}', actions: 'a,{NS}'"])
def test_opsgenie_responders_details_priority_tags_and_source_are_run(extra):
    server, outs = deliver(
        f"    opsgenie_configs: [{{api_key: OGKEY, api_url: '{{url}}/', source: 'src-{NS}',\n"
        "      priority: '{{ if eq .CommonLabels.severity \"warning\" }}P2{{ else }}P1{{ end }}',\n"
        f"      tags: 'k8s,{NS}', details: {{ns: '{NS}'}}{extra.format(NS=NS)},\n"
        f"      responders: [{{name: '{NS}-team', type: team}}, {{username: '{NS}@example.org', type: user}}]}}]\n",
        [note("firing"), note("resolved")], ["ok", "ok"])
    assert [o.ok for o in outs] == [True, True]
    create, close = (a["body"] for a in server.accepted)
    assert create["responders"] == [{"name": "shop-team", "type": "team"},
                                    {"username": "shop@example.org", "type": "user"}]
    assert (create["details"]["ns"], create["priority"], create["tags"], create["source"]) == (
        "shop", "P2", ["k8s", "shop"], "src-shop")
    if extra:  # the further fields (receivers_more's Opsgenie)
        assert (create["entity"], create["note"], create["actions"]) == ("e-shop", "n-shop", ["a", "shop"])
    assert close["source"] == "src-shop"


def test_slack_channel_color_fields_actions_and_title_link_are_run():
    server, outs = deliver(
        f"    slack_configs:\n"
        f"      - {{api_url: '{{url}}/fields', channel: '#{NS}-alerts', username: 'am-{NS}',\n"
        "         color: '{{ if eq .Status \"firing\" }}#ff0000{{ else }}#00ff00{{ end }}',\n"
        f"         icon_emoji: ':{NS}:', title_link: 'http://grafana/{NS}',\n"
        f"         fields: [{{title: 'ns {NS}', value: '{{{{ len .Alerts.Firing }}}} pods'}}],\n"
        f"         actions: [{{type: button, text: 'open {NS}', url: 'http://x/{NS}'}}]}}\n"
        f"      - {{api_url: '{{url}}/plain', channel: '#{NS}'}}\n",
        [note("firing")], ["ok", "ok"])
    assert [o.ok for o in outs] == [True, True]
    fields = next(a["body"] for a in server.accepted if a["path"] == "/fields")
    plain = next(a["body"] for a in server.accepted if a["path"] == "/plain")
    att = fields["attachments"][0]
    assert (fields["channel"], fields["username"], fields["icon_emoji"]) == ("#shop-alerts", "am-shop", ":shop:")
    assert (att["color"], att["title_link"]) == ("#ff0000", "http://grafana/shop")
    assert att["fields"] == [{"title": "ns shop", "value": "2 pods", "short": False}]
    assert att["actions"] == [{"type": "button", "text": "open shop", "url": "http://x/shop"}]
    # kubesight's plain Slack message: the channel run too, and the title links back as Alertmanager's default does
    assert plain["channel"] == "#shop"
    assert plain["attachments"][0]["title_link"] == "http://kubesight.local/#/alerts?receiver=team"


def test_sns_attributes_wechat_recipients_and_pushover_fields_are_run():
    server, outs = deliver(
        f"    sns_configs: [{{topic_arn: 'arn:aws:sns:eu-west-1:1:alerts', api_url: '{{url}}/sns/',\n"
        f"      attributes: {{ns: '{NS}'}}, sigv4: {{access_key: AK, secret_key: SK}}}}]\n"
        f"    wechat_configs: [{{api_secret: WS, corp_id: C1, api_url: '{{url}}/wx/', to_user: '{NS}',\n"
        f"      agent_id: '1000002'}}]\n"
        f"    pushover_configs: [{{user_key: UK, token: TK, api_url: '{{url}}/1/messages.json',\n"
        "      priority: '{{ if eq .Status \"firing\" }}1{{ else }}0{{ end }}', url_title: 'ns {{ .CommonLabels.namespace }}'}]\n",
        [note("firing")], ["ok"] * 4, replies={"gettoken": {"errcode": 0, "access_token": "AT"},
                                             "message/send": {"errcode": 0, "errmsg": "ok"}})
    assert [o.ok for o in outs] == [True, True, True]
    sns = next(a["body"] for a in server.accepted if a["path"] == "/sns/")
    wx = next(a["body"] for a in server.accepted if a["path"].endswith("message/send"))
    po = next(a["body"] for a in server.accepted if a["path"] == "/1/messages.json")
    assert sns["MessageAttributes.entry.1.Value.StringValue"] == "shop"
    assert (wx["touser"], wx["agentid"]) == ("shop", "1000002")
    assert "toparty" not in wx and "totag" not in wx  # empty: not sent (omitempty in Alertmanager's)
    assert (po["priority"], po["url_title"]) == ("1", "ns shop")


def test_telegram_turns_link_previews_off_as_alertmanager_does():
    server, outs = deliver("    telegram_configs: [{bot_token: '1:T', chat_id: 42, api_url: '{url}'}]\n",
                           [note("firing")], [{"ok": True, "result": {}}])
    b = server.accepted[0]["body"]
    assert b["disable_web_page_preview"] is True and "disable_notification" not in b  # omitted unless set


# ---------------------------------------------------------------- the loader

RCV = "route: {receiver: r}\nreceivers:\n  - name: r\n"


def test_go_fields_are_loaded_as_templates_and_checked_with_their_place():
    cfg = load_text(RCV + f"    pagerduty_configs: [{{routing_key: k, severity: '{SEV}', details: {{ns: '{NS}'}}}}]\n",
                    "routing.yaml")
    c = cfg.receivers[0].pagerduty_configs[0]
    assert isinstance(c.severity, GoText) and isinstance(c.details["ns"], GoText) and cfg.warnings == []
    with pytest.raises(ConfigError) as exc:
        load_text(RCV + "    pagerduty_configs: [{routing_key: k, details: {ns: '{{ .CommonLabels.namespace '}}]\n",
                  "routing.yaml")
    assert exc.value.errors[0].startswith("routing.yaml:4: receivers[0].pagerduty_configs[0].details.ns: template: ")


def test_a_template_nothing_runs_is_warned():
    cfg = load_text(RCV + "    webhook_configs: [{url: 'http://hooks/{{ .Receiver }}'}]\n"
                    "    pushover_configs: [{user_key: u, token: '{{ .Receiver }}'}]\n", "routing.yaml")
    assert cfg.warnings == [
        "routing.yaml:4: receivers[0].webhook_configs[0].url: a Go template is not run in this field (neither "
        "kubesight nor Alertmanager runs one here); sent as written",
        "routing.yaml:5: receivers[0].pushover_configs[0].token: a Go template is not run in this field (neither "
        "kubesight nor Alertmanager runs one here); sent as written"]


def test_without_the_helper_a_go_field_is_warned(monkeypatch):
    monkeypatch.setenv("KUBESIGHT_AMTEMPLATE", "/nonexistent/kubesight-amtemplate")
    cfg = load_text(RCV + f"    pagerduty_configs: [{{routing_key: k, severity: '{SEV}', details: {{ns: '{NS}'}}}}]\n"
                    f"    victorops_configs: [{{api_key: k, routing_key: 'team-{NS}'}}]\n", "routing.yaml")
    pd, vo = cfg.receivers[0].pagerduty_configs[0], cfg.receivers[0].victorops_configs[0]
    assert pd.severity == "" and pd.details == {"ns": NS} and vo.routing_key == f"team-{NS}"
    need = "a Go template needs kubesight-amtemplate (make amtemplate); "
    assert cfg.warnings == [
        f"routing.yaml:4: receivers[0].pagerduty_configs[0].severity: {need}kubesight's default is used here",
        f"routing.yaml:4: receivers[0].pagerduty_configs[0].details.ns: {need}sent as written",
        f"routing.yaml:5: receivers[0].victorops_configs[0].routing_key: {need}sent as written"]


def test_a_label_with_a_carriage_return_is_one_line_in_the_email_and_a_sender_error_is_final_for_it_alone():
    """A namespace of "shop\\rBcc: x@evil.example" in the subject made the email library refuse the header: the whole
    notification was tried again every second for ever, and the receiver's webhook got it each time (196 times in an
    audit). The header is one line now; and a sender that raises on a note fails that integration only (its
    dead letter), not the notification."""
    import aiohttp
    from aiohttp import web

    from alerts import receivers as R

    sink = _Sink()
    ctl = Controller(sink, hostname="127.0.0.1", port=free_port())
    ctl.start()
    hooks: list[dict] = []

    async def go():
        async def hook(request):
            hooks.append(await request.json())
            return web.Response()

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        rcv = Receivers(load_text(
            f"route: {{receiver: team}}\nreceivers:\n  - name: team\n    email_configs:\n"
            f"      - {{to: ops@example.org, from: a@example.org, smarthost: '127.0.0.1:{ctl.port}',\n"
            f"         require_tls: false, timeout: 2s, headers: {{Subject: 'ALERT in {NS}'}}}}\n"
            f"    webhook_configs: [{{url: 'http://127.0.0.1:{port}/hook'}}]\n"))
        n = note("firing")
        for a in n["alerts"]:
            a["labels"]["namespace"] = "shop\rBcc: x@evil.example"
        n["groupLabels"]["namespace"] = "shop\rBcc: x@evil.example"
        try:
            async with aiohttp.ClientSession() as session:
                first = [(i.kind, o.ok) for i, o in await rcv.notify(session, n)]
                real = R.email_message

                def broken(*args, **kwargs):
                    raise RuntimeError("a sender's bug")

                R.email_message = broken
                try:
                    second = [(i.kind, o.ok, o.reason) for i, o in await rcv.notify(session, n)]
                finally:
                    R.email_message = real
        finally:
            await runner.cleanup()
        return first, second

    try:
        first, second = asyncio.run(go())
    finally:
        ctl.stop()
    assert sorted(first) == [("email", True), ("webhook", True)]
    ((_, rcpts, data),) = sink.got
    assert rcpts == ["ops@example.org"] and "Bcc" not in data.split("\n\n")[0].split("Subject:")[0]
    assert "Subject: ALERT in shop Bcc: x@evil.example" in data.replace("\r", "")
    assert sorted(second) == [("email", False, "sender error: RuntimeError: a sender's bug"), ("webhook", True, "")]
    assert len(hooks) == 2  # once per notify: the webhook is not sent again for the email's failure
