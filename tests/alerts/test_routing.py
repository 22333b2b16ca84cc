"""Routing as a table: labels -> (receiver, group key) in order, incl. continue, inheritance, anchoring, owners."""

import pytest

from alerts.config import load, load_text
from alerts.routing import Router

CONFIG = """
route:
  receiver: fallback
  group_by: [alertname]
  group_wait: 20s
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
      group_wait: 5s
    - matchers: ['namespace=~"kube-.*"']
      receiver: platform
      group_by: [alertname, node]
      routes:
        - matchers: ['alertname="KubeNodeNotReady"']
          receiver: nodes
        - matchers: ['env=~"prod"']
          receiver: prod
    - matchers: ['owner=~".+"']
      owner_receiver: true
      routes:
        - matchers: ['severity="info"']
          group_interval: 1h
receivers:
  - name: fallback
  - name: pager
  - name: platform
  - name: nodes
  - name: prod
  - name: team-a
"""

TABLE = [
    # (labels, [(receiver, group key)])
    ({"alertname": "X"}, [("fallback", '{}:{alertname="X"}')]),
    # continue: the critical route matches and the search goes on to the next sibling
    ({"alertname": "X", "severity": "critical", "namespace": "kube-system", "node": "n1"},
     [("pager", '{}/{severity="critical"}:{alertname="X"}'),
      ("platform", '{}/{namespace=~"kube-.*"}:{alertname="X", node="n1"}')]),
    # inherited group_by [alertname, node] and nested child
    ({"alertname": "KubeNodeNotReady", "namespace": "kube-system", "node": "n1"},
     [("nodes", '{}/{namespace=~"kube-.*"}/{alertname="KubeNodeNotReady"}:{alertname="KubeNodeNotReady", node="n1"}')]),
    # anchored: env=~"prod" does not match "production", so the parent route keeps it
    ({"alertname": "Y", "namespace": "kube-public", "env": "production"},
     [("platform", '{}/{namespace=~"kube-.*"}:{alertname="Y"}')]),
    ({"alertname": "Y", "namespace": "kube-public", "env": "prod"},
     [("prod", '{}/{namespace=~"kube-.*"}/{env=~"prod"}:{alertname="Y"}')]),
    # anchored: "my-kube-x" is not kube-.*
    ({"alertname": "Y", "namespace": "my-kube-x"}, [("fallback", '{}:{alertname="Y"}')]),
    # owner routing: a known owner gets its receiver and its own group
    ({"alertname": "Z", "owner": "team-a"}, [("team-a", '{}/{owner=~".+"}:{alertname="Z", owner="team-a"}')]),
    # unknown owner: the route's (inherited) receiver is the fallback
    ({"alertname": "Z", "owner": "team-b"}, [("fallback", '{}/{owner=~".+"}:{alertname="Z", owner="team-b"}')]),
    # owner_receiver is inherited by children
    ({"alertname": "Z", "owner": "team-a", "severity": "info"},
     [("team-a", '{}/{owner=~".+"}/{severity="info"}:{alertname="Z", owner="team-a"}')]),
    # empty owner: does not match owner=~".+" at all
    ({"alertname": "Z", "owner": ""}, [("fallback", '{}:{alertname="Z"}')]),
]


@pytest.mark.parametrize("labels,expected", TABLE, ids=[str(i) for i in range(len(TABLE))])
def test_routing_table(labels, expected):
    router = Router(load_text(CONFIG))
    assert [(d.receiver, d.group_key) for d in router.destinations(labels)] == expected


def test_options_are_inherited():
    router = Router(load_text(CONFIG))
    (crit, plat) = router.destinations({"alertname": "X", "severity": "critical", "namespace": "kube-a"})
    assert (crit.route.group_wait, crit.route.group_interval, crit.route.repeat_interval) == (5.0, 300.0, 14400.0)
    assert plat.route.group_wait == 20.0
    (info,) = router.destinations({"alertname": "Z", "owner": "team-a", "severity": "info"})
    assert (info.route.group_wait, info.route.group_interval) == (20.0, 3600.0)


