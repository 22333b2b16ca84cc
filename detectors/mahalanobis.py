"""Streaming Mahalanobis score of one entity's metrics together (level and step), calibrated."""

from __future__ import annotations

import math

from detectors.base import Detector
from detectors.likelihood import Likelihood

REFRESH = 16  # points between two factorisations of the correlation matrices


def _cholesky(r: list[float], k: int, shrink: float) -> list[float]:
    """The lower Cholesky factor (row-major k*k) of ``(1 - shrink) R + shrink I``."""
    low = [0.0] * (k * k)
    for i in range(k):
        for j in range(i + 1):
            a = (1.0 - shrink) * r[i * k + j] + (shrink if i == j else 0.0)
            s = a - sum(low[i * k + m] * low[j * k + m] for m in range(j))
            if i == j:
                low[i * k + i] = math.sqrt(s if s > 1e-9 else 1e-9)
            else:
                low[i * k + j] = s / low[j * k + j]
    return low


def _quad(low: list[float], z: list[float], k: int) -> float:
    """``z' A^-1 z`` for ``A = L L'``: the squared norm of ``L^-1 z``."""
    q = 0.0
    y = [0.0] * k
    for i in range(k):
        row = i * k
        acc = z[i]
        for m in range(i):
            acc -= low[row + m] * y[m]
        y[i] = acc / low[row + i]
        q += y[i] * y[i]
    return q


def _zeq(d2: float, k: int) -> float:
    """A chi-square(k) distance as the standard normal deviate of the same tail (Wilson-Hilferty),
    floored at 0: noise in k features then scores like noise in one, and big distances stay big."""
    c = 2.0 / (9.0 * k)
    z = ((d2 / k) ** (1.0 / 3.0) - (1.0 - c)) / math.sqrt(c)
    return z if z > 0.0 else 0.0


