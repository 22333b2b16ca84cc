"""Every payload of the Alibaba and AWS sample folders -> the exact Events, or the exact reason it is refused.

Payloads invalid as published are sent the way they were published (400) *and* repaired the way a real
sender would have sent them: the docs' placeholders (``yyyy-mm-ddThh:mm:ssZ``, ``<date_utc>``,
``<instance_id>``) filled in, IMDS bodies posted with ``?instance=``.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from collectors.cloud.event import PayloadError
from collectors.cloud.intake import parse
from collectors.cloud.nodes import load_node_files
from core.records import format_time

NOW = 1714557600.0  # 2024-05-01T10:00:00Z, the receive time of bodies without a publication time
FILLED_TIME = "2024-05-01T09:59:00Z"
FILLED_INSTANCE = "i-04c3029e207ee2de8"  # a node of the recorded OpenShift cluster on AWS
ALIBABA_NODES = {"i-bp1ecr********5go2go": "cn-hangzhou.192.168.0.10"}  # the docs' (masked) instance
NO_INSTANCE = "400: an instance-scoped body (IMDS or describe-instance-status Events) carries no instance id: post it with ?instance=<instance id> in the URL"


def node_map(data_dir: Path) -> dict:
    aws = load_node_files([data_dir / "openshift-must-gather-events/must-gather-aws/cluster-scoped-resources/core/nodes"])
    return aws | ALIBABA_NODES


def _fill(text: str) -> str:
    for placeholder, value in (("<date_utc>", FILLED_TIME), ("<START_TIME>", FILLED_TIME),
                               ("yyyy-mm-ddThh:mm:ssZ", FILLED_TIME), ("<instance_id>", FILLED_INSTANCE),
                               ("<AWS_REGION>", "us-east-1")):
        text = text.replace(placeholder, value)
    return text


def cases(data_dir: Path) -> dict[str, tuple[bytes, str | None]]:
    """case id -> (body, ?instance): every payload, plus its as-published and filled-in variants."""
    out: dict[str, tuple[bytes, str | None]] = {}
    ali = data_dir / "alibaba-cloud-ecs-events" / "examples.jsonl"
    aws = data_dir / "aws-ec2-health-events"
    for path in (ali, aws / "awsdocs-ec2-user-guide" / "examples.jsonl",
                 aws / "aws-node-termination-handler" / "nth_e2e_eventbridge_payloads.jsonl"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            rec = orjson.loads(line)
            body = orjson.dumps(rec["payload"])
            key = f"{path.parent.name}:{n}"
            out[key] = (body, None)
            if rec.get("repair") == "removed-trailing-commas":  # as published: a comma before the last brace
                out[f"{key}:as-published"] = (body[:-2] + b",}}", None)
            if rec.get("repair") == "outer-brackets-to-braces":  # as published: [ "Events": [...] ]
                out[f"{key}:as-published"] = (b"[" + body[1:-1] + b"]", None)
            filled = _fill(body.decode()).encode()
            if filled != body:
                out[f"{key}:filled"] = (filled, None)
            try:
                parse(body, now=NOW)
            except PayloadError as exc:
                if "?instance=" in str(exc):
                    out[f"{key}:instance"] = (body, "i-abcd1111")
    for path in sorted((aws / "aws-health-tools").glob("*.json")):
        if path.name != "all_events.json":  # the event-type catalogue, used by test_cloud_catalog
            out[f"aws-health-tools/{path.name}"] = (path.read_bytes(), None)
    return out


def outcome(body: bytes, instance: str | None, nodes: dict):
    """The summary a case is compared on: the 400 reason, or per event
    (reason, severity, node, instance or resource, scheduled_time, phase or state, time, event_code)."""
    try:
        events = parse(body, instance=instance, nodes=nodes, now=NOW)
    except PayloadError as exc:
        return f"400: {exc}"
    return [summary(e) for e in events]


def summary(e) -> tuple:
    lab = e.labels
    return (e.reason, e.severity, e.entity.node, lab.get("instance") or lab.get("resource", ""),
            lab.get("scheduled_time", ""), lab.get("phase") or lab.get("state", ""),
            format_time(e.time), lab["event_code"])


EXPECTED: dict = {
    'alibaba-cloud-ecs-events:1': [
        ('InstanceRebootScheduled', 'critical', '', 'i-bp19cx17f2yx****', '2020-04-24T10:32:31.000Z', 'Scheduled', '2020-04-24T07:09:37.000Z', 'Instance:SystemFailure.Reboot'),
    ],
    'alibaba-cloud-ecs-events:2': [
        ('InstanceRebootEnded', 'info', '', 'i-uf678mass4zvr9n1****', '2017-12-01T06:32:31.000Z', 'Executed', '2017-11-30T06:32:31.000Z', 'Instance:SystemMaintenance.Reboot'),
        ('InstanceMaintenanceEnded', 'info', '', 'i-uf678mass4zvr9n1****', '2017-12-06T00:00:00.000Z', 'Avoided', '2017-11-29T06:32:31.000Z', 'Instance:InstanceExpiration.Stop'),
    ],
    'alibaba-cloud-ecs-events:3': [
        ('DiskStalled', 'critical', '', 'i-bp67acfmxazb4p****', '', 'Executing', '2018-05-08T02:43:10.000Z', 'Disk:Stalled'),
        ('DiskStallEnded', 'info', '', 'i-instance2', '', 'Executed', '2018-05-06T02:43:10.000Z', 'Disk:Degraded'),
    ],
    'alibaba-cloud-ecs-events:4': "400: an Alibaba Cloud API response without system events (keys: 'EventIdSet', 'RequestId')",
    'alibaba-cloud-ecs-events:5': [
        ('CloudNotice', 'info', '', 's-bp1fis********b859b3', '', '', '2019-04-09T04:18:26.922Z', 'Snapshot:CreateSnapshotCompleted'),
    ],
    'alibaba-cloud-ecs-events:6': [
        ('DiskStalled', 'critical', 'cn-hangzhou.192.168.0.10', 'i-bp1ecr********5go2go', '', 'Executing', '2019-04-10T00:01:01.922Z', 'Disk:Stalled:Executing'),
    ],
    'alibaba-cloud-ecs-events:7': [
        ('DiskStallEnded', 'info', 'cn-hangzhou.192.168.0.10', 'i-bp1ecr********5go2go', '', 'Executed', '2019-04-10T00:03:01.922Z', 'Disk:Stalled:Executing'),
    ],
    'alibaba-cloud-ecs-events:8': [
        ('CloudNotice', 'info', '', 'd-t4ndyqve********n4ds', '', '', '2019-04-09T04:18:26.922Z', 'Disk:DiskOperationCompleted'),
    ],
    'alibaba-cloud-ecs-events:9': [
        ('CloudNotice', 'info', '', 'd-t4ndyqve********n4ds', '', '', '2019-04-09T04:18:26.922Z', 'Disk:ConvertToPostpaidCompleted'),
    ],
    'alibaba-cloud-ecs-events:9:as-published': '400: not valid JSON…',
    'alibaba-cloud-ecs-events:10': [
        ('DiskFault', 'critical', '', 'i-bp1792********an2ukf', '', '', '2019-04-09T04:18:26.922Z', 'Disk:OverduePaymentRelease'),
    ],
    'alibaba-cloud-ecs-events:10:as-published': '400: not valid JSON…',
    'alibaba-cloud-ecs-events:11': [
        ('InstanceRebootScheduled', 'critical', 'cn-hangzhou.192.168.0.10', 'i-bp1ecr********5go2go', '2019-04-12T01:01:01.000Z', 'Scheduled', '2019-04-09T04:18:26.922Z', 'Instance:SystemMaintenance.Reboot:Scheduled'),
    ],
    'alibaba-cloud-ecs-events:12': [
        ('InstanceRebootEnded', 'info', 'cn-hangzhou.192.168.0.10', 'i-bp1ecr********5go2go', '2019-04-12T01:01:01.000Z', 'Avoided', '2019-04-10T08:01:01.922Z', 'Instance:SystemMaintenance.Reboot:Scheduled'),
    ],
    'alibaba-cloud-ecs-events:13': [
        ('InstanceStateChange', 'info', 'cn-hangzhou.192.168.0.10', 'i-bp1ecr********5go2go', '', 'Running', '2019-04-09T04:18:26.922Z', 'Instance:StateChange'),
    ],
    'alibaba-cloud-ecs-events:14': [
        ('SpotInterruption', 'critical', 'cn-hangzhou.192.168.0.10', 'i-bp1ecr********5go2go', '', '', '2019-04-09T04:18:26.922Z', 'Instance:PreemptibleInstanceInterruption'),
    ],
    'alibaba-cloud-ecs-events:15': [
        ('CloudNotice', 'info', 'cn-hangzhou.192.168.0.10', 'i-bp1ecr********5go2go', '', '', '2018-06-08T01:25:37.922Z', 'Instance:LiveMigrationAcrossDDH'),
    ],
    'alibaba-cloud-ecs-events:16': [
        ('CloudNotice', 'info', 'cn-hangzhou.192.168.0.10', 'i-bp1ecr********5go2go', '', '', '2018-06-08T01:25:45.922Z', 'Instance:LiveMigrationAcrossDDH'),
    ],
    'alibaba-cloud-ecs-events:17': [
        ('CloudNotice', 'warning', 'cn-hangzhou.192.168.0.10', 'i-bp1ecr********5go2go', '', '', '2018-06-08T01:25:45.922Z', 'Instance:LiveMigrationAcrossDDH'),
    ],
    'alibaba-cloud-ecs-events:18': [
        ('CloudNotice', 'info', 'cn-hangzhou.192.168.0.10', 'i-bp1ecr********5go2go', '', '', '2019-04-09T04:18:26.922Z', 'Instance:PerformanceModeChange'),
    ],
    'alibaba-cloud-ecs-events:19': [
        ('CloudNotice', 'warning', 'cn-hangzhou.192.168.0.10', 'i-bp1ecr********5go2go', '', '', '2019-04-09T04:18:26.922Z', 'Instance:BurstablePerformanceRestricted'),
    ],
    'alibaba-cloud-ecs-events:20': [
        ('InstanceStateChange', 'warning', 'cn-hangzhou.192.168.0.10', 'i-bp1ecr********5go2go', '', 'Stopping', '2018-12-26T14:01:14.058Z', 'Instance:StateChange'),
    ],
    'awsdocs-ec2-user-guide:1': [
        ('HealthEvent', 'info', '', 'cr-01234567890abcdef', '', '', '2023-03-10T12:03:38.000Z', 'AWS_EC2_ODCR_UNDERUTILIZATION_NOTIFICATION'),
    ],
    'awsdocs-ec2-user-guide:2': [
        ('HealthEvent', 'info', '', 'cr-01234567890abcdef | us-east-1b | t3.medium | Linux/UNIX | 0.0%', '', '', '2023-03-07T06:06:01.000Z', 'AWS_EC2_ODCR_UNDERUTILIZATION_NOTIFICATION_SUMMARY'),
        ('HealthEvent', 'info', '', 'cr-09876543210fedcba | us-east-1a | t3.medium | Linux/UNIX | 0.0%', '', '', '2023-03-07T06:06:01.000Z', 'AWS_EC2_ODCR_UNDERUTILIZATION_NOTIFICATION_SUMMARY'),
    ],
    'awsdocs-ec2-user-guide:3': [
        ('InstanceStateChange', 'info', '', 'i-abcd1111', '', 'pending', '2021-11-11T21:29:54.000Z', 'EC2 Instance State-change Notification'),
    ],
    'awsdocs-ec2-user-guide:4': '400: an instance-scoped body (IMDS or describe-instance-status Events) carries no instance id: post it with ?instance=<instance id> in the URL',
    'awsdocs-ec2-user-guide:4:as-published': '400: not valid JSON…',
    'awsdocs-ec2-user-guide:4:instance': [
        ('InstanceRebootScheduled', 'critical', '', 'i-abcd1111', '2019-03-14T20:00:00.000Z', 'Scheduled', '2024-05-01T10:00:00.000Z', 'system-reboot'),
    ],
    'awsdocs-ec2-user-guide:5': '400: an instance-scoped body (IMDS or describe-instance-status Events) carries no instance id: post it with ?instance=<instance id> in the URL',
    'awsdocs-ec2-user-guide:5:as-published': '400: not valid JSON…',
    'awsdocs-ec2-user-guide:5:instance': [
        ('InstanceMaintenance', 'critical', '', 'i-abcd1111', '2015-05-23T00:00:00.000Z', 'Scheduled', '2024-05-01T10:00:00.000Z', 'instance-stop'),
    ],
    'awsdocs-ec2-user-guide:6': '400: an instance-scoped body (IMDS or describe-instance-status Events) carries no instance id: post it with ?instance=<instance id> in the URL',
    'awsdocs-ec2-user-guide:6:instance': [
        ('InstanceRebootScheduled', 'critical', '', 'i-abcd1111', '2019-01-21T09:00:43.000Z', 'Scheduled', '2024-05-01T10:00:00.000Z', 'system-reboot'),
    ],
    'awsdocs-ec2-user-guide:7': '400: an instance-scoped body (IMDS or describe-instance-status Events) carries no instance id: post it with ?instance=<instance id> in the URL',
    'awsdocs-ec2-user-guide:7:instance': [
        ('InstanceRebootEnded', 'info', '', 'i-abcd1111', '2019-01-21T09:00:43.000Z', 'Canceled', '2024-05-01T10:00:00.000Z', 'system-reboot'),
        ('InstanceRebootEnded', 'info', '', 'i-abcd1111', '2019-01-29T09:00:43.000Z', 'Executed', '2024-05-01T10:00:00.000Z', 'system-reboot'),
    ],
    'awsdocs-ec2-user-guide:8': '400: an instance-scoped body (IMDS or describe-instance-status Events) carries no instance id: post it with ?instance=<instance id> in the URL',
    'awsdocs-ec2-user-guide:8:as-published': '400: not valid JSON…',
    'awsdocs-ec2-user-guide:8:instance': [
        ('InstanceRebootScheduled', 'critical', '', 'i-abcd1111', '2019-03-14T20:00:00.000Z', 'Scheduled', '2024-05-01T10:00:00.000Z', 'system-reboot'),
    ],
    'awsdocs-ec2-user-guide:9': '400: an instance-scoped body (IMDS or describe-instance-status Events) carries no instance id: post it with ?instance=<instance id> in the URL',
    'awsdocs-ec2-user-guide:9:as-published': '400: not valid JSON…',
    'awsdocs-ec2-user-guide:9:instance': [
        ('InstanceRebootScheduled', 'critical', '', 'i-abcd1111', '2019-03-14T20:00:00.000Z', 'Scheduled', '2024-05-01T10:00:00.000Z', 'system-reboot'),
    ],
    'awsdocs-ec2-user-guide:10': "400: time: invalid time 'yyyy-mm-ddThh:mm:ssZ'",
    'awsdocs-ec2-user-guide:10:filled': [
        ('RebalanceRecommendation', 'warning', '', 'i-1234567890abcdef0', '', '', '2024-05-01T09:59:00.000Z', 'EC2 Instance Rebalance Recommendation'),
    ],
    'awsdocs-ec2-user-guide:11': "400: an EventBridge event pattern (rule), not an event: 'source'/'detail-type' are lists",
    'awsdocs-ec2-user-guide:12': '400: an instance-scoped body (IMDS or describe-instance-status Events) carries no instance id: post it with ?instance=<instance id> in the URL',
    'awsdocs-ec2-user-guide:12:instance': [
        ('RebalanceRecommendation', 'warning', '', 'i-abcd1111', '', '', '2020-10-27T08:22:00.000Z', 'imds:rebalance'),
    ],
    'awsdocs-ec2-user-guide:13': "400: time: invalid time 'yyyy-mm-ddThh:mm:ssZ'",
    'awsdocs-ec2-user-guide:13:filled': [
        ('SpotInterruption', 'critical', '', 'i-1234567890abcdef0', '2024-05-01T10:01:00.000Z', '', '2024-05-01T09:59:00.000Z', 'EC2 Spot Instance Interruption Warning'),
    ],
    'awsdocs-ec2-user-guide:14': '400: an instance-scoped body (IMDS or describe-instance-status Events) carries no instance id: post it with ?instance=<instance id> in the URL',
    'awsdocs-ec2-user-guide:14:instance': [
        ('SpotInterruption', 'critical', '', 'i-abcd1111', '2017-09-18T08:22:00.000Z', '', '2024-05-01T10:00:00.000Z', 'imds:spot/instance-action'),
    ],
    'awsdocs-ec2-user-guide:15': '400: an instance-scoped body (IMDS or describe-instance-status Events) carries no instance id: post it with ?instance=<instance id> in the URL',
    'awsdocs-ec2-user-guide:15:instance': [
        ('SpotInterruption', 'critical', '', 'i-abcd1111', '2017-09-18T08:22:00.000Z', '', '2024-05-01T10:00:00.000Z', 'imds:spot/instance-action'),
    ],
    'aws-node-termination-handler:1': "400: time: invalid time '<date_utc>'",
    'aws-node-termination-handler:1:filled': [
        ('InstanceStateChange', 'warning', 'ip-10-0-129-220.ec2.internal', 'i-04c3029e207ee2de8', '', 'terminating', '2024-05-01T09:59:00.000Z', 'EC2 Instance-terminate Lifecycle Action'),
    ],
    'aws-node-termination-handler:2': "400: time: invalid time '<date_utc>'",
    'aws-node-termination-handler:2:filled': [
        ('InstanceStateChange', 'warning', 'ip-10-0-129-220.ec2.internal', 'i-04c3029e207ee2de8', '', 'terminating', '2024-05-01T09:59:00.000Z', 'EC2 Instance-terminate Lifecycle Action'),
    ],
    'aws-node-termination-handler:3': "400: time: invalid time '<date_utc>'",
    'aws-node-termination-handler:3:filled': [
        ('InstanceStateChange', 'warning', 'ip-10-0-129-220.ec2.internal', 'i-04c3029e207ee2de8', '', 'stopping', '2024-05-01T09:59:00.000Z', 'EC2 Instance State-change Notification'),
    ],
    'aws-node-termination-handler:4': "400: time: invalid time '<date_utc>'",
    'aws-node-termination-handler:4:filled': [
        ('InstanceStateChange', 'warning', 'ip-10-0-129-220.ec2.internal', 'i-04c3029e207ee2de8', '', 'stopping', '2024-05-01T09:59:00.000Z', 'EC2 Instance State-change Notification'),
    ],
    'aws-node-termination-handler:5': "400: time: invalid time '<date_utc>'",
    'aws-node-termination-handler:5:filled': [
        ('RebalanceRecommendation', 'warning', 'ip-10-0-129-220.ec2.internal', 'i-04c3029e207ee2de8', '', '', '2024-05-01T09:59:00.000Z', 'EC2 Instance Rebalance Recommendation'),
    ],
    'aws-node-termination-handler:6': "400: time: invalid time '<date_utc>'",
    'aws-node-termination-handler:6:filled': [
        ('RebalanceRecommendation', 'warning', 'ip-10-0-129-220.ec2.internal', 'i-04c3029e207ee2de8', '', '', '2024-05-01T09:59:00.000Z', 'EC2 Instance Rebalance Recommendation'),
    ],
    'aws-node-termination-handler:7': "400: time: invalid time '<START_TIME>'",
    'aws-node-termination-handler:7:filled': [
        ('InstanceMaintenance', 'warning', 'ip-10-0-129-220.ec2.internal', 'i-04c3029e207ee2de8', '2016-06-05T15:10:09.000Z', '', '2024-05-01T09:59:00.000Z', 'AWS_EC2_DEDICATED_HOST_NETWORK_MAINTENANCE_SCHEDULED'),
    ],
    'aws-node-termination-handler:8': "400: time: invalid time '<date_utc>'",
    'aws-node-termination-handler:8:filled': [
        ('SpotInterruption', 'critical', 'ip-10-0-129-220.ec2.internal', 'i-04c3029e207ee2de8', '2024-05-01T10:01:00.000Z', '', '2024-05-01T09:59:00.000Z', 'EC2 Spot Instance Interruption Warning'),
    ],
    'aws-health-tools/mock_payload.json': [
        ('DiskFault', 'critical', '', 'vol-04e5b75b51ba5e835', '', '', '2017-02-07T00:55:52.000Z', 'AWS_EBS_VOLUME_LOST'),
    ],
    'aws-health-tools/mockpayload.json': [
        ('DiskFault', 'critical', '', '<<ebs-vol-id>>', '', '', '2018-11-27T01:30:00.000Z', 'AWS_EBS_VOLUME_LOST'),
    ],
    'aws-health-tools/sampleevent.json': [
        ('HealthEvent', 'warning', '', 'cluster/service1', '2023-08-16T23:18:51.000Z', '', '2023-08-16T23:18:52.000Z', 'AWS_ECS_TASK_PATCHING_RETIREMENT'),
        ('HealthEvent', 'warning', '', 'cluster/service2', '2023-08-16T23:18:51.000Z', '', '2023-08-16T23:18:52.000Z', 'AWS_ECS_TASK_PATCHING_RETIREMENT'),
    ],
    'aws-health-tools/testHeatlhEvent.json': [
        ('HealthEvent', 'info', '', '', '', '', '2016-06-05T06:27:57.000Z', 'AWS_EC2_HEALTH_TEST_EVENT'),
    ],
    'aws-health-tools/testevent.json': [
        ('DiskStalled', 'warning', '', 'i-abcd1111', '', '', '2016-06-05T06:27:57.000Z', 'AWS_EC2_INSTANCE_STORE_DRIVE_PERFORMANCE_DEGRADED'),
    ],
}


@pytest.fixture(scope="module")
def all_cases(data_dir):
    return cases(data_dir)


@pytest.fixture(scope="module")
def nodes(data_dir):
    return node_map(data_dir)


def test_every_payload_is_covered(all_cases):
    assert sorted(all_cases) == sorted(EXPECTED)
    assert sum(isinstance(v, list) for v in EXPECTED.values()) == 46  # payloads accepted (as sent or repaired)
    assert sum(len(v) for v in EXPECTED.values() if isinstance(v, list)) == 51  # events they carry


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_payload(all_cases, nodes, key):
    body, instance = all_cases[key]
    assert_outcome(outcome(body, instance, nodes), EXPECTED[key])


def assert_outcome(got, want) -> None:
    if isinstance(want, str) and want.endswith("…"):  # a reason whose tail quotes the JSON parser's position
        assert isinstance(got, str) and got.startswith(want[:-1]), got
    else:
        assert got == want


def test_health_event_naming_instances_by_arn(data_dir, nodes):
    """A Health event whose resources are instance ARNs (no affectedEntities): one event per instance, on its node."""
    d = orjson.loads((data_dir / "aws-ec2-health-events" / "aws-health-tools" / "testevent.json").read_bytes())
    del d["detail"]["affectedEntities"]
    d["detail"]["eventTypeCode"] = "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED"
    d["detail"]["eventTypeCategory"] = "scheduledChange"
    d["resources"] = ["arn:aws:ec2:us-east-1:123456789012:instance/i-04c3029e207ee2de8", "i-0ff943b959e44c16f"]
    assert outcome(orjson.dumps(d), None, nodes) == [
        ("InstanceMaintenance", "critical", "ip-10-0-129-220.ec2.internal", "i-04c3029e207ee2de8",
         "2016-06-05T15:10:09.000Z", "", "2016-06-05T06:27:57.000Z", "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED"),
        ("InstanceMaintenance", "critical", "ip-10-0-151-183.ec2.internal", "i-0ff943b959e44c16f",
         "2016-06-05T15:10:09.000Z", "", "2016-06-05T06:27:57.000Z", "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED"),
    ]
    d["detail"]["statusCode"] = "closed"
    assert {s[1] for s in outcome(orjson.dumps(d), None, nodes)} == {"info"}


def test_retried_delivery_keeps_its_id_and_a_changed_one_does_not(all_cases, nodes):
    body, _ = all_cases["alibaba-cloud-ecs-events:11"]
    first, again = parse(body, nodes=nodes, now=NOW), parse(body, nodes=nodes, now=NOW + 60)
    assert first[0].id == again[0].id
    imds, instance = all_cases["awsdocs-ec2-user-guide:14:instance"]
    assert parse(imds, instance=instance, now=NOW)[0].id == parse(imds, instance=instance, now=NOW + 60)[0].id
    changed = orjson.loads(body)
    changed["content"]["eventStatus"] = "Executing"
    assert parse(orjson.dumps(changed), nodes=nodes, now=NOW)[0].id != first[0].id
