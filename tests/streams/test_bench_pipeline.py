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
    assert main(["--config", str(cfg), "bench", "pipeline", "-n", "600", "--skip-faust", "--rounds", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["signals"] == 1200
    for path in ("b_raw_getmany/events", "b_raw_getmany/samples", "c_kubesight/events", "c_kubesight/samples"):
        assert out[path]["signals_per_s"] > 0 and out[path]["us_per_signal_cpu"] > 0, path
    assert out["outputs/events"] > 0  # alerts of the default pack on the recorded events
    assert 0 < out["rules/events"]["evaluations"] < 600 and out["rules/events"]["us_per_signal"] > 0
    assert 0 < out["ratio_c_over_b_cpu"] < 5 and 0 < out["ratio_c_over_b"] < 5
    # two rounds, each (c) from the first record with no state (its own group and changelog): the same outputs, and
    # the headline is the rounds' median (of two: their mean)
    assert out["rounds_outputs"][0] == out["rounds_outputs"][1] == [out["outputs/events"], out["outputs/samples"]]
    rounds = out["rounds_ratio_c_over_b_cpu"]
    assert len(rounds) == 2 and out["ratio_c_over_b_cpu"] == pytest.approx(sum(rounds) / 2, abs=1e-3)
    assert out["commits"] >= 4


def test_ensure_topics_only_makes_the_topics_it_is_given(kafka_bootstrap):
    import uuid

    from core.settings import Settings
    from core.topics import ensure_topics

    s = Settings(kafka=kafka_bootstrap, topic_prefix=f"only-{uuid.uuid4().hex[:6]}-")
    assert ensure_topics(s, kafka_bootstrap, only=("state-changelog",)) == [s.topic("state-changelog")]
    assert ensure_topics(s, kafka_bootstrap, only=("state-changelog",)) == []  # there now
    assert s.topic("alerts") in ensure_topics(s, kafka_bootstrap)  # the others were not made
