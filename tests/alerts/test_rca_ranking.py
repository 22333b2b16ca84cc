"""Root-cause ranking quality (issue 15): the call-path rule of ``explains``, rank's weights, and the
protocol ``bench rca`` chooses its parameters by (in-sample, leave one fault out, halves)."""

from __future__ import annotations

import json
import math

from alerts.incidents import WEIGHTS, Incidents, closure, explains, rank
from core.records import Alert, Sample
from streams.bench_rca import PARAMS, cross_validate, detect, warmup

T0 = 1_700_000_000.0
DEPS = {"frontend": ["cart", "checkout"], "checkout": ["cart"]}


def member(t, workload, alertname, signal):
    return {"labels": {"alertname": alertname, "namespace": "shop", "workload": workload, "signal": signal},
            "startsAt": t, "status": "firing", "summary": ""}


def test_a_callee_explains_a_caller_that_is_slow_or_failing_not_one_that_is_only_saturated():
    reach = closure(DEPS)
    cart = [member(T0, "cart", "CpuNearLimit", "saturation")["labels"]]
    slow = [member(T0, "frontend", "LatencyAnomaly", "latency")["labels"]]
    failing = [member(T0, "frontend", "SuccessRateAnomaly", "errors")["labels"]]
    busy = [member(T0, "frontend", "MemoryAnomaly", "saturation")["labels"],
            member(T0, "frontend", "WorkloadAnomaly", "traffic")["labels"]]
    assert explains("workload/shop/cart", cart, "workload/shop/frontend", slow, reach) == "frontend calls cart"
    assert explains("workload/shop/cart", cart, "workload/shop/frontend", failing, reach) == "frontend calls cart"
    assert explains("workload/shop/cart", cart, "workload/shop/frontend", busy, reach) is None
    # never upwards: the caller does not explain its callee, however slow the callee is
    assert explains("workload/shop/frontend", slow, "workload/shop/cart",
                    [member(T0, "cart", "LatencyAnomaly", "latency")["labels"]], reach) is None
    # alerts without a signal label (the Kubernetes rules): unknown, so they may be a call path's symptom
    assert explains("workload/shop/cart", cart, "workload/shop/frontend",
                    [{"alertname": "KubePodNotReady", "namespace": "shop", "workload": "frontend"}], reach)


def test_saturation_noise_on_a_callee_no_longer_outranks_the_saturated_caller():
    # checkout's CPU fault; cart's memory wobbles the same minute: cart used to "explain" checkout (a callee)
    ms = {"a": member(T0, "cart", "MemoryAnomaly", "saturation"),
          "b": member(T0, "checkout", "CpuNearLimit", "saturation"),
          "c": member(T0, "checkout", "CpuAnomaly", "saturation")}
    cands = rank(ms, closure(DEPS))
    assert [c["entity"] for c in cands] == ["workload/shop/checkout", "workload/shop/cart"]
    assert cands[1]["explains"] == []


def test_weights_trade_the_explained_share_against_breadth_deterministically():
    # cart (one latency alert, first) explains the slow frontend; frontend has three different signals abnormal
    ms = {"a": member(T0, "cart", "LatencyAnomaly", "latency"),
          "b": member(T0 + 60, "frontend", "LatencyAnomaly", "latency"),
          "c": member(T0 + 60, "frontend", "CpuAnomaly", "saturation"),
          "d": member(T0 + 60, "frontend", "SuccessRateAnomaly", "errors")}
    reach = closure(DEPS)
    by_share = rank(ms, reach, window=300, weights=(1.0, 0.0, 0.0, 0.0))
    by_breadth = rank(ms, reach, window=300, weights=(0.0, 0.0, 0.0, 1.0))
    assert [c["entity"] for c in by_share][0] == "workload/shop/cart"
    assert [c["entity"] for c in by_breadth][0] == "workload/shop/frontend"
    assert rank(ms, reach, window=300) == rank(dict(reversed(list(ms.items()))), reach, window=300)
    # the default weights are the worker's: the explaining, earlier callee first
    assert rank(ms, reach, window=300, weights=WEIGHTS)[0]["entity"] == "workload/shop/cart"


