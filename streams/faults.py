"""``kubesight bench faults``: what is lost or doubled when things fail mid-stream, counted.

Each scenario replays the same recorded Kubernetes Events (the demo's must-gather, the first
``--events`` of them in time order) into fresh topics while a worker runs, injects its fault part
way through, waits until the worker has committed everything (consumer lag 0, in records), then
compares with a reference run of the same events without any fault:

- signals: the records on the events topic against the events sent (by id);
- alerts: the alerts topic (read_committed) against the reference run's, as a multiset of
  (labels, status, startsAt, endsAt) -- the worker is event-time, so the same input gives the same alerts.

Scenarios: ``kill9`` (the worker killed with SIGKILL three times, restarted under the same id each
time), ``broker`` (the local broker stopped and started again on its port and data), ``collector``
(a ``collect replay`` process killed mid-batch, then run again from the start: the replay keeps no
checkpoint, so what the first run had sent is sent twice -- counted as doubled signals, and the
alerts then show what duplicates do to the rules), ``broker3`` (the run on a local 3-broker cluster,
replication factor 3, min.insync.replicas 2, one broker killed with SIGKILL half way), ``receiver``
(the worker with a routing file and one webhook receiver, which goes down at 30 % of the stream for
``--receiver-down`` seconds and comes back on its port; notifications are counted against the
notifications topic by their ``dedupKey``: lost = written and never received, doubled = received twice).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from core.settings import REPO, Settings

SCENARIOS = ("kill9", "broker", "collector", "broker3", "receiver")


def register(sub, group) -> None:
    g = group("bench", "benchmarks that print figures")
    p = g.add_parser("faults", help="lost and doubled signals and alerts across worker kills, a broker restart, "
                                    "a collector killed mid-batch, one broker of three lost, a receiver down then back")
    p.add_argument("--events", type=int, default=1500, help="recorded events replayed per scenario (default %(default)s)")
    p.add_argument("--seconds", type=float, default=12.0, help="how long each replay is spread over (default %(default)s)")
    p.add_argument("--scenario", action="append", choices=SCENARIOS, help="repeatable; default: all")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for a worker to catch up")
    p.add_argument("--receiver-down", type=float, default=60.0,
                   help="seconds the receiver scenario's webhook is down (default %(default)s; 600 = issue 13's 10 min)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from core import broker as launcher

    name = f"faults-{uuid.uuid4().hex[:6]}"
    b = launcher.start(name, quiet=True)  # a kept broker: the broker scenario restarts it on its data and port
    try:
        results = run_faults(b.bootstrap, name, args.scenario or list(SCENARIOS), n_events=args.events,
                             seconds=args.seconds, timeout=args.timeout, log_dir=REPO / ".cache" / "faults" / name,
                             receiver_down=args.receiver_down)
    finally:
        launcher.purge(name)
    print(f"{'scenario':12} {'signals sent':>12} {'lost':>5} {'doubled':>8} {'alerts':>7} {'lost':>5} {'doubled':>8}")
    for r in results:
        print(f"{r['scenario']:12} {r['sent']:>12} {r['signals_lost']:>5} {r['signals_doubled']:>8} "
              f"{r['alerts']:>7} {r['alerts_lost']:>5} {r['alerts_doubled']:>8}  {r['note']}")
        if "notes" in r:
            print(f"{'':12} notifications {r['notes']} written, {r['notes_received']} received, lost "
                  f"{r['notes_lost']}, doubled {r['notes_doubled']} (receiver down {r['down_seconds']:g} s)")
    return 0 if all(r["ok"] for r in results) else 1


def run_faults(bootstrap: str, broker_name: str, scenarios, *, n_events: int, seconds: float, timeout: float,
               log_dir: Path, receiver_down: float = 10.0) -> list[dict]:
    from collectors.replay import DEFAULT_EVENTS, read_events

    # the recorded events as one EventList, read back: exactly the records `collect replay` produces from it
    folder = log_dir / "input"
    _write_event_list(read_events(DEFAULT_EVENTS)[0][:n_events], folder)
    events = read_events(folder)[0]
    reference = _scenario(bootstrap, broker_name, None, events, seconds=0, timeout=timeout, log_dir=log_dir)
    out = []
    for sc in scenarios:
        r = _scenario(bootstrap, broker_name, sc, events, seconds=seconds, timeout=timeout, log_dir=log_dir,
                      receiver_down=receiver_down)
        want, got = reference["alerts"], r["alerts"]
        lost, doubled = want - got, got - want
        r.update(scenario=sc, alerts=sum(got.values()), alerts_lost=sum(lost.values()),
                 alerts_doubled=sum(doubled.values()))
        if sc == "collector":  # no checkpoint in the replay: re-sent events are expected, and counted
            r["ok"] = r["signals_lost"] == 0
            r["note"] = ("re-sent after the kill (replay keeps no checkpoint); doubled events count twice in rules"
                         if r["signals_doubled"] else "")
        else:
            r["ok"] = not (r["signals_lost"] or r["signals_doubled"] or r["alerts_lost"] or r["alerts_doubled"]
                           or r.get("notes_lost") or r.get("notes_doubled"))
            r["note"] = r.get("note", "")
        out.append(r)
    return out


def _settings(bootstrap: str, tag: str, **kw) -> Settings:
    from core.topics import ensure_topics

    s = Settings(kafka=bootstrap, topic_prefix=f"faults-{tag}-", app_id=f"faults-{tag}", partitions=4, **kw)
    ensure_topics(s, bootstrap)
    return s


def _scenario(bootstrap, broker_name, sc, events, *, seconds, timeout, log_dir, receiver_down=10.0) -> dict:
    if sc != "broker3":
        return _run_scenario(bootstrap, broker_name, sc, events, seconds=seconds, timeout=timeout, log_dir=log_dir,
                             receiver_down=receiver_down)
    from core import broker as launcher

    nodes = launcher.start_cluster(f"{broker_name}-3b", nodes=3, heap_mb=256)
    try:
        servers = ",".join(b.bootstrap for b in nodes)
        _wait_brokers(servers, 3)
        return _run_scenario(servers, broker_name, sc, events, seconds=seconds, timeout=timeout, log_dir=log_dir,
                             cluster=nodes)
    finally:
        launcher.stop_cluster(nodes)


def _run_scenario(bootstrap, broker_name, sc, events, *, seconds, timeout, log_dir, receiver_down=10.0,
                  cluster=None) -> dict:
    from streams.cli_run import spawn_worker, stop_process, wait_delivered

    tag = f"{sc or 'ref'}-{uuid.uuid4().hex[:4]}"
    log_dir.mkdir(parents=True, exist_ok=True)
    extra, hook = {}, None
    if cluster:
        extra = {"replication_factor": 3, "min_insync_replicas": 2}
    if sc == "receiver":
        hook = Webhook()
        routing = log_dir / f"{tag}-routing.yaml"
        routing.write_text(RECEIVER_ROUTING.format(url=hook.url))
        extra = {"routing": str(routing)}
        timeout += receiver_down
    s = _settings(bootstrap, tag, **extra)
    restarts = [0]
    proc = [spawn_worker(s, bootstrap, log_dir / f"{tag}.log", worker_id="w")]

    def respawn():
        restarts[0] += 1
        proc[0] = spawn_worker(s, bootstrap, log_dir / f"{tag}.log", worker_id="w")

    faults = {"kill9": [(f, lambda: (proc[0].kill(), proc[0].wait(), respawn())) for f in (0.25, 0.5, 0.75)],
              "broker": [(0.5, lambda: _restart_broker(broker_name))],
              # mid-stream: once the worker runs (has committed), not while it is still declaring its topics
              "broker3": [(0.5, lambda: (_wait_committed(s, timeout), _lose_node(cluster[-1])))],
              "receiver": [(0.3, lambda: hook.down_for(receiver_down))]}.get(sc, [])
    try:
        if sc == "collector":
            span = max(1.0, events[-1].time - events[0].time)
            _collector_killed_mid_batch(s, len(events), log_dir / "input", speed=span / max(seconds, 1.0))
        else:
            _produce_with_faults(s, events, seconds, faults)
        deadline = time.monotonic() + timeout
        while not _caught_up(s):
            if proc[0].poll() is not None:  # a worker that died of the fault: restart it, and say so
                respawn()
            if time.monotonic() > deadline:
                raise SystemExit(f"bench faults: {sc}: the worker did not catch up within {timeout:.0f}s "
                                 f"(log {log_dir / f'{tag}.log'})")
            time.sleep(0.3)
        if hook is not None:  # and every notification delivered (the receiver is back; its retries went through)
            settle = 1.0 + 5.0 + 1.0  # group_wait + group_interval of RECEIVER_ROUTING, + 1 s
            if not wait_delivered(s.kafka, s, settle, deadline, proc[0]):
                raise SystemExit(f"bench faults: receiver: delivery not done within {timeout:.0f}s")
    finally:
        stop_process(proc[0])
        if hook is not None:
            hook.stop()
    out = {}
    if hook is not None:
        want = Counter(_read(s, "notifications", lambda d: d["id"]))
        got = Counter(b["dedupKey"] for b in hook.bodies)
        out = {"notes": sum(want.values()), "notes_received": sum(got.values()),
               "notes_lost": sum((want - got).values()), "notes_doubled": sum((got - want).values()),
               "down_seconds": receiver_down, "down_refused": hook.refused_while_down()}
    sent_ids = Counter(e.id for e in events)
    topic_ids = Counter(_read(s, "events", lambda d: d["id"]))
    alerts = Counter(_read(s, "alerts", lambda d: (tuple(sorted(d["labels"].items())), d["status"], d["startsAt"],
                                                   d.get("endsAt"))))
    return {"sent": len(events), "signals_lost": sum((sent_ids - topic_ids).values()),
            "signals_doubled": sum((topic_ids - sent_ids).values()), "alerts": alerts,
            "note": f"{restarts[0]} worker restarts" if restarts[0] else "", **out}


RECEIVER_ROUTING = """
route:
  receiver: oncall
  group_by: [alertname, namespace]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 4h