class Mahalanobis(Detector):
    """Score a dict of metrics (one pod's CPU, memory, latency, errors...) against their joint history.

    Each feature is standardised by its own EWMA mean and variance (rate ``alpha``), and so is its
    step (``x - previous x``, EWMA of the squared step). The standardised level vector ``z`` and step
    vector ``s`` are scored by Mahalanobis distances ``z' R^-1 z`` against EWMA correlation matrices
    (rate ``corr``, shrunk towards the identity by ``shrink``, residuals clipped at ``clip`` sd in
    those updates so that one outlier does not rewrite them). A change that breaks how the metrics
    usually move together (CPU up without more requests, latency up without more CPU) scores higher
    than the same change along their usual direction. A distance ``d2`` over ``k`` features becomes
    the normal deviate of the same chi-square tail (Wilson-Hilferty; noise in four features then
    scores like noise in one), then
    ``max(1 - exp(-level/level_scale), 1 - exp(-step/step_scale))`` goes through
    :class:`~detectors.likelihood.Likelihood` (rates ``short``, ``long``). The scales are large (10
    sd) on purpose: a raw score that saturates at a few sd makes a 50-sd jump look like noise's
    extremes once calibrated.

    The features are the keys of the first vector learnt (at most ``max_features``, sorted); later
    vectors may miss some (that feature then contributes nothing) and extra keys are ignored.
    State: ``4k + 4k^2`` numbers plus the names (k = 4: 80 numbers).

    >>> d = Mahalanobis(warmup=20)
    >>> import random; rnd = random.Random(1)
    >>> for i in range(300):
    ...     load = rnd.gauss(100, 10)
    ...     d.learn_one({"cpu": load + rnd.gauss(0, 1), "latency": 0.2 * load + rnd.gauss(0, 0.5)})
    >>> usual = d.score_one({"cpu": 100.0, "latency": 20.0})         # both at their mean
    >>> together = d.score_one({"cpu": 120.0, "latency": 24.0})      # both up, as load makes them
    >>> against = d.score_one({"cpu": 80.0, "latency": 24.0})        # less CPU yet more latency
    >>> usual < together < 2 * together < against
    True
    >>> name, low, high = d.explain({"cpu": 80.0, "latency": 24.0})   # latency, given the CPU
    >>> name, low < 16 < high < 24
    ('latency', True)
    """

    name = "mahalanobis"
    input = "vector"

    def __init__(
        self,
        alpha: float = 0.01,
        corr: float = 0.01,
        shrink: float = 0.1,
        clip: float = 5.0,
        level_scale: float = 10.0,
        step_scale: float = 10.0,
        short: float = 0.1,
        long: float = 0.001,
        warmup: int = 30,
        max_features: int = 8,
    ):
        for k, v in (("alpha", alpha), ("corr", corr), ("short", short), ("long", long)):
            if not 0 < v <= 1:
                raise ValueError(f"{k} must be in (0, 1]")
        if not 0 <= shrink <= 1:
            raise ValueError("shrink must be in [0, 1]")
        if level_scale <= 0 or step_scale <= 0 or clip <= 0:
            raise ValueError("level_scale, step_scale and clip must be > 0")
        if warmup < 2:
            raise ValueError("warmup must be >= 2")
        if not 1 <= max_features <= 16:
            raise ValueError("max_features must be in [1, 16]")
        self.alpha, self.corr, self.shrink, self.clip = alpha, corr, shrink, clip
        self.level_scale, self.step_scale = level_scale, step_scale
        self.short, self.long, self.warmup, self.max_features = short, long, warmup, max_features
        self.keys: list[str] = []
        self.n = 0
        self.mean: list[float] = []
        self.var: list[float] = []
        self.prev: list[float] = []
        self.step: list[float] = []  # EWMA of the squared step
        self.seen: list[int] = []  # finite values seen per feature
        self.rl: list[float] = []  # level correlation, row-major k*k
        self.rs: list[float] = []  # step correlation
        self.ll: list[float] = []  # Cholesky factors of the shrunk correlations, refreshed every
        self.ls: list[float] = []  # REFRESH points (the correlations move slowly)
        self.lk = Likelihood(short, long)
        self._memo = None

    # -- input

    def _vector(self, x) -> list[float | None]:
        if not isinstance(x, dict):
            raise TypeError(f"mahalanobis scores a dict of metrics, got {type(x).__name__}")
        if not self.keys:
            names = sorted(k for k, v in x.items() if isinstance(v, int | float))[: self.max_features]
            if not names:
                raise ValueError("mahalanobis needs at least one numeric feature")
            return [float(x[k]) if math.isfinite(x[k]) else None for k in names]
        out: list[float | None] = []
        for k in self.keys:
            v = x.get(k)
            out.append(float(v) if isinstance(v, int | float) and math.isfinite(v) else None)
        return out

    def _residuals(self, v: list[float | None]) -> tuple[list[float], list[float]]:
        z, s = [], []
        for i, xi in enumerate(v):
            if xi is None or not self.seen[i]:
                z.append(0.0)
                s.append(0.0)
                continue
            var, st = self.var[i], self.step[i]
            z.append((xi - self.mean[i]) / math.sqrt(var) if var > 0 else 0.0)
            s.append((xi - self.prev[i]) / math.sqrt(st) if st > 0 else 0.0)
        return z, s

    def _raw(self, v) -> tuple[float, list[float], list[float]]:
        if self.n == 0:
            return 0.0, [], []
        z, s = self._residuals(v)
        k = len(z)
        dl = _quad(self.ll, z, k)
        ds = _quad(self.ls, s, k)
        zl, zs = _zeq(dl, k), _zeq(ds, k)
        raw = max(1.0 - math.exp(-zl / self.level_scale), 1.0 - math.exp(-zs / self.step_scale))
        return raw, z, s

    def explain(self, x) -> tuple[str, float, float] | None:
        """The feature furthest from what the others predict, and its expected range.

        For each feature, the mean and variance of its level *given the other features* (from the
        level correlation: ``E[z_i | rest] = z_i - (P z)_i / P_ii``, ``Var = 1 / P_ii`` with
        ``P = R^-1``), back in the feature's units: ``(name, mean - 3 sd, mean + 3 sd)`` of the one
        with the largest conditional deviation. None before the first observation.
        """
        v = self._vector(x)
        if self.n < 2:
            return None
        z, _ = self._residuals(v)
        k = len(z)
        low = self.ll
        w = [[0.0] * k for _ in range(k)]  # W = L^-1 (lower triangular)
        for i in range(k):
            w[i][i] = 1.0 / low[i * k + i]
            for j in range(i):
                w[i][j] = -sum(low[i * k + m] * w[m][j] for m in range(j, i)) / low[i * k + i]
        wz = [sum(w[i][m] * z[m] for m in range(i + 1)) for i in range(k)]
        best = None
        for i in range(k):
            if v[i] is None:
                continue
            pii = sum(w[m][i] ** 2 for m in range(i, k))
            pz = sum(w[m][i] * wz[m] for m in range(i, k))
            mu, sd = z[i] - pz / pii, math.sqrt(1.0 / pii)
            dev = abs(z[i] - mu) / sd
            if best is None or dev > best[0]:
                best = (dev, i, mu, sd)
        if best is None:
            return None
        _, i, mu, sd = best
        scale = math.sqrt(self.var[i]) if self.var[i] > 0 else 0.0
        return self.keys[i], self.mean[i] + scale * (mu - 3.0 * sd), self.mean[i] + scale * (mu + 3.0 * sd)

    # -- contract

    def score_one(self, x, t: float | None = None) -> float | None:
        v = self._vector(x)
        raw, z, s = self._raw(v)
        self._memo = (v, raw, z, s)
        if self.n + 1 < self.warmup:
            return None
        return self.lk.score(raw)

    def learn_one(self, x, t: float | None = None) -> None:
        v = self._vector(x)
        memo = self._memo
        self._memo = None
        raw, z, s = memo[1:] if memo is not None and memo[0] == v else self._raw(v)
        if self.n == 0:
            self.keys = sorted(k for k, val in x.items() if isinstance(val, int | float))[: self.max_features]
            k = len(self.keys)
            self.mean = [0.0 if val is None else val for val in v]
            self.prev = list(self.mean)
            self.seen = [0 if val is None else 1 for val in v]  # a feature's first value sets its mean
            self.var = [0.0] * k
            self.step = [0.0] * k
            eye = [1.0 if i == j else 0.0 for i in range(k) for j in range(k)]
            self.rl, self.rs = list(eye), list(eye)
            self.ll, self.ls = _cholesky(eye, k, self.shrink), _cholesky(eye, k, self.shrink)
            self.n = 1
            return
        k = len(self.keys)
        a, c, lim = self.alpha, self.corr, self.clip
        if self.n > 2:  # the correlations need a variance to standardise with
            zc = [lim if q > lim else (-lim if q < -lim else q) for q in z]
            sc = [lim if q > lim else (-lim if q < -lim else q) for q in s]
            for r, u in ((self.rl, zc), (self.rs, sc)):
                for i in range(k):
                    ui = u[i]
                    for j in range(i + 1, k):
                        m = r[i * k + j] + c * (ui * u[j] - r[i * k + j])
                        m = 1.0 if m > 1.0 else (-1.0 if m < -1.0 else m)  # a correlation, unit diagonal
                        r[i * k + j] = r[j * k + i] = m
            if self.n % REFRESH == 0:
                self.ll = _cholesky(self.rl, k, self.shrink)
                self.ls = _cholesky(self.rs, k, self.shrink)
        for i, xi in enumerate(v):
            if xi is None:
                continue
            if not self.seen[i]:
                self.mean[i] = self.prev[i] = xi
                self.seen[i] = 1
                continue
            d = xi - self.prev[i]
            e = xi - self.mean[i]
            cnt = self.seen[i]
            ai = 1.0 / cnt if cnt * a < 1.0 else a  # equal weights until 1/alpha values: no start-up bias
            self.mean[i] += ai * e
            self.var[i] = (1.0 - ai) * (self.var[i] + ai * e * e)
            self.step[i] += ai * (d * d - self.step[i])
            self.prev[i] = xi
            self.seen[i] = cnt + 1
        # the calibration starts a third into the warm-up (the first residuals, against a variance of
        # a few points, are no history to judge by) and weighs its history equally at first (so that
        # the end of the warm-up is not an alarm)
        m = self.n - self.warmup // 3
        if m >= 0:
            self.lk.long = max(self.long, 1.0 / (m + 1))
            self.lk.update(raw)
        self.n += 1

    def _state(self) -> dict:
        return {"n": self.n, "keys": self.keys, "seen": self.seen,
                "m": [self.mean, self.var, self.prev, self.step],
                "r": [self.rl, self.rs], "l": [self.ll, self.ls], "lk": self.lk.state()}

    def _load(self, s: dict) -> None:
        self.n = s["n"]
        self.keys = list(s["keys"])
        self.seen = list(s["seen"])
        self.mean, self.var, self.prev, self.step = (list(q) for q in s["m"])
        self.rl, self.rs = (list(q) for q in s["r"])
        self.ll, self.ls = (list(q) for q in s["l"])
        self.lk.load(s["lk"])
