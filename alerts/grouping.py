"""Aggregation groups with Alertmanager's timings, and the notification log that makes one notification per change.

* ``group_wait``: how long a new group waits before its first notification (to gather its alerts);
* ``group_interval``: after that, the group is re-evaluated every interval; it notifies only when
  something changed (a new firing alert, or a newly resolved one for receivers that want those);
* ``repeat_interval``: an unchanged group that still fires is re-sent after this long.

A duplicate alert changes nothing, so it never causes a notification.  State (a mapping, partitioned
by group key in the worker) holds ``g|<group key>`` -> the group: its timings, next flush time and the
notification log's counts and time (``marks_log``); and ``ga|<group key>|<fingerprint>`` -> each alert, with whether
the last notification had it firing or resolved (``notified``).  So no record grows with the group (a Kafka
record holds at most ``RECORD_LIMIT`` bytes: a group of 60,000 pods listed in one record stopped its
partition).  An alert that left the group while the log still names it (resolved and flushed, or
withdrawn) stays as a small placeholder, ``gn|<group key>|<fingerprint>``, until the next notification replaces the
log, as Alertmanager's notification log keeps its fingerprint.  Time is passed in.

Mixed versions (a rolling update or a rollback can move a partition between a worker of this format and one of the
earlier, whose group record listed every notified fingerprint in ``log``): this code writes ``log: None`` and never
an earlier worker's key, so an earlier worker reads a group it did not notify as never notified and announces it
once more (its first flush), and does not see the placeholders (its ``members`` scans ``ga|`` only; the ``notified``
key on an alert it ignores).  A list ``log`` read here was written by an earlier worker after this one: it is the
latest and is read as such (``_upgrade``).

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

import orjson

from core.records import RECORD_LIMIT, format_time

PREFIX = "g|"
ALERT_PREFIX = "ga|"
# gn|<group key>|<fingerprint> -> {"notified": ...}: an alert the log names that left the group (a prefix an earlier
# worker's ``members``, which scans ga|, never sees)
GONE_PREFIX = "gn|"
NOTE_MARGIN = 4096  # a notification record's bytes beside its JSON and key (headers, the batch's own)


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


class Members(dict):
    """Group key -> fingerprints of its alerts (``members``); ``gone``: group key -> fingerprints of its placeholders."""

    __slots__ = ("gone",)

    def __init__(self) -> None:
        super().__init__()
        self.gone: dict[str, set[str]] = {}


def members(state) -> Members:
    """Group key -> fingerprints of its alerts, and of its placeholders (``gone``), by scanning the state (callers
    keep it as an index)."""
    out = Members()
    for k in state:
        if k.startswith(ALERT_PREFIX):
            key, fp = k[len(ALERT_PREFIX):].rsplit("|", 1)
            out.setdefault(key, set()).add(fp)
        elif k.startswith(GONE_PREFIX):
            key, fp = k[len(GONE_PREFIX):].rsplit("|", 1)
            out.gone.setdefault(key, set()).add(fp)
    return out


def _gone(state, index, key: str) -> set[str]:
    """Fingerprints of group ``key``'s placeholders: the index's set (kept up to date), or a scan's."""
    if isinstance(index, Members):
        return index.gone.setdefault(key, set())
    pre = f"{GONE_PREFIX}{key}|"
    return {k[len(pre):] for k in state if k.startswith(pre) and "|" not in k[len(pre):]}


