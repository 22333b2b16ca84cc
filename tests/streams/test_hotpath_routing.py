"""The hot path calls a stage only for the records it wants (issue 11 #8), and that changes no output.

No broker: the processor's per-batch step (``_process_batch``) is driven directly with records encoded as
the bench's realistic input (recorded events with time advancing, node_exporter scrapes), and its buffered
outputs and changelog are compared with those of the same stages called for every record.
"""

from __future__ import annotations

import re
from collections import namedtuple

from aiokafka import TopicPartition

from core.records import Entity, Event, encode
from core.settings import Settings
from rules.load import load_packs
from streams.bench import _events, _samples
from streams.hotpath import Pipeline, TransactionalProcessor
from streams.stages import RulePacks, RulesStage, signal_stages
from streams.state import Store

Msg = namedtuple("Msg", "topic partition offset key value")


class EveryRecord:
    """The same stages behind a stage with no routing: each record goes to each stage that accepts its type."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    def process(self, rec, state, emit):
        self.pipeline.process(rec, state, emit)

    def tick(self, now, state, emit):
        self.pipeline.tick(now, state, emit)


class Probe:
    """A stage that keeps every record it is given."""

    def __init__(self):
        self.got = []

    def process(self, rec, state, emit):
        self.got.append(rec)

    def tick(self, now, state, emit):
        pass


def _drive(stage, *partitions, batch: int = 700):
    """Each list of (key, value) records read from its own partition, batch by batch in turn."""
    proc = TransactionalProcessor(Settings(), "127.0.0.1:1", "signals", ["events", "samples"], stage)
    msgs = {}
    for p, records in enumerate(partitions):
        proc.stores[p] = Store()
        msgs[p] = [Msg("in", p, i, k, v) for i, (k, v) in enumerate(records)]
    for i in range(0, max(len(m) for m in msgs.values()), batch):
        for p, m in msgs.items():
            if m[i:i + batch]:
                proc._process_batch(TopicPartition("in", p), m[i:i + batch])
    return proc._outputs, sorted(it for s in proc.stores.values() for it in s.flush_items()), proc.stats


def test_routed_stages_give_the_same_outputs_and_state_as_calling_every_stage():
    settings = Settings()
    events, samples = _events(4000), _samples(4000)
    routed = _drive(Pipeline(signal_stages(settings, RulePacks(settings))), events, samples)
    every = _drive(EveryRecord(Pipeline(signal_stages(settings, RulePacks(settings)))), events, samples)
    topics = {t for t, _, _, _ in routed[0]}
    assert {settings.topic("alerts"), settings.topic("samples")} <= topics, topics  # alerts from events, derived partials from samples
    assert routed[0] == every[0]
    assert routed[1] == every[1]
    assert routed[2] == every[2]


def test_a_stage_without_routing_gets_every_record():
    got = (probe := Probe()).got
    records = _events(40) + _samples(40)
    _drive(probe, records, batch=25)  # one partition: samples are later than the events (none is late)
    assert [encode(r) for r in got] == [v for _, v in records]


def test_a_reload_renews_which_events_reach_the_rules(tmp_path):
    pack = tmp_path / "p.yaml"
    pack.write_text("""apiVersion: kubesight.io/v1
kind: RulePack
metadata: {name: demo, version: "1"}
rules:
  - alert: KubeBackOff
    match: {source: k8s, reason: BackOff}
    condition: {type: event_count, count: 1, window: 10m}
