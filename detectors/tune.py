"""Choosing a detector's parameters by a stated protocol: leave-one-category-out over a NAB corpus.

The protocol (what ``kubesight bench nab --cv`` prints):

1. Every candidate parameter set of a grid is run once over every file (a fresh detector per file).
2. For each category ``c`` (the folder under ``data/``), the candidate with the best NAB
   *standard* score on the **other** categories is chosen, and so is each profile's threshold
   (NAB's corpus-wide sweep, again on the other categories only).
3. The held-out category is scored with that candidate and those thresholds: its raw NAB total.
4. The five raw totals are summed and normalised over the whole corpus's windows, exactly as
   NAB normalises one corpus: ``100 (S - S_null) / (S_perfect - S_null)``.

So no figure of a held-out category ever depended on its own labels, neither through the
parameters nor through the threshold. The in-sample figure (parameters and threshold chosen on
all files) is printed beside it for comparison. A category without windows (NAB's
``artificialNoAnomaly``) still counts: false positives there cost points.

>>> from detectors.nab import Labelled
>>> a = Labelled("a/1.csv", 1000, [(500, 599)]); b = Labelled("b/1.csv", 1000, [(700, 799)])
>>> good = [[1.0 if i == r else 0.0 for i in range(1000)] for r in (500, 700)]
>>> bad = [[1.0 if i == r else 0.0 for i in range(1000)] for r in (300, 300)]
>>> cv = cross_validate([a, b], {"good": good, "bad": bad})
>>> round(cv["standard"], 6), [f["chosen"] for f in cv["folds"]]
(100.0, ['good', 'good'])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import product

from detectors.nab import PROFILES, Labelled, score_corpus


def category(key: str) -> str:
    """A NAB file's category: the folder of its key (``realKnownCause/nyc_taxi.csv`` -> ``realKnownCause``)."""
    return key.split("/", 1)[0] if "/" in key else ""


def expand(grid: dict[str, Iterable]) -> list[dict]:
    """Every combination of a grid ``{param: [values]}``, in a fixed order.

    >>> expand({"a": [1, 2], "b": ["x"]})
    [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]
    """
    keys = list(grid)
    return [dict(zip(keys, vals, strict=True)) for vals in product(*(list(grid[k]) for k in keys))]


def cross_validate(
    files: list[Labelled], candidates: dict, group: Callable[[str], str] = category
) -> dict:
    """Leave-one-group-out over ``files``; ``candidates`` maps a label to its scores (one list per file).

    Returns the cross-validated normalised score per profile, the folds (held-out group, chosen
    candidate, thresholds, held-out raw totals) and the in-sample choice for comparison.
    Candidates are tried in their insertion order; ties keep the earlier one.
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    groups = sorted({group(f.name) for f in files})
    if len(groups) < 2:
        raise ValueError(f"cross-validation needs at least two categories, got {groups}")
    labels = list(candidates)

    def pick(idx: list[int]) -> tuple[str, dict]:
        best = None
        for lab in labels:
            res = score_corpus([files[i] for i in idx], [candidates[lab][i] for i in idx])
            if best is None or res["standard"]["score"] > best[1]["standard"]["score"]:
                best = (lab, res)
        return best

    folds = []
    raw = dict.fromkeys(PROFILES, 0.0)
    for g in groups:
        train = [i for i, f in enumerate(files) if group(f.name) != g]
        test = [i for i, f in enumerate(files) if group(f.name) == g]
        lab, res = pick(train)
        thr = {p: v["threshold"] for p, v in res.items()}
        held = score_corpus([files[i] for i in test], [candidates[lab][i] for i in test], thresholds=thr)
        for p in PROFILES:
            raw[p] += held[p]["raw"]
        folds.append(
            {
                "held_out": g,
                "files": len(test),
                "windows": held["standard"]["windows"],
                "chosen": lab,
                "train_standard": round(res["standard"]["score"], 2),
                "thresholds": thr,
                "raw": {p: round(v["raw"], 3) for p, v in held.items()},
                "counts": {p: {c: v[c] for c in ("tp", "fp", "fn")} for p, v in held.items()},
            }
        )
    windows = sum(len(f.windows) for f in files)
    out = {}
    for p, (a_tp, _a_fp, a_fn) in PROFILES.items():
        null, perfect = -a_fn * windows, a_tp * windows
        out[p] = 100.0 * (raw[p] - null) / (perfect - null) if windows else 0.0
    lab, res = pick(list(range(len(files))))
    out["folds"] = folds
    out["in_sample"] = {"chosen": lab, **{p: v["score"] for p, v in res.items()}}
    return out
