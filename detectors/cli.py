"""``kubesight bench nab``: run a detector configuration over a NAB-layout folder and score it."""

from __future__ import annotations

import statistics
import sys
import time

import orjson

# `all`: each univariate detector alone (as the default combination uses it), then the default
# combination
ALL = (
    ("novelty", {}),
    ("novelty", {"smoothing": 0.2}),
    ("seasonal", {}),
    ("zscore", {}),
    ("onset", {}),
)


def register(sub, group) -> None:

    g = group("bench", "benchmarks that print figures")
    p = g.add_parser("nab", help="score detectors on the Numenta Anomaly Benchmark (NAB) rules")
    p.add_argument("--data", required=True, help="a NAB-layout folder (data/, labels/combined_windows.json)")
    p.add_argument(
        "--detector",
        default=None,
        help="registry name, 'all' (each univariate detector, then the default), or a JSON spec "
        '{"name": ..., "params": {...}} (default: the default configuration)',
    )
    p.add_argument("--params", default=None, help="JSON object of parameters for --detector NAME")
    p.add_argument("--labels", default="combined_windows.json", help="labels file under labels/")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--cv",
        action="store_true",
        help="also choose the default detector's parameters by leave-one-category-out over the "
        "folder's categories (detectors/tune.py) and print that cross-validated figure",
    )
    from detectors.onset import GRIDS

    p.add_argument("--cv-grid", choices=GRIDS, default="default",
                   help="the candidates of --cv: onset.GRID (128); experiments: GRID plus GRID_CONTEXT (384), GRID plus "
                   "GRID_RESONANCE (384), GRID_RESONANCE_ALONE (64), GRID plus GRID_VOLATILITY (384)")
    p.set_defaults(func=_nab)

    from detectors import nezha

    nezha.register(g)


class _members:
    """onset's member classes, with registry's ``build`` signature (context is a member only)."""

    @staticmethod
    def build(name: str, params: dict):
        from detectors.base import build_from
        from detectors.onset import MEMBERS

        return build_from(MEMBERS, name, params)


def run_detector(series, name: str, params: dict, progress=None, registry=None) -> dict:
    """Score every file with a fresh detector; returns scores, µs/point (median) and state bytes."""
    if registry is None:
        from detectors import registry

    registry.build(name, params)  # fail early on a bad spec
    clock = time.perf_counter_ns
    all_scores, per_point, sizes = [], [], []
    for s in series:
        d = registry.build(name, params)
        out = []
        ns = []
        score, learn = d.score_one, d.learn_one
        for x, t in zip(s.values, s.times, strict=True):
            t0 = clock()
            v = score(x, t)
            learn(x, t)
            ns.append(clock() - t0)
            out.append(v)
        all_scores.append(out)
        per_point.append(statistics.median(ns) / 1000.0)
        sizes.append(len(orjson.dumps(d.snapshot(), option=orjson.OPT_SERIALIZE_NUMPY)))
        if progress is not None:
            progress.update(1)
    return {
        "scores": all_scores,
        "us_per_point": statistics.median(per_point) if per_point else 0.0,
        "bytes_per_series": max(sizes) if sizes else 0,
    }


def evaluate(series, name: str, params: dict, progress=None) -> dict:
    from detectors.nab import score_corpus

    r = run_detector(series, name, params, progress)
    res = score_corpus([s.labelled for s in series], r["scores"])
    return {
        "detector": name,
        "params": params,
        "standard": round(res["standard"]["score"], 2),
        "reward_low_fp": round(res["reward_low_fp"]["score"], 2),
        "reward_low_fn": round(res["reward_low_fn"]["score"], 2),
        "threshold": res["standard"]["threshold"],
        "thresholds": {k: v["threshold"] for k, v in res.items()},
        "counts": {k: {c: v[c] for c in ("tp", "fp", "fn")} for k, v in res.items()},
        "us_per_point": round(r["us_per_point"], 2),
        "bytes_per_series": r["bytes_per_series"],
    }


def _specs(args) -> list[tuple[str, dict]]:
    from detectors import registry

    params = orjson.loads(args.params) if args.params else {}
    if not isinstance(params, dict):
        raise ValueError("--params must be a JSON object")
    det = args.detector or registry.DEFAULT
    if det == "all":
        return list(ALL)
    if det.lstrip().startswith("{"):
        spec = orjson.loads(det)
        return [(spec["name"], {**spec.get("params", {}), **params})]
    return [(det, params)]