receivers:
  - name: oncall
    webhook_configs: [{{url: "{url}", timeout: 2s}}]
    retry: {{initial: 200ms, max_backoff: 2s, budget: 2h}}
"""


class Webhook:
    """A webhook receiver on a fixed loopback port that can go down (port closed) and come back on it."""

    def __init__(self):
        from core.broker import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.bodies: list[dict] = []
        self.server = None
        self.down_at: float | None = None
        self.up_at: float | None = None
        self._timer = None
        self._serve()

    def _serve(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.bodies.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def down_for(self, seconds: float) -> None:
        """Close the port now and open it again after ``seconds`` (on a timer: the stream goes on meanwhile)."""
        import threading

        self._close()
        self.down_at = time.monotonic()
        self._timer = threading.Timer(seconds, self._back)
        self._timer.daemon = True
        self._timer.start()

    def _back(self) -> None:
        self.up_at = time.monotonic()
        self._serve()

    def refused_while_down(self) -> bool:
        return self.down_at is not None and self.up_at is not None

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._close()


def _lose_node(node) -> None:
    """One broker of the cluster killed with SIGKILL (no controlled shutdown): its partitions' leaders move."""
    try:
        os.kill(node.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while node.alive() and time.monotonic() < deadline:
        time.sleep(0.1)


def _wait_committed(s: Settings, timeout: float) -> None:
    """Until the worker has committed offsets on the signal topics (it is past its start-up)."""
    from streams.cli_run import group_lag

    deadline = time.monotonic() + timeout
    while group_lag(s.kafka, f"{s.app_id}-signals", [s.topic("events"), s.topic("samples")]) is None:
        if time.monotonic() > deadline:
            raise SystemExit("bench faults: the worker committed nothing before the fault was due")
        time.sleep(0.2)


def _wait_brokers(bootstrap: str, n: int, timeout: float = 60.0) -> None:
    from kafka.admin import KafkaAdminClient

    from core.kafkaclient import client_config

    admin = KafkaAdminClient(**client_config(bootstrap, "kafka-python"))
    try:
        deadline = time.monotonic() + timeout
        while len(admin.describe_cluster()["brokers"]) < n:  # every node registered and unfenced
            if time.monotonic() > deadline:
                raise SystemExit(f"bench faults: broker3: only {admin.describe_cluster()['brokers']} of {n} brokers up")
            time.sleep(0.3)
    finally:
        admin.close()


def _produce_with_faults(s: Settings, events, seconds: float, faults) -> None:
    from collectors.sink import KafkaSink

    sink = KafkaSink(s.kafka, s.topic, client_id="kubesight-faults")
    pending = sorted(faults, key=lambda f: f[0])
    chunk = max(1, len(events) // 40)
    t0 = time.monotonic()
    for i in range(0, len(events), chunk):
        for e in events[i:i + chunk]:
            sink.send(e)
        sink.flush()
        done = (i + chunk) / len(events)
        while pending and done >= pending[0][0]:
            pending.pop(0)[1]()
        if seconds:
            time.sleep(max(0.0, t0 + seconds * done - time.monotonic()))
    sink.close()


def _restart_broker(name: str) -> None:
    from core import broker as launcher

    launcher.stop(name)
    launcher.start(name, quiet=True)  # same data, same port: clients reconnect by themselves


def _write_event_list(events, folder: Path) -> None:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    items = [_as_k8s_event(e) for e in events]
    (folder / "events.yaml").write_text(yaml.safe_dump({"kind": "EventList", "items": items}))


def _collector_killed_mid_batch(s: Settings, n: int, folder: Path, speed: float) -> None:
    """Start `collect replay` on the EventList, SIGKILL it once about half is on the topic, then run it
    again to the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
    env.update(KUBESIGHT_KAFKA=s.kafka, KUBESIGHT_TOPIC_PREFIX=s.topic_prefix)
    cmd = [sys.executable, "-m", "kubesight", "collect", "replay", str(folder), "--speed", f"{speed:g}"]
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    half = n // 2
    deadline = time.monotonic() + 60
    while len(_read(s, "events", lambda d: 1)) < half and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if p.poll() is not None:
        raise SystemExit("bench faults: collector: the replay ended before it could be killed mid-batch")
    p.send_signal(signal.SIGKILL)
    p.wait()
    cmd[cmd.index("--speed") + 1] = "0"  # the rerun: as fast as possible
    subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def _as_k8s_event(e) -> dict:
    """An Event record back as the core/v1 Event the replay reads (same id, reason, time, object, count)."""
    from core.records import format_time

    en = e.entity
    return {"metadata": {"uid": e.id, "namespace": en.namespace}, "reason": e.reason, "type": e.type,
            "message": e.message, "count": e.count, "lastTimestamp": format_time(e.time),
            "involvedObject": {"kind": en.kind, "name": en.name, "namespace": en.namespace, "uid": en.uid},
            "source": {"host": en.node}}


def _caught_up(s: Settings) -> bool:
    from streams.cli_run import group_lag

    return group_lag(s.kafka, f"{s.app_id}-signals", [s.topic("events"), s.topic("samples")]) == 0


def _read(s: Settings, logical: str, key) -> list:
    import orjson
    from kafka import KafkaConsumer, TopicPartition

    from core.kafkaclient import client_config

    c = KafkaConsumer(**client_config(s.kafka, "kafka-python"), enable_auto_commit=False, isolation_level="read_committed")
    try:
        tps = [TopicPartition(s.topic(logical), p) for p in (c.partitions_for_topic(s.topic(logical)) or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        out = []
        deadline = time.monotonic() + 30
        while any(c.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=300).values():
                out += [key(orjson.loads(m.value)) for m in recs]
        return out
    finally:
        c.close()

