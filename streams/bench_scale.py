"""``kubesight bench scale``: the envelope of one worker -- state per series, changelog bytes, record sizes.

The worker's real stages (derived signals + the whole default rule pack) run in process over
``--partitions`` changelogged stores, exactly as the hot path drives them: records routed to the
partition of their Kafka key (re-keyed partials too), the partition's watermark ticking the stages
every 5 s of event time, and a commit -- every dirty key written to the changelog once -- every
``--commit-every`` records (the hot path commits every 0.5 s: 25k records is ~0.5 s at 50k/s).
No broker is involved: this measures state, not Kafka (``bench pipeline`` measures the worker on
Kafka).  Two workloads:

* ``containers``: pairs of cAdvisor series (working set, memory limit) of distinct containers, each
  pair one derived ``container_memory_limit_ratio`` series -- the worst case for derived state;
* ``nodes``: real kubelet/cAdvisor and node_exporter pages (vendored in tests/data) scraped from
  many nodes, every 30 s, counters growing -- a realistic mix.

Printed per workload: series, changelog bytes per scrape (steady state; also as the broker stores
them, zstd-compressed in record batches, the changelog topics' ``compression.type``), the largest changelog
record (Kafka refuses records over ``max.message.bytes``, 1 MiB by default), live state per series
(growth of the process's resident memory), and CPU µs per sample in the stages.
"""

from __future__ import annotations

import gzip
import json
import sys
import time
import zlib
from collections import deque

from core.settings import REPO, Settings

DATA = REPO / "tests" / "data"
PAGES = {"kubelet": DATA / "nri-kubernetes-testdata" / "1_35" / "kubelet" / "metrics" / "cadvisor.gz",
         "node-exporter": DATA / "node-exporter-fixtures" / "e2e-output.txt.gz"}


def register(sub, group) -> None:
    g = group("bench", "benchmarks that print figures")
    p = g.add_parser("scale", help="state per series, changelog bytes per scrape, largest record (in process)")
    p.add_argument("--series", type=int, default=100_000, help="series per workload (default %(default)s)")
    p.add_argument("--scrapes", type=int, default=4, help="scrapes of every series (default %(default)s)")
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--commit-every", type=int, default=25_000, help="records between commits")
    p.add_argument("--workload", choices=["containers", "nodes", "all"], default="all")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run)


