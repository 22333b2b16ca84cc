"""One contract, every registered detector: warm-up, range, snapshot/restore, bounded state, seeds,
and detection: injected anomalies and a real labelled series are ranked above normal points.

Detection protocol (ROC AUC over blocks, so that a detector reporting an incident once, at its
onset, is judged fairly and a useless one gets 0.5 however many points it sees):

- a *positive* is the highest score in the first ``K`` points of an anomaly (an injected one, or
  the first half of a NAB window: NAB centres its windows on the labelled point, so the first
  half is "up to the label");
- the *negatives* are the highest scores of consecutive, non-overlapping blocks of the same
  length ``K`` taken from normal points only (after the detector's warm-up, resp. NAB's
  probation, and outside every window);
- AUC = P(positive > negative) with ties counted as one half; it must be >= 0.9.
"""

from __future__ import annotations

import math
import random

import orjson
import pytest

from detectors import corpus, registry
from detectors.nab import probation
from tests.detectors.nabfile import nab_folder

MULTIVARIATE = {n for n in registry.names() if registry.CLASSES[n].input == "vector"}
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


def test_every_detector_declares_its_input(name):
    """What ``x`` is (one value or a dict of values): rule packs refuse a vector detector in a
    univariate anomaly rule at load, so the declaration must be there and must be true."""
    det = registry.build(name, {})
    assert det.input in ("value", "vector"), name
    x = stream(name, 1)[0][0]
    assert isinstance(x, dict) == (det.input == "vector")
    det.learn_one(x, 1_400_000_000.0)
    other = {"v": 1.0} if det.input == "value" else 1.0
    with pytest.raises((TypeError, ValueError)):
        det.learn_one(other, 1_400_000_600.0)


def test_seasonal_needs_event_time():
    det = registry.build("seasonal", {})
    with pytest.raises(ValueError, match="needs the event time"):
        det.score_one(1.0)


# -- detection ------------------------------------------------------------------------------------

ONSET, LENGTH, K = 2000, 2600, 36  # anomaly at point 2000 (about 14 days in), blocks of 6 hours


def injected(kind: str, seed: int, multivariate: bool):
    """A daily wave (amplitude 20) with noise (sd 2), and from ONSET on one anomaly:
    ``spike`` one point +60; ``shift`` the level +30 for good; ``variance`` the noise sd 2 -> 10."""
    rnd = random.Random(seed)
    out = []
    for i in range(LENGTH):
        t = 1_400_000_000.0 + i * STEP
        sd = 10.0 if kind == "variance" and i >= ONSET else 2.0
        base = 50 + 20 * math.sin(2 * math.pi * (t % 86400) / 86400) + rnd.gauss(0, sd)
        if kind == "shift" and i >= ONSET:
            base += 30
        if kind == "spike" and i == ONSET:
            base += 60
        if multivariate:
            x = {"cpu": base, "mem": 0.5 * base + rnd.gauss(0, 1), "latency": 100 + rnd.gauss(0, 5)}
        else:
            x = base
        out.append((x, t))
    return out


def block_max(scores, first: int, last: int, k: int, keep=None) -> list[float]:
    """Maxima of consecutive k-blocks in [first, last) whose every row is kept (default: all)."""
    out = []
    for i in range(first, last - k + 1, k):
        if keep is None or all(keep[i : i + k]):
            out.append(max(scores[i : i + k]))
    return out


def auc(pos: list[float], neg: list[float]) -> float:
    """ROC AUC of positives vs negatives, ties as one half.

    >>> auc([1.0], [0.0, 0.5]), auc([0.5], [0.5]), auc([0.0], [1.0])
    (1.0, 0.5, 0.0)
    """
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def zeroed(scores):
    return [0.0 if s is None else s for s in scores]


