"""A cloud payload of an unknown shape is one series of kubesight_deadletters_total, whatever keys it has."""

from __future__ import annotations

import orjson
import pytest

from collectors.cloud.event import PayloadError
from collectors.cloud.intake import parse
from core import telemetry
from tests.core.test_telemetry_labels import deadletters, word  # noqa: F401 (a fixture)


def refused(payload) -> str:
    with pytest.raises(PayloadError) as err:
        parse(orjson.dumps(payload))
    return str(err.value)


@pytest.mark.parametrize("shape", [
    lambda i: {f"k{word(i)}": 1},                                    # the audit's: one new key a payload
    lambda i: {word(i) + word(j): j for j in range(i % 5 + 1)},      # one to five keys
    lambda i: {f"it's {word(i)}": 1, f'say "{word(i)}"': 2},         # keys with quotes of either kind in them
    lambda i: {f"""a'b"{word(i)}""": 1},                             # both: repr() escapes one with a backslash
    lambda i: {"RequestId": word(i), word(i): []},                   # an Alibaba API response without event sets
    lambda i: {"specversion": "1.0", "id": word(i), "source": "com.example", "type": "t",  # a CloudEvent's data
               "data": {word(i): 1}},
], ids=["one-key", "several-keys", "quotes-in-keys", "both-quotes", "alibaba-api-response", "cloudevent-data"])
def test_distinct_unknown_keys_are_one_series(deadletters, shape):  # noqa: F811 (the fixture imported)
    """collectors/cloud wrote a payload's keys into the reason unquoted, which reason_key does not fold: 195 payloads
    with 195 new keys made 195 series (an audit), filled the 200-pair cap and took every other origin's series with
    them.  Quoted, they are one, however many keys a payload has and whatever quotes they hold."""
    reasons = {refused(shape(i)) for i in range(250)}
    assert len(reasons) == 250  # the dead letter itself still names the keys
    for reason in reasons:
        telemetry.count_deadletter("collector/cloud", reason)
    [(origin, label)] = {(s.labels["origin"], s.labels["reason"]) for m in deadletters.collect()
                         for s in m.samples if s.name.endswith("_total")}
    assert origin == "collector/cloud" and label != "other" and "…" in label
    assert deadletters.get_sample_value("kubesight_deadletters_total",
                                        {"origin": "collector/cloud", "reason": label}) == 250


def test_the_reason_names_the_keys_quoted():
    """The dead letter still says which keys came (sorted), for whoever reads it."""
    assert refused({"b": 1, "a": 2}) == "unknown payload shape (top-level keys: 'a', 'b')"
    assert refused({}) == "unknown payload shape (top-level keys: none)"
    assert refused({"RequestId": "r", "Other": 1}) == \
        "an Alibaba Cloud API response without system events (keys: 'Other', 'RequestId')"
