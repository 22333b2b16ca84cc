"""One contract, every registered detector: warm-up, range, snapshot/restore, bounded state, seeds."""

from __future__ import annotations

import math
import random

import orjson
import pytest

from detectors import registry

MULTIVARIATE = {"iforest"}
STEP = 600.0  # seconds between points: 144 points a day, so seasonal slots fill quickly


def stream(name: str, n: int, seed: int = 7):
    """A deterministic synthetic series: daily wave + noise + a level shift and a spike."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        t = 1_400_000_000.0 + i * STEP
        base = 50 + 20 * math.sin(2 * math.pi * (t % 86400) / 86400) + rnd.gauss(0, 2)
        if i > 0.7 * n:
            base += 40
        if i == n // 2:
            base += 100
        if name in MULTIVARIATE:
            x = {"cpu": base, "mem": 0.5 * base + rnd.gauss(0, 1), "errors": float(rnd.random() < 0.05)}
        else:
            x = base
        out.append((x, t))
    return out


def run(det, points):
    scores = []
    for x, t in points:
        scores.append(det.score_one(x, t))
        det.learn_one(x, t)
    return scores


@pytest.fixture(params=registry.names())
def name(request):
    return request.param


def test_warms_up_then_scores_in_unit_interval(name):
    scores = run(registry.build(name, {}), stream(name, 400))
    assert scores[0] is None
    first = next(i for i, s in enumerate(scores) if s is not None)
    assert all(s is not None and math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores[first:]), name


def test_snapshot_restore_through_json_gives_identical_scores(name):
    points = stream(name, 400)
    a = registry.build(name, {})
    expected = run(a, points)
    b = registry.build(name, {})
    run(b, points[:230])
    blob = orjson.dumps(b.snapshot(), option=orjson.OPT_SERIALIZE_NUMPY)
    c = registry.restore(orjson.loads(blob))
    assert type(c) is type(b) and c.params() == b.params()
    assert run(c, points[230:]) == expected[230:]


def test_same_seed_same_scores(name):
    points = stream(name, 300, seed=3)
    assert run(registry.build(name, {}), points) == run(registry.build(name, {}), points)


def test_state_plateaus(name):
    """State size (snapshot bytes) in the last third of a long stream is no larger than in the middle third."""
    det = registry.build(name, {})
    points = stream(name, 3000)
    sizes = []
    for i, (x, t) in enumerate(points):
        det.learn_one(x, t)
        if i % 50 == 49:
            sizes.append(len(orjson.dumps(det.snapshot(), option=orjson.OPT_SERIALIZE_NUMPY)))
    third = len(sizes) // 3
    assert max(sizes[2 * third :]) <= 1.05 * max(sizes[third : 2 * third]), (name, sizes)


def test_default_is_registered_and_small():
    assert registry.DEFAULT in registry.names()
    det = registry.build(registry.DEFAULT, {})
    run(det, stream(registry.DEFAULT, 3000))
    assert len(orjson.dumps(det.snapshot())) <= 4096


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match=r"^unknown detector 'nope'; known: .*zscore"):
        registry.build("nope", {})


def test_unknown_param_lists_valid_params():
    with pytest.raises(ValueError, match=r"^detector 'zscore': unknown parameter\(s\) alpah; valid: alpha, "):
        registry.build("zscore", {"alpah": 0.1})


def test_bad_param_value_is_a_value_error():
    with pytest.raises(ValueError, match=r"^detector 'seasonal': bad parameters .*alpha must be in \(0, 1\]"):
        registry.build("seasonal", {"alpha": 2.0})


def test_restore_rejects_what_is_not_a_snapshot():
    with pytest.raises(ValueError, match="not a detector snapshot"):
        registry.restore({"state": {}})


def test_seasonal_needs_event_time():
    det = registry.build("seasonal", {})
    with pytest.raises(ValueError, match="needs the event time"):
        det.score_one(1.0)
