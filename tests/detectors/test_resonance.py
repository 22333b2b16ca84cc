"""Resonance (fuzzy ART over short windows, ARTime's idea) as an onset member: bounded state, exact
snapshot round trip, what it sees, and the replay the --cv grid relies on."""

from __future__ import annotations

import orjson
import pytest

from detectors import registry
from detectors.base import build_from
from detectors.onset import MEMBERS, candidates, replay
from detectors.resonance import Resonance
from tests.detectors.test_contract import run, stream


def test_categories_are_bounded_and_the_state_stops_growing():
    det = Resonance(categories=8)
    sizes = []
    for i, (x, t) in enumerate(stream("onset", 3000)):
        det.score_one(x, t)
        det.learn_one(x, t)
        if i % 100 == 99:
            sizes.append(len(orjson.dumps(det.snapshot())))
    assert len(det.W) == 8
    assert max(sizes[-10:]) <= 1.05 * max(sizes[10:20])


def test_a_repeated_shape_resonates_and_a_new_one_inside_the_range_does_not():
    det = Resonance(step=1, window=4, warmup=20, categories=16, calibrated=False)
    wave = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0, 2.0, 1.0] * 30
    for x in wave:
        det.learn_one(x)
    assert det.score_one(0.0) == 0.0  # the wave goes on: ...2, 1, 0
    for x in (2.0, 4.0, 1.0):  # a zig-zag within the same range
        det.learn_one(x)
    assert det.score_one(5.0) > 0.3


def test_scores_only_at_block_ends_and_is_none_while_warming_up():
    det = Resonance(step=3, warmup=5)
    out = run(det, stream("onset", 60))
    assert out[: 3 * 5] == [None] * (3 * 5) and out[3 * 5] is not None
    warm = out[3 * 5 :]  # point 15 onwards: blocks end at points 17, 20, ...
    assert all(s == 0.0 for i, s in enumerate(warm) if (i + 1) % 3)


def test_replay_gives_onset_s_numbers_with_resonance():
    points = stream("onset", 1500)
    params = candidates("resonance")[-1]
    d = registry.build("onset", params)
    expected = run(d, points)
    cols = [run(build_from(MEMBERS, m["name"], m["params"]), points) for m in d.members]
    got = replay(cols, d.weights, d.theta, d.refractory, d.rearm, d.short, d.long, d.output)
    assert got == expected


@pytest.mark.parametrize("bad", [{"window": 3}, {"categories": 1}, {"step": 0}, {"rho": 0.0}, {"spike": -1.0}])
def test_bad_parameters_are_value_errors(bad):
    with pytest.raises(ValueError):
        Resonance(**bad)


def test_resonance_is_not_a_standalone_detector():
    """Alone it fails the detection contract (level shift AUC 0.82: its mismatch is noisy while categories
    churn), so, like context novelty, it is an onset member only, not in the registry."""
    assert "resonance" not in registry.names()
