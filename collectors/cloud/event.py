"""Building cloud Event records: the payload error, tolerant time parsing, stable ids, instance ids.

>>> ev = make_event(provider="aws", code="EC2 Instance Rebalance Recommendation", reason="RebalanceRecommendation",
...                 severity="warning", time=1627984800.0, cloud_id="5d5555d5", instance="i-abcd1111")
>>> ev.source, ev.type, ev.entity.kind, ev.entity.name, ev.labels["instance"], ev.id
('cloud', 'Warning', 'Instance', 'i-abcd1111', 'i-abcd1111', 'cloud-a9f95d172c7dd1797a2e')
>>> cloud_time("20190409T121826.922+0800", "eventTime")
1554783506.922
>>> cloud_time("Fri, 10 Mar 2023 12:03:38 GMT", "startTime"), cloud_time("Fri, 10 Mar 2023 12:03:38 -0000", "startTime")
(1678449818.0, 1678449818.0)
>>> cloud_time("20190409T121826.9221234+0800", "eventTime")  # 7 digits round as RFC 3339's do
1554783506.922123
"""

from __future__ import annotations

import hashlib
import re
from contextlib import contextmanager
from datetime import UTC
from email.utils import parsedate_to_datetime

import orjson

from collectors.cloud.catalog import settled
from core.records import Entity, Event, RecordError, format_time, parse_time

AWS_INSTANCE = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
# Alibaba ids are lower-case alphanumerics; its documentation masks part of them with '*'.
ALIBABA_INSTANCE = re.compile(r"^i-[0-9a-z*]{4,}$")
_COMPACT = re.compile(r"^(\d{8})T(\d{6})(\.\d+)?([+-]\d{4}|Z)$")


class PayloadError(ValueError):
    """A payload the intake cannot turn into events; the message is the reason (HTTP 400, dead letter)."""


# what a parser of an untrusted body may raise on a shape no check anticipated: a refusal with the reason, never a 500
MALFORMED = (TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError, OverflowError)


@contextmanager
def refusing(what: str = "payload"):
    """Turn any error of ``MALFORMED`` raised in the block into a PayloadError naming it (PayloadError passes).

    >>> with refusing("audit payload"):
    ...     int("x")
    Traceback (most recent call last):
    ...
    collectors.cloud.event.PayloadError: malformed audit payload (ValueError: invalid literal for int() with base 10: 'x')
    """
    try:
        yield
    except PayloadError:
        raise
    except MALFORMED as exc:
        raise PayloadError(f"malformed {what} ({type(exc).__name__}: {exc})") from None


def field_obj(d: dict, field: str, where: str = "", required: bool = True) -> dict:
    """``d[field]`` that must be a JSON object (absent or null and not required: an empty one); PayloadError names
    the field otherwise."""
    v = d.get(field)
    if v is None and not required:
        return {}
    if not isinstance(v, dict):
        raise PayloadError(f"{where}{field}: expected an object, got {json_kind(v)}")
    return v


def field_list(d: dict, field: str, where: str = "") -> list:
    """``d[field]`` that must be a JSON array when present (absent or null: an empty list)."""
    v = d.get(field)
    if v is None:
        return []
    if not isinstance(v, list):
        raise PayloadError(f"{where}{field}: expected an array, got {json_kind(v)}")
    return v


def field_str(d: dict, field: str, where: str = "", required: bool = True) -> str:
    """``d[field]`` that must be a string (non-empty when required; absent optional -> "")."""
    v = d.get(field)
    if (v is None or v == "") and not required:
        return ""
    if not isinstance(v, str) or not v:
        raise PayloadError(f"{where}{field}: expected a non-empty string, got {v!r}")
    return v


def json_kind(v) -> str:
    return "nothing" if v is None else {dict: "an object", list: "an array", str: "a string",
                                        bool: "a boolean"}.get(type(v), "a number")


