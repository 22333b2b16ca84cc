"""Bounds on what the input drives into the rule engine's state: a dense threshold window, live anomaly detectors."""

from __future__ import annotations

import random
import textwrap
from types import SimpleNamespace

import orjson
import pytest

from core.records import RECORD_LIMIT, Sample
from rules import conditions as C
from rules.engine import Engine
from rules.load import load_packs
from streams.state import Store

HEAD = 'apiVersion: kubesight.io/v1\nkind: RulePack\nmetadata: {name: b, version: "1"}\n'


def engine(tmp_path, rules: str, **kw) -> Engine:
    f = tmp_path / "b.yaml"
    f.write_text(HEAD + "rules:\n" + textwrap.indent(textwrap.dedent(rules), "  "))
    return Engine(load_packs([f]), **kw)


def group(state) -> dict:
    (st,) = [v for k, v in state.items() if k.startswith("rule|") and "~" not in k]
    return st["c"]


def test_a_series_sent_every_10ms_keeps_a_10m_window_under_the_record_limit(tmp_path):
    """A threshold window kept every point: 60,000 points (one every 10 ms over 10m) made a group state of 2.0 MB,
    over the 1 MB Kafka takes (the partition stops). Past TH_POINTS the window is folded into time buckets."""
    eng = engine(tmp_path, """\
        - alert: Busy
          match: {metric: m}
          condition: {type: threshold, op: ">", value: 1e9, agg: avg, window: 10m}
        """)
    st, rnd = Store(), random.Random(1)
    t0 = 1_764_441_600.0
    for i in range(60_000):
        eng.process(Sample("m", 50.0 + rnd.gauss(0, 5), t0 + i * 0.01, {"pod": "a"}), st)
    size = max(len(k) + len(v) for k, v in st.flush_items() if v)
    assert size < RECORD_LIMIT // 20, size
    assert len(group(st)["b"]) <= C.TH_BUCKETS and "p" not in group(st)


@pytest.mark.parametrize("agg", ["avg", "min", "max", "sum", "count", "last", "increase", "rate"])
def test_a_bucketed_window_is_exact_over_the_buckets_it_holds(agg):
    """Every aggregate of a folded window equals the exact one over the points of the buckets held, and those cover
    the last 119/120 to 120/120 of the window (a counter with resets for increase and rate)."""
    cond = SimpleNamespace(window=600.0, agg=agg)
    rnd = random.Random(2)
    c, pts, v = {}, [], 0.0
    t0 = 1_764_441_600.0
    for i in range(9_000):  # 15 minutes at 100 ms: 6,000 points a window, and the window slides
        t = t0 + i * 0.1
        v = 0.0 if i % 2_000 == 0 else v + rnd.random()  # a counter that restarts now and then
        x = v if agg in ("increase", "rate") else rnd.gauss(50, 5)
        C.th_update(cond, c, t, Sample("m", x, t, {}))
        pts.append([t, x])
    assert "b" in c
    w = cond.window / C.TH_BUCKETS
    start = c["b"][0][0] * w
    assert t - cond.window <= start < t - cond.window + w + 1e-6
    held = [p for p in pts if p[0] >= start]
    assert c["v"] == pytest.approx(C._agg(agg, held, cond.window, t), rel=1e-9)


def test_a_scrape_every_15s_over_1h_keeps_its_points_and_a_restored_old_state_goes_on(tmp_path):
    """The common case is unchanged: its points, as before (so a state written before the buckets loads)."""
    eng = engine(tmp_path, """\
        - alert: Busy
          match: {metric: m}
          condition: {type: threshold, op: ">", value: 1e9, agg: increase, window: 1h}
        """)
    st = {}
    for i in range(400):
        eng.process(Sample("m", float(i), i * 15.0, {"pod": "a"}), st)
    c = group(st)
    assert "b" not in c and len(c["p"]) == 241 and c["v"] == pytest.approx(C._agg("increase", c["p"], 3600.0,
                                                                                   399 * 15.0))
    st = orjson.loads(orjson.dumps(st))  # a restart
    eng.process(Sample("m", 400.0, 400 * 15.0, {"pod": "a"}), st)
    assert len(group(st)["p"]) == 241 and "b" not in group(st)


ANOMALY = """\
    - alert: Odd
      match: {metric: m}
      condition: {type: anomaly, detector: d, above: 0.5}
      for: 0s
    """


def anomaly_engine(tmp_path, **kw) -> Engine:
    f = tmp_path / "a.yaml"
    f.write_text(HEAD + "detectors:\n  d: {type: zscore, params: {warmup: 20}}\nrules:\n"
                 + textwrap.indent(textwrap.dedent(ANOMALY), "  "))
    return Engine(load_packs([f]), **kw)


def test_live_anomaly_detectors_are_capped_longest_idle_first(tmp_path):
    """Detectors were forgotten 24 h after their series' last point, not capped in number (2 new series a second:
    ~170k, ~230 MB). Past ``anomaly_max`` in a state, a new series drops the longest-idle ones (counted)."""
    eng = anomaly_engine(tmp_path, anomaly_max=100)
    st = {}
    for i in range(250):  # a new series every 0.5 s; "keep" sends a point every 10 s
        t = i * 0.5
        eng.process(Sample("m", 1.0, t, {"pod": f"p{i}"}), st)
        if i % 20 == 0:
            eng.process(Sample("m", 1.0, t, {"pod": "keep"}), st)
    keys = [k for k in st if k.startswith("rule|") and "~" not in k]
    assert len(keys) <= 100 and eng.evicted >= 150
    assert any("keep" in k for k in keys) and any("p249" in k for k in keys) and not any("p0" in k for k in keys)


def test_the_cap_keeps_a_firing_anomaly_group(tmp_path):
    """A pending or firing group is not evicted (its resolution would never come)."""
    eng = anomaly_engine(tmp_path, anomaly_max=10)
    st = {}
    for i in range(100):
        eng.process(Sample("m", 10.0 + (i % 5) * 0.1, i * 30.0, {"pod": "hot"}), st)
    out = []
    for i in range(100, 104):
        out += eng.process(Sample("m", 500.0, i * 30.0, {"pod": "hot"}), st)
    assert [a.status for a in out] == ["firing"]
    for i in range(50):
        eng.process(Sample("m", 1.0, 3130.0 + i, {"pod": f"p{i}"}), st)
    assert any("hot" in k for k in st) and eng.evicted >= 40


def test_evictions_are_a_self_metric_that_goes_on_across_a_reload(tmp_path):
    """``Engine.evicted`` is exported as ``kubesight_anomaly_groups_evicted``; a reload swaps the engine, and the
    counter carries on rather than falling back to 0."""
    from rules.holder import EngineHolder
    from streams.stages import RulesStage
    from streams.telemetry import WorkerMetrics

    eng = anomaly_engine(tmp_path, anomaly_max=10)
    st = {}
    for i in range(30):
        eng.process(Sample("m", 1.0, i * 0.5, {"pod": f"p{i}"}), st)
    holder = EngineHolder(eng.ruleset)
    holder.engine = eng
    holder.swap(eng.ruleset)
    assert holder.engine is not eng and holder.engine.evicted == eng.evicted >= 20
    fams = {f.name: f for f in WorkerMetrics([], RulesStage(holder)).collect()}
    assert fams["kubesight_anomaly_groups_evicted"].samples[0].value == eng.evicted
