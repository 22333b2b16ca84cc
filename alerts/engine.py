"""The alert pipeline as pure steps: lifecycle + routing (by fingerprint), then grouping + flush (by group key).

The worker runs the two steps on two partitionings (``streams.alerting``); tests, the benchmark and
``routes test`` run them in one process with one mapping for state.  Silences and inhibitions are
consulted when a group flushes, as in Alertmanager.

>>> from alerts.config import load_text
>>> from core.records import Alert
>>> cfg = load_text('''
... route: {receiver: ops, group_by: [alertname], group_wait: 10s}
... receivers: [{name: ops}]
... ''')
>>> eng, st = Engine(cfg), {}
>>> eng.receive(Alert({"alertname": "A", "pod": "p1"}, startsAt=0.0), st, now=0.0)
>>> eng.receive(Alert({"alertname": "A", "pod": "p2"}, startsAt=1.0), st, now=1.0)
>>> eng.tick(st, now=5.0)
[]
>>> [(n["receiver"], n["groupKey"], len(n["alerts"])) for n in eng.tick(st, now=10.0)]
[('ops', '{}:{alertname="A"}', 2)]
"""

from __future__ import annotations

import heapq

import orjson

from alerts import grouping, lifecycle
from alerts.config import RoutingConfig
from alerts.inhibit import Inhibitor, rules_from
from alerts.routing import Router
from alerts.silences import Silences
from core.records import Alert, parse_time
from core.statememo import PerState

GROUP_ANNOTATION = "kubesight_group"  # carries the Group of an alert re-keyed by group key (internal topic only)


class Timers:
    """In-memory index of one state mapping's timers (group flushes, alert expiries), rebuilt from the state.

    ``groups`` / ``expiry`` map a group key / an alert's state key to its due time; each has a heap of
    (due, key) beside it, so a tick costs O(due timers · log n), not a scan of every open group and
    alert (at 2,000 new groups/s with group_interval 5m that is 600k groups).  An entry whose time no
    longer matches the mapping is stale and skipped when it surfaces.  Derived data only (never saved):
    a restored state simply rebuilds it.
    """

    def __init__(self, state):
        self.state = state
        self.groups: dict[str, float] = {}
        self.expiry: dict[str, float] = {}
        self.members = grouping.members(state)
        for k, v in state.items():
            if k.startswith(grouping.PREFIX):
                self.groups[k[len(grouping.PREFIX):]] = v["next"]
            elif k.startswith(lifecycle.PREFIX) and v["until"] is not None:
                self.expiry[k] = v["until"]
        self.gheap = [(t, k) for k, t in self.groups.items()]
        self.eheap = [(t, k) for k, t in self.expiry.items()]
        heapq.heapify(self.gheap)
        heapq.heapify(self.eheap)

    def set_group(self, key: str, t: float, force: bool = False) -> None:
        """The group's due time; ``force`` after its heap entry was consumed (a flush), even if unchanged."""
        if force or self.groups.get(key) != t:
            self.groups[key] = t
            heapq.heappush(self.gheap, (t, key))

    def set_expiry(self, key: str, t: float | None) -> None:
        if t is None:
            self.expiry.pop(key, None)
        elif self.expiry.get(key) != t:
            self.expiry[key] = t
            heapq.heappush(self.eheap, (t, key))

    @staticmethod
    def _due(heap: list, timers: dict, now: float) -> list[str]:
        """Keys of ``timers`` due at ``now`` (each once), popped from its heap; stale entries dropped."""
        out = []
        while heap and heap[0][0] <= now:
            t, k = heapq.heappop(heap)
            if timers.get(k) == t:
                out.append(k)
        Timers._compact(heap, timers)
        return list(dict.fromkeys(out))

    @staticmethod
    def _compact(heap: list, timers: dict) -> None:
        if len(heap) > 64 and len(heap) > 4 * len(timers):  # mostly stale (timers moved on): rebuild
            heap[:] = [(t, k) for k, t in timers.items()]
            heapq.heapify(heap)

    def due_groups(self, now: float) -> list[str]:
        """Group keys due at ``now``; their heap entries are consumed (a caller flushes each, which moves it)."""
        return self._due(self.gheap, self.groups, now)

    def due_expiry(self, now: float) -> list[str]:
        keys = self._due(self.eheap, self.expiry, now)
        for k in keys:
            del self.expiry[k]
        return keys


