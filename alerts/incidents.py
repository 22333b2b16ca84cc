"""Incidents: alerts grouped by topology and time, their probable root causes ranked with evidence.

Pure and deterministic: ``observe(alert, state, now)`` and ``expire(state, now)`` are functions of
(alert, state, event time) that return the incident records to publish; no Kafka, no wall clock.
The worker (``streams.incidents``) keeps ``state`` per cluster partition in its changelog.

**Grouping.**  A firing alert joins an open incident of its cluster when it starts within
``window`` of the incident's last activity and a topology link ties it to one of its members:

* same node, through an alert about the node itself (cloud instance -> node, kernel/GPU -> node, node -> the
  pods scheduled on it): pods that share only a node, with no alert about it, are not linked;
* same workload, same pod (pods -> workloads);
* same volume (``persistentvolumeclaim``) in one namespace (volume -> pods);
* a control-plane alert (apiserver, etcd, scheduler, controller-manager, CoreDNS) links cluster-wide;
* a service dependency (``deps``: caller -> callees, transitively), when the caller of one is the callee of the other.

Membership is found through an index (``Index``: open incidents by node, workload, pod, volume,
service and control-plane key, derived from the state and never saved), so an alert costs the same
whether 10 or 10,000 incidents are open; ``hits_by_scan`` (every member of every open incident
through ``linked``) is kept as the reference the tests and ``bench rca --membership`` compare it to.

An alert that links two open incidents merges them into the older one (the younger is published
resolved, ``mergedInto`` naming the survivor).  An incident resolves ``quiet`` seconds after its
last member resolved, unless a linked alert fires in between.  A full incident (``MAX_MEMBERS``)
counts the alerts it cannot keep and stays open while one of them fires (``over``: up to
``MAX_MEMBERS`` fingerprints with their labels, each forgotten when its resolution is read; the index finds the
incident by the fingerprint, and links what they link to, after a restart too).

An episode (fingerprint and ``startsAt``) whose resolution was read is remembered (``end|<fp>``, for
``ENDED_FOR`` and at most ``MAX_ENDED`` per partition): a firing record of it read later -- a replay,
records reordered across partitions, a notification handed over after its incident closed -- is
ignored and counted (``stale``), since no resolution would come again to end what it opened.

**Notification per incident** (routes with ``incidents: true``; ``streams.incidents``).  The alerting
stage hands over what it would notify (after grouping, silences, inhibitions, ``group_wait``);
``handed(alert, receiver)`` records, on the member, the receiver it was meant for.  Each incident
then sends, per such receiver, one notification (group key ``incident:<id>``): the receivers of the
probable root cause's own alerts get the incident (role ``cause``: id, top causes with evidence,
blast radius), every other receiver one informational notice (role ``impacted``); a receiver told
``impacted`` is told again only if its alert becomes the probable cause; later members are not
notified separately.  When the incident resolves, every receiver told gets one resolved notification.
The notifications are records of the ``notifications`` topic, as the alerting stage writes them, so
delivery, retries and dead letters stay one implementation.

**Ranking.**  Candidates are the entities of the members (``node/n1``, ``workload/ns/w``,
``controlplane/etcd`` ...).  A candidate *explains* another when the topology makes the second
depend on it: a node explains the pods on it, a volume the pods mounting it, etcd the apiserver,
the control plane everything else, a callee its callers -- those of them that are slow or failing
(a ``signal`` label of latency or errors, or none stated): a caller only saturated or busy has a
problem of its own; a caller's alert that it stopped calling one callee (``destination_workload``)
is explained only by that callee (the calls hang on it) or by a callee with errors.  Score, in [0, 1], with ``weights`` (default ``WEIGHTS``)::

    0.4 * (share of the other members it explains) + 0.25 * (cause prior of its strongest alert)
      + 0.15 * (earliness: 1 for the first to start, falling to 0 at ``window`` later)
      + 0.2 * (breadth: how many different signals are abnormal on it, relative to the broadest candidate)

Different signals are different kinds of ``prior`` (saturation, errors, latency, traffic, or node,
pod, volume ... for alerts without a ``signal`` label), not different rule names: two rules that
watch one signal (a call edge's latency seen by its caller's and by its callee's proxy, a CPU
anomaly and a CPU-near-limit rule) are one signal abnormal, not two.

A candidate explains only members that started no earlier than ``slack`` before its own first
alert (an effect does not precede its cause).

The cause prior says what kind of signal tends to be a cause (a cloud maintenance or spot event
1.0, kernel/GPU/hardware 0.9, etcd 0.9, node condition 0.8, volume 0.7, saturation 0.6,
pod failures 0.5, errors 0.4, latency 0.3, traffic 0.2).  Ties: earlier first alert, then more
alerts on it, then the entity name.  Every candidate carries its evidence as short sentences.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from collections.abc import Iterable, Mapping, MutableMapping

from alerts.grouping import NOTE_MARGIN, fit
from core.records import RECORD_LIMIT, Alert, format_time
from core.statememo import PerState

CAUSE, IMPACTED = "cause", "impacted"  # roles of a receiver in an incident's notifications

VERSION = 1
WINDOW = 600.0  # s: a linked alert starting within this of an incident's last activity joins it
QUIET = 300.0  # s: an incident resolves this long after its last member resolved
SLACK = 60.0  # s: a candidate explains only what started no earlier than this before it (one scrape of jitter)
MAX_MEMBERS = 500  # members kept per incident (more are counted, not stored; its record is published again when
# the count of those reaches a power of two)
RERANK_ALL = 50  # incidents up to this many members are ranked again on every change ...
RERANK_GROWTH = 1.25  # ... larger ones when their membership grew by a quarter (and when they resolve)
PREFIX = "inc|"  # inc|<id> -> incident (open ones only); mem|<fp> -> id
OPEN = "open"  # the list of open ids kept by earlier versions: no longer written (the index knows them)
ENDED = "end|"  # end|<fp> -> [startsAt, endsAt, read at]: the alert's latest episode known resolved (its resolution
# read), so a firing record of it read later (a replay, a notification handed over late) opens nothing
ENDED_FOR = 86_400.0  # s (event time) an episode's resolution is remembered ...
MAX_ENDED = 100_000  # ... and at most this many per partition (the earliest read forgotten first)

CONTROL_PLANE = (("KubeAPI", "apiserver"), ("Etcd", "etcd"), ("KubeScheduler", "scheduler"),
                 ("KubeControllerManager", "controller-manager"), ("CoreDNS", "coredns"))
CP_DEPENDS = {"apiserver": ("etcd",), "scheduler": ("apiserver", "etcd"),
              "controller-manager": ("apiserver", "etcd"), "coredns": ("apiserver", "etcd")}
PRIORS = (  # (alertname regex, prior, kind); first match wins
    (re.compile(r"^Cloud"), 1.0, "cloud"),
    (re.compile(r"^(GPU|NPD|NodeKernel|NodeHardware|NodeMachineCheck|NodeHardLockup|NodeSoftLockup|NodeRCU"
                r"|NodeTaskHung|NodeFrequentTaskHung|NodeIOError|NodeDisk|NodeExt4|NodeXFS|NodeFilesystemReadOnly"
                r"|NodeRAID|NodeNet|NodeOOMKill|NodeCorrected|NodeUnregister)"), 0.9, "kernel"),
    (re.compile(r"^Etcd"), 0.9, "etcd"),
    (re.compile(r"^(KubeNode|Kubelet|NodeFrequent|NodeNTP|NodeClock|NodeConntrack|NodeFile|NodeMemory|NodeCPU"
                r"|NodeSystemd|NodeContainer|NodeCorrupt)"), 0.8, "node"),
    (re.compile(r"^(KubeAPI|KubeScheduler|KubeControllerManager|CoreDNS)"), 0.6, "controlplane"),
    (re.compile(r"^(KubePersistentVolume|KubeVolume|KubePVC|KubePodFailedMount)"), 0.7, "volume"),
    (re.compile(r"(OOM|CPUThrottling|MemoryNearLimit|Quota)"), 0.6, "saturation"),
    (re.compile(r"^Kube(Pod|Container|Job|Deployment|StatefulSet|DaemonSet|Image|Workload|Hpa)"), 0.5, "pod"),
)
SIGNAL_PRIORS = {"saturation": 0.6, "errors": 0.4, "latency": 0.3, "traffic": 0.2}  # the ``signal`` label
DEFAULT_PRIOR = 0.3


# ---------------------------------------------------------------- topology

def component(labels: Mapping) -> str | None:
    """The control-plane component an alert is about, else None.

    >>> component({"alertname": "EtcdHighFsyncDurations"}), component({"alertname": "KubePodCrashLooping"})
    ('etcd', None)
    """
    if labels.get("component") in CP_DEPENDS or labels.get("component") == "etcd":
        return labels["component"]
    name = labels.get("alertname", "")
    for prefix, comp in CONTROL_PLANE:
        if name.startswith(prefix):
            return comp
    return None


def entity(labels: Mapping) -> str:
    """What an alert is about, as one name: the candidate it stands for.

    >>> entity({"alertname": "KubeNodeNotReady", "node": "n1"})
    'node/n1'
    >>> entity({"alertname": "KubePodCrashLooping", "namespace": "shop", "workload": "web", "node": "n1"})
    'workload/shop/web'
    >>> entity({"alertname": "EtcdHighFsyncDurations", "instance": "10.0.0.1:2379"})
    'controlplane/etcd'

    An alert about a node's hardware, kernel or instance is about the node even when the exporter names the pod
    that holds the device (dcgm-exporter maps a GPU to the pod using it): ``node_level``.

    >>> entity({"alertname": "GPUDoubleBitECCErrors", "namespace": "ml", "pod": "train-0", "node": "g1"})
    'node/g1'
    """
    comp = component(labels)
    if comp:
        return f"controlplane/{comp}"
    if node_level(labels):
        return f"node/{labels['node']}"
    ns = labels.get("namespace", "")
    if labels.get("persistentvolumeclaim"):
        return f"volume/{ns}/{labels['persistentvolumeclaim']}"
    if labels.get("workload"):
        return f"workload/{ns}/{labels['workload']}"
    if labels.get("pod"):
        return f"pod/{ns}/{labels['pod']}"
    if labels.get("node"):
        return f"node/{labels['node']}"
    if ns:
        return f"namespace/{ns}"
    return "cluster"


def closure(deps: Mapping[str, Iterable[str]] | None) -> dict[str, frozenset]:
    """caller -> every service it reaches (transitively) through ``deps`` (caller -> callees).

    >>> sorted(closure({"a": ["b"], "b": ["c"]})["a"])
    ['b', 'c']
    """
    deps = {k: list(v) for k, v in (deps or {}).items()}
    out: dict[str, frozenset] = {}
    for start in deps:
        seen: set[str] = set()
        todo = list(deps[start])
        while todo:
            s = todo.pop()
            if s not in seen:
                seen.add(s)
                todo.extend(deps.get(s, ()))
        out[start] = frozenset(seen - {start})
    return out


def _service(labels: Mapping) -> str:
    return labels.get("service") or labels.get("workload") or ""


LAYERS = frozenset({"cloud", "node", "gpu", "control-plane", "workloads", "storage", "network"})  # the ``layer``
NODE_LAYERS = frozenset({"cloud", "node", "gpu"})  # label's values (the board's columns); a node's own layers
NODE_KINDS = frozenset({"cloud", "kernel", "node"})  # ``prior`` kinds by alert name: instance, kernel/GPU, node
OWN_PROCESS = frozenset({"NodeOOMKill", "GPUXidApplicationError"})  # the node saw one process fail: when attributed
# to a pod (the kernel collector maps an OOM kill's memory cgroup to its pod), that pod's own fault -- its memory
# limit, its CUDA bug -- not the node's, which a storm of them (NodeOOMKillStorm) or a fatal Xid would be


def node_level(labels: Mapping) -> bool:
    """Is the alert about a node itself (a cloud instance, kernel, GPU or node condition), not about something that
    merely runs there?  Decided by the kind of alert -- its ``layer`` label if it names one, else its name
    (``prior``'s kinds) -- not by which labels it carries: dcgm-exporter adds the pod holding a GPU to the GPU's own
    series, and a GPU's double-bit ECC errors are still its node's problem.  An alert of no such kind is about the
    node when the node is all it names (its entity would be ``node/...``).

    >>> node_level({"alertname": "KubeNodeNotReady", "node": "n1"}), node_level({"node": "n1", "pod": "web-1"})
    (True, False)
    >>> node_level({"alertname": "GPUDoubleBitECCErrors", "node": "n1", "namespace": "ml", "pod": "train-0"})
    True
    >>> node_level({"alertname": "NodeOOMKill", "node": "n1", "namespace": "a", "pod": "web-1"})
    False
    """
    if not labels.get("node") or component(labels):
        return False
    layer = labels.get("layer")
    if layer in LAYERS:
        return layer in NODE_LAYERS
    if _named_kind(labels) in NODE_KINDS:
        return not (labels.get("alertname") in OWN_PROCESS and (labels.get("pod") or labels.get("workload")))
    return not any(labels.get(k) for k in ("persistentvolumeclaim", "workload", "pod"))


def platform_level(labels: Mapping) -> bool:
    """Is the alert about the platform itself -- the control plane, or a node's instance, kernel, GPU or condition --
    whatever pod or namespace its labels carry?  kube-prometheus' node-exporter series carry the exporter's own
    ``namespace`` and ``pod`` (a node's full disk is not the monitoring team's), dcgm-exporter's the pod holding the
    GPU.  Decided as ``node_level`` decides, by the alert's ``layer`` or, without one, its name; a process the kernel
    killed for its own sake (``OWN_PROCESS``, attributed to a pod) is that pod's, not the platform's.

    >>> platform_level({"alertname": "NodeFilesystemSpaceFillingUp", "namespace": "monitoring", "pod": "node-exporter-x"})
    True
    >>> platform_level({"alertname": "NodeOOMKill", "namespace": "shop", "pod": "web-1"})
    False
    >>> platform_level({"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": "web-1", "layer": "workloads"})
    False
    """
    if component(labels):
        return True
    layer = labels.get("layer")
    if layer in LAYERS:
        return layer in NODE_LAYERS or layer == "control-plane"
    if _named_kind(labels) in NODE_KINDS:
        return not (labels.get("alertname") in OWN_PROCESS and (labels.get("pod") or labels.get("workload")))
    return False


def linked(a: Mapping, b: Mapping, reach: Mapping[str, frozenset] | None = None) -> str | None:
    """Why alert labels ``a`` and ``b`` (one cluster) belong to one incident, else None.  Sharing a node links
    only through an alert about the node itself: two pods that fail on one node for reasons of their own (a crash
    loop, an OOM kill) are two incidents of two teams until the node shows a problem.

    >>> linked({"node": "n1", "alertname": "CloudSpotInterruption"}, {"node": "n1", "workload": "web"})
    'same node n1'
    >>> linked({"node": "n1", "namespace": "a", "workload": "web"}, {"node": "n1", "namespace": "b", "workload": "db"}) is None
    True
    >>> linked({"workload": "web", "namespace": "a"}, {"workload": "web", "namespace": "b"}) is None
    True
    """
    if component(a) or component(b):
        return "control plane (cluster-wide)"
    if a.get("node") and a.get("node") == b.get("node") and (node_level(a) or node_level(b)):
        return f"same node {a['node']}"
    ns = a.get("namespace")
    if ns and ns == b.get("namespace"):
        for key in ("workload", "pod", "persistentvolumeclaim"):
            if a.get(key) and a.get(key) == b.get(key):
                return f"same {key} {ns}/{a[key]}"
    if reach:
        sa, sb = _service(a), _service(b)
        if sa and sb and sa != sb and (sb in reach.get(sa, ()) or sa in reach.get(sb, ())):
            return f"service dependency {sa} - {sb}"
    return None


def explains(cause: str, cause_members: list[Mapping], other: str, other_members: list[Mapping],
             reach: Mapping[str, frozenset] | None = None) -> str | None:
    """Why entity ``cause`` would explain entity ``other`` (topology: ``other`` depends on ``cause``), else None.

    >>> explains("node/n1", [{"node": "n1"}], "workload/shop/web", [{"node": "n1", "workload": "web"}])
    'runs on node n1'
    >>> explains("workload/shop/web", [{"node": "n1", "workload": "web"}], "node/n1", [{"node": "n1"}]) is None
    True
    """
    if cause == other:
        return None
    kind, _, name = cause.partition("/")
    okind, _, oname = other.partition("/")
    if kind == "controlplane":
        if okind == "controlplane":
            return f"{oname} depends on {name}" if name in CP_DEPENDS.get(oname, ()) else None
        return f"cluster-wide: {name} serves every workload"
    if kind == "node" and okind != "node" and okind != "controlplane":
        if any(m.get("node") == name for m in other_members):
            return f"runs on node {name}"
        return None
    if kind == "volume" and okind in ("workload", "pod"):
        ns, _, pvc = name.partition("/")
        if any(m.get("namespace") == ns and m.get("persistentvolumeclaim") == pvc for m in other_members):
            return f"mounts volume {name}"
        return None
    if kind in ("workload", "pod") and okind in ("workload", "pod") and reach:
        sa = _service(cause_members[0]) if cause_members else ""
        sb = _service(other_members[0]) if other_members else ""
        if sa and sb and sa != sb and sa in reach.get(sb, ()) and _carries(other_members, cause_members, sa):
            return f"{sb} calls {sa}"
    return None


PROPAGATES = frozenset({"latency", "errors"})  # what travels up a call chain: a slow or failing callee
EFFECTS = frozenset({"traffic"})  # what a callee shows because of its callers (more, fewer calls), not for them


def _carries(labels: Iterable[Mapping], cause: Iterable[Mapping] | None = None, callee: str = "") -> bool:
    """Can these alerts of a caller be the symptom of a callee's fault: some of them latency or
    errors, or of no stated ``signal`` at all (unknown: assume they can)?  A callee's fault reaches
    its callers as slow or failed calls; a caller only saturated (CPU, memory) or busy has a problem
    of its own, which no callee explains.  Given the callee's alerts (``cause``): only a callee with
    some alert other than traffic -- a callee only busier or quieter than usual (``EFFECTS``) shows
    what its callers do, not why they are slow.

    An alert of the caller about its calls to one callee (``destination_workload`` naming another
    service than its own: it stopped calling it) is carried only from that callee (the calls hang
    on it) or from a callee with errors (the caller gave up before calling): a callee that answers,
    slowly or busily, does not stop its caller calling the others.

    >>> _carries([{"signal": "saturation"}]), _carries([{"signal": "latency"}]), _carries([{"alertname": "X"}])
    (False, True, True)
    >>> _carries([{"signal": "latency"}], [{"signal": "traffic"}]), _carries([{"signal": "latency"}], [{"signal": "saturation"}])
    (False, True)
    >>> skip = {"signal": "errors", "workload": "checkout", "destination_workload": "payment"}
    >>> _carries([skip], [{"signal": "saturation"}], "currency"), _carries([skip], [{"signal": "saturation"}], "payment")
    (False, True)
    >>> _carries([skip], [{"signal": "errors"}], "currency")
    True
    """
    if cause is not None and all(lb.get("signal") in EFFECTS for lb in cause):
        return False
    failing = cause is None or any(lb.get("signal") in ("errors", None) for lb in cause)
    return any((lb.get("signal") in PROPAGATES or lb.get("signal") is None)
               and (failing or not _skips(lb) or lb["destination_workload"] == callee) for lb in labels)


def _skips(labels: Mapping) -> bool:
    """An alert of a caller about its calls to another service (it stopped calling it)."""
    dst = labels.get("destination_workload")
    return bool(dst) and dst != _service(labels)


def prior(labels: Mapping) -> tuple[float, str]:
    """(cause prior, kind) of an alert: how likely this kind of signal is a cause rather than a symptom.

    >>> prior({"alertname": "CloudSpotInterruption"}), prior({"alertname": "X", "signal": "latency"})
    ((1.0, 'cloud'), (0.3, 'latency'))
    """
    sig = labels.get("signal")
    if sig in SIGNAL_PRIORS:
        return SIGNAL_PRIORS[sig], sig
    name = labels.get("alertname", "")
    for rx, p, kind in PRIORS:
        if rx.search(name):
            return p, kind
    return DEFAULT_PRIOR, "other"


def _named_kind(labels: Mapping) -> str:
    """The kind ``prior`` gives an alert by its name alone (a ``signal`` label says how it shows, not where)."""
    name = labels.get("alertname", "")
    for rx, _, kind in PRIORS:
        if rx.search(name):
            return kind
    return "other"


# ---------------------------------------------------------------- ranking

WEIGHTS = (0.4, 0.25, 0.15, 0.2)  # rank's score: explained share, cause prior, earliness, breadth


def rank(members: Mapping[str, Mapping], reach: Mapping[str, frozenset] | None = None,
         window: float = WINDOW, slack: float = SLACK, weights: tuple = WEIGHTS) -> list[dict]:
    """Root-cause candidates of an incident's ``members`` (fingerprint -> member), best first.

    Each: ``entity``, ``score``, ``cause`` (its strongest alert), ``kind``, ``firstAt``,
    ``explains`` (entities), ``evidence`` (sentences).  Deterministic: ties go to the earlier
    first alert, then to the candidate with more alerts, then to the entity name.
    """
    by_entity: dict[str, list[Mapping]] = {}
    for fp in sorted(members):
        m = members[fp]
        by_entity.setdefault(entity(m["labels"]), []).append(m)
    if not by_entity:
        return []
    start = min(m["startsAt"] for m in members.values())
    total = len(members)
    firsts = {e: min(m["startsAt"] for m in ms) for e, ms in by_entity.items()}
    # when a candidate's possible cause began: its first alert other than traffic (a callee's traffic
    # follows its callers), so a callee busier at once and slow only minutes later does not explain
    # callers that were slow before it
    causal = {e: min((m["startsAt"] for m in ms if m["labels"].get("signal") not in EFFECTS), default=firsts[e])
              for e, ms in by_entity.items()}
    kinds = {e: len({prior(m["labels"])[1] for m in ms}) for e, ms in by_entity.items()}
    most = max(kinds.values())
    out = []
    for ent, ms in by_entity.items():
        labels = [m["labels"] for m in ms]
        first = firsts[ent]
        node = ent[len("node/"):] if ent.startswith("node/") else None
        best = max(ms, key=lambda m: (prior(m["labels"])[0], -m["startsAt"], m["labels"].get("alertname", "")))
        p, kind = prior(best["labels"])
        others = total - len(ms)
        n_expl, why = 0, []
        for oent, oms in sorted(by_entity.items()):
            if firsts[oent] + slack < causal[ent]:
                continue  # an effect does not precede its cause
            reason = explains(ent, labels, oent, [m["labels"] for m in oms], reach)
            if reason:  # a node explains only its workloads' alerts on it, not their pods' on other nodes
                n_expl += sum(m["labels"].get("node") == node for m in oms) if node else len(oms)
                why.append((oent, reason))
        share = n_expl / others if others else 0.0
        early = max(0.0, 1.0 - (first - start) / window) if window > 0 else 1.0
        breadth = (kinds[ent] - 1) / (most - 1) if most > 1 else 0.0
        w_share, w_prior, w_early, w_breadth = weights
        score = round(w_share * share + w_prior * p + w_early * early + w_breadth * breadth, 4)
        evidence = [f"{best['labels'].get('alertname', '?')} since {format_time(best['startsAt'])}"
                    + (f": {best['summary']}" if best.get("summary") else "")]
        if len(ms) > 1:
            evidence.append(f"{len(ms)} alerts on it: " + ", ".join(sorted({lb.get('alertname', '?') for lb in labels})))
        if why:
            shown = "; ".join(f"{o} ({r})" for o, r in why[:5])
            evidence.append(f"explains {n_expl}/{others} other alerts: {shown}"
                            + (f" and {len(why) - 5} more" if len(why) > 5 else ""))
        evidence.append("first to start" if first == start else f"started {first - start:.0f}s after the first alert")
        if kinds[ent] > 1:
            evidence.append(f"{kinds[ent]} different signals abnormal on it")
        evidence.append(f"cause prior {p:g} ({kind})")
        out.append({"entity": ent, "score": score, "cause": best["labels"].get("alertname", ""), "kind": kind,
                    "firstAt": first, "explains": [o for o, _ in why], "evidence": evidence})
    out.sort(key=lambda c: (-c["score"], c["firstAt"], -len(by_entity[c["entity"]]), c["entity"]))
    return out



# ---------------------------------------------------------------- membership index

_KEYED = (("workload", "same workload"), ("pod", "same pod"), ("persistentvolumeclaim", "same persistentvolumeclaim"))


class Index:
    """Open incidents by topology key, for one partition's state: what ``linked`` would find, without a scan.

    Derived data only (rebuilt from the ``inc|`` records whenever a new state mapping is seen, never
    saved), like the alerting engine's timers.  Keys (one cluster each): ``n|<node>`` (an alert about the node),
    ``on|<node>`` (an alert about something on it, which only the node's own alerts link to),
    ``workload|<ns>|<w>``, ``pod|<ns>|<p>``, ``persistentvolumeclaim|<ns>|<pvc>``, ``s|<service>`` (with a
    dependency graph); incidents holding a control-plane member, and every open incident,
    by cluster.  ``quiet``: the open incidents where nothing fires (no member, no alert they could not keep), and
    ``held``: those whose first notifications wait (the only ones ``expire`` looks at); ``over``: the alerts a full
    incident could not keep that fire, by fingerprint (their keys lead to it too, as a member's would); ``ended``:
    the ``end|`` records by when they were read (the earliest forgotten first).
    """

    def __init__(self, state: Mapping, reach: Mapping[str, frozenset]):
        self.state = state
        self.reach = reach
        self.callers: dict[str, set[str]] = {}  # service -> the services that reach it
        for caller, callees in reach.items():
            for c in callees:
                self.callers.setdefault(c, set()).add(caller)
        self.by_key: dict[str, set[str]] = {}
        self.keys_of: dict[str, set[str]] = {}
        self.by_cluster: dict[str, set[str]] = {}
        self.cp: dict[str, set[str]] = {}
        self.quiet: set[str] = set()
        self.held: dict[str, float] = {}  # incident id -> when its hold ends (``Incidents.hold``)
        self.until: dict[str, float] = {}  # incident id -> the earliest end a firing member promised (its endsAt)
        self.over: dict[str, str] = {}  # fingerprint of an alert a full incident could not keep -> that incident
        # heap of (read at, fingerprint), one entry per ``end|`` record: an entry older than its record (read again
        # since) is pushed again with the record's time when it comes up, so the heap grows with the records, not
        # with the resolutions read (one alert flapping for a day would be 8,640 entries)
        self.ended: list[tuple[float, str]] = []
        self.n_ended = 0  # how many ``end|`` records the state holds
        for k, inc in list(state.items()):
            if isinstance(k, str) and k.startswith(PREFIX):
                self.open(inc["id"], inc["cluster"])
                for m in inc["members"].values():
                    self.add(inc["id"], inc["cluster"], m["labels"])
                for fp, labels in _over_items(inc):  # what ``move`` carried from an absorbed incident, and the rest
                    self.keep_over(inc["id"], inc["cluster"], fp, labels)
                self.settle(inc)
            elif isinstance(k, str) and k.startswith(ENDED):
                self.ended.append((inc[2], k[len(ENDED):]))
                self.n_ended += 1
        heapq.heapify(self.ended)

    def keys(self, cluster: str, labels: Mapping) -> list[str]:
        out = []
        if labels.get("node"):
            out.append(f"{cluster}|{'n' if node_level(labels) else 'on'}|{labels['node']}")
        ns = labels.get("namespace")
        if ns:
            for key, _ in _KEYED:
                if labels.get(key):
                    out.append(f"{cluster}|{key}|{ns}|{labels[key]}")
        if self.reach:
            svc = _service(labels)
            if svc:
                out.append(f"{cluster}|s|{svc}")
        return out

    def open(self, iid: str, cluster: str) -> None:
        self.by_cluster.setdefault(cluster, set()).add(iid)
        self.keys_of.setdefault(iid, set())

    def add(self, iid: str, cluster: str, labels: Mapping) -> None:
        if component(labels):
            self.cp.setdefault(cluster, set()).add(iid)
            self.keys_of[iid].add("\x00cp|" + cluster)
            return
        mine = self.keys_of[iid]
        for k in self.keys(cluster, labels):
            if k not in mine:
                mine.add(k)
                self.by_key.setdefault(k, set()).add(iid)

    def keep_over(self, iid: str, cluster: str, fp: str, labels: Mapping) -> None:
        """Alert ``fp`` that incident ``iid`` could not keep fires: its resolution finds the incident by ``fp``, and
        what links to it links to the incident."""
        self.over[fp] = iid
        self.add(iid, cluster, labels)

    def move(self, src: str, dst: str, cluster: str) -> None:
        """Every key of incident ``src`` now leads to ``dst`` (a merge)."""
        for k in self.keys_of.get(src, ()):
            if k.startswith("\x00cp|"):
                self.cp.get(cluster, set()).discard(src)
                self.cp.setdefault(cluster, set()).add(dst)
            else:
                ids = self.by_key.get(k)
                if ids is not None:
                    ids.discard(src)
                    ids.add(dst)
            self.keys_of[dst].add(k)
        self.keys_of[src] = set()

    def close(self, iid: str, cluster: str, over: Iterable[str] = ()) -> None:
        for fp in over:  # (a merged incident's: those the survivor took now lead to it)
            if self.over.get(fp) == iid:
                del self.over[fp]
        for k in self.keys_of.pop(iid, ()):
            if k.startswith("\x00cp|"):
                self.cp.get(cluster, set()).discard(iid)
                continue
            ids = self.by_key.get(k)
            if ids is not None:
                ids.discard(iid)
                if not ids:
                    del self.by_key[k]
        self.by_cluster.get(cluster, set()).discard(iid)
        self.quiet.discard(iid)
        self.held.pop(iid, None)
        self.until.pop(iid, None)

    def settle(self, inc: Mapping) -> None:
        if inc.get("holdUntil") is not None:
            self.held[inc["id"]] = inc["holdUntil"]
        else:
            self.held.pop(inc["id"], None)
        ends = [m["until"] for m in inc["members"].values() if m["status"] == "firing" and m.get("until") is not None]
        if ends:
            self.until[inc["id"]] = min(ends)
        else:
            self.until.pop(inc["id"], None)
        if inc.get("over") or any(m["status"] == "firing" for m in inc["members"].values()):
            self.quiet.discard(inc["id"])
        else:
            self.quiet.add(inc["id"])

    def candidates(self, cluster: str, labels: Mapping) -> dict[str, str]:
        """Open incident id -> why the alert with ``labels`` links to it (the strongest link, ``linked``'s order)."""
        if component(labels):
            return dict.fromkeys(self.by_cluster.get(cluster, ()), "control plane (cluster-wide)")
        out = dict.fromkeys(self.cp.get(cluster, ()), "control plane (cluster-wide)")
        if labels.get("node"):
            for kind in ("n", "on") if node_level(labels) else ("n",):
                for iid in self.by_key.get(f"{cluster}|{kind}|{labels['node']}", ()):
                    out.setdefault(iid, f"same node {labels['node']}")
        ns = labels.get("namespace")
        if ns:
            for key, why in _KEYED:
                if labels.get(key):
                    for iid in self.by_key.get(f"{cluster}|{key}|{ns}|{labels[key]}", ()):
                        out.setdefault(iid, f"{why} {ns}/{labels[key]}")
        if self.reach:
            sa = _service(labels)
            if sa:
                for sb in sorted(self.reach.get(sa, frozenset()) | self.callers.get(sa, set())):
                    if sb != sa:
                        for iid in self.by_key.get(f"{cluster}|s|{sb}", ()):
                            out.setdefault(iid, f"service dependency {sa} - {sb}")
        return out


# ---------------------------------------------------------------- lifecycle

class Incidents:
    """The incident stage's logic for one cluster partition's ``state`` (a MutableMapping of JSON values)."""

    def __init__(self, deps: Mapping[str, Iterable[str]] | None = None, window: float = WINDOW,
                 quiet: float = QUIET, hold: float = 0.0):
        self.reach = closure(deps)
        self.window, self.quiet = window, quiet
        # seconds an incident's first notifications wait after it opens (``holdUntil`` on the incident, released by
        # ``expire``), so the probable cause is ranked on more than the first alert to arrive -- a pod's alert may
        # come before its node's -- as Alertmanager's group_wait lets a group fill; 0: at once
        self.hold = hold
        self._indexes = PerState(lambda state: Index(state, self.reach))  # state -> its index, gone with the state
        self.outbox: list[dict] = []  # notifications per incident produced by the last calls (``take_notes``)
        self.scan = False  # True: find links by comparing with every member (the reference; bench rca --membership)
        self.stale = 0  # firing records of an episode already known resolved, ignored (``ENDED``)

    def index(self, state: Mapping) -> Index:
        """The membership index of ``state`` (built on first use of a mapping, then kept in step with it)."""
        return self._indexes(state)

    @staticmethod
    def open_ids(state: Mapping) -> list[str]:
        """The ids of the open incidents held in ``state``."""
        return sorted(k[len(PREFIX):] for k in state if isinstance(k, str) and k.startswith(PREFIX))

    def hits_by_scan(self, labels: Mapping, state: Mapping, start: float) -> list[tuple[float, str, str]]:
        """(openedAt, id, why) of every open incident the alert links to, comparing it with every member."""
        hits = []
        cluster = labels.get("cluster", "")
        for oid in self.open_ids(state):
            o = state[PREFIX + oid]
            if o["cluster"] != cluster or start > o["updatedAt"] + self.window:
                continue
            for ofp in sorted(o["members"]):
                why = linked(labels, o["members"][ofp]["labels"], self.reach)
                if why:
                    hits.append((o["openedAt"], oid, why))
                    break
        return sorted(hits)

    def hits(self, labels: Mapping, state: Mapping, start: float) -> list[tuple[float, str, str]]:
        """(openedAt, id, why) of every open incident the alert links to, oldest first (through the index)."""
        if self.scan:
            return self.hits_by_scan(labels, state, start)
        hits = []
        for oid, why in self.index(state).candidates(labels.get("cluster", ""), labels).items():
            o = state[PREFIX + oid]
            if start <= o["updatedAt"] + self.window:
                hits.append((o["openedAt"], oid, why))
        return sorted(hits)

    def observe(self, alert: Alert, state: MutableMapping, now: float) -> list[dict]:
        """Apply one alert transition; returns the incident records that changed (to publish)."""
        fp = alert.fingerprint
        labels = alert.labels
        cluster = labels.get("cluster", "")
        iid = state.get("mem|" + fp)
        inc = state.get(PREFIX + iid) if iid else None
        if alert.status == "resolved":
            self._remember_end(alert, state, now)
            if inc is None or fp not in inc["members"]:
                self._over_ended(alert, state, now)
                return []
            m = inc["members"][fp]
            if m["status"] == "resolved":
                return []
            m["status"], m["endsAt"] = "resolved", alert.endsAt or now
            inc["updatedAt"] = max(inc["updatedAt"], m["endsAt"])
            rec = self.record(inc)
            self._save(inc, state)
            return [rec]
        if self.ended(alert, state):
            self.stale += 1
            return []
        member = _member(alert)
        if alert.endsAt is not None:  # a firing alert that says when it ends unless sent again (the Watchdog,
            member["until"] = alert.endsAt  # a silence reminder): it ends then, as Alertmanager ends it (``expire``)
        if inc is not None:  # a member firing again (or an update of it)
            old = inc["members"].get(fp)
            if old is not None and old["status"] == "firing":
                if old.get("until") != member.get("until"):  # sent again: its end moves (not a change to publish)
                    old["until"] = member.get("until")
                    self._save(inc, state)
                return []
            member["startsAt"] = min(member["startsAt"], old["startsAt"]) if old else member["startsAt"]
            inc["members"][fp] = member
            inc["updatedAt"] = max(inc["updatedAt"], alert.startsAt, now)
            rec = self.record(inc)
            self._save(inc, state)
            return [rec]
        ix = self.index(state)
        hits = self.hits(labels, state, alert.startsAt)
        out: list[dict] = []
        if not hits:
            # ``now`` too: the same alert (same startsAt) sent again after its incident closed opens another
            # incident, whose notifications must not reuse the first one's ids (receivers dedup on them)
            iid = hashlib.sha1(f"{cluster}|{fp}|{alert.startsAt}|{now}".encode()).hexdigest()[:12]
            inc = {"id": iid, "cluster": cluster, "status": "open", "openedAt": alert.startsAt,
                   "updatedAt": max(alert.startsAt, now), "resolvedAt": None, "members": {}, "links": [],
                   "dropped": 0}
            if self.hold > 0:
                inc["holdUntil"] = now + self.hold
            ix.open(iid, cluster)
        else:
            inc = state[PREFIX + hits[0][1]]
            inc["links"] = (inc["links"] + [f"{entity(labels)}: {hits[0][2]}"])[-20:]
            for _, oid, _ in hits[1:]:  # this alert ties younger incidents to the oldest: merge them
                other = state[PREFIX + oid]
                for ofp, om in other["members"].items():
                    if len(inc["members"]) < MAX_MEMBERS:
                        inc["members"][ofp] = om
                        state["mem|" + ofp] = inc["id"]
                    else:
                        del state["mem|" + ofp]
                        _overflow(inc, ofp, om, ix)
                _still_firing(inc, _over_items(other), ix)  # what the absorbed incident could not keep either
                for r, kept in sorted((other.get("outside") or {}).items()):
                    for ofp, om in sorted(kept.items()):
                        _keep_outside(inc, r, ofp, om)
                inc["openedAt"] = min(inc["openedAt"], other["openedAt"])
                inc["updatedAt"] = max(inc["updatedAt"], other["updatedAt"])
                other_sent = {r: {**v, "id": v.get("id", other["id"])} for r, v in (other.get("sent") or {}).items()}
                other["status"], other["resolvedAt"], other["mergedInto"] = "resolved", now, inc["id"]
                orec = self.record(other)
                out.append(orec)
                if other_sent:  # who was told stays told (no second notification after a merge), under its key
                    mine = inc.get("sent") or {}
                    for r, v in sorted(other_sent.items()):
                        if r in mine and v["status"] == "firing":  # told of both: the absorbed one ends here
                            oms, oto = _audience(other)
                            self.outbox.append(incident_note({**other, "members": oms}, orec, r, v["role"], "resolved",
                                                             v["seq"] + 1, oto.get(r, []), now, key_id=v["id"]))
                    inc["sent"] = {**other_sent, **mine}
                ix.move(oid, inc["id"], cluster)
                self._drop(other, state, members=False)
            inc["updatedAt"] = max(inc["updatedAt"], alert.startsAt, now)
        if len(inc["members"]) < MAX_MEMBERS:
            inc["members"][fp] = member
            state["mem|" + fp] = inc["id"]
            ix.add(inc["id"], cluster, labels)
        else:
            _overflow(inc, fp, member, ix)
            d = inc["dropped"]
            if not out and d & (d - 1):  # a full incident's record is published again at 1, 2, 4, 8 ... dropped
                self._save(inc, state)  # alerts only: nothing else in it changed, and a storm would republish
                return out  # its MAX_MEMBERS fingerprints for every alert
        rec = self.record(inc)
        self._notify(inc, rec, now)
        self._save(inc, state)
        out.append(rec)
        return out

    def _full_of(self, alert: Alert, state: Mapping) -> str | None:
        """The open incident this alert links to when that one is full (it was counted there, not kept)."""
        hits = self.hits(alert.labels, state, alert.startsAt)
        if hits:
            inc = state.get(PREFIX + hits[0][1])
            if inc is not None and len(inc["members"]) >= MAX_MEMBERS:
                return hits[0][1]
        return None

    def handed(self, alert: Alert, receiver: str, state: MutableMapping, now: float) -> list[dict]:
        """An alert the alerting stage would have notified to ``receiver`` (a route with ``incidents: true``).

        Joins (or opens) its incident if the stage has not seen it yet, records the receiver on the
        member, and queues the incident's notifications (``take_notes``).  Returns the incident records."""
        out = []
        fp = alert.fingerprint
        iid = state.get("mem|" + fp)
        inc = state.get(PREFIX + iid) if iid else None
        m = inc["members"].get(fp) if inc is not None else None
        # notified while it still fired, read after its resolution: the receiver is recorded, but the member is not
        # flipped back to firing (no resolution would come again to end it); a new episode starts after that end
        late = (m is not None and m["status"] == "resolved" and alert.status == "firing"
                and alert.startsAt <= (m["endsAt"] or now))
        if not late and alert.status == "firing" and self.ended(alert, state):
            self.stale += 1  # its episode is over (its incident may be closed): nobody is told it fires
            return []
        if not late and (m is None or alert.status != m["status"]):
            out = self.observe(alert, state, now)
            iid = state.get("mem|" + fp)
            inc = state.get(PREFIX + iid) if iid else None
        if inc is None and alert.status == "firing":
            iid = self._full_of(alert, state)
            inc = state.get(PREFIX + iid) if iid else None
            if inc is not None and receiver not in (inc.get("sent") or {}) and receiver not in (inc.get("outside") or {}):
                # a full incident (MAX_MEMBERS) keeps no new member, but a receiver it never told is told, once,
                # with this alert (README: every other receiver gets one notice), when its hold is over if it is
                # held; the alert is kept for the receiver (``outside``) to tell it of the end with it too
                inc.setdefault("outside", {})[receiver] = {fp: _member(alert)}
                rec = self.record(inc)
                self._notify(inc, rec, now)
                self._save(inc, state)
                return out + [rec]
            return out
        if inc is None or fp not in inc["members"] or alert.status != "firing":
            return out
        m = inc["members"][fp]
        if receiver in m.get("to", ()):
            return out
        m["to"] = sorted({*m.get("to", ()), receiver})
        m["ann"] = {k: v for k, v in alert.annotations.items() if not k.startswith("kubesight.io/")}
        rec = self.record(inc)
        self._notify(inc, rec, now)
        self._save(inc, state)
        if rec.get("notified") != (out[-1].get("notified") if out and out[-1]["id"] == inc["id"] else None):
            out = [r for r in out if r["id"] != inc["id"]] + [rec]  # who was told changed: published again
        return out

    def take_notes(self) -> list[dict]:
        """The notifications queued by the calls since the last take (in order)."""
        out, self.outbox = self.outbox, []
        return out

    def _notify(self, inc: dict, rec: Mapping, now: float) -> None:
        """Queue what this incident's receivers must be told now (``inc["sent"]``: what each was told)."""
        ms, to = _audience(inc)
        sent = inc.get("sent") or {}
        if not to and not sent or inc.get("holdUntil") is not None:
            return  # nobody to tell, or not yet: ``expire`` releases a held incident once its hold is over
        cands = rec.get("candidates") or []
        top = cands[0]["entity"] if cands else None
        resolved = rec["status"] == "resolved"
        for r in sorted(set(to) | set(sent)):
            fps = to.get(r, [])
            role = CAUSE if any(entity(ms[fp]["labels"]) == top for fp in fps) else IMPACTED
            prev = sent.get(r)
            if resolved:
                if prev is None or prev["status"] != "firing":
                    continue
                role, status = prev["role"], "resolved"
            elif prev is None or (prev["role"] == IMPACTED and role == CAUSE):
                status = "firing"
            else:
                continue
            seq = (prev["seq"] if prev else 0) + 1
            key_id = prev.get("id", inc["id"]) if prev else inc["id"]  # a merged incident's receiver keeps its key
            sent[r] = {"role": role, "status": status, "seq": seq, "id": key_id}
            self.outbox.append(incident_note({**inc, "members": ms}, rec, r, role, status, seq, fps, now, key_id=key_id))
        inc["sent"] = sent
        if sent:
            rec["notified"] = {r: v["role"] for r, v in sorted(sent.items())}

    def expire(self, state: MutableMapping, now: float, events: float | None = None) -> list[dict]:
        """Release the held incidents whose hold is over (their first notifications go out, ranked on every member
        that came meanwhile), and resolve the incidents whose members all resolved at least ``quiet`` ago; returns
        the records that changed; forgets the resolutions read more than ``ENDED_FOR`` ago (``ENDED``) by
        ``events``, the event time (default ``now``): they were read at event times, and a quiet period ended on
        the wall clock (``clock: wall``) while catching up a backlog a day old must not forget them at once -- a
        firing record of an episode read after its resolution would open an incident nothing resolves."""
        out = []
        ix = self.index(state)
        self._forget_ended(state, now if events is None else events)
        for iid in sorted(i for i, due in ix.until.items() if now >= due):  # members whose promised end passed
            inc = state.get(PREFIX + iid)
            if inc is None:
                ix.until.pop(iid, None)
                continue
            for m in inc["members"].values():
                if m["status"] == "firing" and m.get("until") is not None and now >= m["until"]:
                    m["status"], m["endsAt"] = "resolved", m["until"]
                    inc["updatedAt"] = max(inc["updatedAt"], m["until"])
            out.append(self.record(inc))  # first: it caches the ranking on the incident, which is then saved
            self._save(inc, state)
        for iid in sorted(i for i, due in ix.held.items() if now >= due):
            inc = state.get(PREFIX + iid)
            if inc is None:
                ix.held.pop(iid, None)
                continue
            del inc["holdUntil"]
            # ranked now, on every member that came meanwhile: the ranking kept from the 50th member (a larger one is
            # ranked again only as it grows) put a pod's workload first when its node's alert came after 60 pods'
            rec = self.record(inc, final=True)
            self._notify(inc, rec, now)
            self._save(inc, state)
            out.append(rec)
        for iid in sorted(ix.quiet):
            inc = state.get(PREFIX + iid)
            if inc is None:
                continue
            ms = inc["members"].values()
            if inc.get("over") or any(m["status"] == "firing" for m in ms):
                continue  # a member, or an alert it could not keep, still fires
            last = max([m["endsAt"] or inc["updatedAt"] for m in ms] + [inc["updatedAt"]])
            if now >= last + self.quiet:
                inc["status"], inc["resolvedAt"] = "resolved", last
                rec = self.record(inc, final=True)
                self._notify(inc, rec, now)
                out.append(rec)
                self._drop(inc, state, members=True)
        return out

    # ------------------------------------------------------------ helpers

    def ended(self, alert: Alert, state: Mapping) -> bool:
        """Is this firing record of an episode whose resolution was read already (same or earlier ``startsAt``)?  A
        firing record that promises an end past that resolution (the Watchdog sent again) is news, not a replay."""
        e = state.get(ENDED + alert.fingerprint)
        return e is not None and alert.startsAt <= e[0] and (alert.endsAt is None or alert.endsAt <= e[1])

    def _remember_end(self, alert: Alert, state: MutableMapping, now: float) -> None:
        key = ENDED + alert.fingerprint
        old = state.get(key)
        if old is not None and old[0] > alert.startsAt:
            return  # a later episode of it has ended already
        ix = self.index(state)
        state[key] = [alert.startsAt, alert.endsAt or now, now]
        if old is None:  # else its heap entry stands for it (pushed again with this time when it comes up)
            ix.n_ended += 1
            heapq.heappush(ix.ended, (now, alert.fingerprint))

    def _forget_ended(self, state: MutableMapping, now: float) -> None:
        ix = self.index(state)
        while ix.ended and (ix.ended[0][0] + ENDED_FOR <= now or ix.n_ended > MAX_ENDED):
            at, fp = heapq.heappop(ix.ended)
            e = state.get(ENDED + fp)
            if e is None:
                continue
            if e[2] > at:  # read again since: it comes up again when that read is the earliest
                heapq.heappush(ix.ended, (e[2], fp))
                continue
            del state[ENDED + fp]
            ix.n_ended -= 1

    def _over_ended(self, alert: Alert, state: MutableMapping, now: float) -> None:
        """The resolution of an alert a full incident could not keep (``over``): one reason less to stay open."""
        fp = alert.fingerprint
        ix = self.index(state)
        iid = ix.over.pop(fp, None)  # by fingerprint: its topology may no longer lead there (a restart, a merge)
        inc = state.get(PREFIX + iid) if iid else None
        if inc is None or fp not in (inc.get("over") or ()):
            return
        del inc["over"][fp]
        end = alert.endsAt or now
        inc["updatedAt"] = max(inc["updatedAt"], end)  # its quiet period counts from this end
        for kept in (inc.get("outside") or {}).values():
            if fp in kept:
                kept[fp] = {**kept[fp], "status": "resolved", "endsAt": end}
        self._save(inc, state)

    def _save(self, inc: dict, state: MutableMapping) -> None:
        state[PREFIX + inc["id"]] = inc  # assigned back: a store saves what is assigned, not what is mutated
        self.index(state).settle(inc)

    def _drop(self, inc: dict, state: MutableMapping, members: bool) -> None:
        if members:
            for fp in inc["members"]:
                if state.get("mem|" + fp) == inc["id"]:
                    del state["mem|" + fp]
        if PREFIX + inc["id"] in state:
            del state[PREFIX + inc["id"]]
        self.index(state).close(inc["id"], inc["cluster"], inc.get("over") or ())
        if OPEN in state:  # written by earlier versions
            del state[OPEN]

    def candidates(self, inc: dict, final: bool = False) -> list[dict]:
        """The incident's ranked candidates (top 10), kept on the incident (``ranked``) with the member count they
        were ranked at.  Membership only grows, so an unchanged count is an unchanged ranking.  An incident of up
        to ``RERANK_ALL`` members is ranked again on every change; a larger one when it has grown by
        ``RERANK_GROWTH`` since (and when it resolves or its hold is released, ``final``): ranking is super-linear in the members, and a
        storm (every pod of a node) would otherwise rank hundreds of members again for every alert.  Kept in the
        state, so a restarted worker ranks at the same points as one that never stopped."""
        n = len(inc["members"])
        done = inc.get("ranked")
        if done is not None and (done["n"] == n or (not final and n > RERANK_ALL and n < done["n"] * RERANK_GROWTH)):
            return done["candidates"]
        cands = rank(inc["members"], self.reach, self.window)[:10]
        inc["ranked"] = {"n": n, "candidates": cands}
        return cands

    def record(self, inc: dict, final: bool = False) -> dict:
        """The ``incidents`` topic record (plain JSON, ``v: 1``)."""
        ms = inc["members"]
        cands = self.candidates(inc, final)
        workloads = sorted({f"{m['labels'].get('namespace', '')}/{m['labels']['workload']}"
                            for m in ms.values() if m["labels"].get("workload")})
        top = cands[0] if cands else None
        rec = {
            "v": VERSION, "kind": "incident", "id": inc["id"], "cluster": inc["cluster"], "status": inc["status"],
            "title": (f"{top['entity']}: {top['cause']} ({len(ms)} alerts)" if top else inc["id"]),
            "openedAt": format_time(inc["openedAt"]), "updatedAt": format_time(inc["updatedAt"]),
            "resolvedAt": format_time(inc["resolvedAt"]),
            "candidates": [{**c, "firstAt": format_time(c["firstAt"])} for c in cands[:10]],
            "blastRadius": {
                "workloads": workloads,
                "namespaces": sorted({m["labels"]["namespace"] for m in ms.values() if m["labels"].get("namespace")}),
                "owners": sorted({m["labels"]["owner"] for m in ms.values() if m["labels"].get("owner")}),
                "nodes": sorted({m["labels"]["node"] for m in ms.values() if m["labels"].get("node")}),
            },
            "members": sorted(ms),
            "alerts": {"firing": sum(m["status"] == "firing" for m in ms.values()),
                       "resolved": sum(m["status"] == "resolved" for m in ms.values()),
                       "dropped": inc.get("dropped", 0)},
            "links": inc.get("links", []),
        }
        if inc.get("mergedInto"):
            rec["mergedInto"] = inc["mergedInto"]
        if inc.get("sent"):  # receivers told per incident (routes with incidents: true) and as what
            rec["notified"] = {r: v["role"] for r, v in sorted(inc["sent"].items())}
        return rec


def _overflow(inc: dict, fp: str, m: Mapping, ix: Index) -> None:
    """Member ``m`` (fingerprint ``fp``) that the full incident cannot keep: counted (``dropped``); while it fires the
    incident stays open (``over``), and each receiver told of it keeps it (``outside``) to be told the end with it."""
    inc["dropped"] += 1
    if m["status"] == "firing":
        _still_firing(inc, [(fp, m["labels"])], ix)
    for r in m.get("to", ()):
        _keep_outside(inc, r, fp, m)


def _keep_outside(inc: dict, r: str, fp: str, m: Mapping) -> None:
    """Receiver ``r`` was told of alert ``fp`` that the incident does not keep: kept for it (at most MAX_MEMBERS per
    receiver), so its end notice lists every alert it was told of, not only the first."""
    kept = inc.setdefault("outside", {}).setdefault(r, {})
    if len(kept) < MAX_MEMBERS:
        kept.setdefault(fp, m)


def _still_firing(inc: dict, items: Iterable[tuple[str, Mapping]], ix: Index) -> None:
    """Record alerts the incident could not keep that still fire (``over``: fingerprint -> labels, at most
    MAX_MEMBERS: past that, one may still fire when the incident resolves), and index them (``Index.keep_over``)."""
    over = inc.setdefault("over", {})
    for fp, labels in items:
        if len(over) < MAX_MEMBERS or fp in over:
            over[fp] = dict(labels)
            ix.keep_over(inc["id"], inc["cluster"], fp, labels)


def _over_items(inc: Mapping) -> list[tuple[str, Mapping]]:
    """(fingerprint, labels) of the alerts the incident could not keep that fire."""
    return sorted((inc.get("over") or {}).items())


def _audience(inc: Mapping) -> tuple[dict, dict[str, list[str]]]:
    """(the alerts its receivers are told of by fingerprint, receiver -> their fingerprints): the members each
    receiver was handed, and the alerts a full incident could not keep but told a receiver of (``outside``)."""
    ms = inc["members"]
    to: dict[str, list[str]] = {}
    for fp in sorted(ms):
        for r in ms[fp].get("to", ()):
            to.setdefault(r, []).append(fp)
    outside = inc.get("outside")
    if outside:
        ms = dict(ms)
        for r, kept in sorted(outside.items()):
            for fp, m in sorted(kept.items()):
                ms.setdefault(fp, m)
                if fp not in to.get(r, ()):
                    to.setdefault(r, []).append(fp)
    return ms, to


def _member(alert: Alert) -> dict:
    """A firing alert as an incident keeps it (a member)."""
    return {"labels": dict(alert.labels), "status": "firing", "startsAt": alert.startsAt, "endsAt": None,
            "source": alert.source, "summary": alert.annotations.get("summary", "")}


def incident_note(inc: Mapping, rec: Mapping, receiver: str, role: str, status: str, seq: int, fps: list[str],
                  now: float, key_id: str | None = None) -> dict:
    """A ``notifications`` record (the alerting stage's shape, ``alerts.grouping.notification``) for one receiver
    of an incident: its own alerts, each annotated with the incident, and the incident itself (``incident``).
    ``key_id``: the incident the receiver was first told of (its group key stays that one's after a merge)."""
    key = f"incident:{key_id or inc['id']}"
    cands = rec.get("candidates") or []
    top = cands[0] if cands else {}
    cause = f"{top['entity']}: {top['cause']}" if top else "?"
    b = rec["blastRadius"]
    # what every integration shows (webhook commonAnnotations, Slack and e-mail lines): the incident in words
    said = {"incident": inc["id"], "incident_role": role, "probable_cause": cause,
            "incident_evidence": "; ".join(top.get("evidence", [])),
            "incident_other_causes": "; ".join(f"{c['entity']}: {c['cause']} ({c['score']:.2f})" for c in cands[1:3]),
            "blast_radius": (f"{len(b['workloads'])} workloads in {len(b['namespaces'])} namespaces; owners: "
                             f"{_some(b['owners'])}; nodes: {_some(b['nodes'])}")}
    alerts = []
    for fp in fps:
        m = inc["members"][fp]
        st = "resolved" if status == "resolved" else m["status"]
        ann = {**(m.get("ann") or ({"summary": m["summary"]} if m.get("summary") else {})),
               **said}
        alerts.append({"v": VERSION, "kind": "alert", "labels": m["labels"], "annotations": ann, "status": st,
                       "startsAt": format_time(m["startsAt"]),
                       "endsAt": format_time(m["endsAt"] if m["endsAt"] is not None else (inc["resolvedAt"]
                                                                                          if st == "resolved" else None)),
                       "fingerprint": fp, "source": m.get("source", ""), "generatorURL": ""})
    alerts.sort(key=lambda a: (a["status"] != "firing", a["startsAt"], a["fingerprint"]))
    h = hashlib.blake2b(f"{key}\x00{receiver}\x00{seq}".encode(), digest_size=12)
    # a storm's incident (500 members over hundreds of nodes) made a note of several MB: over what a Kafka record
    # holds, it was dead-lettered and its receiver never told. Cut as an alert group's is: firing first, the totals said
    return fit({
        "v": 1, "kind": "notification", "id": h.hexdigest(), "receiver": receiver, "groupKey": key,
        "groupLabels": {"incident": inc["id"]}, "status": status, "alerts": alerts, "time": format_time(now),
        "incident": {"id": rec["id"], "role": role, "title": rec["title"], "status": rec["status"],
                     "cluster": rec["cluster"], "openedAt": rec["openedAt"], "resolvedAt": rec["resolvedAt"],
                     "probableCause": cause,
                     "candidates": [{k: c[k] for k in ("entity", "cause", "score", "evidence")} for c in cands[:3]],
                     "blastRadius": rec["blastRadius"], "alerts": rec["alerts"]},
    }, RECORD_LIMIT - len(key.encode()) - NOTE_MARGIN)


def _some(names: list[str], at_most: int = 10) -> str:
    """A list in words, the first ``at_most`` and how many more (every alert of a note repeats it).

    >>> _some([]), _some(["a", "b"]), _some([f"n{i}" for i in range(12)], 3)
    ('-', 'a, b', 'n0, n1, n2 and 9 more')
    """
    if not names:
        return "-"
    head = ", ".join(names[:at_most])
    return head if len(names) <= at_most else f"{head} and {len(names) - at_most} more"


# ---------------------------------------------------------------- reading them (kubesight incidents list | show)

def render_list(records: Iterable[Mapping]) -> str:
    """One line per incident (the latest record of each), newest first."""
    rows = sorted(records, key=lambda r: (r.get("openedAt") or "", r["id"]), reverse=True)
    lines = [f"{'ID':<12}  {'STATUS':<8}  {'OPENED':<24}  {'CLUSTER':<10}  {'ALERTS':>6}  PROBABLE CAUSE"]
    for r in rows:
        top = (r.get("candidates") or [{}])[0]
        cause = f"{top.get('entity', '?')}: {top.get('cause', '?')} ({top.get('score', 0):.2f})" if top else "?"
        lines.append(f"{r['id']:<12}  {r['status']:<8}  {r.get('openedAt') or '':<24}  {r.get('cluster') or '-':<10}  "
                     f"{len(r.get('members', [])):>6}  {cause}")
    return "\n".join(lines)


def render(r: Mapping, candidates: int = 3) -> str:
    """The evidence chain of one incident, readable in ten seconds: the cause, why, what else, who is hit."""
    a = r.get("alerts", {})
    head = (f"incident {r['id']}  {r['status'].upper()}  cluster {r.get('cluster') or '-'}  opened {r.get('openedAt')}"
            + (f"  resolved {r['resolvedAt']}" if r.get("resolvedAt") else "")
            + f"  ({len(r.get('members', []))} alerts: {a.get('firing', 0)} firing, {a.get('resolved', 0)} resolved"
            + (f"; {a['dropped']} more it could not keep" if a.get("dropped") else "") + ")")
    lines = [head]
    if r.get("mergedInto"):
        lines.append(f"merged into incident {r['mergedInto']}")
    cands = r.get("candidates") or []
    for i, c in enumerate(cands[:candidates]):
        label = "PROBABLE CAUSE" if i == 0 else f"or #{i + 1}"
        lines.append(f"{label}: {c['entity']} -- {c['cause']} (score {c['score']:.2f})")
        for e in c.get("evidence", []):
            lines.append(f"    - {e}")
    if len(cands) > candidates:
        lines.append(f"({len(cands) - candidates} more candidates: " + ", ".join(c["entity"] for c in cands[candidates:]) + ")")
    b = r.get("blastRadius", {})
    lines.append(f"BLAST RADIUS: {len(b.get('workloads', []))} workloads in {len(b.get('namespaces', []))} namespaces; "
                 f"owners: {', '.join(b.get('owners', [])) or '-'}; nodes: {', '.join(b.get('nodes', [])) or '-'}")
    if b.get("workloads"):
        lines.append("    workloads: " + ", ".join(b["workloads"]))
    if r.get("links"):
        lines.append("LINKED BY: " + "; ".join(r["links"][-5:]))
    if r.get("notified"):
        lines.append("NOTIFIED: " + ", ".join(f"{k} ({'the incident' if v == CAUSE else 'a notice'})"
                                              for k, v in r["notified"].items()))
    lines.append("MEMBERS: " + " ".join(r.get("members", [])))
    return "\n".join(lines)