def containers(n: int, scrape: int):
    """Scrape ``scrape`` of n series: n/2 containers x (working set, limit)."""
    from core.records import Sample

    t = 1_700_000_000.0 + 30 * scrape
    for i in range(n // 2):
        labels = {"namespace": f"ns-{i % 50}", "pod": f"pod-{i}", "container": "app", "instance": f"node-{i % 500}"}
        yield Sample("container_memory_working_set_bytes", 1e8 + i + scrape * 4096, t, labels)
        yield Sample("container_spec_memory_limit_bytes", 2e8, t, labels)


def _pages():
    from collectors.metrics.exposition import parse

    return {job: parse(gzip.decompress(p.read_bytes()).decode()).points for job, p in PAGES.items()}


def nodes(n: int, scrape: int, pages=None):
    """Scrape ``scrape`` of n series: whole real pages from as many nodes as it takes."""
    from core.records import Sample

    pages = pages or _pages()
    t = 1_700_000_000.0 + 30 * scrape
    done, node = 0, 0
    while done < n:
        for job, points in pages.items():
            for j, (name, labels, value, _) in enumerate(points):
                grows = name.endswith(("_total", "_count", "_sum", "_bucket"))
                lab = {**labels, "instance": f"node-{node}", "node": f"node-{node}", "job": job}
                if "pod" in lab:
                    lab["pod"] = f"{lab['pod']}-n{node}"
                yield Sample(name, float(value + scrape * (1 + j % 7) if grows else value), t, lab)
                done += 1
                if done == n:
                    return
        node += 1


def _rss() -> int:
    """Resident memory of this process in bytes (Linux)."""
    import os

    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def simulate(stages, series_of, n: int, scrapes: int, partitions: int, commit_every: int, tick_every: float = 5.0,
             bar=None) -> dict:
    """Drive ``stages`` over ``scrapes`` scrapes of ``series_of(n, scrape)`` as the hot path would."""
    from core.records import decode
    from streams.hotpath import WATERMARK, Pipeline
    from streams.state import Store

    pipe = Pipeline(stages)
    stores = [Store() for _ in range(partitions)]
    queue: deque = deque()
    import cramjam

    per_scrape, stored_per_scrape, largest, since_commit, cpu, samples = [], [], 0, 0, 0.0, 0
    written = stored = 0

    def emit(topic, key, value, partition=None):
        if topic == "samples":  # re-keyed partials and derived samples come back through their partition
            queue.append((key, value))

    def commit():
        nonlocal written, stored, largest
        batch = bytearray()
        for st in stores:
            for k, v in st.flush_items():
                written += len(k) + len(v or b"")
                largest = max(largest, len(k) + len(v or b""))
                batch += k + (v or b"")
                if len(batch) >= 256 * 1024:  # the broker compresses record batches (changelog topics: zstd)
                    stored += len(cramjam.zstd.compress(bytes(batch)))
                    batch.clear()
        if batch:
            stored += len(cramjam.zstd.compress(bytes(batch)))

    def feed(rec, key):
        nonlocal since_commit
        st = stores[zlib.crc32(key) % partitions]
        pipe.process(rec, st, emit)
        wm = st.get(WATERMARK, 0.0)
        if rec.time > wm:
            if wm and rec.time // tick_every > wm // tick_every:
                pipe.tick(rec.time, st, emit)
            st[WATERMARK] = rec.time
        since_commit += 1
        if since_commit >= commit_every:
            commit()
            since_commit = 0

    rss0 = _rss()
    for scrape in range(scrapes):
        before, stored_before = written, stored
        c0 = time.process_time()
        for rec in series_of(n, scrape):
            feed(rec, rec.key())
            samples += 1
            while queue:
                k, v = queue.popleft()
                feed(decode(v), k)
        cpu += time.process_time() - c0
        if bar is not None:
            bar.update(1)
        if scrape == scrapes - 1:  # the last scrape settles: its derived series are due once time moves on
            for st in stores:
                pipe.tick(st.get(WATERMARK, 0.0) + 30, st, emit)
        commit()
        per_scrape.append(written - before)
        stored_per_scrape.append(stored - stored_before)
    live = _rss() - rss0
    keys = sum(len(st) for st in stores)
    steady = per_scrape[1:-1] or per_scrape
    steady_stored = stored_per_scrape[1:-1] or stored_per_scrape
    return {"series": n, "partitions": partitions, "state_keys": keys,
            "changelog_bytes_per_scrape": round(sum(steady) / len(steady)),
            "changelog_stored_bytes_per_scrape": round(sum(steady_stored) / len(steady_stored)),
            "largest_record_bytes": largest, "state_bytes_per_series": round(live / n),
            "us_per_sample_cpu": round(cpu / samples * 1e6, 2)}


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def _run(args) -> int:
    from tqdm import tqdm

    from streams.stages import RulePacks, signal_stages

    settings = Settings.load(args.config)
    pages = _pages()
    loads = {"containers": containers, "nodes": lambda n, s: nodes(n, s, pages)}
    chosen = list(loads) if args.workload == "all" else [args.workload]
    out = {}
    bar = tqdm(total=args.scrapes * len(chosen), desc="bench scale", unit="scrape", file=sys.stderr,
               ascii=not sys.stderr.isatty(), dynamic_ncols=True)
    try:
        for name in chosen:
            stages = signal_stages(settings, RulePacks(settings))
            out[name] = simulate(stages, loads[name], args.series, args.scrapes, args.partitions,
                                 args.commit_every, bar=bar)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(out))
        return 0
    for name, r in out.items():
        print(f"{name:10} {r['series']:>8,} series on {r['partitions']} partitions: "
              f"changelog {_size(r['changelog_bytes_per_scrape'])}/scrape "
              f"({_size(r['changelog_stored_bytes_per_scrape'])} stored, zstd), largest record "
              f"{_size(r['largest_record_bytes'])}, {r['state_keys']:,} state keys, "
              f"stages {r['us_per_sample_cpu']:.1f} µs/sample CPU")
        if r["state_bytes_per_series"] > 0:
            print(f"{'':10} resident memory grew {r['state_bytes_per_series']} B per series: about "
                  f"{2**30 / r['state_bytes_per_series'] / 1e6:.1f}M series of this kind per GiB")
    return 0
