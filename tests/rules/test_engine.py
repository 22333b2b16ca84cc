"""The engine on small timelines: each condition, lifecycle timing, labels, state layout, reload."""

from __future__ import annotations

import textwrap

import orjson
import pytest

from core.records import Entity, Event, Sample
from rules.engine import DUE, Engine
from rules.holder import EngineHolder
from rules.load import load_packs

HEAD = """\
apiVersion: kubesight.io/v1
kind: RulePack
metadata: {name: t, version: "%s"}
"""

NODE = Entity(kind="Node", name="n1", node="n1")
POD = Entity(namespace="shop", kind="Pod", name="cart-1", node="n1", workload="Deployment/cart", owner="team-a")


def ruleset(tmp_path, rules: str, version: str = "1", extra: str = "", name: str = "p.yaml"):
    f = tmp_path / name
    f.write_text(HEAD % version + extra + "rules:\n" + textwrap.indent(textwrap.dedent(rules), "  "))
    return load_packs([f])


def ev(t, reason="BackOff", source="k8s", entity=POD, labels=None, typ="Warning", message="m"):
    return Event(source=source, reason=reason, type=typ, time=float(t), entity=entity, labels=labels or {}, message=message)


def run(engine, signals, ticks=(), state=None):
    """Process signals and ticks in time order; returns [(status, alertname, startsAt, endsAt)] and the state."""
    state = {} if state is None else state
    items = sorted([(s.time, 0, s) for s in signals] + [(t, 1, t) for t in ticks], key=lambda x: (x[0], x[1]))
    out = []
    for t, kind, x in items:
        got = engine.process(x, state, t) if kind == 0 else engine.tick(t, state)
        out.extend((a.status, a.labels["alertname"], a.startsAt, a.endsAt) for a in got)
    return out, state


def test_event_count_fires_at_nth_event_and_resolves_when_the_window_passes(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: Flood
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count, count: 3, window: 10m}
        """))
    out, state = run(eng, [ev(0), ev(60), ev(700), ev(760), ev(800)], ticks=[1000, 1500])
    # 0 and 60 are not 3 within 10m; 700 drops 0 and 60 leaves the window only at 660
    assert out == [("firing", "Flood", 800.0, None), ("resolved", "Flood", 800.0, 1300.0)]
    assert [k for k in state if not k.startswith("rule|~")] == []  # resolved and empty: the group's key is gone


def test_a_re_sent_event_is_counted_once(tmp_path):
    """At-least-once sources (the kernel collector after a hard kill, an intake's retried batch) may send an event
    again with the same id: it counts once. Events without an id, or with new ids, all count."""
    import msgspec

    eng = Engine(ruleset(tmp_path, """\
        - alert: Flood
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count, count: 3, window: 10m}
        """))
    same = [msgspec.structs.replace(ev(t), id=i) for t, i in ((0, "a"), (10, "b"), (10, "b"), (20, "a"))]
    out, _ = run(eng, same)
    assert out == []  # a and b: two occurrences, not four
    out, _ = run(Engine(eng.ruleset), same + [msgspec.structs.replace(ev(30), id="c")])
    assert out == [("firing", "Flood", 30.0, None)]
    out, _ = run(Engine(eng.ruleset), [ev(0), ev(10), ev(20)])  # no ids: each counts
    assert out == [("firing", "Flood", 20.0, None)]


def test_a_re_sent_sample_changes_no_burn_rate_or_prediction(tmp_path):
    """A sample sent again (the same series at the same time: a remote-write retry) weighs once in the means of
    burn_rate and in predict's line, as in threshold (which replaces it)."""
    rs = ruleset(tmp_path, """\
        - alert: Burn
          match: {metric: err_ratio}
          condition: {type: burn_rate, objective: 0.99, windows: [{long: 1h, short: 5m, factor: 14.4}]}
        - alert: Fill
          match: {metric: free_ratio}
          condition: {type: predict, op: "<", value: 0, window: 1h, horizon: 4h}
        """)
    base = [sm(i * 60, 0.5 if i % 7 == 0 else 0.0, "err_ratio") for i in range(60)] + [
        sm(i * 60, 1.0 - i * 0.001 * (1 + i % 3), "free_ratio") for i in range(60)]
    again = base + [sm(600, 0.5 if 10 % 7 == 0 else 0.0, "err_ratio"), sm(1200, 0.5, "err_ratio"),
                    sm(600, 1.0 - 0.01 * 2, "free_ratio")]
    values = []
    for sig in (base, again):
        _, st = run(Engine(rs), sorted(sig, key=lambda s: s.time))
        values.append(sorted((k, repr(v["c"].get("v"))) for k, v in st.items() if k.startswith("rule|") and "~" not in k))
    assert values[0] == values[1] and len(values[0]) == 2


