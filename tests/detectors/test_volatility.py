"""Volatility novelty as an onset member: exact snapshot round trip inside onset, what it sees."""

from __future__ import annotations

import random

from detectors import registry
from detectors.onset import candidates
from detectors.volatility import VolatilityNovelty


def test_a_noisier_regime_at_the_same_level_is_novel_and_the_usual_noise_is_not():
    rnd = random.Random(5)
    det = VolatilityNovelty(rate=0.05)
    for _ in range(1000):
        det.learn_one(50.0 + rnd.gauss(0, 1))
    calm = [det.score_one(50.0 + rnd.gauss(0, 1)) for _ in range(20)]
    assert max(calm) == 0.0
    scores = []
    for _ in range(200):  # same mean, noise sd 1 -> 5: no new value range needed
        x = 50.0 + rnd.gauss(0, 5)
        scores.append(det.score_one(x))
        det.learn_one(x)
    assert max(scores) > 0.5


def test_volatility_family_is_a_cv_grid_beside_grid():
    assert len(candidates("volatility")) == 128 + 256
    assert "volatility" not in registry.names()
