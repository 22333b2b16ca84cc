"""The stability board: a traffic-light web page of clusters x layers and teams x namespaces (issue 17).

    alerts (all partitions, read_committed) ──> BoardState: the current alert per fingerprint
    incidents (when the topic exists)       ──>   (firing until resolved), counts per cell
    notifications, deadletter (delivery's)  ──>   who was told of each alert, and which deliveries failed
    receiver-health (delivery's, compacted) ──>   which receivers fail now (retrying, or given up): the header
    silences (compacted) ──> SilenceBook ───────> muted alerts count apart and never colour a cell
    HTTP (aiohttp): /  /static/*  /api/summary  /api/alerts (drill-down, paginated)  /api/events (SSE)
                    /api/clusters (the clusters whose name matches, paginated: those the push leaves out too)
                    /alertmanager/api/v2/silences...  (alerts.api over the same SilenceBook; writes need the token)

The server aggregates; the page renders only cells and fetches the alerts of one cell a page at a time,
so 10,000 firing alerts cost the browser a few dozen cells.  Silences created on the page go through
``alerts.api`` -> ``alerts.silences.Silence.create`` -> ``SilenceBook.put``: the same code as
``kubesight silences add`` and ``silences serve``.

>>> layer_of({"alertname": "KubeNodeNotReady"}, "nodes/KubeNodeNotReady@1.0.0")
'node'
>>> layer_of({"alertname": "NodeNetworkReceiveErrors"}, "nodes/NodeNetworkReceiveErrors@1.0.0")
'network'
>>> layer_of({"alertname": "X", "layer": "storage"}, "workloads/X@1")
'storage'
>>> [layer_of(lab, "audit/A@1") for lab in ({"node": "w1"}, {"namespace": "shop", "pod": "p"}, {"kind": "User"})]
['node', 'workloads', 'control-plane']
>>> level_of({"critical": 0, "warning": 2, "info": 1})
'warning'
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import ipaddress
import logging
import threading
import time
from importlib import resources
from pathlib import Path

import mode
import orjson
from aiohttp import web

from alerts.inhibit import Inhibitor, rules_from
from core.kafkaclient import client_config
from core.matchers import matches_all
from core.records import Alert, RecordError, decode, format_time, parse_time
from core.settings import Settings
from streams.alerting import RoutingFile, SilenceBook
from streams.follow import follow_topic
from streams.stages import team_cell

log = logging.getLogger("kubesight.board")

STATIC = Path(str(resources.files("streams") / "board_static"))

# the grid's columns, in the order of the platform from the ground up
LAYERS = (
    ("cloud", "Cloud"),
    ("node", "Node / kernel"),
    ("gpu", "GPU"),
    ("control-plane", "Control plane"),
    ("workloads", "Workloads"),
    ("storage", "Storage"),
    ("network", "Network"),
)
LAYER_IDS = {x for x, _ in LAYERS}
# rule pack (the part of ``source`` before '/') -> layer
PACK_LAYER = {"cloud": "cloud", "nodes": "node", "kernel": "node", "gpu": "gpu", "control-plane": "control-plane",
              "workloads": "workloads", "resources": "workloads", "storage": "storage", "network": "network"}
NETWORK_WORDS = ("network", "conntrack", "dns", "cni", "ingress", "kubeproxy", "kube-proxy")
SEVERITY = {"critical": "critical", "page": "critical", "error": "critical", "high": "critical",
            "warning": "warning", "warn": "warning", "medium": "warning"}  # anything else: info
SEV_RANK = {"critical": 0, "warning": 1, "info": 2}
NONE = "(none)"


def layer_of(labels: dict, source: str) -> str:
    """The grid column of an alert: its ``layer`` label, else network by name, else its rule pack, else its labels."""
    explicit = labels.get("layer", "")
    if explicit in LAYER_IDS:
        return explicit
    name = labels.get("alertname", "").lower()
    if any(w in name for w in NETWORK_WORDS):
        return "network"
    pack = source.split("/", 1)[0] if source else ""
    if pack in PACK_LAYER:
        return PACK_LAYER[pack]
    if "gpu" in labels or "gpu" in name:
        return "gpu"
    if labels.get("namespace") or labels.get("pod"):
        return "workloads"
    if labels.get("node") or labels.get("instance"):
        return "node"
    if pack == "audit":  # who did what to the API's objects (a namespace, a CRD) or reached it from where
        return "control-plane"
    return "other"


def level_of(counts: dict) -> str:
    """A cell's colour from its firing alerts that are not muted: critical (red), warning (yellow), ok (green)."""
    if counts.get("critical"):
        return "critical"
    if counts.get("warning"):
        return "warning"
    return "ok"


class Entry:
    """One firing alert as the board keeps it (the record as it came, plus where it goes on the board)."""

    __slots__ = ("fp", "alert", "cluster", "layer", "team", "ns", "sev", "silenced_by", "inhibited_by", "starts",
                 "undelivered")

    def __init__(self, fp: str, alert: dict, starts: float):
        lab = alert["labels"]
        self.fp, self.alert, self.starts = fp, alert, starts
        self.cluster = lab.get("cluster") or NONE
        self.layer = layer_of(lab, alert.get("source") or "")
        self.team, self.ns = team_cell(lab)
        self.sev = SEVERITY.get(lab.get("severity", "").lower(), "info")
        self.silenced_by: list[str] = []
        self.inhibited_by: list[str] = []  # fingerprints of the firing alerts that inhibit it (routing's rules)
        self.undelivered = False  # a receiver's latest notification of it failed (delivery dead-lettered it)