def test_results_do_not_depend_on_tick_cadence(tmp_path):
    rs = ruleset(tmp_path, """\
        - alert: Flood
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count, count: 2, window: 5m}
          for: 2m
        """)
    sig = [ev(t) for t in (0, 30, 400, 420, 1000, 1010, 1200)]
    dense, _ = run(Engine(rs), sig, ticks=range(0, 3000, 7))
    sparse, _ = run(Engine(rs), sig, ticks=[3000])
    assert dense == sparse == [
        ("firing", "Flood", 30.0, None), ("resolved", "Flood", 30.0, 300.0),
        ("firing", "Flood", 420.0, None), ("resolved", "Flood", 420.0, 700.0),
        ("firing", "Flood", 1010.0, None), ("resolved", "Flood", 1010.0, 1310.0),
    ]


def test_for_keeps_a_short_burst_pending(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: Flood
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count, count: 1, window: 1m}
          for: 5m
        """))
    out, _ = run(eng, [ev(0)], ticks=[60, 600])
    assert out == []


def test_late_event_outside_the_window_is_ignored(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: One
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count, count: 1, window: 5m}
        """))
    state: dict = {}
    assert eng.process(ev(0), state, now=1000.0) == []  # watermark already 1000: the event is 1000s old
    assert eng.process(ev(900), state, now=1000.0)[0].status == "firing"


def test_state_condition_set_and_cleared_from_any_source(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: NotReady
          match: {source: k8s-state, reason: NodeNotReady, kind: Node}
          condition: {type: state, resolve_reasons: NodeReady}
          for: 1m
        """))
    out, state = run(eng, [ev(0, "NodeNotReady", "k8s-state", NODE), ev(300, "NodeReady", "k8s", NODE, typ="Normal")],
                     ticks=[60, 400])
    assert out == [("firing", "NotReady", 0.0, None), ("resolved", "NotReady", 0.0, 300.0)]
    assert not [k for k in state if not k.startswith("rule|~")]


def test_clearing_event_without_state_stores_nothing(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: NotReady
          match: {source: k8s-state, reason: NodeNotReady}
          condition: {type: state, resolve_reasons: NodeReady}
        """))
    state: dict = {}
    assert eng.process(ev(0, "NodeReady", "k8s-state", NODE), state) == []
    assert state == {}


def test_state_timeout_clears_without_a_clearing_event(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: Deadlock
          match: {source: kernel, reason: DockerHung}
          condition: {type: state, resolve_reasons: Rebooted, timeout: 1h}
        """))
    out, _ = run(eng, [ev(0, "DockerHung", "kernel", NODE), ev(1800, "DockerHung", "kernel", NODE)], ticks=[7200])
    assert out == [("firing", "Deadlock", 0.0, None), ("resolved", "Deadlock", 0.0, 5400.0)]


def sm(t, v, name="cpu", **labels):
    return Sample(name, float(v), float(t), labels or {"instance": "a"})


def test_threshold_hysteresis(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: Hot
          match: {metric: cpu}
          condition: {type: threshold, op: ">", value: 0.9, resolve: 0.8}
        """))
    vals = [0.5, 0.95, 0.85, 0.82, 0.79, 0.85, 0.91]
    out, _ = run(eng, [sm(i * 60, v) for i, v in enumerate(vals)])
    # 0.85 after firing stays firing (above the resolve level); 0.79 resolves; 0.85 does not re-fire
    assert out == [("firing", "Hot", 60.0, None), ("resolved", "Hot", 60.0, 240.0), ("firing", "Hot", 360.0, None)]


def test_threshold_for_and_average_window(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: Hot
          match: {metric: cpu}
          condition: {type: threshold, op: ">", value: 0.9, agg: avg, window: 3m}
          for: 2m
        """))
    vals = [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2]
    out, _ = run(eng, [sm(i * 60, v) for i, v in enumerate(vals)])
    # avg over [t-3m, t]: crosses 0.9 at t=4m (1,1,1,1), holds through 5m; at 6m avg=0.8
    assert out == [("firing", "Hot", 240.0, None), ("resolved", "Hot", 240.0, 360.0)]


def test_threshold_goes_stale_when_the_series_stops(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: Down
          match: {metric: up}
          condition: {type: threshold, op: "==", value: 0}
        """, extra="defaults: {stale_after: 5m}\n"))
    out, _ = run(eng, [sm(0, 0, "up"), sm(60, 0, "up")], ticks=[1000])
    assert out == [("firing", "Down", 0.0, None), ("resolved", "Down", 0.0, 360.0)]


BURN = """\
    - alert: Burn
      match: {metric: err}
      condition:
        type: burn_rate
        objective: 0.99
        windows: [{long: 1h, short: 5m, factor: 10}]
    """


