"""The code tables: every catalogued Alibaba ECS event and every EC2 scheduled Health event maps sensibly."""

from __future__ import annotations

import csv
import json
import re

import orjson
import pytest

from collectors.cloud.catalog import (
    ALIBABA,
    AWS_HEALTH,
    ENDED,
    ENDED_PHASES,
    HEALTH_CATEGORY_SEVERITY,
    PHASES,
    REASONS,
)
from collectors.cloud.intake import parse
from core.records import SEVERITIES

RANK = {"info": 0, "warning": 1, "critical": 2}
LEVEL = {"Info": "info", "Warn": "warning", "Critical": "critical"}

# What each family of ECS event names must become (anchored; every catalogue name matches exactly one); in an
# ended phase (Executed, Avoided, Canceled) a maintenance or stall becomes its end (ENDED), the family in label
# original_reason.
FAMILIES = (
    (r"^Disk:Stalled:\w+$", "DiskStalled"),
    (r"^Disk:(ErrorDetected:\w+|OverduePaymentRelease)$", "DiskFault"),
    (r"^Instance:PreemptibleInstanceInterruption$", "SpotInterruption"),
    (r"^Instance:SystemMaintenance\.Reboot(AndIsolateErrorDisk|AndReInitErrorDisk)?:\w+$", "InstanceRebootScheduled"),
    (r"^Instance:System(Maintenance|Failure)\.Redeploy:\w+$", "InstanceRedeployScheduled"),
    (r"^Instance:(SystemFailure|InstanceFailure)\.(Reboot|Stop|Delete):\w+$", "InstanceFailure"),
    (r"^Instance:SystemMaintenance\.(Stop|IsolateErrorDisk|ReInitErrorDisk):\w+$", "InstanceMaintenance"),
    (r"^Instance:StateChange$", "InstanceStateChange"),
    # no downtime, nothing to drain (a hot migration, a possible slowdown): notices, not maintenance
    (r"^(Snapshot:CreateSnapshotCompleted|Disk:\w+Completed|Instance:(BurstablePerformanceRestricted|"
     r"PerformanceModeChange|Security\.TpmAlert:\w+|LiveMigrationAcrossDDH|"
     r"SystemMaintenance\.PerformanceImpact:\w+))$", "CloudNotice"),
)


