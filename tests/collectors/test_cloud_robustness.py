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