def test_burn_rate_needs_both_windows_and_keeps_bounded_state(tmp_path):
    eng = Engine(ruleset(tmp_path, BURN))
    # 40 min at a 0.5% error ratio (half the budget), then 20% errors for 3 min, then none
    vals = [0.005] * 40 + [0.2] * 3 + [0.0] * 20
    out, state = run(eng, [sm(i * 60, v, "err") for i, v in enumerate(vals)])
    # at 42 min the 5m mean is 0.122 (> 0.1: the short window alone would fire) but the 1h mean is 0.019
    assert out == []
    (st,) = [v for k, v in state.items() if k.startswith("rule|Burn")]
    # at most 12 buckets per window whatever the history: 5m (25 s buckets, one point a minute) and 1h (5 min)
    assert [len(ring) for ring in st["c"]["b"]] == [5, 12]
    assert st["c"]["r"] < 1.0


def test_burn_rate_fires_on_a_sustained_burn_and_resolves_minutes_after_it_stops(tmp_path):
    eng = Engine(ruleset(tmp_path, BURN))
    vals = [0.2] * 30 + [0.0] * 10  # 20x the budget for 30 min, then clean
    out, _ = run(eng, [sm(i * 60, v, "err") for i, v in enumerate(vals)])
    # fires on the first point (both means 0.2 > 0.1).  The 5m mean covers the last 12 buckets of 25 s: at 32 min
    # the points of 28..32 min (0.2, 0.2, 0, 0, 0) -> 0.08, below 0.1; the 1h mean (0.18) alone keeps nothing firing
    assert out == [("firing", "Burn", 0.0, None), ("resolved", "Burn", 0.0, 32 * 60.0)]


def test_burn_rate_goes_stale_and_ignores_nan_and_late_points(tmp_path):
    eng = Engine(ruleset(tmp_path, BURN, extra="defaults: {stale_after: 5m}\n"))
    state: dict = {}
    got = []
    for s in (sm(0, 0.5, "err"), sm(60, 0.5, "err"), sm(120, float("nan"), "err"), sm(30, 0.0, "err")):
        got += eng.process(s, state)  # the NaN (no requests) and the point older than the last are ignored
    got += eng.tick(1000, state)
    assert [(a.status, a.startsAt, a.endsAt) for a in got] == [("firing", 0.0, None), ("resolved", 0.0, 360.0)]
    assert any(k.startswith("rule|Burn") for k in state)  # a gap shorter than the 1h window keeps its history
    eng.tick(3 * 3600, state)  # the scan after the series was silent for its whole window
    assert not any(k.startswith("rule|Burn") for k in state)  # silent for its whole window: its state goes


def test_each_burn_rate_pair_has_its_own_for(tmp_path):
    """kubernetes-mixin's per-pair `for`: a pair counts once it has held that long without a break; the timer fires
    it between points, and a point below the factor restarts that pair's clock."""
    eng = Engine(ruleset(tmp_path, """\
        - alert: Burn
          match: {metric: err}
          condition:
            type: burn_rate
            objective: 0.99
            windows: [{long: 1h, short: 5m, factor: 14.4, for: 2m}, {long: 6h, short: 30m, factor: 6, for: 15m}]
        """))
    # 10% errors (10x): only the slow pair (6x) holds; it fires 15 min after its first point, by its timer
    # (points every 100 s: 900 falls between two)
    out, _ = run(eng, [sm(i * 100, 0.1, "err") for i in range(12)], ticks=[850, 900])
    assert out == [("firing", "Burn", 900.0, None)]
    # 20% (20x) fires the fast pair after its 2 min, at the first point that is at least 2 min in
    out, _ = run(Engine(eng.ruleset), [sm(i * 60, 0.2, "err") for i in range(4)])
    assert out == [("firing", "Burn", 120.0, None)]
    # the slow pair held 5 min, broken by 4 clean ones (its 30m mean, 0.5 / 9, below 6x), starts its 15 min again
    vals = [0.1] * 5 + [0.0] * 4 + [0.1] * 30  # one point a minute
    out, state = run(Engine(eng.ruleset), [sm(i * 60, v, "err") for i, v in enumerate(vals)])
    (st,) = [v for k, v in state.items() if k.startswith("rule|Burn")]
    fast, slow = st["c"]["h"]
    assert fast is None and slow is not None and slow > 8 * 60  # held again only after the clean stretch
    assert out == [("firing", "Burn", slow + 900.0, None)]


