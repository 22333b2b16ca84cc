"""A provider event's whole life through the intake and the default pack's cloud rules (the production engine):
scheduled, then canceled, avoided, completed, closed or failed; one phase vocabulary for every provider; one id
for one EC2 event whichever channel reports it; Azure bodies refused as such."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from collectors.cloud.event import PayloadError
from collectors.cloud.intake import parse
from rules.engine import Engine
from rules.load import load_packs

PACK = Path(__file__).resolve().parents[2] / "rules" / "packs" / "default" / "cloud.yaml"
AWS_I, ALI_I = "i-1234567890abcdef0", "i-bp1ecr5go2go"
NODES = {AWS_I: "node-a", ALI_I: "node-b"}
DAY = 86400.0


@pytest.fixture(scope="module")
def ruleset():
    return load_packs([PACK])


class Run:
    """Payloads through parse() and the engine, one state; ``alerts`` is every (alertname, status) seen."""

    def __init__(self, ruleset):
        self.engine, self.state, self.alerts, self.events, self.last = Engine(ruleset), {}, [], [], 0.0

    def post(self, payload, *, now: float = 0.0, **kw) -> list:
        evs = parse(orjson.dumps(payload), nodes=NODES, now=now, **kw)
        for ev in evs:
            self.events.append(ev)
            self.alerts += [(a.labels["alertname"], a.status) for a in self.engine.process(ev, self.state, ev.time)]
            self.last = max(self.last, ev.time)
        return evs

    def tick(self, after: float) -> list:
        out = [(a.labels["alertname"], a.status) for a in self.engine.tick(self.last + after, self.state)]
        self.alerts += out
        return out


def imds(state: str, description: str = "scheduled reboot", code: str = "system-reboot") -> list:
    return [{"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code": code, "Description": description,
             "EventId": "instance-event-0d59937288b749b32", "NotAfter": "21 Jan 2019 09:17:23 GMT", "State": state}]


def describe(description: str, code: str = "instance-stop") -> dict:
    return {"InstanceStatuses": [{"InstanceId": AWS_I, "Events": [
        {"InstanceEventId": "instance-event-0d59937288b749b32", "Code": code, "Description": description,
         "NotBefore": "2019-01-21T09:00:43.000Z", "NotAfter": "2019-01-21T09:17:23.000Z"}]}]}


def health(code: str, status: str, time: str, category: str = "scheduledChange") -> dict:
    return {"version": "0", "id": f"h-{status}", "detail-type": "AWS Health Event", "source": "aws.health",
            "time": time, "region": "us-east-1", "resources": [AWS_I],
            "detail": {"eventArn": "arn:aws:health:us-east-1::event/EC2/x/1", "service": "EC2",
                       "eventTypeCode": code, "eventTypeCategory": category, "statusCode": status,
                       "startTime": "Sun, 05 Jun 2016 15:10:09 GMT", "endTime": "Sun, 05 Jun 2016 17:10:09 GMT",
                       "affectedEntities": [{"entityValue": AWS_I}],
                       "eventDescription": [{"language": "en_US", "latestDescription": "maintenance"}]}}


def ali(name: str, time: str = "20190409T121826.922+0800", **content) -> dict:
    return {"ver": "1.0", "id": f"A-{name}-{time}", "product": "ECS", "name": name, "eventTime": time,
            "regionId": "cn-hangzhou", "content": {"instanceId": ALI_I, "eventId": "e-1"} | content}


# ---------------------------------------------------------------- 1. AWS scheduled events: one phase vocabulary


def test_aws_canceled_and_completed_scheduled_events_are_ended_phases_and_fire_nothing(ruleset):
    run = Run(ruleset)
    [c] = run.post(imds("canceled", "[Canceled] scheduled reboot"), now=1548000000.0, instance=AWS_I)
    [d] = run.post(imds("completed", "[Completed] scheduled reboot"), now=1548000060.0, instance=AWS_I)
    [s] = run.post(describe("[Completed] The instance is running on degraded hardware"), now=1548000120.0)
    [t] = run.post(describe("[Canceled] The instance is running on degraded hardware"), now=1548000180.0)
    assert [(e.reason, e.labels["phase"], e.labels["state"], e.severity) for e in (c, d, s, t)] == [
        ("InstanceRebootEnded", "Canceled", "canceled", "info"),
        ("InstanceRebootEnded", "Executed", "completed", "info"),
        ("InstanceMaintenanceEnded", "Executed", "completed", "info"),
        ("InstanceMaintenanceEnded", "Canceled", "canceled", "info")]
    assert c.labels["original_reason"] == "InstanceRebootScheduled"
    # a completed event is re-posted by a poller for up to a week: never an alert, never a drain
    for day in range(1, 8):
        run.post(describe("[Completed] The instance is running on degraded hardware"), now=1548000120.0 + day * DAY)
    assert run.alerts == []
    [active] = parse(orjson.dumps(imds("active")), instance=AWS_I, now=1548000000.0)
    assert (active.reason, active.labels["phase"], active.labels["state"]) == ("InstanceRebootScheduled", "Scheduled",
                                                                               "active")
    with pytest.raises(PayloadError, match=r"unknown scheduled event state 'pending'"):
        parse(orjson.dumps(imds("pending")), instance=AWS_I)


# ---------------------------------------------------------------- 2. AWS Health closed -> Executed


def test_aws_health_closed_is_executed_and_does_not_fire(ruleset):
    run = Run(ruleset)
    [ev] = run.post(health("AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED", "closed", "2016-06-06T00:00:00Z"))
    assert (ev.reason, ev.labels["phase"], ev.labels["status"], ev.severity) == (
        "InstanceMaintenanceEnded", "Executed", "closed", "info")
    run.post(health("AWS_EC2_INSTANCE_STORE_DRIVE_PERFORMANCE_DEGRADED", "closed", "2016-06-06T00:01:00Z", "issue"))
    run.post(health("AWS_EC2_OPERATIONAL_ISSUE", "closed", "2016-06-06T00:03:00Z", "issue"))
    assert run.alerts == []
    # an unplanned fault seen only closed still happened (the volume is lost): it fires
    run.post(health("AWS_EBS_VOLUME_LOST", "closed", "2016-06-06T00:02:00Z", "issue"))
    assert run.alerts == [("CloudDiskFault", "firing")]
    [open_] = parse(orjson.dumps(health("AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED", "open", "2016-06-01T00:00:00Z")))
    assert (open_.reason, open_.labels.get("phase", "")) == ("InstanceMaintenance", "")


# ---------------------------------------------------------------- 3. a provider's cancellation or completion resolves


@pytest.mark.parametrize("name, alert", [
    ("Instance:SystemMaintenance.Reboot", "CloudInstanceRebootScheduled"),
    ("Instance:SystemMaintenance.Redeploy", "CloudInstanceRedeployScheduled"),
    ("Instance:SystemMaintenance.Stop", "CloudInstanceMaintenance"),
])
@pytest.mark.parametrize("end", ["Canceled", "Avoided", "Executed"])
def test_alibaba_end_of_a_maintenance_resolves_its_alert(ruleset, name, alert, end):
    run = Run(ruleset)
    run.post(ali(f"{name}:Scheduled", notBefore="2019-04-12T01:01:01Z"))
    assert run.alerts == [(alert, "firing")]
    run.post(ali(f"{name}:{end}", "20190410T160101.922+0800", notBefore="2019-04-12T01:01:01Z"))
    assert run.alerts == [(alert, "firing"), (alert, "resolved")]
    assert run.tick(30 * DAY) == []


def test_aws_cancel_and_health_close_resolve_their_alerts(ruleset):
    run = Run(ruleset)
    run.post(imds("active"), now=1548000000.0, instance=AWS_I)
    run.post(imds("canceled", "[Canceled] scheduled reboot"), now=1548043200.0, instance=AWS_I)
    assert run.alerts == [("CloudInstanceRebootScheduled", "firing"), ("CloudInstanceRebootScheduled", "resolved")]
    run = Run(ruleset)
    run.post(health("AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED", "open", "2016-06-01T00:00:00Z"))
    run.post(health("AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED", "closed", "2016-06-06T00:00:00Z"))
    assert run.alerts == [("CloudInstanceMaintenance", "firing"), ("CloudInstanceMaintenance", "resolved")]


def test_the_end_of_one_kind_of_maintenance_leaves_another_kind_firing(ruleset):
    run = Run(ruleset)
    run.post(ali("Instance:SystemMaintenance.Redeploy:Scheduled"))
    run.post(ali("Instance:SystemMaintenance.Reboot:Canceled", "20190410T160101.922+0800"))
    assert run.alerts == [("CloudInstanceRedeployScheduled", "firing")]


# ---------------------------------------------------------------- 4. held until a maintenance two weeks ahead


def test_a_maintenance_notified_two_weeks_ahead_is_still_held_the_day_before(ruleset):
    run = Run(ruleset)
    run.post(health("AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED", "upcoming", "2016-05-22T15:10:09Z"))
    assert run.alerts == [("CloudInstanceRebootScheduled", "firing")]
    assert run.tick(13 * DAY) == []  # the reboot is due on 2016-06-05: the alert and the node condition hold
    assert run.tick(22 * DAY) == [("CloudInstanceRebootScheduled", "resolved")]  # a lost end notice still times out


# ---------------------------------------------------------------- 5. disk stall: a state the end notice resolves


def test_a_disk_stall_holds_until_its_end_notice_and_the_end_alone_fires_nothing(ruleset):
    run = Run(ruleset)
    run.post(ali("Disk:Stalled:Executing", "20190410T080101.922+0800", diskId="d-1", device="/dev/xvdb"))
    assert run.tick(45 * 60) == []  # a 45-minute stall: still firing (it resolved after 30m)
    [end] = run.post(ali("Disk:Stalled:Executing", "20190410T084601.922+0800", diskId="d-1", device="/dev/xvdb",
                         executeFinishTime="2019-04-10T00:46:01Z"))
    assert (end.reason, end.labels["phase"], end.labels["original_reason"]) == ("DiskStallEnded", "Executed",
                                                                                "DiskStalled")
    assert run.alerts == [("CloudDiskStalled", "firing"), ("CloudDiskStalled", "resolved")]
    run = Run(ruleset)
    run.post(ali("Disk:Stalled:Executed", diskId="d-1"))
    assert run.alerts == []  # the end of a stall alone fires nothing
    # an unplanned failure found only after it ended (Describe* polling marks it Executed) still happened
    run.post(ali("Disk:ErrorDetected:Executed", diskId="d-1"))
    run.post(ali("Instance:SystemFailure.Reboot:Executed"))
    assert run.alerts == [("CloudDiskFault", "firing"), ("CloudInstanceFailure", "firing")]


# ---------------------------------------------------------------- 6. no-downtime notices do not drain


@pytest.mark.parametrize("name", ["Instance:LiveMigrationAcrossDDH", "Instance:SystemMaintenance.PerformanceImpact:Executing",
                                  "Instance:SystemMaintenance.CleanReleasedDisks:Scheduled"])
def test_no_downtime_alibaba_events_are_notices(ruleset, name):
    run = Run(ruleset)
    [ev] = run.post(ali(name))
    assert ev.reason == "CloudNotice"
    assert run.alerts == []


# ---------------------------------------------------------------- 7. avoided failures are quiet, failed maintenance pages


def test_avoided_failure_is_quiet_and_failed_maintenance_is_critical(ruleset):
    run = Run(ruleset)
    run.post(ali("Instance:SystemFailure.Delete:Avoided"))
    assert run.alerts == []
    for name in ("Instance:SystemMaintenance.Reboot:Failed", "Instance:SystemMaintenance.Stop:Failed"):
        run = Run(ruleset)
        [ev] = run.post(ali(name))
        assert ev.severity == "critical"
        assert run.alerts == [("CloudMaintenanceFailed", "firing")]
    run = Run(ruleset)
    run.post(ali("Instance:SystemFailure.Reboot:Failed"))
    assert run.alerts == [("CloudInstanceFailure", "firing")]


# ---------------------------------------------------------------- 8. one EC2 event, one id, whichever channel


def test_one_ec2_scheduled_event_has_one_id_from_imds_and_describe_instance_status():
    [a] = parse(orjson.dumps(imds("active")), instance=AWS_I, now=1548000000.0)
    [b] = parse(orjson.dumps(describe("scheduled reboot", "system-reboot")), now=1548000300.0)
    assert a.id == b.id
    # retries keep it; a change of state or of the window does not
    assert parse(orjson.dumps(imds("active")), instance=AWS_I, now=1548009999.0)[0].id == a.id
    [c] = parse(orjson.dumps(imds("canceled", "[Canceled] scheduled reboot")), instance=AWS_I, now=1548000000.0)
    [d] = parse(orjson.dumps(describe("[Canceled] scheduled reboot", "system-reboot")), now=1548000000.0)
    assert c.id == d.id != a.id
    moved = imds("active")
    moved[0]["NotBefore"] = "22 Jan 2019 09:00:43 GMT"
    assert parse(orjson.dumps(moved), instance=AWS_I)[0].id != a.id


def test_ids_of_other_providers_still_hash_the_body(data_dir):
    """Alibaba's documented Reboot:Scheduled keeps the id it had (downstream dedup across an upgrade)."""
    lines = (data_dir / "alibaba-cloud-ecs-events" / "examples.jsonl").read_text().splitlines()
    sched = orjson.loads(lines[10])["payload"]
    [ev] = parse(orjson.dumps(sched))
    assert ev.id == "cloud-194ac9dd22ad791bbbf1"
    sched["content"]["extra"] = "x"
    assert parse(orjson.dumps(sched))[0].id != ev.id