def test_the_incident_stage_ranks_the_injected_callee_first_through_its_own_alerts():
    inc = Incidents(deps=DEPS, window=120, quiet=60)
    state: dict = {}
    out = []
    for t, w, name, sig in ((T0, "cart", "CpuNearLimit", "saturation"), (T0, "cart", "LatencyAnomaly", "latency"),
                            (T0 + 60, "checkout", "LatencyAnomaly", "latency"),
                            (T0 + 60, "frontend", "LatencyAnomaly", "latency"),
                            (T0 + 60, "frontend", "MemoryAnomaly", "saturation")):
        a = Alert(labels={"alertname": name, "namespace": "shop", "workload": w, "signal": sig, "cluster": "c"},
                  startsAt=t)
        out += inc.observe(a, state, t)
    top = out[-1]["candidates"][0]
    assert top["entity"] == "workload/shop/cart"
    assert set(top["explains"]) == {"workload/shop/checkout", "workload/shop/frontend"}


def rows(ranks):
    return [{"rank": r, "delay": 30.0 if r is not None else None} for r in ranks]


def test_cross_validation_scores_each_fault_with_a_choice_made_without_it():
    # candidate 0 is right on faults 0-3, candidate 1 on faults 4-5 only
    per = [rows([1, 1, 1, 1, None, None]), rows([None, None, None, None, 1, 1])]
    cv = cross_validate(per)
    assert cv["in_sample"]["candidate"] == 0 and cv["in_sample"]["ranked_first"] == 4
    assert cv["leave_one_fault_out"]["per_fault_candidate"] == [0] * 6
    assert cv["leave_one_fault_out"]["top1"] == round(4 / 6, 3)
    # halves: faults 0-2 choose candidate 0 for faults 3-5, faults 3-5 (1 vs 2 first) choose candidate 1 for 0-2
    assert cv["halves"]["candidates_chosen"] == [0, 1]
    assert cv["halves"]["ranked_first"] == 1 + 0


def test_cross_validation_is_below_in_sample_when_a_choice_wins_by_one_fault():
    # two candidates equal but on one fault each: in-sample takes the first (tie), each held-out fault loses
    per = [rows([1, 2, 1]), rows([2, 1, 1])]
    cv = cross_validate(per)
    assert cv["in_sample"]["ranked_first"] == 2
    assert cv["leave_one_fault_out"]["per_fault_candidate"] == [1, 0, 0]
    assert cv["leave_one_fault_out"]["ranked_first"] == 1
    assert cv["leave_one_fault_out"]["top3"] == 1.0


def test_the_cpu_limit_rule_alerts_in_the_first_minutes_when_the_anomaly_rules_still_warm_up():
    t0 = 1_661_140_000.0
    samples = []
    for i in range(8):
        cpu = 95.0 if i >= 3 else 20.0 + math.sin(i)
        samples.append(Sample(name="pod_cpu_usage_rate", value=cpu, time=t0 + 60 * i,
                              labels={"cluster": "h", "namespace": "h", "workload": "web", "pod": "web-1-a"}))
    calls = detect(samples, PARAMS)
    firing = [c[1] for c in calls if c[0] == "a" and c[1].status == "firing"]
    assert [(a.labels["alertname"], a.startsAt) for a in firing] == [("PodCpuNearLimit", t0 + 180)]
    assert firing[0].labels["signal"] == "saturation"
    assert detect(samples, {**PARAMS, "limit": None}) == [c for c in calls if c[0] == "x"]