def _counts() -> dict:
    return {"critical": 0, "warning": 0, "info": 0, "silenced": 0, "inhibited": 0, "firing": 0, "undelivered": 0}


def _add(c: dict, e: Entry) -> None:
    c["firing"] += 1
    if e.undelivered:
        c["undelivered"] += 1
    if e.silenced_by:
        c["silenced"] += 1
    elif e.inhibited_by:
        c["inhibited"] += 1
    else:
        c[e.sev] += 1


NOTIFIED_MAX = 200_000  # fingerprints whose notified receivers the board keeps at most (resolved ones go first)
DELIVERY = b'"origin":"alerts/deliver"'  # a dead letter of delivery (core.records.deadletter writes it so, compact)


class BoardState:
    """The current alerts (firing until resolved) and incidents, aggregated on demand.  No I/O: tested alone.

    >>> b = BoardState()
    >>> b.apply_alert({"labels": {"alertname": "A", "severity": "critical", "cluster": "c1"},
    ...                "status": "firing", "startsAt": "2021-08-03T09:00:00Z", "fingerprint": "f1", "source": "nodes/A@1"})
    >>> [(c["row"], c["col"], c["level"], c["critical"]) for c in b.summary(0)["grid"]]
    [('c1', 'node', 'critical', 1)]
    >>> b.apply_alert({"labels": {"alertname": "A", "severity": "critical", "cluster": "c1"}, "status": "resolved",
    ...                "startsAt": "2021-08-03T09:00:00Z", "fingerprint": "f1", "source": "nodes/A@1"})
    >>> b.summary(0)["grid"]
    []
    """

    TEAM_ROWS = 200  # team rows a summary carries at most (the worst first): a push stays bounded
    TEAM_CHIPS = 50  # namespaces of a team a summary carries at most (the worst first)
    GRID_ROWS = 100  # cluster rows a summary carries at most (the worst first): 5,000 clusters made a push of 1.5 MB
    # and a page of 35,000 cells that took a second to render at every change

    def __init__(self, silences=None, router=None, inhibitor=None):
        self.alerts: dict[str, Entry] = {}
        self.incidents: dict[str, dict] = {}
        self.silences = silences  # alerts.silences.Silences (or None: nothing is silenced)
        self.router = router  # alerts.routing.Router (or None: receivers unknown)
        self.inhibitor = inhibitor  # alerts.inhibit.Inhibitor with the routing file's rules (or None: none inhibits)
        self.sources_changed = False  # a source of an inhibit rule fired or resolved: refresh_mutes is due
        self.notified: dict[str, dict[str, str]] = {}  # fingerprint -> receiver -> when it was last notified firing
        self.failed: dict[str, dict[str, tuple[str, str]]] = {}  # fingerprint -> receiver -> (that notification's
        # time, why delivery gave it up): the latest failed notification of each receiver
        self.health: dict[str, dict] = {}  # integration -> its latest receiver-health record (delivery's view)
        self.waiting: dict[str, frozenset] = {}  # integration not ok -> the firing alerts that wait for it (retries)
        self.ends: dict[str, float] = {}  # fingerprint -> the end a firing alert promised (endsAt): ``expire``
        self.cells: dict[str, tuple[str, str, str | None]] = {}  # cell id -> (view, row, col): summary() fills it
        self.version = 0
        self.silence_version = -1
        self.read = 0  # alert records read
        self.last_change: float | None = None

    # ------------------------------------------------------------ input

    def apply_alert(self, d: dict) -> None:
        self.read += 1
        fp = d.get("fingerprint") or ""
        inh = self.inhibitor
        if inh is not None:
            inh.observe(d["labels"], d.get("status") or "firing")
            if any(matches_all(r.source, d["labels"]) for r in inh.rules):
                self.sources_changed = True  # what it inhibits changes with it: the Board refreshes every entry
        if d.get("status") == "firing":
            e = Entry(fp, d, parse_time(d["startsAt"]) if d.get("startsAt") else 0.0)
            self.alerts[fp] = e
            if self.silences is not None and self.silences.by_id:
                e.silenced_by = self.silences.muting(d["labels"], time.time())
            if inh is not None:
                e.inhibited_by = inh.inhibiting(d["labels"])
            e.undelivered = self._undelivered(fp)
            if d.get("endsAt"):
                self.ends[fp] = parse_time(d["endsAt"])
            else:
                self.ends.pop(fp, None)
        else:
            self._forget(fp)
        self.version += 1
        self.last_change = time.time()

    def _forget(self, fp: str) -> None:
        self.alerts.pop(fp, None)
        self.notified.pop(fp, None)
        self.failed.pop(fp, None)
        self.ends.pop(fp, None)

    def expire(self, now: float) -> None:
        """A firing alert whose promised end (endsAt) passed without it being sent again has ended (Alertmanager's
        rule): the Watchdog, a silence reminder, the remediator's missing-permission alert never send a resolution."""
        for fp in [fp for fp, t in self.ends.items() if t <= now]:
            e = self.alerts.get(fp)
            if e is not None and self.inhibitor is not None:
                self.inhibitor.observe(e.alert["labels"], "resolved")
                self.sources_changed = True
            self._forget(fp)
            self.version += 1
            self.last_change = time.time()

    def on_notification_record(self, key, value) -> None:
        """A notification as alerting wrote it for delivery: which receivers were told of which firing alerts."""
        try:
            note = orjson.loads(value)
            receiver, at, alerts = note["receiver"], note["time"], note["alerts"]
            fps = [a["fingerprint"] for a in alerts if a.get("status") == "firing"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return  # delivery dead-letters what is not a notification
        # kept whether or not the alerts topic's record of it was read yet (the topics are read side by side); an
        # alert's resolution forgets it, and a notification read after that resolution is bounded by NOTIFIED_MAX
        for fp in fps:
            self.notified.setdefault(fp, {})[receiver] = at
            self._delivery_changed(fp)
        _bound(self.notified, self.alerts)
        if fps:
            self.version += 1

    def on_deadletter_record(self, key, value) -> None:
        """A notification delivery gave up on (alerting's delivery dead-letters it with the receiver's answer, after
        its retries): the drill-down says so, and the alert counts as undelivered until a later notification of it
        to that receiver is read.  Other dead letters (collectors', the worker's) are skipped unparsed."""
        if DELIVERY not in value:
            return
        try:
            d = orjson.loads(value)
            if d.get("origin") != "alerts/deliver" or d.get("encoding") != "utf-8":
                return
            if d.get("truncated"):  # a notification over 64 KiB is kept cut: delivery names its alerts beside it
                named = d["where"]["notification"]
                receiver, at, fps = named["receiver"], named["time"], [x for x in named["firing"] if isinstance(x, str)]
            else:
                note = orjson.loads(d["payload"])
                receiver, at, alerts = note["receiver"], note["time"], note["alerts"]
                fps = [a["fingerprint"] for a in alerts if a.get("status") == "firing"]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return
        for fp in fps:
            self.failed.setdefault(fp, {})[receiver] = (at, str(d.get("reason") or ""))
            self._delivery_changed(fp)
        _bound(self.failed, self.alerts)

    HEALTH_TYPES = {"integration": (str,), "receiver": (str,), "state": (str,), "since": (str, type(None)),
                    "reason": (str, type(None)), "attempts": (int, type(None)), "waiting": (list, type(None)),
                    "waitingAlerts": (int, type(None))}

    def on_receiver_health_record(self, key, value) -> None:
        """Delivery's view of one integration (``receiver-health``): ok, retrying (a failed attempt will be tried
        again) or failing (it gave a notification up).  What is not ok shows in the page's header.  A record of
        another shape is skipped (summary() sorts and prints these: one bad record would fail every page, and the
        topic is compacted), and so is one of a receiver the routing file no longer has (it never succeeds
        again, so it would stay failing for ever)."""
        try:
            d = orjson.loads(value)
            if not isinstance(d, dict) or d.get("state") not in ("ok", "retrying", "failing") or any(
                    not isinstance(d.get(k), t) for k, t in self.HEALTH_TYPES.items() if k in d or k == "integration"):
                return
        except orjson.JSONDecodeError:
            return
        name = d["integration"]
        if not self._routed(d):
            if self.health.pop(name, None) is not None:
                self.waiting.pop(name, None)
                self.version += 1
            return
        if self.health.get(name) != d:
            self.health[name] = d
            w = d.get("waiting")
            if d["state"] != "ok" and isinstance(w, list) and w:
                self.waiting[name] = frozenset(x for x in w if isinstance(x, str))
            else:
                self.waiting.pop(name, None)
            self.version += 1

    def _routed(self, health: dict) -> bool:
        """Whether the routing file in force has the health record's receiver (unknown routing: yes)."""
        names = self.router.receivers if self.router is not None else None
        return names is None or health.get("receiver") in names

    def forget_unrouted(self) -> None:
        """The routing file changed: integrations of receivers it no longer has leave the header."""
        for name in [n for n, d in self.health.items() if not self._routed(d)]:
            del self.health[name]
            self.waiting.pop(name, None)
            self.version += 1

    def _failures(self, fp: str) -> dict[str, tuple[str, str]]:
        """Delivery's give-ups of the alert's current episode.  Delivery may retry a notification for hours, so its
        dead letter can be read after the alert resolved (and forgot it) and fired again: that one is older than
        the new firing's start, and says nothing about it."""
        f = self.failed.get(fp, {})
        e = self.alerts.get(fp)
        if not f or e is None or not e.starts:
            return f
        since = format_time(e.starts)  # times are format_time's: text order is time order
        return {r: v for r, v in f.items() if v[0] >= since}

    def _undelivered(self, fp: str) -> bool:
        told = self.notified.get(fp, {})
        return any(at >= told.get(r, "") for r, (at, _) in self._failures(fp).items())

    def _delivery_changed(self, fp: str) -> None:
        e = self.alerts.get(fp)
        if e is not None:
            was, e.undelivered = e.undelivered, self._undelivered(fp)
            if was != e.undelivered:
                self.version += 1

    def deliveries(self, fp: str) -> list[dict]:
        """Each receiver of an alert with its latest notification and, when delivery gave that one up, why; or,
        while delivery still retries a notification of it (receiver-health's ``waiting``), which integration fails."""
        told, failed = self.notified.get(fp, {}), self._failures(fp)
        out = []
        for r in sorted(set(told) | set(failed)):
            f = failed.get(r)
            if f is not None and f[0] >= told.get(r, ""):  # times are format_time's: text order is time order
                out.append({"receiver": r, "at": f[0], "failed": f[1]})
            else:
                waits = [self.health[name] for name, fps in sorted(self.waiting.items())
                         if fp in fps and self.health[name].get("receiver") == r]
                why = "; ".join(f"{d['integration']} {d['state']} since {d.get('since')}"
                                + (f": {d['reason']}" if d.get("reason") else "") for d in waits)
                out.append({"receiver": r, "at": told[r], "failed": None, **({"waiting": why} if why else {})})
        return out

    def on_alert_record(self, key, value) -> None:
        try:
            rec = decode(value)
        except RecordError:
            return  # the worker dead-letters malformed records; the board skips them
        if isinstance(rec, Alert):
            self.apply_alert(rec.to_dict())

    def on_incident_record(self, key, value) -> None:
        """An incident, as a JSON object keyed by id; ``status`` resolved/closed (or a tombstone) removes it."""
        k = key.decode() if key else ""
        if value is None:
            self.incidents.pop(k, None)
        else:
            try:
                d = orjson.loads(value)
            except orjson.JSONDecodeError:
                return
            labels = d.get("labels") if isinstance(d, dict) else None
            if not isinstance(d, dict) or not all(isinstance(d.get(f), str | None) for f in ("id", "cluster", "layer")) \
                    or not (labels is None or isinstance(labels, dict) and all(isinstance(v, str)
                                                                             for v in labels.values())):
                return  # not an incident the incidents stage writes: summary() would fail on it, and every page
            k = str(d.get("id") or k)
            if d.get("status") in ("resolved", "closed"):
                self.incidents.pop(k, None)
            else:
                self.incidents[k] = d
        self.version += 1
        self.last_change = time.time()

    def refresh_mutes(self, now: float) -> None:
        """Recompute which alerts are muted: silences changed (or one started or ended), or inhibiting alerts did."""
        active = self.silences is not None and bool(self.silences.by_id)
        inh = self.inhibitor
        for e in self.alerts.values():
            e.silenced_by = self.silences.muting(e.alert["labels"], now) if active else []
            e.inhibited_by = inh.inhibiting(e.alert["labels"]) if inh is not None else []
        self.sources_changed = False

    # ------------------------------------------------------------ output

    def summary(self, now: float) -> dict:
        """What the pages are sent: one pass over the alerts, namespaces grouped under their team as they are counted
        (each team row used to scan every (team, namespace) pair: 8,000 teams took 1.7 s, on the event loop, at
        every change).  A push is bounded: the worst GRID_ROWS clusters (by level, then firing alerts, then open
        incidents, then name: a red cluster is never left out while a green one is shown), the worst TEAM_ROWS teams
        and the worst TEAM_CHIPS namespaces of each, with how many more there are (``clustersMore`` and how many of
        those are red or yellow, ``clustersMoreLevels``; ``teamsMore``, ``namespacesMore``); the totals count them
        all."""
        grid: dict[tuple, dict] = {}
        teams: dict[str, dict] = {}
        spaces: dict[str, dict[str, dict]] = {}  # team -> namespace -> counts
        total = _counts()
        for e in self.alerts.values():
            _add(total, e)
            _add(grid.setdefault((e.cluster, e.layer), _counts()), e)
            _add(teams.setdefault(e.team, _counts()), e)
            _add(spaces.setdefault(e.team, {}).setdefault(e.ns, _counts()), e)
        self.cells = {}  # the ids of this summary's cells (a cell no longer firing: none, and its drill-down is empty)
        inc_by_cluster: dict[str, int] = {}
        for d in self.incidents.values():
            c = _incident_cluster(d)
            inc_by_cluster[c] = inc_by_cluster.get(c, 0) + 1
        layers = [{"id": i, "title": t} for i, t in LAYERS]
        if any(c == "other" for _, c in grid):  # a cell per (cluster, layer): far fewer than the alerts
            layers.append({"id": "other", "title": "Other"})
        rank = _rank(grid, inc_by_cluster)
        shown = heapq.nsmallest(self.GRID_ROWS, rank, key=rank.__getitem__)
        sent, hidden = set(shown), {"critical": 0, "warning": 0}  # of the clusters not sent: how many are red, yellow
        for c, k in rank.items():
            if k[0] < 2 and c not in sent:
                hidden["critical" if k[0] == 0 else "warning"] += 1
        for r, c in grid:  # a cell not sent keeps its id: a drill-down opened on it before its cluster fell out of
            if r not in sent:  # the worst GRID_ROWS follows it still (it said "no alert firing" while they fired)
                self._cell_id("grid", r, c)
        cols = sorted(x["id"] for x in layers)
        team_rows = []
        for t in heapq.nsmallest(self.TEAM_ROWS, teams, key=lambda t: (SEV_RANK[_worst(teams[t])], t)):
            mine = spaces[t]
            nss = [{"ns": ns, "id": self._cell_id("team", t, ns), **c, "level": level_of(c)} for ns, c in
                   heapq.nsmallest(self.TEAM_CHIPS, mine.items(), key=lambda x: (SEV_RANK[_worst(x[1])], x[0]))]
            team_rows.append({"team": t, "id": self._cell_id("team", t, None), **teams[t], "level": level_of(teams[t]),
                              "namespaces": nss, "namespacesMore": len(mine) - len(nss)})
        return {
            "version": self.version,
            "serverTime": now,
            "asOf": format_time(now),
            "total": {**total, "level": level_of(total)},
            "layers": layers,
            "clusters": shown,
            "clustersMore": len(rank) - len(shown),
            "clustersMoreLevels": hidden,
            "grid": [self._grid_cell(r, c, v) for r in shown for c in cols if (v := grid.get((r, c))) is not None],
            "teams": team_rows,
            "teamsMore": len(teams) - len(team_rows),
            "incidents": {"open": len(self.incidents), "byCluster": {c: inc_by_cluster[c] for c in shown
                                                                     if c in inc_by_cluster}},
            "receivers": [{k: d.get(k) for k in ("integration", "receiver", "state", "since", "attempts", "reason",
                                                  "waitingAlerts")}
                          for _, d in sorted(self.health.items()) if d.get("state") != "ok"],
        }

    FIND_ROWS = 100  # clusters one answer of find_clusters carries at most (a page of the grid)

    def find_clusters(self, query: str, offset: int, limit: int) -> dict:
        """The clusters whose name contains ``query`` (in any case; "" is every one), in the grid's order (worst
        first), a page at a time, each with its cells as a summary's grid has them: the same ids, so the page opens
        them with the same drill-down.  A push carries the worst GRID_ROWS clusters only, and the others, counted in
        its "+N more" row, could not be opened from the page; they are asked for here, on request, so that no push
        grows with them.  An offset past the end is moved back to the last page, as ``page`` does.

        >>> b = BoardState()
        >>> for i, (c, sev) in enumerate([("prod-eu", "warning"), ("prod-us", "critical"), ("dev", "critical")]):
        ...     b.apply_alert({"labels": {"alertname": "A", "severity": sev, "cluster": c}, "status": "firing",
        ...                    "fingerprint": f"f{i}", "source": "nodes/A@1"})
        >>> got = b.find_clusters("PROD", 0, 20)
        >>> got["total"], [(c["cluster"], c["level"], [x["col"] for x in c["cells"]]) for c in got["clusters"]]
        (2, [('prod-us', 'critical', ['node']), ('prod-eu', 'warning', ['node'])])
        >>> b.cell(got["clusters"][1]["cells"][0]["id"])
        ('grid', 'prod-eu', 'node')
        >>> [c["cluster"] for c in b.find_clusters("", 5, 2)["clusters"]]  # past the end: the last page
        ['prod-eu']
        """
        q = query.casefold()
        hit: dict[str, bool] = {}  # cluster -> whether its name matches (an alert per pod: a few names, many alerts)
        grid: dict[tuple, dict] = {}
        for e in self.alerts.values():
            if (h := hit.get(e.cluster)) is None:
                h = hit[e.cluster] = q in e.cluster.casefold()
            if h:
                _add(grid.setdefault((e.cluster, e.layer), _counts()), e)
        inc_by_cluster: dict[str, int] = {}
        for d in self.incidents.values():
            if q in (c := _incident_cluster(d)).casefold():
                inc_by_cluster[c] = inc_by_cluster.get(c, 0) + 1
        rank = _rank(grid, inc_by_cluster)
        names = sorted(rank, key=rank.__getitem__)
        if offset >= len(names):
            offset = (len(names) - 1) // limit * limit if names else 0
        cells: dict[str, list] = {r: [] for r in names[offset:offset + limit]}
        for (r, c), v in sorted(grid.items()):
            if r in cells:
                cells[r].append(self._grid_cell(r, c, v))
        return {"query": query, "total": len(names), "offset": offset, "limit": limit,
                "clusters": [{"cluster": r, "level": ("critical", "warning", "ok")[rank[r][0]], "firing": -rank[r][1],
                              "incidents": inc_by_cluster.get(r, 0), "cells": row} for r, row in cells.items()]}

    def _grid_cell(self, row: str, col: str, counts: dict) -> dict:
        """A cell of the clusters x layers grid as the page is sent it (a summary's, or found by name)."""
        return {"row": row, "col": col, "id": self._cell_id("grid", row, col), **counts, "level": level_of(counts)}

    def _cell_id(self, view: str, row: str, col: str | None) -> str:
        """A cell's short id, the same in every summary: the page drills down by it.  A label value (a team from a
        workload's annotation, a cluster's name) can be longer than a URL may be: the page asked for the row by name,
        aiohttp refused the request line (over 8 KiB) and the drill-down never opened."""
        key = orjson.dumps([view, row, col])
        i = hashlib.blake2b(key, digest_size=9).hexdigest()
        self.cells[i] = (view, row, col)
        return i

    def cell(self, cell_id: str) -> tuple[str, str, str | None] | None:
        """(view, row, col) of a cell of the latest summary, by its id."""
        return self.cells.get(cell_id)

    def select(self, view: str, row: str, col: str | None) -> list[Entry]:
        if view == "team":
            out = [e for e in self.alerts.values() if e.team == row and (col is None or e.ns == col)]
        else:
            out = [e for e in self.alerts.values() if e.cluster == row and (col is None or e.layer == col)]
        out.sort(key=lambda e: (bool(e.silenced_by or e.inhibited_by), SEV_RANK[e.sev], -e.starts, e.fp))
        return out

    def receivers(self, labels: dict) -> list[str] | None:
        if self.router is None:
            return None
        seen: list[str] = []
        for d in self.router.destinations(labels):
            if d.receiver not in seen:
                seen.append(d.receiver)
        return seen

    def page(self, view: str, row: str, col: str | None, offset: int, limit: int) -> dict:
        """One page of a cell's alerts.  An offset past the end (the alerts of the page shown resolved since) is
        moved back to the last page, which the page then shows: it said "51-10 of 10" and showed nothing."""
        sel = self.select(view, row, col)
        if offset >= len(sel):
            offset = (len(sel) - 1) // limit * limit if sel else 0
        items = []
        for e in sel[offset:offset + limit]:
            a = e.alert
            items.append({"fingerprint": e.fp, "labels": a["labels"], "annotations": a.get("annotations") or {},
                          "startsAt": a.get("startsAt"), "source": a.get("source") or "",
                          "generatorURL": a.get("generatorURL") or "", "severity": e.sev, "layer": e.layer,
                          "silencedBy": e.silenced_by, "inhibitedBy": e.inhibited_by,
                          "receivers": self.receivers(a["labels"]),
                          "notified": self.deliveries(e.fp)})
        incidents = []
        if view != "team":
            for k, d in self.incidents.items():
                c = _incident_cluster(d)
                lay = d.get("layer") or (d.get("labels") or {}).get("layer")
                if c == row and (col is None or lay in (None, col)):
                    incidents.append({"id": k, **d})
        return {"total": len(sel), "offset": offset, "limit": limit, "alerts": items, "incidents": incidents[:50]}


def _bound(by_fp: dict, alerts: dict) -> None:
    """Keep at most NOTIFIED_MAX fingerprints: the oldest of the alerts no longer firing go first (insertion order)."""
    if len(by_fp) > NOTIFIED_MAX:
        for fp in list(by_fp)[:NOTIFIED_MAX // 2]:
            if fp not in alerts:
                del by_fp[fp]


def _incident_cluster(d: dict) -> str:
    """The cluster of an incident: its labels' (the incidents stage's), else its own field."""
    return (d.get("labels") or {}).get("cluster") or d.get("cluster") or NONE


def _rank(grid: dict[tuple, dict], inc_by_cluster: dict[str, int]) -> dict[str, tuple]:
    """Each cluster of the grid's cells or of an open incident -> its place on the grid, smallest first: by its
    worst level (a red cluster last by name is never left out while a green one is shown), then firing alerts, then
    open incidents, then name ("(none)", the alerts without a cluster label, last).  The first item is the level's rank."""
    rank: dict[str, list] = {c: [2, 0] for c in inc_by_cluster}  # cluster -> [its worst level's rank, firing alerts]
    for (r, _), v in grid.items():
        k = rank.setdefault(r, [2, 0])
        k[0] = min(k[0], SEV_RANK[_worst(v)])
        k[1] += v["firing"]
    return {c: (k[0], -k[1], -inc_by_cluster.get(c, 0), c == NONE, c) for c, k in rank.items()}


def _worst(c: dict) -> str:
    lv = level_of(c)
    return "info" if lv == "ok" else lv


class Board(mode.Service):
    """Follows alerts, notifications, delivery's dead letters, incidents (when the topic exists) and silences;
    pushes summaries to the pages."""

    TICK = 0.25  # seconds between checks for a change to push
    HEARTBEAT = 5.0  # a summary at least this often (the page's freshness), and silences re-evaluated

    def __init__(self, settings: Settings, bootstrap: str, **kw):
        super().__init__(**kw)
        self.settings, self.bootstrap = settings, bootstrap
        self.book = SilenceBook(settings, bootstrap)
        router, self.routing = None, None
        if settings.routing:
            from alerts.routing import Router

            self.routing = RoutingFile(settings.routing)  # followed: the receivers column shows the version in force
            router = Router(self.routing.cfg)
        self.model = BoardState(self.book.silences, router,
                                Inhibitor(rules_from(self.routing.cfg)) if self.routing is not None else None)
        self.caught_up = asyncio.Event()
        self.clients: set[asyncio.Event] = set()
        self.latest: bytes = b""
        self.latest_summary: dict | None = None
        self.summary_ms = 0.0

    async def on_first_start(self) -> None:
        await self.add_runtime_dependency(self.book)

    @mode.Service.task
    async def _alerts(self) -> None:
        await follow_topic(self, self.bootstrap, self.settings.topic("alerts"), self.settings.partitions,
                           self.model.on_alert_record, self.caught_up, f"{self.settings.app_id}-board")

    @mode.Service.task
    async def _notifications(self) -> None:
        """The notifications topic: who was told of each alert (the drill-down's "notified")."""
        await follow_topic(self, self.bootstrap, self.settings.topic("notifications"), self.settings.partitions,
                           self.model.on_notification_record, asyncio.Event(), f"{self.settings.app_id}-board-notes")

    @mode.Service.task
    async def _failed_deliveries(self) -> None:
        """The dead-letter topic, for delivery's: which notifications never reached their receiver."""
        await follow_topic(self, self.bootstrap, self.settings.topic("deadletter"), self.settings.partitions,
                           self.model.on_deadletter_record, asyncio.Event(), f"{self.settings.app_id}-board-dead")

    @mode.Service.task
    async def _incidents(self) -> None:
        """The incidents topic, once it exists."""
        await self._follow_when_there("incidents", self.model.on_incident_record, "incidents")

    @mode.Service.task
    async def _receiver_health(self) -> None:
        """Delivery's receiver-health topic, once it exists: which receivers fail now (retrying or given up)."""
        await self._follow_when_there("receiver-health", self.model.on_receiver_health_record, "health")

    async def _follow_when_there(self, logical: str, handler, suffix: str) -> None:
        """Follow ``logical`` once it exists (checked every 30 s until then: a deployment older than the topic).

        Its partitions come from a metadata request for it (the admin client's): a consumer's
        ``partitions_for_topic`` knows only the topics it reads, so it said None here for ever, and the board
        never followed the incidents topic (found when receiver-health came, 2026-11-29)."""
        from aiokafka.admin import AIOKafkaAdminClient

        topic = self.settings.topic(logical)
        while not self.should_stop:
            admin = AIOKafkaAdminClient(**client_config(self.bootstrap, "aiokafka"),
                                        client_id=f"{self.settings.app_id}-board-meta")
            await admin.start()
            try:
                got = await admin.describe_topics([topic])
            finally:
                await admin.close()
            parts = [len(d.get("partitions") or ()) for d in got if d.get("topic") == topic and not d.get("error_code")]
            if parts and parts[0]:
                await follow_topic(self, self.bootstrap, topic, parts[0], handler, asyncio.Event(),
                                   f"{self.settings.app_id}-board-{suffix}")
                return
            await self.sleep(30.0)

    @mode.Service.task
    async def _follow_routing(self) -> None:
        if self.routing is not None:
            await self.routing.follow(self.take_routing)

    def take_routing(self, cfg) -> None:
        """A new version of the routing file: the receivers column and the inhibitions follow it."""
        from alerts.routing import Router

        self.model.router = Router(cfg)
        self.model.forget_unrouted()
        if self.model.inhibitor is not None:
            self.model.inhibitor.set_rules(rules_from(cfg))
            self.model.sources_changed = True
        self.model.version += 1  # pushed to the pages

    @mode.Service.task
    async def _push(self) -> None:
        sent_version, sent_at, silences_seen, sent_caught_up = None, 0.0, None, False
        while not self.should_stop:
            now = time.time()
            self.model.expire(now)
            caught_up = self.caught_up.is_set() and self.book.caught_up.is_set()
            sil = self.book.silences
            stamp = tuple((s.id, s.updatedAt, s.startsAt <= now < s.endsAt) for s in sil.by_id.values())
            if stamp != silences_seen or self.model.sources_changed:  # silences added, expired, started or
                silences_seen = stamp                                    # ended; inhibiting alerts fired or resolved
                self.model.refresh_mutes(now)
                self.model.version += 1
            if self.model.version != sent_version or caught_up != sent_caught_up or now - sent_at >= self.HEARTBEAT:
                self.publish(now)
                sent_version, sent_at, sent_caught_up = self.model.version, now, caught_up
            await self.sleep(self.TICK)

    def summary(self, now: float | None = None) -> dict:
        """The model's summary, and whether the board has read the alerts and silences to their end.  Until it has,
        the level is "unknown": a (re)started board reading a backlog of 20,000 critical alerts said OK, and the
        page "No alert firing", for the seconds the backlog took."""
        t = time.perf_counter()
        s = self.model.summary(time.time() if now is None else now)
        self.summary_ms = (time.perf_counter() - t) * 1000
        s["caughtUp"] = self.caught_up.is_set() and self.book.caught_up.is_set()
        if not s["caughtUp"]:
            s["total"]["level"] = "unknown"
        s["read"] = self.model.read
        s["lastChange"] = format_time(self.model.last_change) if self.model.last_change else None
        return s

    def publish(self, now: float) -> None:
        self.latest_summary = self.summary(now)
        self.latest = orjson.dumps(self.latest_summary)
        for ev in self.clients:
            ev.set()


# ---------------------------------------------------------------- HTTP


def _json(data, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def _paging(query, limit: int, most: int) -> tuple[int, int] | None:
    """(offset, limit) of a paginated request (``limit`` when it names none, ``most`` at most); None: not integers.

    >>> _paging({"offset": "99999999999999999999", "limit": "0"}, 50, 500), _paging({}, 20, 100), _paging({"limit": "x"}, 1, 1)
    ((1000000000, 1), (0, 20), None)
    """
    try:
        offset = min(max(0, int(query.get("offset", "0"))), 10**9)  # echoed back: JSON's integers are 64-bit
        return offset, min(most, max(1, int(query.get("limit", str(limit)))))
    except ValueError:
        return None


CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def host_allowed(header: str | None, names: frozenset[str] = frozenset()) -> bool:
    """Whether a request's Host is the board's: an IP address, localhost (or a name under .localhost), or one of
    ``names`` (the listen host, ``--allow-host``).  A page of another site whose name was re-pointed at the board
    (DNS rebinding) sends that site's name, and would read the board as its own origin.  An IP address cannot be
    re-pointed; a request without Host is no browser's.

    >>> ok = frozenset({"board.example"})
    >>> [host_allowed(h, ok) for h in ("127.0.0.1:9094", "[::1]:80", "10.1.2.3", "localhost:9094", "Board.Example.",
    ...                                "board.example:443", None, "")]
    [True, True, True, True, True, True, True, True]
    >>> [host_allowed(h, ok) for h in ("evil.example:9094", "board.example.evil.example", "127.0.0.1.nip.io")]
    [False, False, False]
    """
    if not header:
        return True
    name = header.strip().lower()
    if name.startswith("["):
        name = name[1:name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.rstrip(".")
    if name == "localhost" or name.endswith(".localhost") or name in names:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def web_app(board: Board, token: str | list[str] | None, web_cfg=None, hosts=()) -> web.Application:
    """The board's HTTP app.  GETs are open (to the web config's ``basic_auth_users`` when it has some);
    anything else needs ``Authorization: Bearer <token>`` (which also stands for a user: one header).  Several
    tokens (a token file's lines): any of them, as the intakes do during a rotation.  A request whose Host is not
    the board's (``host_allowed``: an IP, localhost, or one of ``hosts``) is refused 421."""
    from alerts.api import app as silences_api
    from core.webconfig import NONE, bearer_matches

    tokens = [t.encode() for t in ([token] if isinstance(token, str) else token or ()) if t]
    web_cfg = web_cfg or NONE
    names = frozenset(h.strip().lower().rstrip(".") for h in hosts if h)

    @web.middleware
    async def own_host(request: web.Request, handler):
        if not host_allowed(request.headers.get("Host"), names):
            return _json({"error": "this board does not answer to that Host name: start it with --allow-host NAME"},
                         421)
        return await handler(request)

    @web.middleware
    async def guard(request: web.Request, handler):
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            if not tokens:
                return _json({"error": "the board is read-only: start it with --token-file to allow silences"}, 403)
            if not bearer_matches(request.headers.get("Authorization"), tokens):
                return _json({"error": "a valid bearer token is required to write"}, 401)
        resp = await handler(request)
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def summary(request: web.Request) -> web.Response:
        s = board.latest_summary or board.summary()
        return _json({**s, "writable": bool(tokens), "routing": board.settings.routing is not None})

    async def alerts(request: web.Request) -> web.Response:
        q = request.query
        view = q.get("view", "grid")
        if (paging := _paging(q, 50, 500)) is None:
            return _json({"error": "offset and limit are integers"}, 400)
        offset, limit = paging
        if "cell" in q:  # the page's way: a cell's id from the summary (a name can be too long for a URL)
            key = board.model.cell(q["cell"])
            if key is None:  # no longer firing (or never was): nothing to show
                return _json({"total": 0, "offset": 0, "limit": limit, "alerts": [], "incidents": []})
            return _json(board.model.page(key[0], key[1], key[2], offset, limit))
        if view not in ("grid", "team") or "row" not in q:
            return _json({"error": "cell, or view=grid|team and row, are required"}, 400)
        return _json(board.model.page(view, q["row"], q.get("col") or None, offset, limit))

    async def clusters(request: web.Request) -> web.Response:
        """The clusters whose name contains ``q``, worst first, a page at a time (the page's "find a cluster" and
        its "+N more" row: the push carries the worst GRID_ROWS only)."""
        q = request.query
        if (paging := _paging(q, 20, board.model.FIND_ROWS)) is None:
            return _json({"error": "offset and limit are integers"}, 400)
        return _json(board.model.find_clusters(q.get("q", ""), *paging))

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        ev = asyncio.Event()
        ev.set()
        board.clients.add(ev)
        try:
            await resp.write(b"retry: 2000\n\n")
            while True:
                await ev.wait()
                ev.clear()
                if not board.latest:
                    board.publish(time.time())
                await resp.write(b"event: summary\ndata: " + board.latest + b"\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            board.clients.discard(ev)
        return resp

    def bearer(request: web.Request) -> bool:
        return bearer_matches(request.headers.get("Authorization"), tokens)

    a = web.Application(middlewares=[own_host, web_cfg.middleware(also=bearer), guard])
    a.router.add_get("/", index)
    a.router.add_static("/static/", STATIC, show_index=False)
    a.router.add_get("/api/summary", summary)
    a.router.add_get("/api/alerts", alerts)
    a.router.add_get("/api/clusters", clusters)
    a.router.add_get("/api/events", events)
    a.add_subapp("/alertmanager", silences_api(board.book, silences_only=True))  # the board holds no Alertmanager
    # alerts (no routing, no groups): its /api/v2/alerts would say nothing fires
    return a


async def start_board(settings: Settings, bootstrap: str, host: str = "127.0.0.1", port: int = 0,
                      token: str | list[str] | None = None, web_cfg=None,
                      allow_hosts=()) -> tuple[Board, web.AppRunner, str]:
    """Start the board service and its HTTP server (TLS and users from ``web_cfg``, a
    ``core.webconfig.WebConfig``; Host names it answers to besides IPs and localhost: ``host`` and
    ``allow_hosts``); returns (board, runner, url)."""
    from core.webconfig import NONE

    web_cfg = web_cfg or NONE
    board = Board(settings, bootstrap)
    await board.start()
    runner = web.AppRunner(web_app(board, token, web_cfg, (host, *allow_hosts)), access_log=None,
                           shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=web_cfg.ssl_context())
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return board, runner, f"{web_cfg.scheme}://{shown}:{port}/"


class BoardThread(threading.Thread):
    """The board on its own event loop in a thread: for the demo, the tests and the bench."""

    def __init__(self, settings: Settings, bootstrap: str, host: str = "127.0.0.1", port: int = 0,
                 token: str | list[str] | None = None):
        super().__init__(daemon=True, name="kubesight-board")
        self.args = (settings, bootstrap, host, port, token)
        self.ready = threading.Event()
        self.url: str | None = None
        self.board: Board | None = None
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._halt: asyncio.Event | None = None

    def run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to whoever waits on ready
            self.error = exc
            self.ready.set()
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._halt = asyncio.Event()
        board, runner, self.url = await start_board(*self.args)
        self.board = board
        self.ready.set()
        try:
            await self._halt.wait()
        finally:
            await runner.cleanup()
            await board.stop()

    def start_and_wait(self, timeout: float = 30.0) -> str:
        self.start()
        if not self.ready.wait(timeout) or self.error is not None:
            raise RuntimeError(f"the board did not start: {self.error!r}")
        return self.url

    def wait_caught_up(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            b = self.board
            if b is not None and b.caught_up.is_set() and b.book.caught_up.is_set():
                return True
            time.sleep(0.05)
        return False

    def call(self, fn, timeout: float = 10.0):
        """Run ``fn()`` on the board's loop and return its result (reading state safely from another thread)."""
        async def go():
            return fn()

        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop is not None and self._halt is not None and self.is_alive():
            self.loop.call_soon_threadsafe(self._halt.set)
        self.join(15)
