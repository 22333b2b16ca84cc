"""Isolation forest for multivariate entities (a pod's CPU, memory, latency, errors together)."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import IsolationForest as _SkIsolationForest

from detectors.base import Detector


class IsolationForest(Detector):
    """scikit-learn's IsolationForest, refit every ``refit_every`` points on the last ``window``.

    ``x`` is a dict of floats; its keys are fixed by the first observation (a missing key is
    an error, extra keys are ignored). The score is the forest's anomaly score from the
    original paper (``-score_samples``), in (0, 1]: about 0.5 and below is normal, near 1 is
    isolated at once. ``None`` until the first fit (``warmup`` points). The fitted forest is a
    deterministic function of (``seed``, the points it was fit on), so the snapshot stores
    those points (at most ``window + refit_every`` rows) and restore refits: exact, no pickle.

    >>> d = IsolationForest(window=64, refit_every=32, warmup=32, n_estimators=25)
    >>> for i in range(100):
    ...     d.learn_one({"cpu": 0.5 + 0.01 * (i % 7), "mem": 0.3 + 0.01 * (i % 5)})
    >>> round(d.score_one({"cpu": 0.53, "mem": 0.32}), 2), round(d.score_one({"cpu": 3.0, "mem": 0.9}), 2)
    (0.52, 0.58)
    """

    name = "iforest"

    def __init__(
        self,
        n_estimators: int = 50,
        window: int = 256,
        refit_every: int = 128,
        warmup: int = 64,
        seed: int = 42,
    ):
        if not 2 <= warmup <= window or refit_every < 1 or n_estimators < 1:
            raise ValueError("need 2 <= warmup <= window, refit_every >= 1, n_estimators >= 1")
        self.n_estimators, self.window, self.refit_every = n_estimators, window, refit_every
        self.warmup, self.seed = warmup, seed
        self.keys: list[str] | None = None
        self.fitted: list[list[float]] = []  # the rows the current forest was fit on
        self.recent: list[list[float]] = []  # rows learned since
        self.model = None

    def _row(self, x: dict) -> list[float]:
        if not isinstance(x, dict):
            raise ValueError("iforest scores a dict of floats (one entity's metrics)")
        keys = self.keys if self.keys is not None else sorted(x)
        try:
            return [float(x[k]) for k in keys]
        except KeyError as e:
            raise ValueError(f"iforest: observation lacks feature {e.args[0]!r} (features: {keys})") from None

    def _fit(self) -> None:
        self.model = _SkIsolationForest(
            n_estimators=self.n_estimators, max_samples=min(256, len(self.fitted)), random_state=self.seed
        ).fit(np.asarray(self.fitted))

    def score_one(self, x: dict, t: float | None = None) -> float | None:
        if self.model is None:
            return None
        s = -float(self.model.score_samples(np.asarray([self._row(x)]))[0])
        return min(1.0, max(0.0, s))

    def learn_one(self, x: dict, t: float | None = None) -> None:
        row = self._row(x)
        if self.keys is None:
            self.keys = sorted(x)
        self.recent.append(row)
        due = len(self.recent) >= self.refit_every if self.model is not None else (
            len(self.fitted) + len(self.recent) >= self.warmup
        )
        if due:
            self.fitted = (self.fitted + self.recent)[-self.window :]
            self.recent = []
            self._fit()

    def _state(self) -> dict:
        return {"keys": self.keys, "fitted": self.fitted, "recent": self.recent, "fit": self.model is not None}

    def _load(self, s: dict) -> None:
        self.keys = s["keys"]
        self.fitted = [list(r) for r in s["fitted"]]
        self.recent = [list(r) for r in s["recent"]]
        self.model = None
        if s["fit"]:
            self._fit()
