"""Volatility novelty: a new extreme of the series' typical step size (a new noise regime)."""

from __future__ import annotations

from detectors.base import Detector
from detectors.novelty import RangeNovelty


class VolatilityNovelty(Detector):
    """Score how far the EWMA (rate ``rate``) of ``|x - previous x|`` leaves its own running range.

    A series that turns jittery (or flat) at the same level shows no new value and no new level,
    only a new step size: :class:`~detectors.novelty.RangeNovelty` (``scale``, ``warmup``) is run on
    that EWMA instead of the value. State: three numbers plus novelty's.

    >>> d = VolatilityNovelty(rate=0.5, warmup=5)
    >>> for i in range(40):
    ...     d.learn_one(10.0 + (i % 2))          # steps of 1
    >>> d.score_one(11.0), d.score_one(10.0), round(d.score_one(16.0), 2)   # same steps / jump of 5
    (0.0, 0.0, 1.0)
    """

    name = "volatility"
    input = "value"

    def __init__(self, rate: float = 0.02, scale: float = 0.1, warmup: int = 100):
        if not 0 < rate <= 1:
            raise ValueError("rate must be in (0, 1]")
        self.rate, self.scale, self.warmup = rate, scale, warmup
        self.nov = RangeNovelty(scale=scale, steps=False, warmup=warmup)
        self.n = 0
        self.prev = self.level = 0.0

    def _check(self, x) -> float:
        if not isinstance(x, int | float):
            raise TypeError(f"volatility scores one value, got {type(x).__name__}")
        return float(x)

    def _level(self, x: float) -> float:
        if self.n == 0:
            return 0.0
        a = abs(x - self.prev)
        return a if self.n == 1 else self.level + self.rate * (a - self.level)

    def score_one(self, x: float, t: float | None = None) -> float | None:
        return self.nov.score_one(self._level(self._check(x)))

    def learn_one(self, x: float, t: float | None = None) -> None:
        x = self._check(x)
        self.level = self._level(x)
        self.nov.learn_one(self.level)
        self.prev = x
        self.n += 1

    def _state(self) -> dict:
        return {"n": self.n, "m": [self.prev, self.level], "nov": self.nov._state()}

    def _load(self, s: dict) -> None:
        self.n = s["n"]
        self.prev, self.level = s["m"]
        self.nov._load(s["nov"])
