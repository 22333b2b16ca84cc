"""A tick's scan skips groups it found quiet, and a signal skips timers not due (issue 11 #8): the same
transitions and state as scanning all.

The memo (each group's deadline and until when a scan may skip it, noted by the last scan or the last
signal applied to the group) lives in the engine, per state mapping; an engine built anew for every call
has none, so it scans every group every time and looks for due timers on every signal: the reference.
"""

from __future__ import annotations

import random

from core.records import Sample, decode
from rules.engine import Engine
from rules.load import DEFAULT_PACK, load_packs
from streams.bench import _events

# pending groups with a short ``for`` (a timer earlier than the window's end) and plain windows
PACK = """apiVersion: kubesight.io/v1
kind: RulePack
metadata: {name: scan, version: "1"}
rules:
  - alert: ManyWarnings
    match: {source: k8s, matchers: ["type=Warning"]}
    condition: {type: event_count, count: 3, window: 10m}
    for: 30s
  - alert: AnyWarning
    match: {source: k8s, matchers: ["type=Warning"]}
    condition: {type: event_count, count: 1, window: 2m}
"""


def _replay(ruleset, signals, fresh_engine_each_call: bool):
    """(kind, status, fingerprint, startsAt, endsAt) of every transition, and the state at the end, of ``signals``
    (records in time order) applied with a tick at each 5 s boundary their times cross, as the hot path ticks."""
    engine = Engine(ruleset)
    state: dict = {}
    out = []
    next_tick = None
    for rec in signals:
        eng = Engine(ruleset) if fresh_engine_each_call else engine
        if next_tick is not None and rec.time >= next_tick:
            out += [("tick", a.status, a.fingerprint, a.startsAt, a.endsAt) for a in eng.tick(rec.time, state)]
        next_tick = (rec.time // 5 + 1) * 5
        eng = Engine(ruleset) if fresh_engine_each_call else engine
        out += [("signal", a.status, a.fingerprint, a.startsAt, a.endsAt) for a in eng.process(rec, state, rec.time)]
    return out, state


def test_skipping_quiet_groups_changes_no_transition_and_no_state(tmp_path):
    pack = tmp_path / "scan.yaml"
    pack.write_text(PACK)
    ruleset = load_packs([DEFAULT_PACK, pack])
    events = [decode(value) for _, value in _events(6000)]
    memo, memo_state = _replay(ruleset, events, False)
    full, full_state = _replay(ruleset, events, True)
    assert sum(1 for o in full if o[0] == "tick") > 50  # timers fire and resolve in the scans
    assert memo == full
    assert memo_state == full_state


SAMPLE_PACK = """apiVersion: kubesight.io/v1
kind: RulePack
metadata: {name: scan-samples, version: "1"}
rules:
  - alert: HotFor
    match: {metric: temp}
    condition: {type: threshold, op: ">", value: 0.7, resolve: 0.5, stale_after: 3m}
    for: 1m
  - alert: HotAvg
    match: {metric: temp}
    condition: {type: threshold, op: ">", value: 0.6, window: 2m}
  - alert: TempGone
    match: {metric: temp}
    condition: {type: absent, after: 2m, forget: 10m}
"""


def _samples() -> list[Sample]:
    rnd = random.Random(7)
    out, t = [], 0.0
    for _ in range(6000):
        t += rnd.choice((1.0, 2.0, 3.0))
        series = rnd.randrange(12)
        if series < 3 and (t // 600) % 2:  # three series go silent every other 10 minutes: stale, absent, forgotten
            continue
        out.append(Sample("temp", rnd.random() ** (0.5 if (t // 300) % 3 == 0 else 2), t, {"instance": f"n{series}"}))
    return out


def test_samples_skipping_changes_no_transition_and_no_state(tmp_path):
    pack = tmp_path / "scan-samples.yaml"
    pack.write_text(SAMPLE_PACK)
    ruleset, samples = load_packs([pack]), _samples()
    memo, memo_state = _replay(ruleset, samples, False)
    full, full_state = _replay(ruleset, samples, True)
    kinds = {(o[0], o[1]) for o in full}
    assert {("tick", "firing"), ("tick", "resolved"), ("signal", "firing"), ("signal", "resolved")} <= kinds
    assert memo == full
    assert memo_state == full_state
