"""``kubesight bench rules``: rule-evaluation cost per signal with whole packs loaded, on a realistic mix.

The mix: every recorded core/v1 Event of the OpenShift must-gather (as the replay produces them)
plus the samples of real scrapes (kube-state-metrics, kubelet/cAdvisor, control plane,
node-exporter, dcgm-exporter) repeated as 15-second scrapes, plus the derived signals named in
``rules/packs/default/SIGNALS.md``.  Reading and converting the files is not timed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

from core.records import Entity, Event, Sample, parse_time

DERIVED = ("apiserver_request_rate", "apiserver_5xx_ratio", "apiserver_p99_latency_seconds",
           "etcd_fsync_p99_seconds", "etcd_commit_p99_seconds", "scheduler_pending_pods", "gpu_xid_errors",
           "node_filesystem_avail_ratio", "node_memory_available_ratio", "node_cpu_utilisation",
           "container_memory_limit_ratio", "container_cpu_throttled_ratio", "kubelet_volume_avail_ratio")


def must_gather_events(root: Path) -> list[Event]:
    """The must-gather EventLists as Event records (time-ordered), the way the replay keys them."""
    out = []
    for f in sorted((root / "openshift-must-gather-events" / "must-gather-aws" / "namespaces").glob("*/core/events.yaml")):
        doc = yaml.load(f.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        for o in doc.get("items") or ():
            io = o.get("involvedObject") or {}
            when = o.get("lastTimestamp") or o.get("firstTimestamp") or (o.get("metadata") or {}).get("creationTimestamp")
            if not when or not o.get("reason"):
                continue
            kind = io.get("kind") or ""
            host = (o.get("source") or {}).get("host") or ""
            ent = Entity(cluster="must-gather-aws", namespace=io.get("namespace") or "", kind=kind,
                         name=io.get("name") or "", uid=io.get("uid") or "",
                         node=io.get("name", "") if kind == "Node" else host)
            out.append(Event(source="k8s", reason=o["reason"], type=o.get("type") or "Normal",
                             time=parse_time(when), entity=ent, message=o.get("message") or "",
                             count=int(o.get("count") or 1)))
    out.sort(key=lambda e: e.time)
    return out


def scrape_samples(root: Path) -> list[tuple[str, dict, float]]:
    """(name, labels, value) of every series in the recorded scrape pages."""
    from prometheus_client.parser import text_string_to_metric_families

    pages = [
        *sorted((root / "nri-kubernetes-testdata" / "1_35" / "ksm").rglob("*")),
        *sorted((root / "nri-kubernetes-testdata" / "1_35" / "controlplane").rglob("metrics")),
        *sorted((root / "nri-kubernetes-testdata" / "1_35" / "kubelet").rglob("*")),
        root / "node-exporter-fixtures" / "e2e-output.txt",
        root / "datadog-integrations-fixtures" / "dcgm" / "metrics.txt",
    ]
    out = []
    for p in pages:
        if not p.is_file():
            continue
        text = p.read_text(errors="replace")
        if "# TYPE" not in text and "# HELP" not in text:
            continue
        try:
            for fam in text_string_to_metric_families(text):
                for s in fam.samples:
                    out.append((s.name, dict(s.labels), float(s.value)))
        except ValueError:
            continue
    return out


def signal_mix(root: Path, scrapes: int = 4) -> list:
    """Events and samples interleaved by time over the events' span."""
    events = must_gather_events(root)
    series = scrape_samples(root)
    t0, t1 = events[0].time, events[-1].time
    step = max(15.0, (t1 - t0) / max(scrapes, 1))
    sigs: list = list(events)
    for i in range(scrapes):
        t = t0 + i * step
        sigs.extend(Sample(n, v, t, labels) for n, labels, v in series)
        for j, name in enumerate(DERIVED):
            for inst in range(8):
                sigs.append(Sample(name, 0.01 * (j + 1) * (1 + (i + inst) % 3), t, {"instance": f"n{inst}"}))
    sigs.sort(key=lambda s: s.time)
    return sigs


def run(engine, sigs, tick_every: float = 1.0) -> tuple[float, float, int, int]:
    """Process every signal, ticking on the watermark every ``tick_every`` seconds of event time
    -> (CPU seconds in process, in tick, alerts, ticks).  CPU time (not wall time) is measured per
    run of signals between two ticks, so a busy machine and timer calls distort it little."""
    state: dict = {}
    proc = tick = 0.0
    alerts = ticks = 0
    clock = time.process_time
    i, n = 0, len(sigs)
    process = engine.process
    while i < n:
        stop = sigs[i].time + tick_every
        j = i
        while j < n and sigs[j].time < stop:
            j += 1
        a = clock()
        for s in sigs[i:j]:
            alerts += len(process(s, state, s.time))
        b = clock()
        alerts += len(engine.tick(sigs[j - 1].time, state))
        tick += clock() - b
        proc += b - a
        ticks += 1
        i = j
    return proc, tick, alerts, ticks


def main(args) -> int:
    from core.yamlconfig import ConfigError
    from rules.engine import Engine
    from rules.load import DEFAULT_PACK, load_packs

    try:
        rs = load_packs(args.packs or [DEFAULT_PACK])
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    from core.datafolder import data_root

    root = data_root(args.data, "openshift-must-gather-events", "nri-kubernetes-testdata")
    print(f"loading the signal mix from {root} ...", file=sys.stderr)
    sigs = signal_mix(root)
    n_ev = sum(1 for s in sigs if type(s) is Event)
    n_sm = len(sigs) - n_ev
    matched_ev = sum(1 for s in sigs if type(s) is Event and ((s.source, s.reason) in rs.by_event or s.source in rs.by_source))
    matched_sm = sum(1 for s in sigs if type(s) is Sample and s.name in rs.by_metric)
    print(f"{len(rs)} rules in {len(rs.packs)} packs; {len(sigs)} signals: {n_ev} events ({matched_ev} reach a rule), "
          f"{n_sm} samples ({matched_sm} reach a rule)")
    best = None
    for _ in range(max(1, args.rounds)):
        got = run(Engine(rs), sigs)
        if best is None or got[0] + got[1] < best[0] + best[1]:
            best = got
    proc, tick, alerts, ticks = best

    def fastest(part):
        return min((run(Engine(rs), part) for _ in range(max(1, args.rounds))), key=lambda r: r[0])
    ev_only = [s for s in sigs if type(s) is Event]
    sm_only = [s for s in sigs if type(s) is Sample]
    hit = [s for s in sigs if (type(s) is Event and ((s.source, s.reason) in rs.by_event or s.source in rs.by_source))
           or (type(s) is Sample and s.name in rs.by_metric)]
    pe = fastest(ev_only)
    ps = fastest(sm_only)
    ph = fastest(hit)
    print(f"alerts emitted: {alerts} (ticks: {ticks})")
    print(f"events only:            {pe[0] / len(ev_only) * 1e6:6.2f} µs/signal")
    print(f"samples only:           {ps[0] / len(sm_only) * 1e6:6.2f} µs/signal")
    print(f"signals reaching rules: {ph[0] / len(hit) * 1e6:6.2f} µs/signal ({len(hit)} signals)")
    print(f"whole mix:              {proc / len(sigs) * 1e6:6.2f} µs/signal in process, "
          f"{(proc + tick) / len(sigs) * 1e6:.2f} µs/signal with ticks (target <= 5; CPU time, best of {args.rounds})")
    return 0