# ---------------------------------------------------------------- 9. Azure Scheduled Events: refused as such

AZURE = {"DocumentIncarnation": 1, "Events": [
    {"EventId": "f020ba2e-3bc0-4c40-a10b-86575a9eabd5", "EventType": "Reboot", "ResourceType": "VirtualMachine",
     "Resources": ["aks-nodepool1-12345678-vmss_0"], "EventStatus": "Scheduled",
     "NotBefore": "Mon, 11 Apr 2022 22:26:58 GMT", "Description": "Virtual machine is going to be restarted.",
     "EventSource": "User", "DurationInSeconds": -1}]}


def test_azure_scheduled_events_are_refused_with_a_clear_reason():
    for body, kw in ((AZURE, {}), (AZURE, {"instance": AWS_I}), ({"Events": AZURE["Events"]}, {"instance": AWS_I})):
        with pytest.raises(PayloadError, match=r"^Azure Scheduled Events are not supported"):
            parse(orjson.dumps(body), **kw)


@pytest.mark.kafka
def test_azure_scheduled_events_are_a_400_and_dead_lettered(settings):
    from tests.collectors.test_cloud_intake import bearer, intake, post, read_topic

    body = orjson.dumps(AZURE)

    async def run():
        async with intake(settings) as (url, session):
            return await post(session, url, body, bearer(), {"instance": AWS_I})

    status, answer = asyncio.run(run())
    assert status == 400 and answer["error"].startswith("Azure Scheduled Events are not supported")
    [dead] = [orjson.loads(v) for _, v in read_topic(settings, "deadletter")]
    assert (dead["payload"], dead["reason"]) == (body.decode(), answer["error"])
    assert read_topic(settings, "events") == []


