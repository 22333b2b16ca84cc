"""The eight conditions as pure functions over a small JSON state ``c``: update, holds, deadline, value.

Each condition keeps only what it needs (the last N event times, the points of one window,
a detector and its recent scores), so a group's state stays small and bounded.
"""

from __future__ import annotations

import math
from bisect import insort

_CMP = {
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


# ---------------------------------------------------------------- event_count


EC_IDS = 8  # ids of a group's latest events kept to count a re-sent one once (an at-least-once source's retry)
EC_BUCKETS = 12  # time buckets of an event_count window for its count (the oldest may reach a twelfth before it)


def ec_update(cond, c: dict, t: float, ev) -> None:
    ts = c.setdefault("t", [])
    lo = t - cond.window
    if ev.time <= lo:
        return  # late: already outside the window
    eid = ev.id
    if eid:
        ids = c.get("i")
        if ids is None:
            ids = c["i"] = []
        elif eid in ids:
            return  # the same occurrence again (the kernel collector after a hard kill, an intake's retried batch)
        ids.append(eid)
        if len(ids) > EC_IDS:
            del ids[0]
    insort(ts, ev.time)
    cut = 0
    while cut < len(ts) and ts[cut] <= lo:
        cut += 1
    del ts[:cut]
    if len(ts) > cond.count:
        del ts[: len(ts) - cond.count]
    # how many within the window (``{{ count }}``, ``{{ value }}``): counts in EC_BUCKETS time buckets, bounded
    # whatever the burst (it was the count since the group began: "39 OOM kills within 15m" for 11)
    width = cond.window / EC_BUCKETS
    k = int(ev.time // width)
    w = c.get("w")
    if w is None:
        w = c["w"] = []
    if w and w[-1][0] == k:
        w[-1][1] += 1
    else:
        insort(w, [k, 1])
    while w and (w[0][0] + 1) * width <= lo:
        del w[0]
    c["k"] = sum(n for _, n in w)
    c["m"] = ev.message[:500]


def ec_holds(cond, c: dict, t: float, active: bool) -> bool:
    ts = c.get("t")
    return bool(ts) and len(ts) >= cond.count and ts[-cond.count] > t - cond.window


def ec_deadline(cond, c: dict):
    ts = c.get("t")
    return ts[-cond.count] + cond.window if ts and len(ts) >= cond.count else None


def ec_empty(cond, c: dict, t: float) -> bool:
    ts = c.get("t")
    return not ts or ts[-1] <= t - cond.window


# ---------------------------------------------------------------- state (set by one reason, cleared by another)


def st_update(cond, c: dict, t: float, ev, resolve: bool) -> None:
    if ev.time < c.get("t", float("-inf")):
        return  # older than the last transition we applied
    if resolve and "t" in c and not c.get("on"):
        return  # already cleared: its end time stays (a node's every NodeReady would keep a kept end for ever)
    c["t"] = ev.time
    if resolve:
        c["on"] = False
    else:
        c["on"] = True
        c["lt"] = ev.time
        c["k"] = c.get("k", 0) + 1
        c["m"] = ev.message[:500]


def st_holds(cond, c: dict, t: float, active: bool) -> bool:
    if not c.get("on"):
        return False
    return not cond.timeout or t < c["lt"] + cond.timeout


def st_deadline(cond, c: dict):
    return c["lt"] + cond.timeout if c.get("on") and cond.timeout else None


def st_empty(cond, c: dict, t: float) -> bool:
    """Nothing to keep: not holding, and, for a rule with a ``timeout``, not ended within it. A group an end cleared
    keeps when it ended that long, so a set-notice older than the end (a provider's redelivery of a Scheduled
    maintenance after its Canceled) is ignored by ``st_update`` instead of setting it again."""
    if st_holds(cond, c, t, False):
        return False
    return not (cond.timeout and not c.get("on") and "t" in c and t < c["t"] + cond.timeout)


# ---------------------------------------------------------------- time buckets


def _bucket(ring: list, k: int, keep: int, new: list) -> list:
    """The bucket of index ``k`` in a ring of time buckets ``[index, ...]``: the last one, else ``new`` appended,
    dropping those ``keep`` or more indices older (the ring holds one window's). burn_rate's, predict's and a
    dense threshold window's buckets.

    >>> ring = [[3, 1]]
    >>> _bucket(ring, 3, 12, [3, 0]) is ring[-1], _bucket(ring, 15, 12, [15, 0]), ring
    (True, [15, 0], [[15, 0]])
    """
    if ring and ring[-1][0] == k:
        return ring[-1]
    ring.append(new)
    while ring[0][0] <= k - keep:
        del ring[0]
    return new


# ---------------------------------------------------------------- threshold

TH_POINTS = 2000  # a window's points kept as they are (a 15 s scrape over 1h is 240); past it, its time buckets:
TH_BUCKETS = 120  # [index, n, sum, min, max, first t, first v, last t, last v, increase within]


def _agg(agg: str, pts: list, window: float = 0.0, now: float | None = None):
    if not pts:
        return None
    if agg == "last":
        return pts[-1][1]
    vals = [p[1] for p in pts]
    if agg == "avg":
        return sum(vals) / len(vals)
    if agg == "max":
        return max(vals)
    if agg == "min":
        return min(vals)
    if agg == "sum":
        return sum(vals)
    if agg == "count":
        return float(len(vals))
    # counters: increase with reset handling (a drop means the counter restarted from 0)
    if len(pts) < 2:
        return None
    inc = 0.0
    prev = vals[0]
    for v in vals[1:]:
        inc += v - prev if v >= prev else v
        prev = v
    return _counter(agg, inc, len(pts), pts[0], pts[-1][0], window, now)


def _counter(agg: str, inc: float, n: int, first: list, last: float, window: float, now: float | None):
    """``increase`` or ``rate`` of a counter that rose by ``inc`` over ``n`` points from ``first`` ([t, v]) to the
    time ``last``."""
    span = last - first[0]
    if span <= 0:
        return None
    if window > 0 and now is not None:  # PromQL's increase/rate over [now - window, now]: extrapolated to the edges
        inc *= _extrapolation(n, first, last, inc, window, now)
        return inc if agg == "increase" else inc / window
    return inc if agg == "increase" else inc / span


def _agg_buckets(agg: str, ring: list, window: float, now: float):
    """``_agg`` of a window folded into time buckets: ``last``, ``min``, ``max``, ``sum``, ``count``, ``avg`` and the
    counters' increase (resets within and between buckets) are exact over the points of the buckets held; those
    cover the last 119/120 to 120/120 of the window (its oldest 120th leaves in one step, as burn_rate's twelfth)."""
    if agg == "last":
        return ring[-1][8]
    if agg == "max":
        return max(b[4] for b in ring)
    if agg == "min":
        return min(b[3] for b in ring)
    n = sum(b[1] for b in ring)
    if agg in ("sum", "avg"):
        total = sum(b[2] for b in ring)
        return total if agg == "sum" else total / n
    if agg == "count":
        return float(n)
    if n < 2:
        return None
    inc, prev = 0.0, None
    for b in ring:
        if prev is not None:
            inc += b[6] - prev if b[6] >= prev else b[6]
        inc += b[9]
        prev = b[8]
    return _counter(agg, inc, n, [ring[0][5], ring[0][6]], ring[-1][7], window, now)


def _th_fold(cond, ring: list, t: float, v: float) -> None:
    """Add a point to a dense threshold window's ring of ``TH_BUCKETS`` time buckets."""
    k = int(t // (cond.window / TH_BUCKETS))
    b = _bucket(ring, k, TH_BUCKETS, [k, 0, 0.0, v, v, t, v, t, v, 0.0])
    if b[1]:
        b[9] += v - b[8] if v >= b[8] else v
        if v < b[3]:
            b[3] = v
        elif v > b[4]:
            b[4] = v
    b[1] += 1
    b[2] += v
    b[7], b[8] = t, v


def _extrapolation(n: int, first: list, last: float, inc: float, window: float, now: float) -> float:
    """PromQL's ``extrapolatedRate`` factor for a counter: the samples' increase stretched to the window's edges when
    they are within 1.1 average intervals of them (else by half an interval), and not before the counter's zero.
    As Prometheus 2.x does it (the Debian promtool the tests compare with): the window is closed (a sample at its
    start counts) and the zero clamp comes before the threshold; Prometheus 3 opens the window's start and clamps
    after, which differs when a counter's zero falls between half and 1.1 intervals before its first sample.

    A counter scraped every 45 s that rose by 4 in a 10-minute window (its first sample 60 s after the window's
    start): PromQL's increase is 4 x 562.5 / 540, above 4; a new counter that starts at 0 is not stretched back.

    >>> round(4 * _extrapolation(13, [60.0, 10.0], 600.0, 4.0, 600.0, 600.0), 3)
    4.167
    >>> round(_extrapolation(13, [60.0, 0.0], 600.0, 4.0, 600.0, 600.0), 3)
    1.0
    """
    span = last - first[0]
    avg = span / (n - 1)
    to_start, to_end = first[0] - (now - window), now - last
    if inc > 0 and first[1] >= 0:
        to_start = min(to_start, span * first[1] / inc)  # a counter does not go below zero
    limit = avg * 1.1
    stretched = span + (to_start if to_start < limit else avg / 2) + (to_end if to_end < limit else avg / 2)
    return stretched / span


def th_update(cond, c: dict, t: float, s) -> None:
    """Add a point to the window (``p``: its points; past ``TH_POINTS`` of them, ``b``: its time buckets, so a series
    sent every 10 ms does not make a state over Kafka's record size); ``v`` is the aggregate."""
    if (cond.window or cond.agg != "last") and not math.isfinite(s.value):
        return  # NaN or +-Inf in a window would make every aggregate of it NaN, and JSON state null after a restart
    ring = c.get("b")
    if ring is not None:
        if s.time <= c["lt"]:
            return  # out of order, or the same point again (a re-sent sample): ignored, as burn_rate does
        _th_fold(cond, ring, s.time, s.value)
        c["lt"] = s.time
        c["v"] = _agg_buckets(cond.agg, ring, cond.window, s.time)
        return
    pts = c.setdefault("p", [])
    if pts and s.time < pts[-1][0]:
        return  # out of order within a series: ignored
    if pts and s.time == pts[-1][0]:
        pts[-1] = [s.time, s.value]
    else:
        pts.append([s.time, s.value])
    if cond.window:
        lo = s.time - cond.window
        cut = 0
        while cut < len(pts) - 1 and pts[cut][0] < lo:
            cut += 1
        if cut:
            del pts[:cut]
        if len(pts) > TH_POINTS:
            c["b"] = ring = []
            for p in c.pop("p"):
                _th_fold(cond, ring, p[0], p[1])
            c["lt"] = s.time
            c["v"] = _agg_buckets(cond.agg, ring, cond.window, s.time)
            return
    elif len(pts) > 1:
        del pts[:-1]
    c["lt"] = s.time
    c["v"] = _agg(cond.agg, pts, cond.window, s.time)


def th_holds(cond, c: dict, t: float, active: bool, stale: float) -> bool:
    v = c.get("v")
    if v is None or t >= c["lt"] + stale or v != v:
        return False
    level = cond.resolve if active and cond.resolve is not None else cond.value
    v = abs(v) if cond.abs else v
    return _CMP[cond.op](v, level) and (cond.under is None or v < cond.under)


# ---------------------------------------------------------------- burn_rate

BURN_BUCKETS = 12  # per window: its mean covers the last 11 whole buckets and the current one (11/12..1 of it)


def br_update(cond, c: dict, t: float, s) -> None:
    """Add one point of the error ratio to every window's ring of ``BURN_BUCKETS`` time buckets.

    Bounded state whatever the window (3 days of 30 s scrapes are 8,640 points; here at most 12 buckets of
    ``[index, sum, count]`` per distinct window).  Means are over time, each point weighing the same: the
    error ratio over the window when the request rate is steady (PromQL's ``sum(rate(errors[1h])) /
    sum(rate(total[1h]))`` weighs by requests instead).  ``v`` is the burn rate (mean ratio / budget) of the
    pair nearest to firing (the lower of its two means), ``r`` how near: above 1 it holds.
    """
    x = s.value
    if not math.isfinite(x) or s.time <= c.get("lt", -math.inf):
        return  # NaN (no requests), +-Inf, out of order, or the same point again (a re-sent sample): ignored
    wins = cond.lengths  # computed once per rule (rules.schema.BurnRate)
    rings = c.get("b")
    if rings is None or len(rings) != len(wins):
        rings = c["b"] = [[] for _ in wins]
    means = {}
    for w, ring in zip(wins, rings, strict=True):
        k = int(s.time // (w / BURN_BUCKETS))
        b = _bucket(ring, k, BURN_BUCKETS, [k, 0.0, 0])
        b[1] += x
        b[2] += 1
        means[w] = sum(b[1] for b in ring) / sum(b[2] for b in ring)  # the ring holds this window's buckets only
    budget = 1.0 - cond.objective
    best = None
    since = c.get("h")
    if since is None or len(since) != len(cond.windows):
        since = c["h"] = [None] * len(cond.windows)
    for i, p in enumerate(cond.windows):
        low = min(means[p.long], means[p.short])
        r = low / (budget * p.factor)
        if r > 1.0:
            if since[i] is None:
                since[i] = s.time  # this pair holds from this point on, until a point says otherwise
        else:
            since[i] = None
        if best is None or r > best[0]:
            best = (r, low / budget)
    c["r"], c["v"] = best
    c["lt"] = s.time


def br_holds(cond, c: dict, t: float, active: bool, stale: float) -> bool:
    """Some pair has held for its ``for`` at ``t`` (and the series is not stale)."""
    if "lt" not in c or t >= c["lt"] + stale:
        return False
    since = c.get("h")
    if since is None:  # a state written before pairs had their own for: as all pairs without one
        return c["r"] > 1.0
    return any(h is not None and t >= h + p.for_ for h, p in zip(since, cond.windows, strict=False))


def br_deadline(cond, c: dict, after: float) -> float | None:
    """The next time (after ``after``) a holding pair's ``for`` runs out, or None."""
    out = None
    for h, p in zip(c.get("h") or (), cond.windows, strict=False):
        if h is not None and h + p.for_ > after and (out is None or h + p.for_ < out):
            out = h + p.for_
    return out


# ---------------------------------------------------------------- predict

PREDICT_BUCKETS = 12  # per window: [index, n, sum t, sum v, sum t*t, sum t*v], t from the series' first point


def pr_update(cond, c: dict, t: float, s) -> None:
    """Add a point to the window's buckets of regression sums; ``v`` is the line's value ``horizon`` after ``t``
    (None until the points span a twelfth of the window), ``n`` the latest value."""
    x = s.value
    if not math.isfinite(x) or s.time <= c.get("lt", -math.inf):
        return  # NaN, +-Inf, out of order, or the same point again (a re-sent sample): ignored
    t0 = c.setdefault("t0", s.time)
    w = cond.window / PREDICT_BUCKETS
    k = int(s.time // w)
    ring = c.setdefault("b", [])
    dt = s.time - t0  # small numbers: t*t of epoch seconds would lose the slope to rounding
    b = _bucket(ring, k, PREDICT_BUCKETS, [k, 0, 0.0, 0.0, 0.0, 0.0, s.time])  # last item: the bucket's first point
    b[1] += 1
    b[2] += dt
    b[3] += x
    b[4] += dt * dt
    b[5] += dt * x
    c["lt"], c["n"] = s.time, x
    n, st, sv, stt, stv = (sum(b[i] for b in ring) for i in range(1, 6))
    den = n * stt - st * st
    if n < 2 or s.time - ring[0][6] < w or den <= 0:
        c["v"] = None
        return
    slope = (n * stv - st * sv) / den
    c["v"] = sv / n + slope * (dt + cond.horizon - st / n)  # the line at t + horizon


def pr_holds(cond, c: dict, t: float, active: bool, stale: float) -> bool:
    v = c.get("v")
    if v is None or t >= c["lt"] + stale:
        return False
    if not _CMP[cond.op](v, cond.value):
        return False
    return cond.now is None or _CMP[cond.now.op](c["n"], cond.now.value)


# ---------------------------------------------------------------- absent


def ab_update(cond, c: dict, t: float, value) -> None:
    if t >= c.get("lt", float("-inf")):
        c["lt"] = t
        c["v"] = value


def ab_holds(cond, c: dict, t: float, active: bool) -> bool:
    return "lt" in c and t >= c["lt"] + cond.after and (not cond.forget or t < c["lt"] + cond.forget)


# ---------------------------------------------------------------- anomaly


def _flag(cond, c: dict, score, t: float) -> bool:
    """Is ``score`` anomalous for the condition (fixed ``above`` or a quantile of the recent
    scores)?  Records the score and the flag in ``c``, and in ``fs`` the time of the first flag
    after ``n`` unflagged points (when the anomaly began: an alert's "since")."""
    hist = c.setdefault("h", [])
    flag = False
    if score is not None:
        if cond.above is not None:
            flag = score > cond.above
        elif len(hist) >= 20:
            ordered = sorted(hist)
            flag = score > ordered[min(len(ordered) - 1, int(cond.quantile * len(ordered)))]
        if not flag or cond.above is not None:
            # the quantile is of the scores of normal points: a sustained anomaly (scores stuck at their top) would
            # otherwise raise its own cut to the top after a few points, and a stronger anomaly fire less
            hist.append(score)
            if len(hist) > cond.history:
                del hist[0]
    flags = c.setdefault("f", [])
    if flag and not any(flags[-cond.n + 1:] if cond.n > 1 else ()):
        c["fs"] = t
    flags.append(1 if flag else 0)
    if len(flags) > cond.n:
        del flags[0]
    c["sc"] = score
    return flag


def _expected(cond, m: list | None, x: float, learn: bool) -> list:
    """The expected range of a value: ``[mean, var, count, negative seen]`` of the values seen while not anomalous
    (unweighted at first, then an EWMA over about ``history`` points); learns ``x`` if ``learn``."""
    if m is None:
        m = [x, 0.0, 0, 0]
    elif len(m) < 4:
        m.append(0)
    if x < 0.0:
        m[3] = 1  # the series takes negative values: no floor at 0 for the expected range
    if learn and x == x:
        n = m[2] + 1
        a = max(1.0 / n, 2.0 / (cond.history + 1))
        e = x - m[0]
        m[0] += a * e
        m[1] = (1.0 - a) * (m[1] + a * e * e)
        m[2] = n
    return m


def _range(m: list) -> tuple[float, float]:
    """mean -/+ 3 sd; the low end not below 0 for a series never seen negative (latencies, ratios)."""
    sd = m[1] ** 0.5
    lo = m[0] - 3.0 * sd
    if lo < 0.0 and not (len(m) > 3 and m[3]):
        lo = 0.0
    return lo, m[0] + 3.0 * sd


def an_update(cond, c: dict, t: float, s, det) -> None:
    if "lt" in c and s.time <= c["lt"] or not math.isfinite(s.value):
        return  # a NaN or +-Inf would blind the detector for good (NaN scores, an infinite range) and not survive JSON
    score = det.score_one(s.value, s.time)
    det.learn_one(s.value, s.time)
    flag = _flag(cond, c, score, s.time)
    c["m"] = m = _expected(cond, c.get("m"), s.value, not flag)
    c["lo"], c["hi"] = _range(m)
    c["lt"] = s.time
    c["v"] = s.value


# ---------------------------------------------------------------- anomaly_vector


def av_update(cond, c: dict, t: float, s, det, features: tuple) -> None:
    """Collect one entity's metrics per ``every`` interval into ``c["x"]``; score the vector when it
    is complete, or (after the first complete one) when the next interval begins without it."""
    b = (s.time // cond.every) * cond.every
    cur = c.get("b")
    if cur is not None and b < cur:
        return  # late: its interval was already scored
    if cur is not None and b > cur:
        if not c.get("done") and c.get("x"):
            _av_score(cond, c, det, cur, features)
        c["x"] = {}
        c["done"] = False
    c["b"] = b
    x = c.setdefault("x", {})
    if c.get("done"):
        return
    x[s.name] = s.value if math.isfinite(s.value) else math.nan  # missing, which the detector skips
    c["lt"] = s.time
    if len(x) == len(features):
        _av_score(cond, c, det, b, features)
        c["done"] = True


def _av_score(cond, c: dict, det, b: float, features: tuple) -> None:
    got = c["x"]
    x = {f: got.get(f, math.nan) for f in features}  # a missing metric: NaN (the detector skips it)
    score = det.score_one(x, b)
    why = det.explain(x) if hasattr(det, "explain") else None  # before learning x
    det.learn_one(x, b)
    flag = _flag(cond, c, score, b)
    if why is not None:  # the detector says what it expected: the feature given the others
        if flag or "ft" not in c:
            c["ft"], c["lo"], c["hi"] = why
            c["v"] = x.get(why[0])
        return
    ms = c.setdefault("m", {})
    worst, far = None, -1.0
    for k, v in x.items():
        if v != v:
            continue
        m = ms[k] = _expected(cond, ms.get(k), v, not flag)
        sd = m[1] ** 0.5
        z = abs(v - m[0]) / sd if sd > 0 else (0.0 if v == m[0] else float("inf"))
        if z > far:
            worst, far = k, z
    c["ft"] = worst
    c["v"] = x[worst]
    c["lo"], c["hi"] = _range(ms[worst])


def an_holds(cond, c: dict, t: float, active: bool, stale: float) -> bool:
    return "lt" in c and t < c["lt"] + stale and sum(c.get("f", ())) >= cond.k
