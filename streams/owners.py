"""Who owns what an alert names, for alerts whose signal did not say: the ``owners`` topic, read whole by every worker.

Events and state changes reach the rule engine with their entity's team (the Kubernetes collector resolves it from
the workload's and the namespace's labels and annotations), but a scraped series does not: kube-state-metrics'
``kube_pod_status_ready{namespace, pod}`` or ``kube_deployment_status_replicas_available{namespace, deployment}`` says
nothing of a team, so an alert from it had no ``owner`` and an owner route sent it to the fallback receiver.  The
Kubernetes collector therefore also writes, in the transaction of its checkpoint, what it resolved: each pod's team,
workload and controller, and each namespace's team (``core.records.owner_key`` / ``owner_record``; a tombstone
when the pod is deleted, and when a namespace is gone).  ``OwnerBook`` follows that compacted topic (every partition, no group), and the rule
engine asks ``OwnerDirectory.owner_of`` for the team of a signal's labels that name no ``owner``:

1. the pod (``namespace`` + ``pod``);
2. a pod's workload or controller, as kube-state-metrics and kubernetes-mixin name them (``deployment``,
   ``statefulset``, ``daemonset``, ``cronjob``, ``replicaset``, ``job_name``, ``replicationcontroller``,
   ``owner_kind``/``owner_name``, ``workload`` + ``workload_type``, kubesight's ``workload`` ``Kind/name``): the
   team of its most recently written live pod;
3. the workload's own record, which the collector writes from its pods and its Events (a Deployment scaled to
   zero, a CronJob between runs, a Deployment whose pods the quota refuses: no live pod says its team);
4. the namespace;

never for an alert about the platform itself (the control plane, a node's instance, kernel, GPU or condition:
``alerts.incidents.platform_level``), whose labels may name the exporter's pod or the pod holding a GPU.

The engine keeps the team in a firing alert's labels until it resolves (``rules.engine.Engine._labels``): the
resolution carries the team the firing had (one fingerprint), and a directory that moves meanwhile (a relabel, a
pod's tombstone read before its last sample) does not page a second team about the same problem.  A workload
the collector never saw a pod or an Event of is owned by its namespace's team; a namespace whose pods the collector
never saw has no entry (its alerts stay without an owner, as before).

>>> d = OwnerDirectory("prod")
>>> d.apply(b"prod/shop", b'{"v":1,"kind":"owner","owner":"web"}')
>>> d.apply(b"prod/shop/Pod/cart-7d9f-x", b'{"v":1,"kind":"owner","owner":"payments","workload":"Deployment/cart",'
...         b'"controller":"ReplicaSet/cart-7d9f"}')
>>> d.owner_of({"namespace": "shop", "pod": "cart-7d9f-x"}), d.owner_of({"namespace": "shop", "deployment": "cart"})
('payments', 'payments')
>>> d.owner_of({"namespace": "shop", "persistentvolumeclaim": "data"}), d.owner_of({"node": "w1"})
('web', '')
>>> d.apply(b"prod/shop/Pod/cart-7d9f-x", None)  # deleted: its workload has no pod left
>>> d.owner_of({"namespace": "shop", "deployment": "cart"})
'web'
>>> d.apply(b"prod/shop/Deployment/cart", b'{"v":1,"kind":"owner","owner":"payments","workload":"Deployment/cart"}')
>>> d.owner_of({"namespace": "shop", "deployment": "cart"})
'payments'
"""

from __future__ import annotations

import asyncio
import re

import mode
import orjson

from alerts.incidents import platform_level
from core.settings import Settings
from streams.follow import follow_topic

# labels naming a pod's workload or controller: kube-state-metrics' (kube_deployment_*, kube_job_*: job_name) and
# kubernetes-mixin's; never ``job``, which is Prometheus' scrape job
REFERENCES = (("deployment", "Deployment"), ("statefulset", "StatefulSet"), ("daemonset", "DaemonSet"),
              ("cronjob", "CronJob"), ("replicationcontroller", "ReplicationController"), ("replicaset", "ReplicaSet"),
              ("job_name", "Job"))
# kubernetes-mixin's namespace_workload_pod:kube_pod_owner:relabel writes workload + workload_type (lower case)
WORKLOAD_TYPES = {label: kind for label, kind in REFERENCES if label != "job_name"} | {"job": "Job"}
_KIND = re.compile(r"[A-Z][A-Za-z0-9]*")  # a key's kind (Pod, Deployment, Rollout); namespaces are lower case


