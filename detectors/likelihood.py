"""Anomaly likelihood: how unusual a short average of raw scores is against its long-run spread."""

from __future__ import annotations

import math

LOG_FLOOR = math.log(1e-10)


class Likelihood:
    """Turn a raw score stream into a calibrated one (the idea of Numenta's anomaly likelihood).

    A short EWMA of raw scores is compared with the long EWMA mean and variance of that average;
    the Gaussian tail probability ``q`` becomes ``log(q + 1e-10) / log(1e-10)`` in [0, 1], so
    0.5 means a 1-in-100,000 event. While the history has no spread at all (a raw score that was
    always the same), anything above it scores 1. Constant memory (five floats).

    >>> lk = Likelihood(short=0.5, long=0.05)
    >>> for _ in range(200):
    ...     lk.update(0.1)
    >>> lk.score(0.1) < 0.1 < 0.9 < lk.score(1.0)
    True
    """

    __slots__ = ("short", "long", "sm", "lm", "lv")

    def __init__(self, short: float = 0.1, long: float = 0.001):
        self.short, self.long = short, long
        self.sm = self.lm = self.lv = 0.0

    def score(self, raw: float) -> float:
        sm = self.sm + self.short * (raw - self.sm)
        if self.lv <= 0.0:  # a history without spread: anything above it is new
            return 1.0 if sm > self.lm else 0.0
        z = (sm - self.lm) / math.sqrt(self.lv + 1e-12)
        q = 0.5 * math.erfc(z * 0.7071067811865476)
        s = math.log(q + 1e-10) / LOG_FLOOR
        return 0.0 if s < 0.0 else (1.0 if s > 1.0 else s)

    def update(self, raw: float) -> None:
        self.sm += self.short * (raw - self.sm)
        e = self.sm - self.lm
        a = self.long
        self.lm += a * e
        self.lv = (1.0 - a) * (self.lv + a * e * e)

    def state(self) -> list[float]:
        return [self.sm, self.lm, self.lv]

    def load(self, s: list[float]) -> None:
        self.sm, self.lm, self.lv = s
