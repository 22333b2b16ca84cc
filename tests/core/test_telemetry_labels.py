"""Self-metrics labelled from input stay a bounded number of series (core.telemetry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from core import telemetry


def test_dead_letter_reasons_naming_input_are_one_series_and_at_most_200(monkeypatch):
    """Reasons that quote a metric's or a label's name from the input made one series of kubesight_deadletters_total
    per name (an audit: 4,000 from 2,000 remote-write requests, still growing)."""
    registry = CollectorRegistry()
    counter = Counter("kubesight_deadletters", "t", ["origin", "reason"], registry=registry)
    monkeypatch.setattr(telemetry, "DEADLETTERS", counter)
    monkeypatch.setattr(telemetry, "DEADLETTER_LABELS", telemetry.LabelCap(200))
    for i in range(1000):
        telemetry.count_deadletter("collector/metrics", f"remote-write: timeseries[{i}]: duplicate label 'l{i}'")
    for i in range(300):
        telemetry.count_deadletter(f"origin-{i}", "x")
    reasons = {s.labels["reason"] for m in registry.collect() for s in m.samples if s.name.endswith("_total")}
    assert "remote-write: timeseries[N]: duplicate label '…'" in reasons
    assert len({(s.labels["origin"], s.labels["reason"]) for m in registry.collect() for s in m.samples
                if s.name.endswith("_total")}) == 201  # 200 and "other"
    assert registry.get_sample_value("kubesight_deadletters_total",
                                     {"origin": "collector/metrics",
                                      "reason": "remote-write: timeseries[N]: duplicate label '…'"}) == 1000
