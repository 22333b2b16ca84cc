"""``kubesight bench pipeline``: signals/s and CPU µs/signal of three ways to consume the same topic.

(a) a plain per-event Faust agent (``async for value in stream``), in its own worker process;
(b) raw aiokafka ``getmany`` + orjson parsing, the floor for a Python consumer of aiokafka's public API;
(c) the kubesight hot path (``streams.hotpath``) with the worker's real stages (derived signals, the whole
default rule pack), transactions on.  (c) consumes through the same public ``getmany`` as (b), so c/b
compares processing with processing: both pay aiokafka's ``ConsumerRecord`` per record.
Input is realistic (issue 20): N Event records -- the recorded must-gather events replayed again and
again with event time advancing (so none is late) -- and N Sample records -- scrapes of a real
node_exporter page from three nodes every 30 s, counters growing (so derived rates and ratios are
computed).  Each kind is measured on its own topics, which gives the cost per event and per sample.
CPU time is the consuming process's (``time.process_time``) and wall time ``perf_counter``, from the
moment the first batch is handed over (before it is parsed or processed) to the last record, so
start-up is excluded; (c)'s CPU runs on to the end of the transaction that commits its last records.
(b) of both kinds runs before any (c), so it sees the interpreter as any consumer would (the worker sets
the garbage collector for itself at start, ``streams.hotpath.tune_gc``), and every timed run starts after a
full collection: the bench's own set-up (the records it generated and produced) is not collected inside
a timed window (a full pass over this process's heap falling in (b)'s window or not moved (b) by ~0.4 µs
per record from run to run, and from one version of the code to the next).  Nor is the bench's own heap
(its imports: ~55k objects) in (b)'s collections: it is frozen for (b)'s run, as ``tune_gc`` freezes it for
(c)'s, so each side's collector passes over its own objects.  Without that, (b) paid a full pass over
the bench's heap once it read more than ~60k records (0 passes at 50,000, 1 at 100,000: +0.14 µs per
record), and c/b at the default n read ~0.08 higher than at 50,000 for no reason of (c)'s.

The headline, ``ratio c/b``: on the mix (n events + n samples), b's seconds over c's seconds, by CPU and by
wall (signals/s); 1.0 would be the worker as cheap as bare parsing.  By CPU is what holds on a shared
machine (the wall figure moves with whatever else runs, and with the transactions' round trips).

Rounds (``--rounds``, default 3): (b) and (c) run again on the same records, each (c) with a consumer group and a
changelog of its own (so it starts from the first record with no state, and gives the same outputs), and the
collector set back after it (so the next (b) sees it as before).  Each path's figure is its median round, each
ratio the median of the rounds' ratios, and every round's c/b is printed: one run of 100,000 + 100,000 read
anywhere from 0.63 to 0.74 on a 2-core machine shared with the broker, the same code, minutes apart.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

from core.settings import REPO, Settings


def register(sub, group) -> None:

    g = group("bench", "benchmarks that print figures")
    p = g.add_parser("pipeline", help="Faust agent vs raw getmany vs the kubesight worker, on the local broker")
    p.add_argument("-n", "--signals", type=int, default=100_000,
                   help="records of each kind (events, samples) to consume (default %(default)s)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--skip-faust", action="store_true", help="skip (a), the slow one")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of (b) and (c) on the same records; the figures are the rounds' medians (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)
    d = g.add_parser("derived", help="samples/s through the derived-signal stage (rates, partials) on the apiserver page")
    d.add_argument("--data", default=None, help="shared data folder (default: $KUBESIGHT_DATA, else ../shared/data)")
    d.set_defaults(func=_derived)


def _derived(args) -> int:
    """Two scrapes of the 3 MB apiserver page through the derived stage (pure Python, dict state)."""

    from collectors.metrics.bench import APISERVER
    from collectors.metrics.exposition import parse
    from core.datafolder import data_root
    from core.records import Sample
    from streams.derived import Derived

    data = data_root(args.data, APISERVER)
    text = (data / APISERVER).read_text()
    n = len(parse(text).points)
    pts = parse(text).points
    rounds = [[Sample(nm, v * (1 + i), 1000.0 + 30 * i, {**lab, "job": "apiserver"}) for nm, lab, v, _ in pts]
              for i in range(3)]
    stage, state, out = Derived(), {}, []

    def emit(topic, key, value):
        out.append(value)

    for s in rounds[0]:
        stage.process(s, state, emit)
    t0 = time.perf_counter()
    for r in rounds[1:]:
        for s in r:
            stage.process(s, state, emit)
    took = time.perf_counter() - t0
    print(f"derived stage (rates, partials)  {2 * n / took:>10,.0f} samples/s  "
          f"({len(out)} partials from 2 scrapes of {n} samples, pure Python, dict state)")
    return 0


def _events(n: int) -> list[tuple[bytes, bytes]]:
    """n encoded Event records: the recorded events, replayed again and again with event time advancing.

    Each repetition is shifted by the recording's whole span (plus a minute), so times keep moving
    forward as in a live cluster (nothing is "late"), with distinct ids and objects per repetition.
    """
    import msgspec

    from collectors.replay import DEFAULT_EVENTS, read_events
    from core.records import encode

    base, _ = read_events(DEFAULT_EVENTS)
    base.sort(key=lambda e: e.time)
    span = base[-1].time - base[0].time + 60
    out = []
    i = 0
    while len(out) < n:
        e = base[i % len(base)]
        rnd = i // len(base)
        if rnd:
            e = msgspec.structs.replace(e, entity=msgspec.structs.replace(e.entity, name=f"{e.entity.name}-r{rnd}"),
                                        id=f"{e.id}-r{rnd}", time=e.time + rnd * span)
        out.append((e.key(), encode(e)))
        i += 1
    return out


PAGE = REPO / "tests" / "data" / "node-exporter-fixtures" / "e2e-output.txt.gz"  # a real node_exporter page


def _samples(n: int, instances: int = 3, interval: float = 30.0) -> list[tuple[bytes, bytes]]:
    """n encoded Sample records: scrapes of a real node_exporter page from ``instances`` nodes every 30 s.

    Counters grow between scrapes (so the derived stage computes rates and ratios), gauges keep
    their recorded values; times advance scrape by scrape, as a live scraper writes them.
    """
    import gzip

    from collectors.metrics.exposition import parse
    from core.records import Sample, encode

    page = parse(gzip.decompress(PAGE.read_bytes()).decode())
    counters = {name for name, kind in page.types.items() if kind == "counter"}
    points = page.points
    out = []
    t0 = 1_700_000_000.0
    r = 0
    while len(out) < n:
        inst, tick = r % instances, r // instances
        for j, (name, labels, value, _) in enumerate(points):
            grows = name in counters or name.endswith(("_total", "_count", "_sum", "_bucket"))
            v = value + tick * (1 + j % 7) if grows else value
            s = Sample(name, float(v), t0 + tick * interval, {**labels, "job": "node-exporter",
                                                              "instance": f"node-{inst}:9100"})
            out.append((s.key(), encode(s)))
            if len(out) == n:
                break
        r += 1
    return out


def _produce(bootstrap: str, topic: str | None, recs, transactional_id: str | None = None) -> None:
    """Write (key, value) records to ``topic`` (or (topic, key, value) records with ``topic=None``); with a
    ``transactional_id`` in one transaction, so read_committed consumers see all of them at once."""
    from kafka import KafkaProducer

    from core.kafkaclient import client_config

    extra = {"transactional_id": transactional_id, "acks": "all"} if transactional_id else {"acks": 1}
    p = KafkaProducer(**client_config(bootstrap, "kafka-python"), linger_ms=20, batch_size=256 * 1024,
                      compression_type=None, **extra)
    if transactional_id:
        p.init_transactions()
        p.begin_transaction()
    for r in recs:
        t, k, v = (topic, *r) if topic is not None else r
        p.send(t, v, key=k)
    if transactional_id:
        p.commit_transaction()
    p.flush()
    p.close()


async def _raw(bootstrap: str, topic: str, n: int) -> tuple[float, float]:
    import orjson
    from aiokafka import AIOKafkaConsumer

    from core.kafkaclient import client_config

    c = AIOKafkaConsumer(topic, **client_config(bootstrap, "aiokafka"), group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
                         auto_offset_reset="earliest", enable_auto_commit=False,
                         max_partition_fetch_bytes=2 << 20, fetch_max_bytes=16 << 20)
    await c.start()
    got = 0
    t0 = c0 = None
    try:
        while got < n:
            batches = await c.getmany(timeout_ms=500, max_records=5000)
            if batches and t0 is None:
                t0, c0 = time.perf_counter(), time.process_time()
            for msgs in batches.values():
                for m in msgs:
                    orjson.loads(m.value)
                got += len(msgs)
    finally:
        await c.stop()
    return time.perf_counter() - t0, time.process_time() - c0


async def _kubesight(settings: Settings, bootstrap: str, n: int | None, worker_id: str = "bench",
                     idle: float = 3.0, timeline: list | None = None, watch=None,
                     changelog: str | None = None) -> tuple[float, float, dict]:
    """The hot path until it has read ``n`` records (``None``: until no record came for ``idle`` seconds, for workers
    sharing the partitions); ``timeline`` gets (wall clock, records in, CPU s) every 0.1 s while records come;
    ``watch(processor)`` is called on every turn (e.g. to report the assignment).

    Measured as ``_raw`` is: from the moment the first batch is handed over (before it is processed) to the
    last record read (wall) and, for CPU, on to the end of the transaction that commits it.  With ``n`` the
    processor itself says when it got there, so no polling loop runs beside it (one waking every 2 ms cost
    ~0.7 µs of CPU per record, charged to (c))."""
    from streams.hotpath import Pipeline, TransactionalProcessor
    from streams.owners import OwnerDirectory
    from streams.stages import RulePacks, RulesStage, signal_stages

    # as the worker wires it: alerts naming no owner ask the owners directory (empty here: no collector writes it)
    owners = OwnerDirectory(settings.cluster)
    proc = TransactionalProcessor(settings, bootstrap, "signals", ["events", "samples"],
                                  Pipeline(signal_stages(settings, RulePacks(settings), owners.owner_of)),
                                  worker_id=worker_id)
    if changelog is not None:  # a round of ``bench pipeline``: its state starts empty, not from an earlier round's
        proc.changelog = changelog
    mark: dict = {}
    read = asyncio.Event()
    inner = proc._process_batch

    def process_batch(tp, msgs) -> None:  # the processor's own step, timed at its edges
        if not mark:
            mark["t0"], mark["c0"] = time.perf_counter(), time.process_time()
        inner(tp, msgs)
        if n is not None and "t_last" not in mark and proc.stats["in"] >= n:
            mark["t_last"] = time.perf_counter()
            read.set()

    proc._process_batch = process_batch
    await proc.start()
    seen, moved, noted = 0, time.monotonic(), 0.0
    try:
        if n is not None:
            while not read.is_set():
                if watch is not None:
                    watch(proc)
                try:
                    await asyncio.wait_for(read.wait(), 0.5)
                except TimeoutError:
                    pass
            # the commit of the last records is inside the CPU figure, made at once: waiting out the commit interval
            # would add the idle loop's polling (~0.3-0.5 µs a record at 50,000), which a busy worker never pays
            await proc.commit_now()
        else:
            while True:
                got = proc.stats["in"]
                if got != seen:
                    seen, moved = got, time.monotonic()
                    mark["t_last"] = time.perf_counter()
                elif got and time.monotonic() - moved >= idle and not proc._outputs_pending():
                    break
                if watch is not None:
                    watch(proc)
                if timeline is not None and got and time.monotonic() - noted >= 0.1 and (
                        not timeline or timeline[-1][1] != got):
                    noted = time.monotonic()
                    timeline.append((time.time(), got, time.process_time()))
                await asyncio.sleep(0.002)
        wall, cpu = mark["t_last"] - mark["t0"], time.process_time() - mark["c0"]  # CPU includes the commits
    finally:
        await proc.stop()
    rules = next((st for st in proc.stage.stages if isinstance(st, RulesStage)), None)
    return wall, cpu, {**proc.stats, "rule_evaluations": rules.evaluations if rules else 0,
                       "rule_seconds": rules.seconds if rules else 0.0}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def _median_row(rows: list[tuple[float, float]]) -> tuple[float, float]:
    """The (wall, CPU) of the round whose CPU is the median (the lower middle one of an even count)."""
    return sorted(rows, key=lambda wc: wc[1])[(len(rows) - 1) // 2]


def _ratio(rows: dict, i: int, kind: str | None = None) -> float:
    """b's seconds over c's (``i``: 0 wall, 1 CPU), of one kind or both summed."""
    kinds = (kind,) if kind else ("events", "samples")
    return (sum(rows[f"b_raw_getmany/{k}"][i] for k in kinds) / sum(rows[f"c_kubesight/{k}"][i] for k in kinds))


def _broker(settings: Settings, tag: str):
    """(bootstrap, the broker this bench started or None): the configured Kafka, else a local one for the bench."""
    if settings.kafka:
        from core.broker import bootstrap_for

        return bootstrap_for(settings), None  # carries kafka_security
    from core import broker as launcher

    broker = launcher.start(f"bench-{tag}", attach=True)
    return broker.bootstrap, broker


FAUST_AGENT = r'''
import os, sys, time, json, signal
import faust
bootstrap, topic, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
app = faust.App("bench-faust-" + os.urandom(3).hex(), broker="kafka://" + bootstrap, store="memory://",
                web_enabled=False, consumer_auto_offset_reset="earliest")
src = app.topic(topic, value_serializer="raw", key_serializer="raw")
state = {"n": 0}
@app.agent(src)
async def count(stream):
    async for value in stream:
        if state["n"] == 0:
            state["t0"], state["c0"] = time.perf_counter(), time.process_time()
        json.loads(value)
        state["n"] += 1
        if state["n"] == n:
            with open(out, "w") as fh:
                json.dump({"wall": time.perf_counter() - state["t0"], "cpu": time.process_time() - state["c0"]}, fh)
            os.kill(os.getpid(), signal.SIGTERM)
if __name__ == "__main__":
    worker = faust.Worker(app, loglevel="error", quiet=True)
    worker.spinner = None  # its cursor codes go to the pipe whatever it is: faust does not ask for a terminal
    worker.execute_from_commandline()
'''


def _faust(bootstrap: str, topic: str, n: int, timeout: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        script, out = os.path.join(d, "agent.py"), os.path.join(d, "out.json")
        with open(script, "w") as fh:
            fh.write(FAUST_AGENT)
        from core.broker import die_with_parent

        # the agent dies with the bench: one killed past its ``finally`` left it consuming forever
        proc = subprocess.run([sys.executable, script, bootstrap, topic, str(n), out], cwd=d, timeout=timeout,
                              capture_output=True, text=True, preexec_fn=die_with_parent)
        if not os.path.exists(out):
            raise RuntimeError(f"faust agent did not finish (exit {proc.returncode}): {proc.stderr[-1500:]}")
        with open(out) as fh:
            r = json.load(fh)
    return r["wall"], r["cpu"]


def _run(args) -> int:
    from core.topics import ensure_topics

    settings = Settings.load(args.config)
    tag = uuid.uuid4().hex[:6]
    settings = settings.model_copy(update={"topic_prefix": f"bench-{tag}-", "app_id": f"bench-{tag}",
                                           "partitions": args.partitions})
    bootstrap, broker = _broker(settings, tag)
    try:
        n = args.signals
        kinds = {}
        rounds: list[tuple[dict, dict]] = []  # each round's rows {path: (wall s, CPU s)} and (c)'s stats per kind
        for kind, make in (("events", _events), ("samples", _samples)):
            ks = settings.model_copy(update={"topic_prefix": f"bench-{tag}-{kind}-", "app_id": f"bench-{tag}-{kind}"})
            ensure_topics(ks, bootstrap)
            print(f"bench: producing {n} {kind} to {ks.topic(kind)} ...", file=sys.stderr)
            _produce(bootstrap, ks.topic(kind), make(n))
            kinds[kind] = ks
        # a consumer group and a changelog of its own for each round's (c), made before any is timed (a topic just
        # made answers NotEnoughReplicas for a moment: its retries would be counted)
        changelogs = {}
        for r in range(max(1, args.rounds)):
            for kind, ks in kinds.items():
                fresh = ks.model_copy(update={"topic_prefix": f"{ks.topic_prefix}r{r}-"})
                ensure_topics(fresh, bootstrap, only=("state-changelog",))
                changelogs[kind, r] = fresh.topic("state-changelog")
        faust_row = None
        if not args.skip_faust:
            print("bench: (a) plain Faust agent, events ...", file=sys.stderr)
            faust_row = _faust(bootstrap, kinds["events"].topic("events"), n, timeout=max(120, n / 1000))
        for r in range(max(1, args.rounds)):
            rows, stats = {}, {}
            for kind, ks in kinds.items():
                print(f"bench: round {r + 1}: (b) raw getmany + orjson, {kind} ...", file=sys.stderr)
                gc.collect()  # the set-up's garbage is not (b)'s
                gc.freeze()  # nor is the bench's own heap: (b)'s collections pass over (b)'s objects, as (c)'s over its own
                try:
                    rows[f"b_raw_getmany/{kind}"] = asyncio.run(_raw(bootstrap, ks.topic(kind), n))
                finally:
                    gc.unfreeze()
            # (b) of both kinds first, as any Python consumer runs: before (c)'s worker has set the garbage collector
            # for itself (streams.hotpath.tune_gc); after (c) the collector is set back for the next round's (b)
            for kind, ks in kinds.items():
                print(f"bench: round {r + 1}: (c) kubesight worker hot path, {kind} ...", file=sys.stderr)
                # its own consumer group and changelog: each round starts from the first record, with no state
                rs = ks.model_copy(update={"app_id": f"{ks.app_id}-r{r}"})
                threshold = gc.get_threshold()
                gc.collect()
                try:
                    wall, cpu, st = asyncio.run(_kubesight(rs, bootstrap, n, changelog=changelogs[kind, r]))
                finally:
                    gc.unfreeze()
                    gc.set_threshold(*threshold)
                rows[f"c_kubesight/{kind}"] = (wall, cpu)
                stats[kind] = st
            rounds.append((rows, stats))
            if args.rounds > 1:
                print(f"bench: round {r + 1}: ratio c/b {_ratio(rows, 1):.3f} by CPU, {_ratio(rows, 0):.3f} by signals/s",
                      file=sys.stderr)
        # the figures: each path's median round (by CPU), each ratio the median of the rounds' ratios
        rows = {path: _median_row([rw[path] for rw, _ in rounds]) for path in rounds[0][0]}
        if faust_row is not None:
            rows = {"a_faust_agent/events": faust_row, **rows}
        stats = rounds[len(rounds) // 2][1]
        result = {k: {"signals_per_s": round(n / w), "us_per_signal_cpu": round(c / n * 1e6, 2),
                      "wall_s": round(w, 3)} for k, (w, c) in rows.items()}
        for kind in ("events", "samples"):
            result[f"ratio_c_over_b/{kind}"] = round(_median([_ratio(rw, 0, kind) for rw, _ in rounds]), 3)
            result[f"ratio_c_over_b_cpu/{kind}"] = round(_median([_ratio(rw, 1, kind) for rw, _ in rounds]), 3)
            result[f"outputs/{kind}"] = stats[kind]["out"]
            result[f"rules/{kind}"] = {"evaluations": stats[kind]["rule_evaluations"],
                                       "us_per_signal": round(stats[kind]["rule_seconds"] / n * 1e6, 2)}
        result["ratio_c_over_b"] = round(_median([_ratio(rw, 0) for rw, _ in rounds]), 3)
        result["ratio_c_over_b_cpu"] = round(_median([_ratio(rw, 1) for rw, _ in rounds]), 3)
        result["rounds_ratio_c_over_b_cpu"] = [round(_ratio(rw, 1), 3) for rw, _ in rounds]
        result["rounds_outputs"] = [[sts[k]["out"] for k in ("events", "samples")] for _, sts in rounds]
        result["signals"] = 2 * n
        result["commits"] = sum(st["commits"] for _, sts in rounds for st in sts.values())
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{'path':28} {'signals/s':>10} {'µs/signal (CPU)':>16}")
            for k, (w, cpu) in rows.items():
                print(f"{k:28} {n / w:10.0f} {cpu / n * 1e6:16.2f}")
            print(f"outputs: {stats['events']['out']} from events (alerts, dead letters), "
                  f"{stats['samples']['out']} from samples (derived signals, alerts)")
            print("of (c), rule evaluation (the signals that reach a rule, timers not counted): " + ", ".join(
                f"{kind} {result[f'rules/{kind}']['evaluations']} reached one, "
                f"{result[f'rules/{kind}']['us_per_signal']:.2f} µs per {kind[:-1]}" for kind in ("events", "samples")))
            print(f"c/b = how much of the raw floor's speed the worker keeps, on the mix of {n} events + {n} samples:\n"
                  f"  by CPU       = (b's CPU seconds) / (c's CPU seconds), both kinds summed   "
                  f"(events {result['ratio_c_over_b_cpu/events']:.2f}, samples {result['ratio_c_over_b_cpu/samples']:.2f})\n"
                  f"  by signals/s = (b's wall seconds) / (c's wall seconds), both kinds summed   "
                  f"(events {result['ratio_c_over_b/events']:.2f}, samples {result['ratio_c_over_b/samples']:.2f})\n"
                  f"  (each from its first batch handed over to its last record; c's CPU also counts the commit of "
                  f"its last records; both read through aiokafka's public getmany; "
                  f"CPU is the figure to compare on a loaded machine: load {os.getloadavg()[0]:.1f})")
            if len(rounds) > 1:
                print(f"  (figures: the median of {len(rounds)} rounds on the same records; c/b by CPU per round: "
                      f"{', '.join(f'{x:.2f}' for x in result['rounds_ratio_c_over_b_cpu'])})")
            print(f"ratio c/b: {result['ratio_c_over_b_cpu']:.2f} by CPU, {result['ratio_c_over_b']:.2f} by signals/s "
                  f"(target >= 0.7)")
        return 0
    finally:
        if broker is not None:
            broker.stop()
