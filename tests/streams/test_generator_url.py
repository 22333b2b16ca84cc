"""An alert's generatorURL (audit 2026-12): every page and email said "Source:" with nothing after it, the webhook
sent ``"generatorURL": ""``.  With the settings' ``board_url`` the rules link each alert to the board's drill-down of
its cell; without it the field stays empty (no host is guessed)."""

from __future__ import annotations

import asyncio
import textwrap
from urllib.parse import urlsplit

import orjson
import pytest

from core.records import Entity, Event, decode
from core.settings import Settings
from streams.stages import RulePacks, signal_stages
from tests.streams.test_board import boards, browser  # noqa: F401 (fixtures)

PACK = """\
apiVersion: kubesight.io/v1
kind: RulePack
metadata: {name: links, version: "1"}
rules:  # one fires at the event (a signal's evaluation), one a minute later (a tick's)
  - {alert: KubeContainerBackOff, severity: critical, match: {source: k8s, reason: BackOff},
     condition: {type: event_count, count: 1, window: 5m}}
  - {alert: KubeContainerBackOffLong, for: 1m, match: {source: k8s, reason: BackOff},
     condition: {type: event_count, count: 1, window: 5m}}
"""
BOARD = "https://ops.example/board"


def rules_stage(tmp_path, board_url: str | None, owner: str = "team-db"):
    """The hot path's rule stage as the worker builds it from its settings (``signal_stages``)."""
    pack = tmp_path / "links.yaml"
    pack.write_text(textwrap.dedent(PACK))
    settings = Settings(default_pack=False, rules=[str(pack)], board_url=board_url, state_dir=str(tmp_path))
    return signal_stages(settings, RulePacks(settings), owner_of=lambda labels: owner)[-1]


def backoff(t: float, pod: str = "cart-7d9f-x", ns: str = "shop") -> Event:
    return Event("k8s", "BackOff", t, "Warning", entity=Entity(cluster="prod", namespace=ns, kind="Pod", name=pod,
                                                                workload="Deployment/cart", node="w1"))


def fire(stage, *events, tick: float | None = None) -> list:
    return fire_into(stage, {}, *events, tick=tick)


def fire_into(stage, state: dict, *events, tick: float | None = None) -> list:
    out = []
    emit = lambda topic, key, value: out.append(decode(value)) if topic == "alerts" else None  # noqa: E731
    for e in events:
        stage.process(e, state, emit)
    if tick is not None:
        stage.tick(tick, state, emit)
    return out


def test_an_alert_links_its_cell_on_the_board_when_board_url_is_set(tmp_path):
    got = fire(rules_stage(tmp_path, BOARD + "/"), backoff(0.0))
    assert [(a.labels["alertname"], a.generatorURL) for a in got] == [
        ("KubeContainerBackOff", f"{BOARD}/?view=team&row=team-db&col=shop")]


def test_without_board_url_the_link_stays_empty(tmp_path):
    got = fire(rules_stage(tmp_path, None), backoff(0.0), tick=120.0)
    assert [(a.labels["alertname"], a.generatorURL) for a in got] == [
        ("KubeContainerBackOff", ""), ("KubeContainerBackOffLong", "")]


def test_an_engine_a_reload_put_in_force_links_what_a_tick_fires(tmp_path):
    """``for`` fires from a tick: the reload's engine was handed the owners only when a signal reached it."""
    stage = rules_stage(tmp_path, BOARD)
    state: dict = {}
    stage.process(backoff(0.0), state, lambda *rec: None)
    stage.holder.swap(stage.holder.engine.ruleset)  # a reload: same rules, a new engine, the state carries over
    out = []
    stage.tick(120.0, state, lambda topic, key, value: out.append(decode(value)))
    assert [(a.labels["alertname"], a.generatorURL) for a in out] == [
        ("KubeContainerBackOffLong", f"{BOARD}/?view=team&row=team-db&col=shop")]


def test_the_resolution_of_a_rule_a_reload_removed_links_where_its_firing_did(tmp_path):
    from rules.ruleset import RuleSet

    stage = rules_stage(tmp_path, BOARD)
    state: dict = {}
    fired = fire_into(stage, state, backoff(0.0))
    stage.holder.swap(RuleSet.empty())
    out = []
    stage.tick(10.0, state, lambda topic, key, value: out.append(decode(value)))
    assert [(a.status, a.labels["alertname"]) for a in out] == [("resolved", "KubeContainerBackOff")]
    assert out[0].generatorURL == fired[0].generatorURL == f"{BOARD}/?view=team&row=team-db&col=shop"


