"""Context novelty as an onset member (bounded state, exact snapshot round trip, what it sees); onset's replay and output."""

from __future__ import annotations

import pytest

from detectors import registry
from detectors.context import ContextNovelty
from detectors.onset import CONTEXT_MEMBERS
from tests.detectors.test_contract import injected, run, stream


def test_a_new_shape_inside_the_usual_range_is_novel_and_a_repeated_one_is_not():
    det = ContextNovelty(warmup=10)
    wave = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0, 2.0, 1.0] * 30
    for x in wave:
        det.learn_one(x)
    assert det.score_one(0.0) == 0.0  # the wave goes on: ...2, 1, 0
    for x in (2.0, 4.0, 1.0):  # a zig-zag within the same range
        det.learn_one(x)
    assert det.score_one(5.0) == 1.0


def test_context_is_not_a_standalone_detector():
    """Alone it fails the detection contract (a binary score: ~27% of normal 6-hour blocks hold a
    new shape), so it is an onset member only, not in the registry."""
    assert "context" not in registry.names()
    assert max(run(ContextNovelty(), injected("spike", 1, False))[2000:2036]) == 1.0


def test_replay_from_member_scores_equals_running_onset():
    """bench nab --cv scores its grid by onset.replay over cached member scores: same numbers."""
    from detectors.base import build_from
    from detectors.onset import MEMBERS, replay

    points = stream("onset", 2500)
    for params in ({}, {"output": "score"}, {"members": list(CONTEXT_MEMBERS), "weights": [1.0, 0.2, 1.0, 0.5],
                                             "theta": 0.3, "refractory": 100, "short": 0.25, "long": 0.003}):
        d = registry.build("onset", params)
        expected = run(d, points)
        assert any(s for s in expected)  # something fired: the comparison is not of zeros only
        cols = [run(build_from(MEMBERS, m["name"], m["params"]), points) for m in d.members]
        assert replay(cols, d.weights, d.theta, d.refractory, d.rearm, d.short, d.long, d.output) == expected


def test_onset_output_scores_only_the_onsets_a_rule_above_theta_sees_the_same_points():
    """output="onset" (the default) keeps an onset's calibrated score and zeroes every other point;
    output="score" keeps every unmuted point's. The points at or above theta are the same, so a rule
    ``above: theta`` alerts on the same points with either."""
    points = stream("onset", 2500)
    for theta in (0.3, 0.4, 0.6):
        onset = run(registry.build("onset", {"theta": theta}), points)
        score = run(registry.build("onset", {"theta": theta, "output": "score"}), points)
        fired = [i for i, s in enumerate(score) if s is not None and s >= theta]
        assert fired, theta
        assert [i for i, s in enumerate(onset) if s] == fired
        assert all(onset[i] == score[i] for i in fired)
        assert any(s and 0 < s < theta for s in score)  # "score" has more to show below theta
    with pytest.raises(ValueError, match="output must be one of onset, score"):
        registry.build("onset", {"output": "decision"})
