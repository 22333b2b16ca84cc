"""Onset combiner: the weighted maximum of member scores, calibrated, as one spike per anomaly onset."""

from __future__ import annotations

import math

from detectors.base import Detector, build_from
from detectors.context import ContextNovelty
from detectors.likelihood import Likelihood
from detectors.novelty import RangeNovelty
from detectors.resonance import Resonance
from detectors.seasonal import Seasonal
from detectors.volatility import VolatilityNovelty
from detectors.zscore import ZScore

# what onset combines: detectors of one value, by name (the registry lists onset itself besides these)
MEMBERS = {c.name: c for c in (RangeNovelty, Seasonal, ZScore, ContextNovelty, Resonance, VolatilityNovelty)}

# the default members: a new extreme of the value, a new extreme of its EWMA (level shift),
# a time-of-day slot residual, with the members' settings the grid was run with (pinned here, so
# that a change of a member's own default does not silently change the default detector). Weights, likelihood rates, theta and refractory are the grid
# `kubesight bench nab --cv` chooses from (GRID below); the defaults are its in-sample choice,
# which is also the choice of every leave-one-category-out fold.
DEFAULT_MEMBERS = (
    {"name": "novelty", "params": {"steps": False}},
    {"name": "novelty", "params": {"smoothing": 0.2, "steps": False}},
    {"name": "seasonal", "params": {"short": 0.1}},
)
DEFAULT_WEIGHTS = (1.0, 0.5, 0.5)

# the candidates of the cross-validated choice (128 parameter sets; see detectors/tune.py). With
# output="onset" theta is the decision threshold itself (NAB's threshold sweep has only the onsets'
# scores left to cut), so it gets four values; refractory 400 was never chosen by a fold, so two
GRID = {
    "weights": [(1.0, a, b) for a in (0.2, 0.5) for b in (0.5, 1.0)],
    "short": [0.25, 0.5],
    "long": [0.001, 0.003],
    "theta": [0.3, 0.4, 0.5, 0.6],
    "refractory": [100, 200],
}

# a second family, fixed before any NAB run with it (issue 18 #3; see candidates()): the default members plus context
# novelty (a short shape never seen, contextOSE/ARTime's idea) at a small weight; the rest as GRID
CONTEXT_MEMBERS = DEFAULT_MEMBERS + ({"name": "context", "params": {"window": 4, "levels": 6}},)
GRID_CONTEXT = {
    "members": [CONTEXT_MEMBERS],
    "weights": [(1.0, a, b, c) for a in (0.2, 0.5) for b in (0.5, 1.0) for c in (0.2, 0.5)],
    "short": GRID["short"],
    "long": GRID["long"],
    "theta": GRID["theta"],
    "refractory": GRID["refractory"],
}

# a third family, fixed before any cross-validated run with it (issue 18: ARTime's idea as a member):
# the default members plus `resonance` (fuzzy ART over short windows; raw mismatch, which onset
# calibrates; 24 categories so that onset stays under 4 KiB), weights and the rest as GRID_CONTEXT
RESONANCE = {"name": "resonance", "params": {"calibrated": False, "categories": 24}}
RESONANCE_MEMBERS = DEFAULT_MEMBERS + (RESONANCE,)
GRID_RESONANCE = {**GRID_CONTEXT, "members": [RESONANCE_MEMBERS]}
# resonance alone (onset's calibration, refractory and onset output around one member), fixed likewise
GRID_RESONANCE_ALONE = {
    "members": [({"name": "resonance", "params": {"calibrated": False, "categories": 24, "step": s}},) for s in (3, 5)],
    "weights": [(1.0,)],
    "short": GRID["short"],
    "long": GRID["long"],
    "theta": GRID["theta"],
    "refractory": GRID["refractory"],
}
# a fourth family, fixed before its cross-validated run: the default members plus volatility novelty
# (a new extreme of the EWMA of |step|: a new noise regime). Its rate 0.02 was chosen in-sample
# among 0.01-0.1 (0.01-0.03 lifted the in-sample best to 70.2-70.7, 0.05 and 0.1 did not)
VOLATILITY_MEMBERS = DEFAULT_MEMBERS + ({"name": "volatility", "params": {"rate": 0.02}},)
GRID_VOLATILITY = {
    **GRID_CONTEXT,
    "members": [VOLATILITY_MEMBERS],
    "weights": [(1.0, a, b, c) for a in (0.2, 0.5) for b in (0.5, 1.0) for c in (0.5, 1.0)],
}
GRIDS = ("default", "context", "resonance", "resonance-alone", "volatility")


