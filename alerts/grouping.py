"""Aggregation groups with Alertmanager's timings, and the notification log that makes one notification per change.

* ``group_wait``: how long a new group waits before its first notification (to gather its alerts);
* ``group_interval``: after that, the group is re-evaluated every interval; it notifies only when
  something changed (a new firing alert, or a newly resolved one for receivers that want those);
* ``repeat_interval``: an unchanged group that still fires is re-sent after this long.

A duplicate alert changes nothing, so it never causes a notification.  State (a mapping, partitioned
by group key in the worker) holds ``g|<group key>`` -> the group: its alerts, next flush time and the
log of what was last notified.  Time is passed in.

>>> from alerts.routing import Destination
>>> from core.records import Alert
>>> st = {}
>>> g = Group("{}:{}", "ops", {}, "{}", 30.0, 300.0, 3600.0)
>>> add_dict(st, g, Alert({"alertname": "A"}, startsAt=0.0).to_dict(), 0.0, now=0.0)
>>> due(st, 29.0), due(st, 30.0)
([], ['{}:{}'])
>>> [a["labels"]["alertname"] for a in flush(st, "{}:{}", now=30.0)["alerts"]]
['A']
>>> flush(st, "{}:{}", now=330.0) is None    # nothing changed within group_interval: no repeat yet
True
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from core.records import format_time

PREFIX = "g|"
ALERT_PREFIX = "ga|"


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__
class Group:
    """Where an alert goes and with which timings (from the route, carried with the alert)."""

    key: str
    receiver: str
    labels: dict
    route: str
    group_wait: float
    group_interval: float
    repeat_interval: float
    send_resolved: bool = True
    withdraw: bool = False  # not a transition: a routing reload took the alert out of this group (``withdraw``)
    public: str = ""  # Alertmanager's group key where ``key`` differs from it (routing's /N), else ""

    def to_dict(self) -> dict:
        d = {"key": self.key, "receiver": self.receiver, "labels": self.labels, "route": self.route,
             "timing": [self.group_wait, self.group_interval, self.repeat_interval],
             "send_resolved": self.send_resolved}
        if self.withdraw:
            d["withdraw"] = 1
        if self.public:
            d["public"] = self.public
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Group:
        return cls(d["key"], d["receiver"], d["labels"], d["route"], *d["timing"], d["send_resolved"],
                   bool(d.get("withdraw")), d.get("public", ""))

    @classmethod
    def leaving(cls, key: str) -> Group:
        """The withdrawal of an alert from group ``key`` (only the key counts: it places the record)."""
        return cls(key, "", {}, "", 0.0, 0.0, 0.0, True, True)


def members(state) -> dict[str, set[str]]:
    """Group key -> fingerprints of its alerts, by scanning the state (callers keep it as an index)."""
    out: dict[str, set[str]] = {}
    for k in state:
        if k.startswith(ALERT_PREFIX):
            key, fp = k[len(ALERT_PREFIX):].rsplit("|", 1)
            out.setdefault(key, set()).add(fp)
    return out


def add_dict(state, group: Group, d: dict, starts: float, now: float,
             index: dict[str, set[str]] | None = None) -> None:
    """Put one alert transition, in its record form (``Alert.to_dict()``; kept as it is) and starting at ``starts``,
    into its group (creating the group and its first timer when new).

    Each alert is its own state key (``ga|<group key>|<fingerprint>``), so a change writes one
    alert to the changelog, not the whole group.  ``index`` (from ``members``) is kept up to date.
    """
    skey = PREFIX + group.key
    g = state.get(skey)
    if g is None:
        g = {"group": group.to_dict(), "next": now + group.group_wait, "flushed": False, "log": None, "seq": 0}
        state[skey] = g
    elif g["group"]["receiver"] != group.receiver:
        # the routing file now sends this group to another receiver: a new group for it, as in Alertmanager (whose
        # notification log is per receiver), so the new receiver is told what fires, after group_wait
        g = {"group": group.to_dict(), "next": now + group.group_wait, "flushed": False, "log": None,
             "seq": g["seq"]}
        state[skey] = g
    elif g["group"]["timing"] != [group.group_wait, group.group_interval, group.repeat_interval] \
            or g["group"]["send_resolved"] != group.send_resolved:
        g["group"] = group.to_dict()  # timings follow the latest routing config
        state[skey] = g
    if not g["flushed"] and d["status"] == "firing" and starts + group.group_wait < now < g["next"]:
        g["next"] = now  # an old alert: no reason to wait (as Alertmanager does)
        state[skey] = g
    state[f"{ALERT_PREFIX}{group.key}|{d['fingerprint']}"] = d
    if index is not None:
        index.setdefault(group.key, set()).add(d["fingerprint"])


def withdraw(state, key: str, fp: str, index: dict[str, set[str]] | None = None) -> bool:
    """Take an alert out of group ``key`` with no notification: a routing reload sent it elsewhere.

    As an Alertmanager reload drops the old aggregation groups, the old receiver is not told the alert
    resolved (it has not); the group's notification log stays, so an alert routed back later is not
    announced again.  A group left empty goes.  Returns whether the alert was in the group.

    >>> from core.records import Alert
    >>> st = {}
    >>> g = Group("k", "ops", {}, "{}", 30.0, 300.0, 3600.0)
    >>> add_dict(st, g, Alert({"alertname": "A"}, startsAt=0.0).to_dict(), 0.0, now=0.0)
    >>> fp = Alert({"alertname": "A"}).fingerprint
    >>> withdraw(st, "k", fp), st, withdraw(st, "k", fp)
    (True, {}, False)
    """
    akey = f"{ALERT_PREFIX}{key}|{fp}"
    if akey not in state:
        return False
    del state[akey]
    fps = (index if index is not None else members(state)).get(key)
    if fps is not None:
        fps.discard(fp)
    if not fps:
        if PREFIX + key in state:
            del state[PREFIX + key]
        if index is not None:
            index.pop(key, None)
    return True


def due(state, now: float) -> list[str]:
    """Group keys whose timer has expired at ``now``."""
    return [k[len(PREFIX):] for k, g in state.items() if k.startswith(PREFIX) and g["next"] <= now]


def _needs_update(log: dict | None, firing: set, resolved: set, send_resolved: bool, repeat: float,
                  now: float) -> bool:
    # Alertmanager's DedupStage.needsUpdate, decision for decision.
    if log is None:
        return bool(firing)
    if not firing <= set(log["firing"]):
        return True
    if not firing:
        return bool(log["firing"])
    if send_resolved and not resolved <= set(log["resolved"]):
        return True
    return log["at"] < now - repeat  # strictly, as Alertmanager's Before: equal waits one more group_interval


def flush(state, key: str, now: float, muted=None, time_muted: bool = False,
          index: dict[str, set[str]] | None = None) -> dict | None:
    """Evaluate the group at its timer: the notification to send, or None when nothing changed.

    ``muted(labels) -> bool`` says whether silences or inhibitions mute an alert now; ``time_muted``
    whether the route's time intervals mute it now.  Resolved alerts leave the group once flushed;
    an empty group is removed.
    """
    skey = PREFIX + key
    g = state[skey]
    group = Group.from_dict(g["group"])
    g["next"] = now + group.group_interval
    g["flushed"] = True
    fps = (index if index is not None else members(state)).get(key, set())
    every = [state[f"{ALERT_PREFIX}{key}|{fp}"] for fp in fps]
    alerts = [a for a in every if not (muted and muted(a["labels"]))]
    firing = {a["fingerprint"] for a in alerts if a["status"] == "firing"}
    resolved = {a["fingerprint"] for a in alerts if a["status"] == "resolved"}
    note = None
    # every alert muted: Alertmanager's pipeline stops at its mute stage, so nothing is sent and the log stays (a
    # silence on a notified alert sends no empty "resolved", and its end no fresh notification)
    if alerts and not time_muted and _needs_update(g["log"], firing, resolved, group.send_resolved,
                                                   group.repeat_interval, now):
        # said only for its resolved alerts? then integrations without send_resolved skip it (their own dedup)
        resolved_only = group.send_resolved and not _needs_update(g["log"], firing, resolved, False,
                                                                   group.repeat_interval, now)
        g["seq"] += 1
        g["log"] = {"firing": sorted(firing), "resolved": sorted(resolved), "at": now}
        note = notification(group, alerts, now, g["seq"])
        if group.public:
            note["amGroupKey"] = group.public
        if resolved_only:
            note["resolvedOnly"] = True
    for a in every:
        if a["status"] == "resolved":
            del state[f"{ALERT_PREFIX}{key}|{a['fingerprint']}"]
            fps.discard(a["fingerprint"])
    if fps:
        state[skey] = g
    else:
        del state[skey]
        if index is not None:
            index.pop(key, None)
    return note


def _alertmanager_order(a: dict, b: dict) -> int:
    """Alertmanager's ``types.AlertSlice`` order (a group's alerts as every notifier gets them, and what ``max_alerts``
    keeps): by the ``job`` label, then ``instance`` (an alert without one goes after), then ``LabelSet.Before``
    (fewer labels first, then the sorted names' values)."""
    la, lb = a["labels"], b["labels"]
    for key in ("job", "instance"):
        va, vb = la.get(key), lb.get(key)
        if va is None and vb is None:
            continue
        if va is None:
            return 1
        if vb is None:
            return -1
        if va != vb:
            return -1 if va < vb else 1
    if len(la) != len(lb):
        return -1 if len(la) < len(lb) else 1
    for name in sorted({*la, *lb}):
        if name not in la:
            return -1
        if name not in lb:
            return 1
        if la[name] != lb[name]:
            return -1 if la[name] < lb[name] else 1
    return 0


def notification(group: Group, alerts: list[dict], now: float, seq: int) -> dict:
    """The notification record: what every receiver integration renders (webhook v4, Slack, DingTalk)."""
    if len(alerts) > 1:
        alerts = sorted(alerts, key=functools.cmp_to_key(_alertmanager_order))
    h = hashlib.blake2b(f"{group.key}\x00{group.receiver}\x00{seq}".encode(), digest_size=12)
    return {
        "v": 1,
        "kind": "notification",
        "id": h.hexdigest(),
        "receiver": group.receiver,
        "groupKey": group.key,
        "groupLabels": group.labels,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "alerts": alerts,
        "time": format_time(now),
    }
