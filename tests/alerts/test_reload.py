"""Routing reload without a restart: the engine's reroute, withdrawals, inhibit rules, the followed file."""

import os

import pytest

from alerts import grouping, lifecycle
from alerts.api import AlertsState
from alerts.config import load_text
from alerts.engine import ROUTED, Engine, grouped_record
from core.records import Alert
from streams.alerting import LAST_RELOAD_OK, AlertingStage, RoutingFile

BEFORE = """
route:
  receiver: platform
  group_by: [alertname]
  group_wait: 10s
  group_interval: 1m
  repeat_interval: 1h
  routes:
    - matchers: ['namespace="shop"']
      receiver: team-a
receivers: [{name: platform}, {name: team-a}, {name: team-b}]
"""
AFTER = BEFORE.replace("receiver: team-a", "receiver: team-b")
MOVED = BEFORE.replace('namespace="shop"', 'namespace="cart"')  # shop's alerts go to the root route


def pod_alert(name="KubePodCrashLooping", ns="shop", node="n1", status="firing", t=0.0):
    return Alert({"alertname": name, "namespace": ns, "node": node, "pod": "p1", "severity": "warning"},
                 status=status, startsAt=t, endsAt=t if status == "resolved" else None)


def replay(eng, moves, state, now):
    """The alert-groups records a reroute made, read back by the grouping step (one state here, as in tests)."""
    for g, d in moves:
        eng.group_dict(g, d, 0.0, state, now)


def notes(eng, state, now):
    return [(n["receiver"], [(a["labels"]["namespace"], a["status"]) for a in n["alerts"]]) for n in eng.tick(state, now)]


def test_a_reload_moves_a_firing_alert_to_its_new_receiver_and_the_old_one_hears_nothing_more():
    eng, st = Engine(load_text(BEFORE)), {}
    eng.receive(pod_alert(), st, now=0.0)
    assert notes(eng, st, 10.0) == [("team-a", [("shop", "firing")])]
    eng.reconfigure(load_text(AFTER))
    moves = eng.reroute(st)
    assert [(g.receiver, g.withdraw) for g, _ in moves] == [("team-b", False)]  # same route, so the same group key
    assert st[ROUTED] == load_text(AFTER).digest
    replay(eng, moves, st, 20.0)
    # team-b is told at once (the alert is older than its group_wait); team-a's group is gone: no resolved, no repeat
    assert notes(eng, st, 20.0) == [("team-b", [("shop", "firing")])]
    assert notes(eng, st, 20.0 + 7200) == [("team-b", [("shop", "firing")])]  # team-b's repeat, not team-a's
    eng.receive(pod_alert(status="resolved", t=7300.0), st, now=7300.0)
    assert notes(eng, st, 7400.0) == [("team-b", [("shop", "resolved")])]
    assert not [k for k in st if k.startswith((grouping.PREFIX, grouping.ALERT_PREFIX, lifecycle.PREFIX))]


def test_a_reload_that_changes_the_route_withdraws_the_alert_from_its_old_group():
    eng, st = Engine(load_text(BEFORE)), {}
    eng.receive(pod_alert(), st, now=0.0)
    assert notes(eng, st, 10.0) == [("team-a", [("shop", "firing")])]
    (before,) = eng.groups_of(pod_alert().labels)
    eng.reconfigure(load_text(AFTER.replace('namespace="shop"', 'node="n1"')))
    moves = eng.reroute(st)
    assert sorted((g.receiver or "-", g.withdraw, g.key == before.key) for g, _ in moves) == [
        ("-", True, True), ("team-b", False, False)]
    replay(eng, moves, st, 20.0)
    assert notes(eng, st, 20.0) == [("team-b", [("shop", "firing")])]
    assert grouping.PREFIX + before.key not in st
    assert notes(eng, st, 20.0 + 7200) == [("team-b", [("shop", "firing")])]  # team-b's repeat, not team-a's


def test_reroute_is_done_once_per_version_and_keeps_groups_that_did_not_move():
    eng, st = Engine(load_text(BEFORE)), {}
    eng.receive(pod_alert(ns="other"), st, now=0.0)  # platform's, in both versions
    assert notes(eng, st, 10.0) == [("platform", [("other", "firing")])]
    eng.reconfigure(load_text(AFTER))
    emitted = []
    stage = AlertingStage(eng)
    assert stage.reroute(st, lambda *rec: emitted.append(rec)) == 1  # the same group again: timings follow
    assert stage.reroute(st, lambda *rec: emitted.append(rec)) == 0  # routed by this version already
    (topic, key, value), = emitted
    assert topic == "alert-groups" and b'"withdraw"' not in value
    replay(eng, eng.reroute(st), st, 20.0)
    assert notes(eng, st, 80.0) == []  # nothing new for platform: not announced again


