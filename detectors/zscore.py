"""Streaming z-score of a value and of its step (optionally huberised), calibrated by anomaly likelihood."""

from __future__ import annotations

import math

from detectors.base import Detector
from detectors.likelihood import Likelihood


class ZScore(Detector):
    """EWMA z-scores of the level and of the step ``|x - previous x|``, then calibrated.

    The level z-score is ``|x - mean| / sd`` with an EWMA mean and variance (rate ``alpha``).
    Clipping is off by default (``clip=0``); with ``clip > 0`` residuals are clipped at ``clip``
    standard deviations before they update the mean and variance, so one outlier does not blind
    the detector (at the price of following a real level shift more slowly). The step score is ``|dx| / EWMA(|dx|)``. The raw
    score ``max(1 - exp(-z/level_scale), 1 - exp(-step/step_scale))`` goes through
    :class:`~detectors.likelihood.Likelihood`. State: nine numbers.

    >>> d = ZScore(warmup=20)
    >>> for i in range(300):
    ...     d.learn_one(10.0 + (i % 5) * 0.1)
    >>> round(d.score_one(10.2), 2)
    0.07
    >>> for _ in range(3):
    ...     d.learn_one(30.0)                     # a sustained jump
    >>> round(d.score_one(30.0), 2)
    0.55
    """

    name = "zscore"
    input = "value"

    def __init__(
        self,
        alpha: float = 0.01,
        clip: float = 0.0,
        level_scale: float = 4.0,
        step_scale: float = 8.0,
        short: float = 0.3,
        long: float = 0.001,
        warmup: int = 100,
    ):
        for k, v in (("alpha", alpha), ("short", short), ("long", long)):
            if not 0 < v <= 1:
                raise ValueError(f"{k} must be in (0, 1]")
        if level_scale <= 0 or step_scale <= 0 or clip < 0:
            raise ValueError("level_scale and step_scale must be > 0, clip >= 0 (0: no clipping)")
        if warmup < 2:
            raise ValueError("warmup must be >= 2")
        self.alpha, self.clip = alpha, clip
        self.level_scale, self.step_scale = level_scale, step_scale
        self.short, self.long, self.warmup = short, long, warmup
        self.n = 0
        self.mean = self.var = self.prev = self.step = 0.0
        self.lk = Likelihood(short, long)
        self._memo = None

    def _raw(self, x: float) -> float:
        if self.n == 0:
            return 0.0
        var, step = self.var, self.step
        # a flat history after the warm-up (no variance, no steps): the first departure is as far as it gets
        # (novelty's rule too); during the warm-up a flat start says nothing yet
        far = math.inf if self.n + 1 >= self.warmup else 0.0
        z1 = abs(x - self.mean) / math.sqrt(var + 1e-12) if var > 0 else (0.0 if x == self.mean else far)
        z2 = abs(x - self.prev) / (step + 1e-12) if step > 0 else (0.0 if x == self.prev else far)
        return max(1.0 - math.exp(-z1 / self.level_scale), 1.0 - math.exp(-z2 / self.step_scale))

    def score_one(self, x: float, t: float | None = None) -> float | None:
        raw = self._raw(x)
        self._memo = (x, raw)
        if self.n + 1 < self.warmup:
            return None
        return self.lk.score(raw)

    def learn_one(self, x: float, t: float | None = None) -> None:
        memo = self._memo
        raw = memo[1] if memo is not None and memo[0] == x else self._raw(x)
        self._memo = None
        if self.n == 0:
            self.mean = self.prev = x
            self.n = 1
            return
        a = self.alpha
        dx = abs(x - self.prev)
        e = x - self.mean
        if self.clip and self.var > 0:
            lim = self.clip * math.sqrt(self.var)
            e = lim if e > lim else (-lim if e < -lim else e)
        self.mean += a * e
        self.var = (1.0 - a) * (self.var + a * e * e)
        self.step += a * (dx - self.step)
        self.prev = x
        self.lk.update(raw)
        self.n += 1

    def _state(self) -> dict:
        return {"n": self.n, "m": [self.mean, self.var, self.prev, self.step], "lk": self.lk.state()}

    def _load(self, s: dict) -> None:
        self.n = s["n"]
        self.mean, self.var, self.prev, self.step = s["m"]
        self.lk.load(s["lk"])