def candidates(context: bool | str = False) -> list[dict]:
    """The parameter sets ``kubesight bench nab --cv`` chooses from (``--cv-grid``, one of GRIDS):
    ``"default"`` (or False) GRID (128); ``"context"`` (or True) GRID then GRID_CONTEXT (384);
    ``"resonance"`` GRID then GRID_RESONANCE (384); ``"resonance-alone"`` GRID_RESONANCE_ALONE (64);
    ``"volatility"`` GRID then GRID_VOLATILITY (384). None of the experiments helped. Context: with output="onset" no fold chooses it (67.5 / 62.5 / 71.1
    either way); with output="score" 62.3 / 56.0 / 66.2 over GRID + GRID_CONTEXT against 63.2 / 56.5 /
    67.3 over GRID alone. Resonance: 66.4 / 60.1 / 70.4 (two folds chose it and lost on the held-out
    category); alone 46.6 / 31.2 / 53.3. Volatility: 70.7 in-sample but 63.8 / 57.9 / 70.3 cross-validated
    (every fold chose it; artificialWithAnomaly and realTraffic lost). GRID stays the protocol's grid."""
    from detectors.tune import expand

    if context == "resonance":
        return expand(GRID) + expand(GRID_RESONANCE)
    if context == "resonance-alone":
        return expand(GRID_RESONANCE_ALONE)
    if context == "volatility":
        return expand(GRID) + expand(GRID_VOLATILITY)
    return expand(GRID) + (expand(GRID_CONTEXT) if context and context != "default" else [])


# what Onset scores: only each incident's onset (default), or every unmuted point's calibrated score
OUTPUTS = ("onset", "score")