class OwnerDirectory:
    """The ``owners`` topic as lookups: namespace -> team, pod -> (team, workload, controller), and each workload or
    controller -> its live pods' teams (the latest written last).  ``cluster``: the one alerts without a ``cluster``
    label are about (``settings.cluster``)."""

    def __init__(self, cluster: str = "default"):
        self.cluster = cluster
        self.namespaces: dict[tuple[str, str], str] = {}
        self.pods: dict[tuple[str, str, str], tuple[str, str, str]] = {}
        self.refs: dict[tuple[str, str, str], dict[str, str]] = {}  # (cluster, ns, "Kind/name") -> {pod: team}
        self.workloads: dict[tuple[str, str, str], str] = {}  # (cluster, ns, "Kind/name") -> its own record's team
        self._platform: dict[tuple, bool] = {}
        self.applied = 0

    def __len__(self) -> int:
        return len(self.namespaces) + len(self.pods) + len(self.workloads)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the topic (``value`` None: a tombstone).  A key or value not of that shape raises
        ``ValueError`` (``follow_topic`` logs it and goes on)."""
        parts = (key or b"").decode("utf-8", "replace").split("/")
        rec = None
        if value is not None:
            rec = orjson.loads(value)
            if not isinstance(rec, dict) or rec.get("kind") != "owner" or not isinstance(rec.get("owner"), str):
                raise ValueError(f"not an owner record: {value[:200]!r}")
        if len(parts) >= 4 and _KIND.fullmatch(parts[-2]) and parts[-2] != "Pod" and parts[-3]:
            # cluster/ns/Deployment/name, whose record names itself as its workload; else a namespace's key whose
            # cluster name has slashes ("org/EU/Prod" + "/shop")
            wl = (("/".join(parts[:-3]), parts[-3], f"{parts[-2]}/{parts[-1]}"))
            if (rec.get("workload") == wl[2]) if rec is not None else wl in self.workloads:
                self.applied += 1
                if rec is None:
                    del self.workloads[wl]
                else:
                    self.workloads[wl] = rec["owner"]
                return
        if len(parts) >= 4 and parts[-2] == "Pod":
            cluster, ns, pod = "/".join(parts[:-3]), parts[-3], parts[-1]
        elif len(parts) >= 2:
            cluster, ns, pod = "/".join(parts[:-1]), parts[-1], ""
        else:
            raise ValueError(f"not an owners key: {key!r}")
        if not ns:
            raise ValueError(f"not an owners key (no namespace): {key!r}")
        self.applied += 1
        if not pod:
            if rec is None:
                self.namespaces.pop((cluster, ns), None)
            else:
                self.namespaces[(cluster, ns)] = rec["owner"]
            return
        self._forget(cluster, ns, pod)
        if rec is None:
            return
        entry = (rec["owner"], str(rec.get("workload") or ""), str(rec.get("controller") or ""))
        self.pods[(cluster, ns, pod)] = entry
        for ref in {entry[1], entry[2]} - {""}:
            self.refs.setdefault((cluster, ns, ref), {})[pod] = entry[0]

    def _forget(self, cluster: str, ns: str, pod: str) -> None:
        old = self.pods.pop((cluster, ns, pod), None)
        if old is None:
            return
        for ref in {old[1], old[2]} - {""}:
            teams = self.refs.get((cluster, ns, ref))
            if teams is not None:
                teams.pop(pod, None)
                if not teams:
                    del self.refs[(cluster, ns, ref)]

    def owner_of(self, labels: dict) -> str:
        """The team owning what ``labels`` name, ``""`` if none is known, they name no namespace, or the alert is
        about the platform itself (``alerts.incidents.platform_level``: a node's disk reported by a node-exporter
        pod is not the exporter's team's)."""
        ns = labels.get("namespace")
        if not ns:
            return ""
        # platform_level matches alert names against a dozen patterns: remembered per (alertname, the labels it reads)
        how = (labels.get("alertname"), labels.get("layer"), labels.get("component"),
               bool(labels.get("pod") or labels.get("workload")))
        platform = self._platform.get(how)
        if platform is None:
            if len(self._platform) >= 10_000:  # alert names are few; a flood of generated ones must not grow it
                self._platform.clear()
            platform = self._platform[how] = platform_level(labels)
        if platform:
            return ""
        cluster = labels.get("cluster") or self.cluster
        pod = labels.get("pod")
        if pod:
            hit = self.pods.get((cluster, ns, pod))
            if hit and hit[0]:
                return hit[0]
        refs = _references(labels)
        for ref in refs:
            teams = self.refs.get((cluster, ns, ref))
            if teams:
                team = next(reversed(teams.values()))
                if team:
                    return team
        for ref in refs:  # no live pod says it: the workload's own record
            team = self.workloads.get((cluster, ns, ref))
            if team:
                return team
        return self.namespaces.get((cluster, ns), "")


def _references(labels: dict) -> list[str]:
    """``Kind/name`` of each workload or controller the labels name.

    >>> _references({"deployment": "cart", "owner_kind": "ReplicaSet", "owner_name": "cart-7d9f"})
    ['Deployment/cart', 'ReplicaSet/cart-7d9f']
    >>> _references({"workload": "cart", "workload_type": "deployment"}), _references({"workload": "Job/etl"})
    (['Deployment/cart'], ['Job/etl'])
    """
    out = [f"{kind}/{labels[label]}" for label, kind in REFERENCES if labels.get(label)]
    if labels.get("owner_kind") and labels.get("owner_name"):
        out.append(f"{labels['owner_kind']}/{labels['owner_name']}")
    wl = labels.get("workload")
    if wl:
        kind = WORKLOAD_TYPES.get(str(labels.get("workload_type") or "").lower())
        if kind:
            out.append(f"{kind}/{wl}")
        elif "/" in wl:
            out.append(wl)
    return out


class OwnerBook(mode.Service):
    """Every worker's ``OwnerDirectory``, from the compacted ``owners`` topic (every partition, no group).

    ``caught_up`` is set once the records there at start are read: the hot path starts after it, so a restarted
    worker does not fire the alerts it resumes without the teams they had (a label change would replace them)."""

    def __init__(self, settings: Settings, bootstrap: str, **kw):
        super().__init__(**kw)
        self.settings, self.bootstrap = settings, bootstrap
        self.directory = OwnerDirectory(settings.cluster)
        self.caught_up = asyncio.Event()

    @mode.Service.task
    async def _follow(self) -> None:
        await follow_topic(self, self.bootstrap, self.settings.topic("owners"), 1, self.directory.apply,
                           self.caught_up, f"{self.settings.app_id}-owners")
