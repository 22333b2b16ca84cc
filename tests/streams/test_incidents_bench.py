"""bench rca: the replay (samples -> rules with onset -> incidents) and its scoring, on a synthetic fault; the missing corpus."""

from __future__ import annotations

import math

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
    assert main(["bench", "rca", "--data", str(tmp_path)]) == 2  # the user's to fix
    assert capsys.readouterr().err.startswith(
        f"kubesight: {tmp_path}/nezha-rca-data/rca_data: corpus not found; pass --data PATH")


def _mesh_day(tmp_path, delay_at: int, n: int = 150, busy_at: int | None = None):
    """A day folder with the service mesh's files only: frontend -> cart, checkout -> cart, frontend -> checkout,
    1-minute rows; from ``delay_at`` for 4 minutes a network delay on cart: the caller side of the edges into
    cart reads 0.75 s (the callee side, cart's proxy, does not see it); one minute without calls (empty).
    ``busy_at``: 3 minutes of a busy cart before, both sides of its edges at 2 s."""
    import csv as _csv
    from datetime import UTC, datetime

    edges = ["frontend_cartservice", "checkoutservice_cartservice", "frontend_checkoutservice"]
    (tmp_path / "metric").mkdir()
    for fname, side in (("source_50.csv", "source"), ("destination_50.csv", "destination")):
        with (tmp_path / "metric" / fname).open("w", newline="") as fh:
            w = _csv.writer(fh)
            w.writerow(["time", "timestamp", *edges])
            for i in range(n):
                t = T0 + 60 * i + (0.4 if side == "source" else 0.0)
                stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S.%f") + " +0000 UTC m=+1.0"
                wob = 0.0005 * math.sin(i * 1.7)
                row = [0.005 + wob, 0.004 + wob, 0.2 + 10 * wob]
                if busy_at is not None and busy_at <= i < busy_at + 3:
                    row[0] = row[1] = 2.0
                if side == "source" and delay_at <= i < delay_at + 4:
                    row[0] = row[1] = 0.75
                    row[2] = 0.9  # checkout waits on cart
                vals = [f"{v:.6f}" for v in row]
                if i == 20:
                    vals[1] = ""
                w.writerow([stamp, int(t), *vals])
    with (tmp_path / "metric" / "front_service.csv").open("w", newline="") as fh:
        w = _csv.writer(fh)
        w.writerow(["Time", "TimeStamp", "ServiceName", "SuccessRate(%)", "LatencyP50(s)", "LatencyP90(s)"])
        for i in range(n):
            t = T0 + 60 * i
            stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S.%f") + " +0000 UTC m=+1.0"
            w.writerow([stamp, int(t), "Frontend", 100, 0.1, 0.3 + 0.01 * math.sin(i)])
    return tmp_path


def test_mesh_samples_name_the_callee_and_carry_the_network_share(tmp_path):
    from streams.bench_rca import load_mesh

    out = load_mesh(_mesh_day(tmp_path, delay_at=100))
    src = [s for s in out if s.name == "edge_source_latency_p50"]
    assert len(src) == 3 * 150 - 1  # the empty cell (a minute without calls) is no sample
    cart = [s for s in src if s.labels["source_workload"] == "checkoutservice"]
    assert {s.labels["workload"] for s in cart} == {"cartservice"} == {s.labels["destination_workload"] for s in cart}
    net = {(s.labels["source_workload"], s.labels["workload"], s.time): s.value
           for s in out if s.name == "edge_network_latency_log_ratio"}
    # log(caller side / callee side) of the same scrape (0.4 s apart): the delay's factor, and 0 otherwise
    assert abs(net[("frontend", "cartservice", T0 + 60 * 101)] - math.log(0.75 / (0.005 + 0.0005 * math.sin(101 * 1.7)))) < 1e-3
    assert abs(net[("frontend", "cartservice", T0 + 60 * 50)]) < 1e-3
    assert ("checkoutservice", "cartservice", T0 + 60 * 20) not in net
    front = [s for s in out if s.name == "service_success_rate"]
    assert len(front) == 150 and front[0].labels["workload"] == "frontend" and front[0].value == 100.0