def test_the_lifecycle_keeps_where_an_alert_was_routed_across_duplicates():
    eng, st = Engine(load_text(BEFORE)), {}
    a = pod_alert()
    eng.receive(a, st, now=0.0)
    key = lifecycle.PREFIX + a.fingerprint
    (g,) = st[key]["g"]
    eng.receive(pod_alert(), st, now=30.0)  # a duplicate rewrites the entry (its end time moves)
    assert st[key]["g"] == [g]


def test_a_reload_that_adds_an_inhibit_rule_mutes_with_sources_that_fire_already():
    eng, st = Engine(load_text(BEFORE)), {}
    eng.receive(pod_alert("KubeNodeNotReady", ns="infra"), st, now=0.0)
    eng.receive(pod_alert(), st, now=0.0)
    assert sorted(r for r, _ in notes(eng, st, 10.0)) == ["platform", "team-a"]
    eng.reconfigure(load_text(BEFORE.replace("receivers:", "default_inhibit_rules: true\nreceivers:")))  # node-down
    eng.receive(pod_alert(name="KubePodNotReady"), st, now=20.0)  # a new alert on the NotReady node
    assert notes(eng, st, 40.0) == []  # inhibited by a source that fired before the reload


def test_the_alerts_view_follows_a_reroute():
    cfg = load_text(BEFORE)
    view, eng = AlertsState(cfg), Engine(cfg)
    a = pod_alert()
    (old,) = eng.groups_of(a.labels)
    view.apply(old.key.encode(), grouped_record(old, a.to_dict()))
    for after, receivers in ((AFTER, ["team-b"]), (MOVED, ["platform"])):
        eng.reconfigure(load_text(after))
        st = {}
        lifecycle.receive(st, a, 0.0, 0.0)
        st[lifecycle.PREFIX + a.fingerprint]["g"] = [old.key]
        for g, d in eng.reroute(st):  # same key, new receiver: replaced; another key: the old one withdrawn
            view.apply(g.key.encode(), grouped_record(g, d))
        assert [r for r, _ in view.by_fp[a.fingerprint]["groups"]] == receivers
        (old,) = eng.groups_of(a.labels)


def test_the_routing_file_is_followed_and_a_bad_version_leaves_the_running_one(tmp_path):
    path = tmp_path / "routing.yaml"
    path.write_text(BEFORE)
    f = RoutingFile(str(path))
    running = f.cfg
    assert f.poll() is None  # unchanged
    path.write_text(BEFORE.replace("group_wait: 10s", "group_wait: 10s\n  bogus: 1"))
    os.utime(path, ns=(1, 1))  # a new stamp whatever the clock's resolution
    assert f.poll() is None and f.cfg is running
    assert f.errors and f.errors[0].startswith(f"{path}:")
    assert "route.bogus" in f.errors[0] and LAST_RELOAD_OK._value.get() == 0
    path.write_text(BEFORE + "\n# a comment only\n")
    os.utime(path, ns=(2, 2))
    got = f.poll()
    assert got is not None and f.cfg is got and not f.errors and LAST_RELOAD_OK._value.get() == 1
    path.write_text(AFTER)
    os.utime(path, ns=(3, 3))
    assert f.poll().route.routes[0].receiver == "team-b"


@pytest.mark.parametrize("gone", [True, False])
def test_a_routing_file_that_cannot_be_read_is_refused(tmp_path, gone):
    path = tmp_path / "routing.yaml"
    path.write_text(BEFORE)
    f = RoutingFile(str(path))
    if gone:
        path.unlink()
    else:
        path.write_text("route: [")
    assert f.poll() is None and f.cfg.route.receiver == "platform"
    assert f.errors and str(path) in f.errors[0]


