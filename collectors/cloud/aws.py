"""AWS events -> Event records: EventBridge EC2 events (spot interruption warning, rebalance recommendation,
state change, Auto Scaling terminate lifecycle action), AWS Health events (also in the PutEvents entry
shape), and the instance-scoped bodies a node agent reads from IMDS or ``describe-instance-status``.

>>> [ev] = from_eventbridge({"version": "0", "id": "7bf7", "detail-type": "EC2 Instance State-change Notification",
...     "source": "aws.ec2", "time": "2021-11-11T21:29:54Z", "region": "us-east-1",
...     "detail": {"instance-id": "i-abcd1111", "state": "stopping"}})
>>> ev.reason, ev.severity, ev.labels["state"], ev.entity.name
('InstanceStateChange', 'warning', 'stopping', 'i-abcd1111')
"""

from __future__ import annotations

import re

import orjson

from collectors.cloud.catalog import (
    AWS_SCHEDULED,
    AWS_STATE_PHASE,
    HEALTH_STATUS_PHASE,
    health_reason,
    state_severity,
)
from collectors.cloud.event import AWS_INSTANCE, PayloadError, cloud_time, field_list, field_str, make_event
from core.records import Event, format_time

SPOT_WARNING = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
STATE_CHANGE = "EC2 Instance State-change Notification"
ASG_TERMINATE = "EC2 Instance-terminate Lifecycle Action"
HEALTH = "AWS Health Event"
SPOT_NOTICE_SECONDS = 120  # EC2 warns two minutes before it interrupts a spot instance
MAX_MESSAGE = 2000
_INSTANCE_ARN = re.compile(r"^arn:aws[\w-]*:ec2:[^:]*:[^:]*:instance/(i-[0-9a-f]+)$")


def instance_id(value, field: str) -> str:
    if not isinstance(value, str) or not AWS_INSTANCE.match(value):
        raise PayloadError(f"{field}: invalid EC2 instance id {value!r}")
    return value


def is_eventbridge(d) -> bool:
    return isinstance(d, dict) and "detail-type" in d


def from_eventbridge(d: dict) -> list[Event]:
    """One EventBridge event (``version``, ``id``, ``detail-type``, ``source``, ``time``, ``detail``...)."""
    dtype, source = d.get("detail-type"), d.get("source")
    if isinstance(dtype, list) or isinstance(source, list):
        raise PayloadError("an EventBridge event pattern (rule), not an event: 'source'/'detail-type' are lists")
    if not isinstance(dtype, str) or not isinstance(source, str):
        raise PayloadError("detail-type and source must be strings")
    detail = d.get("detail")
    if not isinstance(detail, dict):
        raise PayloadError("detail: expected an object")
    if dtype == HEALTH:
        return from_health(d, detail)
    cloud_id = d.get("id")
    if not isinstance(cloud_id, str) or not cloud_id:
        raise PayloadError("id: an EventBridge event needs its id")
    time = cloud_time(d.get("time"), "time")
    region = field_str(d, "region", required=False)
    common = {"provider": "aws", "code": dtype, "time": time, "cloud_id": cloud_id, "region": region, "body": detail}
    if source == "aws.ec2" and dtype == SPOT_WARNING:
        return [make_event(**common, reason="SpotInterruption", severity="critical",
                           instance=instance_id(detail.get("instance-id"), "detail.instance-id"),
                           scheduled=time + SPOT_NOTICE_SECONDS, labels={"action": detail.get("instance-action")})]
    if source == "aws.ec2" and dtype == REBALANCE:
        return [make_event(**common, reason="RebalanceRecommendation", severity="warning",
                           instance=instance_id(detail.get("instance-id"), "detail.instance-id"))]
    if source == "aws.ec2" and dtype == STATE_CHANGE:
        state = detail.get("state")
        if not isinstance(state, str) or not state:
            raise PayloadError("detail.state: expected the instance state")
        return [make_event(**common, reason="InstanceStateChange", severity=state_severity(state),
                           instance=instance_id(detail.get("instance-id"), "detail.instance-id"),
                           labels={"state": state})]
    if source == "aws.autoscaling" and dtype == ASG_TERMINATE:
        return [make_event(**common, reason="InstanceStateChange", severity="warning",
                           instance=instance_id(detail.get("EC2InstanceId"), "detail.EC2InstanceId"),
                           labels={"state": "terminating", "autoscaling_group": detail.get("AutoScalingGroupName"),
                                   "lifecycle_hook": detail.get("LifecycleHookName")})]
    raise PayloadError(f"unsupported EventBridge event: source {source!r}, detail-type {dtype!r}")


