"""Alibaba Cloud ECS events -> Event records: CloudMonitor notifications, EventBridge (``acs.ecs``) events,
and the system events inside DescribeInstanceHistoryEvents / DescribeInstancesFullStatus /
DescribeDisksFullStatus responses (for a poller that posts what the API returns).

>>> [ev] = from_cloudmonitor({"ver": "1.0", "id": "A1", "product": "ECS", "level": "INFO",
...     "name": "Instance:PreemptibleInstanceInterruption", "eventTime": "20190409T121826.922+0800",
...     "regionId": "cn-hangzhou", "content": {"instanceId": "i-bp1ecr5go2go", "action": "delete"}})
>>> ev.reason, ev.severity, ev.labels["instance"], ev.labels["action"]
('SpotInterruption', 'critical', 'i-bp1ecr5go2go', 'delete')
"""

from __future__ import annotations

import re

from collectors.cloud.catalog import PHASES, alibaba_reason, state_severity
from collectors.cloud.event import (
    ALIBABA_INSTANCE,
    PayloadError,
    cloud_time,
    field_list,
    field_obj,
    field_str,
    make_event,
    quoted_keys,
)
from core.records import Event

# acs:ecs:<region>:<account>:<kind>/<id>
_ARN = re.compile(r"^acs:ecs:[^:]*:[^:]*:([a-z]+)/(\S+)$")
_KINDS = {"instance": "Instance", "disk": "Disk", "snapshot": "Snapshot"}
API_SETS = ("InstanceSystemEventSet", "InstanceFullStatusSet", "DiskFullStatusSet")


def split_name(name: str) -> tuple[str, str]:
    """``Instance:SystemMaintenance.Reboot:Scheduled`` -> (``Instance:SystemMaintenance.Reboot``, ``Scheduled``).

    >>> split_name("Disk:Stalled:Executing"), split_name("Instance:StateChange")
    (('Disk:Stalled', 'Executing'), ('Instance:StateChange', ''))
    """
    parts = name.split(":")
    if len(parts) == 3 and parts[2] in PHASES:
        return f"{parts[0]}:{parts[1]}", parts[2]
    return name, ""


def _instance(value: str, field: str) -> str:
    if not ALIBABA_INSTANCE.match(value):
        raise PayloadError(f"{field}: invalid ECS instance id {value!r}")
    return value


def build(name: str, content: dict, *, time: float, cloud_id: str, region: str = "", arn: str = "",
          phase: str = "") -> Event:
    """One Alibaba ECS event (name with or without its phase, the ``content``/``data`` object) -> Event."""
    event_type, name_phase = split_name(name)
    phase = phase or field_str(content, "eventStatus", required=False) or name_phase
    if phase == "Executing" and content.get("executeFinishTime"):
        phase = "Executed"  # a finish time says it is over (the documented "stall ended" sample keeps Executing)
    if phase and phase not in PHASES:
        raise PayloadError(f"eventStatus: unknown phase {phase!r} (one of {', '.join(PHASES)})")
    hit = alibaba_reason(event_type, phase)
    if hit is None:
        raise PayloadError(f"unknown Alibaba ECS event {name!r}")
    reason, severity = hit
    kind, rid = "", ""
    m = _ARN.match(arn) if arn else None
    if m:
        kind, rid = _KINDS.get(m.group(1), m.group(1).capitalize()), m.group(2)
    instance = (field_str(content, "instanceId", required=False)
                or field_str(content, "ecsInstanceId", required=False))
    if not instance and content.get("resourceType") == "ALIYUN::ECS::Instance":
        instance = field_str(content, "resourceId", required=False)
    if not instance and kind == "Instance":
        instance = rid
    if instance:
        instance = _instance(instance, "instanceId")
    elif event_type.startswith("Instance:"):
        raise PayloadError(f"{name}: no instance id (content.instanceId or an instance resourceId)")
    disk, snapshot = field_str(content, "diskId", required=False), field_str(content, "snapshotId", required=False)
    resource = "" if kind == "Instance" else rid or disk or snapshot
    resource_kind = kind or ("Disk" if disk else "Snapshot" if snapshot else "")
    labels = {"cloud_event_id": content.get("eventId"), "device": content.get("device"),
              "disk": disk if resource_kind != "Disk" else "", "action": content.get("action"),
              "status": content.get("status")}
    if reason == "InstanceStateChange":
        state = field_str(content, "state")
        labels["state"], severity = state, state_severity(state)
    if content.get("status") == "failed" and severity == "info":
        severity = "warning"
    scheduled = cloud_time(content["notBefore"], "notBefore") if content.get("notBefore") else None
    return make_event(provider="alibaba", code=name, reason=reason, severity=severity, time=time, cloud_id=cloud_id,
                      instance=instance, resource="" if instance else str(resource),
                      resource_kind=resource_kind, phase=phase, scheduled=scheduled, region=region,
                      labels=labels | ({"resource": resource} if instance and resource else {}), body=content)