ROUTED = "__routed_by__"  # in a partition's state: the digest of the routing its firing alerts were last routed by


class Engine:
    def __init__(self, cfg: RoutingConfig, silences: Silences | None = None, inhibitor: Inhibitor | None = None,
                 silence_clock=None):
        self.silences = silences if silences is not None else Silences()
        # clock: event (a replay of 2021's events): silences are an operator's, made now for the next two hours, on
        # the wall clock as Alertmanager's and the board's are; matched at the flush's own time they never applied
        # (a silence cannot start in the past). ``silence_clock``: the wall clock then; None: the flush's time.
        self.silence_clock = silence_clock
        self.inhibitor = inhibitor if inhibitor is not None else Inhibitor(rules_from(cfg))
        self._configure(cfg)
        self._timers = PerState(Timers)  # state -> its timers, gone with the state (a revoked partition's store)

    def _configure(self, cfg: RoutingConfig) -> None:
        self.cfg = cfg
        self.router = Router(cfg)
        self.resolve_timeout = cfg.global_.resolve_timeout
        self.send_resolved = {  # any integration of the receiver, whatever its kind (pagerduty, email, ...)
            r.name: any(getattr(c, "send_resolved", False) for f in type(r).model_fields if f.endswith("_configs")
                        for c in getattr(r, f) or ())
            for r in cfg.receivers
        }

    def reconfigure(self, cfg: RoutingConfig) -> None:
        """Take a new routing config (a reload, validated already): routes, timings, inhibit rules, from now on.

        The alerts already firing are moved by ``reroute``, per partition state."""
        self._configure(cfg)
        self.inhibitor.set_rules(rules_from(cfg))

    def reroute(self, state) -> list[tuple[grouping.Group, dict]]:
        """Route every firing alert of ``state`` again, under the config in force, as an Alertmanager reload does.

        Returns the records for alert-groups: the alert (its lifecycle record form) into each group the
        routing sends it to now (a new group notifies its receiver after group_wait; in a group that has
        it already, nothing is announced again and the timings follow the config), and a withdrawal
        (``Group.leaving``) from each group it was in and is no longer sent to.  Marks ``state`` as routed
        by this config (``ROUTED``): a worker that restarts with the same file does not route again.
        """
        out = []
        for key in [k for k in state if k.startswith(lifecycle.PREFIX)]:
            entry = state[key]
            d = entry["alert"]
            if d["status"] != "firing":
                continue
            groups = self.groups_of(d["labels"])
            now = [g.key for g in groups]
            out += [(g, d) for g in groups]
            out += [(grouping.Group.leaving(k), d) for k in entry.get("g", ()) if k not in now]
            _note_groups(state, key, entry, now)
        state[ROUTED] = self.cfg.digest
        return out

    def timers(self, state) -> Timers:
        return self._timers(state)

    # ------------------------------------------------------------ step 1: by fingerprint
    def route(self, alert: Alert, state, now: float) -> list[tuple[grouping.Group, Alert]]:
        """Lifecycle then routing: the (group, alert) pairs to hand to grouping; [] for a duplicate."""
        passed = lifecycle.receive(state, alert, now, self.resolve_timeout)
        key = lifecycle.PREFIX + alert.fingerprint
        entry = state.get(key)
        self.timers(state).set_expiry(key, entry["until"] if entry is not None else None)
        if passed is None:
            return []
        pairs = self._groups(passed)
        if entry is not None:  # firing: where it went, so a reload that sends it elsewhere can take it out (reroute)
            _note_groups(state, key, entry, [g.key for g, _ in pairs])
        return pairs

    def expire(self, state, now: float) -> list[tuple[grouping.Group, Alert]]:
        """Alerts whose source went quiet, resolved, with their groups."""
        keys = self.timers(state).due_expiry(now)
        return [pair for a in lifecycle.expire(state, now, keys) for pair in self._groups(a)]

    def _groups(self, alert: Alert) -> list[tuple[grouping.Group, Alert]]:
        return [(g, alert) for g in self.groups_of(alert.labels)]

    def groups_of(self, labels: dict) -> list[grouping.Group]:
        """The groups routing sends an alert with these labels to."""
        out = []
        for d in self.router.destinations(labels):
            r = d.route
            out.append(grouping.Group(d.group_key, d.receiver, d.group_labels, r.key, r.group_wait, r.group_interval,
                                      r.repeat_interval, self.send_resolved.get(d.receiver, True),
                                      public=d.public_key))
        return out

    # ------------------------------------------------------------ step 2: by group key
    def group(self, group: grouping.Group, alert: Alert, state, now: float) -> None:
        self.group_dict(group, alert.to_dict(), alert.startsAt, state, now)

    def group_dict(self, group: grouping.Group, d: dict, starts: float, state, now: float) -> None:
        """``group`` for an alert in its record form (the alert-groups fast path: no Alert rebuilt)."""
        timers = self.timers(state)
        if group.withdraw:
            grouping.withdraw(state, group.key, d["fingerprint"], timers.members)
            if grouping.PREFIX + group.key not in state:
                timers.groups.pop(group.key, None)  # its heap entries are stale now, skipped when they surface
            return
        grouping.add_dict(state, group, d, starts, now, timers.members)
        timers.set_group(group.key, state[grouping.PREFIX + group.key]["next"])

    @staticmethod
    def record_of(alert: Alert, state) -> dict:
        """The alert's record form: the lifecycle's own copy when it fires (made once), else made here."""
        if alert.status == "firing":
            entry = state.get(lifecycle.PREFIX + alert.fingerprint)
            if entry is not None:
                return entry["alert"]
        return alert.to_dict()

    def flush_due(self, state, now: float) -> list[dict]:
        """Notifications of every group whose timer expired at ``now`` (silences and inhibitions applied)."""
        out = []
        timers = self.timers(state)
        for key in sorted(timers.due_groups(now)):
            note, _ = self._flush_one(state, timers, key, now)
            if note is not None:
                out.append(note)
        return out

    def _flush_one(self, state, timers, key: str, t: float):
        """Flush group ``key`` at ``t`` (silences, inhibitions, time intervals applied); move its timer.

        Returns (notification or None, the group's next due time or None when the group is gone)."""
        route = self.router.by_key.get(state[grouping.PREFIX + key]["group"]["route"])
        time_muted = route is not None and self.router.muted(route, t)
        note = grouping.flush(state, key, t, self.muted_at(t), time_muted, timers.members)
        g = state.get(grouping.PREFIX + key)
        if g is None:
            del timers.groups[key]
            return note, None
        timers.set_group(key, g["next"], force=True)
        return note, g["next"]

    def flush_until(self, state, now: float) -> list[dict]:
        """Event time: every group timer that expired up to ``now`` flushes *at its own due time*, in time order.

        A group due at 10 s and re-evaluated every group_interval flushes at 10, 15, 20 ... up to ``now``,
        each time against the alerts it held then, so the notifications do not depend on how often the
        caller ticks or how far one record moves the clock (the replay compresses hours into seconds).
        """
        out = []
        timers = self.timers(state)
        heap = timers.gheap  # a flush pushes the group's next time; one still <= now comes round again
        while heap and heap[0][0] <= now:
            t, key = heapq.heappop(heap)
            if timers.groups.get(key) != t:
                continue
            note, _ = self._flush_one(state, timers, key, t)
            if note is not None:
                out.append(note)
        Timers._compact(heap, timers.groups)
        return out

    def muted_at(self, now: float):
        at = self.silence_clock() if self.silence_clock is not None else now

        def muted(labels: dict) -> bool:
            return bool(self.inhibitor.inhibited(labels) or self.silences.muting(labels, at))

        return muted

    # ------------------------------------------------------------ both steps in one process
    def receive(self, alert: Alert, state, now: float) -> None:
        self.inhibitor.observe(alert.labels, alert.status)
        for g, a in self.route(alert, state, now):
            self.group(g, a, state, now)

    def tick(self, state, now: float) -> list[dict]:
        for g, a in self.expire(state, now):
            self.inhibitor.observe(a.labels, a.status)
            self.group(g, a, state, now)
        return self.flush_due(state, now)


