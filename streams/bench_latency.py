"""``kubesight bench latency``: event -> alerts topic and event -> webhook, on the wall clock, as a user would see it.

Separate processes: a producer (BackOff events at a fixed rate, each in its own namespace, so each
fires ``KubeContainerBackOff`` on its first occurrence and opens its own alert group), one
``kubesight worker`` (default pack, routing to one receiver with the group_wait given), a reader of
the alerts topic (read_committed) and a webhook receiver (``alerts.localhooks``).  An event's time
is the wall clock when it was produced; the alert's ``startsAt`` is that time, so the reader and the
receiver each measure arrival minus ``startsAt``.  Figures per rate: p50/p95/p99 and how many arrived.

    python -m streams.bench_latency produce BOOTSTRAP TOPIC RATE SECONDS TAG   (the producer process)
    python -m streams.bench_latency read BOOTSTRAP TOPIC OUT                    (the alerts-topic reader)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.settings import REPO, Settings


def register(sub, group) -> None:
    b = group("bench", "benchmarks that print figures").add_parser(
        "latency", help="p50/p95/p99 event -> alerts topic and event -> webhook, separate processes, per rate")
    b.add_argument("--rate", "--rates", dest="rate", type=_rates, action="extend",
                   help="events/s (repeat, or comma-separated: --rates 100,2000; default: 100 and 2000)")
    b.add_argument("--seconds", type=float, default=10.0, help="per rate (default: %(default)s)")
    b.add_argument("--group-wait", default="0s", help="the route's group_wait (default: %(default)s)")
    b.add_argument("--role", default="all", choices=["all", "one"],
                   help="the worker's layout: all = hot path, alerting, delivery and incidents in four processes; one = all "
                        "on one event loop (default: %(default)s)")
    b.add_argument("--json", action="store_true", help="print the figures as JSON")
    b.set_defaults(func=_bench)


def _rates(text: str) -> list[float]:
    """>>> _rates("100,2000"), _rates("500")
    ([100.0, 2000.0], [500.0])
    """
    return [float(x) for x in text.split(",") if x.strip()]


# ---------------------------------------------------------------- the child processes


async def produce(bootstrap: str, topic: str, rate: float, seconds: float, tag: str) -> int:
    """BackOff events at ``rate`` for ``seconds``, each stamped with the wall clock when it is made.  Every 5 ms the
    events due are appended to one record batch per partition (the producer's own partitioning: murmur2 of the
    key) and sent: the load generator costs ~1/3 of a per-record ``send`` (it shares the 2 cores it measures)."""
    from aiokafka import AIOKafkaProducer

    from core.kafkaclient import client_config, partition_of, send_in_batches
    from core.records import Entity, Event, encode

    p = AIOKafkaProducer(**client_config(bootstrap, "aiokafka"), acks="all", linger_ms=2, enable_idempotence=True)
    await p.start()
    n = 0
    try:
        parts = sorted(await p.partitions_for(topic))
        sent = []
        start = time.monotonic()
        while (el := time.monotonic() - start) < seconds:
            due = []
            while n < el * rate:
                ent = Entity(namespace=f"bench-{tag}-{n}", kind="Pod", name=f"pod-{n}", uid=f"uid-{tag}-{n}",
                             node="node-1")
                ev = Event(source="k8s", reason="BackOff", time=time.time(), type="Warning", entity=ent,
                           labels={"container": "app"}, message="Back-off restarting failed container",
                           id=f"bench-{tag}-{n}")
                key = ent.key()
                due.append((topic, key, encode(ev), partition_of(key, parts)))
                n += 1
            sent += await send_in_batches(p, due)
            if len(sent) > 1000:
                await asyncio.gather(*sent)
                sent = []
            await asyncio.sleep(0.005)
        await asyncio.gather(*sent)
    finally:
        await p.stop()
    return n


async def read(bootstrap: str, topic: str, out: str) -> None:
    import orjson
    from aiokafka import AIOKafkaConsumer

    from core.kafkaclient import client_config
    from core.records import parse_time

    c = AIOKafkaConsumer(topic, **client_config(bootstrap, "aiokafka"), isolation_level="read_committed",
                         auto_offset_reset="latest", enable_auto_commit=False, fetch_max_wait_ms=50)
    await c.start()
    print("reading", flush=True)
    with open(out, "a") as fh:
        try:
            while True:
                batches = await c.getmany(timeout_ms=200)
                now = time.time()
                for msgs in batches.values():
                    for m in msgs:
                        a = orjson.loads(m.value)
                        if a.get("status") == "firing":
                            t = parse_time(a["startsAt"])
                            fh.write(f"alerts {t:.3f} {now - t:.4f}\n")
                fh.flush()
        finally:
            await c.stop()


# ---------------------------------------------------------------- the bench


ROUTING = """
route:
  receiver: bench
  group_by: [alertname, namespace]
  group_wait: {group_wait}
  group_interval: 5m
  repeat_interval: 4h
