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

import orjson

from alerts import grouping, lifecycle
from alerts.config import RoutingConfig
from alerts.inhibit import Inhibitor, rules_from
from alerts.routing import Router
from alerts.silences import Silences
from core.records import Alert

GROUP_ANNOTATION = "kubesight_group"  # carries the Group of an alert re-keyed by group key (internal topic only)


class Timers:
    """In-memory index of one state mapping's timers (group flushes, alert expiries), rebuilt from the state.

    Scanning a whole partition's state at every tick costs O(alerts); the index makes a tick
    O(groups) and is derived data only (never saved), so a restored state simply rebuilds it.
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


class Engine:
    def __init__(self, cfg: RoutingConfig, silences: Silences | None = None, inhibitor: Inhibitor | None = None):
        self.cfg = cfg
        self.router = Router(cfg)
        self.silences = silences if silences is not None else Silences()
        self.inhibitor = inhibitor if inhibitor is not None else Inhibitor(rules_from(cfg))
        self.resolve_timeout = cfg.global_.resolve_timeout
        self.send_resolved = {
            r.name: any(c.send_resolved for c in (*r.webhook_configs, *r.slack_configs, *r.dingtalk_configs))
            for r in cfg.receivers
        }
        self._timers: dict[int, Timers] = {}

    def timers(self, state) -> Timers:
        t = self._timers.get(id(state))
        if t is None or t.state is not state:
            if len(self._timers) > 256:  # states of partitions long gone
                self._timers.clear()
            t = self._timers[id(state)] = Timers(state)
        return t

    # ------------------------------------------------------------ step 1: by fingerprint
    def route(self, alert: Alert, state, now: float) -> list[tuple[grouping.Group, Alert]]:
        """Lifecycle then routing: the (group, alert) pairs to hand to grouping; [] for a duplicate."""
        passed = lifecycle.receive(state, alert, now, self.resolve_timeout)
        key = lifecycle.PREFIX + alert.fingerprint
        entry = state.get(key)
        timers = self.timers(state)
        if entry is not None and entry["until"] is not None:
            timers.expiry[key] = entry["until"]
        else:
            timers.expiry.pop(key, None)
        return self._groups(passed) if passed is not None else []

    def expire(self, state, now: float) -> list[tuple[grouping.Group, Alert]]:
        """Alerts whose source went quiet, resolved, with their groups."""
        timers = self.timers(state)
        keys = [k for k, t in timers.expiry.items() if t <= now]
        for k in keys:
            del timers.expiry[k]
        return [pair for a in lifecycle.expire(state, now, keys) for pair in self._groups(a)]

    def _groups(self, alert: Alert) -> list[tuple[grouping.Group, Alert]]:
        out = []
        for d in self.router.destinations(alert.labels):
            r = d.route
            g = grouping.Group(d.group_key, d.receiver, d.group_labels, r.key, r.group_wait, r.group_interval,
                               r.repeat_interval, self.send_resolved.get(d.receiver, True))
            out.append((g, alert))
        return out

    # ------------------------------------------------------------ step 2: by group key
    def group(self, group: grouping.Group, alert: Alert, state, now: float) -> None:
        grouping.add(state, group, alert, now, self.timers(state).members)
        self.timers(state).groups[group.key] = state[grouping.PREFIX + group.key]["next"]

    def flush_due(self, state, now: float) -> list[dict]:
        """Notifications of every group whose timer expired at ``now`` (silences and inhibitions applied)."""
        out = []
        timers = self.timers(state)
        for key in sorted(k for k, t in timers.groups.items() if t <= now):
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
        timers.groups[key] = g["next"]
        return note, g["next"]

    def flush_until(self, state, now: float) -> list[dict]:
        """Event time: every group timer that expired up to ``now`` flushes *at its own due time*, in time order.

        A group due at 10 s and re-evaluated every group_interval flushes at 10, 15, 20 ... up to ``now``,
        each time against the alerts it held then, so the notifications do not depend on how often the
        caller ticks or how far one record moves the clock (the replay compresses hours into seconds).
        """
        import heapq

        out = []
        timers = self.timers(state)
        heap = [(t, k) for k, t in timers.groups.items() if t <= now]
        heapq.heapify(heap)
        while heap:
            t, key = heapq.heappop(heap)
            if timers.groups.get(key) != t:
                continue
            note, nxt = self._flush_one(state, timers, key, t)
            if note is not None:
                out.append(note)
            if nxt is not None and nxt <= now:
                heapq.heappush(heap, (nxt, key))
        return out

    def muted_at(self, now: float):
        def muted(labels: dict) -> bool:
            return bool(self.inhibitor.inhibited(labels) or self.silences.muting(labels, now))

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


def to_grouped(group: grouping.Group, alert: Alert) -> Alert:
    """The alert as re-keyed onto the group topic: its Group rides in a reserved annotation."""
    ann = dict(alert.annotations)
    ann[GROUP_ANNOTATION] = orjson.dumps(group.to_dict()).decode()
    return Alert(alert.labels, ann, alert.status, alert.startsAt, alert.endsAt, alert.source, alert.generatorURL)


def from_grouped(alert: Alert) -> tuple[grouping.Group, Alert] | None:
    raw = alert.annotations.get(GROUP_ANNOTATION)
    if raw is None:
        return None
    ann = {k: v for k, v in alert.annotations.items() if k != GROUP_ANNOTATION}
    plain = Alert(alert.labels, ann, alert.status, alert.startsAt, alert.endsAt, alert.source, alert.generatorURL)
    return grouping.Group.from_dict(orjson.loads(raw)), plain
