"""Wire records: round trips, key stability, clear errors for bad input."""

import orjson
import pytest

from core.records import Alert, Entity, Event, RecordError, Sample, deadletter, decode, encode, fingerprint


def _event(**kw):
    base = dict(source="k8s", reason="BackOff", type="Warning", time=1627984800.5,
                entity=Entity(cluster="c1", namespace="shop", kind="Pod", name="web-1", uid="u1", node="n1",
                              workload="Deployment/web", owner="team-a"),
                labels={"component": "kubelet"}, message="Back-off", count=3)
    base.update(kw)
    return Event(**base)


def test_event_round_trip_keeps_every_field():
    e = _event()
    d = orjson.loads(encode(e))
    assert d["v"] == 1 and d["kind"] == "event"
    assert d["time"] == "2021-08-03T10:00:00.500Z"
    assert d["entity"]["owner"] == "team-a"
    assert decode(encode(e)) == e


def test_sample_and_alert_round_trip():
    s = Sample("apiserver_request_total", 12.5, 1627984800.0, {"verb": "GET", "code": "200"})
    assert decode(encode(s)) == s
    a = Alert(labels={"alertname": "X", "severity": "warning"}, annotations={"summary": "s"},
              startsAt=1627984800.0, endsAt=1627984900.0, status="resolved", source="default/X@1")
    back = decode(encode(a))
    assert back == a
    assert orjson.loads(encode(a))["fingerprint"] == a.fingerprint


def test_keys_are_stable_and_entity_scoped():
    # same workload, different pods -> same partition key; same series, label order irrelevant
    a = _event(entity=Entity(namespace="shop", kind="Pod", name="web-1", workload="Deployment/web"))
    b = _event(entity=Entity(namespace="shop", kind="Pod", name="web-2", workload="Deployment/web"))
    assert a.key() == b.key() == b"default/shop/Deployment/web"
    assert _event(entity=Entity(kind="Node", name="n1")).key() == b"default//Node/n1"
    assert _event(source="kernel", entity=Entity(node="n1")).key() == b"default//Node/n1"
    s1 = Sample("up", 1, 0, {"job": "a", "instance": "b"})
    s2 = Sample("up", 1, 0, {"instance": "b", "job": "a"})
    assert s1.key() == s2.key() == b'up{instance="b",job="a"}'
    assert fingerprint({"a": "1", "b": "2"}) == fingerprint({"b": "2", "a": "1"}) != fingerprint({"a": "1"})


def test_event_id_is_stable_for_the_same_occurrence():
    assert _event().id == _event().id
    assert _event().id != _event(count=4).id


@pytest.mark.parametrize("payload, message", [
    (b"{oops", "not valid JSON"),
    (b"[1, 2]", "record must be a JSON object, got list"),
    (b'{"v": 2, "kind": "event"}', "unsupported record version v=2 (expected 1)"),
    (b'{"v": 1, "kind": "metric"}', "unknown record kind 'metric' (expected event, sample or alert)"),
    (b'{"v": 1, "kind": "event", "source": "k8s", "time": "2021-08-03T10:00:00Z"}', "event: Object missing required field `reason`"),
    (b'{"v": 1, "kind": "event", "source": "syslog", "reason": "X", "time": 0}', "event: Invalid enum value 'syslog' - at `$.source`"),
    (b'{"v": 1, "kind": "event", "source": "k8s", "reason": "X", "time": "yesterday"}', "event: Invalid RFC3339 encoded datetime - at `$.time`"),
    (b'{"v": 1, "kind": "sample", "name": "up", "value": "high", "time": 0}', "sample: Invalid enum value 'high' - at `$.value`"),
    (b'{"v": 1, "kind": "event", "source": "k8s", "reason": "X", "time": 0, "entity": {"name": 5}}',
     "event: Expected `str`, got `int` - at `$.entity.name`"),
    (b'{"v": 1, "kind": "event", "source": "k8s", "reason": "X", "time": 0, "entity": {"pod": "a"}}',
     "event: Object contains unknown field `pod` - at `$.entity`"),
    (b'{"v": 1, "kind": "event", "source": "k8s", "reason": "X", "time": 0, "count": 1.5}',
     "event: Expected `int`, got `float` - at `$.count`"),
    (b'{"v": 1, "kind": "alert", "labels": {"alertname": "X", "code": 500}, "startsAt": 0}',
     "alert: Expected `str`, got `int` - at `$.labels[...]`"),
    (b'{"v": 1, "kind": "event", "source": "k8s", "reason": "X", "time": 0, "labels": {"n": 1}}',
     "event: Expected `str`, got `int` - at `$.labels[...]`"),
    (b'{"v": 1, "kind": "alert", "labels": {}, "startsAt": 0}', "alert: labels must include 'alertname'"),
])
def test_bad_payloads_raise_clear_errors(payload, message):
    with pytest.raises(RecordError) as exc:
        decode(payload)
    assert message in str(exc.value)


def test_prometheus_special_values_are_accepted_and_round_trip():
    assert decode(b'{"v":1,"kind":"sample","name":"x","value":"+Inf","time":0}').value == float("inf")
    for v, wire in ((float("inf"), "+Inf"), (float("-inf"), "-Inf"), (float("nan"), "NaN")):
        d = orjson.loads(encode(Sample("x", v, 0.0)))
        assert d["value"] == wire
        back = decode(encode(Sample("x", v, 0.0))).value
        assert (back != back) if v != v else back == v


def test_deadletter_keeps_binary_payload_whole():
    d = orjson.loads(deadletter("bad", b"\xff\xfe", origin="worker", topic="events", offset=3))
    assert d["encoding"] == "base64" and d["payload"] == "//4="
    assert d["where"] == {"topic": "events", "offset": 3}
