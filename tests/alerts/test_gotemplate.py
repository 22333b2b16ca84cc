"""Alertmanager's Go templates in message fields, run by Alertmanager's own template package (alerts.gotemplate)."""

import asyncio
import logging
import os

import aiohttp
import pytest

from alerts import gotemplate
from alerts.config import load
from alerts.receivers import Receivers
from alerts.sending import render
from core.yamlconfig import ConfigError
from tests.alerts.webhook_server import ScriptedReceiver

pytestmark = pytest.mark.usefixtures("amtemplate")

ROUTING = """
templates: ['tmpl/*.tmpl']
global: {{external_url: 'http://kubesight.example'}}
route: {{receiver: team}}
receivers:
  - name: team
    slack_configs:
      - api_url: {url}/slack
        title: '{{{{ template "slack.default.title" . }}}}'
        text: '{{{{ template "team.text" . }}}}'
        footer: '{{{{ index .Alerts 5 }}}}'
"""
TEAM = """{{ define "team.text" }}{{ range .Alerts.Firing }}* {{ .Labels.pod }}: {{ .Annotations.summary }}
{{ end }}{{ .ExternalURL }}{{ end }}"""


def note(*pods, status="firing"):
    return {"id": "n-" + "-".join(pods), "receiver": "team", "groupKey": "{}:{}", "groupLabels": {"alertname": "KubePodCrashLooping"},
            "status": status, "alerts": [
                {"labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": p},
                 "annotations": {"summary": f"{p} restarts"}, "status": status, "fingerprint": p,
                 "startsAt": "2026-11-28T10:00:00.000Z", "endsAt": None, "generatorURL": ""} for p in pods]}


def write(path, text, stamp):
    path.write_text(text)
    os.utime(path, ns=(stamp, stamp))


def test_slack_gets_alertmanagers_default_title_and_the_files_own_template(tmp_path, caplog):
    (tmp_path / "tmpl").mkdir()
    write(tmp_path / "tmpl" / "team.tmpl", TEAM, 1)

    async def go():
        slack = ScriptedReceiver()
        (tmp_path / "routing.yaml").write_text(ROUTING.format(url=await slack.start()))
        cfg = load(tmp_path / "routing.yaml")
        async with aiohttp.ClientSession() as session:
            (out,) = await Receivers(cfg).notify(session, note("cart-0", "cart-1"))
            assert out[1].ok
            # the template file edited: the next notification uses it as it is now
            write(tmp_path / "tmpl" / "team.tmpl", TEAM.replace("* ", "- "), 2)
            (out,) = await Receivers(cfg).notify(session, note("web-0"))
        await slack.stop()
        return [x["body"]["attachments"][0] for x in slack.accepted]

    with caplog.at_level(logging.WARNING, "kubesight.alerts"):
        first, second = asyncio.run(go())
    assert first["title"] == "[FIRING:2] KubePodCrashLooping (shop)"  # Alertmanager's slack.default.title
    assert first["text"] == "* cart-0: cart-0 restarts\n* cart-1: cart-1 restarts\nhttp://kubesight.example"
    assert second["text"] == "- web-0: web-0 restarts\nhttp://kubesight.example"
    # a template that fails when run: kubesight's default for the field (footer has none: its title), and a warning
    assert first["footer"] == "[FIRING:2] KubePodCrashLooping"
    assert "index out of range: 5" in caplog.text


def test_a_template_that_does_not_parse_is_refused_at_load_with_its_place(tmp_path):
    (tmp_path / "tmpl").mkdir()
    write(tmp_path / "tmpl" / "team.tmpl", TEAM, 1)
    (tmp_path / "routing.yaml").write_text(ROUTING.format(url="http://127.0.0.1:9").replace(
        '"team.text" . }}', '"team.text" . '))
    with pytest.raises(ConfigError) as exc:
        load(tmp_path / "routing.yaml")
    assert exc.value.errors == [f"{tmp_path / 'routing.yaml'}:10: receivers[0].slack_configs[0].text: template: :1: "
                                "unclosed action"]
    write(tmp_path / "tmpl" / "team.tmpl", "{{ define \"team.text\" }}{{ end", 2)  # a template file that does not parse
    (tmp_path / "routing.yaml").write_text(ROUTING.format(url="http://127.0.0.1:9"))
    with pytest.raises(ConfigError) as exc:
        load(tmp_path / "routing.yaml")
    (err,) = exc.value.errors
    assert err.startswith(f"{tmp_path / 'routing.yaml'}:2: templates: template: team.tmpl:1: unclosed action")


def test_html_is_escaped_as_alertmanager_escapes_it_and_the_helper_comes_back_if_killed():
    html = gotemplate.GoText.of("<p>{{ .CommonLabels.pod }}</p>", (), html=True)
    text = gotemplate.GoText.of("{{ .CommonLabels.pod }}", ())
    n = note("<b>x</b>")
    assert render(html, n, "") == "<p>&lt;b&gt;x&lt;/b&gt;</p>"
    gotemplate._HELPER.proc.kill()
    gotemplate._HELPER.proc.wait()
    assert render(text, n, "") == "<b>x</b>"


def test_a_helper_that_hangs_is_killed_and_the_default_sent(tmp_path, monkeypatch, caplog):
    hang = tmp_path / "hang"
    hang.write_text("#!/bin/sh\nexec sleep 60\n")
    hang.chmod(0o755)
    monkeypatch.setenv("KUBESIGHT_AMTEMPLATE", str(hang))
    monkeypatch.setattr(gotemplate, "ANSWER_WITHIN", 0.2)
    monkeypatch.setattr(gotemplate, "_HELPER", gotemplate._Helper())
    text = gotemplate.GoText.of("{{ .CommonLabels.pod }}", (), fallback="$title")
    with caplog.at_level(logging.WARNING, "kubesight.alerts"):
        assert render(text, note("cart-0"), "") == "[FIRING:1] KubePodCrashLooping"
    assert "did not answer within 0.2 s" in caplog.text
    assert gotemplate._HELPER.proc is None  # killed, started afresh next time