def _note_groups(state, key: str, entry: dict, group_keys: list[str]) -> None:
    """Note in an alert's lifecycle entry the groups routing sent it to (``g``), writing the entry only if it changed."""
    if entry.get("g") != group_keys:
        entry["g"] = group_keys
        state[key] = entry


def to_grouped(group: grouping.Group, alert: Alert) -> Alert:
    """The alert as re-keyed onto the group topic: its Group rides in a reserved annotation."""
    ann = dict(alert.annotations)
    ann[GROUP_ANNOTATION] = orjson.dumps(group.to_dict()).decode()
    return Alert(alert.labels, ann, alert.status, alert.startsAt, alert.endsAt, alert.source, alert.generatorURL)


def grouped_record(group: grouping.Group, d: dict, applied: bool = False) -> bytes:
    """``encode(to_grouped(group, alert))`` from the alert's record form ``d`` (byte for byte; ``d`` untouched).

    ``applied``: the transition is already in its group's state, written in the same transaction as this
    record (the alerting stage grouped it where it was routed); the group step skips it when it reads it
    back (``is_applied``).  The mark is the group annotation's last member, which other readers ignore.
    """
    ann = dict(d["annotations"])
    g = group.to_dict()
    if applied:
        g["applied"] = 1
    ann[GROUP_ANNOTATION] = orjson.dumps(g).decode()
    r = dict(d)
    r["annotations"] = ann
    return orjson.dumps(r)