class Onset(Detector):
    """Combine detectors, calibrate per series, and report each incident once, at its onset.

    1. The raw score is ``max(weight_i * score_i)`` over the members (a member still warming up
       counts as 0; the combiner is warming up while all members are).
    2. It is calibrated against this series' own history by
       :class:`~detectors.likelihood.Likelihood` (rates ``short`` and ``long``): the score is how
       unusual the recent raw level is for *this* series, so one threshold means the same on a
       noisy series and a quiet one (HTM's anomaly likelihood idea). Without it a threshold
       chosen on some series does not carry to others (cross-validation: 53.6 vs 65.8).
    3. Once the score reaches ``theta``, the next ``refractory`` points score 0: an incident is
       reported once, early, instead of as a plateau of alerts (NAB and on-call people both
       punish plateaus). The incident is over, and the detector re-armed early, once the score
       has stayed below ``theta`` for ``rearm`` points in a row (0: never early): an isolated
       false alarm (a new extreme of plain noise) no longer hides a real onset 20-200 points
       later, while a sustained incident keeps the score above theta and stays muted.
    4. ``output="onset"`` (the default): only the onset itself scores (its calibrated score, >=
       ``theta``); every other point scores 0. ``theta`` is then the detector's own decision
       threshold, not a cut left to whoever reads the scores: with ``output="score"`` (the calibrated
       score of every unmuted point) a threshold chosen on some NAB categories cut the scores of the
       held-out one at another place than theta and cross-validation lost 4.3 points (63.2 vs 67.5
       standard, 56.5 vs 62.5 low FP). A rule ``above: theta`` fires on the same points either way.

    Members are built by name from ``MEMBERS``: ``{"name": ..., "params": {...}}``.
    Members must score one value (``input == "value"``). State: the members' plus six numbers.

    >>> d = Onset(members=[{"name": "novelty", "params": {"warmup": 3, "steps": False}}], weights=[1.0],
    ...           theta=0.3, refractory=3, short=1.0, long=0.1, output="score")
    >>> out = []
    >>> for x in [1, 3, 2, 2, 2.5, 1.5, 2, 9, 9.5, 10, 2, 11]:
    ...     out.append(d.score_one(x))
    ...     d.learn_one(x)
    >>> [None if s is None else round(s, 2) for s in out]
    [None, None, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.01, 0.14]
    """

    name = "onset"
    input = "value"

    def __init__(
        self,
        members: list | tuple = DEFAULT_MEMBERS,
        weights: list | tuple = DEFAULT_WEIGHTS,
        theta: float = 0.4,
        refractory: int = 100,
        rearm: int = 20,
        short: float = 0.5,
        long: float = 0.001,
        output: str = "onset",
    ):
        if not members:
            raise ValueError("members: at least one detector spec is needed")
        if len(weights) != len(members):
            raise ValueError(f"weights: {len(weights)} given for {len(members)} members")
        if any(w < 0 for w in weights):
            raise ValueError("weights must be >= 0")
        if refractory < 0 or rearm < 0:
            raise ValueError("refractory and rearm must be >= 0")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}")
        for k, v in (("short", short), ("long", long)):
            if not 0 < v <= 1:
                raise ValueError(f"{k} must be in (0, 1]")
        for i, m in enumerate(members):
            if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not isinstance(m.get("params", {}), dict):
                raise ValueError(f"members[{i}]: expected {{name: <detector>, params: {{...}}}}, got {m!r}")
        self.members = [{"name": m["name"], "params": dict(m.get("params", {}))} for m in members]
        self.weights = [float(w) for w in weights]
        self.theta = theta
        self.refractory = refractory
        self.rearm = rearm
        self.short, self.long = short, long
        self.output = output
        self._onset_only = output == "onset"
        self.lk = Likelihood(short, long)
        self.dets = [build_from(MEMBERS, m["name"], m["params"]) for m in self.members]
        vectors = [m["name"] for m, d in zip(self.members, self.dets, strict=True) if d.input != "value"]
        if vectors:
            raise ValueError(f"members: {', '.join(vectors)} score a vector; onset combines detectors of one value")
        self._pairs = list(zip(self.weights, self.dets, strict=True))
        self.n = 0
        self.last = None  # index of the last point that reached theta
        self.quiet = 0  # points in a row below theta since then
        self._memo = None

    def _combined(self, x, t) -> float | None:
        best = None
        for w, d in self._pairs:
            s = d.score_one(x, t)
            if s is not None:
                s *= w
                if best is None or s > best:
                    best = s
        return best

    def _muted(self) -> bool:
        """Inside the refractory period of the last alarm, and that incident not yet over."""
        if self.last is None or self.n - self.last >= self.refractory:
            return False
        return not (self.rearm and self.quiet >= self.rearm)

    def score_one(self, x, t: float | None = None) -> float | None:
        if not math.isfinite(x):  # NaN, +-Inf: no opinion, and nothing learnt (learn_one) -- one would blind a member
            return None
        raw = self._combined(x, t)
        self._memo = (x, t, raw)
        if raw is None:
            return None
        if self._muted():
            return 0.0
        s = self.lk.score(raw)
        return 0.0 if self._onset_only and s < self.theta else s

    def learn_one(self, x, t: float | None = None) -> None:
        if not math.isfinite(x):
            return
        memo = self._memo
        raw = memo[2] if memo is not None and memo[0] == x and memo[1] == t else self._combined(x, t)
        self._memo = None
        if raw is not None:
            s = self.lk.score(raw)
            if s >= self.theta:
                if not self._muted():
                    self.last = self.n
                self.quiet = 0
            else:
                self.quiet += 1
            self.lk.update(raw)
        for d in self.dets:
            d.learn_one(x, t)
        self.n += 1

    def _state(self) -> dict:
        return {"n": self.n, "last": self.last, "quiet": self.quiet, "lk": self.lk.state(), "members": [d._state() for d in self.dets]}

    def _load(self, s: dict) -> None:
        self.n, self.last, self.quiet = s["n"], s["last"], s["quiet"]
        self.lk.load(s["lk"])
        for d, st in zip(self.dets, s["members"], strict=True):
            d._load(st)


def replay(member_scores: list[list], weights, theta: float, refractory: int, rearm: int, short: float,
           long: float, output: str = "onset") -> list[float | None]:
    """Onset's scores computed from its members' scores over a series.

    Members see only the data, never the combiner's parameters, so a grid over weights, likelihood
    rates, theta, refractory and rearm needs the members run once per series: this gives the very
    numbers ``Onset(...)`` would (a test checks it) at a fraction of the cost.
    """
    lk = Likelihood(short, long)
    onset_only = output == "onset"
    n, last, quiet = 0, None, 0
    out: list[float | None] = []
    pairs = list(zip(weights, member_scores, strict=True))
    for i in range(len(member_scores[0])):
        raw = None
        for w, ms in pairs:
            s = ms[i]
            if s is not None:
                s *= w
                if raw is None or s > raw:
                    raw = s
        if raw is None:
            out.append(None)
        else:
            muted = last is not None and n - last < refractory and not (rearm and quiet >= rearm)
            s = lk.score(raw)
            out.append(0.0 if muted or (onset_only and s < theta) else s)
            if s >= theta:
                if not muted:
                    last = n
                quiet = 0
            else:
                quiet += 1
            lk.update(raw)
        n += 1
    return out