def test_predict_fires_on_a_disk_that_will_fill_within_the_horizon(tmp_path):
    """node-exporter-mixin's NodeFilesystemSpaceFillingUp: less than 40% free and, on the last 6h's trend, none left
    within 24h. The line is PromQL's predict_linear (least squares), from bounded bucket sums."""
    eng = Engine(ruleset(tmp_path, """\
        - alert: FillingUp
          match: {metric: free}
          condition: {type: predict, op: "<", value: 0, window: 6h, horizon: 24h, now: {op: "<", value: 0.4}}
          annotations: {summary: "{{ value | percent }} free"}
        """))
    # free space falls 1% an hour from 50% (a point a minute): at 40% free (10h in) it is 40h from full, beyond the
    # horizon; full at 50h, so from just after 26h in (24% free) full comes within 24h: it fires at the next point
    pts = [sm(i * 60, 0.5 - i / 6000, "free") for i in range(30 * 60)]
    out, state = run(eng, pts)
    assert out == [("firing", "FillingUp", 26 * 3600.0 + 60, None)]
    (st,) = [v for k, v in state.items() if k.startswith("rule|FillingUp")]
    last = (30 * 60 - 1) * 60
    assert len(st["c"]["b"]) <= 12 and st["c"]["v"] == pytest.approx(0.5 - (last + 24 * 3600) / 360000)  # at +24h
    # flat: full never comes; falling 6% an hour from 90%: full within 24h, but still more than 40% free (now)
    assert run(Engine(eng.ruleset), [sm(i * 60, 0.3, "free") for i in range(600)])[0] == []
    assert run(Engine(eng.ruleset), [sm(i * 60, 0.9 - i / 1000, "free") for i in range(400)])[0] == []


def test_predict_needs_a_twelfth_of_its_window(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: FillingUp
          match: {metric: free}
          condition: {type: predict, op: "<", value: 0, window: 6h, horizon: 24h}
        """))
    # a steep fall seen for 20 min (less than 30 min, a twelfth of 6h): too little to extrapolate a day from
    out, _ = run(eng, [sm(i * 60, 0.5 - i / 100, "free") for i in range(21)])
    assert out == []
    out, _ = run(Engine(eng.ruleset), [sm(i * 60, 0.5 - i / 1000, "free") for i in range(31)])
    assert out == [("firing", "FillingUp", 30 * 60.0, None)]


def test_rate_survives_a_counter_reset(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: Errors
          match: {metric: errs_total}
          condition: {type: threshold, op: ">", value: 1, agg: rate, window: 5m}
        """))
    # +30/min = 0.5/s, then a restart to 0 and +30/min again: never above 1/s
    vals = [100, 130, 160, 0, 30, 60, 90]
    out, _ = run(eng, [sm(i * 60, v, "errs_total") for i, v in enumerate(vals)])
    assert out == []
    # 1.5/s: above 1 once the window holds enough of the series (PromQL's rate: the increase is stretched to the
    # window's edges by at most half a scrape interval, so a counter seen for a minute reads 135/300 = 0.45/s)
    out, _ = run(Engine(eng.ruleset), [sm(i * 60, v * 3, "errs_total") for i, v in enumerate(vals)])
    assert out[0][:3] == ("firing", "Errors", 240.0)


