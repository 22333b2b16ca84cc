"""core/v1 and events.k8s.io/v1 Event objects -> one Event record per real occurrence.

Both APIs are two views of the same stored objects, so an occurrence is identified by the
object's uid and its occurrence count (``series.count`` when a series exists, else ``count`` /
``deprecatedCount``, else 1): the same function of either view, so watching both views never
doubles an occurrence.

>>> ev = {"kind": "Event", "apiVersion": "v1", "metadata": {"uid": "u1", "namespace": "shop"},
...       "involvedObject": {"kind": "Pod", "name": "cart-1", "namespace": "shop", "uid": "p1"},
...       "reason": "BackOff", "type": "Warning", "count": 3, "message": "Back-off",
...       "firstTimestamp": "2021-08-03T10:00:00Z", "lastTimestamp": "2021-08-03T10:05:00Z"}
>>> view(ev).count, view(ev).time
(3, 1627985100.0)
>>> [r.count for r in occurrences(view(ev), seen=1, entity=Entity(name="cart-1"))]
[2, 3]
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from core.records import Entity, Event, RecordError, parse_time

_CONTAINER = re.compile(r"^spec\.(?:initContainers|containers|ephemeralContainers)\{([^}]*)\}$")


@dataclass(slots=True)
class EventView:
    """The fields kubesight needs, read the same way from either API version."""

    uid: str
    api: str  # "v1" | "events.k8s.io/v1"
    namespace: str
    reason: str
    type: str
    message: str
    count: int
    series: int  # series.count as the object says (0: no series), see ``series_offset``
    first: float  # time of the first occurrence
    time: float  # time of the latest occurrence
    regarding: dict  # kind, name, namespace, uid, fieldPath
    component: str
    host: str


def _time(*values) -> float | None:
    for v in values:
        if v:
            return parse_time(v)
    return None


def _int(v, what: str) -> int:
    if v is None:
        return 0
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 2**31 - 1:  # the API's int32
        raise RecordError(f"{what} must be an integer from 0 to 2147483647, got {v!r}")
    return v


def view(obj) -> EventView:
    """Read an Event object of either API; RecordError (the dead-letter reason) if malformed."""
    if not isinstance(obj, dict):
        raise RecordError(f"Event object must be a JSON object, got {type(obj).__name__}")
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not meta.get("uid"):
        raise RecordError("Event without metadata.uid")
    api = obj.get("apiVersion") or "v1"
    series = obj.get("series") or None
    if series is not None and not isinstance(series, dict):
        raise RecordError(f"Event series must be an object, got {series!r}")
    if api == "events.k8s.io/v1":
        reg = obj.get("regarding") or {}
        src = obj.get("deprecatedSource") or {}
        raw_count = obj.get("deprecatedCount")
        message = obj.get("note") or ""
        first = _time(obj.get("eventTime"), obj.get("deprecatedFirstTimestamp"), meta.get("creationTimestamp"))
        last = _time(series and series.get("lastObservedTime"), obj.get("deprecatedLastTimestamp"),
                     obj.get("eventTime"), meta.get("creationTimestamp"))
        component = obj.get("reportingController") or src.get("component") or ""
    else:
        reg = obj.get("involvedObject") or {}
        src = obj.get("source") or {}
        raw_count = obj.get("count")
        message = obj.get("message") or ""
        first = _time(obj.get("firstTimestamp"), obj.get("eventTime"), meta.get("creationTimestamp"))
        last = _time(series and series.get("lastObservedTime"), obj.get("lastTimestamp"), obj.get("eventTime"),
                     obj.get("firstTimestamp"), meta.get("creationTimestamp"))
        component = obj.get("reportingComponent") or src.get("component") or ""
    if not isinstance(reg, dict) or not isinstance(src, dict):
        raise RecordError("Event involvedObject/regarding and source must be objects")
    if last is None:
        raise RecordError("Event without any timestamp (lastTimestamp, eventTime, creationTimestamp)")
    series_count = _int(series.get("count"), "series.count") if series else 0
    count = series_count or _int(raw_count, "count") or 1
    return EventView(
        uid=str(meta["uid"]), api=api, namespace=str(meta.get("namespace") or reg.get("namespace") or ""),
        reason=str(obj.get("reason") or ""), type=str(obj.get("type") or "Normal"), message=str(message),
        count=count, series=series_count, first=first if first is not None else last, time=last, regarding=reg,
        component=str(component), host=str(src.get("host") or ""),
    )


def series_offset(v: EventView, known: int) -> int:
    """Occurrences = series.count + offset: 1 for recorders that start a series at 1.

    client-go's events recorder used to start a series at 1 on the first repeat (counting
    repeats, as in the recorded OpenShift 4.8 Events) and now starts it at 2 (counting
    occurrences). A series seen at 1 reveals the old way for that Event; ``known`` is what was
    learnt before (0 or 1).

    >>> v = view({"metadata": {"uid": "u"}, "eventTime": "2021-08-03T09:27:36.331361Z",
    ...           "series": {"count": 1, "lastObservedTime": "2021-08-03T09:27:38.332622Z"}})
    >>> v.count + series_offset(v, 0)
    2
    """
    return 1 if v.series == 1 else known if v.series else 0


def occurrence_id(cluster: str, uid: str, count: int) -> str:
    """Stable record id of one occurrence: the same whatever view or replay delivered it."""
    return hashlib.blake2b(f"k8s|{cluster}|{uid}|{count}".encode(), digest_size=10).hexdigest()


MISSED_MAX = 1000  # records one Event update makes at most (the latest occurrences): anyone who may patch Events can
# set a count of 2147483647, and one record each would take the collector's memory (a long disconnect's jump stays far
# below it: kube-apiserver's event-ttl is 1 h)


def occurrences(v: EventView, seen: int | None, entity: Entity, *, baseline: bool = False) -> list[Event]:
    """Records for the occurrences of ``v`` not yet emitted (``seen`` = highest count emitted).

    A first sight that carries history (``baseline``) is one record carrying its count: during the
    very first list, what happened before kubesight existed is history, not a burst to replay; and
    an Event a watch reports ADDED with a count above 1 was created so (client-go re-creates an
    Event that expired under the same name with count = previous + 1: one new occurrence, the
    others belong to the expired object). Any other first sight (an Event created while the
    collector was away, found by a re-list), or a jump in the count (after a disconnect or a 410),
    gets one record per missed occurrence, the latest ``MISSED_MAX`` at most; the ones in between
    carry the time of the latest.

    >>> v = view({"metadata": {"uid": "u2"}, "count": 6, "lastTimestamp": "2021-08-03T10:05:00Z"})
    >>> [r.count for r in occurrences(v, None, Entity(), baseline=True)], len(occurrences(v, None, Entity()))
    ([6], 6)
    """
    if seen is not None and v.count <= seen:
        return []
    if seen is None:
        start = v.count if baseline else 1
    else:
        start = seen + 1
    labels = {"api": v.api}
    if v.component:
        labels["component"] = v.component
    fp = str(v.regarding.get("fieldPath") or "")
    if fp:
        labels["field_path"] = fp
        m = _CONTAINER.match(fp)
        if m:
            labels["container"] = m.group(1)
    if v.count - start >= MISSED_MAX:  # a count that jumped by millions: its latest occurrences, not a list of them all
        start = v.count - MISSED_MAX + 1
    out = []
    for c in range(start, v.count + 1):
        out.append(Event(
            source="k8s", reason=v.reason, type=v.type, time=v.first if c == 1 else v.time,
            entity=entity, labels=dict(labels), message=v.message, count=c,
            id=occurrence_id(entity.cluster, v.uid, c),
        ))
    return out


_ASSIGNED = re.compile(r"Successfully assigned (?P<ns>[^/\s]+)/(?P<name>\S+) to (?P<node>\S+)")


def assigned_node(message: str, namespace: str, name: str) -> str:
    """The node of kube-scheduler's ``Scheduled`` message about this pod, else "".

    >>> assigned_node("Successfully assigned shop/agent-x2 to kwok-node-1", "shop", "agent-x2")
    'kwok-node-1'
    >>> assigned_node("Successfully assigned shop/agent-x2 to kwok-node-1", "shop", "other"), assigned_node("", "a", "b")
    ('', '')
    """
    m = _ASSIGNED.match(message or "")
    return m["node"] if m and m["ns"] == namespace and m["name"] == name else ""
