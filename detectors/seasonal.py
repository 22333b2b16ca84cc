"""Seasonal baseline: each time-of-day (or time-of-week) slot learns its own normal level."""

from __future__ import annotations

import math

from detectors.base import Detector
from detectors.likelihood import Likelihood


class Seasonal(Detector):
    """Compare a value with the EWMA mean and spread of its slot of the season, then calibrate.

    The season (``period`` seconds: 86400 = time of day, 604800 = time of week) is cut into
    ``bins`` slots by event time ``t``; each slot keeps an EWMA mean and variance (rate
    ``alpha``). The residual's z-score uses the slot variance plus ``floor`` times the series'
    overall variance, maps to ``1 - exp(-z/scale)`` and goes through
    :class:`~detectors.likelihood.Likelihood`. A latency that is normal at 15:00 is anomalous
    at 03:00. State: ``2 * bins + 7`` numbers. ``t`` is required.

    >>> d = Seasonal(bins=24, warmup=10)
    >>> day = lambda h: 100.0 if 9 <= h < 17 else 10.0
    >>> for i in range(24 * 20):
    ...     d.learn_one(day(i % 24) + (i % 5), t=i * 3600.0)
    >>> round(d.score_one(101.0, t=(24 * 20 + 12) * 3600.0), 2)   # noon: busy is normal
    0.06
    >>> round(d.score_one(101.0, t=(24 * 20 + 3) * 3600.0), 2)    # 3 am: busy is not
    1.0
    """

    name = "seasonal"
    input = "value"

    def __init__(
        self,
        bins: int = 48,
        period: float = 86400.0,
        alpha: float = 0.05,
        global_alpha: float = 0.01,
        floor: float = 0.01,
        scale: float = 4.0,
        short: float = 0.3,
        long: float = 0.001,
        warmup: int = 100,
    ):
        if not 1 <= bins <= 10080:
            raise ValueError("bins must be in [1, 10080]")
        if period <= 0 or scale <= 0 or floor < 0:
            raise ValueError("period and scale must be > 0, floor >= 0")
        for k, v in (("alpha", alpha), ("global_alpha", global_alpha), ("short", short), ("long", long)):
            if not 0 < v <= 1:
                raise ValueError(f"{k} must be in (0, 1]")
        self.bins, self.period, self.alpha, self.global_alpha = bins, period, alpha, global_alpha
        self.floor, self.scale, self.short, self.long, self.warmup = floor, scale, short, long, warmup
        self.n = 0
        self.gm = self.gv = 0.0
        self.mean: list[float | None] = [None] * bins
        self.var = [0.0] * bins
        self.lk = Likelihood(short, long)
        self._memo = None

    def _slot(self, t: float | None) -> int:
        if t is None:
            raise ValueError("seasonal detector needs the event time t (epoch seconds)")
        return int((t % self.period) / self.period * self.bins) % self.bins

    def _raw(self, x: float, b: int) -> float:
        mu = self.mean[b]
        if mu is None:
            return 0.0
        v = self.var[b] + self.floor * self.gv
        if v <= 0.0:
            return 0.0
        return 1.0 - math.exp(-abs(x - mu) / math.sqrt(v + 1e-12) / self.scale)

    def score_one(self, x: float, t: float | None = None) -> float | None:
        b = self._slot(t)
        raw = self._raw(x, b) if self.n else 0.0
        self._memo = (x, t, raw)
        if self.n + 1 < self.warmup:
            return None
        return self.lk.score(raw)

    def learn_one(self, x: float, t: float | None = None) -> None:
        b = self._slot(t)
        memo = self._memo
        raw = memo[2] if memo is not None and memo[0] == x and memo[1] == t else self._raw(x, b)
        self._memo = None
        if self.n == 0:
            self.gm = x
            self.mean[b] = x
            self.n = 1
            return
        e = x - self.gm
        g = self.global_alpha
        self.gm += g * e
        self.gv = (1.0 - g) * (self.gv + g * e * e)
        mu = self.mean[b]
        if mu is None:
            self.mean[b] = x
        else:
            r = x - mu
            a = self.alpha
            self.mean[b] = mu + a * r
            self.var[b] = (1.0 - a) * (self.var[b] + a * r * r)
        self.lk.update(raw)
        self.n += 1

    def _state(self) -> dict:
        return {"n": self.n, "g": [self.gm, self.gv], "mean": self.mean, "var": self.var, "lk": self.lk.state()}

    def _load(self, s: dict) -> None:
        self.n = s["n"]
        self.gm, self.gv = s["g"]
        self.mean, self.var = list(s["mean"]), list(s["var"])
        self.lk.load(s["lk"])