@pytest.mark.parametrize("kind", ["spike", "shift", "variance"])
def test_injected_anomalies_rank_above_normal_points(name, kind):
    pos, neg = [], []
    for seed in (1, 2, 3):
        raw = run(registry.build(name, {}), injected(kind, seed, name in MULTIVARIATE))
        warm = next(i for i, s in enumerate(raw) if s is not None)
        sc = zeroed(raw)
        pos.append(max(sc[ONSET : ONSET + K]))
        neg += block_max(sc, ONSET - K * ((ONSET - warm) // K), ONSET, K)
    assert len(neg) >= 100
    assert auc(pos, neg) >= 0.9, (name, kind, pos, sorted(neg)[-5:])


@pytest.fixture(scope="module")
def ambient(tmp_path_factory):
    """NAB realKnownCause/ambient_temperature_system_failure (vendored): 7267 hourly rows, 2 windows."""
    return corpus.load(nab_folder(tmp_path_factory.mktemp("nab")))[0]


def test_real_labelled_series_ranks_windows_above_normal_blocks(name, ambient):
    s = ambient
    points = [({"value": x} if name in MULTIVARIATE else x, t) for x, t in zip(s.values, s.times, strict=True)]
    sc = zeroed(run(registry.build(name, {}), points))
    n, windows = s.labelled.rows, s.labelled.windows
    k = min((last - first + 1) // 2 for first, last in windows)
    pos = [max(sc[first : first + k]) for first, _ in windows]
    normal = [True] * n
    for first, last in windows:
        normal[first : last + 1] = [False] * (last - first + 1)
    neg = block_max(sc, probation(n), n, k, normal)
    assert len(pos) == 2 and len(neg) >= 10
    assert auc(pos, neg) >= 0.9, (name, pos, sorted(neg)[-5:])


def decoupled(seed: int):
    """Vector-specific: ``cpu`` follows a daily wave; ``latency`` follows cpu (+0.5 per unit) until
    ONSET, then moves against it (-0.5 per unit). Each metric's own distribution is unchanged: only
    their joint behaviour breaks (a detector scoring each metric alone has nothing to see)."""
    rnd = random.Random(seed)
    out = []
    for i in range(LENGTH):
        t = 1_400_000_000.0 + i * STEP
        cpu = 50 + 20 * math.sin(2 * math.pi * (t % 86400) / 86400) + rnd.gauss(0, 2)
        sign = -1.0 if i >= ONSET else 1.0
        out.append(({"cpu": cpu, "latency": 25 + sign * 0.5 * (cpu - 50) + rnd.gauss(0, 1),
                     "errors": rnd.gauss(1, 0.2)}, t))
    return out


@pytest.mark.parametrize("vname", sorted(MULTIVARIATE))
def test_vector_detector_sees_a_broken_correlation(vname):
    pos, neg = [], []
    for seed in (1, 2, 3):
        raw = run(registry.build(vname, {}), decoupled(seed))
        warm = next(i for i, s in enumerate(raw) if s is not None)
        sc = zeroed(raw)
        pos.append(max(sc[ONSET : ONSET + K]))
        neg += block_max(sc, ONSET - K * ((ONSET - warm) // K), ONSET, K)
    assert len(neg) >= 100
    assert auc(pos, neg) >= 0.9, (vname, pos, sorted(neg)[-5:])


def test_a_per_metric_view_misses_the_broken_correlation():
    """The case above is a vector case: zscore on latency alone (level and step) does not pass it
    (onset does, through its time-of-day member: the flipped latency no longer fits its slots)."""
    pos, neg = [], []
    for seed in (1, 2, 3):
        pts = [(x["latency"], t) for x, t in decoupled(seed)]
        raw = run(registry.build("zscore", {}), pts)
        warm = next(i for i, s in enumerate(raw) if s is not None)
        sc = zeroed(raw)
        pos.append(max(sc[ONSET : ONSET + K]))
        neg += block_max(sc, ONSET - K * ((ONSET - warm) // K), ONSET, K)
    assert auc(pos, neg) < 0.9


def test_zscore_scores_the_first_departure_from_a_flat_history_itself():
    """With no variance yet the level z-score was 0: a spike after 200 zeros scored nothing, the point after it
    scored, and the spike was learnt into the expected range. After the warm-up it is as far as it gets."""
    from detectors.zscore import ZScore

    d = ZScore(warmup=20)
    for _ in range(200):
        d.score_one(0.0)
        d.learn_one(0.0)
    assert d.score_one(0.0) == d.score_one(0.0) and d.score_one(5000.0) > 0.5
