"""NAB scoring (Numenta Anomaly Benchmark v1.1 rules), written from the published description.

Pure functions: a labelled file is its row count and its windows as (first, last) row
indices; a detector's output is one score per row. The rules:

- probation: the first ``min(floor(0.15 n), 750)`` rows are not scored;
- a row inside a window, if it is the window's earliest detection, earns
  ``A_TP * sigma(-(last - i + 1) / width) / sigma(-1)`` where ``sigma(p) = 2/(1+e^(5p)) - 1``
  (so 1.0 at the window's first row, ~0 at its last);
- a window with no detection costs ``A_FN``;
- a detection outside every window earns ``A_FP * sigma(p)`` (negative): ``p = 3`` (full
  penalty ``-A_FP``) before any window, else ``p = (i - prev_last) / (prev_width - 1)``, so a
  detection right after a window costs less;
- one threshold per profile, the one with the best total over the whole corpus (a row is a
  detection when its score is >= the threshold; ties go to the higher threshold);
- normalised: ``100 (S - S_null) / (S_perfect - S_null)`` with ``S_null = -A_FN * windows``
  and ``S_perfect = A_TP * windows``.

>>> f = Labelled(name="f", rows=1000, windows=[(500, 599)])
>>> perfect = [0.0] * 1000; perfect[500] = 1.0
>>> round(score_corpus([f], [perfect])["standard"]["score"], 6)
100.0
>>> score_corpus([f], [[0.0] * 1000])["standard"]["score"]
0.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PROFILES: dict[str, tuple[float, float, float]] = {
    # name: (A_TP, A_FP, A_FN)
    "standard": (1.0, 0.11, 1.0),
    "reward_low_fp": (1.0, 0.22, 1.0),
    "reward_low_fn": (1.0, 0.11, 2.0),
}
PROBATION_PERCENT = 0.15
NONE_FIRE = 1.1  # the threshold reported when firing never pays


@dataclass
class Labelled:
    """One data file: its row count and anomaly windows as inclusive (first, last) row indices."""

    name: str
    rows: int
    windows: list[tuple[int, int]] = field(default_factory=list)


def probation(rows: int) -> int:
    """Rows at the start of a file that are not scored: min(floor(15 %), 750)."""
    return int(min(math.floor(PROBATION_PERCENT * rows), PROBATION_PERCENT * 5000))


def scaled_sigmoid(position: float) -> float:
    """NAB's reward curve: ~+0.987 at -1 (window start), 0 at 0, -1 from 3 on.

    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(3.0)
    (0.98661, 0.0, -1.0)
    """
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def row_weights(f: Labelled) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (unweighted reward, window index or -1 outside windows, -2 in probation).

    Inside a window the reward is already divided by sigma(-1) (1.0 at the window's first row).
    """
    n = f.rows
    reward = np.empty(n)
    where = np.full(n, -1, dtype=np.int64)
    max_tp = scaled_sigmoid(-1.0)
    wins = sorted(f.windows)
    prev_last = prev_width = None
    k = 0
    i = 0
    while i < n:
        if k < len(wins) and i == wins[k][0]:
            first, last = wins[k]
            width = last - first + 1
            for j in range(first, min(last, n - 1) + 1):
                reward[j] = scaled_sigmoid(-(last - j + 1) / width) / max_tp
                where[j] = k
            prev_last, prev_width = last, width
            k += 1
            i = last + 1
            continue
        if prev_last is None:
            reward[i] = -1.0
        else:
            reward[i] = scaled_sigmoid(abs(prev_last - i) / float(prev_width - 1)) if prev_width > 1 else -1.0
        i += 1
    where[: probation(n)] = -2
    return reward, where


def _sweep(scores: np.ndarray, reward: np.ndarray, window: np.ndarray, n_scored_windows: int, weights):
    """Corpus total for every distinct threshold: returns (thresholds, totals), highest threshold first."""
    a_tp, a_fp, a_fn = weights
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    r = reward[order]
    w = window[order]
    fp = np.where(w < 0, r * a_fp, 0.0)
    delta = np.zeros(len(s))
    best: dict[int, float] = {}
    for i in np.flatnonzero(w >= 0):
        k = int(w[i])
        v = r[i] * a_tp
        old = best.get(k, -a_fn)
        if v > old:
            delta[i] = v - old
            best[k] = v
    total = np.cumsum(fp + delta) - a_fn * n_scored_windows
    # a threshold's total includes every row with a score >= it: take the last row of each tie run
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    thresholds = np.concatenate([[NONE_FIRE], s[ends]])
    totals = np.concatenate([[-a_fn * n_scored_windows], total[ends]])
    return thresholds, totals


def score_corpus(files: list[Labelled], scores: list, profiles=None, thresholds: dict | None = None) -> dict:
    """Score one detector's outputs over a corpus: per profile, the best threshold and normalised score.

    ``scores[i]`` holds one score per row of ``files[i]`` (None counts as 0).
    ``thresholds`` (``{profile: threshold}``) fixes each profile's threshold instead of choosing
    the best one on this corpus: how a held-out part is scored with a threshold chosen elsewhere.
    Returns ``{profile: {"score", "threshold", "raw", "tp", "fp", "fn", "windows"}}``.
    """
    profiles = profiles or PROFILES
    parts = []
    n_windows = 0
    offset = 0
    for f, sc in zip(files, scores, strict=True):
        if len(sc) != f.rows:
            raise ValueError(f"{f.name}: {len(sc)} scores for {f.rows} rows")
        reward, where = row_weights(f)
        keep = where != -2
        arr = (sc if isinstance(sc, np.ndarray) else np.asarray([0.0 if v is None else float(v) for v in sc]))[keep]
        wid = where[keep]
        parts.append((arr, reward[keep], np.where(wid >= 0, wid + offset, -1)))
        offset += len(f.windows)
        n_windows += len(f.windows)
    s = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    r = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    w = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    scored = len(set(w[w >= 0].tolist()))
    out = {}
    for name, weights in profiles.items():
        a_tp, a_fp, a_fn = weights
        cuts, totals = _sweep(s, r, w, scored, weights)
        if thresholds is None:
            b = int(np.argmax(totals))  # first max: the highest threshold among ties
        else:  # the lowest cut still >= the given threshold fires exactly the rows with score >= it
            b = int(np.flatnonzero(cuts >= thresholds[name])[-1]) if (cuts >= thresholds[name]).any() else 0
        thr = float(cuts[b]) if thresholds is None else float(thresholds[name])
        det = s >= thr
        fired = {int(k) for k in w[det & (w >= 0)]}
        raw = float(totals[b])
        null, perfect = -a_fn * n_windows, a_tp * n_windows
        norm = 100.0 * (raw - null) / (perfect - null) if n_windows else 0.0
        out[name] = {
            "score": norm,
            "threshold": thr,
            "raw": raw,
            "tp": len(fired),
            "fp": int(np.sum(det & (w < 0))),
            "fn": scored - len(fired),
            "windows": n_windows,
        }
    return out
