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

Then, on the real broker (``--kafka-signals``, 0 to skip): one worker against two, each worker a process
of its own running the hot path (``streams.bench._kubesight``, the code ``bench pipeline`` measures) on
``--kafka-partitions`` partitions, two workers in one consumer group with their own transactional ids.
Input: half events, half samples (``streams.bench``'s realistic records), produced before the workers
start.  Printed: signals/s of each setup in steady state (two workers: over the window in which both
were reading, from their 0.1 s timelines), signals/s per core (records per CPU second) and the
scaling factor 2 workers / 1 worker.  On 2 cores the factor's ceiling is 2; the broker shares them.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import os
import subprocess
import sys
import tempfile
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
    p.add_argument("--kafka-signals", type=int, default=300_000,
                   help="records (half events, half samples) for 1 vs 2 workers on the broker; 0 = skip "
                        "(default %(default)s)")
    p.add_argument("--kafka-partitions", type=int, default=4)
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
    bar = tqdm(total=args.scrapes * len(chosen), desc="bench scale", unit="scrape", file=sys.stderr, disable=None,
               ascii=not sys.stderr.isatty(), dynamic_ncols=True)
    try:
        for name in chosen:
            stages = signal_stages(settings, RulePacks(settings))
            out[name] = simulate(stages, loads[name], args.series, args.scrapes, args.partitions,
                                 args.commit_every, bar=bar)
    finally:
        bar.close()
    if args.kafka_signals:
        out["workers"] = workers_1_vs_2(settings, args.kafka_signals, args.kafka_partitions)
    if args.json:
        print(json.dumps(out))
        return 0
    for name, r in out.items():
        if name == "workers":
            continue
        print(f"{name:10} {r['series']:>8,} series on {r['partitions']} partitions: "
              f"changelog {_size(r['changelog_bytes_per_scrape'])}/scrape "
              f"({_size(r['changelog_stored_bytes_per_scrape'])} stored, zstd), largest record "
              f"{_size(r['largest_record_bytes'])}, {r['state_keys']:,} state keys, "
              f"stages {r['us_per_sample_cpu']:.1f} µs/sample CPU")
        if r["state_bytes_per_series"] > 0:
            print(f"{'':10} resident memory grew {r['state_bytes_per_series']} B per series: about "
                  f"{2**30 / r['state_bytes_per_series'] / 1e6:.1f}M series of this kind per GiB")
    if "workers" in out:
        w = out["workers"]
        for k in ("1", "2"):
            r = w[k]
            print(f"{k} worker{'s' if k == '2' else ' '} on {w['partitions']} partitions ({w['signals']:,} signals, "
                  f"half events, half samples): {r['signals_per_s']:,.0f} signals/s, "
                  f"{r['signals_per_cpu_s']:,.0f} signals/s per core (records per CPU second), "
                  f"records per worker {r['records']}; all cores {r['machine_cpu_busy']:.0%} busy")
        print(f"scaling 2 workers / 1 worker: {w['scaling']:.2f}x   (load average {w['load_average']}; 'all cores "
              f"busy' counts everything on the machine from the input's commit to the workers' exit, 5 s idle included)")
    return 0


# ---------------------------------------------------------------- 1 vs 2 workers on the broker


def _steady(timelines: list[list]) -> tuple[float, float, list[int]]:
    """(records/s, records per CPU second) over the window in which every worker was reading; records per worker.

    >>> rate, per_cpu, per_worker = _steady([[(0, 10, 0.0), (1, 20, 0.5), (2, 30, 1.0)],
    ...                                      [(0.5, 5, 0.0), (1.5, 15, 0.5), (2.5, 20, 0.7)]])
    >>> round(rate, 2), round(per_cpu, 2), per_worker  # window 0.5..2 s: 15 + 12.5 records in 1.5 s, 1.35 CPU s
    (18.33, 20.37, [30, 20])
    """
    start = max(t[0][0] for t in timelines)
    end = min(t[-1][0] for t in timelines)
    if end - start < 0.5:  # one finished before the other started: first to last record instead
        start, end = min(t[0][0] for t in timelines), max(t[-1][0] for t in timelines)
    recs = cpu = 0.0
    for t in timelines:
        recs += _at(t, end, 1) - _at(t, start, 1)
        cpu += _at(t, end, 2) - _at(t, start, 2)
    return recs / max(end - start, 1e-9), recs / max(cpu, 1e-9), [t[-1][1] for t in timelines]


def _at(timeline: list, when: float, i: int) -> float:
    """Field ``i`` of a (time, records, CPU) timeline at ``when``, interpolated (clamped at its ends)."""
    if when <= timeline[0][0]:
        return timeline[0][i]
    for a, b in itertools.pairwise(timeline):
        if a[0] <= when <= b[0]:
            return a[i] + (b[i] - a[i]) * (when - a[0]) / max(b[0] - a[0], 1e-9)
    return timeline[-1][i]


def workers_1_vs_2(settings: Settings, n: int, partitions: int) -> dict:
    """Signals/s with one worker, then with two in one consumer group (each its own process), on the same input."""
    import uuid

    from core.broker import die_with_parent
    from core.topics import ensure_topics
    from streams.bench import _broker, _events, _produce, _samples
    from streams.cli_run import stop_process

    tag = uuid.uuid4().hex[:6]
    bootstrap, broker = _broker(settings, tag)
    records = {"events": _events(n // 2), "samples": _samples(n - n // 2)}
    out = {"signals": n, "partitions": partitions}
    load0 = os.getloadavg()[0]
    try:
        for workers in (1, 2):
            ks = settings.model_copy(update={"topic_prefix": f"bench-scale-{tag}-{workers}w-", "partitions": partitions,
                                             "app_id": f"bench-scale-{tag}-{workers}w", "kafka": bootstrap})
            ensure_topics(ks, bootstrap)
            print(f"bench scale: {workers} worker(s) on {n:,} signals ...", file=sys.stderr)
            with tempfile.TemporaryDirectory() as d:
                cfg = os.path.join(d, "settings.json")
                with open(cfg, "w") as fh:
                    fh.write(ks.model_dump_json())
                outs = [os.path.join(d, f"w{i}.json") for i in range(workers)]
                # each worker dies with the bench, and is stopped in ``finally``: Ctrl-C to this process alone, a kill,
                # or a group that did not settle left one running forever
                procs = [subprocess.Popen([sys.executable, "-m", "streams.bench_scale", "worker", cfg, bootstrap,
                                           f"w{i}", o], cwd=REPO, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
                         for i, o in enumerate(outs)]
                try:
                    # the group settles first (every worker holds partitions of both inputs, none missing), then the
                    # input appears at once (one transaction): no worker starts alone on all the partitions
                    deadline, stable = time.monotonic() + 120, 0
                    while stable < 3:
                        held = [_read_int(o + ".assigned") for o in outs]
                        stable = stable + 1 if all(held) and sum(held) == 2 * partitions else 0
                        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                            raise SystemExit(f"bench scale: the workers' group did not settle ({held})")
                        time.sleep(0.5)
                    _produce(bootstrap, None, ((ks.topic(kind), k, v) for kind, recs in records.items() for k, v in recs),
                             transactional_id=f"bench-scale-{tag}-{workers}w-producer")
                    busy0 = _cpu_busy()
                    for p in procs:
                        p.wait(timeout=max(300, n / 500))
                    busy = _busy_share(busy0, _cpu_busy())
                    results = []
                    for o in outs:
                        with open(o) as fh:
                            results.append(json.load(fh))
                finally:
                    for p in procs:
                        stop_process(p, 15)
            rate, per_cpu, per_worker = _steady([r["timeline"] for r in results if r["timeline"]])
            out[str(workers)] = {"signals_per_s": round(rate), "signals_per_cpu_s": round(per_cpu),
                                 "records": per_worker, "machine_cpu_busy": busy}
    finally:
        if broker is not None:
            broker.stop()
    out["scaling"] = round(out["2"]["signals_per_s"] / max(out["1"]["signals_per_s"], 1), 2)
    out["load_average"] = f"{load0:.1f} -> {os.getloadavg()[0]:.1f}"
    return out


def _cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    return sum(f) - f[3] - f[4], sum(f)


def _busy_share(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Share of all cores busy between two ``_cpu_busy`` readings (the workers, the broker and everything else)."""
    return round((b[0] - a[0]) / max(b[1] - a[1], 1), 2)


def _read_int(path: str) -> int:
    try:
        with open(path) as fh:
            return int(fh.read() or 0)
    except (OSError, ValueError):
        return 0


def _one_worker(settings_file: str, bootstrap: str, worker_id: str, out: str) -> None:
    from streams.bench import _kubesight

    with open(settings_file) as fh:
        settings = Settings.model_validate_json(fh.read())
    timeline: list = []
    held = [-1]

    def report(proc) -> None:  # how many partitions this worker holds, for the parent to see the group settle
        n = len(proc.consumer.assignment()) if proc.consumer is not None else 0
        if n != held[0]:
            held[0] = n
            with open(out + ".assigned.tmp", "w") as fh:
                fh.write(str(n))
            os.replace(out + ".assigned.tmp", out + ".assigned")

    try:
        asyncio.run(_kubesight(settings, bootstrap, None, worker_id=worker_id, timeline=timeline, watch=report,
                               idle=5.0))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the bench says "interrupted", once
        sys.exit(130)
    with open(out, "w") as fh:
        json.dump({"timeline": timeline}, fh)


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        _one_worker(*sys.argv[2:6])
