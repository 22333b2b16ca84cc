"""A stop while the hot path's loop is still at work, on the real broker; and config refusals logged as one line.

An audit SIGTERMed ``kubesight worker --role all`` during ``collect replay --speed 200``: it exited 0, nothing was
lost, but 1 run in 3 logged ``[ERROR] alerting: transaction failed (ProducerClosed): aborting and rewinding``. mode
runs ``on_stop`` before it stops the service's tasks, so the loop went on, began a transaction after the final
commit, and the producer was closed under it. After the final commit no transaction begins now (the next owner
redoes what was read since); one still open when the stop closes is closed under at INFO, not ERROR.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from core.records import Sample, encode
from streams.hotpath import Pipeline, TransactionalProcessor
from tests.kafkatools import read_to_end, until, write_transaction


class Echo:
    """One alerts-topic record per sample, keyed by its name."""

    accepts = (Sample,)

    def process(self, rec, state, emit) -> None:
        emit("alerts", rec.name.encode(), b'"x"')

    def tick(self, now, state, emit) -> None:
        pass


def _write(s, bootstrap: str, prefix: str, n: int = 5) -> None:
    """``n`` samples named ``prefix0``... to the samples topic, in one committed transaction."""
    write_transaction(bootstrap, s.topic("samples"),
                      [encode(Sample(f"{prefix}{i}", 1.0, 1000.0 + i, {"job": "x"})) for i in range(n)], True, prefix)


def _given(settings, bootstrap: str, caplog, prefix: str, **update):
    """The settings with ``update``, ``prefix``'s samples written, INFO and above captured."""
    caplog.set_level(logging.INFO)
    s = settings.model_copy(update=update)
    _write(s, bootstrap, prefix)
    return s


def _processor(s, bootstrap: str, worker_id: str) -> TransactionalProcessor:
    return TransactionalProcessor(s, bootstrap, "signals", ["events", "samples"], Pipeline([Echo()]),
                                  worker_id=worker_id)


def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.ERROR and r.name.startswith(("kubesight", "asyncio"))]


async def _wait_closed(proc: TransactionalProcessor, seen: asyncio.Event, timeout: float = 5.0) -> None:
    """In a transaction begun: wait until the stop has closed the producer (or ``timeout``)."""
    seen.set()
    deadline = time.monotonic() + timeout
    while not proc.producer._closed and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def _next_owner(settings, bootstrap: str, worker_id: str, n: int) -> None:
    """A processor of the same group, run until it has read ``n`` records and committed them."""
    proc = _processor(settings, bootstrap, worker_id)
    await proc.start()
    try:
        await until(lambda: proc.stats["in"] >= n and not proc._outputs_pending(), lambda: proc.stats)
    finally:
        await proc.stop()


@pytest.mark.kafka
def test_records_the_loop_takes_during_the_stop_begin_no_transaction_and_the_next_owner_redoes_them(
        settings, kafka_bootstrap, caplog):
    """The loop's fetch returns a batch just as the stop begins (the audit's replay): it is processed after the final
    commit, and its transaction was begun while the consumer and producer were being closed (ProducerClosed, ERROR)."""
    s = _given(settings, kafka_bootstrap, caplog, "a", commit_interval=0.1)

    async def run():
        begun = asyncio.Event()
        proc = _processor(s, kafka_bootstrap, "sm")
        await proc.start()
        try:
            await until(lambda: proc.stats["in"] >= 5 and not proc._outputs_pending(), lambda: proc.stats)
            getmany, begin, hold = proc.consumer.getmany, proc.producer.begin_transaction, [True]

            async def fetched_as_the_stop_begins(*args, **kwargs):
                got = await getmany(*args, **kwargs)
                if got and hold[0]:
                    hold[0] = False
                    await until(lambda: proc.should_stop, "the stop", interval=0.01)
                return got

            async def begin_then_wait_for_the_close():  # the stop's round trips overtake this transaction's
                await begin()
                await _wait_closed(proc, begun)

            proc.consumer.getmany = fetched_as_the_stop_begins
            proc.producer.begin_transaction = begin_then_wait_for_the_close
            _write(s, kafka_bootstrap, "b")
            await until(lambda: not hold[0], "the batch fetched")
        finally:
            await proc.stop()
        await asyncio.sleep(0.2)  # a transaction left running would fail now
        return proc.stats, begun

    stats, begun = asyncio.run(run())
    assert stats["in"] == 10 and not begun.is_set()  # read, and no transaction begun for it
    assert _errors(caplog) == []
    asyncio.run(_next_owner(s, kafka_bootstrap, "sm2", 5))
    assert sorted(r.key.decode() for r in read_to_end(kafka_bootstrap, s.topic("alerts"))) == [
        f"{p}{i}" for p in "ab" for i in range(5)]  # nothing lost, nothing twice
    assert _errors(caplog) == []