def add_dict(state, group: Group, d: dict, starts: float, now: float,
             index: dict[str, set[str]] | None = None) -> None:
    """Put one alert transition, in its record form (``Alert.to_dict()``; kept as it is, or copied with the mark of
    the record it replaces) and starting at ``starts``, into its group (creating the group and its first timer when
    new).

    Each alert is its own state key (``ga|<group key>|<fingerprint>``), so a change writes one
    alert to the changelog, not the whole group.  ``index`` (from ``members``) is kept up to date.
    """
    skey = PREFIX + group.key
    g = state.get(skey)
    if g is None:
        g = {"group": group.to_dict(), "next": now + group.group_wait, "flushed": False, "log": None,
             "marks_log": None, "seq": 0}
        state[skey] = g
    elif g["group"]["receiver"] != group.receiver:
        # the routing file now sends this group to another receiver: a new group for it, as in Alertmanager (whose
        # notification log is per receiver), so the new receiver is told what fires, after group_wait
        g = {"group": group.to_dict(), "next": now + group.group_wait, "flushed": False, "log": None,
             "marks_log": None, "seq": g["seq"]}
        state[skey] = g
    elif g["group"]["timing"] != [group.group_wait, group.group_interval, group.repeat_interval] \
            or g["group"]["send_resolved"] != group.send_resolved:
        g["group"] = group.to_dict()  # timings follow the latest routing config
        state[skey] = g
    if not g["flushed"] and d["status"] == "firing" and starts + group.group_wait < now < g["next"]:
        g["next"] = now  # an old alert: no reason to wait (as Alertmanager does)
        state[skey] = g
    fp = d["fingerprint"]
    akey = f"{ALERT_PREFIX}{group.key}|{fp}"
    old = state.get(akey)
    if old is None and (not isinstance(index, Members) or fp in index.gone.get(group.key, ())):
        old = state.pop(f"{GONE_PREFIX}{group.key}|{fp}", None)  # back in the group: the placeholder gives way
        if old is not None and isinstance(index, Members):
            index.gone[group.key].discard(fp)
    if old is not None:
        mark = _notified(g, old)
        if mark is not None:  # the log is about the fingerprint, whatever its transitions (d is shared: copied)
            d = {**d, "notified": mark}
    state[akey] = d
    if index is not None:
        index.setdefault(group.key, set()).add(fp)


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
    a = state.get(akey)
    if a is None:
        return False
    if index is None:
        index = members(state)
    fps = index.get(key, set())
    g = state.get(PREFIX + key)
    del state[akey]
    fps.discard(fp)
    mark = _notified(g, a) if g is not None else None
    if fps and mark is not None:  # the log still names it: a placeholder keeps that
        state[f"{GONE_PREFIX}{key}|{fp}"] = {"notified": mark}
        _gone(state, index, key).add(fp)
    if not fps:
        _drop(state, key, index)
    return True


def _drop(state, key: str, index: dict[str, set[str]]) -> None:
    """Group ``key`` gone, with what is left of it (placeholders), and its notification log."""
    gone = index.gone.pop(key, set()) if isinstance(index, Members) else _gone(state, index, key)
    for fp in gone:
        state.pop(f"{GONE_PREFIX}{key}|{fp}", None)
    for fp in index.pop(key, set()):
        state.pop(f"{ALERT_PREFIX}{key}|{fp}", None)
    state.pop(PREFIX + key, None)


def due(state, now: float) -> list[str]:
    """Group keys whose timer has expired at ``now``."""
    return [k[len(PREFIX):] for k, g in state.items() if k.startswith(PREFIX) and g["next"] <= now]


def _notified(g: dict, a: dict) -> str | None:
    """Whether the group's last notification had alert (or placeholder) record ``a`` ``firing`` or ``resolved``
    (None: not in it).  A mark from before the log was reset (a new receiver) counts for nothing."""
    return a.get("notified") if g.get("marks_log") is not None else None


def _upgrade(state, key: str, g: dict, fps: set[str], index) -> None:
    """A log in the earlier format (every notified fingerprint listed in the group's record: ``log``) as marks on
    its alerts, placeholders for those no longer in the group, and counts (``marks_log``).  Such a log is either from
    before the upgrade or written by an earlier worker after this one (a rolling update or a rollback moved the
    partition): either way it is the latest, so marks and placeholders that disagree with it go."""
    log = g["log"]
    marks = {**dict.fromkeys(log["resolved"], "resolved"), **dict.fromkeys(log["firing"], "firing")}
    gone = _gone(state, index, key)
    for fp in list(gone):
        if fp not in marks or fp in fps:
            state.pop(f"{GONE_PREFIX}{key}|{fp}", None)
            gone.discard(fp)
    for fp in fps:
        akey = f"{ALERT_PREFIX}{key}|{fp}"
        a = state[akey]
        if a.get("notified") != marks.get(fp):
            state[akey] = _marked(a, marks.get(fp))
    for fp, mark in marks.items():
        if fp not in fps and state.get(f"{GONE_PREFIX}{key}|{fp}") != {"notified": mark}:
            state[f"{GONE_PREFIX}{key}|{fp}"] = {"notified": mark}
            gone.add(fp)
    g["log"] = None
    g["marks_log"] = {"firing": len(log["firing"]), "resolved": len(log["resolved"]), "at": log["at"]}