def test_a_polled_list_with_an_old_canceled_event_does_not_end_a_new_active_one(ruleset):
    """IMDS lists every event of the instance: an old canceled stop beside a new active one. The state rules were per
    node and kind, so each poll ended the new stop's alert and started it again (each start may drain): they are
    per provider event now (``group_by: [cloud_event_id]``)."""
    run = Run(ruleset)
    listing = [{"NotBefore": "28 Jan 2019 09:00:43 GMT", "Code": "instance-stop", "Description": "scheduled stop",
                "EventId": "instance-event-new", "NotAfter": "28 Jan 2019 09:17:23 GMT", "State": "active"},
               {"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code": "instance-stop",
                "Description": "[Canceled] scheduled stop", "EventId": "instance-event-old",
                "NotAfter": "21 Jan 2019 09:17:23 GMT", "State": "canceled"}]
    for poll in range(3):
        run.post(listing, now=1548000000.0 + 60 * poll, instance=AWS_I)
        run.post(list(reversed(listing)), now=1548000030.0 + 60 * poll, instance=AWS_I)
    assert run.alerts == [("CloudInstanceMaintenance", "firing")]
    # its own end ends it
    run.post([{**listing[0], "State": "canceled", "Description": "[Canceled] scheduled stop"}], now=1548000400.0,
             instance=AWS_I)
    assert run.alerts == [("CloudInstanceMaintenance", "firing"), ("CloudInstanceMaintenance", "resolved")]