receivers:
  - name: bench
    webhook_configs: [{{url: "{url}/hook", timeout: 5s}}]
"""


def _spawn(*args: str, out=subprocess.DEVNULL) -> subprocess.Popen:
    """A producer or reader process; it dies with the bench (a bench killed past its ``finally`` left them running)."""
    from core.broker import die_with_parent

    return subprocess.Popen([sys.executable, "-m", "streams.bench_latency", *args], cwd=REPO, stdout=out,
                            stdin=subprocess.DEVNULL, text=True, preexec_fn=die_with_parent)


def tree_cpu(pid: int, parts: dict | None = None) -> float:
    """CPU seconds (user + system) used so far by a process and its live children (from /proc; 0 where gone);
    ``parts`` gets them per process, named by its ``--role`` (the worker's children) or pid."""
    tick = os.sysconf("SC_CLK_TCK")
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    f = fh.read().rsplit(")", 1)[1].split()
                kids.setdefault(int(f[1]), []).append(int(d))
            except (OSError, IndexError):
                pass
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        try:
            with open(f"/proc/{p}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
            used = (int(f[11]) + int(f[12])) / tick
            total += used
            if parts is not None:
                with open(f"/proc/{p}/cmdline", "rb") as fh:
                    argv = fh.read().decode(errors="replace").split("\0")
                name = argv[argv.index("--role") + 1] if "--role" in argv[:-1] else str(p)
                name = {"all": "hot path", "one": "one process"}.get(name, name)
                parts[name] = parts.get(name, 0.0) + used
        except (OSError, IndexError):
            pass
    return total


def _window(samples: list[tuple[float, float]], t0: float, t1: float) -> list[float]:
    return [d for t, d in samples if t0 <= t <= t1]


def _bench(args) -> int:
    from alerts.localhooks import read_recorded, spawn_receiver
    from core.broker import bootstrap_for
    from core.topics import ensure_topics
    from streams.bench_alerts import percentiles
    from streams.cli_run import spawn_worker, stop_process

    rates = args.rate or [100.0, 2000.0]
    tag = str(int(time.time()))
    settings = Settings.load(args.config)
    settings = settings.model_copy(update={"topic_prefix": f"bench-latency-{tag}-", "app_id": f"bench-latency-{tag}"})
    bootstrap = bootstrap_for(settings, ephemeral=True)
    work = Path(tempfile.mkdtemp(prefix="kubesight-bench-latency-"))
    procs: list[subprocess.Popen] = []
    results = []
    try:
        hook_out, topic_out = str(work / "webhook.txt"), str(work / "alerts.txt")
        receiver, url = spawn_receiver(hook_out)
        procs.append(receiver)
        routing = work / "routing.yaml"
        routing.write_text(ROUTING.format(group_wait=args.group_wait, url=url))
        settings = settings.model_copy(update={"routing": str(routing), "kafka": bootstrap, "clock": "wall"})
        ensure_topics(settings, bootstrap)
        reader = _spawn("read", bootstrap, settings.topic("alerts"), topic_out, out=subprocess.PIPE)
        procs.append(reader)
        reader.stdout.readline()
        worker = spawn_worker(settings, bootstrap, work / "worker.log", worker_id=f"bench-{tag}", role=args.role)
        procs.append(worker)
        print(f"bench latency: worker (--role {args.role}), reader, receiver and producer in their own processes "
              f"(logs in {work})", file=sys.stderr)
        # warm up until an alert reaches the receiver (the worker starts, restores, loads the rules)
        deadline = time.monotonic() + 120
        while not read_recorded(hook_out)[1]:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit(f"bench latency: no notification within 120 s; see {work / 'worker.log'}")
            _spawn("produce", bootstrap, settings.topic("events"), "20", "1", f"warm{int(time.monotonic())}").wait()
        time.sleep(2.0)
        for i, rate in enumerate(rates):
            parts0: dict = {}
            t0, cpu0, load0 = time.time(), tree_cpu(worker.pid, parts0), os.getloadavg()[0]
            prod = _spawn("produce", bootstrap, settings.topic("events"), f"{rate:g}", f"{args.seconds:g}",
                          f"r{rate:g}-{i}", out=subprocess.PIPE)  # new namespaces each time: a rate repeated
                                                                  # opens new groups (not duplicates of firing ones)
            sent = int(prod.stdout.read().strip() or 0)
            prod.wait()
            t1 = time.time()
            wait_until = time.monotonic() + 30
            while True:
                delays, _ = read_recorded(hook_out)
                got = _window(delays.get("/hook", []), t0, t1)
                if len(got) >= sent or time.monotonic() > wait_until:
                    break
                time.sleep(1.0)
            topic_delays, _ = read_recorded(topic_out)
            parts: dict = {}
            cpu = tree_cpu(worker.pid, parts) - cpu0  # the worker and its incidents, alerting and delivery processes
            per = {k: round((v - parts0.get(k, 0.0)) / max(sent, 1) * 1e6, 1) for k, v in parts.items()}
            r = {"rate": rate, "seconds": args.seconds, "sent": sent, "group_wait": args.group_wait,
                 "alerts_topic": percentiles(_window(topic_delays.get("alerts", []), t0, t1)),
                 "webhook": percentiles(got), "worker_cpu_us_per_event": round(cpu / max(sent, 1) * 1e6, 1),
                 "worker_cpu_us_per_event_by_process": per,
                 "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)]}
            results.append(r)
            if not args.json:
                for what in ("alerts_topic", "webhook"):
                    p = r[what]
                    if p["n"]:
                        print(f"  {rate:>6g} events/s  event -> {what.replace('_', ' '):12}  p50 {p['p50']:.3f}s  "
                              f"p95 {p['p95']:.3f}s  p99 {p['p99']:.3f}s  ({p['n']}/{sent} arrived)")
                    else:
                        print(f"  {rate:>6g} events/s  event -> {what.replace('_', ' '):12}  nothing arrived")
                split = ", ".join(f"{k} {v:.0f}" for k, v in per.items())
                print(f"  {rate:>6g} events/s  worker CPU {r['worker_cpu_us_per_event']:.0f} us/event ({split}; from "
                      f"the rate's start until its last arrival or 30 s); load average {r['load_average'][0]:.1f} -> "
                      f"{r['load_average'][1]:.1f}")
            time.sleep(2.0)
    finally:
        for p in procs:
            stop_process(p, 15)
    if args.json:
        print(json.dumps({"group_wait": args.group_wait, "role": args.role, "results": results}))
    return 0


if __name__ == "__main__":
    from core.kafkaclient import quiet_startup_noise

    quiet_startup_noise()  # a child of the bench: the fresh topics' leader elections are not the user's errors
    if sys.argv[1] == "produce":
        try:
            print(asyncio.run(produce(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), sys.argv[6])))
        except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the bench says "interrupted", once
            sys.exit(130)
    elif sys.argv[1] == "read":
        try:
            asyncio.run(read(sys.argv[2], sys.argv[3], sys.argv[4]))
        except KeyboardInterrupt:
            pass