@pytest.mark.kafka
@pytest.mark.parametrize("ends", [True, False])
def test_a_transaction_still_open_when_the_stop_closes_is_waited_for_then_closed_under_at_info(
        settings, kafka_bootstrap, caplog, ends):
    """A transaction holding the commit lock when the final commit is over (here: one begun while the final commit
    failed) is waited for, up to ``shutdown_timeout``: one that ``ends`` meanwhile is committed; one closed under
    after that says so at INFO, and the next owner redoes its records."""
    s = _given(settings, kafka_bootstrap, caplog, "c", commit_interval=3600.0, shutdown_timeout=10.0 if ends else 0.5)

    async def run():
        begun = asyncio.Event()
        proc = _processor(s, kafka_bootstrap, "sm3")
        await proc.start()
        try:
            await until(lambda: proc.stats["in"] >= 5, lambda: proc.stats)
            await proc.producer.partitions_for(s.topic("alerts"))  # known, as after the worker's first commit
            begin = proc.producer.begin_transaction

            async def begin_then_wait():
                await begin()
                if ends:  # until the stop waits for it
                    begun.set()
                    await until(lambda: proc._closing, "the stop", interval=0.01)
                else:
                    await _wait_closed(proc, begun)

            proc.producer.begin_transaction = begin_then_wait
            open_one = asyncio.ensure_future(proc._commit())
            await asyncio.wait_for(begun.wait(), 10)

            async def final_commit_fails():
                raise RuntimeError("final commit failed")

            proc.commit_now = final_commit_fails
        finally:
            await proc.stop()
        await asyncio.wait_for(open_one, 10)
        return proc.stats

    stats = asyncio.run(run())
    assert _errors(caplog) == []
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "stopping:" in r.getMessage()]
    if ends:
        assert stats["commits"] == 1 and stats["aborts"] == 0 and info == []
    else:
        assert stats["commits"] == 0 and stats["aborts"] == 1
        assert info == ["signals: stopping: the open transaction is aborted, its records are redone by the next owner"]
        asyncio.run(_next_owner(settings, kafka_bootstrap, "sm4", 5))
    assert sorted(r.key.decode() for r in read_to_end(kafka_bootstrap, s.topic("alerts"))) == [
        f"c{i}" for i in range(5)]


def test_a_refused_routing_file_is_one_log_line_with_every_error(tmp_path, caplog):
    """Each line of a multi-line ERROR became its own unlabelled entry in a log collector."""
    from streams.alerting import RoutingFile

    path = tmp_path / "routing.yaml"
    path.write_text("route: {receiver: a}\nreceivers: [{name: a}]\n")
    f = RoutingFile(str(path))
    path.write_text("route: {receiver: a, bogus: 1}\nreceivers: [{name: a, other: 2}]\n")
    with caplog.at_level(logging.ERROR, logger="kubesight"):
        assert f.reload() is None
    (msg,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(f.errors) == 2 and "\n" not in msg
    assert msg == "routing file refused, running version stays: " + "; ".join(f.errors)


def test_refused_rule_packs_are_one_log_line(tmp_path, caplog):
    from core.settings import Settings
    from streams.stages import RulePacks
    from tests.rules.test_topic_packs_restart import PACK

    moved = tmp_path / "team-x.yaml"
    moved.write_text(PACK.format(name="team-x", alert="TeamXDown"))
    topic_dir = tmp_path / "rules-topic"
    topic_dir.mkdir()
    (topic_dir / "team-x.yaml").write_text(PACK.format(name="team-x", alert="TeamXDown"))
    with caplog.at_level(logging.WARNING, logger="kubesight"):
        packs = RulePacks(Settings(default_pack=False, rules=[str(moved)]), topic_dir=topic_dir)
        assert packs.apply_topic_record(b"team-x", PACK.format(name="team-x", alert="TeamXDown").encode())
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 2 and all("duplicate pack name" in m and "\n" not in m for m in refused), refused
