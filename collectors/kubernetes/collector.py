"""The collector loop: watch items in, Event records and checkpoints out, one Kafka transaction per batch.

One thread per stream lists and watches (``watch.Watcher``); this loop alone owns the state
(occurrences emitted per Event uid, summaries per Node and Pod, resourceVersion per stream).
Each batch of items becomes one transaction holding the records, the dead letters and the
checkpoint keys that changed, so what is in Kafka and where the collector resumes never
disagree: a crash before the commit aborts both, a crash after it loses nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import orjson

from collectors.kubernetes import checkpoint, events, state
from collectors.kubernetes.api import STREAMS, OwnerKind
from collectors.kubernetes.owners import DEFAULT_KEYS, Owners
from collectors.kubernetes.watch import Watcher
from core.records import Entity, RecordError, owner_key, owner_record

log = logging.getLogger("kubesight.collect.kubernetes")
EVENT_STREAMS = ("events", "events.k8s.io")
ORIGIN = "collector/kubernetes"
NS_SWEEP = 3600.0  # s between looks for deleted namespaces whose owners records remain (Collector._sweep_namespaces)
OWNER_REFRESH = 3600.0  # s after which a live pod's team is resolved again, though nothing of it changed
REFRESH_READS = 20  # API reads a step's refresh makes at most (cache misses): the watch items wait for them
UNSURE_RETRY = 30.0  # s before a pod whose team rested on a failed API read is resolved again
DOWN_AFTER = 3  # list/watch failures in a row (and backoff_max seconds of them) before a stream counts as down


@dataclass
class Options:
    cluster: str = "default"
    streams: tuple[str, ...] = ("events", "events.k8s.io", "nodes", "pods", "namespaces")
    owner_keys: tuple[str, ...] = DEFAULT_KEYS
    owner_kinds: tuple[OwnerKind, ...] = ()  # custom kinds read for their team (--owner-kind): none unless granted
    cache_size: int = 10_000
    cache_ttl: float = 300.0
    commit_interval: float = 0.5
    max_batch: int = 5_000
    page: int = 500
    watch_timeout: int = 300
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    queue_size: int = 20_000
    heartbeat: float = 30.0  # seconds without a write before an idle collector re-writes its resourceVersions
    deleted_pod_grace: float = 600.0  # seconds a deleted Pod's owner, node and team still name the Events about it


@dataclass
class Stats:
    records: int = 0
    dead: int = 0
    items: int = 0
    transactions: int = 0
    owners: int = 0  # records written to the owners topic (tombstones included)
    committed_rv: dict = field(default_factory=dict)


class SelfMetrics:
    """The collector's own metrics, read from its ``Stats`` and watchers when scraped, in a registry of its own
    (``serve_for`` serves it on ``/metrics``): nothing is counted twice, and the loop pays nothing for them."""

    def __init__(self, collector: Collector, registry=None):
        from prometheus_client import CollectorRegistry

        self.c = collector
        self.registry = registry or CollectorRegistry()
        self.registry.register(self)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.c.stats
        for name, doc, value in (
                ("records", "Event records produced (to the transaction under way, then committed)", s.records),
                ("owner_records", "records written to the owners topic, tombstones included", s.owners),
                ("deadletters", "objects and watch lines sent to the dead-letter topic", s.dead),
                ("watch_items", "list/watch items applied (lists, changes, bookmarks, bad lines)", s.items),
                ("transactions", "Kafka transactions committed", s.transactions)):
            yield CounterMetricFamily(f"kubesight_kubernetes_{name}", doc, value=value)
        fails = CounterMetricFamily("kubesight_kubernetes_watch_failures", "list/watch requests failed (a dropped "
                                    "connection, a timeout, a 5xx; a 410 is not one), by stream", labels=["stream"])
        lists = CounterMetricFamily("kubesight_kubernetes_lists", "full lists (the first, then after a 410 or from a "
                                    "checkpoint ahead of the cluster), by stream", labels=["stream"])
        last = GaugeMetricFamily("kubesight_kubernetes_watch_last_success_timestamp_seconds",
                                 "when the API server last answered a stream's list or watch (a change or a bookmark "
                                 "too); 0: not yet", labels=["stream"])
        for w in list(self.c.watchers):
            fails.add_metric([w.stream.name], w.reconnects)
            lists.add_metric([w.stream.name], w.relists)
            last.add_metric([w.stream.name], w.last_ok)
        yield from (fails, lists, last)


def _rvnum(rv) -> int | None:
    try:
        return int(rv)
    except (TypeError, ValueError):
        return None


def event_entity(v: events.EventView, cluster: str) -> Entity:
    """What an Event is about, before its owners: namespace, kind, name, uid and node (``collect replay`` reads
    recorded Events with it too, so both name the same objects the same way).

    >>> e = event_entity(events.view({"metadata": {"namespace": "default", "uid": "e1"}, "reason": "NodeNotReady",
    ...     "involvedObject": {"kind": "Node", "name": "w1"}, "lastTimestamp": "2026-11-29T10:00:00Z"}), "c1")
    >>> e.namespace, e.node
    ('', 'w1')
    """
    reg = v.regarding
    kind, name = str(reg.get("kind") or ""), str(reg.get("name") or "")
    # an object without a namespace is cluster-scoped (a Node, a PersistentVolume, a Namespace, a ClusterRole):
    # recorders store its Events in "default", which is not where it lives nor whose team owns it
    ns = str(reg.get("namespace") or ("" if kind or name else v.namespace))
    return Entity(cluster=cluster, namespace=ns, kind=kind, name=name, uid=str(reg.get("uid") or ""),
                  node=name if kind == "Node" else v.host)


class Collector:
    def __init__(self, api, sink, options: Options, restored: dict | None = None, clock=time.time):
        self.api = api
        self.sink = sink
        self.o = options
        self.clock = clock
        restored = {**checkpoint.empty(), **(restored or {})}
        self.rv: dict[str, str] = dict(restored["rv"])
        # uid -> [highest occurrence emitted, rv of that update, rv of its deletion or "", series offset]
        self.events: dict[str, list] = dict(restored["event"])
        self.nodes: dict[str, dict] = dict(restored["node"])
        self.pods: dict[str, dict] = dict(restored["pod"])
        self.baseline = {s: s not in self.rv for s in options.streams}  # streams not listed or resumed yet
        # The two Event views show the same objects, so they share one baseline (see _event_baseline): None until
        # the first Event list is applied on a first start, then that list's resourceVersion; "" when resumed
        # from a checkpoint (no Event list is a baseline then).
        self.events_since: str | None = "" if any(s in self.rv for s in EVENT_STREAMS) else None
        # Pods deleted in the last deleted_pod_grace seconds, by uid and by (namespace, name): [until, summary].
        # Events about a pod often come after its deletion (kubelet's Killing after a forced delete; the pod and
        # Event watches are not ordered) and the pod can no longer be read. Not checkpointed: a restart within
        # the grace names such Events as before the fix (by reading the pod), nothing is lost or doubled.
        self.deleted_pods: OrderedDict = OrderedDict()
        self.owners = Owners(api.read, options.owner_keys, options.cache_size, options.cache_ttl,
                             kinds=options.owner_kinds)
        # what the ``owners`` topic was told (streams.owners: the team of alerts from scraped series), checkpointed
        # with it so a restart writes only changes: pod uid -> [namespace, name, team, workload, controller], and
        # namespace -> team. A start from an earlier version's checkpoint (none of these) writes every pod once.
        self.published: dict[str, list] = dict(restored["owner"])
        self.published_ns: dict[str, str] = dict(restored["owner-ns"])
        # "namespace/Kind/name" -> team, for each workload whose own labels or annotations name one: its alerts while
        # it has no pod (streams.owners); the others' team is their namespace's, which that record says
        self.published_wl: dict[str, str] = dict(restored["owner-wl"])
        # (namespace, name) -> the uid whose record the pod's key holds: a StatefulSet's pod re-created under its name
        # while nobody watched is listed before the old uid is found gone, and that one's tombstone must not erase it
        self.pod_names: dict[tuple[str, str], str] = {(e[0], e[1]): uid for uid, e in self.published.items()}
        # pod uid -> when its owners were last resolved (monotonic), oldest first: a pod that never changes is resolved
        # again every OWNER_REFRESH (_refresh_owners), so a team relabelled on its workload or namespace reaches the
        # owners topic within about that (plus the owners cache's ttl). Not checkpointed: a restart starts the clock.
        now = time.monotonic()
        self.resolved: OrderedDict = OrderedDict((uid, now) for uid in self.published)
        # pod uid -> when to resolve it again: its team rested on a failed read (Owners.uncertain), nothing was written
        self.unsure: dict[str, float] = {}
        self._ns_swept = time.monotonic()
        self.queue: queue.Queue = queue.Queue(options.queue_size)
        self.stop = threading.Event()
        self.watchers: list[Watcher] = []
        self.dirty: set[tuple[str, str]] = set()
        self.stats = Stats(committed_rv=dict(self.rv))
        self._last_write = time.monotonic()

    # ------------------------------------------------------------ running

    def start(self) -> None:
        for name in self.o.streams:
            w = Watcher(self.api, STREAMS[name], self.queue, self.rv.get(name), self.stop, page=self.o.page,
                        timeout_seconds=self.o.watch_timeout, backoff_base=self.o.backoff_base,
                        backoff_max=self.o.backoff_max)
            w.start()
            self.watchers.append(w)

    def watch_check(self) -> tuple[bool, str]:
        """Readiness: not while every stream's list/watch has failed ``DOWN_AFTER`` times in a row for ``backoff_max``
        seconds or more (the API server gone, the ServiceAccount's token revoked): the collector then sends nothing,
        and only its log said so. A blip shorter than that (an API server restarting) keeps it ready."""
        ws = list(self.watchers)
        down = {w.stream.name: (w.down_for(DOWN_AFTER), w.last_error) for w in ws}
        down = {k: v for k, v in down.items() if v[0] >= self.o.backoff_max}
        if not down:
            return True, f"{len(ws)} streams listed and watched"
        detail = "; ".join(f"{k} failing for {t:.0f}s ({err})" for k, (t, err) in down.items())
        if len(down) < len(ws):
            return True, f"{len(ws) - len(down)} of {len(ws)} streams watched; {detail}"
        return False, f"every stream's list/watch failing: {detail}"

    def run(self, stop: threading.Event | None = None) -> None:
        """Until ``stop`` is set: batches of watch items -> one transaction each. Kafka errors raise."""
        stop = stop or self.stop
        if not self.watchers:
            self.start()
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.stop.set()

    def step(self) -> int:
        """One batch: wait up to commit_interval for items, apply them, commit. Returns items applied."""
        batch = []
        deadline = time.monotonic() + self.o.commit_interval
        while len(batch) < self.o.max_batch:
            left = deadline - time.monotonic()
            try:
                batch.append(self.queue.get(timeout=max(left, 0.001)) if left > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
        if time.monotonic() - self._last_write >= self.o.heartbeat:
            # an idle collector still writes now and then: if a newer one has taken over this
            # transactional id, this is where it learns it is fenced, and exits
            self.dirty.update(("rv", s) for s in self.rv)
        now = time.monotonic()
        refresh = (bool(self.resolved) and now - next(iter(self.resolved.values())) >= OWNER_REFRESH) or \
            (bool(self.unsure) and min(self.unsure.values()) <= now)
        if not batch and not self.dirty and not refresh:
            return 0
        before = self.stats.records + self.stats.dead
        self.sink.begin()
        try:
            for item in batch:
                self.apply(item)
            self._prune()
            if refresh:
                self._refresh_owners()
            if time.monotonic() - self._ns_swept >= NS_SWEEP:
                self._sweep_namespaces()
                self._sweep_workloads()
            written = self._write_checkpoint() + self.stats.records + self.stats.dead - before
            self.sink.commit()
        except BaseException:
            log.error("transaction failed; the collector must restart from its last checkpoint")
            raise
        if written:
            self._last_write = time.monotonic()
        self.stats.transactions += 1
        self.stats.items += len(batch)
        self.stats.committed_rv = dict(self.rv)
        return len(batch)

    # ------------------------------------------------------------ items

    def apply(self, item) -> None:
        what, stream = item[0], item[1]
        if what == "bookmark":
            self._set_rv(stream, item[2])
        elif what == "bad":
            _, _, reason, raw, rv = item
            self._reject(reason, raw, stream, rv)
        elif what == "sync":
            before = self.stats.records
            self._sync(stream, item[2], item[3])
            log.info("%s: listed %d objects at resourceVersion %s -> %d records", stream, len(item[2]), item[3],
                     self.stats.records - before)
            self._set_rv(stream, item[3])
            self.baseline[stream] = False
        else:
            _, _, typ, obj, rv = item
            self._object(stream, typ, obj, rv, baseline=False)
            self._set_rv(stream, rv)

    def _event_baseline(self, rv: str) -> bool:
        """Is a list of an Event view at ``rv`` the baseline (first sights are history: one record each)?

        Only on a first start, and one baseline for both views: the first Event list applied is it, and the
        other view's first list is part of it only if it is not newer (its objects are then history as of
        the baseline too); a newer one is not, or an Event created between the two lists would be history
        for the lagging view and lose its first occurrences. A view resumed from a checkpoint, or a re-list
        after 410, is never a baseline.
        """
        if self.events_since is None:
            self.events_since = rv or ""
            return True
        since, n = _rvnum(self.events_since), _rvnum(rv)
        return since is not None and n is not None and n <= since

    def _set_rv(self, stream: str, rv: str) -> None:
        if rv and self.rv.get(stream) != rv:
            self.rv[stream] = rv
            self.dirty.add(("rv", stream))

    def _reject(self, reason: str, payload, stream: str, rv) -> None:
        if not isinstance(payload, bytes | str):
            payload = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS, default=str)
        self.sink.reject(reason, payload, origin=ORIGIN, stream=stream, resourceVersion=rv, cluster=self.o.cluster)
        self.stats.dead += 1

    def _emit(self, recs) -> None:
        for r in recs:
            self.sink.send(r)
        self.stats.records += len(recs)

    def _object(self, stream: str, typ: str, obj, rv: str, baseline: bool) -> str | None:
        """Apply one object; returns its uid (None if it was rejected)."""
        try:
            if stream in EVENT_STREAMS:
                return self._event(typ, obj, rv, baseline)
            if stream == "nodes":
                return self._node(typ, obj, baseline)
            if stream == "namespaces":
                return self._namespace(typ, obj)
            return self._pod(typ, obj, baseline)
        except (RecordError, KeyError, TypeError, ValueError, AttributeError) as exc:
            self._reject(f"malformed {STREAMS[stream].kind} ({type(exc).__name__}): {exc}", obj, stream, rv)
            return None

    def _sync(self, stream: str, items: list, rv: str) -> None:
        """A full list: apply every object, then forget those deleted while we were not watching."""
        baseline = self._event_baseline(rv) if stream in EVENT_STREAMS else self.baseline.get(stream, False)
        listed = set()
        for obj in items:
            uid = self._object(stream, "LISTED", obj, rv, baseline)
            if uid:
                listed.add(uid)
        if stream in EVENT_STREAMS:
            n = _rvnum(rv)
            for uid, entry in self.events.items():
                if uid not in listed and not entry[2]:
                    upd = _rvnum(entry[1])
                    if n is None or upd is None or upd <= n:
                        entry[2] = rv
                        self.dirty.add(("event", uid))
        elif stream == "namespaces":
            for ns in [n for n in self.published_ns if n not in listed]:
                self._namespace_gone(ns)
        else:
            table, part = (self.nodes, "node") if stream == "nodes" else (self.pods, "pod")
            for uid in [u for u in table if u not in listed]:
                if part == "node":
                    self._node_gone(uid)
                else:
                    self._pod_gone(uid, None)

    # ------------------------------------------------------------ namespaces

    def _namespace(self, typ: str, obj) -> str:
        """A Namespace listed or changed: its team, as the owners cache knows it, is what was just read; a namespace
        the owners topic has a record of gets it rewritten at once when its team changed (a relabel, where the
        hourly refresh took up to an hour), and its pods are resolved again at the next step, so those whose team
        is the namespace's follow (``_refresh_owners``). A namespace with no record yet gets one with its first
        pod or Event, as before. Returns its name (what a full list compares)."""
        meta = obj["metadata"]
        name = meta["name"]
        if not isinstance(name, str) or not name:
            raise ValueError(f"metadata.name is {name!r}")
        if typ == "DELETED":
            self.owners.remember("Namespace", "", name, None)
            self._namespace_gone(name)
            return name
        self.owners.remember("Namespace", "", name, obj)
        if name not in self.published_ns or self.published_ns[name] == self.owners.team(name, None):
            return name
        self._publish_namespace(name)
        due = time.monotonic() - OWNER_REFRESH
        for uid in [u for u, e in self.published.items() if e[0] == name]:
            self.resolved[uid] = due
            self.resolved.move_to_end(uid, last=False)
        return name

    def _namespace_gone(self, ns: str) -> None:
        """A Namespace deleted (a watch's DELETED, or missing from a full list): its record is tombstoned unless a pod
        of it is still live here (its deletion not seen yet: the hourly sweep tombstones it then)."""
        if ns in self.published_ns and not any(e[0] == ns for e in self.published.values()):
            del self.published_ns[ns]
            self.dirty.add(("owner-ns", ns))
            self.sink.send_raw("owners", owner_key(self.o.cluster, ns), None)
            self.stats.owners += 1

    # ------------------------------------------------------------ events

    def _event(self, typ: str, obj, rv: str, baseline: bool) -> str:
        v = events.view(obj)
        entry = self.events.get(v.uid)
        offset = events.series_offset(v, entry[3] if entry and len(entry) > 3 else 0)
        if offset:
            v = dataclasses.replace(v, count=v.count + offset)
        if typ == "DELETED":
            if entry and not entry[2]:
                entry[2] = rv
                self.dirty.add(("event", v.uid))
            return v.uid
        seen = entry[0] if entry else None
        if seen is not None and v.count <= seen:
            return v.uid
        # A watch's ADDED is the object as created (we never watch from "0", which would replay current objects as
        # ADDED): created with count N > 1, it is an Event client-go re-created after it expired, and carries one new
        # occurrence; 1..N-1 were the expired object's (another uid, emitted under its ids). One record, #N, as for
        # the baseline. Its id is uid+N whoever delivers it (either view, a replay after a restart resumed from the
        # checkpoint), and the count checkpointed with it stops any second one. Only a re-list after a gap, which
        # cannot tell a re-created Event from one created and repeated meanwhile, emits 1..N.
        history = baseline or typ == "ADDED"
        ent = self._event_entity(v)
        if ent.namespace:  # a Deployment's FailedCreate may be all there is of it (its pods refused by the quota)
            self._publish_namespace(ent.namespace)
            self._publish_workload(ent.namespace, ent.workload, ent.owner)
        self._emit(events.occurrences(v, seen, ent, baseline=history))
        self.events[v.uid] = [v.count, rv, entry[2] if entry else "", offset]
        self.dirty.add(("event", v.uid))
        return v.uid

    def _event_entity(self, v: events.EventView) -> Entity:
        ent = event_entity(v, self.o.cluster)
        ns, kind, name, uid, node = ent.namespace, ent.kind, ent.name, ent.uid, ent.node
        owner, thash = None, ""
        if kind == "Pod":
            pod = (self.pods.get(uid) or self._deleted_pod(uid)) if uid else None
            meta = None
            if pod is None:
                meta = self.owners.get("Pod", ns, name)
                if meta is None and not uid:  # an Event that does not say which pod of that name: a live one wins
                    pod = self._deleted_pod((ns, name))
            if pod is not None:
                owner, thash, node = tuple(pod["owner"]), pod["labels"].get("pod-template-hash", ""), pod["node"] or node
            elif meta:
                owner = Owners._controller(meta)
                thash = str(meta["labels"].get("pod-template-hash") or "")
            if not node and v.reason == "Scheduled":
                # the binding this very event reports, which the pod watch may not have delivered yet
                node = events.assigned_node(v.message, ns, name)
        elif kind == "ReplicaSet" and self.owners.get(kind, ns, name, uid) is None:
            # unreadable (RBAC without replicasets): named from the hash its pods carry, as they are
            thash = next((p["labels"].get("pod-template-hash", "") for p in self.pods.values()
                          if p["ns"] == ns and p["owner"][:2] == ["ReplicaSet", name]), "")
        workload, team = self.owners.resolve(ns, kind, name, owner, thash)
        return Entity(cluster=self.o.cluster, namespace=ns, kind=kind, name=name, uid=uid, node=node,
                      workload=workload, owner=team)

    def _prune(self) -> None:
        """Forget deleted Events once every watched view has passed their deletion."""
        views = [s for s in EVENT_STREAMS if s in self.o.streams]
        low = min((_rvnum(self.rv.get(s)) or 0 for s in views), default=0)
        for uid in [u for u, e in self.events.items() if e[2]]:
            d = _rvnum(self.events[uid][2])
            if d is None or d <= low:
                del self.events[uid]
                self.dirty.add(("event", uid))

    # ------------------------------------------------------------ nodes and pods

    def _node(self, typ: str, obj, baseline: bool) -> str:
        cur = state.node_summary(obj)
        uid = cur["uid"]
        if typ == "DELETED":
            self._node_gone(uid)
            return uid
        prev = self.nodes.get(uid)
        if prev != cur:
            ent = self._node_entity(cur)
            recs = state.node_changes(prev, cur, ent, self.clock())
            self._emit(recs)
            self.nodes[uid] = cur
            self.dirty.add(("node", uid))
        return uid

    def _node_entity(self, summary: dict) -> Entity:
        return Entity(cluster=self.o.cluster, kind="Node", name=summary["name"], uid=summary["uid"],
                      node=summary["name"])

    def _node_gone(self, uid: str) -> None:
        """A Node deleted (a watch's DELETED, or missing from a full list): forgotten, and ``NodeDeleted`` said."""
        prev = self.nodes.pop(uid, None)
        if prev is not None:
            self._emit([state.node_deleted(prev, self._node_entity(prev), self.clock())])
            self.dirty.add(("node", uid))

    def _pod(self, typ: str, obj, baseline: bool) -> str:
        cur = state.pod_summary(obj)
        uid = cur["uid"]
        if typ == "DELETED":
            self._pod_gone(uid, state.compact(cur))
            return uid
        prev = self.pods.get(uid)
        small = state.compact(cur)
        if prev != small:
            # owners are resolved only when a record is due, or (below) for a pod the owners topic was not told of or
            # whose controller changed: most pod updates change nothing we report
            recs = state.pod_changes(prev, cur, Entity(cluster=self.o.cluster), self.clock())
            if recs:
                ent = self.pod_entity(small)
                for r in recs:
                    r.entity = ent
                self._emit(recs)
            self.pods[uid] = small
            self.dirty.add(("pod", uid))
        else:
            recs = None
        if not recs and (uid not in self.published or (prev is not None and prev["owner"] != small["owner"])):
            self.pod_entity(small)  # new to the owners topic (an upgrade's first start too), or another controller
        return uid

    def _pod_gone(self, uid: str, last: dict | None) -> None:
        """A Pod deleted (a watch's DELETED with its ``last`` state, or missing from a full list): forgotten, but its
        summary kept ``deleted_pod_grace`` seconds for the Events about it (bounded like the owners cache)."""
        prev = self.pods.pop(uid, None)
        if prev is not None:
            self.dirty.add(("pod", uid))
        last = last or prev
        told = self.published.pop(uid, None)
        self.resolved.pop(uid, None)
        self.unsure.pop(uid, None)
        if told is not None:
            self.dirty.add(("owner", uid))
        if (told is not None or prev is not None) and last is not None:
            name = (last["ns"], last["name"])
            if self.pod_names.get(name, uid) == uid:  # else a pod re-created under its name holds the key now
                self.pod_names.pop(name, None)
                # its alerts from now on are its workload's other pods' team's, or the namespace's
                self.sink.send_raw("owners", owner_key(self.o.cluster, last["ns"], last["name"]), None)
                self.stats.owners += 1
        if last is None or self.o.deleted_pod_grace <= 0:
            return
        until = self.clock() + self.o.deleted_pod_grace
        for key in (uid, (last["ns"], last["name"])):
            self.deleted_pods[key] = [until, last]
            self.deleted_pods.move_to_end(key)
        while len(self.deleted_pods) > 2 * self.o.cache_size:
            self.deleted_pods.popitem(last=False)

    def _deleted_pod(self, key) -> dict | None:
        now = self.clock()
        while self.deleted_pods:  # oldest first: all kept for the same grace, so they expire in this order
            first = next(iter(self.deleted_pods.values()))
            if first[0] > now:
                break
            self.deleted_pods.popitem(last=False)
        hit = self.deleted_pods.get(key)
        return hit[1] if hit else None

    def pod_entity(self, s: dict) -> Entity:
        workload, team = self.owners.resolve(s["ns"], "Pod", s["name"], tuple(s["owner"]),
                                             s["labels"].get("pod-template-hash", ""))
        if self.owners.uncertain(s["ns"], workload):  # an API server brownout must not erase the teams the topic holds
            self.unsure[s["uid"]] = time.monotonic() + UNSURE_RETRY
        else:
            self.unsure.pop(s["uid"], None)
            self._publish_owner(s, workload, team)
        self.resolved[s["uid"]] = time.monotonic()
        self.resolved.move_to_end(s["uid"])
        return Entity(cluster=self.o.cluster, namespace=s["ns"], kind="Pod", name=s["name"], uid=s["uid"],
                      node=s["node"], workload=workload, owner=team)

    def _publish_owner(self, s: dict, workload: str, team: str) -> None:
        """The pod's team, workload and controller, and its namespace's team, to the ``owners`` topic when they changed
        (in this batch's transaction, with the checkpoint): alerts from series naming the pod, its workload or
        its namespace are owned by them (``streams.owners``)."""
        kind, name = (s["owner"] or ["", ""])[:2]
        controller = f"{kind}/{name}" if kind and name and kind != "Node" else ""
        entry = [s["ns"], s["name"], team, workload, controller]
        if self.published.get(s["uid"]) != entry or self.pod_names.get((s["ns"], s["name"])) != s["uid"]:
            self.published[s["uid"]] = entry
            self.pod_names[(s["ns"], s["name"])] = s["uid"]
            self.dirty.add(("owner", s["uid"]))
            self.sink.send_raw("owners", owner_key(self.o.cluster, s["ns"], s["name"]), owner_record(*entry[2:]))
            self.stats.owners += 1
        self._publish_namespace(s["ns"])
        self._publish_workload(s["ns"], workload, team)

    def _publish_namespace(self, ns: str) -> None:
        """The namespace's team to the ``owners`` topic when it changed."""
        ns_team = self.owners.team(ns, None)  # cached with the pod's or the Event's object: no read of its own
        if self.owners.failed("Namespace", "", ns):
            return  # unknown, not "no team": the record stays as it is
        if self.published_ns.get(ns) != ns_team:
            self.published_ns[ns] = ns_team
            self.dirty.add(("owner-ns", ns))
            self.sink.send_raw("owners", owner_key(self.o.cluster, ns), owner_record(ns_team))
            self.stats.owners += 1

    def _publish_workload(self, ns: str, workload: str, team: str) -> None:
        """A workload's team to the ``owners`` topic when it changed, for its alerts while no pod of it says it (scaled
        to zero, a CronJob between runs, a Deployment whose pods the quota refuses). Only a workload whose own labels
        or annotations name a team has a record; the others' team is their namespace's (its own record), and a
        workload that loses its key gets a tombstone."""
        kind, _, name = workload.partition("/")
        if not ns or not name or self.owners.uncertain(ns, workload):
            return
        own = team if team and self.owners.team(ns, (kind, name), namespace=False) else ""
        key = f"{ns}/{workload}"
        if self.published_wl.get(key, "") == own:
            return
        if own:
            self.published_wl[key] = own
        else:
            del self.published_wl[key]
        self.dirty.add(("owner-wl", key))
        self.sink.send_raw("owners", owner_key(self.o.cluster, ns, name, kind), owner_record(own, workload) if own else None)
        self.stats.owners += 1

    def _refresh_owners(self) -> None:
        """Pods whose owners were resolved OWNER_REFRESH ago or more, resolved again, oldest first: a pod that never
        changes kept the team of its start, so a team relabelled on its workload or namespace never reached the
        owners topic. A change is written as any other (the workload's and namespace's records too); at most
        REFRESH_READS API reads a step (pods of one ReplicaSet share them), the rest at the next steps."""
        now, start = time.monotonic(), self.owners.fetches
        for uid in [u for u, due in self.unsure.items() if due <= now]:  # a failed read's pods first
            if self.owners.fetches - start >= REFRESH_READS:
                return
            pod = self.pods.get(uid)
            if pod is None:
                del self.unsure[uid]
            else:
                self.pod_entity(pod)  # written now if the reads work again, else due again in UNSURE_RETRY
        while self.resolved and self.owners.fetches - start < REFRESH_READS:
            uid, at = next(iter(self.resolved.items()))
            if now - at < OWNER_REFRESH:
                break
            pod = self.pods.get(uid)
            if pod is None:  # not (or no longer) a live pod here: nothing to refresh
                del self.resolved[uid]
                continue
            self.pod_entity(pod)  # moves it to the end

    def _sweep_namespaces(self) -> None:
        """Namespace records whose namespace has no pod left here and is gone from the cluster: tombstoned (CI and
        preview namespaces come and go; their records would stay forever in the topic and every worker). Every
        ``NS_SWEEP`` seconds, one read per such namespace; one that is only empty (a CronJob's, between runs) or
        unreadable keeps its record."""
        self._ns_swept = time.monotonic()
        used = {e[0] for e in self.published.values()}
        for ns in [n for n in self.published_ns if n not in used]:
            try:
                gone = self.api.read("Namespace", "", ns) is None
            except Exception as exc:  # noqa: BLE001 - an unreachable API server: asked again at the next sweep
                log.debug("namespace %s not read for the owners sweep: %s", ns, exc)
                continue
            if gone:
                self._namespace_gone(ns)

    def _sweep_workloads(self) -> None:
        """Workload records with no live pod here, read again (``NS_SWEEP``, with the namespaces): a deleted workload's
        record is tombstoned, a relabelled one's rewritten (one whose pods live is rewritten as they are resolved).
        One read per such workload; an unreadable one keeps its record until the next sweep."""
        live = {(e[0], e[3]) for e in self.published.values()}
        for key in [k for k in self.published_wl if tuple(k.split("/", 1)) not in live]:
            ns, _, workload = key.partition("/")
            kind, _, name = workload.partition("/")
            custom = self.owners.kinds.get(kind)
            try:
                obj = self.api.read(kind, ns, name, custom) if custom else self.api.read(kind, ns, name)
            except Exception as exc:  # noqa: BLE001 - an unreachable API server: asked again at the next sweep
                log.debug("workload %s not read for the owners sweep: %s", key, exc)
                continue
            self.owners.remember(kind, ns, name, obj)  # what was just read, not a cached failure or an older version
            self._publish_workload(ns, workload, self.owners.team(ns, (kind, name)) if obj is not None else "")

    # ------------------------------------------------------------ checkpoint

    def _write_checkpoint(self) -> int:
        c = self.o.cluster
        n = len(self.dirty)
        for part, name in self.dirty:
            if part == "rv":
                value = self.rv.get(name)
            else:
                value = {"event": self.events, "node": self.nodes, "pod": self.pods, "owner": self.published,
                         "owner-ns": self.published_ns, "owner-wl": self.published_wl}[part].get(name)
            self.sink.send_raw("checkpoints", checkpoint.key(c, part, name),
                               None if value is None else orjson.dumps(value))
        self.dirty.clear()
        return n

