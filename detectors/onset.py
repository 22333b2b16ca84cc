"""Onset combiner: the weighted maximum of member scores, as one short spike per anomaly onset."""

from __future__ import annotations

from detectors.base import Detector

# the tuned default (kubesight bench nab): a new extreme of the value, a new extreme of its
# EWMA (level shift), a time-of-day slot residual
DEFAULT_MEMBERS = (
    {"name": "novelty", "params": {}},
    {"name": "novelty", "params": {"smoothing": 0.2}},
    {"name": "seasonal", "params": {}},
)
DEFAULT_WEIGHTS = (1.0, 0.2, 0.5)


class Onset(Detector):
    """Combine detectors and turn their plateaus into spikes at the onset of an anomaly.

    The combined score is ``max(weight_i * score_i)`` over the members (a member still warming
    up counts as 0; the combiner is warming up while all members are). Once the combined score
    reaches ``theta``, the next ``refractory`` points score 0: an incident is reported once,
    early, instead of as a long plateau of alerts (which NAB and on-call people both punish).
    Members are built by name through the registry: ``{"name": ..., "params": {...}}``.

    >>> d = Onset(members=[{"name": "novelty", "params": {"warmup": 3}}], weights=[1.0],
    ...           theta=0.5, refractory=3)
    >>> out = []
    >>> for x in [1, 3, 2, 2, 9, 9.5, 10, 2, 11]:
    ...     out.append(d.score_one(x))
    ...     d.learn_one(x)
    >>> [None if s is None else round(s, 2) for s in out]
    [None, None, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.67]
    """

    name = "onset"

    def __init__(
        self,
        members: list | tuple = DEFAULT_MEMBERS,
        weights: list | tuple = DEFAULT_WEIGHTS,
        theta: float = 0.1,
        refractory: int = 200,
    ):
        from detectors import registry  # members are built by name; registry imports this module

        if not members:
            raise ValueError("members: at least one detector spec is needed")
        if len(weights) != len(members):
            raise ValueError(f"weights: {len(weights)} given for {len(members)} members")
        if any(w < 0 for w in weights):
            raise ValueError("weights must be >= 0")
        if refractory < 0:
            raise ValueError("refractory must be >= 0")
        self.members = [{"name": m["name"], "params": dict(m.get("params", {}))} for m in members]
        self.weights = [float(w) for w in weights]
        self.theta = theta
        self.refractory = refractory
        self.dets = [registry.build(m["name"], m["params"]) for m in self.members]
        self._pairs = list(zip(self.weights, self.dets, strict=True))
        self.n = 0
        self.last = None  # index of the last point that reached theta
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

    def score_one(self, x, t: float | None = None) -> float | None:
        s = self._combined(x, t)
        self._memo = (x, t, s)
        if s is None:
            return None
        if self.last is not None and self.n - self.last < self.refractory:
            return 0.0
        return s if s < 1.0 else 1.0

    def learn_one(self, x, t: float | None = None) -> None:
        memo = self._memo
        s = memo[2] if memo is not None and memo[0] == x and memo[1] == t else self._combined(x, t)
        self._memo = None
        if s is not None and s >= self.theta and (self.last is None or self.n - self.last >= self.refractory):
            self.last = self.n
        for d in self.dets:
            d.learn_one(x, t)
        self.n += 1

    def _state(self) -> dict:
        return {"n": self.n, "last": self.last, "members": [d._state() for d in self.dets]}

    def _load(self, s: dict) -> None:
        self.n, self.last = s["n"], s["last"]
        for d, st in zip(self.dets, s["members"], strict=True):
            d._load(st)