def test_the_warm_up_is_the_fault_free_rest_of_the_day_and_ends_the_cold_start_alarms():
    import random

    t0 = 1_661_140_000.0
    rnd = random.Random(3)
    samples = [Sample(name="pod_server_latency_p90", value=0.05 + 0.005 * rnd.gauss(0, 1), time=t0 + 60 * i,
                      labels={"cluster": "h", "namespace": "h", "workload": "web", "pod": "web-1-a"})
               for i in range(400)]
    faults = [{"t": t0 + 60 * 100, "service": "web"}]
    warm = warmup(samples, faults)
    # from 30 min after the last injection to the end, one day earlier
    assert len(warm) == 400 - 130 and warm[0].time == t0 + 60 * 130 - 86400 and warm[0].value == samples[130].value
    assert warmup(samples, []) == []

    def early(calls):
        return [a.startsAt for c in calls if c[0] == "a" for a in [c[1]] if a.status == "firing" and a.startsAt < t0 + 2400]

    cold = detect(samples[:130], PARAMS)
    warmed = detect(samples[:130], PARAMS, warm)
    assert len(early(cold)) >= 3  # calibration from nothing: an alarm every refractory period at first
    assert early(warmed) == []
    assert min(c[-1] for c in warmed) >= t0  # nothing of the warm-up reaches the incident stage


def test_a_callee_only_busier_than_usual_explains_no_caller():
    # a callee's traffic follows its callers: more or fewer calls are what the caller does, not why it is slow
    reach = closure(DEPS)
    slow = [member(T0, "frontend", "LatencyAnomaly", "latency")["labels"]]
    busy_cart = [member(T0, "cart", "WorkloadAnomaly", "traffic")["labels"]]
    assert explains("workload/shop/cart", busy_cart, "workload/shop/frontend", slow, reach) is None
    slow_cart = busy_cart + [member(T0, "cart", "EdgeSourceLatencyP50Anomaly", "latency")["labels"]]
    assert explains("workload/shop/cart", slow_cart, "workload/shop/frontend", slow, reach) == "frontend calls cart"


def test_a_callee_slow_only_minutes_after_its_callers_does_not_explain_them():
    # frontend's own CPU fault: frontend slow at T0; cart sees fewer calls at T0 and, by chance, a slow edge
    # 2 minutes later -- cart's possible cause begins with the slow edge, after frontend was slow
    ms = {"a": member(T0, "frontend", "CpuNearLimit", "saturation"),
          "b": member(T0, "frontend", "LatencyAnomaly", "latency"),
          "c": member(T0, "cart", "WorkloadAnomaly", "traffic"),
          "d": member(T0 + 120, "cart", "EdgeSourceLatencyP50Anomaly", "latency")}
    cands = rank(ms, closure(DEPS), window=300)
    assert cands[0]["entity"] == "workload/shop/frontend"
    assert [c["explains"] for c in cands if c["entity"] == "workload/shop/cart"] == [[]]
    # the same slow edge at T0 (with frontend's symptoms): cart explains the frontend and ranks first
    ms["d"] = member(T0, "cart", "EdgeSourceLatencyP50Anomaly", "latency")
    ms["a"] = member(T0 + 60, "frontend", "PodClientLatencyAnomaly", "latency")
    cands = rank(ms, closure(DEPS), window=300)
    assert cands[0]["entity"] == "workload/shop/cart" and cands[0]["explains"] == ["workload/shop/frontend"]


def skip(t, caller, callee):
    """``bench rca``'s EdgeCallsSkipped: ``caller`` completed no call to ``callee`` while calling its others."""
    m = member(t, caller, "EdgeCallsSkipped", "errors")
    m["labels"].update(source_workload=caller, destination_workload=callee)
    return m


