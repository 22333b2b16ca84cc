"""Context novelty: has the series ever shown this short shape (its last few values, coarsely quantised)?"""

from __future__ import annotations

from detectors.base import Detector


class ContextNovelty(Detector):
    """Score 1 when the current *context* was never seen before, else 0 (the idea of contextOSE and
    ARTime: an anomaly is a pattern the series has not produced, not only a value it has not taken).

    The context is the tuple of the last ``window`` values, each quantised into ``levels`` bins of
    the series' running [min, max] range (a value beyond the range falls in the edge bin: new
    extremes are ``novelty``'s job). Seen contexts are kept exactly in a bitmap of
    ``levels ** window`` bits (6 levels, window 4: 1296 bits, 162 bytes), so memory is bounded and
    nothing is forgotten. The first ``warmup`` points only learn.
    State: the bitmap (hex) plus six numbers.

    >>> d = ContextNovelty(window=2, levels=4, warmup=3)
    >>> for x in [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]:
    ...     d.learn_one(x)
    >>> d.score_one(0.0), d.score_one(0.5)           # (1 -> 0) seen; (1 -> middle) new
    (0.0, 1.0)
    """

    name = "context"
    input = "value"

    def __init__(self, window: int = 4, levels: int = 6, warmup: int = 100):
        if not 1 <= window <= 8 or not 2 <= levels <= 16 or levels**window > 65536:
            raise ValueError("window in [1, 8], levels in [2, 16], levels ** window <= 65536")
        if warmup < 1:
            raise ValueError("warmup must be >= 1")
        self.window, self.levels, self.warmup = window, levels, warmup
        self.n = 0
        self.lo = self.hi = 0.0
        self.code = 0  # the last window-1 quantised values, as a base-`levels` number
        self.seen = bytearray((levels**window + 7) // 8)

    def _level(self, x: float) -> int:
        rng = self.hi - self.lo
        if rng <= 0.0:
            return 0
        q = int((x - self.lo) / rng * self.levels)
        return 0 if q < 0 else (self.levels - 1 if q >= self.levels else q)

    def _context(self, x: float) -> int:
        return (self.code * self.levels + self._level(x)) % (self.levels**self.window)

    def _check(self, x) -> float:
        if not isinstance(x, int | float):
            raise TypeError(f"context scores one value, got {type(x).__name__}")
        return float(x)

    def score_one(self, x: float, t: float | None = None) -> float | None:
        x = self._check(x)
        if self.n + 1 < self.warmup:
            return None
        c = self._context(x)
        return 0.0 if self.seen[c >> 3] & (1 << (c & 7)) else 1.0

    def learn_one(self, x: float, t: float | None = None) -> None:
        x = self._check(x)
        if self.n == 0:
            self.lo = self.hi = x
        c = self._context(x)
        if self.n + 1 >= self.window:
            self.seen[c >> 3] |= 1 << (c & 7)
        self.code = c % (self.levels ** (self.window - 1)) if self.window > 1 else 0
        if x < self.lo:
            self.lo = x
        elif x > self.hi:
            self.hi = x
        self.n += 1

    def _state(self) -> dict:
        return {"n": self.n, "m": [self.lo, self.hi, self.code], "seen": self.seen.hex()}

    def _load(self, s: dict) -> None:
        self.n = s["n"]
        self.lo, self.hi, self.code = s["m"]
        self.seen = bytearray.fromhex(s["seen"])
