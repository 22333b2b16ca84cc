"""What arrived -> Event records: recognise the payload shape, parse it, point each event at its node.

The shapes, tried in this order: a binary-mode CloudEvent (``ce-specversion`` header); a structured
or batched CloudEvent; an EventBridge event (``detail-type``); a CloudMonitor notification; an
Alibaba Describe* API response; PutEvents entries; an instance-scoped body (IMDS, describe-instance-status).
A CloudEvent from ``acs.ecs`` is an Alibaba EventBridge event; any other CloudEvent must carry one of
the other shapes as its data (or AWS ``detail`` with ``type`` = detail-type, ``source`` = aws.*).
Anything else raises PayloadError with the reason; an Azure Scheduled Events document (``DocumentIncarnation``,
``Events[]`` with ``EventType`` / ``EventStatus``) is refused as such, not taken for an AWS body.

>>> evs = parse(b'{"specversion": "1.0", "id": "c1", "source": "acs.ecs", "time": "2024-05-01T10:00:00Z",'
...             b' "type": "ecs:Instance:PreemptibleInstanceInterruption", "subject":'
...             b' "acs:ecs:cn-hangzhou:1234:instance/i-bp1ecr5go2go", "data": {"action": "delete"}}',
...             nodes={"i-bp1ecr5go2go": "cn-hangzhou.10.0.0.7"})
>>> [(e.reason, e.severity, e.entity.node, e.labels["instance"]) for e in evs]
[('SpotInterruption', 'critical', 'cn-hangzhou.10.0.0.7', 'i-bp1ecr5go2go')]
>>> parse(b'{"hello": "world"}')
Traceback (most recent call last):
...
collectors.cloud.event.PayloadError: unknown payload shape (top-level keys: 'hello')
"""

from __future__ import annotations

import time as _time
from collections.abc import Mapping

import orjson

from collectors.cloud import alibaba, aws, cloudevents
from collectors.cloud.event import PayloadError, attach_node, quoted_keys, refusing
from core.records import Event

ALIBABA_SOURCES = ("acs.ecs", "acs:ecs")


def from_json(d, *, instance: str | None = None, now: float = 0.0, refused: list | None = None) -> list[Event]:
    """A decoded JSON payload of any supported shape -> events (without node); ``refused``: see ``batch``."""
    if cloudevents.is_structured(d):
        return from_cloudevent(*cloudevents.structured(d), instance=instance, now=now)
    if isinstance(d, list) and d and all(cloudevents.is_structured(x) for x in d):
        return batch(d, instance=instance, now=now, refused=refused)
    if aws.is_eventbridge(d):
        return aws.from_eventbridge(d)
    if alibaba.is_cloudmonitor(d):
        return alibaba.from_cloudmonitor(d)
    if alibaba.is_api_response(d):
        return alibaba.from_api_response(d)
    if aws.is_put_events(d):
        return aws.from_put_events(d)
    if is_azure_scheduled(d):
        raise PayloadError("Azure Scheduled Events are not supported (a DocumentIncarnation / Events[].EventType "
                           "document from the Azure metadata service): kubesight takes Alibaba Cloud, AWS and "
                           "CloudEvents payloads")
    if aws.is_instance_scoped(d):
        return aws.from_instance_scoped(d, instance, now)
    if isinstance(d, dict):  # the keys quoted: the dead-letter counter folds quoted text, one series for any keys
        raise PayloadError(f"unknown payload shape (top-level keys: {quoted_keys(d)})")
    raise PayloadError(f"unknown payload shape (a JSON {type(d).__name__})")


