"""Who owns an object: its workload through ownerReferences, and the team from labels/annotations.

``Owners.resolve`` walks Pod -> ReplicaSet -> Deployment and Job -> CronJob (StatefulSet and
DaemonSet are workloads themselves) by fetching owners through ``fetch(kind, namespace, name)``
(``None`` when absent), remembered in a bounded LRU cache with a time-to-live (``ttl``; an absent object or a
failed read only ``retry`` seconds: a transient API error or an owner created just after its pod must not
strip the workload from the next events for minutes).  The team is the
first configured key found in the workload's labels, then its annotations, then the
namespace's labels and annotations.

>>> objs = {("ReplicaSet", "shop", "cart-7d9f"): {"metadata": {"ownerReferences": [
...             {"kind": "Deployment", "name": "cart", "controller": True}]}},
...         ("Deployment", "shop", "cart"): {"metadata": {"labels": {"team": "payments"}}},
...         ("Namespace", "", "shop"): {"metadata": {"labels": {"team": "web"}}}}
>>> o = Owners(lambda kind, ns, name: objs.get((kind, ns, name)), clock=lambda: 0.0)
>>> o.resolve("shop", "ReplicaSet", "cart-7d9f")
('Deployment/cart', 'payments')
>>> o.resolve("shop", "Pod", "cart-7d9f-x", owner=("ReplicaSet", "cart-7d9f"))
('Deployment/cart', 'payments')
>>> o.resolve("shop", "Service", "cart")
('', 'web')
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

log = logging.getLogger("kubesight.collect.kubernetes")

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob")
DEFAULT_KEYS = ("team", "owner", "app.kubernetes.io/part-of")


class Owners:
    def __init__(self, fetch, keys=DEFAULT_KEYS, max_entries: int = 10_000, ttl: float = 300.0, clock=time.monotonic,
                 retry: float = 10.0):
        self.fetch = fetch
        self.keys = tuple(keys)
        self.max_entries = max_entries
        self.ttl = ttl
        self.retry = min(retry, ttl)
        self.clock = clock
        self._cache: OrderedDict = OrderedDict()
        self.fetches = 0

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, kind: str, ns: str, name: str) -> dict | None:
        """The object's metadata (labels, annotations, ownerReferences), cached; None if unknown."""
        key = (kind, ns, name)
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(key)
            return hit[1]
        self.fetches += 1
        try:
            obj = self.fetch(kind, ns, name)
        except Exception as exc:  # an unreachable or forbidden owner must not stop the events
            log.warning("reading %s %s/%s to resolve its owner failed (%s: %s); the events go out without it, "
                        "it is read again in %.0fs", kind, ns, name, type(exc).__name__, str(exc)[:200], self.retry)
            obj = None
        meta = (obj or {}).get("metadata") if isinstance(obj, dict) else None
        meta = {k: meta.get(k) or ({} if k != "ownerReferences" else []) for k in
                ("labels", "annotations", "ownerReferences")} if isinstance(meta, dict) else None
        self._cache[key] = (now + (self.ttl if meta is not None else self.retry), meta)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return meta

    @staticmethod
    def _controller(meta: dict | None) -> tuple[str, str] | None:
        refs = (meta or {}).get("ownerReferences") or []
        for ref in refs:
            if isinstance(ref, dict) and ref.get("controller"):
                return str(ref.get("kind") or ""), str(ref.get("name") or "")
        if refs and isinstance(refs[0], dict):
            return str(refs[0].get("kind") or ""), str(refs[0].get("name") or "")
        return None

    def workload(self, ns: str, kind: str, name: str, owner: tuple[str, str] | None = None,
                 template_hash: str = "") -> tuple[str, str] | None:
        """(kind, name) of the workload behind an object, or None (a bare Pod, a Node, a Service)."""
        if kind in WORKLOADS:
            return kind, name
        if kind in ("ReplicaSet", "Job"):
            meta = self.get(kind, ns, name)
            up = self._controller(meta)
            if up and up[0] in WORKLOADS:
                return up
            if meta is None and kind == "ReplicaSet" and template_hash and name.endswith("-" + template_hash):
                return "Deployment", name[: -len(template_hash) - 1]  # RS unreadable: its name says it
            # a ReplicaSet read fine without a workload above it (orphaned by `--cascade=orphan`, or made by hand)
            # is the workload itself: its name looks like a Deployment's all the same
            return kind, name
        if kind == "Pod" and owner and owner[0] and owner[0] != "Node":
            return self.workload(ns, owner[0], owner[1], template_hash=template_hash)
        return None

    def team(self, ns: str, workload: tuple[str, str] | None) -> str:
        sources = []
        if workload:
            sources.append(self.get(workload[0], ns, workload[1]))
        if ns:
            sources.append(self.get("Namespace", "", ns))
        for meta in sources:
            if not meta:
                continue
            for where in ("labels", "annotations"):
                for k in self.keys:
                    v = (meta.get(where) or {}).get(k)
                    if v:
                        return str(v)
        return ""

    def resolve_named(self, ns: str, kind: str, name: str) -> tuple[str, str]:
        """``resolve`` for an object known by name only (an audit event): a Pod's controller is read from the Pod.

        >>> objs = {("Pod", "shop", "cart-x"): {"metadata": {"ownerReferences": [{"kind": "StatefulSet", "name": "cart"}]}},
        ...         ("Namespace", "", "shop"): {"metadata": {"annotations": {"team": "web"}}}}
        >>> Owners(lambda kind, ns, name: objs.get((kind, ns, name)), clock=lambda: 0.0).resolve_named("shop", "Pod", "cart-x")
        ('StatefulSet/cart', 'web')
        """
        return self.resolve(ns, kind, name, self._controller(self.get(kind, ns, name)) if kind == "Pod" else None)

    def resolve(self, ns: str, kind: str, name: str, owner: tuple[str, str] | None = None,
                template_hash: str = "") -> tuple[str, str]:
        """``("Deployment/cart", "payments")``: the workload (``""`` if none) and the owning team.

        A Namespace (cluster-scoped, ``ns`` empty) is owned by the team of its own labels and annotations.

        >>> objs = {("Namespace", "", "shop"): {"metadata": {"labels": {"team": "web"}}}}
        >>> Owners(lambda kind, ns, name: objs.get((kind, ns, name)), clock=lambda: 0.0).resolve("", "Namespace", "shop")
        ('', 'web')
        """
        if kind == "Namespace":
            return "", self.team(name, None)
        wl = self.workload(ns, kind, name, owner, template_hash)
        return (f"{wl[0]}/{wl[1]}" if wl else ""), self.team(ns, wl)