def test_the_webhook_carries_the_link(tmp_path):
    """Through alerting's steps (lifecycle, routing, grouping) to the webhook's body, as delivery sends it."""
    from alerts.config import load_text
    from alerts.engine import Engine as Alerting
    from alerts.receivers import Receivers

    alert = fire(rules_stage(tmp_path, BOARD), backoff(0.0))[0]
    cfg = load_text("route: {receiver: team, group_by: [alertname], group_wait: 0s}\n"
                    "receivers: [{name: team, webhook_configs: [{url: 'http://127.0.0.1:9/hook'}]}]\n")
    eng, st = Alerting(cfg), {}
    eng.receive(alert, st, now=1.0)
    notes = eng.tick(st, now=2.0)
    assert len(notes) == 1
    integ = Receivers(cfg).integrations["team"][0]
    _, body, _ = integ.request(notes[0], "http://kubesight.local", 2.0)
    assert [a["generatorURL"] for a in orjson.loads(body)["alerts"]] == [alert.generatorURL]
    assert alert.generatorURL.startswith(BOARD + "/?")


@pytest.mark.parametrize("owner, ns", [("db & cache", "shop"), ("", "shop"), ("team-db", "")])
def test_the_link_opens_the_alert_on_the_board(tmp_path, owner, ns):
    """The link asked of a board holding the alert shows it alone: the cell it names is the one the board files it
    under (a team with a space and an ampersand, no team, no namespace), not its team's row nor its namespace in
    another team."""
    from aiohttp.test_utils import TestClient, TestServer

    from streams.board import Board, web_app

    alert = fire(rules_stage(tmp_path, BOARD, owner=owner), backoff(0.0, ns=ns))[0]
    assert alert.generatorURL.startswith(BOARD + "/?")
    u = urlsplit(alert.generatorURL)

    async def go():
        b = Board(Settings(kafka="127.0.0.1:9", topic_prefix="links-", app_id="links"), "127.0.0.1:9")
        b.model.apply_alert(alert.to_dict())
        for other_owner, other_ns in ((owner, "other-ns"), ("other-team", ns)):
            other = fire(rules_stage(tmp_path, BOARD, owner=other_owner), backoff(0.0, pod="p2", ns=other_ns))[0]
            b.model.apply_alert(other.to_dict())
        assert len(b.model.alerts) == 3
        async with TestClient(TestServer(web_app(b, None))) as client:
            assert u.path == "/board/"  # the page, which asks its drill-down with the link's own query
            r = await client.get("/api/alerts?" + u.query)
            return r.status, await r.json()

    status, page = asyncio.run(go())
    assert status == 200 and [a["fingerprint"] for a in page["alerts"]] == [alert.fingerprint], page


def test_a_name_too_long_for_a_url_links_the_board_page(tmp_path):
    alert = fire(rules_stage(tmp_path, BOARD, owner="t" * 9000), backoff(0.0))[0]
    assert alert.generatorURL == BOARD + "/"


@pytest.mark.parametrize("value", ["ops.example/board", "https://ops.example/board?x=1", "ftp://ops.example",
                                   "https://:443/"])
def test_a_board_url_a_browser_cannot_open_is_refused_at_load(value):
    with pytest.raises(ValueError, match="board_url"):
        Settings(board_url=value)


@pytest.mark.kafka
def test_the_link_opens_the_alert_s_drill_down_in_the_browser(settings, boards, browser, tmp_path):  # noqa: F811
    """The link is the board's page (a person follows "Source"), which opens the drill-down of the cell its query names:
    in Debian's chromium, over the test broker, the alert alone, not its team's other namespace's alert."""
    from selenium.webdriver.common.by import By

    from streams.cli_board import produce_alerts
    from tests.streams.test_board import WAIT, WebDriverWait, read

    alert = fire(rules_stage(tmp_path, BOARD, owner="db & cache"), backoff(0.0))[0]
    other = fire(rules_stage(tmp_path, BOARD, owner="db & cache"), backoff(0.0, pod="p2", ns="other-ns"))[0]
    produce_alerts(settings.kafka, settings.topic("alerts"), [alert, other])
    b = boards(settings)
    link = urlsplit(alert.generatorURL)
    browser.get(b.url.rstrip("/") + link.path.removeprefix("/board") + "?" + link.query)
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#drill-list li"))
    shown = read(browser, lambda d: ([li.get_attribute("data-fingerprint")
                                      for li in d.find_elements(By.CSS_SELECTOR, "#drill-list li")],
                                     d.find_element(By.ID, "drill-title").text))
    assert shown == ([alert.fingerprint], "db & cache / shop")
