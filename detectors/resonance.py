"""Resonance: a bounded fuzzy-ART network over short windows of the series (ARTime's idea, our own code)."""

from __future__ import annotations

import base64

import numpy as np

from detectors.base import Detector
from detectors.likelihood import Likelihood

_SQRT_HALF = 0.7071067811865476


def _haar(v: list[float]) -> list[float]:
    """Full orthonormal Haar decomposition of a power-of-two-long list: [approximation, coarse .. fine details]."""
    out: list[float] = []
    a = v
    while len(a) > 1:
        pairs = range(0, len(a), 2)
        out = [(a[i] - a[i + 1]) * _SQRT_HALF for i in pairs] + out
        a = [(a[i] + a[i + 1]) * _SQRT_HALF for i in pairs]
    return a + out


def _unit(v: list[float]) -> list[float]:
    """Min-max normalised to [0, 1] (all zeros when flat)."""
    lo, hi = min(v), max(v)
    r = hi - lo
    return [0.0] * len(v) if r <= 0.0 else [(x - lo) / r for x in v]


class Resonance(Detector):
    """Score how badly the latest window of the series resonates with the categories learnt so far.

    The idea of ARTime (Hampton, 2021: adaptive resonance theory on NAB), written for a stream
    that does not know its length, range or future, with bounded memory:

    1. **Blocks.** Every ``step`` points make one block value: the block's mean, or its extreme
       (the one further from a moving average of block means) when that extreme is more than
       ``spike`` of the running range away from the mean (``spike`` >= 1: always the mean).
    2. **Levels.** A block value becomes its position in the running [min, max] of block values,
       and snaps to the running median level when within ``chomp`` of it.
    3. **Features.** The last ``window`` levels (where the series is) and the Haar transform of
       the same window min-max normalised (its shape), each quantised to ``Q`` = 63 steps and
       complement coded: ``4 * window`` small integers.
    4. **Fuzzy ART.** Each category is a weight vector ``w`` (the fuzzy AND, i.e. element-wise
       min, of the inputs it learnt). The match of input ``x`` is ``(|x ^ w| / |w|) ** 3 * e ** 2``,
       ``e`` the same ratio on the latest level alone (ARTime's "energy"). The best match ``A``
       is the window's *resonance*. If ``A`` reaches the vigilance (the running mean of ``A``,
       starting from ``rho``, at most 0.97) the best category learns the input (``w <- x ^ w``); otherwise the input
       is committed as a new category.
    5. **Score.** The mismatch ``1 - A``, calibrated per series by
       :class:`~detectors.likelihood.Likelihood` (``short``, ``long``), or raw with
       ``calibrated=False`` (for onset, which calibrates its own maximum).
    6. **Bounds.** At most ``categories`` categories: a new one replaces the category that
       resonated least recently. The first ``warmup`` blocks only learn (score ``None``).

    Scored at a block's last point (0 in between): a delay of at most ``step - 1`` points.
    State: ``categories`` weight vectors of ``4 * window`` bytes (base64) plus ``window + 12`` numbers.

    >>> d = Resonance(step=1, window=4, warmup=20, categories=8, calibrated=False)
    >>> for x in [0.0, 1.0, 2.0, 3.0, 2.0, 1.0] * 40:
    ...     d.learn_one(x)
    >>> d.score_one(0.0), round(d.score_one(1.5), 2), round(d.score_one(3.0), 2)  # goes on / off / jumps
    (0.0, 0.6, 0.65)
    """

    name = "resonance"
    input = "value"
    Q = 63

    def __init__(
        self,
        step: int = 3,
        window: int = 4,
        categories: int = 32,
        alpha: float = 0.01,
        spike: float = 1.0,
        chomp: float = 0.0,
        calibrated: bool = True,
        short: float = 0.25,
        long: float = 0.001,
        rho: float = 0.9,
        warmup: int = 40,
    ):
        if step < 1 or warmup < 1:
            raise ValueError("step and warmup must be >= 1")
        if window not in (2, 4, 8, 16):
            raise ValueError("window must be 2, 4, 8 or 16")
        if not 2 <= categories <= 64:
            raise ValueError("categories must be in [2, 64]")
        for k, v in (("alpha", alpha), ("short", short), ("long", long), ("rho", rho)):
            if not 0 < v <= 1:
                raise ValueError(f"{k} must be in (0, 1]")
        if spike < 0 or chomp < 0:
            raise ValueError("spike and chomp must be >= 0")
        self.step, self.window, self.categories = step, window, categories
        self.alpha, self.spike, self.chomp, self.warmup = alpha, spike, chomp, warmup
        self.calibrated, self.short, self.long, self.rho = bool(calibrated), short, long, rho
        self.n = 0  # points seen
        self.blocks = 0  # blocks learnt
        self.bsum = self.bhi = self.blo = 0.0  # the open block: sum, max, min
        self.avg = 0.0  # moving average of block means
        self.lo = self.hi = self.med = 0.0  # running range and median of block values
        self.levels: list[float] = []  # the last `window` levels
        self.mA = rho  # running mean of the resonance A: the vigilance
        self.lk = Likelihood(short, long)
        self.W = np.zeros((0, 4 * window), dtype=np.int64)  # weight vectors, one row per category
        self.used: list[int] = []  # block index of each category's last resonance
        self._memo = None

    # -- one block ---------------------------------------------------------------------------

    def _check(self, x) -> float:
        if not isinstance(x, int | float):
            raise TypeError(f"resonance scores one value, got {type(x).__name__}")
        return float(x)

    def _block(self, x: float) -> float:
        """The value of the block that ``x`` closes."""
        m = self.n % self.step
        s, hi, lo = (x, x, x) if m == 0 else (self.bsum + x, max(self.bhi, x), min(self.blo, x))
        mean = s / (m + 1)
        avg = mean if self.blocks == 0 else 0.5 * (self.avg + mean)
        ext = hi if abs(hi - avg) >= abs(lo - avg) else lo
        return ext if abs(ext - mean) > self.spike * (self.hi - self.lo) else mean

    def _features(self, v: float) -> tuple[np.ndarray, list[float], float, float, float]:
        """Input vector for block value ``v`` (with the range and median it implies)."""
        lo, hi = (v, v) if self.blocks == 0 else (min(self.lo, v), max(self.hi, v))
        r = hi - lo
        lev = 0.0 if r <= 0.0 else (v - lo) / r
        med = 0.0 if r <= 0.0 else min(1.0, max(0.0, (self.med - lo) / r))
        if abs(lev - med) < self.chomp:
            lev = med
        levels = (self.levels + [lev])[-self.window :]
        if len(levels) < self.window:
            levels = [levels[0]] * (self.window - len(levels)) + levels
        q = self.Q
        f = [int(round(z * q)) for z in _unit(_haar(_unit(levels)))] + [int(round(z * q)) for z in levels]
        return np.array(f + [q - z for z in f], dtype=np.int64), levels, lo, hi, lev

    def _match(self, x: np.ndarray) -> tuple[float, int]:
        """Best match and its category (-1: none yet)."""
        W = self.W
        if not len(W):
            return 0.0, -1
        last = len(x) // 2 - 1  # the latest level; its complement is at the end
        m = np.minimum(W, x).sum(axis=1) / np.maximum(W.sum(axis=1), 1)
        we, wc = W[:, last], W[:, -1]
        e = (np.minimum(we, x[last]) + np.minimum(wc, x[-1])) / np.maximum(we + wc, 1)
        M = m * m * m * e * e
        j = int(np.argmax(M))
        return float(M[j]), j

    def _score(self, A: float) -> float:
        mis = 1.0 - A if A < 1.0 else 0.0
        return self.lk.score(mis) if self.calibrated else mis

    def _closing(self, x: float):
        """(features, levels, lo, hi, lev, v, A, j) of the block ``x`` closes, memoised for learn_one."""
        memo = self._memo
        if memo is not None and memo[0] == x and memo[1] == self.n:
            return memo[2]
        v = self._block(x)
        f, levels, lo, hi, lev = self._features(v)
        A, j = self._match(f)
        out = (f, levels, lo, hi, lev, v, A, j)
        self._memo = (x, self.n, out)
        return out

    # -- the contract ------------------------------------------------------------------------

    def score_one(self, x: float, t: float | None = None) -> float | None:
        x = self._check(x)
        if self.blocks < self.warmup:
            return None
        if (self.n + 1) % self.step:
            return 0.0
        return self._score(self._closing(x)[6])

    def learn_one(self, x: float, t: float | None = None) -> None:
        x = self._check(x)
        m = self.n % self.step
        if m == 0:
            self.bsum = self.bhi = self.blo = x
        else:
            self.bsum += x
            self.bhi = max(self.bhi, x)
            self.blo = min(self.blo, x)
        if m + 1 == self.step:
            self._learn_block(x)
        self.n += 1

    def _learn_block(self, x: float) -> None:
        f, levels, lo, hi, _lev, v, A, j = self._closing(x)
        self._memo = None
        mean = self.bsum / self.step
        self.avg = mean if self.blocks == 0 else 0.5 * (self.avg + mean)
        r = hi - lo
        self.med = v if self.blocks == 0 else self.med + 0.02 * r * ((v > self.med) - (v < self.med))
        self.lo, self.hi, self.levels = lo, hi, levels
        b = self.blocks
        if j >= 0 and A >= min(0.97, self.mA):
            np.minimum(self.W[j], f, out=self.W[j])
            self.used[j] = b
        elif len(self.W) < self.categories:
            self.W = np.vstack([self.W, f])
            self.used.append(b)
        else:
            old = min(range(len(self.used)), key=self.used.__getitem__)
            self.W[old] = f
            self.used[old] = b
        if j >= 0:  # rho counts as one block, then equal weights for the first 1/alpha blocks, then an EWMA
            self.mA += max(self.alpha, 1.0 / (b + 1)) * (A - self.mA)
            self.lk.update(1.0 - A if A < 1.0 else 0.0)
        self.blocks += 1

    def _state(self) -> dict:
        return {
            "n": self.n,
            "b": self.blocks,
            "m": [self.bsum, self.bhi, self.blo, self.avg, self.lo, self.hi, self.med, self.mA],
            "lk": self.lk.state(),
            "lv": self.levels,
            "w": base64.b64encode(self.W.astype(np.uint8).tobytes()).decode(),
            "u": self.used,
        }

    def _load(self, s: dict) -> None:
        self.n, self.blocks = s["n"], s["b"]
        self.bsum, self.bhi, self.blo, self.avg, self.lo, self.hi, self.med, self.mA = s["m"]
        self.lk.load(s["lk"])
        self.levels = list(s["lv"])
        w = np.frombuffer(base64.b64decode(s["w"]), dtype=np.uint8).astype(np.int64)
        self.W = w.reshape(-1, 4 * self.window)
        self.used = list(s["u"])
        self._memo = None