def cloud_time(value, field: str) -> float:
    """A provider timestamp -> epoch seconds: RFC 3339, Alibaba's compact ``20190409T121826.922+0800``,
    or RFC 2822 (``Fri, 10 Mar 2023 12:03:38 GMT``, ``21 Jan 2019 09:00:43 GMT``); PayloadError names the field."""
    text = value
    if isinstance(value, str):
        m = _COMPACT.match(value)
        if m:  # read as the RFC 3339 text it spells, so that its fraction rounds as every other time's does
            day, hms, frac, tz = m.groups()
            text = (f"{day[:4]}-{day[4:6]}-{day[6:]}T{hms[:2]}:{hms[2:4]}:{hms[4:]}{frac or ''}"
                    f"{'Z' if tz == 'Z' else f'{tz[:3]}:{tz[3:]}'}")
        elif value[:1].isalpha() or (value[:2].strip().isdigit() and " " in value):
            try:
                dt = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                pass
            else:
                # "-0000" (RFC 5322 3.3: UTC, the source's zone unknown) and no zone come back naive, which
                # timestamp() would read in this machine's zone; kubesight reads a time without zone as UTC
                return (dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt).timestamp()
    try:
        return parse_time(text)
    except RecordError:
        raise PayloadError(f"{field}: invalid time {value!r}") from None


def stable_id(*parts) -> str:
    """The Event id: a hash of what identifies one delivery (provider, cloud event id, code, phase, target,
    time), identical when the provider retries, different for two distinct notifications."""
    h = hashlib.blake2b(digest_size=10)
    h.update("|".join(str(p) for p in parts).encode())
    return "cloud-" + h.hexdigest()


def make_event(*, provider: str, code: str, reason: str, severity: str, time: float, cloud_id: str,
               instance: str = "", resource: str = "", resource_kind: str = "", phase: str = "",
               scheduled: float | None = None, region: str = "", message: str = "",
               labels: dict | None = None, time_in_id: bool = True, body=None) -> Event:
    """One cloud Event; the entity is the instance (or the other resource) until the node map resolves it.

    ``reason`` is the reason of the event while active: in an ended phase (Executed, Avoided, Canceled) a
    maintenance or stall gets the reason of its end (``catalog.ENDED``: InstanceRebootScheduled ->
    InstanceRebootEnded...), the active one in label ``original_reason``, so that it resolves the state it set
    instead of setting it again.

    ``time_in_id=False`` when ``time`` is the receive time (a body without a publication time), so that a
    retried delivery keeps its id. ``body`` (the provider's event object) goes into the id too: providers'
    samples reuse ids, and a redelivery carries the same object."""
    lab = {"provider": provider, "event_code": code}
    for k, v in (("instance", instance), ("resource", resource), ("region", region), ("phase", phase),
                 ("scheduled_time", format_time(scheduled) if scheduled is not None else "")):
        if v:
            lab[k] = v
    lab.update({k: str(v) for k, v in (labels or {}).items() if v not in (None, "")})
    if settled(reason, phase) != reason:
        lab["original_reason"], reason = reason, settled(reason, phase)
    target = instance or resource
    entity = Entity(kind="Instance" if instance else resource_kind if resource else "", name=target)
    return Event(source="cloud", reason=reason, time=time, type="Normal" if severity in ("info", "none") else "Warning",
                 severity=severity, entity=entity, labels=lab,
                 message=message or f"{code}{f' ({phase})' if phase else ''} on {target or 'the account'}",
                 id=stable_id(provider, cloud_id, code, phase, target, time if time_in_id else "",
                             orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode() if body is not None else ""))


def attach_node(ev: Event, node: str, cluster: str = "default") -> Event:
    """Point the event at its Kubernetes node (the instance id stays in the labels)."""
    ev.entity.cluster = cluster
    if node:
        ev.entity.kind, ev.entity.name, ev.entity.node = "Node", node, node
    return ev


def quoted_keys(d: dict) -> str:
    """A payload's keys as a reason names them: sorted and each quoted (``repr``), since they come from the
    sender: ``core.telemetry.reason_key`` folds quoted text to '…', and unquoted each new key was a series of
    ``kubesight_deadletters_total`` of its own (an audit: 195 series from 195 payloads).

    >>> print(quoted_keys({"b": 1, "a": 2}), quoted_keys({}), sep=" | ")
    'a', 'b' | none
    """
    return ", ".join(map(repr, sorted(map(str, d)))) or "none"