def _needs_update(log: dict | None, firing: int, new_firing: bool, new_resolved: bool, send_resolved: bool,
                  repeat: float, now: float) -> bool:
    # Alertmanager's DedupStage.needsUpdate, decision for decision; the log's sets are the alerts' marks: ``new_firing``
    # is "firing is not a subset of the log's firing", ``new_resolved`` the same for resolved; the log keeps counts
    if log is None:
        return bool(firing)
    if new_firing:
        return True
    if not firing:
        return bool(log["firing"])
    if send_resolved and new_resolved:
        return True
    return log["at"] < now - repeat  # strictly, as Alertmanager's Before: equal waits one more group_interval


def flush(state, key: str, now: float, muted=None, time_muted: bool = False,
          index: dict[str, set[str]] | None = None) -> dict | None:
    """Re-evaluate group ``key`` at ``now``; the notification to send, if any.

    ``muted(labels) -> bool`` says whether silences or inhibitions mute an alert now; ``time_muted``
    whether the route's time intervals mute it now.  Resolved alerts leave the group once flushed;
    an empty group is removed.  A notification rewrites only the alerts whose mark it changes.

    A notification over what a Kafka record holds (``RECORD_LIMIT``, less the key and ``NOTE_MARGIN``) is cut
    (``fit``): the alerts new to the log first (firing, then resolved for a receiver that wants them), then the
    rest.  Only the alerts sent are marked; one left out keeps the mark it had, so a new one is still new at the next
    flush (group_interval later) and goes first then: a large group is told in chunks, none lost, none told twice as
    new.  A resolved alert left out stays in the group until its resolution is sent.
    """
    skey = PREFIX + key
    g = state[skey]
    group = Group.from_dict(g["group"])
    g["next"] = now + group.group_interval
    g["flushed"] = True
    if index is None:
        index = members(state)
    fps = index.setdefault(key, set())
    if isinstance(g.get("log"), dict):  # the earlier format's log (an earlier worker wrote it): it is the latest
        _upgrade(state, key, g, fps, index)
    every = [state[f"{ALERT_PREFIX}{key}|{fp}"] for fp in fps]
    alerts = [a for a in every if not (muted and muted(a["labels"]))]
    log = g.get("marks_log")
    firing = resolved = 0
    new_firing = new_resolved = False
    for a in alerts:
        if a["status"] == "firing":
            firing += 1
            new_firing = new_firing or _notified(g, a) != "firing"
        else:
            resolved += 1
            new_resolved = new_resolved or _notified(g, a) != "resolved"
    note = None
    held: set[str] = set()  # resolved alerts a cut left out: they stay until their resolution is sent
    # every alert muted: Alertmanager's pipeline stops at its mute stage, so nothing is sent and the log stays (a
    # silence on a notified alert sends no empty "resolved", and its end no fresh notification)
    if alerts and not time_muted and _needs_update(log, firing, new_firing, new_resolved, group.send_resolved,
                                                   group.repeat_interval, now):
        # said only for its resolved alerts? then integrations without send_resolved skip it (their own dedup)
        resolved_only = group.send_resolved and not _needs_update(log, firing, new_firing, new_resolved, False,
                                                                   group.repeat_interval, now)
        g["seq"] += 1
        prior = {a["fingerprint"]: _notified(g, a) for a in alerts}
        note = notification(group, [_marked(a, None) for a in alerts], now, g["seq"])
        if group.public:
            note["amGroupKey"] = group.public
        if resolved_only:
            note["resolvedOnly"] = True

        def rank(a: dict) -> int:  # what the log has not seen first
            if a["status"] == "firing":
                return 0 if prior[a["fingerprint"]] != "firing" else 2
            return 1 if group.send_resolved and prior[a["fingerprint"]] != "resolved" else 3

        note = fit(note, RECORD_LIMIT - len(key.encode()) - NOTE_MARGIN, rank)
        sent = {a["fingerprint"] for a in note["alerts"]} if "truncatedAlerts" in note else prior.keys()
        marks: dict[str, str | None] = {}
        for a in alerts:
            fp = a["fingerprint"]
            if fp in sent or (a["status"] == "resolved" and not group.send_resolved):
                marks[fp] = a["status"]  # (a resolution no receiver wants is logged as Alertmanager does)
            else:  # left out of a cut: what the log said of it stands
                marks[fp] = prior[fp]
                if a["status"] == "resolved" and prior[fp] != "resolved":
                    held.add(fp)
        for a in every:  # the log is now this notification: each alert marked as it was sent
            mark = marks.get(a["fingerprint"])
            if mark != a.get("notified"):
                state[f"{ALERT_PREFIX}{key}|{a['fingerprint']}"] = _marked(a, mark)
        gone = _gone(state, index, key)
        for fp in gone:  # placeholders: not in this notification
            state.pop(f"{GONE_PREFIX}{key}|{fp}", None)
        gone.clear()
        g["log"] = None  # what an earlier worker reads: never notified (it would announce the group once)
        g["marks_log"] = {"firing": sum(m == "firing" for m in marks.values()),
                          "resolved": sum(m == "resolved" for m in marks.values()), "at": now}
    for fp in list(fps):
        akey = f"{ALERT_PREFIX}{key}|{fp}"
        a = state[akey]
        if a["status"] == "firing" or fp in held:
            continue
        mark = _notified(g, a)  # resolved and flushed: it leaves, a placeholder if the log names it
        del state[akey]
        fps.discard(fp)
        if mark is not None:
            state[f"{GONE_PREFIX}{key}|{fp}"] = {"notified": mark}
            _gone(state, index, key).add(fp)
    if not fps:
        _drop(state, key, index)
        return note
    if isinstance(index, Members) and not index.gone.get(key, True):
        del index.gone[key]
    state[skey] = g
    return note


