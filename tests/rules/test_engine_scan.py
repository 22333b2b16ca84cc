"""A tick's scan skips groups it found quiet (issue 11 #8): the same transitions and state as scanning all.

The memo lives in the engine, per state mapping; an engine built anew for every call has none, so it
scans every group every time: the reference.
"""

from __future__ import annotations

from pathlib import Path

from core.records import decode
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


def _run(fresh_engine_each_call: bool, pack: Path):
    ruleset = load_packs([DEFAULT_PACK, pack])
    engine = Engine(ruleset)
    state: dict = {}
    out = []
    next_tick = None
    for _, value in _events(6000):
        ev = decode(value)
        eng = Engine(ruleset) if fresh_engine_each_call else engine
        if next_tick is not None and ev.time >= next_tick:
            out += [("tick", a.status, a.fingerprint, a.startsAt, a.endsAt) for a in eng.tick(ev.time, state)]
        next_tick = (ev.time // 5 + 1) * 5
        eng = Engine(ruleset) if fresh_engine_each_call else engine
        out += [("event", a.status, a.fingerprint, a.startsAt, a.endsAt) for a in eng.process(ev, state, ev.time)]
    return out, state


def test_skipping_quiet_groups_changes_no_transition_and_no_state(tmp_path):
    pack = tmp_path / "scan.yaml"
    pack.write_text(PACK)
    memo, memo_state = _run(False, pack)
    full, full_state = _run(True, pack)
    assert sum(1 for o in full if o[0] == "tick") > 50  # timers fire and resolve in the scans
    assert memo == full
    assert memo_state == full_state
