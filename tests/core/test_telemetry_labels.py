"""Self-metrics labelled from input stay a bounded number of series (core.telemetry)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

from core import telemetry


def word(i: int) -> str:
    """A distinct text per number that ``reason_key`` does not fold (no digits, no quotes)."""
    return "".join("abcdefghij"[int(c)] for c in str(i))


def series(registry) -> set[tuple[str, str]]:
    return {(s.labels["origin"], s.labels["reason"]) for m in registry.collect() for s in m.samples
            if s.name.endswith("_total")}


@pytest.fixture
def deadletters(monkeypatch):
    """kubesight_deadletters_total in a registry of its own, with a fresh cap (as at start)."""
    registry = CollectorRegistry()
    counter = Counter("kubesight_deadletters", "t", ["origin", "reason"], registry=registry)
    monkeypatch.setattr(telemetry, "DEADLETTERS", counter)
    cap = telemetry.DEADLETTER_LABELS  # the worker's own settings, its values not yet seen
    monkeypatch.setattr(telemetry, "DEADLETTER_LABELS", telemetry.LabelCap(cap.limit, keep=cap.keep))
    return registry


def test_dead_letter_reasons_naming_input_are_one_series_and_at_most_200(deadletters):
    """Reasons that quote a metric's or a label's name from the input made one series of kubesight_deadletters_total
    per name (an audit: 4,000 from 2,000 remote-write requests, still growing)."""
    registry = deadletters
    for i in range(1000):
        telemetry.count_deadletter("collector/metrics", f"remote-write: timeseries[{i}]: duplicate label 'l{i}'")
    for i in range(300):
        telemetry.count_deadletter("collector/cloud", f"unknown payload shape ({word(i)})")
    reasons = {s.labels["reason"] for m in registry.collect() for s in m.samples if s.name.endswith("_total")}
    assert "remote-write: timeseries[N]: duplicate label '…'" in reasons
    assert len(series(registry)) == 201  # 200 and ("collector/cloud", "other")
    assert registry.get_sample_value("kubesight_deadletters_total",
                                     {"origin": "collector/metrics",
                                      "reason": "remote-write: timeseries[N]: duplicate label '…'"}) == 1000


def test_past_the_cap_a_dead_letter_keeps_its_origin(deadletters):
    """One collector's reasons filling the 200 pairs turned every later pair into {origin="other",reason="other"}:
    where the dead letters came from was lost with them (an audit).  The origin, a fixed set, stays; the reason is
    capped."""
    for i in range(250):
        telemetry.count_deadletter("collector/cloud", f"shape {word(i)}")
    telemetry.count_deadletter("collector/metrics", "remote-write: snappy: corrupt input")
    telemetry.count_deadletter("worker/signals", "late: 31s behind its partition's event time")
    telemetry.count_deadletter("collector/cloud", f"shape {word(0)}")  # a pair seen before the cap keeps its reason

    def value(origin, reason):
        return deadletters.get_sample_value("kubesight_deadletters_total", {"origin": origin, "reason": reason})

    assert value("collector/metrics", "other") == 1
    assert value("worker/signals", "other") == 1
    assert value("collector/cloud", "other") == 50
    assert value("collector/cloud", f"shape {word(0)}") == 2
    assert not any(origin == "other" for origin, _ in series(deadletters))
    assert len(series(deadletters)) == 203  # the 200, and one "other" per origin


def test_reason_key_folds_repr_quoted_names_and_lists_of_them():
    """A payload's keys, quoted by repr() (which escapes a quote inside), fold whole: a key with a quote in it once
    left its tail unfolded, a series per key again; and any number of them is one '…'."""
    for keys in (["alpha"], ["bravo", "charlie"], ["it's"], ['a\'b"c', "d"], ['x"y']):
        reason = f"unknown payload shape (top-level keys: {', '.join(map(repr, keys))})"
        assert telemetry.reason_key(reason) == "unknown payload shape (top-level keys: '…')", keys