""")
    stage = RulesStage(RulePacks(Settings(default_pack=False)).holder)
    pipe = Pipeline([stage])
    ev = Event(source="k8s", reason="BackOff", type="Warning", time=1_700_000_000.0,
               entity=Entity(namespace="shop", kind="Pod", name="cart-1"))
    msgs = [Msg("in", 0, 0, ev.key(), encode(ev))]
    proc = TransactionalProcessor(Settings(), "127.0.0.1:1", "signals", ["events"], pipe)
    proc.stores[0] = Store()
    proc._process_batch(TopicPartition("in", 0), msgs)
    assert proc._outputs == [] and stage.evaluations == 0  # no rule: the stage is not even called
    stage.holder.swap(load_packs([pack]))
    proc._process_batch(TopicPartition("in", 0), msgs)
    assert [t for t, _, _, _ in proc._outputs] == [Settings().topic("alerts")] and stage.evaluations == 1


BAD = [b"{oops", b"[1, 2]", b'{"v": 2, "kind": "event"}', b'{"v": 2, "kind": "sample", "name": "x", "value": 1, "time": 0}',
       b'{"v": 1, "kind": "metric"}', b'{"v": 1, "kind": "event", "source": "k8s", "reason": "X", "time": "yesterday"}',
       b'{"v": 1, "kind": "event", "source": "k8s", "reason": "X", "time": "2021-08-03T10:00:61Z"}',
       b'{"v": 1, "kind": "sample", "name": "up", "value": 1, "time": "2021-02-30T10:00:00.000Z"}',
       b'{"v": 1, "kind": "event", "source": "k8s", "reason": "X", "time": 0, "count": -1}',
       b'{"v": 1, "kind": "event", "source": "k8z", "reason": "X", "time": 0}',
       b'{"v": 1, "kind": "event", "source": "k8s", "reason": "X", "time": 0, "labels": {"n": 1}}',
       b'{"v": 1, "kind": "alert", "labels": {"alertname": "X"}, "startsAt": 0, "endsAt": "soon"}',
       b'{"v": 1, "kind": "alert", "labels": {}, "startsAt": 0}',
       b'{"v": 1, "kind": "sample", "name": "up", "value": 1, "time": 1e300}',  # beyond what RFC 3339 writes
       b'{"v": 1, "kind": "event", "source": "k8s", "reason": "X", "time": 1600000000000000}',  # microseconds
       # what msgspec reads and orjson will not (the reason's second look used to raise, stopping the worker for good)
       b'{"v": 1, "kind": "sample", "name": "up", "value": 1e999, "time": 0}', b"[" * 1100 + b"]" * 1100,
       b'{"v": 1, "kind": "sample", "name": "up", "value": 1, "time": "9999-12-31T23:59:59-01:00"}']  # year 10000 in UTC


def test_peek_refuses_what_decode_refuses_with_the_same_reason_and_builds_what_decode_makes():
    import pytest

    from core.records import RecordError, build, decode, peek

    for payload in BAD:
        with pytest.raises(RecordError) as by_decode:
            decode(payload)
        with pytest.raises(RecordError) as by_peek:
            peek(payload)
        assert str(by_peek.value) == str(by_decode.value), payload
    good = [v for _, v in _events(300) + _samples(300)] + [
        b'{"v": 1, "kind": "alert", "labels": {"alertname": "X"}, "startsAt": "2021-08-03T10:00:00Z", "endsAt": 5}',
        b'{"v": 1, "kind": "sample", "name": "up", "value": "+Inf", "time": 7}',
        b'{"v": 1, "kind": "sample", "name": "up", "value": 1, "time": "0999-01-01T00:00:00Z"}']  # written "999-"
    for payload in good:
        rtype, key, t, w = peek(payload)
        rec = build(w, t)
        assert rec == decode(payload) == decode(encode(rec)) and type(rec) is rtype, payload


def test_the_hot_loop_checks_as_peek_does_on_its_own_fast_path_and_off_it():
    """The loop takes the common case itself (a current event or sample) and leaves every other one to ``peek``:
    each bad payload is dead-lettered with peek's reason, each good one reaches the stage as ``decode`` makes it,
    whether its time is a text seen before, a new one or a number."""
    import orjson
    import pytest

    from core.records import TIME_SECONDS, RecordError, decode, peek

    got = (probe := Probe()).got
    seen = b'{"v": 1, "kind": "event", "source": "k8s", "reason": "X", "time": "2021-08-03T10:00:00.500Z"}'
    fresh = b'{"v": 1, "kind": "sample", "name": "up", "value": 1, "time": "2021-08-03T10:00:01+00:00"}'
    number = b'{"v": 1, "kind": "sample", "name": "up", "value": "+Inf", "time": 1627984802}'
    peek(seen)  # its time text is in the memo
    TIME_SECONDS.pop("2021-08-03T10:00:01+00:00", None)  # not in it
    bad = [b.replace(b'"time": 0', b'"time": "2021-08-03T10:00:00.500Z"') for b in BAD]  # fast-path times, bad rest
    payloads = [seen, fresh, number] + BAD + bad
    proc = TransactionalProcessor(Settings(allowed_lateness=None), "127.0.0.1:1", "signals", ["in"], probe)
    proc.stores[0] = Store()
    proc._process_batch(TopicPartition("in", 0), [Msg("in", 0, i, None, v) for i, v in enumerate(payloads)])
    good = [p for p in payloads if p not in BAD + bad]
    assert got == [decode(p) for p in good]
    reasons = [orjson.loads(v)["reason"] for _, _, v, _ in proc._outputs]
    expected = []
    for p in BAD + bad:
        with pytest.raises(RecordError) as exc:
            peek(p)
        expected.append(str(exc.value))
    assert reasons == expected and len(reasons) == len(BAD) * 2


def test_a_signal_from_the_future_is_dead_lettered_and_does_not_move_event_time():
    """One mistyped time (the year 2100) must not move a partition's event time (kept in its changelog) past every
    signal to come: it is dead-lettered with the reason, and the signals after it are evaluated, not late. A record a
    stage fails on is dead-lettered and does not move it either."""
    import time

    import orjson

    from core.records import Event, format_time
    from streams.hotpath import WATERMARK

    class Fails:
        def __init__(self):
            self.got = []

        def process(self, rec, state, emit):
            if rec.reason == "Boom":
                raise ValueError("boom")
            self.got.append(rec)

        def tick(self, now, state, emit):
            pass

    now = float(int(time.time()))  # whole seconds: times travel as milliseconds
    stage = Fails()

    def ev(t, reason="BackOff"):
        return encode(Event(source="k8s", reason=reason, type="Warning", time=t,
                            entity=Entity(namespace="shop", kind="Pod", name="cart-1")))

    # 20 minutes ahead (a source's clock that fast) is under max_future (1 h) but past allowed_lateness (10 min):
    # taken, it made every on-time signal after it late; now it is the one refused
    payloads = [ev(now - 60), ev(4102444800.0), ev(now + 7200, "Boom"), ev(now - 30), ev(now + 60, "Boom"),
                ev(now + 1200), ev(now - 20)]
    proc = TransactionalProcessor(Settings(), "127.0.0.1:1", "signals", ["in"], stage)
    proc.stores[0] = Store()
    proc._process_batch(TopicPartition("in", 0), [Msg("in", 0, i, None, v) for i, v in enumerate(payloads)])
    assert [r.time for r in stage.got] == [now - 60, now - 30, now - 20]  # none of them late
    reasons = [orjson.loads(v)["reason"] for _, _, v, _ in proc._outputs]
    assert reasons[0].startswith("future: ") and "(allowed_lateness, below max_future 600s)" in reasons[0]
    assert reasons[1].startswith("future: ")  # 2 h ahead
    assert reasons[2] == "stage error: ValueError: boom"
    # the reason counts from the clock at the batch, a moment after `now`: 1200 s, or 1199 s and a fraction
    assert re.match(r"future: 1(199|200)s ahead", reasons[3]) and len(reasons) == 4
    assert proc.stores[0][WATERMARK] == now - 20 and proc.stats["future"] == 3 and proc.stats["late"] == 0
    # without allowed_lateness, max_future alone is the limit
    proc = TransactionalProcessor(Settings(allowed_lateness=None), "127.0.0.1:1", "signals", ["in"], Fails())
    proc.stores[0] = Store()
    proc._process_batch(TopicPartition("in", 0), [Msg("in", 0, 0, None, ev(now + 7200))])
    assert "(max_future 3600s)" in orjson.loads(proc._outputs[0][2])["reason"]
    assert format_time(proc.stores[0][WATERMARK]) < format_time(now)
