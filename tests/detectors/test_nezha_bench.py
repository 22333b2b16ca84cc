"""bench multivariate: the Nezha layout is read and a fault is scored by the stated protocol."""

from __future__ import annotations

import datetime
import json
import random

from detectors import nezha

COLS = ["Time", "TimeStamp", "PodName", *nezha.FEATURES.values()]


def write_day(root, faulty_at: int, rows: int = 400):
    day = root / "rca_data" / "2022-08-22"
    (day / "metric").mkdir(parents=True)
    t0 = datetime.datetime(2022, 8, 22, 3, 51, 19, tzinfo=datetime.UTC).timestamp()
    rnd = random.Random(5)
    lines = [",".join(COLS)]
    for i in range(rows):
        t = t0 + 60 * i
        load = 10 + rnd.gauss(0, 1)
        cpu = 2 * load + rnd.gauss(0, 0.3)
        lat = 0.05 + 0.001 * load + rnd.gauss(0, 0.001)
        if faulty_at <= i < faulty_at + 5:
            lat += 0.05  # a network delay: latency up, CPU and load as usual
        when = datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.000 +0000 UTC m=+0.1")
        vals = [cpu, 30 + rnd.gauss(0, 0.1), lat, 0, load]
        lines.append(",".join([when, str(int(t + 2e8)), "cart-1"] + [str(v) for v in vals]))
    (day / "metric" / "cart-1_metric.csv").write_text("\n".join(lines) + "\n")
    inject = t0 + 60 * faulty_at + 5
    (day / "2022-08-22-fault_list.json").write_text(json.dumps({"06": [
        {"inject_time": "x", "inject_timestamp": str(int(inject)), "inject_pod": "cart-1", "inject_type": "network_delay"},
        {"inject_time": "x", "inject_timestamp": str(int(t0 + 60)), "inject_pod": "cart-1", "inject_type": "return"},
    ]}))
    return inject


def test_a_latency_fault_is_detected_and_an_early_one_is_reported_as_in_warmup(tmp_path):
    inject = write_day(tmp_path, 300)
    pods, faults = nezha.load(tmp_path)
    assert [p.name for p in pods] == ["cart-1"] and len(pods[0].times) == 400
    assert pods[0].times[0] == datetime.datetime(2022, 8, 22, 3, 51, 19, tzinfo=datetime.UTC).timestamp()
    r = nezha.evaluate(pods, faults, "mahalanobis", {}, above=0.2, k=2, n=3)
    assert (r["detected"], r["missed"], r["in_warmup"]) == (1, 0, 1)
    [hit] = [f for f in r["per_fault"] if f["result"] == "detected"]
    assert hit["time"] == inject and 0 <= hit["delay_s"] <= 300
    assert r["false_alarms"] == 0
    auc, used = nezha.block_auc(pods, faults, [nezha._scores(pods[0], "mahalanobis", {})])
    assert used == 1 and auc > 0.9
