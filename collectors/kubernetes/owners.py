"""Who owns an object: its workload through ownerReferences, and the team from labels/annotations.

``Owners.resolve`` walks Pod -> ReplicaSet -> Deployment and Job -> CronJob (StatefulSet, DaemonSet and
ReplicationController are workloads themselves) by fetching owners through ``fetch(kind, namespace, name)``
(``None`` when absent), remembered in a bounded LRU cache with a time-to-live (``ttl``; an absent object or a
failed read only ``retry`` seconds: a transient API error or an owner created just after its pod must not
strip the workload from the next events for minutes).  A cached object is read again before its ttl when a
reference names another uid than the cached one: the workload was deleted and re-created under the same name,
maybe for another team.  A 403 is not transient (the role lacks that resource): the kind is not asked again
for ``ttl`` seconds.  A controller of a kind kubesight does not read (an Argo Rollout, a CRD's: reading them would
need a role on every custom resource) is the workload all the same, named from the reference, its team the
namespace's.  Unless its kind is listed in ``kinds`` (``--owner-kind``, with a role to get it): then it is read
like a Deployment, its labels and annotations give the team, and its own controller, when of a kind kubesight
reads, is the workload (one step up, as a ReplicaSet's Deployment is).  A listed kind refused (403) is said once
and falls back to the namespace's team, as an unlisted one.

The team is the first team key (every configured key but ``app.kubernetes.io/part-of``) found in the workload's
labels, then its annotations, then the namespace's labels and annotations; only when none has one, the
``part-of`` key in the same order: it names an application (Helm charts set it), not the team that runs it.

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
>>> o.resolve("shop", "Pod", "web-0", owner=("Rollout", "web"))
('Rollout/web', 'web')

With ``kinds`` naming it, the Rollout is read (``fetch`` gets the ``OwnerKind`` too, to know its resource):

>>> objs[("Rollout", "shop", "web")] = {"metadata": {"labels": {"team": "delivery"}}}
>>> rollouts = (OwnerKind("argoproj.io", "v1alpha1", "rollouts", "Rollout"),)
>>> o = Owners(lambda kind, ns, name, custom=None: objs.get((kind, ns, name)), clock=lambda: 0.0, kinds=rollouts)
>>> o.resolve("shop", "Pod", "web-0", owner=("Rollout", "web"))
('Rollout/web', 'delivery')
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict

import orjson

from collectors.kubernetes.api import READERS, OwnerKind

log = logging.getLogger("kubesight.collect.kubernetes")

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob", "ReplicationController")
DEFAULT_KEYS = ("team", "owner", "app.kubernetes.io/part-of")
# keys that name an application rather than a team: looked up only when no other key is found anywhere
APPLICATION_KEYS = ("app.kubernetes.io/part-of",)
# a Deployment's ReplicaSet is named <deployment>-<pod-template-hash>, the hash a uint32 written with this alphabet
# (k8s.io/apimachinery rand.SafeEncodeString); fewer than 5 characters is a hand-made name, not a hash
_HASH = re.compile(r"[bcdfghjklmnpqrstvwxz2456789]{5,10}")
LASTING = (403,)  # the role lacks the resource: it will not be there in 10 s either


def team_namespace(ns: str, kind: str, name: str) -> str:
    """The namespace whose team owns an object: its own, a Namespace's is itself ("" for other cluster-scoped ones).

    >>> team_namespace("", "Namespace", "shop"), team_namespace("", "Node", "w1"), team_namespace("shop", "Pod", "x")
    ('shop', '', 'shop')
    """
    return name if kind == "Namespace" else ns


def _why(exc: Exception) -> tuple[object, str]:
    """(HTTP status or the exception's type, the server's message on one line) of a failed read."""
    status = getattr(exc, "status", None)
    msg = ""
    body = getattr(exc, "body", None)
    if body:
        try:
            msg = str(orjson.loads(body).get("message") or "")
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            msg = ""
    msg = msg or str(getattr(exc, "reason", None) or exc)
    return (status if isinstance(status, int) else type(exc).__name__), " ".join(msg.split())[:500]


class Owners:
    def __init__(self, fetch, keys=DEFAULT_KEYS, max_entries: int = 10_000, ttl: float = 300.0, clock=time.monotonic,
                 retry: float = 10.0, kinds=()):
        self.fetch = fetch
        # kind -> how to read it: the custom kinds opted into; ``fetch(kind, ns, name, custom)`` reads them
        self.kinds: dict[str, OwnerKind] = {k.kind: k for k in kinds if k.kind not in READERS}
        self.keys = tuple(keys)
        self.max_entries = max_entries
        self.ttl = ttl
        self.retry = min(retry, ttl)
        self.clock = clock
        # (kind, ns, name) -> [expires, meta or None, a uid asked for that the object read then did not have,
        #                      whether the read failed (unknown, not absent: ``failed``)]
        self._cache: OrderedDict = OrderedDict()
        self._denied: dict[str, float] = {}  # kind -> until when it is not asked (a 403)
        self._said: dict[tuple, float] = {}  # (kind, status) -> until when its failures are not logged again
        self._unknown: set[str] = set()  # controller kinds already said to be unread
        self.fetches = 0

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, kind: str, ns: str, name: str, uid: str = "") -> dict | None:
        """The object's metadata (uid, labels, annotations, ownerReferences), cached; None if unknown.

        ``uid``: the one a reference names; a cached object with another uid is stale (deleted and re-created
        under that name) and read again, once per uid (a reference to an object that is really gone, from a pod
        about to be collected with it, does not make every event a read)."""
        key = (kind, ns, name)
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            meta = hit[1]
            if not (uid and meta and meta["uid"] and meta["uid"] != uid and hit[2] != uid):
                self._cache.move_to_end(key)
                return meta
        if self._denied.get(kind, 0.0) > now:
            return None  # said when it was refused; asking again per object would only fill the log
        self.fetches += 1
        failed = False
        try:
            obj = self.fetch(kind, ns, name, self.kinds[kind]) if kind in self.kinds else self.fetch(kind, ns, name)
        except Exception as exc:  # an unreachable or forbidden owner must not stop the events
            obj = None
            failed = self._failed(kind, ns, name, exc, now)
        return self._store(key, obj, uid, now, failed)

    def remember(self, kind: str, ns: str, name: str, obj: dict | None) -> None:
        """An object just read by the caller (None: it does not exist), cached as ``get`` would cache it."""
        self._store((kind, ns, name), obj, "", self.clock(), False)

    def failed(self, kind: str, ns: str, name: str) -> bool:
        """Whether the last read of the object failed (an API server down, a timeout): its team is unknown, not
        absent. A 403 is no failure here: the kind is not readable, the team is the namespace's by design."""
        hit = self._cache.get((kind, ns, name))
        return bool(hit is not None and hit[3])

    def uncertain(self, ns: str, workload: str = "") -> bool:
        """Whether a team resolved for ``workload`` (``Kind/name``) in ``ns`` rests on a failed read: the namespace's
        or the workload's. Nothing is written to the owners topic from such a team (a brownout of the API server
        must not erase the teams it holds), and it is resolved again soon."""
        kind, _, name = workload.partition("/")
        return self.failed("Namespace", "", ns) or bool(name and self.failed(kind, ns, name))

    def _store(self, key: tuple, obj, uid: str, now: float, failed: bool) -> dict | None:
        meta = (obj or {}).get("metadata") if isinstance(obj, dict) else None
        meta = dict({k: meta.get(k) or ({} if k != "ownerReferences" else []) for k in
                     ("labels", "annotations", "ownerReferences")}, uid=str(meta.get("uid") or "")) \
            if isinstance(meta, dict) else None
        stale = uid if uid and meta and meta["uid"] and meta["uid"] != uid else ""
        self._cache[key] = [now + (self.ttl if meta is not None else self.retry), meta, stale, failed]
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return meta

    def _failed(self, kind: str, ns: str, name: str, exc: Exception, now: float) -> bool:
        """One line per kind and status, with the server's reason; a lasting refusal stops reads of the kind.
        True: a transient failure (the object's team is unknown); False: a lasting refusal (it is not readable)."""
        status, why = _why(exc)
        lasting = status in LASTING
        if lasting:
            self._denied[kind] = now + self.ttl
        if self._said.get((kind, status), 0.0) > now:
            return not lasting
        self._said[(kind, status)] = now + self.ttl
        if lasting:
            log.warning("reading %s %s/%s to resolve owners was refused (%s: %s); %s objects are not read for %.0fs: "
                        "workloads are named from the references, teams from the namespaces", kind, ns, name, status,
                        why, kind, self.ttl)
        else:
            log.warning("reading %s %s/%s to resolve owners failed (%s: %s); the events go out without it, it is read "
                        "again in %.0fs (further %s failures of %s reads are not logged for %.0fs)", kind, ns, name,
                        status, why, self.retry, status, kind, self.ttl)
        return not lasting

    @staticmethod
    def _controller(meta: dict | None) -> tuple[str, str, str] | None:
        """(kind, name, uid) of the controller reference (else the first reference), None without one."""
        refs = [r for r in (meta or {}).get("ownerReferences") or [] if isinstance(r, dict)]
        ref = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
        if ref is None:
            return None
        return str(ref.get("kind") or ""), str(ref.get("name") or ""), str(ref.get("uid") or "")

    def _named(self, ns: str, ref: tuple[str, str, str], by: str) -> tuple[str, str, str]:
        """A controller of a kind not walked: it is the workload; said once per kind when it cannot be read."""
        if ref[0] in self.kinds:
            return self._custom(ns, ref)
        if ref[0] not in READERS and ref[0] not in self._unknown:
            self._unknown.add(ref[0])
            log.info("%s in %s is controlled by %s/%s, a kind kubesight does not read: it is named as the workload, "
                     "its team is the namespace's (said once per kind; --owner-kind GROUP/VERSION/PLURAL=%s reads "
                     "it, given a role to get it)", by, ns, ref[0], ref[1], ref[0])
        return ref

    def _custom(self, ns: str, ref: tuple[str, str, str]) -> tuple[str, str, str]:
        """An opted-in custom kind, read: the workload, or its controller if kubesight reads that one's kind (a
        StrimziPodSet's Kafka, both listed). One step only: a chain of operators' objects is not walked, it would
        cost a read per level on every cache miss; unreadable (refused, absent), it is the workload itself."""
        up = self._controller(self.get(ref[0], ns, ref[1], ref[2]))
        if up and up[1] and (up[0] in WORKLOADS or up[0] in self.kinds):
            return up
        return ref

    def _workload(self, ns: str, kind: str, name: str, owner: tuple | None, template_hash: str,
                  uid: str = "", of_pod: bool = False) -> tuple[str, str, str] | None:
        if kind in WORKLOADS:
            return kind, name, uid
        if kind in self.kinds:  # its own Events (a Rollout's RolloutUpdated): named as a Deployment's are
            return self._custom(ns, (kind, name, uid))
        if kind in ("ReplicaSet", "Job"):
            meta = self.get(kind, ns, name, uid)
            up = self._controller(meta)
            if up and up[0] in WORKLOADS:
                return up
            if up and up[0] and up[0] not in ("ReplicaSet", "Job", "Node"):
                return self._named(ns, up, f"{kind}/{name}")  # an Argo Rollout's ReplicaSets: a new one each revision
            if meta is None and kind == "ReplicaSet":
                # unreadable: its name says it. A pod of it carries the hash; the ReplicaSet's own Events do not
                # (a FailedCreate has no pod at all), so there a name ending in something shaped like one will do
                guess = template_hash or (name.rpartition("-")[2] if not of_pod else "")
                if guess and name.endswith("-" + guess) and (template_hash or _HASH.fullmatch(guess)):
                    return "Deployment", name[: -len(guess) - 1], ""
            # a ReplicaSet read fine without a workload above it (orphaned by `--cascade=orphan`, or made by hand)
            # is the workload itself: its name looks like a Deployment's all the same
            return kind, name, uid
        if kind == "Pod" and owner and owner[0] and owner[0] != "Node":
            ref = (str(owner[0]), str(owner[1]), str(owner[2]) if len(owner) > 2 else "")
            if ref[0] in WORKLOADS or ref[0] in ("ReplicaSet", "Job"):
                return self._workload(ns, ref[0], ref[1], None, template_hash, ref[2], of_pod=True)
            return self._named(ns, ref, f"Pod/{name}")  # a CRD's (StrimziPodSet)
        return None

    def workload(self, ns: str, kind: str, name: str, owner: tuple | None = None,
                 template_hash: str = "") -> tuple[str, str] | None:
        """(kind, name) of the workload behind an object, or None (a bare Pod, a Node, a Service).

        ``owner``: a Pod's controller reference, (kind, name) or (kind, name, uid)."""
        wl = self._workload(ns, kind, name, owner, template_hash)
        return (wl[0], wl[1]) if wl else None

    def team(self, ns: str, workload: tuple | None, namespace: bool = True) -> str:
        """``workload``: (kind, name) or (kind, name, uid); a kind kubesight does not read gives no labels.
        ``namespace=False``: the workload's own labels and annotations only (``""``: it names no team itself)."""
        sources = []
        if workload and (workload[0] in READERS or workload[0] in self.kinds):
            sources.append(self.get(workload[0], ns, workload[1], workload[2] if len(workload) > 2 else ""))
        if ns and namespace:
            sources.append(self.get("Namespace", "", ns))
        for application in (False, True):
            keys = [k for k in self.keys if (k in APPLICATION_KEYS) == application]
            for meta in sources:
                if not meta:
                    continue
                for where in ("labels", "annotations"):
                    for k in keys:
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

    def resolve(self, ns: str, kind: str, name: str, owner: tuple | None = None,
                template_hash: str = "") -> tuple[str, str]:
        """``("Deployment/cart", "payments")``: the workload (``""`` if none) and the owning team.

        A Namespace (cluster-scoped, ``ns`` empty) is owned by the team of its own labels and annotations.

        >>> objs = {("Namespace", "", "shop"): {"metadata": {"labels": {"team": "web"}}}}
        >>> Owners(lambda kind, ns, name: objs.get((kind, ns, name)), clock=lambda: 0.0).resolve("", "Namespace", "shop")
        ('', 'web')
        """
        wl = self._workload(ns, kind, name, owner, template_hash) if kind != "Namespace" else None
        return (f"{wl[0]}/{wl[1]}" if wl else ""), self.team(team_namespace(ns, kind, name), wl)
