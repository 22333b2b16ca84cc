"""The alerting stage groups a transition where it routes it when it holds the group's partition (clock: wall).

Such a transition's alert-groups record is marked applied and skipped when read back; one whose group lives on a
partition held elsewhere is grouped by its reader.  Either way each transition is grouped exactly once, and the
notifications are those of grouping every transition after reading it back (the two-transaction path).
"""

from __future__ import annotations

import zlib

import orjson

from alerts.config import load_text
from alerts.engine import GROUP_ANNOTATION, Engine, is_applied
from core.records import Alert, decode
from streams.alerting import AlertingStage
from streams.state import Store

CFG = """
route:
  receiver: ops
  group_by: [alertname, namespace]
  group_wait: 0s
  group_interval: 5m
  repeat_interval: 4h
receivers:
  - name: ops
    webhook_configs: [{url: "http://127.0.0.1:1/x"}]
"""


def _part(key: bytes) -> int:
    return zlib.crc32(key) % 2


def _transitions(t0: float) -> list[Alert]:
    fired = [Alert({"alertname": "PodDown", "namespace": f"ns-{i % 5}", "pod": f"p{i}"}, startsAt=t0 + i)
             for i in range(12)]
    resolved = [Alert(a.labels, status="resolved", startsAt=a.startsAt, endsAt=t0 + 20.0) for a in fired[:4]]
    return fired + [fired[0]] + resolved  # one duplicate: passes the lifecycle as nothing


def _run(own: set[int] | None, t0: float):
    """Route every transition on the alerts partition of its fingerprint, read what it wrote on alert-groups back on
    the group key's partition, flush what is due; ``own``: the alert-groups partitions grouped where routed (None:
    every transition grouped by its reader, the two-transaction path)."""
    stage = AlertingStage(Engine(load_text(CFG)))
    stores = {0: Store(), 1: Store()}
    if own is not None:
        stage.here = lambda key: (stores[_part(key)], _part(key)) if _part(key) in own else None
    groups, notes = [], []

    def emit(topic, key, value, partition=None):
        (groups if topic == "alert-groups" else notes).append((key, value))

    for i, a in enumerate(_transitions(t0)):
        seen = len(groups)
        stage.process(a, stores[_part(a.fingerprint.encode())], emit)
        for key, value in groups[seen:]:  # read back: the ones marked applied are skipped
            st = stores[_part(key)]
            st.flush_items()  # what the transaction took
            stage.process(decode(value), st, emit)
            applied = is_applied(orjson.loads(value)["annotations"][GROUP_ANNOTATION])
            assert st.dirty != applied  # grouped now if and only if not grouped already
        for p in (0, 1):
            stage.tick(t0 + 30.0 + i, stores[p], emit)
    for p in (0, 1):  # group_interval later: the resolutions
        stage.tick(t0 + 400.0, stores[p], emit)
    return stores, groups, notes


def _summary(notes) -> list[tuple]:
    out = []
    for key, value in notes:
        n = orjson.loads(value)
        out.append((key, n["status"], tuple(sorted((a["labels"]["pod"], a["status"]) for a in n["alerts"]))))
    return sorted(out)


def test_grouped_where_routed_or_where_read_each_transition_once_same_notifications():
    t0 = 1_700_000_000.0
    ref_stores, ref_groups, ref_notes = _run(None, t0)
    for own in ({0}, {1}, {0, 1}):
        stores, groups, notes = _run(own, t0)
        marks = [(_part(k), is_applied(orjson.loads(v)["annotations"][GROUP_ANNOTATION])) for k, v in groups]
        assert marks and all(applied == (p in own) for p, applied in marks)  # marked exactly where grouped here
        assert [(k, decode(v).labels, decode(v).status) for k, v in groups] == \
            [(k, decode(v).labels, decode(v).status) for k, v in ref_groups]  # the same transitions on alert-groups
        for p in (0, 1):  # the same group state: no transition lost, none grouped twice
            assert {k: v for k, v in stores[p].items() if k.startswith("g")} == \
                {k: v for k, v in ref_stores[p].items() if k.startswith("g")}, (own, p)
        assert _summary(notes) == _summary(ref_notes), own
    assert len(ref_notes) >= 5  # one per namespace at least
    assert any(s == "resolved" for n in _summary(ref_notes) for _, s in n[2])  # resolutions went through too