def test_time_intervals_mute_and_activate():
    router = Router(load_text("""
route:
  receiver: r
  routes:
    - matchers: ['a="1"']
      mute_time_intervals: [weekend]
    - matchers: ['a="2"']
      active_time_intervals: [weekend]
receivers: [{name: r}]
time_intervals:
  - name: weekend
    time_intervals: [{weekdays: [saturday, sunday]}]
"""))
    saturday, tuesday = 1628330400.0, 1627984800.0
    (one,) = router.destinations({"a": "1"})
    (two,) = router.destinations({"a": "2"})
    assert [router.muted(one.route, t) for t in (saturday, tuesday)] == [True, False]
    assert [router.muted(two.route, t) for t in (saturday, tuesday)] == [False, True]


def test_example_config_routes_owners_and_fallback():
    from pathlib import Path

    router = Router(load(Path(__file__).resolve().parents[2] / "deploy" / "routing.example.yaml"))
    got = {o: [d.receiver for d in router.destinations({"alertname": "A", "namespace": "n", "owner": o})]
           for o in ("team-control-plane", "team-network", "team-observability", "")}
    assert got == {"team-control-plane": ["team-control-plane"], "team-network": ["team-network"],
                   "team-observability": ["platform"], "": ["platform"]}


def test_an_empty_group_by_inherits_and_an_empty_label_is_no_label():
    """Alertmanager: a child's ``group_by: []`` leaves the parent's grouping in force (kubesight put every alert of
    the route in one group), and a label with an empty value is no label (it was in the '...' group key)."""
    r = Router(load_text("""
route:
  receiver: r
  group_by: [alertname, cluster]
  routes:
    - matchers: ['env!="prod"']
      group_by: []
    - matchers: ['env="prod"']
      group_by: ['...']
receivers: [{name: r}]
"""))
    assert [d.group_key for d in r.destinations({"alertname": "G3", "cluster": "c2", "env": "dev"})] == [
        '{}/{env!="prod"}:{alertname="G3", cluster="c2"}']
    assert [d.group_key for d in r.destinations({"alertname": "E1", "env": "prod", "x": ""})] == [
        '{}/{env="prod"}:{alertname="E1", env="prod"}']


def test_siblings_with_equal_matchers_keep_apart_and_receivers_see_alertmanagers_key():
    """Alertmanager gives two sibling routes with the same matchers the same group key (it tells the groups apart by
    route object); kubesight keeps them apart with /N inside, and what receivers see (the webhook's groupKey,
    PagerDuty's dedup_key) is Alertmanager's key, so incidents opened by an Alertmanager are resolved by kubesight."""
    from alerts.engine import Engine
    from alerts.payload import group_key, key_hash, webhook
    from core.records import Alert

    cfg = load_text("""
route:
  receiver: r
  group_by: [alertname]
  group_wait: 10s
  routes:
    - {matchers: ['team="db"'], receiver: a, continue: true}
    - {matchers: ['team="db"'], receiver: b}
receivers: [{name: r}, {name: a}, {name: b}]
""")
    keys = [(d.group_key, d.public_key) for d in Router(cfg).destinations({"alertname": "D", "team": "db"})]
    assert keys == [('{}/{team="db"}:{alertname="D"}', ""), ('{}/{team="db"}/1:{alertname="D"}',
                                                              '{}/{team="db"}:{alertname="D"}')]
    eng, st = Engine(cfg), {}
    eng.receive(Alert({"alertname": "D", "team": "db"}, startsAt=0.0), st, now=0.0)
    notes = sorted(eng.tick(st, now=10.0), key=lambda n: n["receiver"])
    assert [n["groupKey"] for n in notes] == ['{}/{team="db"}:{alertname="D"}', '{}/{team="db"}/1:{alertname="D"}']
    assert [webhook(n, "")["groupKey"] for n in notes] == ['{}/{team="db"}:{alertname="D"}'] * 2
    assert key_hash(group_key(notes[1])) == key_hash('{}/{team="db"}:{alertname="D"}')
