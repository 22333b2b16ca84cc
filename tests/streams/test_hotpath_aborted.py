"""The hot path under read_committed, on the real broker, taking at most 2 records a getmany: records of aborted transactions are never processed, control
markers are skipped, a bad record is dead-lettered with its topic, partition and offset, and the committed offsets
are those after the last record processed."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from core.records import Sample, encode
from streams.hotpath import Pipeline, TransactionalProcessor
from tests.kafkatools import read_to_end, until, write_transaction

pytestmark = pytest.mark.kafka


class Collect:
    """A stage that keeps the names of the samples it was given."""

    accepts = (Sample,)

    def __init__(self):
        self.names: list[str] = []

    def process(self, rec, state, emit) -> None:
        self.names.append(rec.name)

    def tick(self, now, state, emit) -> None:
        pass


def _sample(name: str, t: float) -> bytes:
    return encode(Sample(name, 1.0, t, {"job": "x"}))


def test_hot_path_skips_aborted_transactions_and_dead_letter_with_their_position(settings, kafka_bootstrap):
    topic = settings.topic("samples")
    write_transaction(kafka_bootstrap, topic, [_sample("a", 1000.0), b"{not json"], True, "hp-1")
    write_transaction(kafka_bootstrap, topic, [_sample("aborted", 1001.0), b"{aborted bad"], False, "hp-2")
    write_transaction(kafka_bootstrap, topic, [_sample("b", 1002.0)], True, "hp-3")
    # a tombstone (no value at all) crashed the loop with a TypeError on every restart: the partition stopped for good
    write_transaction(kafka_bootstrap, topic, [None, _sample("c", 1003.0)], True, "hp-4")
    stage = Collect()
    sizes: list[int] = []

    async def run():
        # at most 2 records a getmany: a fetch is taken in slices, and the position must follow each one
        proc = TransactionalProcessor(settings.model_copy(update={"max_batch": 2}), kafka_bootstrap, "signals",
                                      ["events", "samples"], Pipeline([stage]), worker_id="hp")
        inner = proc._process_batch

        def process_batch(tp, msgs):
            sizes.append(len(msgs))
            inner(tp, msgs)

        proc._process_batch = process_batch
        await proc.start()
        try:
            await until(lambda: proc.stats["in"] >= 5 and not proc._outputs_pending(), lambda: proc.stats)
        finally:
            await proc.stop()
        return proc.stats

    stats = asyncio.run(run())
    assert stage.names == ["a", "b", "c"]
    assert stats["in"] == 5 and stats["deadletter"] == 2
    assert max(sizes) <= 2 and sum(sizes) == 5
    dead = [orjson.loads(r.value) for r in read_to_end(kafka_bootstrap, settings.topic("deadletter"))]
    assert len(dead) == 2
    assert dead[0]["payload"] == "{not json" and dead[0]["reason"].startswith("not valid JSON")
    assert dead[0]["where"] == {"topic": topic, "partition": 0, "offset": 1}
    assert dead[1]["payload"] is None and dead[1]["reason"].startswith("no value (a tombstone)")
    assert dead[1]["where"] == {"topic": topic, "partition": 0, "offset": 8}
    c = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"{settings.app_id}-signals",
                      enable_auto_commit=False)
    try:
        # records at 0, 1; marker 2; aborted 3, 4; marker 5; "b" at 6, marker 7; the tombstone 8, "c" 9, marker 10:
        # the commit is the offset after "c"
        assert c.committed(TopicPartition(topic, 0)) == 10
    finally:
        c.close()


def test_after_a_freeze_as_long_as_the_session_the_hot_path_waits_and_a_revocation_drops_the_work(
        settings, kafka_bootstrap):
    """A process frozen past its group session (SIGSTOP, a paused container) may have lost its partitions to another
    member, and aiokafka's transactional offsets carry no generation check (an audit saw 3-88 notifications committed
    twice by a resumed alerting child). While in doubt it does not commit; if the partitions are revoked meanwhile
    the uncommitted work is dropped (the next owner redoes it), else it is committed once the doubt is over."""

    topic = settings.topic("samples")
    stage = Collect()

    async def run():
        proc = TransactionalProcessor(settings, kafka_bootstrap, "signals", ["events", "samples"], Pipeline([stage]),
                                      worker_id="fz")
        await proc.start()
        try:
            await until(lambda: proc.consumer.assignment(), lambda: proc.stats)
            # as after a freeze (streams.freeze); the doubt is ended by hand below, so a slow machine cannot end it
            # before the check
            proc.freeze.doubt(600.0)
            write_transaction(kafka_bootstrap, topic, [b"{frozen bad"], True, "fz-1")
            await until(lambda: proc.stats["deadletter"] >= 1, lambda: proc.stats)
            await asyncio.sleep(0.5)  # commits are due every 0.5 s: none may happen in doubt
            assert read_to_end(kafka_bootstrap, settings.topic("deadletter")) == [] and proc.stats["commits"] == 0
            proc.freeze.doubt(0.0)
            await until(lambda: not proc._outputs_pending() and not proc.freeze.in_doubt(), lambda: proc.stats)
            # a revocation in doubt drops what is not committed, and commits nothing
            proc.freeze.doubt(600.0)
            write_transaction(kafka_bootstrap, topic, [b"{second bad"], True, "fz-2")
            await until(lambda: proc.stats["deadletter"] >= 2, lambda: proc.stats)
            await proc._on_revoked(set(proc.consumer.assignment()))
            assert (proc._outputs, proc._offsets, proc.stats["aborts"]) == ([], {}, 1)
            proc.freeze.doubt(0.0)
        finally:
            await proc.stop()

    asyncio.run(run())
    dead = [orjson.loads(r.value) for r in read_to_end(kafka_bootstrap, settings.topic("deadletter"))]
    assert [d["payload"] for d in dead] == ["{frozen bad"]  # committed once, after the doubt; the second dropped


def test_a_batch_the_broker_refuses_aborts_the_transaction_and_nothing_is_committed(kafka_bootstrap):
    """A dead letter the broker refuses (here a compacted deadletter topic, which refuses records without a key): the
    transaction was committed all the same, the input offset with it, and the dead letter was lost. Every batch's
    acknowledgement is now awaited before the commit, and a refusal aborts and rewinds."""
    import uuid

    from kafka.admin import KafkaAdminClient, NewTopic

    from core.settings import Settings
    from core.topics import ensure_topics

    tag = uuid.uuid4().hex[:8]
    s = Settings(kafka=kafka_bootstrap, topic_prefix=f"t{tag}-", app_id=f"ks-{tag}", partitions=4)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(s.topic("deadletter"), 4, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        admin.close()
    ensure_topics(s, kafka_bootstrap, only=("events", "samples", "state-changelog"))
    write_transaction(kafka_bootstrap, s.topic("samples"), [b"{keyless bad"], True, "rf-1", key=None)

    async def run():
        proc = TransactionalProcessor(s, kafka_bootstrap, "signals", ["events", "samples"], Pipeline([Collect()]),
                                      worker_id="rf")
        await proc.start()
        try:
            await until(lambda: proc.stats["aborts"] >= 1, lambda: proc.stats)
        finally:
            await proc.stop()
        return proc.stats

    stats = asyncio.run(run())
    assert stats["commits"] == 0
    c = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"{s.app_id}-signals", enable_auto_commit=False)
    try:
        assert c.committed(TopicPartition(s.topic("samples"), 0)) is None  # the input is read again by the next owner
    finally:
        c.close()


def test_a_freeze_inside_a_transaction_then_a_revocation_aborts_it(settings, kafka_bootstrap):
    """Frozen while a transaction was in flight (its cut taken, awaiting the broker): it waits for the heartbeat's word
    before committing, and a revocation meanwhile aborts it (the new owner redoes the work)."""

    topic = settings.topic("samples")

    async def run():
        proc = TransactionalProcessor(settings, kafka_bootstrap, "signals", ["events", "samples"], Pipeline([Collect()]),
                                      worker_id="fi")
        await proc.start()
        try:
            await until(lambda: proc.consumer.assignment(), lambda: proc.stats)
            send_offsets = proc.producer.send_offsets_to_transaction

            async def frozen_here(offsets, group_id):  # the freeze happens while the offsets are on their way
                await send_offsets(offsets, group_id)
                proc.freeze.doubt(1.0)
                asyncio.get_running_loop().call_later(0.3, lambda: asyncio.ensure_future(
                    proc._on_revoked(set(proc.consumer.assignment()))))

            proc.producer.send_offsets_to_transaction = frozen_here
            write_transaction(kafka_bootstrap, topic, [b"{in flight bad"], True, "fi-1")
            await until(lambda: proc.stats["aborts"] >= 1, lambda: proc.stats)
            proc.producer.send_offsets_to_transaction = send_offsets
        finally:
            await proc.stop()
        return proc.stats

    stats = asyncio.run(run())
    assert stats["commits"] == 0
    assert read_to_end(kafka_bootstrap, settings.topic("deadletter")) == []


class Echo:
    """A stage that writes one alerts-topic record per sample, of ``size`` bytes for the sample named "big"."""

    accepts = (Sample,)

    def process(self, rec, state, emit) -> None:
        size = 1_200_000 if rec.name == "big" else 10
        emit("alerts", rec.name.encode(), b'"' + b"x" * (size - 2) + b'"')

    def tick(self, now, state, emit) -> None:
        pass


def test_an_output_over_the_brokers_limit_is_dead_lettered_and_the_partition_goes_on(settings, kafka_bootstrap):
    """An output Kafka refuses for good (here 1.2 MB against the broker's 1 MiB max.message.bytes) aborted the
    transaction, rewound and failed again: the partition stopped for good. It now becomes a dead letter saying where it
    was going (its first 64 KiB kept) and the records after it go on."""
    topic = settings.topic("samples")
    write_transaction(kafka_bootstrap, topic, [_sample("a", 1000.0), _sample("big", 1001.0), _sample("b", 1002.0)],
                      True, "big-1")

    async def run():
        proc = TransactionalProcessor(settings, kafka_bootstrap, "signals", ["events", "samples"], Pipeline([Echo()]),
                                      worker_id="big")
        await proc.start()
        try:
            await until(lambda: proc.stats["in"] >= 3 and not proc._outputs_pending(), lambda: proc.stats)
        finally:
            await proc.stop()
        return proc.stats

    stats = asyncio.run(run())
    assert stats["aborts"] == 0 and stats["deadletter"] == 1
    assert sorted(r.key for r in read_to_end(kafka_bootstrap, settings.topic("alerts"))) == [b"a", b"b"]
    dead = [orjson.loads(r.value) for r in read_to_end(kafka_bootstrap, settings.topic("deadletter"))]
    assert len(dead) == 1 and dead[0]["key"] == "big"
    assert dead[0]["reason"] == "record of 1200003 bytes is over the 1000000 bytes kubesight sends to Kafka"
    assert dead[0]["where"] == {"topic": settings.topic("alerts")} and dead[0]["size"] == 1_200_000


class Slow:
    """Counts the samples of each partition and notes every tick: (partition's samples processed so far, now)."""

    accepts = (Sample,)

    def __init__(self):
        self.seen: dict[str, int] = {}
        self.ticks: list[tuple[str, int, float]] = []

    def process(self, rec, state, emit) -> None:
        import time

        time.sleep(0.004)  # a worker slower than its input: a backlog for a few seconds
        self.seen[rec.labels["p"]] = self.seen.get(rec.labels["p"], 0) + 1
        state["p"] = rec.labels["p"]

    def tick(self, now, state, emit) -> None:
        if "p" in state:
            self.ticks.append((state["p"], self.seen.get(state["p"], 0), now))


def test_with_the_wall_clock_a_partition_with_a_backlog_is_not_ticked_ahead_of_it(settings, kafka_bootstrap):
    """clock: wall ticks idle partitions on the wall clock. A partition with records still waiting was ticked too
    whenever a fetch returned another partition's records first: a worker behind its input resolved an alert on the
    wall clock and fired it again with its next record, over and over (an audit). Only a partition read to its end
    is idle now."""
    import time

    topic = settings.topic("samples")
    t0 = time.time() - 300  # five minutes old: within allowed_lateness, and far behind the wall clock
    n = 100
    for p in (0, 1):
        write_transaction(kafka_bootstrap, topic,
                          [encode(Sample("m", 1.0, t0 + i * 0.5, {"p": str(p), "i": str(i)})) for i in range(n)],
                          True, f"wb-{p}", partition=p)
    stage = Slow()

    async def run():
        proc = TransactionalProcessor(settings.model_copy(update={"max_batch": 10, "clock": "wall"}), kafka_bootstrap,
                                      "signals", ["events", "samples"], Pipeline([stage]), worker_id="wb")
        await proc.start()
        getmany, turns = proc.consumer.getmany, [0]

        async def fetch_in_flight_every_other_turn(*args, **kwargs):  # as while the next fetch is on its way
            turns[0] += 1
            if turns[0] % 2:
                await asyncio.sleep(0.2)  # getmany's timeout: the wall clock's turn mostly comes in one of these
                return {}
            return await getmany(*args, **kwargs)

        proc.consumer.getmany = fetch_in_flight_every_other_turn
        try:
            await until(lambda: sum(stage.seen.values()) >= 2 * n and not proc._outputs_pending(),
                        lambda: (stage.seen, proc.stats), timeout=60)
            await until(lambda: {p for p, _, now in stage.ticks if now > time.time() - 60} == {"0", "1"},
                        lambda: stage.ticks[-4:])  # idle now: both are ticked on the wall clock
        finally:
            await proc.stop()

    asyncio.run(run())
    wall = [(p, seen) for p, seen, now in stage.ticks if now > t0 + 100]  # at wall time (the records end at t0+50)
    assert wall and all(seen == n for _, seen in wall), wall  # none while that partition still had records waiting
