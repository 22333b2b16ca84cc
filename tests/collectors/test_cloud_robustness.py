"""Never a crash: every sample payload with any one value replaced by a wrong type is parsed, or refused with a
reason that names the field (not the generic safety net's "malformed payload")."""

from __future__ import annotations

import orjson

from collectors.cloud.event import PayloadError
from collectors.cloud.intake import parse
from core.records import encode
from tests.collectors.test_cloud_cloudevents import ECS_CE, SPOT
from tests.collectors.test_cloud_payloads import NOW, cases

WRONG = (None, 7, -1.5, True, "", "x", [], {}, ["x"], {"a": 1}, 1e15, 1e20,  # 1e15: microseconds as seconds
         "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00")  # times past the years 1-9999 once in UTC


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*path, i))


def _replace(value, path, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


def test_mutated_payloads_never_crash(data_dir):
    crashes, tried = [], 0
    envelopes = {"cloudevent/acs.ecs": (orjson.dumps(ECS_CE), None),
                 "cloudevent/aws": (orjson.dumps({"specversion": "1.0", "id": "w1", "source": "aws.ec2",
                                                  "type": SPOT["detail-type"], "time": SPOT["time"],
                                                  "data": SPOT["detail"]}), None),
                 "cloudevent/wrapped": (orjson.dumps({"specversion": "1.0", "id": "w2", "source": "relay",
                                                      "type": "x", "data": SPOT}), None)}
    for key, (body, instance) in sorted(cases(data_dir).items()) + sorted(envelopes.items()):
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            continue  # the as-published invalid JSON: covered by the payload tests
        for path in _paths(doc):
            for new in WRONG:
                tried += 1
                try:
                    events = parse(orjson.dumps(_replace(doc, path, new)), instance=instance, now=NOW)
                except PayloadError as exc:
                    if str(exc).startswith("malformed payload ("):  # the safety net: a check is missing
                        crashes.append(f"{key} {list(path)} = {new!r}: {exc}")
                    continue
                except Exception as exc:  # noqa: BLE001 - the point of the test
                    crashes.append(f"{key} {list(path)} = {new!r}: {type(exc).__name__}: {exc}")
                    continue
                assert all(e.source == "cloud" and e.reason and isinstance(e.time, float) for e in events)
                for e in events:  # what was accepted can be written (else the sender is told to retry for ever)
                    encode(e)
    assert tried > 5000
    assert crashes[:40] == [], len(crashes)


# ---------------------------------------------------------------- provider times


def test_rfc_2822_times_without_a_zone_or_with_minus_0000_are_utc_whatever_this_machine_s_zone(monkeypatch):
    """RFC 5322 3.3: "-0000" is UTC (the source's zone unknown); a time without zone is UTC as everywhere in kubesight.
    email.utils makes both naive, which timestamp() read in the machine's zone (Asia/Shanghai: 8 h early)."""
    import time

    from collectors.cloud.event import cloud_time

    utc = 1678449818.0  # 2023-03-10T12:03:38Z
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        assert [cloud_time(t, "startTime") for t in ("Fri, 10 Mar 2023 12:03:38 -0000", "Fri, 10 Mar 2023 12:03:38",
                                                      "Fri, 10 Mar 2023 12:03:38 GMT", "10 Mar 2023 12:03:38 +0000",
                                                      "Fri, 10 Mar 2023 20:03:38 +0800")] == [utc] * 5
    finally:
        monkeypatch.undo()
        time.tzset()


def test_times_with_more_than_microseconds_round_as_the_wire_reads_them():
    """Alibaba's compact time with 7 fractional digits was a ValueError; every shape rounds as msgspec does."""
    from collectors.cloud.event import cloud_time
    from core.records import wire_time

    assert cloud_time("20190409T121826.9221234+0800", "eventTime") == 1554783506.922123
    assert cloud_time("20190409T121826.9221235+0800", "eventTime") == 1554783506.922124
    assert cloud_time("20190409T121826.9999995Z", "eventTime") == wire_time("2019-04-09T12:18:27Z")
    assert cloud_time("20190409T121826.922+0800", "eventTime") == 1554783506.922
    assert cloud_time("2019-04-09T04:18:26.9221235z", "eventTime") == wire_time("2019-04-09T04:18:26.9221235Z")
    try:
        cloud_time("20191309T121826.9221234+0800", "eventTime")
    except PayloadError as exc:  # a compact time that is no date names its field, as any other bad time
        assert str(exc) == "eventTime: invalid time '20191309T121826.9221234+0800'"
    else:
        raise AssertionError("month 13 accepted")


def test_a_lower_case_z_is_read_by_the_intake():
    """RFC 3339 allows "z"; the intake answered 400 for what the wire reads."""
    spot = {**SPOT, "time": "2024-05-01T09:59:00.0000004z"}
    assert [e.time for e in parse(orjson.dumps(spot), now=NOW)] == [1714557540.0]
