"""``kubesight bench pipeline`` end to end on the test broker: it prints its figures, and (c)'s last records are
committed at once (``TransactionalProcessor.commit_now``), not after the commit interval."""

from __future__ import annotations

import json

import pytest

from kubesight.cli import main

pytestmark = pytest.mark.kafka


@pytest.mark.timeout(120)  # without the commit at once (c) would wait out the hour
def test_bench_pipeline_prints_its_figures_and_commits_the_last_records_at_once(kafka_bootstrap, tmp_path, capsys):
    cfg = tmp_path / "kubesight.yaml"
    # an interval no test waits out: (c) ends only if the bench's commit of its last records is made at once
    cfg.write_text(f"kafka: {kafka_bootstrap}\ncommit_interval: 3600\n")
    assert main(["--config", str(cfg), "bench", "pipeline", "-n", "600", "--skip-faust", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["signals"] == 1200
    for path in ("b_raw_getmany/events", "b_raw_getmany/samples", "c_kubesight/events", "c_kubesight/samples"):
        assert out[path]["signals_per_s"] > 0 and out[path]["us_per_signal_cpu"] > 0, path
    assert out["commits"] >= 2  # one transaction per kind, at least: the outputs and offsets were committed
    assert out["outputs/events"] > 0  # alerts of the default pack on the recorded events
    assert 0 < out["rules/events"]["evaluations"] < 600 and out["rules/events"]["us_per_signal"] > 0
    assert 0 < out["ratio_c_over_b_cpu"] < 5 and 0 < out["ratio_c_over_b"] < 5