def _description(detail: dict) -> str:
    for desc in field_list(detail, "eventDescription", "detail."):
        if isinstance(desc, dict) and desc.get("latestDescription"):
            return str(desc["latestDescription"])[:MAX_MESSAGE]
    return ""


def from_health(d: dict, detail: dict) -> list[Event]:
    """An AWS Health event: one Event per affected entity (an instance is mapped to its node); a closed one
    has phase Executed (a maintenance's or degradation's end, which resolves what the open one set)."""
    code = field_str(detail, "eventTypeCode", "detail.")
    category = field_str(detail, "eventTypeCategory", "detail.", required=False)
    status = field_str(detail, "statusCode", "detail.", required=False)
    reason, severity = health_reason(code, category, status)
    phase = HEALTH_STATUS_PHASE.get(status, "")
    if d.get("time") is not None:
        time = cloud_time(d["time"], "time")
    else:
        stamp = detail.get("lastUpdatedTime") or detail.get("startTime")
        time = cloud_time(stamp, "detail.lastUpdatedTime")
    start = cloud_time(detail["startTime"], "detail.startTime") if detail.get("startTime") else None
    end = cloud_time(detail["endTime"], "detail.endTime") if detail.get("endTime") else None
    targets = [e.get("entityValue") for e in field_list(detail, "affectedEntities", "detail.") if isinstance(e, dict)]
    targets = [t for t in targets if isinstance(t, str) and t] or [r for r in field_list(d, "resources")
                                                                   if isinstance(r, str) and r]
    labels = {"eventTypeCode": code, "service": detail.get("service"), "category": category, "status": status,
              "event_arn": detail.get("eventArn"), "cloud_event_id": detail.get("eventArn"), "end_time": _fmt(end),
              "aws_source": d.get("source")}
    out = []
    for target in targets or [""]:
        m = _INSTANCE_ARN.match(target)
        target = m.group(1) if m else target
        inst = target if AWS_INSTANCE.match(target) else ""
        kind = "Volume" if target.startswith("vol-") else "CloudResource"
        out.append(make_event(provider="aws", code=code, reason=reason, severity=severity, time=time,
                              cloud_id=f"{d.get('id') or ''}|{detail.get('eventArn') or ''}|{status}",
                              instance=inst, resource="" if inst else target, resource_kind=kind, phase=phase,
                              scheduled=start if category == "scheduledChange" else None,
                              region=field_str(d, "region", required=False)
                              or field_str(detail, "eventRegion", "detail.", required=False),
                              message=_description(detail), labels=labels, body=detail))
    return out


def _fmt(ts) -> str:
    return format_time(ts) if ts is not None else ""


def is_put_events(d) -> bool:
    entries = d.get("Entries") if isinstance(d, dict) else d
    return isinstance(entries, list) and bool(entries) and all(isinstance(e, dict) and "DetailType" in e
                                                               for e in entries)


def from_put_events(d) -> list[Event]:
    """PutEvents request entries (``DetailType``, ``Source``, ``Detail`` as a JSON string), as test tools send."""
    out: list[Event] = []
    for i, e in enumerate(d.get("Entries") if isinstance(d, dict) else d):
        try:
            detail = orjson.loads(field_str(e, "Detail", f"entry {i}: "))
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"entry {i}: Detail is not a JSON string ({exc})") from None
        out += from_eventbridge({"detail-type": e.get("DetailType"), "source": e.get("Source"), "detail": detail,
                                 "time": e.get("Time"), "resources": field_list(e, "Resources", f"entry {i}: ")})
    return out


# ---------------------------------------------------------------- instance-scoped bodies (IMDS, describe)


def is_instance_scoped(d) -> bool:
    if isinstance(d, dict):
        return (set(d) == {"action", "time"} or set(d) == {"noticeTime"} or "InstanceStatuses" in d
                or isinstance(d.get("Events"), list))
    return isinstance(d, list) and bool(d) and all(isinstance(e, dict) and "Code" in e for e in d)


