"""river models behind one adapter: HalfSpaceTrees and a Holt-Winters forecaster scored on residuals.

Snapshots, honestly: river models are plain Python objects that river itself saves with
pickle, which kubesight does not use for state. So the adapter keeps the model's state a pure
function of a bounded replay buffer: every ``window`` points the model is rebuilt from scratch
(same seed) on the last ``window`` inputs, and the buffer holds exactly the inputs learned
since that rebuild's start (at most ``2 * window``). A snapshot stores the buffer (as fed to
the model) plus the adapter's own numbers; restore re-learns the buffer into a fresh model.
The result is exact (same subsequent scores) because river's learning is deterministic for a
given seed, at the price of the buffer (``2 * window`` floats per series) and of a re-learn
burst every ``window`` points. Good for a few entities, not as the per-series default.
"""

from __future__ import annotations

import math

from river import anomaly, time_series

from detectors.base import Detector
from detectors.likelihood import Likelihood


class RiverReplay(Detector):
    """Adapter: ``_fresh()`` builds the river model, ``_item(x)`` is what it learns, ``_feed`` learns it."""

    window: int

    def _setup(self, window: int) -> None:
        if window < 2:
            raise ValueError("window must be >= 2")
        self.n = 0
        self.buffer: list = []
        self.model = self._fresh()

    def _fresh(self):  # pragma: no cover - interface
        raise NotImplementedError

    def _feed(self, model, item) -> None:
        model.learn_one(item)

    def _remember(self, item) -> None:
        self._feed(self.model, item)
        self.buffer.append(item)
        if len(self.buffer) >= 2 * self.window:
            self.buffer = self.buffer[-self.window :]
            self._rebuild()

    def _rebuild(self) -> None:
        self.model = self._fresh()
        for item in self.buffer:
            self._feed(self.model, item)


class HalfSpaceTrees(RiverReplay):
    """river's HalfSpaceTrees on min/max-scaled values (float, or a dict of floats).

    Features are scaled into [0, 1] with the running min/max seen so far (state: two numbers per
    feature). The score is river's, in [0, 1]. Costly: about 40 µs per point and a large
    in-memory model (the trees), so use it for a few multivariate entities.

    >>> d = HalfSpaceTrees(window=50, seed=1)
    >>> for i in range(300):
    ...     d.learn_one(float(i % 10))
    >>> d.score_one(5.0) < d.score_one(40.0)
    True
    """

    name = "hst"

    def __init__(self, n_trees: int = 10, height: int = 8, window: int = 250, seed: int = 42):
        self.n_trees, self.height, self.window, self.seed = n_trees, height, window, seed
        self.lo: dict[str, float] = {}
        self.hi: dict[str, float] = {}
        self._setup(window)

    def _fresh(self):
        return anomaly.HalfSpaceTrees(
            n_trees=self.n_trees, height=self.height, window_size=self.window, seed=self.seed
        )

    def _scaled(self, x) -> dict[str, float]:
        xs = x if isinstance(x, dict) else {"x": x}
        out = {}
        for k, v in xs.items():
            lo, hi = self.lo.get(k, v), self.hi.get(k, v)
            out[k] = 0.5 if hi <= lo else min(1.0, max(0.0, (v - lo) / (hi - lo)))
        return out

    def score_one(self, x, t: float | None = None) -> float | None:
        if self.n < self.window:
            return None
        return min(1.0, max(0.0, self.model.score_one(self._scaled(x))))

    def learn_one(self, x, t: float | None = None) -> None:
        item = self._scaled(x)
        xs = x if isinstance(x, dict) else {"x": x}
        for k, v in xs.items():
            self.lo[k] = min(self.lo.get(k, v), v)
            self.hi[k] = max(self.hi.get(k, v), v)
        self._remember(item)
        self.n += 1

    def _state(self) -> dict:
        return {"n": self.n, "lo": self.lo, "hi": self.hi, "buffer": self.buffer}

    def _load(self, s: dict) -> None:
        self.n, self.lo, self.hi = s["n"], dict(s["lo"]), dict(s["hi"])
        self.buffer = [dict(b) for b in s["buffer"]]
        self._rebuild()


class HoltWinters(RiverReplay):
    """river's Holt-Winters forecaster; the one-step residual's z-score, calibrated, is the score.

    ``|y - forecast| / sqrt(EWMA residual variance)`` maps to ``1 - exp(-z/scale)`` and goes
    through :class:`~detectors.likelihood.Likelihood`. Seasonality is off by default (NAB-like
    metrics rarely have a fixed period in points); set ``seasonality`` and ``gamma`` to use it.

    >>> d = HoltWinters(window=50, warmup=20)
    >>> for i in range(400):
    ...     d.learn_one(10.0 + 0.01 * i + (i % 3) * 0.1)
    >>> round(d.score_one(14.1), 2), round(d.score_one(40.0), 2)
    (0.1, 0.18)
    """

    name = "holtwinters"

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.05,
        gamma: float | None = None,
        seasonality: int = 0,
        window: int = 200,
        var_alpha: float = 0.01,
        scale: float = 4.0,
        short: float = 0.1,
        long: float = 0.001,
        warmup: int = 100,
    ):
        if not 0 < alpha <= 1 or not 0 < var_alpha <= 1 or scale <= 0:
            raise ValueError("alpha and var_alpha must be in (0, 1], scale > 0")
        self.alpha, self.beta, self.gamma, self.seasonality = alpha, beta, gamma, seasonality
        self.window, self.var_alpha, self.scale = window, var_alpha, scale
        self.short, self.long, self.warmup = short, long, warmup
        self.var = 0.0
        self.lk = Likelihood(short, long)
        self._memo = None
        self._setup(window)
        if seasonality and window < 2 * seasonality:
            raise ValueError("window must be >= 2 * seasonality")

    def _fresh(self):
        return time_series.HoltWinters(
            alpha=self.alpha, beta=self.beta or None, gamma=self.gamma, seasonality=self.seasonality
        )

    def _residual(self, y: float) -> float | None:
        if not self.model._initialized:
            return None
        return y - self.model.forecast(1)[0]

    def _raw(self, y: float) -> tuple[float | None, float]:
        r = self._residual(y)
        if r is None or self.var <= 0:
            return r, 0.0
        return r, 1.0 - math.exp(-abs(r) / math.sqrt(self.var + 1e-12) / self.scale)

    def score_one(self, x: float, t: float | None = None) -> float | None:
        r, raw = self._raw(x)
        self._memo = (x, r, raw)
        if self.n + 1 < self.warmup:
            return None
        return self.lk.score(raw)

    def learn_one(self, x: float, t: float | None = None) -> None:
        memo = self._memo
        r, raw = (memo[1], memo[2]) if memo is not None and memo[0] == x else self._raw(x)
        self._memo = None
        if r is not None:
            a = self.var_alpha
            self.var = (1.0 - a) * (self.var + a * r * r)
            self.lk.update(raw)
        self._remember(float(x))
        self.n += 1

    def _state(self) -> dict:
        return {"n": self.n, "var": self.var, "lk": self.lk.state(), "buffer": self.buffer}

    def _load(self, s: dict) -> None:
        self.n, self.var = s["n"], s["var"]
        self.lk.load(s["lk"])
        self.buffer = list(s["buffer"])
        self._rebuild()
