"""``kubesight bench alerts`` through Kafka: delivery, end to end, and isolation, each to a receiver in its own process.

* delivery: N notifications waiting in ``notifications`` (one group each), one ``Deliverer``, one
  healthy receiver process: notifications/s from the deliverer's start to the last arrival;
* end to end: N alerts produced to ``alerts``, one ``AlertingService`` (lifecycle, routing, grouping
  with group_wait 0, delivery): alerts/s and notifications/s until the last one arrived;
* isolation: alerts at a steady rate to four receivers, one answering 500 and one down (nothing
  listens): the healthy ones' delay (arrival minus the alert's start) p50/p95/p99 against group_wait + 1 s.

Delays are measured by the receiver process on the wall clock; the worker runs in this process.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from alerts.bench import free_port
from alerts.config import load_text
from alerts.localhooks import read_recorded, spawn_receiver
from alerts.receivers import Receivers
from core.kafkaclient import client_config
from core.records import Alert, encode, format_time
from core.settings import Settings
from streams.alerting import AlertingService, Deliverer


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    v = sorted(values)

    def at(q: float) -> float:
        return v[min(len(v) - 1, int(q * len(v)))]

    return {"n": len(v), "p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": v[-1]}


def routing(urls: dict[str, str], group_wait: str = "0s", budget: str = "1h") -> str:
    receivers = "\n".join(f"  - name: {name}\n    webhook_configs: [{{url: '{url}', timeout: 5s}}]\n"
                          f"    retry: {{initial: 1s, max_backoff: 10s, budget: {budget}}}" for name, url in urls.items())
    return f"""
route:
  receiver: {next(iter(urls))}
  group_by: [alertname, namespace]
  group_wait: {group_wait}
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - matchers: ['owner=~".+"']
      owner_receiver: true
