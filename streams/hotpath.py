"""The hot path: a transactional consume -> process -> produce loop with partitioned, changelogged state.

Why not a plain Faust agent: measured here, a Faust agent costs ~250 µs of CPU per event,
while aiokafka's ``getmany`` + orjson costs a few µs.  So the per-signal loop is a batch
consumer running as a ``mode.Service`` inside the Faust app (Faust keeps the app, the web
server, the low-rate agents and their tables); state and exactly-once follow Kafka Streams'
design, on plain Kafka primitives:

* **Co-partitioned state.**  Input topics share one partition count and are assigned with the
  range assignor, so partition *p* of every input lands on one consumer.  The state of input
  partition *p* is a ``Store`` whose changes go to partition *p* of a compacted changelog
  topic; on assignment it is restored from there (read_committed) before any record is read.
* **Exactly once.**  Outputs (alerts, derived samples, dead letters), the changelog writes of
  every key changed since the last commit, and the consumer offsets are sent in ONE Kafka
  transaction every ``commit_interval`` seconds.  A crash before the commit aborts all of it:
  the next owner restores the state as of the last commit and re-reads from the committed
  offset, so the same outputs are produced again exactly once (stages are deterministic
  functions of records and event time).  A stop commits what was processed, then begins no
  transaction: what is read after that final commit is redone by the next owner the same way
  (``on_stop``).  Readers of the output topics use read_committed.
  Zombie fencing is by ``transactional.id`` (one per worker), so a worker restarted under the
  same id fences its predecessor.  Weak spot: aiokafka cannot fence a zombie of a *different*
  worker id after a rebalance (no KIP-447 group-metadata fencing); with ``session.timeout``
  much shorter than the transaction timeout this window is small, not zero.
* **Failure isolation.**  A record that is not valid kubesight JSON, or that makes a stage
  raise, goes to the dead-letter topic with the reason (inside the same transaction) and the
  loop continues.  A failed commit aborts the transaction and rewinds: state is re-restored
  from the changelog and the consumer seeks back to the committed offsets.
* **Event time.**  Each partition's watermark (the largest record time seen) is kept in its
  store; ``Stage.tick(now=watermark)`` runs whenever the watermark crosses a ``tick_interval``
  boundary, so timers (``for``, absent, resolve) are deterministic in replays.  With
  ``clock="wall"`` idle partitions are also ticked with the wall clock (live clusters).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
from collections.abc import Callable, MutableMapping, Sequence
from typing import Protocol

import mode
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError

from core.kafkaclient import client_config, key_hash, send_in_batches
from core.records import (
    RECORD_LIMIT,
    TIME_SECONDS,
    VERSION,
    WIRE,
    Alert,
    Event,
    RecordError,
    Sample,
    WireEvent,
    WireSample,
    build,
    deadletter,
    deadletter_key,
    oversize,
    peek,
    wire_time,
)
from core.settings import Settings
from streams.follow import seek_committed
from streams.freeze import FreezeWatch
from streams.state import Store

log = logging.getLogger("kubesight.hotpath")

WATERMARK = "__watermark__"
_INF = float("inf")
Emit = Callable[..., None]  # emit(logical_topic, key, value, partition=None)
GC_YOUNG = 50_000  # allocations between two passes over the youngest objects (CPython's default: 700)


def tune_gc() -> None:
    """Fit the cyclic garbage collector to a consumer loop, once the process has started.

    Everything loaded so far (modules, rule packs, detectors, clients) is frozen out of the collector's
    passes (``gc.freeze``: a full pass over it took ~27 ms, once or twice a bench run), and the youngest
    generation is collected every ``GC_YOUNG`` allocations instead of 700: a batch of 5,000 records
    allocates far more than that, so with the default most passes found only live records.  Measured
    on ``bench pipeline``: the collector's share of (c) went from ~0.6-1.1 to ~0.25-0.3 µs per record at
    10,000; at 50,000 (the count is of objects still alive, and a batch's records die with the batch) 0.19 ->
    0.05 µs per event over 200k recorded events, one pass of ~9 ms instead of ~30 of 1-2 ms.
    Memory freed by reference counting (nearly all of the hot path's) is freed as before.
    """
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if young < GC_YOUNG:
        gc.set_threshold(GC_YOUNG, middle, old)


class Stage(Protocol):
    """What the hot path runs per record; pure code behind it sees ``state`` as a mapping."""

    def process(self, rec: Event | Sample, state: MutableMapping, emit: Emit) -> None: ...

    def tick(self, now: float, state: MutableMapping, emit: Emit) -> None: ...


class Pipeline:
    """Runs stages in order; one record's failure in one stage is isolated by the caller.

    A stage may say which record types it takes (``accepts = (Sample,)``); ``dispatch`` maps each
    record type to the bound ``process`` methods of the stages that take it, so the hot path makes
    one call per stage that has something to do (an event never enters the derived stage).

    A stage may also say which records it wants by their *routing key* (``route_key``: a sample's
    name, an event's ``(source, reason)``) with ``wants(record type, key)``, and name the object its
    answers depend on as ``routing`` (the rule engine in force: a reload swaps it).  ``route`` gives the
    process methods for one key, memoised in ``routes()`` while every stage's ``routing`` stays the
    same, so most signals (no derived signal, no rule) cost a dict probe and no stage call.
    """

    def __init__(self, stages: Sequence[Stage]):
        self.stages = list(stages)
        self.dispatch = {t: tuple(s.process for s in self.stages if t in getattr(s, "accepts", (t,)))
                         for t in (Event, Sample, Alert)}
        self._ticks = tuple(s.tick for s in self.stages)
        self._routes: dict = {}
        self._routing: tuple = tuple(getattr(s, "routing", None) for s in self.stages)

    def process(self, rec, state, emit) -> None:
        procs = self.dispatch.get(type(rec))
        for p in procs if procs is not None else [s.process for s in self.stages]:
            p(rec, state, emit)

    def tick(self, now, state, emit) -> None:
        for t in self._ticks:
            t(now, state, emit)

    def routes(self) -> dict:
        """The memo of ``route`` (routing key -> process methods), emptied when a stage's ``routing`` changed."""
        routing = tuple(getattr(s, "routing", None) for s in self.stages)
        if routing != self._routing:
            self._routing = routing
            self._routes = {}
        return self._routes

    def route(self, rtype: type, key) -> tuple:
        """The process methods, in stage order, a record of ``rtype`` with routing ``key`` goes to (memoised)."""
        procs = tuple(s.process for s in self.stages if rtype in getattr(s, "accepts", (rtype,))
                      and (not hasattr(s, "wants") or s.wants(rtype, key)))
        if len(self._routes) >= 100_000:  # names and reasons are open-ended: keep the memo bounded
            self._routes.clear()
        self._routes[key] = procs
        return procs


class _Listener(ConsumerRebalanceListener):
    def __init__(self, proc: TransactionalProcessor):
        self.proc = proc

    async def on_partitions_revoked(self, revoked):
        await self.proc._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned):
        await self.proc._on_assigned(assigned)


class TransactionalProcessor(mode.Service):
    """One consumer group over ``inputs``; state per partition; one transaction per commit interval."""

    def __init__(self, settings: Settings, bootstrap: str, name: str, inputs: Sequence[str], stage: Stage,
                 *, worker_id: str = "0", tick_interval: float = 5.0, urgent: Sequence[str] = (),
                 urgent_interval: float = 0.1, heartbeat: Callable[[Emit], None] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.heartbeat = heartbeat  # called on every turn of the loop (it says when it is due): streams.stages.Watchdog
        self.settings = settings
        self.bootstrap = bootstrap
        self.name = name
        self.inputs = [settings.topic(t) for t in inputs]
        self.stage = stage
        self.group_id = f"{settings.app_id}-{name}"
        self.changelog = settings.topic(f"{name}-changelog" if name != "signals" else "state-changelog")
        self.transactional_id = f"{settings.app_id}-{name}-{worker_id}"
        self.tick_interval = tick_interval
        # outputs someone waits for (alerts: the path to the pager) commit within urgent_interval
        self.urgent, self.urgent_interval, self._urgent = frozenset(urgent), urgent_interval, False
        self.stores: dict[int, Store] = {}
        self._offsets: dict[TopicPartition, int] = {}
        self._outputs: list[tuple[str, bytes | None, bytes, int | None]] = []
        self._hashes: dict[bytes, int] = {}  # key -> its key_hash (see _place)
        self._lock = asyncio.Lock()
        self._restore_lock = asyncio.Lock()
        self._last_commit = time.monotonic()
        self._last_wall_tick = 0.0
        self._inflight: asyncio.Future | None = None  # the transaction being committed while records flow on
        self._generation = 0  # +1 on every rewind: a batch fetched before it is dropped (re-read from the commit)
        self._closing = False  # set by on_stop after its final commit: no transaction begins after it
        self._closed = False  # set by on_stop as it closes the producer (a transaction still open is closed under)
        self.stats = {"in": 0, "out": 0, "deadletter": 0, "commits": 0, "aborts": 0, "restored": 0,
                      "late": 0, "future": 0}
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        # a freeze as long as the session (6 s, heartbeats every 1 s) may have cost the partitions: no commit then
        self.freeze = FreezeWatch.for_session(6.0, 1.0)

    # ------------------------------------------------------------------ lifecycle
    async def on_start(self) -> None:
        s = self.settings
        tune_gc()
        self.producer = AIOKafkaProducer(
            **client_config(self.bootstrap, "aiokafka"), transactional_id=self.transactional_id, enable_idempotence=True,
            acks="all", linger_ms=5, max_batch_size=512 * 1024, client_id=self.transactional_id,
            transaction_timeout_ms=60000)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            **client_config(self.bootstrap, "aiokafka"), group_id=self.group_id, client_id=self.transactional_id,
            enable_auto_commit=False, isolation_level="read_committed", auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,), max_partition_fetch_bytes=2 << 20,
            fetch_max_bytes=16 << 20, session_timeout_ms=6000, heartbeat_interval_ms=1000,
            max_poll_interval_ms=120000, fetch_max_wait_ms=100)
        await self.consumer.start()
        self.consumer.subscribe(self.inputs, listener=_Listener(self))
        log.info("%s: consuming %s as %s (max batch %d)", self.name, self.inputs, self.group_id, s.max_batch)

    async def on_stop(self) -> None:
        """Commit what was processed, then close the consumer and the producer.

        mode stops the service's tasks only after ``on_stop``: the loop (and a subclass's timers) go on meanwhile and
        may begin a transaction, during the final commit or after it.  Closed under it, that transaction failed with
        ``ProducerClosed`` and was logged as an ERROR (an audit: 1 SIGTERM in 3 during a replay).  So after the
        final commit no transaction begins (``_commit`` returns; what was read since is not committed, and the next
        owner redoes it from the last commit, as after a crash), and one already begun is waited for, up to
        ``shutdown_timeout``, before the producer closes.  One closed under even so says so at INFO (see ``_commit``).
        """
        try:
            await self.commit_now()
        except Exception as exc:  # stopping anyway; the next owner re-reads from the last commit
            log.warning("%s: final commit failed (%s); uncommitted work will be redone", self.name, exc)
        self._closing = True
        try:  # the lock is held for the whole of a transaction (_commit)
            await asyncio.wait_for(self._lock.acquire(), self.settings.shutdown_timeout)
        except TimeoutError:
            pass
        else:
            self._lock.release()
        self._closed = True
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def commit_now(self) -> None:
        """Commit everything processed so far without waiting for the commit interval (what a stop does):
        the transaction in flight first, then one with what came after it."""
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight
        if self.consumer is not None and self.producer is not None:
            await self._commit()

    @mode.Service.task
    async def _beat(self) -> None:
        await self.freeze.run()

    @mode.Service.task
    async def _run(self) -> None:
        assert self.consumer is not None
        max_batch = self.settings.max_batch
        while not self.should_stop:
            generation = self._generation
            batches = await self.consumer.getmany(timeout_ms=200, max_records=max_batch)
            if batches:
                # aiokafka may hand out records before the assignment callback has restored
                # state: restore here first (once per partition), never process without state
                await self._restore_partitions(sorted({tp.partition for tp in batches}))
                if generation != self._generation:  # a failed commit rewound meanwhile: re-read from the commit
                    batches = {}
                for tp, msgs in batches.items():
                    self._process_batch(tp, msgs)
                # getmany returns buffered records without yielding: give the transaction in flight (its round trips)
                # and the fetcher a turn between batches, or a backlog holds the commit back until it is drained
                await asyncio.sleep(0)
            if self.settings.clock == "wall" and time.monotonic() - self._last_wall_tick >= 1.0:
                # idle partitions tick on the wall clock even while others are busy; a partition that
                # just got records, or has more waiting, is driven by their event time (a backlog is never ticked
                # ahead of it: a worker behind its input resolved on the wall clock what its next record fired again)
                self._last_wall_tick = time.monotonic()
                self._wall_tick(skip={tp.partition for tp in batches} | await self._behind())
            if self.heartbeat is not None:  # a loop that stalls stops beating
                self.heartbeat(self._emit)
            inflight = self._inflight
            if inflight is not None and inflight.done():
                self._inflight = None
                inflight.result()  # a failure other than Kafka's (those abort and rewind) stops the loop, as before
            interval = self.urgent_interval if self._urgent else self.settings.commit_interval
            if self._inflight is None and self._outputs_pending() and time.monotonic() - self._last_commit >= interval:
                # the transaction runs beside the loop: its records, changelog and offsets are taken at once
                # (see _commit), records read meanwhile go to the next one, so consuming never waits for the
                # broker's round trips
                self._inflight = asyncio.ensure_future(self._commit())

    # ------------------------------------------------------------------ processing
    def _process_batch(self, tp: TopicPartition, msgs) -> None:
        store = self.stores[tp.partition]
        stage = self.stage
        # the stages' bound process methods per routing key (see Pipeline.route): one dict probe per record,
        # one call per stage that wants it
        if hasattr(stage, "routes"):
            routes, route = stage.routes(), stage.route
        else:
            routes, every = {}, (stage.process,)

            def route(rtype, key):
                routes[key] = every
                return every
        emit = self._emit
        wm = wm0 = store.get(WATERMARK, 0.0)
        set_item = dict.__setitem__
        tick_every = self.tick_interval
        next_tick = (wm // tick_every + 1) * tick_every if wm else None
        late = self.settings.allowed_lateness
        floor = -_INF if late is None else wm - late
        ahead, limit = self.settings.max_future, "max_future"
        if late is not None and (ahead is None or ahead > late):
            # a record further ahead than allowed_lateness, taken, would make every on-time signal of its partition
            # late (a source whose clock is 20 minutes fast had them all dead-lettered): it is refused instead
            ahead, limit = late, "allowed_lateness, below max_future"
        ceiling = _INF if ahead is None else time.time() + ahead
        wire, times, when, decode_error = WIRE.decode, TIME_SECONDS, wire_time, msgspec.MsgspecError
        for m in msgs:
            # checked as ``peek`` checks; the record itself is built only for a stage that wants it.  The common
            # case inline (a current sample or event: a time text seen before costs a dict probe, a scrape's
            # samples share one), ``peek`` for all else, with its checks and reasons (~0.1-0.2 µs a record less)
            tr = None
            try:
                w = wire(m.value)
                tw = type(w)
                if tw is WireSample and w.v == VERSION:
                    t = times.get(w.time)
                    if t is None:
                        t = when(w.time)
                    tr, key = Sample, w.name
                elif tw is WireEvent and w.v == VERSION and w.count >= 0:
                    t = times.get(w.time)
                    if t is None:
                        t = when(w.time)
                    tr, key = Event, (w.source, w.reason)
            except (decode_error, TypeError):  # TypeError: no value at all (a tombstone), which peek names
                w = None  # peek decodes it again (this one may be the record before's, if decoding failed)
            if tr is None:
                try:
                    tr, key, t, w = peek(m.value, w)
                except RecordError as exc:
                    self._reject(emit, str(exc), m)
                    continue
            if t < floor and tr is not Alert:
                # its windows have closed at this partition's event time: evaluated now it would count for
                # nothing, so it is counted and kept with the reason instead (a replay belongs in a fresh prefix)
                self.stats["late"] += 1
                self._reject(emit, f"late: {wm - t:.0f}s behind its partition's event time "
                                   f"(allowed_lateness {late:g}s)", m)
                continue
            if t > ceiling:
                # ahead of the wall clock: taken, it would move this partition's event time (kept in the changelog)
                # past every signal to come, and each would then be dead-lettered as late
                self.stats["future"] += 1
                self._reject(emit, f"future: {t - ceiling + ahead:.0f}s ahead of the worker's clock "
                                   f"({limit} {ahead:g}s)", m)
                continue
            procs = routes.get(key)
            if procs is None:
                procs = route(tr, key)
            if procs:
                rec = build(w, t)
                try:
                    for process in procs:
                        process(rec, store, emit)
                except Exception as exc:  # isolate: one bad record or series never stops the partition
                    log.exception("%s: stage failed on %s[%d]@%d", self.name, m.topic, m.partition, m.offset)
                    self._reject(emit, f"stage error: {type(exc).__name__}: {exc}", m)
                    continue  # a rejected record does not move the partition's event time
            if t > wm:
                wm = t
                if late is not None:
                    floor = wm - late
                if next_tick is None:
                    next_tick = (wm // tick_every + 1) * tick_every
                elif wm >= next_tick:
                    set_item(store, WATERMARK, wm)  # what the tick reads; the changelog learns it once, below
                    self._tick(store, wm, emit)
                    next_tick = (wm // tick_every + 1) * tick_every
        if wm != wm0 or WATERMARK not in store:
            store[WATERMARK] = wm
        self.stats["in"] += len(msgs)
        self._offsets[tp] = msgs[-1].offset + 1

    def _tick(self, store: Store, now: float, emit: Emit) -> None:
        try:
            self.stage.tick(now, store, emit)
        except Exception:
            log.exception("%s: tick failed at %s", self.name, now)

    async def _behind(self) -> set[int]:
        """The assigned partitions with records this worker has not read yet (its position before the last stable
        offset, or that offset not known yet)."""
        consumer, out = self.consumer, set()
        assert consumer is not None
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp)
            if end is None or await consumer.position(tp) < end:
                out.add(tp.partition)
        return out

    def _wall_tick(self, skip: set[int] = frozenset()) -> None:
        now = time.time()
        for p, store in self.stores.items():
            if p not in skip and now - store.get(WATERMARK, 0.0) >= self.tick_interval:
                self._tick(store, now, self._emit)

    def _emit(self, logical: str, key: bytes | None, value: bytes, partition: int | None = None) -> None:
        """What stages call to produce: buffered until the next transaction commits it."""
        if logical in self.urgent:
            self._urgent = True
        if value is not None and len(value) + (len(key) if key else 0) > RECORD_LIMIT:
            # the broker would refuse it for good: the transaction would abort, rewind and fail again (the partition
            # stops); what takes its place says where it was going and keeps its head
            log.error("%s: an output to %s of %d bytes is too large for Kafka: dead-lettered instead", self.name,
                      logical, len(value))
            self.stats["deadletter"] += 1
            value = deadletter(oversize(key, value) or "", value, origin=f"worker/{self.name}", key=key,
                               topic=self.settings.topic(logical))
            logical, key, partition = "deadletter", deadletter_key(key), None
        self._outputs.append((self.settings.topic(logical), key, value, partition))

    def _reject(self, emit: Emit, reason: str, m) -> None:
        self.stats["deadletter"] += 1
        emit("deadletter", deadletter_key(m.key), deadletter(reason, m.value, origin=f"worker/{self.name}", key=m.key,
                                             topic=m.topic, partition=m.partition, offset=m.offset))

    def _outputs_pending(self) -> bool:
        """Records read or outputs made and not committed yet (a transaction in flight counts)."""
        return bool(self._offsets or self._outputs) or (self._inflight is not None and not self._inflight.done())

    # ------------------------------------------------------------------ transactions
    async def _commit(self) -> None:
        async with self._lock:
            if self._closing:  # after the stop's final commit (on_stop): the next owner redoes what came since
                return
            if not (self._offsets or self._outputs) and not any(s.dirty for s in self.stores.values()):
                return
            assert self.producer is not None
            # one consistent cut, taken before the first await (records may be processed while the
            # transaction is in flight): the outputs, the state changes and the offsets of the same records
            outputs, self._outputs = self._outputs, []
            self._urgent = False
            offsets, self._offsets = self._offsets, {}
            changelog = self.changelog
            changes = [(changelog, k, v, p) for p, store in self.stores.items() for k, v in store.flush_items()]
            try:
                await self.producer.begin_transaction()
                await self._send_all(outputs)
                await self._send_all(changes)
                if offsets:
                    await self.producer.send_offsets_to_transaction(offsets, self.group_id)
                # after a freeze as long as the group session (streams.freeze), before or while this transaction was
                # in flight, wait for the heartbeat's word before committing: if the group moved on meanwhile, the
                # consumer revokes the partitions, _on_revoked drops the uncommitted work (the new owner redoes it from
                # the last commit) and this transaction is aborted; a loop merely blocked that long commits late
                if self.freeze.in_doubt():
                    generation = self._generation
                    while self.freeze.in_doubt():
                        await asyncio.sleep(0.1)
                    if generation != self._generation:  # revoked meanwhile and its work dropped: not this commit
                        await self.producer.abort_transaction()
                        self.stats["aborts"] += 1
                        log.warning("%s: a transaction in flight during a freeze was aborted (partitions revoked)",
                                    self.name)
                        return
                await self.producer.commit_transaction()
            except KafkaError as exc:
                self.stats["aborts"] += 1
                if self._closed:
                    # the stop closed the producer under it, after waiting shutdown_timeout (on_stop): the process's own
                    # doing, not a failure. Nothing of it is committed (the broker aborts it when this transactional id
                    # starts again, or at its timeout), and the next owner redoes its records from the last commit; the
                    # consumer is closing too, so there is nothing to rewind
                    log.info("%s: stopping: the open transaction is aborted, its records are redone by the next owner",
                             self.name)
                    return
                log.error("%s: transaction failed (%s): aborting and rewinding to the last commit", self.name, exc)
                try:
                    await self.producer.abort_transaction()
                except KafkaError:
                    pass
                await self._rewind()
                return
            self.stats["out"] += len(outputs)
            self.stats["commits"] += 1
            self._last_commit = time.monotonic()

    async def _send_all(self, records) -> None:
        """Send (topic, key, value, partition or None) records inside the open transaction (``send_in_batches``).
        A record without a partition goes where ``send`` would put it (the producer's partitioner on its key)."""
        producer = self.producer
        assert producer is not None
        parts = {t: sorted(await producer.partitions_for(t)) for t in {r[0] for r in records if r[3] is None}}
        place = self._place

        def placed():
            for topic, key, value, partition in records:
                if partition is None:
                    ps = parts[topic]
                    # no key: the producer's partitioner picks one at random
                    partition = random.choice(ps) if key is None else place(key, ps)
                yield topic, key, value, partition

        # every batch acknowledged before the commit: a batch the broker refuses (a topic policy, an ACL, a size
        # limit) fails here, and the transaction aborts and rewinds; commit_transaction alone does not fail for it
        sent = await send_in_batches(producer, placed())
        if sent:
            await asyncio.gather(*sent)

    def _place(self, key: bytes, partitions: Sequence[int]) -> int:
        """``core.kafkaclient.partition_of(key, partitions)``, the key's hash remembered: murmur2 in Python is ~4 µs a key, and keys
        repeat (an alert's transitions, a derived series, a group's alert-groups record and notifications)."""
        h = self._hashes.get(key)
        if h is None:
            if len(self._hashes) >= 100_000:
                self._hashes.clear()
            h = self._hashes[key] = key_hash(key)
        return partitions[h % len(partitions)]

    async def _rewind(self) -> None:
        """Throw away uncommitted state and re-read from the committed offsets."""
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        self._generation += 1
        self.stores.clear()
        self._outputs.clear()
        self._offsets.clear()
        await self._restore_partitions(sorted({tp.partition for tp in assigned}))
        for tp in assigned:
            await seek_committed(self.consumer, tp)

    async def _on_revoked(self, revoked) -> None:
        if self.freeze.in_doubt():
            # revoked right after a freeze as long as the session: the group moved on while this process was stopped,
            # and another member may have done this work already. It is dropped, not committed (aiokafka's offsets
            # carry no generation check): the next owner, maybe this process again, redoes it from the last commit
            log.warning("%s: partitions revoked after a freeze; dropping uncommitted work", self.name)
            self._generation += 1
            self._outputs.clear()
            self._offsets.clear()
            self.stores.clear()
            self.stats["aborts"] += 1
        else:
            await self._commit()
        still = {tp.partition for tp in (self.consumer.assignment() if self.consumer else ())} - {
            tp.partition for tp in revoked}
        for p in list(self.stores):
            if p not in still:
                del self.stores[p]

    async def _on_assigned(self, assigned) -> None:
        await self._restore_partitions(sorted({tp.partition for tp in assigned}))
        log.info("%s: assigned partitions %s", self.name, sorted({tp.partition for tp in assigned}))

    async def _restore_partitions(self, partitions: list[int]) -> None:
        async with self._restore_lock:
            partitions = [p for p in partitions if p not in self.stores]
            if partitions:
                await self._restore_now(partitions)

    async def _restore_now(self, partitions: list[int]) -> None:
        c = AIOKafkaConsumer(**client_config(self.bootstrap, "aiokafka"), enable_auto_commit=False,
                             isolation_level="read_committed", client_id=f"{self.transactional_id}-restore")
        await c.start()
        try:
            tps = [TopicPartition(self.changelog, p) for p in partitions]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            ends = await c.end_offsets(tps)
            stores = {p: Store() for p in partitions}
            remaining = {tp for tp in tps if ends[tp] > 0}
            n = 0
            while remaining:
                batch = await c.getmany(*remaining, timeout_ms=500, max_records=10000)
                for tp, msgs in batch.items():
                    st = stores[tp.partition]
                    for m in msgs:
                        if m.key is not None:
                            st.restore(m.key, m.value)
                            n += 1
                for tp in list(remaining):
                    if await c.position(tp) >= ends[tp]:
                        remaining.discard(tp)
            self.stores.update(stores)
            self.stats["restored"] += n
            if n:
                log.info("%s: restored %d changelog records for partitions %s", self.name, n, partitions)
        finally:
            await c.stop()
