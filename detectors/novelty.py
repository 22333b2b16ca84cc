"""Range novelty: how far a value steps outside everything the series has shown so far."""

from __future__ import annotations

import math

from detectors.base import Detector


class RangeNovelty(Detector):
    """Score a value by how far it exceeds the series' running [min, max], relative to that range.

    ``1 - exp(-excess / (scale * range))``: 0 inside the known range, rising quickly for new
    extremes. Many production incidents (and most NAB anomalies) first show as a value the
    series has never taken. A series that was constant scores 1.0 on its first different value.
    With ``smoothing`` < 1 the same is done on an EWMA of the values (rate ``smoothing``), which
    catches a level shift of a noisy series before any single point leaves the range.
    State: four numbers.

    >>> d = RangeNovelty(warmup=4)
    >>> for x in [1.0, 2.0, 3.0, 2.0]:
    ...     d.learn_one(x)
    >>> d.score_one(2.5), round(d.score_one(3.2), 3), round(d.score_one(5.0), 3)
    (0.0, 0.632, 1.0)
    """

    name = "novelty"
    input = "value"

    def __init__(self, scale: float = 0.1, smoothing: float = 1.0, steps: bool = True, warmup: int = 100):
        if not scale > 0:
            raise ValueError("scale must be > 0")
        if not 0 < smoothing <= 1:
            raise ValueError("smoothing must be in (0, 1]")
        if warmup < 1:
            raise ValueError("warmup must be >= 1")
        self.scale = scale
        self.smoothing = smoothing
        self.steps = bool(steps)
        self.warmup = warmup
        self.n = 0
        self.lo = self.hi = self.level = 0.0
        self.prev = self.jump = 0.0  # the previous value, the largest step |x - previous x| so far

    def _smooth(self, x: float) -> float:
        return x if self.n == 0 else self.level + self.smoothing * (x - self.level)

    def _raw(self, x: float) -> float:
        if self.n == 0:
            return 0.0
        lo, hi = self.lo, self.hi
        excess = x - hi if x > hi else (lo - x if x < lo else 0.0)
        if excess <= 0.0:
            return 0.0
        rng = hi - lo
        if rng <= 0.0:
            return 1.0
        return 1.0 - math.exp(-excess / (self.scale * rng))

    def _step(self, x: float) -> float:
        if self.n < 2:
            return 0.0
        excess = abs(x - self.prev) - self.jump
        if excess <= 0.0:
            return 0.0
        rng = self.hi - self.lo
        if rng <= 0.0:
            return 1.0
        return 1.0 - math.exp(-excess / (self.scale * rng))

    def score_one(self, x: float, t: float | None = None) -> float | None:
        if self.n + 1 < self.warmup:
            return None
        s = self._raw(self._smooth(x) if self.smoothing < 1.0 else x)
        return max(s, self._step(x)) if self.steps else s

    def learn_one(self, x: float, t: float | None = None) -> None:
        if self.n:
            step = abs(x - self.prev)
            if step > self.jump:
                self.jump = step
        self.prev = x
        if self.smoothing < 1.0:
            x = self.level = self._smooth(x)
        if self.n == 0:
            self.lo = self.hi = x
        elif x < self.lo:
            self.lo = x
        elif x > self.hi:
            self.hi = x
        self.n += 1

    def _state(self) -> dict:
        return {"n": self.n, "m": [self.lo, self.hi, self.level, self.prev, self.jump]}

    def _load(self, s: dict) -> None:
        self.n = s["n"]
        self.lo, self.hi, self.level, self.prev, self.jump = s["m"]
