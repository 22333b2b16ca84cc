"""One detector per (series, spec) in a plain state mapping: get or build, score, learn, save back."""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping

import orjson

from detectors import registry
from detectors.base import Detector


def spec_key(series: str, name: str, params: dict) -> str:
    """State key of the detector for ``series`` under spec (name, params): a changed spec starts fresh.

    >>> spec_key("cpu{pod=a}", "onset", {})
    'det:onset:d905e156:cpu{pod=a}'
    """
    digest = hashlib.blake2b(orjson.dumps(params, option=orjson.OPT_SORT_KEYS), digest_size=4).hexdigest()
    return f"det:{name}:{digest}:{series}"


def step(state: MutableMapping, series: str, name: str, params: dict, x, t: float) -> float | None:
    """Score ``x`` at event time ``t`` with the series' detector, then learn it; returns the score.

    ``state[key]`` holds the live :class:`Detector` (the changelog saves its ``snapshot()``) or,
    after a restart, the raw snapshot dict, which is restored here. The value is assigned back
    so a changelog-backed mapping records the change.

    >>> state = {}
    >>> for i in range(150):
    ...     s = step(state, "cpu{pod=a}", "novelty", {}, float(i % 10), 60.0 * i)
    >>> s, round(step(state, "cpu{pod=a}", "novelty", {}, 25.0, 9000.0), 3)
    (0.0, 1.0)
    >>> restarted = orjson.loads(orjson.dumps({k: v.snapshot() for k, v in state.items()}))
    >>> step(restarted, "cpu{pod=a}", "novelty", {}, 26.0, 9060.0) == step(state, "cpu{pod=a}", "novelty", {}, 26.0, 9060.0)
    True
    """
    key = spec_key(series, name, params)
    d = state.get(key)
    if d is None:
        d = registry.build(name, params)
    elif not isinstance(d, Detector):
        d = registry.restore(d)
    score = d.score_one(x, t)
    d.learn_one(x, t)
    state[key] = d
    return score
