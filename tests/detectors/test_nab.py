"""NAB scorer on hand-made cases computable on paper, the corpus reader, and the bench command."""

from __future__ import annotations

import math

import orjson
import pytest

from detectors import corpus
from detectors.nab import Labelled, probation, row_weights, scaled_sigmoid, score_corpus
from kubesight.cli import main
from tests.detectors.nabfile import KEY, nab_folder

# one file, 1000 rows, probation = 150 rows, one window of width 100 at rows 500..599
F = Labelled(name="f", rows=1000, windows=[(500, 599)])


def fire(*rows, n=1000):
    s = [0.0] * n
    for r in rows:
        s[r] = 1.0
    return s


def std(files, scores):
    return score_corpus(files, scores)["standard"]["score"]


def test_probation_is_15_percent_capped_at_750():
    assert probation(1000) == 150 and probation(4032) == 604 and probation(22695) == 750


def test_scaled_sigmoid_on_paper():
    assert scaled_sigmoid(-1.0) == pytest.approx(math.tanh(2.5))  # 2 sigmoid(5) - 1
    assert scaled_sigmoid(-0.5) == pytest.approx(math.tanh(1.25))
    assert scaled_sigmoid(0.0) == 0.0 and scaled_sigmoid(3.0) == -1.0 and scaled_sigmoid(7.0) == -1.0


def test_perfect_detector_scores_100_in_every_profile():
    files = [F, Labelled("g", 2000, [(400, 449), (1500, 1599)])]
    res = score_corpus(files, [fire(500), fire(400, 1500, n=2000)])
    assert {k: round(v["score"], 9) for k, v in res.items()} == {
        "standard": 100.0,
        "reward_low_fp": 100.0,
        "reward_low_fn": 100.0,
    }
    assert res["standard"]["threshold"] == 1.0 and res["standard"]["tp"] == 3


def test_never_firing_detector_scores_0():
    res = score_corpus([F], [[0.0] * 1000])
    assert all(v["score"] == 0.0 for v in res.values())
    assert res["standard"]["fn"] == 1


def test_detection_at_window_start_is_full_reward():
    assert std([F], [fire(500)]) == pytest.approx(100.0)


def test_detection_at_window_end_on_paper():
    # position -(599 - 599 + 1) / 100 = -0.01 -> 2 sigmoid(0.05) - 1 = tanh(0.025), scaled by 1 / tanh(2.5)
    reward = math.tanh(0.025) / math.tanh(2.5)
    assert std([F], [fire(599)]) == pytest.approx(100 * (reward + 1) / 2)  # 51.2667
    assert round(std([F], [fire(599)]), 4) == 51.2667


def test_only_the_first_detection_in_a_window_counts():
    assert std([F], [fire(550, 551, 590, 599)]) == pytest.approx(std([F], [fire(550)]))


def test_false_positive_before_any_window_costs_a_fp():
    # the sweep has to take both detections (same score): 1 - 0.11 -> 100 * 1.89 / 2
    assert std([F], [fire(300, 500)]) == pytest.approx(94.5)
    assert score_corpus([F], [fire(300, 500)])["reward_low_fp"]["score"] == pytest.approx(100 * 1.78 / 2)


def test_false_positive_right_after_a_window_costs_less():
    # row 600: (600 - 599) / (100 - 1) past the window -> 2 sigmoid(-5/99) - 1 = -tanh(2.5/99), times 0.11
    fp = -math.tanh(2.5 / 99) * 0.11
    assert std([F], [fire(500, 600)]) == pytest.approx(100 * (1 + fp + 1) / 2)
    far = std([F], [fire(500, 900)])  # 3+ window widths after: full cost
    assert far == pytest.approx(100 * (1 - 0.11 + 1) / 2) and far < std([F], [fire(500, 600)])


def test_detections_in_probation_are_ignored():
    assert std([F], [fire(10, 149, 500)]) == pytest.approx(100.0)


def test_threshold_is_swept_over_the_whole_corpus():
    # file 1: the true detection scores 0.9, a false one 0.95; file 2: a true one at 0.95
    g = Labelled("g", 1000, [(700, 799)])
    a = [0.0] * 1000
    a[500], a[300] = 0.9, 0.95
    b = [0.0] * 1000
    b[700] = 0.95
    res = score_corpus([F, g], [a, b])["standard"]
    # threshold 0.9 takes all three: 2 TP - 0.11 = 1.89 -> beats 0.95 (1 TP, 1 FN, -0.11)
    assert res["threshold"] == 0.9 and res["raw"] == pytest.approx(1.89)
    assert res["score"] == pytest.approx(100 * (1.89 + 2) / 4)


def test_reward_low_fn_doubles_the_miss():
    g = Labelled("g", 1000, [(700, 799)])
    res = score_corpus([F, g], [fire(500), [0.0] * 1000])
    assert res["standard"]["raw"] == pytest.approx(0.0) and res["standard"]["score"] == pytest.approx(50.0)
    assert res["reward_low_fn"]["raw"] == pytest.approx(-1.0)
    assert res["reward_low_fn"]["score"] == pytest.approx(100 * (-1 + 4) / 6)


def test_row_weights_mark_windows_and_probation():
    reward, where = row_weights(F)
    assert (where[:150] == -2).all() and (where[500:600] == 0).all() and where[600] == -1
    assert reward[500] == pytest.approx(1.0) and reward[200] == -1.0


def test_scores_must_match_rows():
    with pytest.raises(ValueError, match="f: 3 scores for 1000 rows"):
        score_corpus([F], [[0.0] * 3])


def test_corpus_reads_real_nab_windows(tmp_path):
    series = corpus.load(nab_folder(tmp_path))
    assert [s.key for s in series] == [KEY]
    amb = series[0]
    assert amb.labelled.rows == len(amb.values) == 7267 and len(amb.labelled.windows) == 2
    first, last = amb.labelled.windows[0]
    assert amb.times[first] == 1387090800.0  # 2013-12-15 07:00:00 UTC
    assert amb.times[last] == 1388394000.0  # 2013-12-30 09:00:00 UTC


def test_corpus_names_the_missing_file(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "combined_windows.json").write_bytes(orjson.dumps({"x/y.csv": []}))
    with pytest.raises(FileNotFoundError, match="y.csv: listed in combined_windows.json but missing"):
        corpus.load(tmp_path)


def test_bench_nab_json_on_a_small_nab_folder(tmp_path, capsys):
    rc = main(["bench", "nab", "--data", str(nab_folder(tmp_path)), "--json"])
    assert rc == 0
    out = orjson.loads(capsys.readouterr().out)
    assert {"standard", "reward_low_fp", "reward_low_fn", "threshold", "us_per_point", "files", "windows"} <= set(out)
    assert out["files"] == 1 and out["windows"] == 2 and out["bytes_per_series"] <= 4096
    assert -100 <= out["standard"] <= 100 and out["us_per_point"] > 0


def test_bench_nab_rejects_unknown_detector(tmp_path, capsys):
    rc = main(["bench", "nab", "--data", str(nab_folder(tmp_path)), "--detector", "nope"])
    assert rc == 2 and "unknown detector 'nope'" in capsys.readouterr().err


def test_bench_nab_cv_needs_two_categories(tmp_path, capsys):
    rc = main(["bench", "nab", "--data", str(nab_folder(tmp_path)), "--cv"])
    assert rc == 2 and "at least two categories" in capsys.readouterr().err