def run_cv(series, progress=None, context: bool | str = False) -> dict:
    """Leave-one-category-out choice of the default detector's parameters over ``onset.candidates(context)``."""
    import numpy as np

    from detectors import registry, tune
    from detectors.onset import candidates as grid

    labels = [s.labelled for s in series]
    if len({tune.category(s.key) for s in series}) < 2:
        raise ValueError("--cv needs files of at least two categories (folders under data/)")
    from detectors.onset import replay

    candidates = {}
    members: dict[str, list] = {}  # member spec -> its scores per file (members ignore the combiner's params)
    for params in grid(context):
        label = orjson.dumps(params).decode()
        d = registry.build(registry.DEFAULT, params)
        cols = []
        for m in d.members:
            key = orjson.dumps(m, option=orjson.OPT_SORT_KEYS).decode()
            if key not in members:
                members[key] = run_detector(series, m["name"], m["params"], None, registry=_members())["scores"]
            cols.append(members[key])
        scores = [replay([c[j] for c in cols], d.weights, d.theta, d.refractory, d.rearm, d.short, d.long, d.output)
                  for j in range(len(series))]
        if progress is not None:
            progress.update(len(series))
        # arrays, not lists of floats: 288 candidates x 200k rows stay ~450 MB
        candidates[label] = [np.array([0.0 if v is None else v for v in sc]) for sc in scores]
    cv = tune.cross_validate(labels, candidates)
    out = {p: round(cv[p], 2) for p in ("standard", "reward_low_fp", "reward_low_fn")}
    out["candidates"] = len(candidates)
    out["folds"] = [{**f, "chosen": orjson.loads(f["chosen"])} for f in cv["folds"]]
    ins = cv["in_sample"]
    out["grid_in_sample"] = {
        "params": orjson.loads(ins["chosen"]),
        **{p: round(ins[p], 2) for p in ("standard", "reward_low_fp", "reward_low_fn")},
    }
    return out


def _nab(args) -> int:
    from tqdm import tqdm

    from detectors import corpus, registry, tune
    from detectors.onset import candidates as grid

    try:
        specs = _specs(args)
        series = corpus.load(args.data, args.labels)
        if args.cv and len({tune.category(s.key) for s in series}) < 2:
            raise ValueError("--cv needs files of at least two categories (folders under data/)")
    except (ValueError, FileNotFoundError, orjson.JSONDecodeError, KeyError) as e:
        print(f"bench nab: {e}", file=sys.stderr)
        return 2
    cv = None
    if args.cv:
        n = len(grid(args.cv_grid))
        with tqdm(total=len(series) * n, desc=f"cv: {n} candidates of {registry.DEFAULT}", unit="file", file=sys.stderr, leave=False, disable=None) as bar:
            cv = run_cv(series, bar, args.cv_grid)
    rows = len(series) and sum(len(s.values) for s in series)
    windows = sum(len(s.labelled.windows) for s in series)
    results = []
    with tqdm(total=len(series) * len(specs), desc="nab", unit="file", file=sys.stderr, leave=False, disable=None) as bar:
        for name, params in specs:
            bar.set_postfix_str(name)
            try:
                results.append(evaluate(series, name, params, bar))
            except ValueError as e:
                print(f"bench nab: {e}", file=sys.stderr)
                return 2
    main = results[-1]
    if args.json:
        out = {
            k: main[k]
            for k in ("standard", "reward_low_fp", "reward_low_fn", "threshold", "us_per_point", "bytes_per_series")
        }
        out.update(detector=main["detector"], files=len(series), rows=rows, windows=windows)
        if cv is not None:
            out["cv"] = cv
        if len(results) > 1:
            out["detectors"] = {
                _label(r): {k: r[k] for k in ("standard", "reward_low_fp", "reward_low_fn", "us_per_point", "bytes_per_series")}
                for r in results
            }
        print(orjson.dumps(out).decode())
        return 0
    print(f"NAB scoring of {args.data}: {len(series)} files, {rows} rows, {windows} windows")
    head = f"{'detector':<28} {'standard':>9} {'low_fp':>8} {'low_fn':>8} {'threshold':>10} {'tp/fp/fn':>12} {'us/point':>9} {'bytes/series':>13}"
    print(head)
    print("-" * len(head))
    for r in results:
        c = r["counts"]["standard"]
        print(
            f"{_label(r):<28} {r['standard']:>9.2f} {r['reward_low_fp']:>8.2f} {r['reward_low_fn']:>8.2f} "
            f"{r['threshold']:>10.4f} {c['tp']:>4}/{c['fp']}/{c['fn']:<4} {r['us_per_point']:>9.2f} {r['bytes_per_series']:>13}"
        )
    if cv is not None:
        print()
        print(f"cross-validated ({registry.DEFAULT}, leave one category out, {cv['candidates']} candidates; "
              "parameters and thresholds chosen on the other categories):")
        print(f"{'':<28} {'standard':>9} {'low_fp':>8} {'low_fn':>8}")
        g = cv["grid_in_sample"]
        print(f"{'in-sample (best of grid)':<28} {g['standard']:>9.2f} {g['reward_low_fp']:>8.2f} {g['reward_low_fn']:>8.2f}")
        print(f"{'cross-validated':<28} {cv['standard']:>9.2f} {cv['reward_low_fp']:>8.2f} {cv['reward_low_fn']:>8.2f}")
        for f in cv["folds"]:
            c = f["counts"]["standard"]
            print(f"  held out {f['held_out']:<22} {f['files']:>2} files {f['windows']:>3} windows  raw {f['raw']['standard']:>7.2f}  "
                  f"tp/fp/fn {c['tp']}/{c['fp']}/{c['fn']}  chosen {orjson.dumps(f['chosen']).decode()}")
    return 0


def _label(r: dict) -> str:
    p = r["params"]
    return r["detector"] if not p else f"{r['detector']} {orjson.dumps(p).decode()}"