def test_a_caller_that_stops_calling_a_callee_is_not_explained_by_another_callee_only_saturated():
    # Nezha's checkout exception: checkout stops calling payment and e-mail (it fails before charging); a
    # minute later currency (checkout's and frontend's callee) is at its CPU limit and the frontend fails
    deps = {"frontend": ["checkout", "currency"], "checkout": ["currency", "payment", "email"]}
    reach = closure(deps)
    ms = {"a": skip(T0, "checkout", "payment"), "b": skip(T0, "checkout", "email"),
          "c": member(T0 + 59, "currency", "CpuNearLimit", "saturation"),
          "d": member(T0 + 120, "checkout", "MemoryAnomaly", "saturation"),
          "e": member(T0 + 180, "frontend", "SuccessRateAnomaly", "errors")}
    cands = rank(ms, reach, window=300)
    assert cands[0]["entity"] == "workload/shop/checkout", cands
    assert "workload/shop/checkout" not in next(c for c in cands if c["entity"] == "workload/shop/currency")["explains"]
    assert "workload/shop/frontend" in cands[0]["explains"]
    skipped = [ms["a"]["labels"], ms["b"]["labels"]]
    cpu = [ms["c"]["labels"]]
    assert explains("workload/shop/currency", cpu, "workload/shop/checkout", skipped, reach) is None
    # a callee with errors may be why the caller gave up before its other calls
    failing = [member(T0, "currency", "SuccessRateAnomaly", "errors")["labels"]]
    assert explains("workload/shop/currency", failing, "workload/shop/checkout", skipped, reach) == "checkout calls currency"
    # the skipped callee itself, saturated: the calls hang on it
    hung = [member(T0, "payment", "CpuNearLimit", "saturation")["labels"]]
    assert explains("workload/shop/payment", hung, "workload/shop/checkout", skipped, reach) == "checkout calls payment"
    # the caller's other symptoms (latency) are still a callee's to explain, as before
    slow = skipped + [member(T0, "checkout", "LatencyAnomaly", "latency")["labels"]]
    assert explains("workload/shop/currency", cpu, "workload/shop/checkout", slow, reach) == "checkout calls currency"


def test_breadth_counts_signals_not_rules_and_ties_go_to_the_candidate_with_more_alerts():
    # currency: one slow edge seen by two rules (the caller's and the callee's proxy) and its CPU; checkout:
    # its memory and skipped calls -- two signals each; checkout started first, so it ranks first
    deps = {"frontend": ["checkout", "currency"], "checkout": ["currency", "payment"]}
    ms = {"a": skip(T0, "checkout", "payment"),
          "b": member(T0 + 30, "checkout", "MemoryAnomaly", "saturation"),
          "c": member(T0 + 59, "currency", "CpuNearLimit", "saturation"),
          "d": member(T0 + 59, "currency", "EdgeSourceLatencyP50Anomaly", "latency"),
          "e": member(T0 + 59, "currency", "EdgeDestinationLatencyP50Anomaly", "latency")}
    cands = rank(ms, closure(deps), window=300)
    assert [c["entity"] for c in cands] == ["workload/shop/checkout", "workload/shop/currency"]
    assert "2 different signals abnormal on it" in cands[1]["evidence"]
    # equal scores and first alerts: the candidate with more alerts first, whatever the names or the order
    ms = {"a": member(T0, "cart", "MemoryAnomaly", "saturation"),
          "b": member(T0, "web", "CpuNearLimit", "saturation"),
          "c": member(T0, "web", "CpuAnomaly", "saturation")}
    for order in (ms, dict(reversed(list(ms.items())))):
        cands = rank(order, closure({}))
        assert cands[0]["score"] == cands[1]["score"]
        assert [c["entity"] for c in cands] == ["workload/shop/web", "workload/shop/cart"]


def test_the_protocol_chooses_only_the_onset_threshold_and_the_incident_linking():
    from streams.bench_rca import GRID, WIDE_GRID, candidates, rule_names

    cands = candidates(GRID)
    chosen = {k for k in cands[0] if len({json.dumps(c[k]) for c in cands}) > 1}
    assert chosen == {"theta", "window", "quiet"} and len(cands) == 4
    assert PARAMS in cands and PARAMS in candidates(WIDE_GRID) and len(candidates(WIDE_GRID)) == 32
    # every candidate runs every rule: the pods' metrics, the mesh's series, skipped calls, the CPU-near-limit rule
    names = {frozenset(rule_names(c)) for c in cands}
    assert len(names) == 1
    assert {"PodCpuNearLimit", "EdgeCallsSkipped", "PodWorkloadOpsAnomaly", "ServiceSuccessRateAnomaly"} <= next(iter(names))