def _marked(a: dict, mark: str | None) -> dict:
    """Alert record ``a`` with mark ``mark`` (None: none); never changed in place (the lifecycle may share it)."""
    if mark is None:
        return {k: v for k, v in a.items() if k != "notified"} if "notified" in a else a
    return {**a, "notified": mark}


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


def fit(note: dict, limit: int = RECORD_LIMIT, rank=None) -> dict:
    """``note`` cut to at most ``limit`` bytes of JSON (a Kafka record, less its key and headers), as Alertmanager's
    webhook cuts to ``max_alerts``: the alerts that fit are kept, lowest ``rank(alert)`` first (default: firing
    first; ``flush`` ranks what is new to the log first), each rank in Alertmanager's order, and what is kept stays in
    that order.  A firing group's note keeps a firing alert first, so its status stays the group's (a cut that kept
    only resolutions would tell PagerDuty the group resolved while it fires).  The note says what was left out and
    the totals (``truncatedAlerts``, ``numFiring``, ``numResolved``: ``alerts.payload`` renders them).  A note that
    fits is returned as is.

    >>> a = lambda i, st: {"labels": {"pod": f"p{i}"}, "status": st, "fingerprint": f"f{i}"}
    >>> note = {"groupKey": "g", "status": "firing", "alerts": [a(0, "resolved")] + [a(i, "firing") for i in (1, 2, 3)]}
    >>> cut = fit(note, 250)
    >>> [x["fingerprint"] for x in cut["alerts"]], cut["truncatedAlerts"], cut["numFiring"], len(orjson.dumps(cut)) <= 250
    (['f1', 'f2'], 2, 3, True)
    >>> [x["fingerprint"] for x in fit(note, 250, rank=lambda x: x["fingerprint"] != "f0")["alerts"]]
    ['f0', 'f1']
    >>> fit(note) is note
    True
    """
    if len(orjson.dumps(note)) <= limit:
        return note
    alerts = note["alerts"]
    firing = sum(a["status"] == "firing" for a in alerts)
    head = {**note, "alerts": [], "truncatedAlerts": len(alerts), "numFiring": firing,
            "numResolved": len(alerts) - firing}
    room = limit - len(orjson.dumps(head))
    rank = rank or (lambda a: a["status"] != "firing")
    order = sorted(range(len(alerts)), key=lambda i: rank(alerts[i]))  # stable: Alertmanager's order in each rank
    if firing and alerts[order[0]]["status"] != "firing":
        first = next(i for i in order if alerts[i]["status"] == "firing")
        order.remove(first)
        order.insert(0, first)
    keep = set()
    for i in order:
        size = len(orjson.dumps(alerts[i])) + 1  # and its comma
        if size > room:
            break
        room -= size
        keep.add(i)
    kept = [a for i, a in enumerate(alerts) if i in keep]
    return {**head, "alerts": kept, "truncatedAlerts": len(alerts) - len(kept)}