def test_a_scheduled_notice_redelivered_after_its_cancel_does_not_set_it_again(ruleset):
    """At-least-once senders redeliver: the Scheduled notice arriving again after its Canceled (older eventTime)
    set the condition for 21 days. The cleared state keeps when it ended, so the older notice is ignored."""
    run = Run(ruleset)
    scheduled = ali("Instance:SystemMaintenance.Redeploy:Scheduled", notBefore="2019-04-12T01:01:01Z")
    run.post(scheduled)
    run.post(ali("Instance:SystemMaintenance.Redeploy:Canceled", "20190410T160101.922+0800",
                 notBefore="2019-04-12T01:01:01Z"))
    run.post(scheduled)  # the same body again, later
    assert run.alerts == [("CloudInstanceRedeployScheduled", "firing"), ("CloudInstanceRedeployScheduled", "resolved")]
    assert run.tick(22 * DAY) == []  # and the kept end is dropped after the timeout
    assert not [k for k in run.state if "CloudInstanceRedeployScheduled" in k]


def test_a_kept_end_is_dropped_after_the_timeout_even_if_the_node_keeps_sending_ready(ruleset):
    """Every NodeReady clears every group of the node: it moved a kept end's time forward, and the group stayed for
    ever on a node Ready more often than the timeout."""
    from core.records import Entity, Event

    run = Run(ruleset)
    run.post(ali("Instance:SystemMaintenance.Redeploy:Scheduled", notBefore="2019-04-12T01:01:01Z"))
    [end] = run.post(ali("Instance:SystemMaintenance.Redeploy:Canceled", "20190410T160101.922+0800",
                         notBefore="2019-04-12T01:01:01Z"))
    node = Entity(cluster=end.entity.cluster, kind="Node", name=end.entity.name, node=end.entity.node)
    for day in range(1, 60, 15):
        ready = Event(source="k8s-state", reason="NodeReady", entity=node, time=end.time + day * DAY, id=f"r{day}")
        run.engine.process(ready, run.state, ready.time)
        run.last = ready.time
    run.tick(1)
    assert not [k for k in run.state if "CloudInstanceRedeployScheduled" in k]
