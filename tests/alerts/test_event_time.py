"""clock: event (issue 13 #9): alerting follows the transitions' own times, so one input gives one set of notifications."""

from __future__ import annotations

import orjson

from alerts.config import load_text
from alerts.engine import Engine
from core.records import Alert, decode, format_time
from streams.alerting import AlertingStage

CFG = """
route: {receiver: ops, group_by: [alertname], group_wait: 1s, group_interval: 5s, repeat_interval: 4h}
receivers: [{name: ops}]
"""


def run_stage(transitions: list[Alert], ticks: list[float]) -> list[tuple]:
    """The stage in event mode over one ordered input: alerts -> (alert-groups fed back in order) -> notifications."""
    stage = AlertingStage(Engine(load_text(CFG)), event_time=True)
    state: dict = {}
    grouped, notes = [], []

    def emit(topic, key, value, partition=None):
        (grouped if topic == "alert-groups" else notes).append(value)

    for a in transitions:
        stage.process(a, state, emit)
    for t in ticks:  # wall ticks of any cadence change nothing in event time
        stage.tick(t, state, emit)
    for g in grouped:
        stage.process(decode(g), state, emit)
        for t in ticks:
            stage.tick(t, state, emit)
    return [(n["time"], sorted((a["labels"]["pod"], a["status"]) for a in n["alerts"]))
            for n in map(orjson.loads, notes)]


def test_groups_flush_at_their_own_due_times_whatever_the_ticks():
    a = Alert({"alertname": "A", "pod": "p1"}, startsAt=100.0)
    a_res = Alert({"alertname": "A", "pod": "p1"}, status="resolved", startsAt=100.0, endsAt=103.0)
    b = Alert({"alertname": "A", "pod": "p2"}, startsAt=112.0)
    b_res = Alert({"alertname": "A", "pod": "p2"}, status="resolved", startsAt=112.0, endsAt=140.0)
    inputs = [a, a_res, b, b_res]
    quiet = run_stage(inputs, ticks=[])
    busy = run_stage(inputs, ticks=[1e9, 2e9])  # a wall clock far ahead of the replay's time
    assert quiet == busy
    # first flush at startsAt + group_wait (101: p1 firing), then every group_interval on the alerts' time:
    # 106 tells p1's resolution (the group, empty, ends); p2 (112) opens a new group, due at 113; its resolution
    # (140) is never flushed: nothing after it moves the grouping clock to the next slot (143)
    assert quiet == [
        (format_time(101.0), [("p1", "firing")]),
        (format_time(106.0), [("p1", "resolved")]),
        (format_time(113.0), [("p2", "firing")]),
    ]