_RECORD_KEYS = ("v", "kind", "labels", "annotations", "status", "startsAt", "endsAt", "fingerprint", "source",
                "generatorURL")


def grouped_from_record(d) -> tuple[grouping.Group, dict, float, float | None] | None:
    """(group, the alert's record form, its start, its end) of an alert-groups record as ``grouped_record`` writes it
    (parsed JSON), or None when it is not exactly that shape (the caller decodes it the checked way).

    Its fingerprint is the one written with it (this worker's own topic); the annotation is taken out of ``d``.
    """
    if type(d) is not dict or tuple(d) != _RECORD_KEYS or d["v"] != 1 or d["kind"] != "alert":
        return None
    labels, ann, starts = d["labels"], d["annotations"], d["startsAt"]
    if type(labels) is not dict or type(ann) is not dict or type(starts) is not str or "alertname" not in labels \
            or d["status"] not in ("firing", "resolved") or type(d["fingerprint"]) is not str \
            or not (d["endsAt"] is None or type(d["endsAt"]) is str) or type(d["source"]) is not str \
            or type(d["generatorURL"]) is not str:
        return None
    raw = ann.get(GROUP_ANNOTATION)
    if type(raw) is not str:
        return None
    for v in labels.values():
        if type(v) is not str:
            return None
    for v in ann.values():
        if type(v) is not str:
            return None
    try:
        group = grouping.Group.from_dict(orjson.loads(raw))
        t = parse_time(starts)
        e = None if d["endsAt"] is None else parse_time(d["endsAt"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    del ann[GROUP_ANNOTATION]
    return group, d, t, e


_APPLIED = ',"applied":1}'


def is_applied(raw_group: str) -> bool:
    """Whether a group annotation (``grouped_record``'s JSON text) marks its transition as grouped already.

    Unambiguous on the text orjson wrote: an unescaped ``,"applied":1}`` at its very end can only be the
    last member of the group object itself, whatever the labels hold.

    >>> g = grouping.Group("k", "r", {"x": ',"applied":1}'}, "{}", 0.0, 300.0, 3600.0)
    >>> d = Alert({"alertname": "A"}, startsAt=0.0).to_dict()
    >>> [is_applied(orjson.loads(grouped_record(g, d, a))["annotations"][GROUP_ANNOTATION]) for a in (False, True)]
    [False, True]
    """
    return raw_group.endswith(_APPLIED)


def from_grouped(alert: Alert) -> tuple[grouping.Group, Alert] | None:
    raw = alert.annotations.get(GROUP_ANNOTATION)
    if raw is None:
        return None
    ann = {k: v for k, v in alert.annotations.items() if k != GROUP_ANNOTATION}
    plain = Alert(alert.labels, ann, alert.status, alert.startsAt, alert.endsAt, alert.source, alert.generatorURL)
    return grouping.Group.from_dict(orjson.loads(raw)), plain