def test_absent_fires_after_silence_and_resolves_on_return(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: Gone
          match: {metric: heartbeat}
          condition: {type: absent, after: 5m}
          annotations: {summary: "{{ labels.instance }} silent"}
        """))
    state: dict = {}
    out, state = run(eng, [sm(0, 1, "heartbeat"), sm(60, 1, "heartbeat")], ticks=[300, 400], state=state)
    assert out == [("firing", "Gone", 360.0, None)]
    a = eng.process(sm(500, 1, "heartbeat"), state)
    assert [(x.status, x.endsAt, x.annotations["summary"]) for x in a] == [("resolved", 500.0, "a silent")]


def test_absent_resolves_the_alert_it_fired_when_the_entity_comes_back_with_other_labels(tmp_path):
    """A workload's heartbeat events stop; they come back after its owner annotation changed hands (team-a to
    team-b: a label of the alert, not of its group): the resolution must carry the labels the alert fired with
    (its fingerprint), or the firing alert is never resolved anywhere."""
    eng = Engine(ruleset(tmp_path, """\
        - alert: Gone
          match: {source: k8s, reason: Heartbeat}
          condition: {type: absent, after: 5m}
        """))
    state: dict = {}
    of = lambda team: Entity(namespace="db", kind="Pod", name="db-0", node="n1", workload="StatefulSet/db",  # noqa: E731
                             owner=team)
    fired = eng.process(ev(0, "Heartbeat", entity=of("team-a")), state) + eng.tick(400.0, state)
    [f] = fired
    assert f.status == "firing" and f.labels["owner"] == "team-a"
    [r] = eng.process(ev(500, "Heartbeat", entity=of("team-b")), state)
    assert (r.status, r.fingerprint, r.labels) == ("resolved", f.fingerprint, f.labels)
    # and a later silence fires with what the entity says now
    [again] = eng.tick(900.0, state)
    assert again.status == "firing" and again.labels["owner"] == "team-b"


def test_anomaly_state_survives_a_json_round_trip(tmp_path):
    rs = ruleset(tmp_path, """\
        - alert: Odd
          match: {metric: lat}
          condition: {type: anomaly, detector: z, quantile: 0.99, k: 2, n: 3}
        """, extra="detectors:\n  z: {type: zscore, params: {warmup: 20}}\n")
    vals = [10.0 + (i % 5) * 0.1 for i in range(300)] + [40.0] * 5
    sig = [sm(i * 60, v, "lat") for i, v in enumerate(vals)]
    straight, _ = run(Engine(rs), sig)
    eng, state, restored = Engine(rs), {}, []
    for s in sig:
        restored += [(a.status, a.startsAt) for a in eng.process(s, state)]
        state = {k: orjson.loads(orjson.dumps(v.snapshot() if hasattr(v, "snapshot") else v)) for k, v in state.items()}
    assert straight and straight[0][0] == "firing"
    assert restored == [(s, t) for s, _, t, _ in straight]


def test_a_series_gone_for_a_day_leaves_no_detector_behind(tmp_path):
    """An idle anomaly group keeps its detector across an outage, and loses it once the series has been silent for
    ANOMALY_FORGET (a node removed by the autoscaler, a replaced pod): a full scan drops it."""
    from rules.engine import ANOMALY_FORGET, GC_EVERY

    eng = Engine(ruleset(tmp_path, """\
        - alert: Odd
          match: {metric: lat}
          condition: {type: anomaly, detector: z, quantile: 0.99, k: 2, n: 3}
        """, extra="detectors:\n  z: {type: zscore, params: {warmup: 20}}\n"))
    sig = [sm(i * 60, 10.0 + (i % 5) * 0.1, "lat", instance=inst) for i in range(100) for inst in ("gone", "stays")]
    sig = [s for s in sig if s.labels["instance"] == "stays" or s.time < 3000]  # "gone" stops at 50 min
    groups = lambda st: sorted(k for k in st if k.startswith("rule|") and not k.startswith("rule|~"))  # noqa: E731
    out, state = run(eng, sig)
    assert out == [] and len(groups(state)) == 2
    last = sig[-1].time
    # an hour's outage of both: kept (the detectors' learning survives it)
    eng.tick(last + GC_EVERY + 1, state)
    assert len(groups(state)) == 2
    # "stays" comes back; "gone" never does: a scan a day later drops only its group
    for i in range(1, 40):
        eng.process(sm(last + GC_EVERY + i * 60, 10.0, "lat", instance="stays"), state)
    t = last + GC_EVERY + 40 * 60
    while t < 3000 + ANOMALY_FORGET + 2 * GC_EVERY:
        eng.process(sm(t, 10.0 + (t // 60 % 5) * 0.1, "lat", instance="stays"), state)
        eng.tick(t, state)
        t += 600
    [left] = groups(state)
    assert state[left]["c"]["lt"] >= t - 600  # the one left is the live series'


def test_labels_identity_owner_and_static_fallback(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: B
          match: {source: [k8s, kernel], reason: [BackOff, OOMKilling]}
          condition: {type: event_count}
          labels: {owner: platform, tier: one}
        """))
    pod = eng.process(ev(0), {})[0].labels
    node = eng.process(ev(0, "OOMKilling", "kernel", NODE), {})[0].labels
    bare = eng.process(ev(0, entity=Entity(namespace="ns", kind="Pod", name="p", node="n2")), {})[0].labels
    assert pod == {"alertname": "B", "severity": "warning", "cluster": "default", "namespace": "shop",
                   "workload": "Deployment/cart", "node": "n1", "owner": "team-a", "tier": "one"}
    assert node == {"alertname": "B", "severity": "warning", "cluster": "default", "node": "n1", "owner": "platform", "tier": "one"}
    assert bare == {"alertname": "B", "severity": "warning", "cluster": "default", "namespace": "ns", "pod": "p",
                    "node": "n2", "owner": "platform", "tier": "one"}


def test_group_by_splits_within_an_entity_and_state_sits_on_one_key_per_group(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: Xid
          match: {source: kernel, reason: NvidiaXid, matchers: ['xid_class="fatal"']}
          condition: {type: event_count, count: 1, window: 1h}
          group_by: [xid]
        """))
    state: dict = {}
    out = []
    for t, xid, cls in ((0, "79", "fatal"), (10, "48", "fatal"), (20, "79", "fatal"), (30, "13", "application")):
        out += eng.process(ev(t, "NvidiaXid", "kernel", NODE, labels={"xid": xid, "xid_class": cls}), state)
    assert [(a.labels["xid"], a.status) for a in out] == [("79", "firing"), ("48", "firing")]
    keys = sorted(k for k in state if not k.startswith("rule|~"))
    assert len(keys) == 2 and all(k.startswith("rule|Xid#") and "|default//Node/n1|" in k for k in keys)
    assert isinstance(state[DUE], float)


def test_signals_that_no_rule_can_match_touch_nothing(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: B
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count}
        """))
    state: dict = {}
    assert eng.process(ev(0, "Scheduled"), state) == []
    assert eng.process(sm(0, 1.0, "up"), state) == []
    assert state == {}