def test_a_network_delay_seen_only_on_the_edges_into_the_callee_ranks_the_callee_first(tmp_path):
    from streams.bench_rca import detect, load_mesh, select

    # cart was busy 15 minutes earlier (its edges slower than the delay will make them, on both sides): the
    # edges' latency series keep that in their range, the caller/callee ratio does not
    samples = sorted(load_mesh(_mesh_day(tmp_path, delay_at=110, busy_at=95)), key=lambda s: (s.time, s.name))
    deps = {"frontend": ["cartservice", "checkoutservice"], "checkoutservice": ["cartservice"]}
    fault = [{"t": T0 + 60 * 110, "pod": "cartservice-1-a", "service": "cartservice", "type": "network_delay"}]
    recs, _ = replay(samples, deps, PARAMS)
    row = score(recs, fault)["per_fault"][0]
    assert row["rank"] == 1, row
    final = [r for r in recs if r["id"] == row["incident"]][-1]
    top = final["candidates"][0]
    assert any("EdgeNetworkLatencyLogRatioAnomaly" in e for e in top["evidence"]), top["evidence"]
    final = [r for r in recs if r["id"] == row["incident"]][-1]
    assert "workload/hipster/checkoutservice" in final["candidates"][0]["explains"]
    # without the mesh's series there is nothing to see: the pods' metrics are not in this folder
    assert replay(samples, deps, {**PARAMS, "mesh": False})[1] == 0
    # one detection with every rule, then each parameter set's own alerts: the same alerts as its own run
    full = detect(samples, PARAMS)
    for params in ({**PARAMS, "mesh": False}, {**PARAMS, "metrics": "golden"}):
        own = [(c[1].labels["alertname"], c[1].startsAt, c[1].status) for c in detect(samples, params) if c[0] == "a"]
        assert own == [(c[1].labels["alertname"], c[1].startsAt, c[1].status) for c in select(full, params) if c[0] == "a"]


def test_a_caller_that_stops_calling_some_callees_raises_a_skipped_call_on_itself(tmp_path):
    import csv as _csv
    from datetime import UTC, datetime

    from streams.bench_rca import detect, load_mesh

    edges = ["checkoutservice_paymentservice", "checkoutservice_emailservice", "checkoutservice_cartservice",
             "frontend_checkoutservice"]
    (tmp_path / "metric").mkdir()
    with (tmp_path / "metric" / "source_50.csv").open("w", newline="") as fh:
        w = _csv.writer(fh)
        w.writerow(["time", "timestamp", *edges])
        for i in range(60):
            t = T0 + 60 * i
            vals = ["0.003", "0.003", "0.004", "0.2"]
            if 40 <= i < 43:  # checkout fails before charging: no call to payment nor e-mail, cart still called
                vals[0] = vals[1] = ""
            if i == 30:  # a scrape without any call of checkout: a gap, not a skip
                vals[:3] = ["", "", ""]
            stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S.%f") + " +0000 UTC m=+1.0"
            w.writerow([stamp, int(t), *vals])
    out = [s for s in load_mesh(tmp_path) if s.name == "edge_calls_skipped"]
    # the frontend has one callee here: nothing to compare with, no series
    assert {s.labels["workload"] for s in out} == {"checkoutservice"}
    assert len(out) == 3 * 59  # 3 edges a minute, except the gap
    ones = {(s.labels["destination_workload"], s.time) for s in out if s.value == 1.0}
    assert ones == {(d, T0 + 60 * i) for d in ("paymentservice", "emailservice") for i in (40, 41, 42)}
    fired = [c[1] for c in detect(sorted(out, key=lambda s: (s.time, s.labels["destination_workload"])), PARAMS)
             if c[0] == "a" and c[1].status == "firing"]
    assert sorted((a.labels["alertname"], a.labels["workload"], a.labels["destination_workload"], a.startsAt)
                  for a in fired) == [("EdgeCallsSkipped", "checkoutservice", d, T0 + 2400)
                                      for d in ("emailservice", "paymentservice")]
    assert {a.labels["signal"] for a in fired} == {"errors"}
