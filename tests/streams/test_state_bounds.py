"""Worker state stays bounded per record whatever the number of series (issue 20 #3), and the derived
stage's due-index, kept in memory only, is rebuilt exactly from a restored changelog."""

from __future__ import annotations

import orjson

from core.records import Sample, decode
from core.settings import Settings
from streams.bench_scale import containers, simulate
from streams.derived import Derived
from streams.stages import RulePacks, signal_stages

ONE_MIB = 1 << 20


def test_200k_series_on_2_partitions_never_make_a_changelog_record_near_the_message_limit():
    s = Settings()
    r = simulate(signal_stages(s, RulePacks(s)), containers, 200_000, scrapes=2, partitions=2, commit_every=25_000)
    assert r["state_keys"] >= 100_000  # one aggregate per derived series (and rule state): the load was real
    assert r["largest_record_bytes"] < 16 * 1024, r  # was 5.7 MB for the pending list alone: over Kafka's 1 MiB


def _run(samples, restore_after=None):
    """Outputs of the derived stage over ``samples`` with a tick after each scrape; optionally the state
    goes through the changelog (JSON round trip, a new stage object) after ``restore_after`` scrapes."""
    d, state, out = Derived(), {}, []

    def emit(topic, key, value, partition=None):
        out.append(value)

    for i, scrape in enumerate(samples):
        for smp in scrape:
            d.process(smp, state, emit)
            while out and orjson.loads(out[-1])["name"].endswith(":partial"):
                d.process(decode(out.pop()), state, emit)
        if restore_after == i:
            state = {k: orjson.loads(orjson.dumps(v)) for k, v in state.items()}
            d = Derived()
        d.tick(scrape[0].time + 10, state, emit)
    return [orjson.loads(v) for v in out]


def test_due_index_rebuilt_from_a_restored_state_gives_the_same_outputs():
    def scrape(t, late=False):
        rows = []
        for i in range(30):
            labels = {"namespace": "shop", "pod": f"web-{i}", "container": "app", "instance": "n1"}
            rows.append(Sample("container_memory_working_set_bytes", 1e6 * (i + 1) + t, t, labels))
            rows.append(Sample("container_spec_memory_limit_bytes", 1e8, t, labels))
        solo = {"namespace": "shop", "pod": "solo", "container": "app"}
        if t == 1000.0:
            rows.append(Sample("container_memory_working_set_bytes", 5e7, t, {**solo, "instance": "n1"}))
            rows.append(Sample("container_spec_memory_limit_bytes", 1e8, t, {**solo, "instance": "n1"}))
        if late:  # a source older than what was already emitted arrives after the tick: it alone makes solo due
            rows.append(Sample("container_memory_working_set_bytes", 6e7, t - 25, {**solo, "instance": "n2"}))
        return rows

    scrapes = [scrape(1000.0), scrape(1030.0, late=True), scrape(1060.0), scrape(1090.0)]
    straight = _run(scrapes)
    assert len(straight) >= 4 * 30 and straight == _run(scrapes, restore_after=1) == _run(scrapes, restore_after=2)


def test_wall_clock_ticks_idle_partitions_but_never_one_that_just_got_records():
    """clock: wall (issue 20 #6): an idle partition's timers run on the wall clock even while other
    partitions are busy; a partition fed this round is driven by its records' event time (a backlog
    is never ticked ahead of the records it is still reading)."""
    import time

    from streams.hotpath import WATERMARK, TransactionalProcessor
    from streams.state import Store

    ticked = []

    class Probe:
        def process(self, rec, state, emit):
            pass

        def tick(self, now, state, emit):
            ticked.append(state["id"])

    proc = TransactionalProcessor(Settings(clock="wall"), "127.0.0.1:1", "signals", ["samples"], Probe())
    for p, wm in ((0, 1000.0), (1, 1000.0), (2, time.time())):  # 0 idle, 1 busy (old backlog), 2 live
        proc.stores[p] = Store()
        proc.stores[p]["id"] = p
        proc.stores[p][WATERMARK] = wm
    proc._wall_tick(skip={1})
    assert ticked == [0]