def test_annotations_render_labels_values_and_filters(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: Full
          match: {metric: avail_ratio}
          condition: {type: threshold, op: "<", value: 0.1}
          annotations:
            summary: "{{ labels.mountpoint }} has {{ value | percent }} left"
        """))
    a = eng.process(sm(0, 0.034, "avail_ratio", mountpoint="/var"), {})[0]
    assert a.annotations == {"summary": "/var has 3.4% left"}
    assert a.source == "t/Full@1"


def test_new_owner_under_a_firing_alert_replaces_it(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: B
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count, window: 10m}
        """))
    state: dict = {}
    eng.process(ev(0), state)
    moved = Entity(namespace="shop", kind="Pod", name="cart-1", node="n1", workload="Deployment/cart", owner="team-b")
    got = eng.process(ev(60, entity=moved), state)
    assert [(a.status, a.labels["owner"]) for a in got] == [("resolved", "team-a"), ("firing", "team-b")]


def test_reload_keeps_state_of_unchanged_rules_and_resolves_removed_ones(tmp_path):
    both = """\
        - alert: Keep
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count, count: 2, window: 10m}
        - alert: Drop
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count, count: 1, window: 10m}
        """
    holder = EngineHolder(ruleset(tmp_path, both))
    state: dict = {}
    first = holder.engine.process(ev(0), state)
    assert [a.labels["alertname"] for a in first] == ["Drop"]
    keep_only = tmp_path / "v2" / "p.yaml"
    keep_only.parent.mkdir()
    keep_only.write_text(HEAD % "2" + "rules:\n" + textwrap.indent(textwrap.dedent(both).split("- alert: Drop")[0], "  "))
    assert holder.reload([keep_only]) == []
    resolved = holder.engine.tick(30, state)
    assert [(a.labels["alertname"], a.status, a.source) for a in resolved] == [("Drop", "resolved", "t/Drop@1")]
    # Keep's count of 1 carried over: one more BackOff fires it, with the new version in source
    fired = holder.engine.process(ev(60), state)
    assert [(a.labels["alertname"], a.source) for a in fired] == [("Keep", "t/Keep@2")]


def test_reload_of_an_invalid_pack_keeps_the_running_rules(tmp_path):
    rs = ruleset(tmp_path, """\
        - alert: B
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count}
        """)
    holder = EngineHolder(rs)
    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD % "2" + "rules:\n  - alert: B\n    match: {source: k8s}\n    condition: {type: event_count}\n    for: soon\n")
    errs = holder.reload([bad])
    assert errs == [f'{bad}:8: rules[0].for: invalid duration "soon" (use e.g. 30s, 5m, 1h30m)']
    assert holder.engine.ruleset is rs


@pytest.mark.parametrize("values,expected", [("1 2x2", [1.0, 2.0, 2.0, 2.0]), ("5-1x2 _", [5.0, 4.0, 3.0, None])])
def test_promtool_value_notation(values, expected):
    from rules.testing import expand

    assert expand(values) == expected


def test_a_workloads_pods_split_by_node_so_node_alerts_can_inhibit_them(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: B
          match: {source: k8s, reason: BackOff}
          condition: {type: event_count, count: 1, window: 10m}
        """))
    state: dict = {}
    out = []
    for t, pod, node in ((0, "cart-1", "n1"), (10, "cart-2", "n1"), (20, "cart-3", "n2")):
        out += eng.process(ev(t, entity=Entity(namespace="shop", kind="Pod", name=pod, node=node,
                                                workload="Deployment/cart")), state)
    assert [(a.labels["workload"], a.labels["node"]) for a in out] == [("Deployment/cart", "n1"), ("Deployment/cart", "n2")]
    assert sorted(k.split("|", 2)[2] for k in state if not k.startswith("rule|~")) == [
        "default/shop/Deployment/cart|@n1", "default/shop/Deployment/cart|@n2"]


def test_absent_forgets_a_series_gone_for_good(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: Gone
          match: {metric: heartbeat}
          condition: {type: absent, after: 5m, forget: 1h}
        """))
    out, state = run(eng, [sm(0, 1, "heartbeat")], ticks=[600, 3500, 4000])
    assert out == [("firing", "Gone", 300.0, None), ("resolved", "Gone", 300.0, 3600.0)]
    assert not [k for k in state if not k.startswith("rule|~")]