receivers:
{receivers}
"""


def _alert(i: int, t: float, owner: str = "", tag: str = "a") -> Alert:
    labels = {"alertname": "BenchAlert", "namespace": f"ns-{tag}-{i}", "pod": f"pod-{i}", "severity": "warning"}
    if owner:
        labels["owner"] = owner
    return Alert(labels, {"summary": f"bench alert {i}"}, startsAt=t)


def _note(i: int, t: float) -> dict:
    a = _alert(i, t).to_dict()
    a.pop("v", None), a.pop("kind", None)
    key = f'{{}}:{{alertname="BenchAlert", namespace="ns-a-{i}"}}'
    return {"v": 1, "kind": "notification", "id": hashlib.blake2b(key.encode(), digest_size=12).hexdigest(),
            "receiver": "bench", "groupKey": key, "groupLabels": {"alertname": "BenchAlert", "namespace": f"ns-a-{i}"},
            "status": "firing", "alerts": [a], "time": format_time(t)}


async def _produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    p = AIOKafkaProducer(**client_config(bootstrap, "aiokafka"), acks="all", linger_ms=10, enable_idempotence=True,
                         max_batch_size=256 * 1024)
    await p.start()
    try:
        futs = [await p.send(topic, v, key=k) for k, v in items]
        await asyncio.gather(*futs)
    finally:
        await p.stop()


async def _wait_notes(out: str, path: str, n: int, timeout: float) -> tuple[dict, dict]:
    deadline = time.monotonic() + timeout
    while True:
        delays, notes = read_recorded(out)
        if notes.get(path, 0) >= n or time.monotonic() > deadline:
            return delays, notes
        await asyncio.sleep(1.0)  # arrival times come from the receiver: polling slowly costs no accuracy


async def delivery(settings: Settings, bootstrap: str, n: int, workdir: Path) -> dict:
    out = str(workdir / "delivery.txt")
    proc, url = spawn_receiver(out)
    try:
        cfg = load_text(routing({"bench": f"{url}/bench"}))
        now = time.time()
        await _produce(bootstrap, settings.topic("notifications"),
                       [(x["groupKey"].encode(), orjson.dumps(x)) for x in (_note(i, now) for i in range(n))])
        d = Deliverer(settings, bootstrap, Receivers(cfg))
        t0, cpu0 = time.time(), time.process_time()
        await d.start()
        try:
            delays, notes = await _wait_notes(out, "/bench", n, 120)
            cpu = time.process_time() - cpu0
        finally:
            await d.stop()
    finally:
        proc.terminate()
        proc.wait(10)
    arrivals = sorted(t + dl for t, dl in delays.get("/bench", []))
    got = notes.get("/bench", 0)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    return {"notifications": n, "received": got, "seconds_from_start": arrivals[-1] - t0 if arrivals else None,
            "per_s_from_start": got / (arrivals[-1] - t0) if arrivals else 0.0,
            "per_s_steady": (got - 1) / span if span == span and span > 0 else 0.0,
            "cpu_us_per_notification": cpu / max(got, 1) * 1e6,
            "stats": dict(d.stats)}


async def end_to_end(settings: Settings, bootstrap: str, n: int, workdir: Path) -> dict:
    out = str(workdir / "e2e.txt")
    proc, url = spawn_receiver(out)
    try:
        cfg = load_text(routing({"bench": f"{url}/bench"}))
        now = time.time()
        await _produce(bootstrap, settings.topic("alerts"),
                       [(a.key(), encode(a)) for a in (_alert(i, now) for i in range(n))])
        live = settings.model_copy(update={"clock": "wall"})  # Alertmanager timings on the wall clock, as live
        svc = AlertingService(live, bootstrap, cfg, worker_id="bench-e2e")
        t0 = time.time()
        await svc.start()
        try:
            delays, notes = await _wait_notes(out, "/bench", n, 180)
        finally:
            await svc.stop()
    finally:
        proc.terminate()
        proc.wait(10)
    arrivals = sorted(t + dl for t, dl in delays.get("/bench", []))
    took = arrivals[-1] - t0 if arrivals else float("nan")
    return {"alerts": n, "received": notes.get("/bench", 0), "seconds": took, "alerts_per_s": n / took}


async def isolation(settings: Settings, bootstrap: str, rate: float, seconds: float, workdir: Path,
                    group_wait: float = 1.0) -> dict:
    """Alerts at ``rate``/s round-robin to healthy-1, healthy-2, failing (500) and down (no listener)."""
    out = str(workdir / "isolation.txt")
    proc, url = spawn_receiver(out, fail={"/failing": 500})
    try:
        urls = {"healthy-1": f"{url}/healthy-1", "healthy-2": f"{url}/healthy-2", "failing": f"{url}/failing",
                "down": f"http://127.0.0.1:{free_port()}/down"}
        cfg = load_text(routing(urls, group_wait=f"{group_wait:g}s"))
        live = settings.model_copy(update={"clock": "wall"})  # Alertmanager timings on the wall clock, as live
        svc = AlertingService(live, bootstrap, cfg, worker_id="bench-isolation")
        await svc.start()
        owners = list(urls)
        p = AIOKafkaProducer(**client_config(bootstrap, "aiokafka"), acks="all", linger_ms=2, enable_idempotence=True)
        await p.start()
        sent = {o: 0 for o in owners}
        try:
            await asyncio.wait_for(_until(svc.views_ready), 60)
            await asyncio.sleep(3.0)  # partitions assigned and restored
            start = time.monotonic()
            i = 0
            while (el := time.monotonic() - start) < seconds:
                while i < el * rate:
                    owner = owners[i % len(owners)]
                    a = _alert(i, time.time(), owner=owner, tag="iso")
                    await p.send(settings.topic("alerts"), encode(a), key=a.key())
                    sent[owner] += 1
                    i += 1
                await asyncio.sleep(0.01)
            await p.flush()
            delays, notes = await _wait_notes(out, "/healthy-2", sent["healthy-2"], 30 + group_wait)
            await _wait_notes(out, "/healthy-1", sent["healthy-1"], 10)
            delays, notes = read_recorded(out)
            lanes = svc.deliverer.receiver_stats()
        finally:
            await p.stop()
            await svc.stop()
    finally:
        proc.terminate()
        proc.wait(10)
    healthy = [d for path in ("/healthy-1", "/healthy-2") for _, d in delays.get(path, [])]
    return {"rate": rate, "seconds": seconds, "group_wait": group_wait, "sent": sent,
            "received": {k: v for k, v in notes.items()}, "healthy_delay": percentiles(healthy),
            "budget": group_wait + 1.0, "lanes": lanes}


async def _until(cond) -> None:
    while not cond():
        await asyncio.sleep(0.1)