def _scheduled(e: dict, instance: str, where: str, now: float) -> Event:
    """One EC2 scheduled event (IMDS ``maintenance/scheduled`` or describe-instance-status). Label ``state`` is
    AWS's (active, canceled, completed), label ``phase`` the same in the common vocabulary (Scheduled, Canceled,
    Executed). The id hashes the parsed event (id, state, NotBefore, NotAfter), not the body: IMDS and
    describe-instance-status spell one event differently (times, InstanceEventId, no State), and both
    channels of one event must make one id."""
    if not isinstance(e, dict):
        raise PayloadError(f"{where}: expected an object")
    code = e.get("Code")
    if not isinstance(code, str) or code not in AWS_SCHEDULED:
        raise PayloadError(f"{where}.Code: unknown scheduled event code {code!r} (one of {', '.join(AWS_SCHEDULED)})")
    reason, severity = AWS_SCHEDULED[code]
    desc = field_str(e, "Description", f"{where}.", required=False)
    state = field_str(e, "State", f"{where}.", required=False).lower() or (
        "canceled" if desc.startswith("[Canceled]") else "completed" if desc.startswith("[Completed]") else "active")
    if state not in AWS_STATE_PHASE:
        raise PayloadError(f"{where}.State: unknown scheduled event state {state!r} (one of {', '.join(AWS_STATE_PHASE)})")
    if state in ("canceled", "completed"):
        severity = "info"
    event_id = e.get("EventId") or e.get("InstanceEventId")
    if not isinstance(event_id, str) or not event_id:
        raise PayloadError(f"{where}: no EventId / InstanceEventId")
    not_before = cloud_time(e.get("NotBefore"), f"{where}.NotBefore")
    not_after = cloud_time(e["NotAfter"], f"{where}.NotAfter") if e.get("NotAfter") else None
    labels = {"cloud_event_id": event_id, "state": state, "not_after": _fmt(not_after),
              "deadline": _fmt(cloud_time(e["NotBeforeDeadline"], f"{where}.NotBeforeDeadline"))
              if e.get("NotBeforeDeadline") else ""}
    return make_event(provider="aws", code=code, reason=reason, severity=severity, time=now,
                      cloud_id=f"{event_id}|{state}|{not_before}|{not_after}", instance=instance,
                      phase=AWS_STATE_PHASE[state], scheduled=not_before, message=desc, labels=labels,
                      time_in_id=False)


def from_instance_scoped(d, instance: str | None, now: float) -> list[Event]:
    """IMDS ``spot/instance-action``, ``events/recommendations/rebalance``, ``events/maintenance/scheduled``
    and ``describe-instance-status`` bodies; all but the last need ``instance`` (``?instance=`` in the URL).
    Bodies without a publication time take ``now`` (the receive time) as event time; ids do not depend on it."""
    if isinstance(d, dict) and "InstanceStatuses" in d:
        out = []
        for i, st in enumerate(field_list(d, "InstanceStatuses")):
            inst = instance_id(st.get("InstanceId") if isinstance(st, dict) else None,
                               f"InstanceStatuses[{i}].InstanceId")
            out += [_scheduled(e, inst, f"InstanceStatuses[{i}].Events[{j}]", now)
                    for j, e in enumerate(field_list(st, "Events", f"InstanceStatuses[{i}]."))]
        return out
    if not instance:
        raise PayloadError("an instance-scoped body (IMDS or describe-instance-status Events) carries no instance id: "
                           "post it with ?instance=<instance id> in the URL")
    instance = instance_id(instance, "?instance")
    if isinstance(d, list):
        return [_scheduled(e, instance, f"[{i}]", now) for i, e in enumerate(d)]
    if "Events" in d:
        return [_scheduled(e, instance, f"Events[{i}]", now) for i, e in enumerate(field_list(d, "Events"))]
    if "noticeTime" in d:
        t = cloud_time(d["noticeTime"], "noticeTime")
        return [make_event(provider="aws", code="imds:rebalance", reason="RebalanceRecommendation",
                           severity="warning", time=t, cloud_id="", instance=instance, body=d)]
    action_time = cloud_time(d["time"], "time")
    if not isinstance(d["action"], str) or d["action"] not in ("terminate", "stop", "hibernate"):
        raise PayloadError(f"action: expected terminate, stop or hibernate, got {d['action']!r}")
    return [make_event(provider="aws", code="imds:spot/instance-action", reason="SpotInterruption",
                       severity="critical", time=now, cloud_id=f"{d['action']}|{action_time}", instance=instance,
                       scheduled=action_time, labels={"action": d["action"]}, time_in_id=False, body=d)]