@pytest.fixture(scope="module")
def catalogue(data_dir):
    with open(data_dir / "alibaba-cloud-ecs-events" / "ecs_system_event_catalog.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def notification(row: dict) -> dict:
    """A CloudMonitor notification for a catalogue row, shaped like the documented samples."""
    name = row["event_name"]
    content = {"eventId": "e-bp11trd0000pqum2", "instanceId": "i-bp1ecr00005go2go"}
    if name.startswith("Disk:"):
        content |= {"diskId": "d-t4ndyqve0000n4ds", "device": "/dev/xvdb"}
    if name == "Instance:StateChange":
        content = {"resourceId": "i-bp1ecr00005go2go", "resourceType": "ALIYUN::ECS::Instance", "state": "Stopped"}
    return {"ver": "1.0", "id": "2256A988-0B26-4E2B-820A-8A0580D0B8E5", "product": "ECS",
            "resourceId": "acs:ecs:cn-hangzhou:1690700000000030:instance/i-bp1ecr00005go2go",
            "level": row["level"].upper(), "name": name, "userId": "1690700000000030",
            "eventTime": "20190409T121826.922+0800", "regionId": "cn-hangzhou", "content": content}


def test_catalogue_has_73_events(catalogue):
    assert len(catalogue) == 73
    assert len({r["event_name"] for r in catalogue}) == 73


def test_every_catalogued_event_maps_sensibly(catalogue):
    problems = []
    for row in catalogue:
        name, phase, level = row["event_name"], row["state"], LEVEL[row["level"]]
        [ev] = parse(orjson.dumps(notification(row)), nodes={"i-bp1ecr00005go2go": "node-a"})
        families = [reason for pat, reason in FAMILIES if re.match(pat, name)]
        checks = {
            "one family": len(families) == 1,
            "family reason": families[:1] == [ev.labels.get("original_reason", ev.reason)],
            "its end in an ended phase": ev.reason == (ENDED.get(families[0], families[0])
                                                       if phase in ENDED_PHASES and families else
                                                       families[0] if families else ev.reason),
            "known reason": ev.reason in REASONS,
            "known severity": ev.severity in SEVERITIES,
            "code kept": ev.labels["event_code"] == name,
            "on the node": ev.entity.node == "node-a" and ev.labels["instance"] == "i-bp1ecr00005go2go",
            "phase label": ev.labels.get("phase", "") == (phase if phase in PHASES else ""),
        }
        if name == "Instance:StateChange":
            checks["a stopped node -> warning"] = ev.severity == "warning" and ev.labels["state"] == "Stopped"
        elif phase in ("Avoided", "Canceled") or level == "info":
            checks["nothing to do -> info"] = ev.severity == "info"
        elif phase == "Executed":
            checks["finished -> not above the catalogue level"] = RANK[ev.severity] <= RANK[level]
        else:
            checks["active -> at least the catalogue level"] = RANK[ev.severity] >= RANK[level]
        problems += [f"{name}: {check} ({ev.reason}, {ev.severity})" for check, ok in checks.items() if not ok]
    assert problems == []


def test_eventbridge_form_maps_like_the_cloudmonitor_form(catalogue):
    """The EventBridge CloudEvent (type ecs:<resource>:<event type>, phase in data.eventStatus) agrees."""
    for row in catalogue:
        cm = notification(row)
        event_type, _, phase = row["event_name"].partition(":")[2].rpartition(":")
        if phase not in PHASES:
            event_type, phase = row["event_name"].partition(":")[2], ""
        data = dict(cm["content"]) | ({"eventStatus": phase} if phase else {})
        ce = {"specversion": "1.0", "id": "eb-1", "source": "acs.ecs", "time": "2019-04-09T04:18:26.922Z",
              "type": f"ecs:{row['event_name'].split(':')[0]}:{event_type}", "aliyunregionid": "cn-hangzhou",
              "subject": cm["resourceId"], "data": data}
        [a] = parse(orjson.dumps(cm))
        [b] = parse(orjson.dumps(ce))
        assert (b.reason, b.severity, b.labels.get("phase"), b.time) == (a.reason, a.severity, a.labels.get("phase"),
                                                                          a.time), row["event_name"]


def test_alibaba_table_covers_the_catalogue_and_nothing_unknown(catalogue):
    types = {re.sub(r":(" + "|".join(PHASES) + r")$", "", r["event_name"]) for r in catalogue}
    assert types <= set(ALIBABA)
    assert all(reason in REASONS for reason, _ in ALIBABA.values())


def test_aws_health_table_against_the_event_type_catalogue(data_dir):
    with open(data_dir / "aws-ec2-health-events" / "aws-health-tools" / "all_events.json") as fh:
        types = json.load(fh)["eventTypes"]
    assert len(types) == 1474
    codes = {t["code"] for t in types}
    # every category has a severity; every code of the table is a real one (one is newer than this catalogue)
    assert {t["category"] for t in types} <= set(HEALTH_CATEGORY_SEVERITY)
    assert set(AWS_HEALTH) - codes == {"AWS_EC2_SYSTEM_REBOOT_MAINTENANCE_SCHEDULED"}
    # every scheduled change of EC2 instances or hosts has a precise reason, not the generic HealthEvent
    ec2_scheduled = {t["code"] for t in types if t["service"] == "EC2" and t["category"] == "scheduledChange"}
    assert ec2_scheduled - set(AWS_HEALTH) == set()
    assert all(AWS_HEALTH[c][0] in ("InstanceRebootScheduled", "InstanceMaintenance") for c in ec2_scheduled)