def is_cloudmonitor(d) -> bool:
    return isinstance(d, dict) and "name" in d and "content" in d and ("product" in d or "ver" in d)


def from_cloudmonitor(d: dict) -> list[Event]:
    """A CloudMonitor event notification (``ver``, ``id``, ``name``, ``eventTime``, ``content``...)."""
    if d.get("product") not in (None, "ECS"):
        raise PayloadError(f"product: only ECS events are understood, got {d.get('product')!r}")
    name = field_str(d, "name")
    return [build(name, field_obj(d, "content"), time=cloud_time(d.get("eventTime"), "eventTime"),
                  cloud_id=field_str(d, "id"), region=field_str(d, "regionId", required=False),
                  arn=field_str(d, "resourceId", required=False))]


def from_eventbridge(attrs: dict, data) -> list[Event]:
    """An EventBridge CloudEvent from ``acs.ecs``: ``type`` is ``ecs:<name>``, ``data`` the event content."""
    etype = attrs["type"]
    if not etype.startswith("ecs:"):
        raise PayloadError(f"type: an acs.ecs event type starts with 'ecs:', got {etype!r}")
    if not isinstance(data, dict):
        raise PayloadError("data: expected the ECS event content object")
    if not attrs.get("time"):
        raise PayloadError("time: the CloudEvent has no time attribute")
    return [build(etype[4:], data, time=cloud_time(attrs["time"], "time"), cloud_id=attrs["id"],
                  region=field_str(attrs, "aliyunregionid", required=False),
                  arn=field_str(attrs, "subject", required=False))]


def is_api_response(d) -> bool:
    return isinstance(d, dict) and ("RequestId" in d or any(k in d for k in API_SETS))


def _items(d: dict, set_name: str, item_name: str, where: str = "") -> list[dict]:
    """The objects of an API response set (``{"InstanceSystemEventSet": {"InstanceSystemEventType": [...]}}``)."""
    if d.get(set_name) is None:
        return []
    items = field_list(field_obj(d, set_name, where), item_name, f"{where}{set_name}.")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise PayloadError(f"{where}{set_name}.{item_name}[{i}]: expected an object")
    return items


def _system_event(e: dict, instance: str, where: str) -> Event:
    """One ``InstanceSystemEventType`` / ``ScheduledSystemEventType`` object; ``where`` prefixes field names."""
    etype = field_str(field_obj(e, "EventType", where), "Name", f"{where}EventType.")
    phase = field_str(field_obj(e, "EventCycleStatus", where), "Name", f"{where}EventCycleStatus.")
    event_id = field_str(e, "EventId", where)
    content = {"instanceId": instance, "eventId": event_id, "notBefore": e.get("NotBefore")}
    return build(f"Instance:{etype}", content, time=cloud_time(e.get("EventPublishTime"), f"{where}EventPublishTime"),
                 cloud_id=event_id, phase=phase)


def from_api_response(d: dict) -> list[Event]:
    """The system events inside an ECS Describe* API response (an empty list when there are none)."""
    if not any(k in d for k in API_SETS):
        raise PayloadError(f"an Alibaba Cloud API response without system events (keys: {quoted_keys(d)})")
    out: list[Event] = []
    for i, e in enumerate(_items(d, "InstanceSystemEventSet", "InstanceSystemEventType")):
        where = f"InstanceSystemEventType[{i}]."
        out.append(_system_event(e, field_str(e, "InstanceId", where), where))
    for i, st in enumerate(_items(d, "InstanceFullStatusSet", "InstanceFullStatusType")):
        where = f"InstanceFullStatusType[{i}]."
        instance = field_str(st, "InstanceId", where)
        for j, e in enumerate(_items(st, "ScheduledSystemEventSet", "ScheduledSystemEventType", where)):
            out.append(_system_event(e, instance, f"{where}ScheduledSystemEventType[{j}]."))
    for i, st in enumerate(_items(d, "DiskFullStatusSet", "DiskFullStatusType")):
        for j, e in enumerate(_items(st, "DiskEventSet", "DiskEventType", f"DiskFullStatusType[{i}].")):
            where = f"DiskFullStatusType[{i}].DiskEventType[{j}]."
            etype = field_str(field_obj(e, "EventType", where), "Name", f"{where}EventType.")
            event_id = field_str(e, "EventId", where)
            content = {"instanceId": field_str(st, "InstanceId", f"DiskFullStatusType[{i}].", required=False),
                       "diskId": field_str(st, "DiskId", f"DiskFullStatusType[{i}]."), "device": st.get("Device"),
                       "eventId": event_id}
            out.append(build(f"Disk:{etype}", content, time=cloud_time(e.get("EventTime"), f"{where}EventTime"),
                             cloud_id=event_id, phase="Executed" if e.get("EventEndTime") else "Executing"))
    return out
