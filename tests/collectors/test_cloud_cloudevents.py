"""CloudEvents 1.0 in its three HTTP modes, wrapping the providers' documented events, and the refusals."""

from __future__ import annotations

import base64

import orjson
import pytest

from collectors.cloud.event import PayloadError
from collectors.cloud.intake import parse

NODES = {"i-bp1ecr5go2go": "cn-hangzhou.192.168.0.10", "i-04c3029e207ee2de8": "ip-10-0-129-220.ec2.internal"}
# The documented Disk:Stalled notification's content, as Alibaba EventBridge sends it (type ecs:Disk:Stalled).
STALLED = {"eventId": "e-t4navn76x5no", "diskId": "d-t4ndyqven4ds", "device": "/dev/xvdb", "eventType": "Stalled",
           "eventStatus": "Executing", "executeStartTime": "2019-04-10T01:01:01Z", "ecsInstanceId": "i-bp1ecr5go2go"}
ECS_CE = {"specversion": "1.0", "id": "45ef4dew-7c35", "source": "acs.ecs", "type": "ecs:Disk:Stalled",
          "subject": "acs:ecs:cn-hangzhou:1690700000000030:disk/d-t4ndyqven4ds", "time": "2019-04-10T09:01:02+08:00",
          "aliyunregionid": "cn-hangzhou", "aliyunaccountid": "1690700000000030", "datacontenttype": "application/json",
          "data": STALLED}
SPOT = {"version": "0", "id": "1e5527d7-bb36-4607-3370-4164db56a40e", "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2", "account": "123456789012", "time": "2024-05-01T09:59:00Z", "region": "us-east-1",
        "resources": ["arn:aws:ec2:us-east-1b:instance/i-04c3029e207ee2de8"],
        "detail": {"instance-id": "i-04c3029e207ee2de8", "instance-action": "terminate"}}


def brief(events) -> list[tuple]:
    return [(e.reason, e.severity, e.entity.node, e.labels.get("phase", ""), e.labels.get("resource", ""),
             e.labels.get("scheduled_time", ""), e.time) for e in events]


STALL = ("DiskStalled", "critical", "cn-hangzhou.192.168.0.10", "Executing", "d-t4ndyqven4ds", "", 1554858062.0)
SPOT_EV = ("SpotInterruption", "critical", "ip-10-0-129-220.ec2.internal", "", "", "2024-05-01T10:01:00.000Z",
           1714557540.0)


def test_structured_mode_alibaba_eventbridge():
    for ctype in ("application/cloudevents+json; charset=utf-8", "application/json"):
        evs = parse(orjson.dumps(ECS_CE), headers={"Content-Type": ctype}, nodes=NODES)
        assert brief(evs) == [STALL]
        assert evs[0].labels["event_code"] == "Disk:Stalled" and evs[0].labels["region"] == "cn-hangzhou"


def test_binary_mode_with_percent_encoded_attributes():
    headers = {f"ce-{k}": v for k, v in ECS_CE.items() if k not in ("data", "datacontenttype")}
    headers["ce-subject"] = headers["ce-subject"].replace(":", "%3A")
    headers["Content-Type"] = "application/json"
    assert brief(parse(orjson.dumps(STALLED), headers=headers, nodes=NODES)) == [STALL]


def test_batch_mode_and_data_base64_and_wrapped_provider_events():
    b64 = {k: v for k, v in ECS_CE.items() if k != "data"} | {"data_base64": base64.b64encode(orjson.dumps(STALLED)).decode()}
    wrapped_aws = {"specversion": "1.0", "id": "w1", "source": "my.relay", "type": "aws.event", "data": SPOT}
    aws_native = {"specversion": "1.0", "id": SPOT["id"], "source": "aws.ec2", "type": SPOT["detail-type"],
                  "time": SPOT["time"], "data": SPOT["detail"]}
    body = orjson.dumps([ECS_CE, b64, wrapped_aws, aws_native])
    evs = parse(body, headers={"Content-Type": "application/cloudevents-batch+json"}, nodes=NODES)
    assert brief(evs) == [STALL, STALL, SPOT_EV, SPOT_EV]
    assert evs[0].id == evs[1].id  # the same event, whichever way its data was encoded
    assert evs[2].id == evs[3].id  # and the same AWS event, wrapped whole or as type + detail


@pytest.mark.parametrize("body, headers, reason", [
    ({**ECS_CE, "specversion": "0.3"}, {}, "CloudEvent: unsupported CloudEvents specversion '0.3' (expected 1.0)"),
    ({k: v for k, v in ECS_CE.items() if k != "id"}, {}, "CloudEvent: CloudEvent attribute 'id' missing or not a string"),
    ({**ECS_CE, "type": "oss:ObjectCreated:PutObject"}, {},
     "type: an acs.ecs event type starts with 'ecs:', got 'oss:ObjectCreated:PutObject'"),
    ({**ECS_CE, "type": "ecs:Instance:SomethingNew"}, {}, "unknown Alibaba ECS event 'Instance:SomethingNew'"),
    ({**ECS_CE, "data": {**STALLED, "eventStatus": "Pending"}}, {},
     "eventStatus: unknown phase 'Pending' (one of Scheduled, Inquiring, Executing, Executed, Avoided, Canceled, Failed)"),
    ({"specversion": "1.0", "id": "x", "source": "com.example", "type": "order.created", "data": {"order": 7}}, {},
     "CloudEvent source 'com.example' type 'order.created': data: unknown payload shape (top-level keys: 'order')"),
    ({"specversion": "1.0", "id": "x", "source": "com.example", "type": "ping"}, {},
     "CloudEvent of unsupported source 'com.example' / type 'ping' without an event as data"),
    ({**ECS_CE, "data_base64": "%%%"}, {}, "CloudEvent: data_base64 is not base64"),
    (ECS_CE, {"Content-Type": "application/cloudevents-batch+json"},
     "CloudEvents batch: expected a JSON array of CloudEvents"),
    ([ECS_CE], {"Content-Type": "application/cloudevents+json"}, "structured CloudEvent: expected a JSON object"),
])
def test_refusals_say_why(body, headers, reason):
    with pytest.raises(PayloadError) as err:
        parse(orjson.dumps(body), headers=headers, nodes=NODES)
    assert str(err.value) == reason


def test_binary_mode_refusals():
    base = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "acs.ecs", "ce-type": "ecs:Disk:Stalled"}
    with pytest.raises(PayloadError, match=r"^CloudEvent \(binary mode\): data must be JSON, got content type 'text/plain'$"):
        parse(b"hello", headers=base | {"Content-Type": "text/plain"})
    with pytest.raises(PayloadError, match=r"^CloudEvent \(binary mode\): CloudEvent attribute 'type' missing"):
        parse(b"{}", headers={k: v for k, v in base.items() if k != "ce-type"})