def batch(items, *, instance: str | None = None, now: float = 0.0, refused: list | None = None,
          where: str = "CloudEvents batch") -> list[Event]:
    """A batch of structured CloudEvents -> their events.  With ``refused``, an item that cannot be taken is named
    there, ``(index, reason, item)``, and the others are taken (refusing the batch lost its good events: a 4xx is not
    retried); a batch of nothing but such items is refused whole, with the first one's reason, as without it.

    >>> ok = {"specversion": "1.0", "id": "a", "source": "acs.ecs", "type": "ecs:Instance:PreemptibleInstanceInterruption",
    ...       "subject": "acs:ecs:cn-hangzhou:1:instance/i-bp1ecr5go2go", "time": "2024-05-01T10:00:00Z", "data": {"action": "delete"}}
    >>> refused = []
    >>> [e.reason for e in batch([ok, {"specversion": "1.0", "id": "b"}], refused=refused)], refused[0][:2]
    (['SpotInterruption'], (1, "CloudEvents batch[1]: CloudEvent attribute 'source' missing or not a string"))
    """
    if not isinstance(items, list):
        raise PayloadError(f"{where}: expected a JSON array of CloudEvents")
    events: list[Event] = []
    bad = []
    for i, d in enumerate(items):
        at = f"{where}[{i}]"
        try:
            with refusing(at):  # one item's unforeseen shape refuses that item, not its batch
                if not isinstance(d, dict):
                    raise PayloadError(f"{at}: expected a CloudEvent object")
                events.extend(from_cloudevent(*cloudevents.structured(d, at), instance=instance, now=now))
        except PayloadError as exc:
            why = str(exc)
            bad.append((i, why if at in why else f"{at}: {why}", d))
            if refused is None:
                break
    if bad and (refused is None or len(bad) == len(items)):
        raise PayloadError(bad[0][1])
    if refused is not None:
        refused.extend(bad)
    return events


def is_azure_scheduled(d) -> bool:
    """An Azure Instance Metadata Service Scheduled Events document (it has an ``Events`` array, as AWS bodies do)."""
    if not isinstance(d, dict):
        return False
    events = d.get("Events")
    return "DocumentIncarnation" in d or (isinstance(events, list) and any(
        isinstance(e, dict) and ("EventType" in e or "EventStatus" in e) for e in events))


def from_cloudevent(attrs: dict, data, *, instance: str | None = None, now: float = 0.0) -> list[Event]:
    source, ctype = attrs["source"], attrs["type"]
    if source in ALIBABA_SOURCES:
        return alibaba.from_eventbridge(attrs, data)
    if source.startswith("aws.") and isinstance(data, dict) and not aws.is_eventbridge(data):
        return aws.from_eventbridge({"id": attrs["id"], "source": source, "detail-type": ctype, "detail": data,
                                     "time": attrs.get("time"), "region": attrs.get("region") or ""})
    if data is None or isinstance(data, str | int | float):
        raise PayloadError(f"CloudEvent of unsupported source {source!r} / type {ctype!r} without an event as data")
    try:
        return from_json(data, instance=instance, now=now)
    except PayloadError as exc:
        raise PayloadError(f"CloudEvent source {source!r} type {ctype!r}: data: {exc}") from None


def parse(body: bytes, *, headers: Mapping[str, str] | None = None, instance: str | None = None,
          nodes: Mapping[str, str] | None = None, cluster: str = "default", now: float | None = None,
          refused: list | None = None) -> list[Event]:
    """The raw request body (and its headers) -> events pointing at their nodes; PayloadError says why not.
    ``refused``: the items of a CloudEvents batch that cannot be taken, while the others are (``batch``)."""
    headers = headers or {}
    now = _time.time() if now is None else now
    with refusing():  # a shape no check anticipated: still a refusal with a reason, never a crash
        events = _parse(body, headers, instance, now, refused)
    nodes = nodes or {}
    for ev in events:
        attach_node(ev, nodes.get(ev.labels.get("instance", ""), ""), cluster)
    return events


def _parse(body: bytes, headers: Mapping[str, str], instance: str | None, now: float,
           refused: list | None) -> list[Event]:
    if cloudevents.is_binary(headers):
        events = from_cloudevent(*cloudevents.binary(headers, body), instance=instance, now=now)
    else:
        try:
            d = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"not valid JSON: {exc}") from None
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        if ctype.startswith(cloudevents.BATCH):
            events = batch(d, instance=instance, now=now, refused=refused)
        elif ctype.startswith(cloudevents.STRUCTURED):
            if not isinstance(d, dict):
                raise PayloadError("structured CloudEvent: expected a JSON object")
            events = from_cloudevent(*cloudevents.structured(d), instance=instance, now=now)
        else:
            events = from_json(d, instance=instance, now=now, refused=refused)
    return events