def test_the_api_serves_the_reloaded_config():
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from alerts.api import app
    from alerts.silences import Silences

    class Book:
        silences = Silences()

    view = AlertsState(load_text(BEFORE))

    async def go():
        async with TestClient(TestServer(app(Book(), alerts=view))) as client:
            first = await (await client.get("/api/v2/status")).json()
            view.reconfigure(load_text(AFTER))
            second = await (await client.get("/api/v2/status")).json()
            return first["config"]["original"], second["config"]["original"]

    first, second = asyncio.run(go())
    assert "receiver: team-a" in first and "receiver: team-b" in second and "receiver: team-a" not in second


def test_the_board_follows_the_routing_file(tmp_path):
    from core.settings import Settings
    from streams.board import Board

    path = tmp_path / "routing.yaml"
    path.write_text(BEFORE)
    board = Board(Settings(routing=str(path)), "127.0.0.1:1")
    labels = pod_alert().labels
    assert board.model.receivers(labels) == ["team-a"] and board.routing.poll() is None
    path.write_text(AFTER)
    os.utime(path, ns=(1, 1))
    board.take_routing(board.routing.poll())
    assert board.model.receivers(labels) == ["team-b"]


def test_post_reload_as_alertmanager_answers_it(tmp_path):
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from alerts.api import app
    from alerts.silences import Silences

    class Book:
        silences = Silences()

    path = tmp_path / "routing.yaml"
    path.write_text(BEFORE)
    routing = RoutingFile(str(path))
    view = AlertsState(routing.cfg)

    def reload_now():
        new = routing.reload()
        if new is not None:
            view.reconfigure(new)
        return routing.errors

    async def go():
        async with TestClient(TestServer(app(Book(), alerts=view, reload=reload_now))) as client:
            path.write_text(BEFORE.replace("receivers:", "bogus: 1\nreceivers:"))
            bad = await client.post("/-/reload")
            bad = (bad.status, await bad.text())
            path.write_text(AFTER)
            good = (await client.post("/-/reload")).status
            names = [r["name"] for r in await (await client.get("/api/v2/receivers")).json()]
        async with TestClient(TestServer(app(Book(), alerts=view))) as client:  # no routing file to reload
            nothing = (await client.post("/-/reload")).status
        return bad, good, names, nothing

    (status, text), good, names, nothing = asyncio.run(go())
    assert nothing == 404
    assert status == 500 and text.startswith("failed to reload config: ") and "bogus" in text
    assert good == 200 and view.cfg.route.routes[0].receiver == "team-b" and "team-b" in names


def test_a_scalar_where_a_list_belongs_is_refused_with_its_line_and_the_file_still_followed(tmp_path, monkeypatch):
    """``receivers: 5`` raised a TypeError out of the checks that run before the schema: the follow task ended and no
    later version was ever taken. Now it is the schema's error, and even a loader bug only refuses the version."""
    import streams.alerting as alerting

    path = tmp_path / "routing.yaml"
    path.write_text(BEFORE)
    f = RoutingFile(str(path))
    running = f.cfg
    path.write_text(BEFORE.replace("receivers:", "receivers: 5\nold_receivers:"))
    os.utime(path, ns=(1, 1))
    assert f.poll() is None and f.cfg is running
    assert any(e.startswith(f"{path}:") and "receivers: expected a list" in e for e in f.errors), f.errors

    def broken(p):
        raise KeyError("name")

    monkeypatch.setattr(alerting, "load_routing", broken)
    path.write_text(AFTER)
    os.utime(path, ns=(2, 2))
    assert f.poll() is None and f.cfg is running and "the loader failed (KeyError" in f.errors[0]
    monkeypatch.undo()
    os.utime(path, ns=(3, 3))
    assert f.poll().route.routes[0].receiver == "team-b" and not f.errors


def test_an_upgrade_that_changes_group_keys_routes_again_once(monkeypatch):
    """The same file read by a kubesight that writes other group keys (``match_re`` anchored since 2026-11-29) has
    another digest, so the first start routes the firing alerts again and withdraws them from their old groups
    (which would repeat "firing" for ever, their resolve going to the new key)."""
    import alerts.config

    text = BEFORE.replace("""- matchers: ['namespace="shop"']""", """- match_re: {namespace: 'shop|cart'}""")
    now = load_text(text)
    digest = now.digest
    monkeypatch.setattr(alerts.config, "ROUTE_KEYS", alerts.config.ROUTE_KEYS - 1)
    assert load_text(text).digest != digest
    (g,) = Engine(now).groups_of(pod_alert().labels)
    assert 'namespace=~"^(?:shop|cart)$"' in g.key  # Alertmanager's key for it
