"""The alert pipeline on Kafka: lifecycle + routing, grouping, delivery; silences and inhibition seen by every worker.

    alerts (by fingerprint) ─┐                                   ┌─> alert-groups (by group key)
                             ├─ "alerting" transactional processor ┤
    alert-groups (by group) ─┘  state: a|<fp> lifecycle, g|<key> groups  └─> notifications (by group key)
    notifications ──> Deliverer: one Lane per receiver (HTTP, own pool; commit every 0.2 s) ──> deadletter on failure
    silences (compacted) ──> SilenceBook (every worker, all partitions)      ┐ consulted when a
    alert-groups (all partitions) ──> AlertWatcher -> Inhibitor (sources)   ┘ group flushes

* Partition *p* of ``alerts`` and of ``alert-groups`` go to one consumer with one ``Store``
  (``streams.hotpath``), so the lifecycle state (by fingerprint) and the group state (by group key)
  live in one changelog (``alerting-changelog``) and survive restarts and rebalances.  Outputs,
  changelog and offsets commit in one transaction: a crash loses or doubles no group change.
* Latency (clock: wall): a transition whose group's partition of ``alert-groups`` this processor holds
  is grouped where it is routed, in the same transaction as its alert-groups record (marked applied,
  skipped when read back), so one transaction lies between the alerts topic and ``notifications``;
  a group on a partition held elsewhere is grouped by its reader (two transactions).  Due groups flush
  on the wall clock once the fetch that changed them has been routed, and on idle partitions; the next
  transaction starts ``ALERTING_COMMIT`` after the last one ended whenever notifications wait
  (notification timing is about people, not replay time).
* A group flushes only after the silence book and the alert watcher have caught up with their
  topics, so a restarted worker never notifies what a silence or an inhibition mutes.
* Delivery (``Deliverer``): one consumer reads ``notifications`` (read_committed) and hands each to
  its receiver's ``Lane``: up to ``IN_FLIGHT`` concurrent requests per receiver over its own
  connection pool, one at a time per group.  Later notifications of a group wait behind the one being
  sent and are coalesced (``alerts.coalesce``: the current state once, never a resolution of an alert
  the receiver was not told about); beyond ``MAX_QUEUED`` they are aggregated into one (a storm) and
  counted.  A receiver that is down or failing retries on its own lane until its budget is spent (then
  ``deadletter`` with the reason); no other receiver waits for it.  Offsets commit every 0.2 s with
  per-receiver progress in the commit metadata (``Progress``), so after a restart what a healthy
  receiver already took is skipped although a failing one held the offset back.  The window left: a
  crash between a receiver's 2xx and the next commit (<= 0.2 s) re-sends those notifications (same
  ``dedupKey`` and ``Idempotency-Key``, so receivers can drop them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path

import mode
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from prometheus_client import REGISTRY, Counter, Gauge

from alerts.coalesce import aggregate, coalesce
from alerts.config import RoutingConfig, load_text, redacted
from alerts.config import load as load_routing
from alerts.engine import (
    GROUP_ANNOTATION,
    ROUTED,
    Engine,
    from_grouped,
    grouped_from_record,
    grouped_record,
    is_applied,
    to_grouped,
)
from alerts.http1 import DeliverySession
from alerts.inhibit import Inhibitor, rules_from
from alerts.receivers import Receivers, resend_forever
from alerts.silences import Silence, Silences, reminders
from core.kafkaclient import client_config
from core.records import (
    PAYLOAD_LIMIT,
    Alert,
    RecordError,
    deadletter,
    deadletter_key,
    decode,
    encode,
    format_time,
    peek,
)
from core.settings import ROUTING_SNAPSHOT, Settings
from core.yamlconfig import ConfigError
from streams.follow import follow_topic
from streams.freeze import FreezeWatch
from streams.hotpath import WATERMARK, TransactionalProcessor, tune_gc
from streams.incidents import hand_off

log = logging.getLogger("kubesight.alerting")


RELOADS = Counter("kubesight_routing_reloads", "routing file reloads, by result (success: taken; refused: the "
                  "running version stays)", ["result"], registry=REGISTRY)
LAST_RELOAD_OK = Gauge("kubesight_routing_config_last_reload_successful",
                       "whether the last reload of the routing file was taken (as alertmanager_config_last_reload_"
                       "successful)", registry=REGISTRY)
LAST_RELOAD_AT = Gauge("kubesight_routing_config_last_reload_success_timestamp_seconds",
                       "when the routing file in force was loaded", registry=REGISTRY)
POLL_EVERY = 2.0  # seconds between looks at the routing file (a ConfigMap update swaps it)
REMIND_EVERY = 60.0  # seconds between looks for forgotten silences (alerts.silences.reminders)


class RoutingFile:
    """The routing file a process runs by, followed for changes (a ConfigMap update, an edit).

    ``poll()`` returns the new config when the file changed and validates (``follow(take)`` polls every
    ``POLL_EVERY`` seconds and hands each new version to ``take``); a version that does not
    (every error with file, line and YAML path, logged and kept in ``errors``) is refused and the running
    one stays, as Alertmanager does on ``/-/reload``.  A change that leaves the text as it was is no reload.

    In a worker's child (``snapshot``: the path in ``KUBESIGHT_ROUTING_SNAPSHOT``) each version taken is also kept there,
    so that a child its worker restarts (an OOM kill) while the file is refused still runs the version the worker
    ran: a process restarted is no "start" of the worker, whose config errors are fatal (a worker started by hand,
    given no snapshot, still stops at a file that does not validate).
    """

    def __init__(self, path: str, cfg: RoutingConfig | None = None, snapshot: str | None = None):
        self.path = path
        self.snapshot = snapshot if snapshot is not None else os.environ.get(ROUTING_SNAPSHOT)
        self._stamp = self._stat()
        self.errors: list[str] = []
        if cfg is None:
            try:
                cfg = self._keep(load_routing(path))
            except ConfigError as exc:
                cfg = self._kept(exc)
        self.cfg = cfg
        LAST_RELOAD_OK.set(0 if self.errors else 1)
        if not self.errors:
            LAST_RELOAD_AT.set(time.time())

    def _keep(self, cfg: RoutingConfig) -> RoutingConfig:
        """``cfg``, taken: its text kept as the snapshot (atomically: a restarted child never reads half a file;
        owner-only: receiver URLs and keys are secrets).  Read again after the loader, so it is kept only when the
        file still holds what validated; a failure to keep it is a warning, the version is in force all the same."""
        if not self.snapshot:
            return cfg
        try:
            text = Path(self.path).read_text(encoding="utf-8")
            if redacted(text) != cfg.original:
                return cfg  # changed since: that version is the next poll's
            snap = Path(self.snapshot)
            snap.parent.mkdir(parents=True, exist_ok=True)
            tmp = snap.with_name(f"{snap.name}.{os.getpid()}.tmp")  # the worker's children write it too
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            tmp.replace(snap)
        except OSError as exc:
            log.warning("routing file %s: cannot keep the version in force in %s (%s)", self.path, self.snapshot, exc)
        return cfg

    def _kept(self, refused: ConfigError) -> RoutingConfig:
        """At a child's start, the file refused: the version kept by the worker's processes, or ``refused`` raised
        (nothing kept: config errors are fatal at start).  Validated again (as if it were the file: its templates
        relative to it); the file is still followed, a version that validates is taken at the next poll."""
        snap = self.snapshot
        if not snap or not os.path.isfile(snap):
            raise refused
        try:
            cfg = load_text(Path(snap).read_text(encoding="utf-8"), self.path)
        except (OSError, UnicodeDecodeError, ConfigError):
            raise refused from None
        self.errors = str(refused).splitlines()
        RELOADS.labels("refused").inc()
        LAST_RELOAD_AT.set(os.path.getmtime(snap))  # when that version was last taken
        log.error("routing file refused at start, the running version stays (kept in %s): %s", snap,
                  "; ".join(self.errors))
        return cfg

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def poll(self) -> RoutingConfig | None:
        """The new config if the file changed since the last look and validates, else None."""
        stamp = self._stat()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        return self.reload()

    async def follow(self, take: Callable[[RoutingConfig], object]) -> None:
        """Poll for ever (a service's task); each new version that validates goes to ``take``."""
        while True:
            await asyncio.sleep(POLL_EVERY)
            cfg = self.poll()
            if cfg is not None:
                take(cfg)

    def reload(self) -> RoutingConfig | None:
        try:
            cfg = load_routing(self.path)
        except Exception as exc:  # noqa: BLE001 - a ConfigError, or a bug of a check: refused, and the file followed on
            if isinstance(exc, ConfigError):
                self.errors = str(exc).splitlines()
            else:
                log.exception("routing file %s: the loader failed", self.path)
                self.errors = [f"{self.path}: the loader failed ({type(exc).__name__}: {exc})"]
            RELOADS.labels("refused").inc()
            LAST_RELOAD_OK.set(0)
            log.error("routing file refused, running version stays: %s", "; ".join(self.errors))  # one collector entry
            return None
        self.errors = []
        LAST_RELOAD_OK.set(1)
        if cfg.digest == self.cfg.digest:
            return None
        for warning in cfg.warnings:
            log.warning("routing: %s", warning)
        self.cfg = self._keep(cfg)
        RELOADS.labels("success").inc()
        LAST_RELOAD_AT.set(time.time())
        log.warning("routing file %s reloaded: %d receivers", self.path, len(cfg.receivers))
        return cfg


class AlertingStage:
    """The hot-path stage: alerts -> lifecycle + routing -> alert-groups; alert-groups -> groups -> notifications."""

    def __init__(self, engine: Engine, ready: Callable[[], bool] = lambda: True, event_time: bool = False):
        self.engine = engine
        self.ready = ready
        self.event_time = event_time
        # clock: wall -- group key -> (its group's state, partition) when this processor holds that partition of
        # alert-groups (``AlertingProcessor._here``): the transition is grouped at once, in the same transaction as
        # its alert-groups record (marked applied), instead of a second transaction after reading it back
        self.here: Callable[[bytes], tuple | None] | None = None
        self.touched: set = set()  # partitions whose groups changed here since the processor last flushed them

    def process(self, rec, state, emit) -> None:
        if not isinstance(rec, Alert):
            return
        if self.event_time:
            self._process_event_time(rec, state, emit)
            return
        now = max(state.get(WATERMARK, 0.0), rec.startsAt, _ended(rec.status, rec.endsAt))
        grouped = from_grouped(rec)
        if grouped is None:
            pairs = self.engine.route(rec, state, now)
            if pairs:  # this worker's inhibitor knows at once (the watcher of alert-groups tells the others)
                a = pairs[0][1]
                self.engine.inhibitor.observe(rec.labels, a.status)
                d = self.engine.record_of(a, state)  # made once for all its groups (lifecycle's copy when firing)
                for g, _ in pairs:
                    self._to_group(g, a, d, emit)
        elif not is_applied(rec.annotations[GROUP_ANNOTATION]):
            self.engine.group(*grouped, state, now)

    def _to_group(self, g, a: Alert, d: dict, emit) -> None:
        """One routed transition onto alert-groups; grouped here at once when this processor holds the group's
        partition (clock: wall), else by whoever reads it there."""
        key = g.key.encode()
        here = self.here(key) if self.here is not None else None
        if here is None:
            emit("alert-groups", key, grouped_record(g, d))
            return
        store, partition = here
        emit("alert-groups", key, grouped_record(g, d, applied=True), partition)
        self.engine.group_dict(g, d, a.startsAt, store,
                               max(store.get(WATERMARK, 0.0), a.startsAt, _ended(a.status, a.endsAt)))
        self.touched.add(partition)

    def reroute(self, state, emit) -> int:
        """A partition's firing alerts routed again under the routing in force (``Engine.reroute``), unless they
        were routed by it already; their records go onto alert-groups, grouped by whoever reads them there."""
        if state.get(ROUTED) == self.engine.cfg.digest:
            return 0
        moves = self.engine.reroute(state)
        for g, d in moves:
            emit("alert-groups", g.key.encode(), grouped_record(g, d))
        return len(moves)

    def process_grouped(self, group, d: dict, starts: float, ends: float | None, state) -> None:
        """A transition read from alert-groups in its record form (``AlertingProcessor``'s fast path, clock: wall)."""
        self.engine.group_dict(group, d, starts, state, max(state.get(WATERMARK, 0.0), starts,
                                                            _ended(d["status"], ends)))

    # clock: event -- each of the two steps keeps its own clock (the largest transition time it has read on its
    # own input), never the partition's watermark, which mixes both inputs in the order the fetches happened
    def _process_event_time(self, rec: Alert, state, emit) -> None:
        t = rec.endsAt if rec.endsAt is not None and (rec.status == "resolved" or not rec.startsAt) else rec.startsAt
        grouped = from_grouped(rec)
        if grouped is None:  # lifecycle + routing, on the alerts topic's order
            now = state[ALERTS_CLOCK] = max(state.get(ALERTS_CLOCK, 0.0), t or 0.0)
            for g, a in self.engine.expire(state, now):  # sources quiet for resolve_timeout, at this time
                emit("alert-groups", g.key.encode(), encode(to_grouped(g, a)))
            for g, a in self.engine.route(rec, state, now):
                emit("alert-groups", g.key.encode(), encode(to_grouped(g, a)))
            return
        # grouping, on alert-groups' order: first every flush due before this transition (at its own due time,
        # inhibition as seen so far in this order), then the transition
        now = state[GROUPS_CLOCK] = max(state.get(GROUPS_CLOCK, 0.0), t or 0.0)
        self._flush(now, state, emit)
        group, alert = grouped
        self.engine.inhibitor.observe(alert.labels, alert.status)
        self.engine.group(group, alert, state, now)

    def _flush(self, now: float, state, emit) -> None:
        if not self.ready():
            return  # not caught up (AlertingService starts reading only once they are): flushed with a later one
        for note in self.engine.flush_until(state, now):
            hand_off(note, self.engine.router, emit)  # notifications, or per incident (route option incidents)

    def tick(self, now: float, state, emit) -> None:
        if self.event_time:
            return  # record-driven: nothing moves a clock but the transitions themselves (a replay gives one result)
        for g, a in self.engine.expire(state, now):
            self.engine.inhibitor.observe(a.labels, a.status)
            self._to_group(g, a, a.to_dict(), emit)
        if not self.ready():
            return  # silences/inhibitions not caught up: the due groups wait for the next tick
        for note in self.engine.flush_due(state, now):
            hand_off(note, self.engine.router, emit)  # notifications, or per incident (route option incidents)


def _ended(status: str, ends: float | None) -> float:
    """What a transition's end says of the time now: a resolution's end has passed; a firing alert's ``endsAt``
    is a promise about the future (Prometheus' resend convention, the Watchdog), not a clock."""
    return (ends or 0.0) if status == "resolved" else 0.0


ALERTS_CLOCK = "__alerts_clock__"  # clock: event -- the lifecycle step's time (largest transition time read on alerts)
GROUPS_CLOCK = "__groups_clock__"  # clock: event -- the grouping step's time (largest on alert-groups)
ALERTING_COMMIT = 0.02  # seconds from the end of one alerting transaction to the start of the next with outputs
COMMIT_POLL = 0.01  # seconds: how often the alerting processor looks whether its next transaction is due
FLUSH_EVERY = 0.05  # seconds: how often due groups are flushed while records flow
ALERTING_BATCH = 200  # records per slice of processing: the transaction in flight gets a turn between slices


class AlertingProcessor(TransactionalProcessor):
    """The transactional loop for alerting; due groups also flush right after a batch (wall clock), not only when idle.

    Notification timing is about people: a group whose ``group_wait`` is over flushes within
    ``FLUSH_EVERY`` even while alerts keep arriving (the base loop ticks idle partitions only).
    """

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._flushed: dict[int, float] = {}
        self._groups_topic = self.settings.topic("alert-groups")
        self._parts: dict[str, tuple[list[int], float]] = {}  # logical topic -> (its partitions, when read)
        self._own_groups: set[int] = set()  # partitions of alert-groups assigned here (as of the last batch)
        self._flush_scheduled = False
        if self.settings.clock != "event":
            self.stage.here = self._here

    @mode.Service.task
    async def _commit_when_due(self) -> None:
        """Notifications waiting start their transaction ``commit_interval`` after the last one ended, not when the
        consuming loop next comes round (it waits up to 200 ms for records when the input is quiet)."""
        while not self.should_stop:
            await asyncio.sleep(COMMIT_POLL)
            if self._inflight is None and self._outputs and self.producer is not None \
                    and time.monotonic() - self._last_commit >= self.settings.commit_interval:
                self._inflight = asyncio.ensure_future(self._commit())  # the loop takes its result, as its own

    @mode.Service.task
    async def _flush_when_due(self) -> None:
        """clock: wall -- a partition with a group or an alert timer due flushes within ``FLUSH_EVERY`` even
        when no record comes (the base loop ticks idle partitions once a second: a group_wait 1s group would
        wait up to 2 s).  The timer heaps say at no cost whether anything is due."""
        if self.settings.clock == "event":
            return
        engine = self.stage.engine
        while not self.should_stop:
            await asyncio.sleep(FLUSH_EVERY)
            if not self.stage.ready() or self._lock.locked():
                continue  # a transaction is being written: its state cut and outputs must come from one moment
            now = time.time()
            for store in list(self.stores.values()):
                t = engine.timers(store)
                if (t.gheap and t.gheap[0][0] <= now) or (t.eheap and t.eheap[0][0] <= now):
                    self._flush(store, now)

    def _emit(self, logical: str, key: bytes | None, value: bytes, partition: int | None = None) -> None:
        """Outputs keyed by group key get their partition here, as the producer's partitioner would put them
        (``_place``: murmur2 of the key, its hash remembered per key): the alert-groups record of a group and its
        notifications hash it once, not on every send."""
        if partition is None and key is not None and (logical == "alert-groups" or logical == "notifications"):
            partition = self._partition(logical, key)
        super()._emit(logical, key, value, partition)

    def _partition(self, logical: str, key: bytes) -> int | None:
        now = time.monotonic()
        got = self._parts.get(logical)
        if got is None or now - got[1] > 10.0:
            known = self.producer.client.cluster.partitions_for_topic(self.settings.topic(logical)) \
                if self.producer is not None else None
            if not known:
                return None  # metadata not there yet: the producer's partitioner decides at the commit
            got = self._parts[logical] = (sorted(known), now)
        return self._place(key, got[0])

    async def _restore_now(self, partitions: list[int]) -> None:
        """Restored partitions whose firing alerts were routed by another version of the routing file (changed
        while no worker held them, or before a restart) are routed again before their first record is read."""
        await super()._restore_now(partitions)
        for p in partitions:
            store = self.stores.get(p)
            if store is not None:
                self.stage.reroute(store, self._emit)

    def reroute(self) -> int:
        """Every partition held here routed again under the routing in force (after a reload)."""
        return sum(self.stage.reroute(store, self._emit) for store in list(self.stores.values()))

    def _here(self, key: bytes) -> tuple | None:
        """(state, partition) of group key ``key``'s partition of alert-groups when it is assigned here, else None."""
        p = self._partition("alert-groups", key)
        if p is None or p not in self._own_groups:
            return None
        store = self.stores.get(p)
        return None if store is None else (store, p)

    def _process_batch(self, tp: TopicPartition, msgs) -> None:
        if tp.topic == self._groups_topic and self.settings.clock != "event":
            self._process_grouped(tp, msgs)
        else:
            if self.settings.clock != "event":
                groups = self._groups_topic
                self._own_groups = {t.partition for t in self.consumer.assignment() if t.topic == groups}
            super()._process_batch(tp, msgs)
        if self.settings.clock == "event":
            return  # event time: groups flush as transitions move the grouping step's clock (AlertingStage)
        now = time.time()
        if tp.topic != self._groups_topic and self.stage.touched:
            # groups changed here by this batch's transitions flush once every partition of this fetch has been
            # routed (the consuming loop yields after the whole fetch): an inhibiting alert read in the same fetch,
            # from another partition, is seen by then, as it was when groups were only grouped after reading back
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_touched)
            return
        # after a batch of alert-groups always (a group_wait 0 group is due now; the timer heap makes a flush
        # cost only what is due), after one of alerts every FLUSH_EVERY (what its transitions made due meanwhile)
        if tp.topic == self._groups_topic or now - self._flushed.get(tp.partition, 0.0) >= FLUSH_EVERY:
            self._flushed[tp.partition] = now
            self._flush(self.stores[tp.partition], now)

    def _flush(self, store, now: float) -> None:
        """clock: wall -- one partition's tick at ``now`` (never behind its watermark): due alerts and groups go out."""
        self._tick(store, max(now, store.get(WATERMARK, 0.0)), self._emit)

    def _flush_touched(self) -> None:
        """The partitions whose groups this processor changed where it routed them: what is due flushes now."""
        self._flush_scheduled = False
        touched, self.stage.touched = self.stage.touched, set()
        now = time.time()
        for p in sorted(touched):
            store = self.stores.get(p)
            if store is not None:
                self._flushed[p] = now
                self._flush(store, now)

    def _process_grouped(self, tp: TopicPartition, msgs) -> None:
        """alert-groups, clock: wall: each record as this stage wrote it is parsed once (orjson) and grouped in
        its record form, with no typed decode and no Alert rebuilt (``engine.grouped_from_record``); any other
        shape takes the checked path (``decode``, dead letter with the reason).  Watermark, ticks, offsets and
        failure isolation as in ``TransactionalProcessor._process_batch``."""
        store = self.stores[tp.partition]
        stage, emit, loads = self.stage, self._emit, orjson.loads
        wm = store.get(WATERMARK, 0.0)
        tick_every = self.tick_interval
        next_tick = (wm // tick_every + 1) * tick_every if wm else None
        for m in msgs:
            try:
                d = loads(m.value)
            except orjson.JSONDecodeError:
                got = None
            else:
                ann = d.get("annotations") if type(d) is dict else None
                raw = ann.get(GROUP_ANNOTATION) if type(ann) is dict else None
                if type(raw) is str and is_applied(raw):
                    continue  # grouped already, in the transaction that wrote it (AlertingStage._to_group)
                got = grouped_from_record(d)
            try:
                if got is not None:
                    group, d, t, ends = got
                    stage.process_grouped(group, d, t, ends, store)
                else:
                    try:
                        rec = decode(m.value)
                    except RecordError as exc:
                        self._reject(emit, str(exc), m)
                        continue
                    t = rec.startsAt if type(rec) is Alert else rec.time
                    stage.process(rec, store, emit)
            except Exception as exc:  # isolate: one bad record never stops the partition
                log.exception("%s: stage failed on %s[%d]@%d", self.name, m.topic, m.partition, m.offset)
                self._reject(emit, f"stage error: {type(exc).__name__}: {exc}", m)
                continue
            if t > wm:
                wm = t
                if next_tick is None:
                    next_tick = (wm // tick_every + 1) * tick_every
                elif wm >= next_tick:
                    store[WATERMARK] = wm
                    self._tick(store, wm, emit)
                    next_tick = (wm // tick_every + 1) * tick_every
        if wm != store.get(WATERMARK):
            store[WATERMARK] = wm
        self.stats["in"] += len(msgs)
        self._offsets[tp] = msgs[-1].offset + 1


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
        self.producer = AIOKafkaProducer(**client_config(self.bootstrap, "aiokafka"), acks="all", enable_idempotence=True)
        await self.producer.start()

    async def on_stop(self) -> None:
        if self.producer:
            await self.producer.stop()

    @mode.Service.task
    async def _follow(self) -> None:
        await follow_topic(self, self.bootstrap, self.topic, 1, self.silences.apply, self.caught_up,
                    f"{self.settings.app_id}-silences")

    async def put(self, s: Silence) -> Silence:
        """Write ``s``, then a tombstone for every silence this book forgot (ended more than ``RETENTION`` before the
        latest change): only writers delete, so the compacted topic keeps the recent silences, not every one ever
        made. Every reader forgets the same ones on its own (``Silences.prune``), tombstone or not; readers only
        clear ``gone`` as the tombstones arrive."""
        await self.producer.send_and_wait(self.topic, s.encode(), key=s.id.encode())
        self.silences.put(s)
        for id in sorted(self.silences.gone):
            await self.producer.send_and_wait(self.topic, None, key=id.encode())
            self.silences.gone.discard(id)
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
        # checked as the hot path checks (peek), without building the record: the inhibitor needs labels and status
        try:
            rtype, _, _, w = peek(value)
        except RecordError:
            return  # the hot path dead-letters it; the view just skips it
        if rtype is Alert:
            self.inhibitor.observe(w.labels, w.status)

    @mode.Service.task
    async def _follow(self) -> None:
        # read even with no inhibit rule: a reload may bring some, whose sources fire already (Inhibitor.firing).
        # alert-groups, not alerts: its transitions have been through the lifecycle (duplicates dropped,
        # quiet sources resolved by timeout), so a source that went quiet stops inhibiting
        await follow_topic(self, self.bootstrap, self.settings.topic("alert-groups"), self.settings.partitions, self._on,
                    self.caught_up,
                    f"{self.settings.app_id}-inhibitor")


class AlertsView(mode.Service):
    """The alerts firing now, with their receivers and groups (``alerts``, an ``alerts.api.AlertsState``), for the API:
    every partition of ``alert-groups``, read from the start and followed."""

    def __init__(self, settings: Settings, bootstrap: str, state, **kw):
        super().__init__(**kw)
        self.settings, self.bootstrap, self.alerts = settings, bootstrap, state
        self.caught_up = asyncio.Event()

    @mode.Service.task
    async def _follow(self) -> None:
        await follow_topic(self, self.bootstrap, self.settings.topic("alert-groups"), self.settings.partitions,
                           self.alerts.apply, self.caught_up, f"{self.settings.app_id}-alerts-api")


HEALTH_COALESCE = 1.0  # s: a receiver-health change of the waiting alerts alone is written at most this often
HEALTH_WAITING_MAX = 200  # fingerprints of waiting alerts a receiver-health record lists at most (waitingAlerts: all)
IN_FLIGHT = 64  # concurrent requests per receiver (its own connection pool): a slow receiver fills only its own
MAX_QUEUED = 4  # queued notifications of one receiver+group before they are aggregated into one (a storm)
MAX_PENDING = 200_000  # notifications read and not yet done, all receivers: beyond it reading pauses
META_BUDGET = 3500  # characters of commit metadata per partition (brokers allow 4096 by default)


class Progress:
    """What is done in one partition of ``notifications``, per receiver, and what to commit.

    Receivers finish out of order (one is down, another answers at once), so one offset cannot say
    what is done.  The commit is the first offset any receiver still needs; its metadata holds, per
    receiver, ``[start, runs]``: every record of that receiver below ``start`` is done, and ``runs``
    (run lengths, alternately not done / done, over that receiver's own records from ``start``) say
    which of the later ones are.  A restarted worker reads from the commit and skips what is done, so a
    healthy receiver is never sent again what it took while another held the commit back.

    >>> p = Progress(0, "")
    >>> a, b, c = p.seen("a", 0), p.seen("b", 1), p.seen("b", 2)
    >>> c[1] = True; p.mark(c)
    >>> p.commit_point()
    (0, '{"b":[1,[1,1]]}')
    >>> q = Progress(0, p.commit_point()[1])
    >>> q.seen("a", 0), q.seen("b", 1), q.seen("b", 2)
    ([0, False], [1, False], True)
    """

    def __init__(self, start: int, meta: str):
        self.pos = start
        self.seq: dict[str, deque] = {}  # receiver -> [[offset, done], ...] from its first record not done
        self.skip: dict[str, list] = {}  # receiver -> [start, runs, run index, used of it]: restored from the commit
        self.pending = 0
        self.active = True
        self.busy = 0  # groups of this partition waiting for or in a lane's sender
        self.idle = asyncio.Event()  # set while busy == 0 (a revoke or a stop drains on it)
        self.idle.set()
        self.committed: tuple[int, str] | None = (start, meta)
        try:
            restored = orjson.loads(meta) if meta else {}
        except orjson.JSONDecodeError:
            restored = {}
        for r, (begin, runs) in restored.items():
            # kept as runs (which run, how much of it is used): expanded to a flag per record, a restart behind one
            # stuck notification built a million-entry list, and each commit walked it
            self.skip[r] = [begin, [int(n) for n in runs], 0, 0]

    def seen(self, receiver: str, offset: int):
        """Account for one record: True when it was done before (skip it), else its entry (pending)."""
        self.pos = offset + 1
        done = False
        s = self.skip.get(receiver)
        if s is not None:
            if offset < s[0]:
                done = True
            else:
                runs = s[1]
                while s[2] < len(runs) and s[3] >= runs[s[2]]:  # runs used up (or empty)
                    s[2], s[3] = s[2] + 1, 0
                done = s[2] < len(runs) and s[2] % 2 == 1  # runs alternate not done / done
                s[3] += 1
                while s[2] < len(runs) and s[3] >= runs[s[2]]:
                    s[2], s[3] = s[2] + 1, 0
                if s[2] >= len(runs):
                    del self.skip[receiver]
        q = self.seq.get(receiver)
        if q is None:
            q = self.seq[receiver] = deque()
        if done:
            if q:
                q.append([offset, True])
            return True
        entry = [offset, False]
        q.append(entry)
        self.pending += 1
        return entry

    def mark(self, entry: list) -> None:
        if not entry[1]:
            entry[1] = True
            self.pending -= 1

    def commit_point(self) -> tuple[int, str]:
        """The offset to commit and its metadata (what each receiver has done beyond it).

        Done entries behind one still pending are merged into runs (``[offset, True, count]``): one notification
        retried for hours held every later record of its receiver as an entry of its own (an audit: 1M entries,
        107 MiB, 0.4 s a commit every 0.2 s, the loop saturated), so the queue now grows with the alternations of
        pending and done, not with the records."""
        for q in self.seq.values():
            while q and q[0][1]:
                q.popleft()
            _merge_done(q)
        first = min([q[0][0] for q in self.seq.values() if q] + [self.pos])
        meta: dict[str, list] = {}
        for r in set(self.seq) | set(self.skip):
            q = self.seq.get(r)
            s = self.skip.get(r)
            rest = ([(s[2] % 2 == 1, s[1][s[2]] - s[3])] + [(j % 2 == 1, s[1][j]) for j in range(s[2] + 1, len(s[1]))]
                    if s is not None and s[2] < len(s[1]) else [])
            if q:
                start, flags = q[0][0], [(e[1], e[2] if len(e) > 2 else 1) for e in q] + rest
            elif s is not None and s[0] > self.pos:
                start, flags = s[0], rest
            else:
                start, flags = self.pos, rest
            runs = _runs(flags)
            if start > first or runs:
                meta[r] = [start, runs]
        text = orjson.dumps(meta).decode() if meta else ""
        while len(text) > META_BUDGET:  # too much detail: forget the longest run lists (those may be sent again)
            r = max(meta, key=lambda k: len(meta[k][1]))
            meta[r][1] = []
            text = orjson.dumps(meta).decode()
        return first, text


def _merge_done(q: deque) -> None:
    """Merge each stretch of done entries of ``q`` into one ``[offset, True, count]`` (the offset of its first);
    entries still pending stay the objects their senders will mark.

    >>> q = deque([[1, False], [2, True], [3, True], [5, False], [8, True, 4], [9, True]])
    >>> _merge_done(q); list(q)
    [[1, False], [2, True, 2], [5, False], [8, True, 5]]
    """
    if sum(1 for e in q if e[1]) < 2:
        return
    out: deque = deque()
    for e in q:
        last = out[-1] if out else None
        if e[1] and last is not None and last[1]:
            if len(last) == 2:
                last = out[-1] = [last[0], True, 1]
            last[2] += e[2] if len(e) > 2 else 1
        else:
            out.append(e)
    q.clear()
    q.extend(out)


def _runs(flags: list[tuple[bool, int]]) -> list[int]:
    """Run lengths alternately not done / done, the trailing not-done run dropped; ``flags``: (done, how many).

    >>> _runs([(False, 1), (True, 2), (False, 1)]), _runs([(True, 1)]), _runs([(False, 3)]), _runs([(True, 2), (True, 3)])
    ([1, 2], [0, 1], [], [0, 5])
    """
    out: list[int] = []
    want, n = False, 0
    for f, k in flags:
        if f == want:
            n += k
        else:
            out.append(n)
            want, n = f, k
    if want:
        out.append(n)
    return out


def notification_problem(n) -> str | None:
    """Why ``n`` is not a notification every sender can take (None: it is): the fields the senders, coalescing and
    progress read, with their types.  The deliverer dead-letters anything else at once: taken, one would raise in a
    sender and be tried again every second, or stop the partition's progress.

    >>> ok = {"id": "n1", "receiver": "ops", "groupKey": "{}:{}", "groupLabels": {}, "status": "firing",
    ...       "alerts": [{"labels": {"alertname": "A"}, "status": "firing", "fingerprint": "f", "startsAt": "t"}]}
    >>> notification_problem(ok) is None
    True
    >>> notification_problem(dict(ok, receiver=7)), notification_problem(dict(ok, alerts=[{"status": "firing"}]))
    ("'receiver': expected a string, got int", 'alerts[0].labels: expected an object, got NoneType')
    """
    if not isinstance(n, dict):
        return f"expected an object, got {type(n).__name__}"
    for k, t in (("id", str), ("receiver", str), ("groupKey", str), ("status", str), ("groupLabels", dict),
                 ("alerts", list)):
        if not isinstance(n.get(k), t):
            return f"{k!r}: expected {'a string' if t is str else 'an object' if t is dict else 'an array'}, " \
                   f"got {type(n.get(k)).__name__}"
    for i, a in enumerate(n["alerts"]):
        if not isinstance(a, dict):
            return f"alerts[{i}]: expected an object, got {type(a).__name__}"
        if not isinstance(a.get("labels"), dict):
            return f"alerts[{i}].labels: expected an object, got {type(a.get('labels')).__name__}"
        if a.get("status") not in ("firing", "resolved"):
            return f"alerts[{i}].status: expected firing or resolved, got {a.get('status')!r}"
        for k in ("fingerprint", "startsAt"):
            if not isinstance(a.get(k), str):
                return f"alerts[{i}].{k}: expected a string, got {type(a.get(k)).__name__}"
    return None


class Lane:
    """One receiver's delivery: its own connection pool and in-flight limit, one request at a time per group.

    Up to ``IN_FLIGHT`` sender tasks (started as needed, kept while the lane lives) take groups from one
    ready queue: a group is in it, or with a sender, at most once; later notifications of the group wait
    in ``groups`` behind the one being sent.  No task or semaphore wait per notification.
    """

    def __init__(self, name: str, owner: Deliverer):
        self.name = name
        self.owner = owner
        self.session = None
        self.groups: dict[str, list[dict]] = {}  # group key -> notifications queued behind the one being sent
        self.ready: asyncio.Queue = asyncio.Queue()  # (group key, first notification, its partition's Progress)
        self.senders: dict[asyncio.Task, Progress | None] = {}  # sender -> the partition of the group it sends
        self.waiting = 0  # senders waiting for a group
        self.stats = {"delivered": 0, "failed": 0, "deadletter": 0, "coalesced": 0, "aggregated": 0, "rate_limited": 0}
        self.tokens: float | None = None  # the receiver's rate limit (None: full bucket at the first send)
        self.refilled = time.monotonic()

    def put(self, note: dict) -> None:
        key = note["groupKey"]
        queued = self.groups.get(key)
        if queued is None:
            self.groups[key] = []
            prog = note["_covers"][0][0]
            prog.busy += 1
            prog.idle.clear()
            self.ready.put_nowait((key, note, prog))
            if self.waiting < self.ready.qsize() and len(self.senders) < IN_FLIGHT:
                t = asyncio.create_task(self._sender())
                self.senders[t] = None
            return
        queued.append(note)
        # more waiting than the receiver takes: one notification with the group's state (not in event time)
        if len(queued) > MAX_QUEUED and self.owner.merge:
            self.stats["aggregated"] += len(queued) - 1
            self.owner.stats["aggregated"] += len(queued) - 1
            queued[:] = [aggregate(queued)]

    async def _sender(self) -> None:
        me = asyncio.current_task()
        try:
            while True:
                self.waiting += 1
                try:
                    key, note, prog = await self.ready.get()
                finally:
                    self.waiting -= 1
                self.senders[me] = prog
                try:
                    await self._send_group(key, note, prog)
                finally:
                    self.senders[me] = None
                    prog.busy -= 1
                    if not prog.busy:
                        prog.idle.set()
        finally:
            self.senders.pop(me, None)

    async def drain(self, progs, timeout: float) -> None:
        """Let the groups of ``progs`` (None: all) being sent finish within ``timeout``; then cancel their senders."""
        progs = list(self.owner.progress.values()) if progs is None else list(progs)
        waits = [asyncio.ensure_future(p.idle.wait()) for p in progs if not p.idle.is_set()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
            for w in pending:
                w.cancel()
        late = [t for t, p in self.senders.items() if p is not None and p in progs]
        for t in late:
            t.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _send_group(self, key: str, note: dict, prog: Progress) -> None:
        try:
            while True:
                if not prog.active or self.owner._stopping:
                    return  # not marked done: the next reader of the partition sends it
                if self.session is None:
                    self.session = DeliverySession(IN_FLIGHT)  # HTTP(S)_PROXY, NO_PROXY: read once per URL
                if not await self._turn():  # the receiver's rate limit: its turn, with what queued meanwhile
                    if not prog.active or self.owner._stopping:
                        return  # revoked or stopping while it waited: the next reader sends it
                    queued = self.groups.get(key)
                    if queued:
                        note, queued[:] = self._merge([note, *queued])
                if self.owner.freeze.in_doubt():  # frozen past the session: the partition may be another's now
                    await self.owner.freeze_pause()
                    continue  # revoked meanwhile (prog.active is False): the loop's first check returns
                try:
                    await self.owner._deliver(self, note)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # e.g. the dead-letter write failed: the same notification again, later
                    log.warning("delivery to %s failed (%s: %s); trying again in 1s", self.name, type(exc).__name__,
                                exc)
                    await asyncio.sleep(1.0)
                    continue
                for p, entry in note["_covers"]:
                    p.mark(entry)
                queued = self.groups.get(key)
                if not queued:
                    return
                note, queued[:] = self._merge(queued)
        finally:
            if self.groups.get(key) is not None and (not self.groups[key] or not prog.active
                                                     or self.owner._stopping):
                del self.groups[key]

    def _merge(self, notes: list[dict]) -> tuple[dict, list[dict]]:
        """(the next notification to send, the ones still queued) of a group's pending ``notes``: coalesced
        (``alerts.coalesce``) with clock: wall, as written in event time; counted."""
        merged = coalesce(notes) if self.owner.merge else list(notes)
        self.stats["coalesced"] += len(notes) - len(merged)
        self.owner.stats["coalesced"] += len(notes) - len(merged)
        return merged[0], merged[1:]

    async def _turn(self) -> bool:
        """Wait for the receiver's rate limit (``rate_limit`` in the routing file in force) to allow one more
        notification; True when it did not have to wait."""
        rl = self.owner.receivers.rate_limit.get(self.name)
        if rl is None:
            return True
        rate, waited = rl.notifications / rl.per, False
        while True:
            now = time.monotonic()
            have = rl.notifications if self.tokens is None else self.tokens + (now - self.refilled) * rate
            self.tokens, self.refilled = min(float(rl.notifications), have), now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return not waited
            if not waited:
                waited = True
                self.stats["rate_limited"] += 1
            await asyncio.sleep((1.0 - self.tokens) / rate)

    async def close(self) -> None:
        for t in list(self.senders):
            t.cancel()
        await asyncio.gather(*self.senders, return_exceptions=True)
        if self.session is not None:
            await self.session.close()


class DeliveryMetrics:
    """Per-receiver delivery figures for ``/metrics`` (prometheus-client's default registry, read when scraped).

    ``kubesight_notifications_total`` {receiver, result=delivered|deadletter},
    ``kubesight_notifications_merged_total`` {receiver, how=coalesced|aggregated} and
    ``kubesight_notification_groups_in_flight`` {receiver}: summed over this process's deliverers.
    """

    live: weakref.WeakSet = weakref.WeakSet()
    _installed = False

    @classmethod
    def watch(cls, deliverer: Deliverer) -> None:
        cls.live.add(deliverer)
        if not cls._installed:
            from prometheus_client import REGISTRY

            REGISTRY.register(cls())
            cls._installed = True

    def describe(self):
        return []  # collected at scrape time only

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        total = CounterMetricFamily("kubesight_notifications", "notifications per receiver and result",
                                    labels=["receiver", "result"])
        merged = CounterMetricFamily("kubesight_notifications_merged", "notifications merged into a later one",
                                     labels=["receiver", "how"])
        flight = GaugeMetricFamily("kubesight_notification_groups_in_flight", "groups being sent or retried",
                                   labels=["receiver"])
        limited = CounterMetricFamily("kubesight_notifications_rate_limited", "notifications that waited for the "
                                      "receiver's rate_limit", labels=["receiver"])
        sums: dict[str, dict] = {}
        for d in list(self.live):
            for name, st in d.receiver_stats().items():
                acc = sums.setdefault(name, dict.fromkeys(st, 0))
                for k, v in st.items():
                    acc[k] = acc.get(k, 0) + v
        for name, st in sorted(sums.items()):
            total.add_metric([name, "delivered"], st["delivered"])
            total.add_metric([name, "deadletter"], st["deadletter"])
            merged.add_metric([name, "coalesced"], st["coalesced"])
            merged.add_metric([name, "aggregated"], st["aggregated"])
            flight.add_metric([name], st["groups_in_flight"])
            limited.add_metric([name], st.get("rate_limited", 0))
        yield from (total, merged, flight, limited)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, owner: Deliverer):
        self.owner = owner

    async def on_partitions_revoked(self, revoked):
        await self.owner._revoke(revoked)

    async def on_partitions_assigned(self, assigned):
        pass  # each partition's progress is read from its commit when its first records arrive


class Deliverer(mode.Service):
    """Sends committed notifications to receivers: per receiver in parallel, never one behind another.

    One consumer reads ``notifications`` (read_committed) and hands each record to its receiver's
    ``Lane``; lanes send concurrently (``IN_FLIGHT`` each, own connection pool), one notification at a
    time per group (later ones of the group are coalesced behind it, aggregated in a storm).  Offsets
    commit every ``commit_interval`` with per-receiver progress (``Progress``), so a receiver that is
    down holds back nothing but its own notifications, and they wait in Kafka's log, not in a retry loop
    that blocks the partition.
    """

    def __init__(self, settings: Settings, bootstrap: str, receivers: Receivers,
                 on_result: Callable | None = None, commit_interval: float = 0.2, merge: bool | None = None,
                 routing_file: RoutingFile | None = None, **kw):
        super().__init__(**kw)
        self.settings, self.bootstrap, self.receivers = settings, bootstrap, receivers
        self.routing_file = routing_file  # delivery in a process of its own follows the file itself
        # coalesce/aggregate notifications queued behind a group's one in flight: with clock: wall only (which
        # ones merge depends on timing; in event time every notification is sent as written, so a replay's are fixed)
        self.merge = settings.clock == "wall" if merge is None else merge
        self.on_result = on_result
        self.commit_interval = commit_interval
        self.group_id = f"{settings.app_id}-deliver"
        self.stats = {"delivered": 0, "deadletter": 0, "coalesced": 0, "aggregated": 0, "skipped": 0,
                      "commits": 0}
        self.lanes: dict[str, Lane] = {}
        self.health: dict[str, str] = {}  # integration -> its state as last written to receiver-health
        self.health_since: dict[str, str] = {}  # integration -> when that state began
        # integration -> id(notification) -> its firing alerts' fingerprints, while delivery retries that notification
        # (receiver-health's ``waiting``: the alerts that have not reached anybody through it yet)
        self.waiting: dict[str, dict[int, tuple[str, ...]]] = {}
        self._health_due: dict[str, tuple] = {}  # integration -> (integ, state, out): a waiting-only change to write
        self.progress: dict[TopicPartition, Progress] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._stopping = False
        self._last_commit = time.monotonic()
        self.drain_timeout = 5.0
        self.freeze = FreezeWatch.for_session(10.0, 1.0)  # the consumer's session and heartbeat below
        DeliveryMetrics.watch(self)

    async def freeze_pause(self) -> None:
        """Wait out a doubt about the partitions after a freeze (the consumer's heartbeat revokes them if the group
        moved on; ``streams.freeze``)."""
        while self.freeze.in_doubt() and not self._stopping:
            await asyncio.sleep(0.1)

    @mode.Service.task
    async def _beat(self) -> None:
        await self.freeze.run()

    async def on_start(self) -> None:
        tune_gc()  # as the transactional processors do: start-up objects frozen, fewer young passes
        self.producer = AIOKafkaProducer(**client_config(self.bootstrap, "aiokafka"), acks="all", enable_idempotence=True)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            **client_config(self.bootstrap, "aiokafka"), group_id=self.group_id, enable_auto_commit=False,
            isolation_level="read_committed", auto_offset_reset="earliest", session_timeout_ms=10000,
            heartbeat_interval_ms=1000, max_poll_interval_ms=3600_000 * 3, fetch_max_wait_ms=100)
        await self.consumer.start()
        self.consumer.subscribe([self.settings.topic("notifications")], listener=_Rebalance(self))

    async def on_stop(self) -> None:
        # drain: requests in flight finish (a 2xx is marked done and committed); queued notifications and
        # retries still running after the grace period stay uncommitted (no 2xx yet: nothing doubles)
        self._stopping = True
        deadline = time.monotonic() + self.drain_timeout
        for lane in list(self.lanes.values()):
            await lane.drain(None, max(0.0, deadline - time.monotonic()))
        if self.consumer:
            await self._commit()
            await self.consumer.stop()
        if self.producer:
            await self.producer.stop()
        for lane in self.lanes.values():
            await lane.close()

    @mode.Service.task
    async def _resend(self) -> None:
        from streams.forward_memory import restore_forwarders

        await restore_forwarders(self.settings, self.bootstrap, self.receivers)  # what was forwarded before a restart
        await resend_forever(lambda: self.receivers)  # alertmanager_configs: firing alerts re-sent as Prometheus does

    @mode.Service.task
    async def _follow_routing(self) -> None:
        if self.routing_file is not None:
            await self.routing_file.follow(lambda cfg: self.reconfigure(Receivers(cfg)))

    def reconfigure(self, receivers: Receivers) -> None:
        """Deliver by ``receivers`` from now on (a routing reload).  A request in flight finishes with the
        integration it started with; a forwarder that is still there (same name, same URL) keeps its memory of
        the alerts it forwarded, so re-sends go on without a gap."""
        old = {i.name: i for i in self.receivers.forwarders()}
        for integ in receivers.forwarders():
            prev = old.get(integ.name)
            if prev is not None and prev.url == integ.url:
                integ.forward.groups, integ.forward.seen, integ.forward.last = (prev.forward.groups, prev.forward.seen,
                                                                                prev.forward.last)
        self.receivers = receivers

    def receiver_stats(self) -> dict[str, dict]:
        """Per receiver: delivered, failed attempts' outcomes, dead letters, groups in flight."""
        return {name: dict(lane.stats, groups_in_flight=len(lane.groups)) for name, lane in self.lanes.items()}

    def lag(self) -> dict[TopicPartition, int]:
        """{partition of ``notifications``: offsets from its last commit to its last stable offset}, for
        ``kubesight_consumer_lag{processor="delivery"}`` (``streams.telemetry.WorkerMetrics``).

        From the commit, not the consumer's position: the position is past every notification read, so it said
        0 while a receiver that is down held hundreds in flight (an audit: 161 behind, no series); the commit stays
        at the first notification a receiver still needs.  Once everything read is done, the position counts
        (the transaction markers after the last notification take offsets no commit of ours passes).  Read when
        ``/metrics`` is scraped, from another thread: only values replaced whole are read."""
        c = self.consumer
        sub = None if c is None else c._subscription.subscription
        if sub is None or sub.assignment is None:
            return {}
        out = {}
        for tp in list(c.assignment()):
            st = sub.assignment.state_value(tp)
            end = c.last_stable_offset(tp)
            if end is None or end < 0:
                end = c.highwater(tp)
            position = st.position if st is not None and st.has_valid_position else None
            prog = self.progress.get(tp)
            committed = None if prog is None else prog.committed
            if committed is None:  # nothing read from it yet (or not committed yet): its position is the commit's
                base = position
            elif committed[0] >= prog.pos and position is not None:  # all it read is done and committed
                base = max(committed[0], position)
            else:
                base = committed[0]
            if end is not None and base is not None:
                out[tp] = max(0, end - base)
        return out

    @mode.Service.task
    async def _run(self) -> None:
        paused = False
        while not self.should_stop and not self._stopping:
            pending = sum(p.pending for p in self.progress.values())
            if pending > MAX_PENDING and not paused:
                log.warning("delivery: %d notifications pending; reading paused until receivers catch up", pending)
                self.consumer.pause(*self.consumer.assignment())
                paused = True
            elif paused and pending < MAX_PENDING // 2:
                self.consumer.resume(*self.consumer.assignment())
                paused = False
            batches = await self.consumer.getmany(timeout_ms=100, max_records=5000)
            for tp, msgs in batches.items():
                prog = self.progress.get(tp)
                if prog is None:
                    prog = await self._open(tp, msgs[0].offset)
                for m in msgs:
                    if m.offset < prog.pos:
                        continue  # before the commit (a seek or a re-fetch): done already
                    await self._take(tp, prog, m)
            if time.monotonic() - self._last_commit >= self.commit_interval:
                await self._commit()

    async def _open(self, tp: TopicPartition, first: int) -> Progress:
        """The partition's progress as of its commit (offset and per-receiver metadata)."""
        got = await self.consumer._coordinator.fetch_committed_offsets([tp])
        om = got.get(tp)
        if om is not None and om.offset >= 0:
            prog = Progress(om.offset, om.metadata or "")
        else:
            prog = Progress(first, "")
            prog.committed = None
        self.progress[tp] = prog
        return prog

    async def _take(self, tp: TopicPartition, prog: Progress, m) -> None:
        try:
            n = orjson.loads(m.value)
            why = notification_problem(n)
        except orjson.JSONDecodeError as exc:
            why = str(exc)
        if why is not None:  # dead-lettered with the reason: a sender would raise on it, again and again
            prog.seen("", m.offset)
            await self._dead(f"not a notification: {why}", m.value, m.key, tp, m.offset)
            return
        receiver = n["receiver"]
        entry = prog.seen(receiver, m.offset)
        if entry is True:
            self.stats["skipped"] += 1
            return
        n["_covers"] = [(prog, entry)]
        n["_where"] = (tp, m.offset)
        lane = self.lanes.get(receiver)
        if lane is None:
            lane = self.lanes[receiver] = Lane(receiver, self)
        lane.put(n)

    async def _deliver(self, lane: Lane, n: dict) -> None:
        note = {k: v for k, v in n.items() if not k.startswith("_")}
        tp, offset = n["_where"]
        if note["receiver"] not in self.receivers.integrations:  # written before a reload that removed it
            lane.stats["deadletter"] += 1
            await self._dead(f"receiver {note['receiver']!r} is not in the routing file in force", orjson.dumps(note),
                             note["groupKey"].encode(), tp, offset)
            self.stats["delivered"] += 1
            return
        try:
            results = await self.receivers.notify(
                lane.session, note, on_retry=lambda integ, out, wait: self._retrying(integ, out, note))
        except BaseException:  # cancelled (a stop) or a sender's bug: the note waits no more
            for name in [name for name, w in self.waiting.items() if w.pop(id(note), None) is not None and not w]:
                del self.waiting[name]
            raise
        for integ, out in results:
            w = self.waiting.get(integ.name)
            gone = w is not None and w.pop(id(note), None) is not None
            if w is not None and not w:
                del self.waiting[integ.name]
            await self._health(integ, "ok" if out.ok else "failing", out, waiting_changed=gone)
            if not out.ok:
                lane.stats["deadletter"] += 1
                await self._dead(f"{integ.name}: {out.reason}", orjson.dumps(note), note["groupKey"].encode(), tp,
                                 offset)
            if self.on_result:
                self.on_result(integ, note, out)
        if all(out.ok for _, out in results):
            lane.stats["delivered"] += 1
        self.stats["delivered"] += 1

    async def _retrying(self, integ, out, note: dict) -> None:
        w = self.waiting.setdefault(integ.name, {})
        new = id(note) not in w
        if new:
            w[id(note)] = tuple(a["fingerprint"] for a in note["alerts"] if a.get("status") == "firing")
        await self._health(integ, "retrying", out, waiting_changed=new)

    async def _health(self, integ, state: str, out, waiting_changed: bool = False) -> None:
        """Tell ``receiver-health`` (compacted, keyed by integration) when an integration's state changes: ``ok``
        (a notification reached it), ``retrying`` (an attempt failed and will be tried again), ``failing`` (delivery
        gave a notification up: dead-lettered).  The board shows what is not ok.  Only changes are written (one
        record per change, not per attempt); a process that starts writes each integration's first state.  Each
        record says which firing alerts wait for the integration (``waiting``: in notifications delivery still
        retries); a change of those alone is written at most once per ``HEALTH_COALESCE`` seconds.  Advisory:
        a write that fails is logged and delivery goes on; with several delivery processes the latest write wins."""
        if self.producer is None:
            return
        if self.health.get(integ.name) == state:
            if waiting_changed and integ.name not in self._health_due:
                self._health_due[integ.name] = (integ, state, out)
                asyncio.get_running_loop().call_later(HEALTH_COALESCE, self._health_later, integ.name)
            return
        await self._write_health(integ, state, out)

    def _health_later(self, name: str) -> None:
        due = self._health_due.pop(name, None)
        if due is not None and not self._stopping and self.health.get(name) == due[1]:  # else written meanwhile
            self.add_future(self._write_health(*due))

    async def _write_health(self, integ, state: str, out) -> None:
        if self.health.get(integ.name) != state:
            self.health[integ.name] = state
            self.health_since[integ.name] = format_time(time.time())
        self._health_due.pop(integ.name, None)
        fps = sorted({fp for fps in self.waiting.get(integ.name, {}).values() for fp in fps})
        rec = {"v": 1, "kind": "receiver-health", "receiver": integ.receiver, "integration": integ.name,
               "state": state, "since": self.health_since[integ.name], "attempts": out.attempts,
               "reason": "" if out.ok else out.reason, "waitingAlerts": len(fps), "waiting": fps[:HEALTH_WAITING_MAX]}
        try:
            await self.producer.send(self.settings.topic("receiver-health"), orjson.dumps(rec),
                                     key=integ.name.encode())
        except Exception as exc:  # noqa: BLE001 - advisory: never in the way of a delivery
            log.warning("delivery: receiver-health not written for %s (%s: %s)", integ.name, type(exc).__name__, exc)

    async def _commit(self, only: list[TopicPartition] | None = None) -> None:
        from aiokafka.errors import KafkaError
        from aiokafka.structs import OffsetAndMetadata

        self._last_commit = time.monotonic()
        assigned = self.consumer.assignment()
        offsets = {}
        for tp, prog in self.progress.items():
            if (only is not None and tp not in only) or tp not in assigned:
                continue
            point = prog.commit_point()
            if point != prog.committed:
                offsets[tp] = (OffsetAndMetadata(*point), point)
        if not offsets:
            return
        try:
            await self.consumer.commit({tp: om for tp, (om, _) in offsets.items()})
        except KafkaError as exc:  # a rebalance in progress: the next commit (or the next owner) catches up
            log.warning("delivery: offset commit failed (%s: %s)", type(exc).__name__, exc)
            return
        for tp, (_, point) in offsets.items():
            prog = self.progress.get(tp)
            if prog is not None:  # revoked by a rebalance during the commit: forgotten already
                prog.committed = point
        self.stats["commits"] += 1

    async def _revoke(self, revoked) -> None:
        """Partitions move to another worker: finish what is in flight (briefly), commit, forget them."""
        progs = [(tp, self.progress[tp]) for tp in revoked if tp in self.progress]
        for _, prog in progs:
            prog.active = False  # queued notifications are left to the next owner
        deadline = time.monotonic() + self.drain_timeout
        for lane in list(self.lanes.values()):
            await lane.drain([prog for _, prog in progs], max(0.0, deadline - time.monotonic()))
        await self._commit([tp for tp, _ in progs])
        for tp, _ in progs:
            self.progress.pop(tp, None)

    async def _dead(self, reason: str, payload: bytes, key, tp, offset) -> None:
        self.stats["deadletter"] += 1
        log.error("notification dead-lettered: %s", reason)
        await self.producer.send_and_wait(self.settings.topic("deadletter"), deadletter(
            reason, payload, origin="alerts/deliver", key=key, topic=tp.topic, partition=tp.partition, offset=offset,
            **_whose(payload)), key=deadletter_key(key))


def _whose(payload: bytes) -> dict:
    """A notification too big for its dead letter (over PAYLOAD_LIMIT: kept cut, so nobody can parse it) is named
    beside it: ``notification`` = its receiver, time and firing alerts' fingerprints (the board marks them
    undelivered)."""
    if len(payload) <= PAYLOAD_LIMIT:
        return {}
    try:
        n = orjson.loads(payload)
        return {"notification": {"receiver": n["receiver"], "time": n["time"],
                                 "firing": [a["fingerprint"] for a in n["alerts"] if a.get("status") == "firing"]}}
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return {}


class AlertingService(mode.Service):
    """Everything a worker runs for alerting; add it to the Faust app as a runtime dependency.

    Given a routing file (a path, or none: ``settings.routing``), it follows it (``RoutingFile``) and takes a
    new version that validates without a restart (``reload``): routes, timings, inhibit rules and receivers
    from then on, and the alerts firing now routed again (``Engine.reroute``), in the next transaction."""

    def __init__(self, settings: Settings, bootstrap: str, routing: RoutingConfig | str | None = None, *,
                 worker_id: str = "0", on_result: Callable | None = None, tick_interval: float = 0.25,
                 deliver: bool = True, **kw):
        super().__init__(**kw)
        if isinstance(routing, RoutingConfig):
            cfg, self.routing_file = routing, None
        else:
            self.routing_file = RoutingFile(routing or settings.routing)
            cfg = self.routing_file.cfg
        for warning in cfg.warnings:  # Alertmanager's deprecated forms, read as their modern equivalents
            log.warning("routing: %s", warning)
        self.settings, self.remind_every = settings, REMIND_EVERY
        self.book = SilenceBook(settings, bootstrap)
        # clock: wall (live clusters): Alertmanager's timings on the wall clock, inhibition from every partition of
        # alert-groups as soon as the watcher reads it.  clock: event (replays, the demo): timers on the
        # transitions' own times and inhibition from the grouping step's own ordered input, so one input gives one
        # set of notifications; with several partitions the watcher adds the other partitions' sources (in the
        # order it happens to read them: determinism holds per partition, fully with one partition).
        event = settings.clock == "event"
        engine_inhibitor = Inhibitor(rules_from(cfg))
        shared = not event or settings.partitions > 1
        self.watcher = AlertWatcher(settings, bootstrap, engine_inhibitor if shared else Inhibitor(rules_from(cfg)))
        self.engine = Engine(cfg, self.book.silences, engine_inhibitor, silence_clock=time.time if event else None)
        stage = AlertingStage(self.engine, self.views_ready, event_time=event)
        clocked = settings.model_copy(update={"clock": "event" if event else "wall",
                                              "commit_interval": min(settings.commit_interval, ALERTING_COMMIT),
                                              "max_batch": min(settings.max_batch, ALERTING_BATCH)})
        self.processor = AlertingProcessor(clocked, bootstrap, "alerting", ["alerts", "alert-groups"], stage,
                                           worker_id=worker_id, tick_interval=tick_interval)
        # deliver=False: delivery runs in a process of its own (``kubesight worker --role delivery``)
        self.deliverer = Deliverer(settings, bootstrap, Receivers(cfg), on_result=on_result) if deliver else None

    def views_ready(self) -> bool:
        return self.book.caught_up.is_set() and self.watcher.caught_up.is_set()

    @mode.Service.task
    async def _remind(self) -> None:
        """Forgotten silences (``silence_reminder_after``, clock: wall): reminded every ``remind_every`` seconds."""
        if self.settings.silence_reminder_after <= 0 or self.settings.clock == "event":
            return
        while not self.should_stop:
            await asyncio.sleep(self.remind_every)
            if self.views_ready():
                self.remind(time.time())

    def remind(self, now: float) -> int:
        """The SilenceStillMuting alerts due now, onto the alerts topic (every worker the same: one fingerprint)."""
        out = reminders(self.book.silences, self.watcher.inhibitor.firing, now, self.settings.silence_reminder_after,
                        self.remind_every, self.settings.cluster)
        for a in out:
            self.processor._emit("alerts", a.key(), encode(a))
        return len(out)

    @mode.Service.task
    async def _follow_routing(self) -> None:
        if self.routing_file is not None:
            await self.routing_file.follow(self.reload)

    def reload(self, cfg: RoutingConfig) -> int:
        """Run by ``cfg`` from now on (validated already); returns how many alert-groups records the firing
        alerts' new routing made.  Synchronous, so no record is processed and no transaction cut is taken
        half-way (a transaction in flight took its cut before; these records go in the next one)."""
        self.engine.reconfigure(cfg)
        if self.watcher.inhibitor is not self.engine.inhibitor:
            self.watcher.inhibitor.set_rules(rules_from(cfg))
        moved = self.processor.reroute()
        if self.deliverer is not None:
            self.deliverer.reconfigure(Receivers(cfg))
        return moved

    async def on_start(self) -> None:
        for child in (self.book, self.watcher, self.processor, self.deliverer):
            if child is self.processor and self.settings.clock == "event":
                # event time: no transition is read before silences and inhibitions have caught up, so no
                # flush is ever put off to a later transition (one input, one set of notifications)
                await self.book.caught_up.wait()
                await self.watcher.caught_up.wait()
            if child is not None:
                await self.add_runtime_dependency(child)
