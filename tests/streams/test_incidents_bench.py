"""bench rca: the replay (samples -> rules with onset -> incidents) and its scoring, on a synthetic fault; the missing corpus."""

from __future__ import annotations

import math

import pytest

from core.records import Sample
from kubesight.cli import main
from streams.bench_rca import PARAMS, replay, score

T0 = 1_661_140_000.0


def _series(fault_at: int):
    """Two services, frontend -> cart; 120 minutes of steady noise; at ``fault_at`` cart's CPU and memory
    jump (its fault), and a minute later frontend's client latency rises (the symptom)."""
    out = []
    for i in range(120):
        t = T0 + 60 * i
        wob = 0.05 * math.sin(i * 1.7)
        vals = {("cart", "pod_cpu_usage_rate"): 10 + wob, ("cart", "pod_memory_usage_rate"): 30 + wob,
                ("frontend", "pod_client_latency_p90"): 0.2 + wob / 10, ("frontend", "pod_cpu_usage_rate"): 20 + wob}
        if fault_at <= i < fault_at + 4:
            vals[("cart", "pod_cpu_usage_rate")] = 90.0
            vals[("cart", "pod_memory_usage_rate")] = 70.0
        if fault_at + 1 <= i < fault_at + 4:
            vals[("frontend", "pod_client_latency_p90")] = 3.0
        for (svc, name), v in sorted(vals.items()):
            out.append(Sample(name=name, value=v, time=t, labels={"cluster": "hipster", "namespace": "hipster",
                                                                  "workload": svc, "pod": f"{svc}-1-a"}))
    return out


def test_the_callee_with_the_fault_ranks_first_in_the_incident_opened_at_the_injection():
    samples = _series(fault_at=80)
    recs, n_alerts = replay(samples, {"frontend": ["cart"]}, PARAMS)
    assert n_alerts >= 3
    fig = score(recs, [{"t": T0 + 60 * 80, "pod": "cart-1-a", "service": "cart", "type": "cpu_consumed"}])
    row = fig["per_fault"][0]
    assert row["incident"] is not None and row["rank"] == 1, row
    assert 0 <= row["delay"] <= 60 and fig["top1"] == 1.0 and fig["incidents_matching_no_fault"] == 0
    final = [r for r in recs if r["id"] == row["incident"]][-1]
    assert final["status"] == "resolved"
    assert final["candidates"][0]["explains"] == ["workload/hipster/frontend"]


def test_missing_corpus_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "rca", "--data", str(tmp_path)])
    assert str(e.value).startswith(f"{tmp_path}/nezha-rca-data/rca_data: corpus not found; pass --data PATH")
