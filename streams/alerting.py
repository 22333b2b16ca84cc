"""The alert pipeline on Kafka: lifecycle + routing, grouping, delivery; silences and inhibition seen by every worker.

    alerts (by fingerprint) ─┐                                   ┌─> alert-groups (by group key)
                             ├─ "alerting" transactional processor ┤
    alert-groups (by group) ─┘  state: a|<fp> lifecycle, g|<key> groups  └─> notifications (by group key)
    notifications ──> Deliverer (HTTP to receivers; commit after each delivery) ──> deadletter on failure
    silences (compacted) ──> SilenceBook (every worker, all partitions)      ┐ consulted when a
    alert-groups (all partitions) ──> AlertWatcher -> Inhibitor (sources)   ┘ group flushes

* Partition *p* of ``alerts`` and of ``alert-groups`` go to one consumer with one ``Store``
  (``streams.hotpath``), so the lifecycle state (by fingerprint) and the group state (by group key)
  live in one changelog (``alerting-changelog``) and survive restarts and rebalances.  Outputs,
  changelog and offsets commit in one transaction: a crash loses or doubles no group change.
* Group timers run on the wall clock when the partition is idle (notification timing is about
  people, not replay time); while records flow, the watermark drives them.
* A group flushes only after the silence book and the alert watcher have caught up with their
  topics, so a restarted worker never notifies what a silence or an inhibition mutes.
* Delivery: the Deliverer reads ``notifications`` (read_committed) per partition, coalesces
  pending notifications of a group when the newer still fires all the older fired
  (``alerts.coalesce``: a receiver that was down gets the current state once, yet never a
  resolution of an alert it was not told about), sends, and commits the offset right after each delivery.  The one window left: a crash between a
  receiver's 2xx and that commit re-sends that one notification (same ``dedupKey`` and
  ``Idempotency-Key``, so receivers can drop it).  A receiver that is down blocks only its
  partition (paused, the backlog stays in Kafka, memory stays bounded by one fetch per partition)
  until the retry budget is spent; then the notification goes to ``deadletter`` with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import mode
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from alerts.coalesce import coalesce
from alerts.config import RoutingConfig
from alerts.config import load as load_routing
from alerts.engine import Engine, from_grouped, to_grouped
from alerts.inhibit import Inhibitor, rules_from
from alerts.receivers import Receivers
from alerts.silences import Silence, Silences
from core.records import Alert, RecordError, deadletter, decode, encode
from core.settings import Settings
from streams.follow import follow_topic, seek_committed
from streams.hotpath import WATERMARK, TransactionalProcessor

log = logging.getLogger("kubesight.alerting")


class AlertingStage:
    """The hot-path stage: alerts -> lifecycle + routing -> alert-groups; alert-groups -> groups -> notifications."""

    def __init__(self, engine: Engine, ready: Callable[[], bool] = lambda: True):
        self.engine = engine
        self.ready = ready

    def process(self, rec, state, emit) -> None:
        if not isinstance(rec, Alert):
            return
        now = max(state.get(WATERMARK, 0.0), rec.startsAt, rec.endsAt or 0.0)
        grouped = from_grouped(rec)
        if grouped is None:
            for g, a in self.engine.route(rec, state, now):
                emit("alert-groups", g.key.encode(), encode(to_grouped(g, a)))
        else:
            self.engine.group(*grouped, state, now)

    def tick(self, now: float, state, emit) -> None:
        for g, a in self.engine.expire(state, now):
            emit("alert-groups", g.key.encode(), encode(to_grouped(g, a)))
        if not self.ready():
            return  # silences/inhibitions not caught up: the due groups wait for the next tick
        for note in self.engine.flush_due(state, now):
            emit("notifications", note["groupKey"].encode(), orjson.dumps(note))



class SilenceBook(mode.Service):
    """Every silence, from the compacted ``silences`` topic; ``put``/``expire`` write it (and wait for the ack)."""

    def __init__(self, settings: Settings, bootstrap: str, silences: Silences | None = None, **kw):
        super().__init__(**kw)
        self.settings, self.bootstrap = settings, bootstrap
        self.silences = silences if silences is not None else Silences()
        self.topic = settings.topic("silences")
        self.caught_up = asyncio.Event()
        self.producer: AIOKafkaProducer | None = None

    async def on_start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True)
        await self.producer.start()

    async def on_stop(self) -> None:
        if self.producer:
            await self.producer.stop()

    @mode.Service.task
    async def _follow(self) -> None:
        await follow_topic(self, self.bootstrap, self.topic, 1, self.silences.apply, self.caught_up,
                    f"{self.settings.app_id}-silences")

    async def put(self, s: Silence) -> Silence:
        await self.producer.send_and_wait(self.topic, s.encode(), key=s.id.encode())
        self.silences.put(s)
        return s

    async def expire(self, id: str, now: float | None = None) -> Silence:
        s = self.silences.expire(id, time.time() if now is None else now)
        return await self.put(s)

    def list(self, now: float | None = None, state: str | None = None) -> list[Silence]:
        return self.silences.list(time.time() if now is None else now, state)


class AlertWatcher(mode.Service):
    """Feeds every alert transition (all partitions of ``alert-groups``) to the inhibitor."""

    def __init__(self, settings: Settings, bootstrap: str, inhibitor: Inhibitor, **kw):
        super().__init__(**kw)
        self.settings, self.bootstrap, self.inhibitor = settings, bootstrap, inhibitor
        self.caught_up = asyncio.Event()

    def _on(self, key, value) -> None:
        try:
            rec = decode(value)
        except RecordError:
            return  # the hot path dead-letters it; the view just skips it
        if isinstance(rec, Alert):
            self.inhibitor.observe(rec.labels, rec.status)

    @mode.Service.task
    async def _follow(self) -> None:
        # alert-groups, not alerts: its transitions have been through the lifecycle (duplicates dropped,
        # quiet sources resolved by timeout), so a source that went quiet stops inhibiting
        await follow_topic(self, self.bootstrap, self.settings.topic("alert-groups"), self.settings.partitions, self._on,
                    self.caught_up,
                    f"{self.settings.app_id}-inhibitor")


class Deliverer(mode.Service):
    """Sends committed notifications to receivers; one partition at a time each, commit after every delivery."""

    def __init__(self, settings: Settings, bootstrap: str, receivers: Receivers,
                 on_result: Callable | None = None, max_records: int = 50, **kw):
        super().__init__(**kw)
        self.settings, self.bootstrap, self.receivers = settings, bootstrap, receivers
        self.on_result = on_result
        self.max_records = max_records
        self.group_id = f"{settings.app_id}-deliver"
        self.stats = {"delivered": 0, "deadletter": 0, "coalesced": 0}
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.session = None
        self._inflight: dict[TopicPartition, asyncio.Task] = {}
        self._stopping = False
        self.drain_timeout = 10.0

    async def on_start(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession()
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            self.settings.topic("notifications"), bootstrap_servers=self.bootstrap, group_id=self.group_id,
            enable_auto_commit=False, isolation_level="read_committed", auto_offset_reset="earliest",
            session_timeout_ms=10000, heartbeat_interval_ms=1000, max_poll_interval_ms=3600_000 * 3)
        await self.consumer.start()

    async def on_stop(self) -> None:
        # drain: each partition finishes (and commits) the delivery in progress, then stops; only what is
        # still retrying after the grace period is cancelled (no 2xx yet, so nothing is doubled by that)
        self._stopping = True
        tasks = list(self._inflight.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.drain_timeout)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self.consumer:
            await self.consumer.stop()
        if self.producer:
            await self.producer.stop()
        if self.session:
            await self.session.close()

    @mode.Service.task
    async def _run(self) -> None:
        while not self.should_stop:
            for tp in [tp for tp, t in self._inflight.items() if t.done()]:
                self._inflight.pop(tp)
                if tp in self.consumer.assignment():
                    self.consumer.resume(tp)
            batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
            for tp, msgs in batches.items():
                if tp in self._inflight or self._stopping:
                    # a rebalance un-paused a partition whose old batch is still being delivered (or we are
                    # stopping): read these again later instead of skipping them
                    self.consumer.seek(tp, msgs[0].offset)
                    continue
                self.consumer.pause(tp)
                self._inflight[tp] = asyncio.create_task(self._guarded(tp, msgs))

    async def _guarded(self, tp: TopicPartition, msgs) -> None:
        try:
            await self._partition(tp, msgs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. the partition was revoked mid-batch: its next owner re-reads from the commit
            log.warning("delivery of %s[%d] interrupted (%s: %s); uncommitted notifications will be re-read",
                        tp.topic, tp.partition, type(exc).__name__, exc)
            await self._rewind(tp)

    async def _rewind(self, tp: TopicPartition) -> None:
        if tp in self.consumer.assignment():
            await seek_committed(self.consumer, tp)

    async def _partition(self, tp: TopicPartition, msgs) -> None:
        notes = []
        for m in msgs:
            try:
                n = orjson.loads(m.value)
                n["groupKey"], n["receiver"], n["alerts"]  # noqa: B018 - shape check
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                await self._dead(f"not a notification: {exc}", m.value, m.key, tp, m.offset)
                await self._commit(tp, m.offset + 1)
                continue
            notes.append(n)
            n["_offset"] = n["_first"] = m.offset
        merged = coalesce(notes)
        self.stats["coalesced"] += len(notes) - len(merged)
        end = msgs[-1].offset + 1
        for i, n in enumerate(merged):
            if self._stopping:
                return  # the rest stays uncommitted: the next owner reads it again
            offset = n.pop("_offset")
            n.pop("_first")
            results = await self.receivers.notify(self.session, n)
            for integ, out in results:
                if not out.ok:
                    await self._dead(f"{integ.name}: {out.reason}", orjson.dumps(n), n["groupKey"].encode(), tp,
                                     offset)
                if self.on_result:
                    self.on_result(integ, n, out)
            self.stats["delivered"] += 1
            # commit right after each delivery, up to the first record that a pending notification still needs
            rest = [x["_first"] for x in merged[i + 1:]]
            await self._commit(tp, min(rest) if rest else end)
        if not merged and not self._stopping:
            await self._commit(tp, end)

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        from aiokafka.structs import OffsetAndMetadata

        await self.consumer.commit({tp: OffsetAndMetadata(offset, "")})

    async def _dead(self, reason: str, payload: bytes, key, tp, offset) -> None:
        self.stats["deadletter"] += 1
        log.error("notification dead-lettered: %s", reason)
        await self.producer.send_and_wait(self.settings.topic("deadletter"), deadletter(
            reason, payload, origin="alerts/deliver", key=key, topic=tp.topic, partition=tp.partition, offset=offset),
            key=key)


class AlertingService(mode.Service):
    """Everything a worker runs for alerting; add it to the Faust app as a runtime dependency."""

    def __init__(self, settings: Settings, bootstrap: str, routing: RoutingConfig | str | None = None, *,
                 worker_id: str = "0", on_result: Callable | None = None, tick_interval: float = 1.0, **kw):
        super().__init__(**kw)
        cfg = routing if isinstance(routing, RoutingConfig) else load_routing(routing or settings.routing)
        self.book = SilenceBook(settings, bootstrap)
        self.watcher = AlertWatcher(settings, bootstrap, Inhibitor(rules_from(cfg)))
        self.engine = Engine(cfg, self.book.silences, self.watcher.inhibitor)
        stage = AlertingStage(self.engine, self.views_ready)
        wall = settings.model_copy(update={"clock": "wall"})
        self.processor = TransactionalProcessor(wall, bootstrap, "alerting", ["alerts", "alert-groups"], stage,
                                                worker_id=worker_id, tick_interval=tick_interval)
        self.deliverer = Deliverer(settings, bootstrap, Receivers(cfg), on_result=on_result)

    def views_ready(self) -> bool:
        return self.book.caught_up.is_set() and self.watcher.caught_up.is_set()

    async def on_start(self) -> None:
        for child in (self.book, self.watcher, self.processor, self.deliverer):
            await self.add_runtime_dependency(child)


async def bench_kafka(settings: Settings, bootstrap: str, n: int, groups: int) -> dict:
    """Alerts/s through Kafka: N alerts produced first, then one worker routes, groups and delivers them all."""
    from alerts.bench import alerts as make_alerts
    from alerts.bench import config, free_port
    from alerts.config import load_text
    from alerts.localhooks import LocalHooks

    port = free_port()
    cfg = load_text(config(port).replace("group_wait: 30s", "group_wait: 1s").replace("group_interval: 5m",
                                                                                        "group_interval: 1s"))
    now = time.time()
    inputs = [a for _, a in make_alerts(n, groups, start=now, resolved_every=0)]
    want = {a.fingerprint for a in inputs}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, enable_idempotence=True)
    await producer.start()
    try:
        futs = [await producer.send(settings.topic("alerts"), encode(a), key=a.key()) for a in inputs]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    hooks = LocalHooks(cfg)
    await hooks.start()
    seen: set[str] = set()
    svc = AlertingService(settings, bootstrap, cfg, worker_id="bench")
    t0 = time.perf_counter()
    await svc.start()
    idx = 0
    try:
        while len(seen) < len(want):
            for _, body in hooks.got[idx:]:
                seen.update(a["fingerprint"] for a in body["alerts"])
                idx += 1
            await asyncio.sleep(0.05)
        took = time.perf_counter() - t0
    finally:
        await svc.stop()
        await hooks.stop()
    return {"alerts": n, "groups": groups, "seconds": took, "alerts_per_s": n / took,
            "notifications": len(hooks.got), "stats": dict(svc.processor.stats)}