def test_non_string_label_values_are_matched_as_text(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: Disk
          match: {metric: node_md_disks, matchers: ['state="failed"', 'slot=~"[0-9]+"']}
          condition: {type: threshold, op: ">", value: 0}
        """))
    out = eng.process(Sample("node_md_disks", 1.0, 0.0, {"state": "failed", "slot": 3, "x": None}), {})
    # alert labels are strings, and an empty one is no label (as Alertmanager drops it)
    assert [(a.labels["slot"], "x" in a.labels) for a in out] == [("3", False)]


def test_idle_groups_have_no_timer_and_go_at_the_hourly_scan(tmp_path):
    eng = Engine(ruleset(tmp_path, """\
        - alert: Errors
          match: {metric: errs_total}
          condition: {type: threshold, op: ">", value: 1, agg: rate, window: 5m}
        """))
    state: dict = {}
    eng.tick(0.0, state)
    eng.process(sm(10, 5, "errs_total"), state)
    assert DUE not in state  # an idle group going stale needs no timer
    eng.tick(1800.0, state)
    assert len([k for k in state if not k.startswith("rule|~")]) == 1
    eng.tick(3600.0, state)
    assert [k for k in state if not k.startswith("rule|~")] == []


def test_a_pack_can_switch_off_rules_of_another(tmp_path):
    from rules.load import DEFAULT_PACK

    site = tmp_path / "managed.yaml"
    site.write_text(HEAD.replace("name: t", "name: managed-control-plane") % "1"
                    + "disable: [KubeSchedulerDown, KubeControllerManagerDown]\nrules: []\n")
    rs = load_packs([DEFAULT_PACK, site])
    alerts = {r.alert for r in rs.rules}
    assert "KubeSchedulerDown" not in alerts and "KubeControllerManagerDown" not in alerts
    assert "KubeAPIDown" in alerts and len(rs) == len(load_packs([DEFAULT_PACK])) - 2


def test_every_filter_shows_an_infinite_or_nan_value_as_it_is(tmp_path):
    """``{{ value | int }}`` of +Inf raised OverflowError: the sample was dead-lettered and the alert never fired
    (KubeAggregatedAPIErrors' counter gone to +Inf did so). Every filter now writes +Inf and NaN as they are."""
    eng = Engine(ruleset(tmp_path, """\
        - alert: Wild
          match: {metric: errs}
          condition: {type: threshold, op: ">", value: 1}
          annotations:
            summary: "{{ value | int }} errors, {{ value | bytes }}, {{ value | duration }}, {{ value | percent }}"
        """))
    a = eng.process(sm(0, float("inf"), "errs"), {})[0]
    assert a.annotations == {"summary": "inf errors, inf, inf, inf%"}


def _restarted(store):
    """What a restarted worker reads back: every key through the changelog's encoding (orjson: NaN and Inf -> null)."""
    import orjson

    from streams.state import Store

    new = Store()
    for k, v in dict.items(store):
        snap = getattr(v, "snapshot", None)
        new.restore(k.encode(), orjson.dumps(snap() if snap else v, option=orjson.OPT_SERIALIZE_NUMPY))
    return new


def test_a_nan_or_infinite_sample_never_enters_state_so_a_restarted_worker_goes_on(tmp_path):
    """NaN and +-Inf went into windows, burn-rate and predict buckets and detector state; the changelog wrote them
    as null and the series' next sample after a restart raised TypeError, for good (every later sample of it
    dead-lettered). A detector fed one NaN scored NaN for ever."""
    import math

    from streams.state import Store

    conds = {
        "avg": "{type: threshold, op: '>', value: 5, agg: avg, window: 10m}",
        "increase": "{type: threshold, op: '>', value: 5, agg: increase, window: 10m}",
        "burn": "{type: burn_rate, objective: 0.99, windows: [{long: 1h, short: 5m, factor: 14.4}]}",
        "predict": "{type: predict, op: '<', value: 0, window: 1h, horizon: 4h}",
        "anomaly": "{type: anomaly, detector: d, above: 0.9}",
    }
    for bad in (math.nan, math.inf, -math.inf):
        for name, cond in conds.items():
            eng = Engine(ruleset(tmp_path, f"- alert: A\n  match: {{metric: m}}\n  condition: {cond}\n",
                                 extra="detectors:\n  d: {type: onset}\n", name=f"{name}.yaml"))
            st = Store()
            for i in range(40):
                eng.process(sm(i * 30, bad if i == 20 else 1.0 + i * 0.01, "m"), st)
            st = _restarted(st)
            for i in range(40, 300):
                eng.process(sm(i * 30, 1.0 + i * 0.01 if i < 290 else 50.0, "m"), st)
    # and a detector that saw one NaN still sees a later jump (it scored NaN for ever after it)
    eng = Engine(ruleset(tmp_path, "- alert: Jump\n  match: {metric: m}\n  condition: {type: anomaly, detector: d, "
                                   "above: 0.9}\n", extra="detectors:\n  d: {type: zscore, params: {warmup: 60}}\n",
                         name="jump.yaml"))

    def scores(nan_at):
        st, out = {}, []
        for i in range(302):
            v = math.nan if i == nan_at else (50.0 if i >= 300 else 10.0 + (i % 5) * 0.1)
            eng.process(sm(i * 30, v, "m"), st)
            if i >= 299:
                out.append([x for x in st.values() if isinstance(x, dict) and "c" in x][0]["c"]["sc"])
        return out

    import pytest

    with_nan, without = scores(100), scores(None)
    assert with_nan == pytest.approx(without, rel=0.01) and with_nan[0] < 0.1 < with_nan[1] < with_nan[2]


def test_a_sustained_jump_fires_a_quantile_anomaly_rule(tmp_path):
    """The quantile was of every recent score: a sustained anomaly's scores (stuck at the top) raised the cut to the
    top within two points and the 3-of-5 never came, while a mild shift did fire. Now it is of the normal points'."""
    eng = Engine(ruleset(tmp_path, """\
        - alert: Pending
          match: {metric: pending}
          condition: {type: anomaly, detector: z, quantile: 0.99, k: 3, n: 5}
        """, extra="detectors:\n  z: {type: zscore, params: {warmup: 60}}\n"))
    st, fired = {}, []
    for i in range(300):
        fired += [a.startsAt for a in eng.process(sm(i * 30, 0.0 if i < 200 else 500.0, "pending"), st)
                  if a.status == "firing"]
    assert fired and fired[0] == 202 * 30.0  # on the jump's 3rd point (3 of 5)


def test_a_scrape_gap_shorter_than_the_window_keeps_a_burn_rates_history_whenever_ticks_come(tmp_path):
    """A 6-minute gap dropped the state at the first tick inside it: with a tick, 2 minutes of 20 % errors after 55
    clean minutes fired (the clean hour forgotten); without one they did not. Now both keep the hour."""
    def fired(tick_in_gap: bool) -> list:
        eng = Engine(ruleset(tmp_path, BURN, extra="defaults: {stale_after: 5m}\n", name="gap.yaml"))
        st: dict = {}
        out = []
        for i in range(56):
            out += eng.process(sm(i * 60, 0.0, "err"), st)
        if tick_in_gap:
            out += eng.tick(55 * 60 + 330, st)
        for i in range(2):
            out += eng.process(sm(61 * 60 + i * 60, 0.2, "err"), st)
        return [(a.status, a.startsAt) for a in out]

    assert fired(True) == fired(False) == []


def test_an_event_counts_count_is_of_its_window(tmp_path):
    """``{{ count }}`` was the count since the group began: an OOM kill every 10 minutes for 5 hours, then 10 in 2
    minutes, said "39 within 15m" where there were 11."""
    eng = Engine(ruleset(tmp_path, """\
        - alert: Kills
          match: {source: k8s, reason: OOMKilling}
          condition: {type: event_count, count: 5, window: 15m}
          annotations: {summary: "{{ count }} OOM kills within 15m"}
        """))
    st, out = {}, []
    for i in range(30):
        out += eng.process(ev(i * 600, reason="OOMKilling"), st)
    for i in range(10):
        out += eng.process(ev(18_000 + i * 12, reason="OOMKilling"), st)
    firing = [a for a in out if a.status == "firing"]
    assert firing and firing[0].annotations["summary"] in ("5 OOM kills within 15m", "6 OOM kills within 15m")
    (_, c), = [(k, v["c"]) for k, v in st.items() if k.startswith("rule|Kills")]
    assert c["k"] in (11, 12)  # the 10 of the burst and the one 10 minutes before (a bucket's edge may add one)


def test_a_state_rule_grouped_by_a_label_resolves_on_an_event_without_it(tmp_path):
    """rules/README: a state is cleared by its resolve reasons on the same entity. With group_by, the Recovered event
    (no container label) matched no group and the alert fired for ever."""
    eng = Engine(ruleset(tmp_path, """\
        - alert: Stuck
          match: {source: k8s, reason: Stuck}
          condition: {type: state, resolve_reasons: [Recovered]}
          group_by: [container]
        """))
    st, out = {}, []
    out += eng.process(ev(0, reason="Stuck", labels={"container": "app"}), st)
    out += eng.process(ev(10, reason="Stuck", labels={"container": "sidecar"}), st)
    out += eng.process(ev(60, reason="Recovered"), st)
    assert sorted((a.status, a.labels["container"]) for a in out) == [
        ("firing", "app"), ("firing", "sidecar"), ("resolved", "app"), ("resolved", "sidecar")]
