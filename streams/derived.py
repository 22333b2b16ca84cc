"""Derived signals: counter rates, ratios and histogram quantiles, computed in the stream (a Stage).

Samples arrive keyed by their series, so everything about ONE series is local to the partition
that owns it: the per-second rate of a counter over a window, with counter resets (a drop in
value means the counter restarted from zero, as in PromQL's ``rate``), or the change of a
GPU's last Xid code.  Aggregates ACROSS series -- a sum over every ``apiserver_request_total``
series, a 5xx share by verb, a quantile over histogram buckets that are separate series --
need the contributions of series living on other partitions, so they are re-keyed:

1. where a source series lives, its local result (e.g. its rate) is emitted to the ``samples``
   topic as a *partial* -- a Sample named ``<signal>:partial`` with labels
   ``kubesight="partial"``, ``src`` (the source series) and ``part`` (``le`` bound, 5xx or
   not) -- keyed by the DERIVED series key, so every partial of one derived series lands on
   one partition;
2. there, the latest partial of each source (younger than ``staleness``) is kept in the state
   under the derived key, and when the event-time watermark passes the newest partial by
   ``settle`` seconds the aggregate is emitted as the derived Sample (labels carry
   ``kubesight="derived"``), keyed by its own series key -- the same partition, so rules on
   the derived series share it.

The stage ignores its own outputs (``kubesight`` label) so nothing loops.  All state is plain
JSON in the given mapping under ``derived|...`` keys (assigned back on every change), so a
``dict`` serves in tests and the worker's changelogged ``Store`` in production; outputs depend
only on the records and the watermark, so replays give the same signals.  Quantiles follow
PromQL's ``histogram_quantile`` (linear interpolation within the bucket).  A signal that is
not defined yet (one point of a counter, a histogram with no observations in the window, a
ratio with no requests) is not emitted: silence, never a misleading 0.  Names and
definitions: ``collectors/metrics/DERIVED.md``.

>>> from streams.records import Sample, decode
>>> out = []
>>> emit = lambda topic, key, value: out.append((topic, key, decode(value)))
>>> d, state = Derived(), {}
>>> for t, v in [(0, 100), (30, 130), (60, 10)]:  # a restart between 30 and 60
...     d.process(Sample("apiserver_request_total", v, t, {"code": "200", "verb": "GET"}), state, emit)
>>> [(o[2].name, o[2].value) for o in out if o[2].name.startswith("apiserver_request_rate")]
[('apiserver_request_rate:partial', 1.0), ('apiserver_request_rate:partial', 0.6666666666666666)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

from streams.records import Sample, encode

MARK = "kubesight"  # label on partials ("partial") and derived samples ("derived")
PREFIX = "derived|"
PENDING = "derived|pending"


def _is_5xx(labels: dict) -> bool:
    c = labels.get("code", "")
    return len(c) == 3 and c[0] == "5" and c.isdigit()


def _not_long_running(labels: dict) -> bool:
    return labels.get("verb") not in ("WATCH", "CONNECT")


@dataclass(frozen=True)
class Signal:
    """One derived signal: what it reads, how it aggregates, which labels it keeps."""

    name: str
    source: str  # input metric name
    kind: str  # sum_rate | ratio_rate | quantile_rate | sum_gauge | xid_changes
    by: tuple[str, ...] = ("cluster",)  # labels kept on the output (absent ones are left out)
    where: Callable[[dict], bool] | None = None  # which source series count
    hit: Callable[[dict], bool] | None = None  # ratio: the numerator's series
    q: float = 0.99


SIGNALS = (
    Signal("apiserver_request_rate", "apiserver_request_total", "sum_rate"),
    Signal("apiserver_5xx_ratio", "apiserver_request_total", "ratio_rate", by=("cluster", "verb"), hit=_is_5xx),
    Signal("apiserver_p99_latency_seconds", "apiserver_request_duration_seconds_bucket", "quantile_rate",
           where=_not_long_running),
    Signal("etcd_fsync_p99_seconds", "etcd_disk_wal_fsync_duration_seconds_bucket", "quantile_rate",
           by=("cluster", "instance")),
    Signal("scheduler_pending_pods", "scheduler_pending_pods", "sum_gauge"),
    Signal("gpu_xid_errors", "DCGM_FI_DEV_XID_ERRORS", "xid_changes", by=()),
)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """PromQL's ``histogram_quantile`` over cumulative bucket counts (or rates) by upper bound.

    None when undefined (no ``+Inf`` bucket, no observations).

    >>> round(histogram_quantile(0.5, {0.1: 2, 0.2: 6, 0.4: 8, math.inf: 8}), 6)
    0.15
    >>> histogram_quantile(0.99, {0.1: 0, 1.0: 0, math.inf: 5})  # in the +Inf bucket: the highest finite bound
    1.0
    >>> histogram_quantile(0.99, {1.0: 0, math.inf: 0}) is None
    True
    """
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != math.inf or len(bounds) < 2:
        return None
    counts, top = [], 0.0
    for b in bounds:  # enforce monotonicity (rates of separately scraped buckets can wobble)
        top = max(top, buckets[b])
        counts.append(top)
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    i = next(i for i, c in enumerate(counts) if c >= rank)
    if i == len(bounds) - 1:
        return bounds[-2]
    if i == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[i], counts[i]
    if i > 0:
        start, count, rank = bounds[i - 1], counts[i] - counts[i - 1], rank - counts[i - 1]
    if count <= 0:
        return end
    return start + (end - start) * (rank / count)


def _le(v: str) -> float:
    return math.inf if v in ("+Inf", "Inf", "inf") else float(v)


class Derived:
    """The derived-signals stage: ``process(sample, state, emit)`` / ``tick(now, state, emit)``."""

    def __init__(self, signals=SIGNALS, window: float = 300.0, staleness: float = 300.0, settle: float = 1.0):
        self.window = window
        self.staleness = staleness
        self.settle = settle
        self.by_source: dict[str, list[Signal]] = {}
        for s in signals:
            self.by_source.setdefault(s.source, []).append(s)
        self.by_partial = {f"{s.name}:partial": s for s in signals}

    # ---------------------------------------------------------------- records in

    def process(self, rec, state: MutableMapping, emit) -> None:
        if not isinstance(rec, Sample):
            return
        labels = rec.labels
        mark = labels.get(MARK)
        if mark == "partial":
            sig = self.by_partial.get(rec.name)
            if sig is not None:
                self._collect(sig, rec, state)
            return
        if mark is not None:
            return
        sigs = self.by_source.get(rec.name)
        if not sigs:
            return
        series = rec.series()
        rate = None
        if any(s.kind.endswith("_rate") for s in sigs):
            rate = self._rate(series, rec, state)
        for sig in sigs:
            if sig.where is not None and not sig.where(labels):
                continue
            if sig.kind == "xid_changes":
                self._xid(sig, series, rec, state, emit)
            elif sig.kind == "sum_gauge":
                self._partial(sig, rec, series, "all", rec.value, emit)
            elif rate is not None:
                if sig.kind == "quantile_rate":
                    part = labels.get("le")
                    if part is None:
                        continue
                elif sig.kind == "ratio_rate":
                    part = "hit" if sig.hit(labels) else "miss"
                else:
                    part = "all"
                self._partial(sig, rec, series, part, rate, emit)

    def _rate(self, series: str, rec: Sample, state) -> float | None:
        """Per-second rate of a counter over ``window``, across resets; None until two points."""
        key = f"{PREFIX}c|{series}"
        st = state.get(key)
        t, v = rec.time, rec.value
        if st is None:
            state[key] = [v, 0.0, [[t, 0.0]]]
            return None
        prev, adj, pts = st
        if t <= pts[-1][0] or v != v:  # duplicate, out of order or NaN: no new information
            return None
        adj += v if v < prev else v - prev
        pts.append([t, adj])
        while len(pts) > 2 and pts[1][0] <= t - self.window:
            pts.pop(0)
        state[key] = [v, adj, pts]
        t0, a0 = pts[0]
        return (adj - a0) / (t - t0) if t > t0 else None

    def _out_labels(self, sig: Signal, labels: dict) -> dict:
        return {k: labels[k] for k in sig.by if k in labels}

    def _partial(self, sig: Signal, rec: Sample, series: str, part: str, value: float, emit) -> None:
        out = self._out_labels(sig, rec.labels)
        dkey = Sample(sig.name, 0.0, 0.0, {**out, MARK: "derived"}).key()
        p = Sample(f"{sig.name}:partial", value, rec.time, {**out, MARK: "partial", "src": series, "part": part})
        emit("samples", dkey, encode(p))

    def _xid(self, sig: Signal, series: str, rec: Sample, state, emit) -> None:
        """Count new Xid codes per GPU over the window (the gauge holds the LAST code, 0 = none)."""
        key = f"{PREFIX}x|{series}"
        st = state.get(key) or {"last": 0, "t": None, "events": []}
        t, code = rec.time, int(rec.value) if rec.value == rec.value else 0
        if st["t"] is not None and t <= st["t"]:
            return
        events = [e for e in st["events"] if e[0] > t - self.window]
        if code and code != st["last"]:
            events.append([t, code])
        state[key] = {"last": code, "t": t, "events": events}
        labels = {k: v for k, v in rec.labels.items() if k != MARK} if not sig.by else self._out_labels(sig, rec.labels)
        d = Sample(sig.name, float(len(events)), t, {**labels, MARK: "derived"})
        emit("samples", d.key(), encode(d))

    def _collect(self, sig: Signal, p: Sample, state) -> None:
        labels = {k: v for k, v in p.labels.items() if k not in (MARK, "src", "part")}
        d = Sample(sig.name, 0.0, 0.0, {**labels, MARK: "derived"})
        dkey = d.series()
        key = f"{PREFIX}a|{dkey}"
        agg = state.get(key) or {"labels": d.labels, "c": {}}
        src = p.labels.get("src", "")
        old = agg["c"].get(src)
        if old is not None and p.time < old[2]:
            return
        agg["c"][src] = [p.labels.get("part", "all"), p.value, p.time]
        state[key] = agg
        pending = state.get(PENDING) or {}
        if pending.get(dkey, -math.inf) < p.time:
            pending[dkey] = p.time
            state[PENDING] = pending

    # ---------------------------------------------------------------- timers

    def tick(self, now: float, state: MutableMapping, emit) -> None:
        pending = state.get(PENDING)
        if not pending:
            return
        done = [d for d, t in pending.items() if now >= t + self.settle]
        if not done:
            return
        by_name = {s.name: s for sigs in self.by_source.values() for s in sigs}
        for dkey in done:
            t = pending.pop(dkey)
            key = f"{PREFIX}a|{dkey}"
            agg = state.get(key)
            if agg is None:
                continue
            live = {src: c for src, c in agg["c"].items() if c[2] > t - self.staleness}
            if live:
                agg["c"] = live
                state[key] = agg
            else:
                del state[key]
                continue
            name = dkey.split("{", 1)[0]
            value = self._aggregate(by_name[name], live.values())
            if value is None or value != value:
                continue
            d = Sample(name, value, t, agg["labels"])
            emit("samples", d.key(), encode(d))
        state[PENDING] = pending

    @staticmethod
    def _aggregate(sig: Signal, contributions) -> float | None:
        if sig.kind in ("sum_rate", "sum_gauge"):
            return float(sum(c[1] for c in contributions))
        if sig.kind == "ratio_rate":
            den = sum(c[1] for c in contributions)
            return sum(c[1] for c in contributions if c[0] == "hit") / den if den > 0 else None
        if sig.kind == "quantile_rate":
            buckets: dict[float, float] = {}
            for part, v, _ in contributions:
                b = _le(part)
                buckets[b] = buckets.get(b, 0.0) + v
            return histogram_quantile(sig.q, buckets)
        return None
