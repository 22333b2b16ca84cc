"""``kubesight remediate``: alerts -> Node conditions, Node Events and the rule packs' opt-in actions.

It consumes the ``alerts`` topic and, for an alert whose rule declares them (``node_condition``,
``node_event``, ``actions``; see rules/README.md) and whose labels name a node:

- **conditions**, node-problem-detector style: the condition is True (rule's reason, the alert's
  summary as message) while at least one alert holding it fires, False (``ok_reason``) when the last
  one resolves or the node reboots (its bootID changes). Written with server-side apply on the
  ``nodes/status`` subresource, field manager ``kubesight``: other managers' conditions are untouched.
- **events**: one Kubernetes Event on the Node when the alert starts firing (one-off problems).
- **actions**: cordon, taint, label, drain (cordon + evictions through the Eviction API; a 429 from a
  PodDisruptionBudget is reported and retried; as ``kubectl drain``, a pod no controller re-creates or
  with an emptyDir volume is kept, holding the drain, unless the action opts in). Dry-run by default
  (``settings.remediation``); a kill switch; never more than ``max_nodes`` / ``max_percent`` nodes within
  ``window``, nor while ``max_unschedulable_percent`` of the nodes already take no pods (cordoned or
  tainted by anyone); never the last Ready schedulable node of a pool; never a node created after the
  alert started (re-created under the same name); never for an alert resolved in the same poll (at start,
  the whole backlog is one) or past its endsAt, nor (Events too) one whose record is older than
  ``max_alert_age``. An action the API server failed on a transient error (429, 5xx) is retried with
  backoff, through the same checks, until it is done, its alert resolves or is ``max_alert_age`` old; the
  retries are rebuilt from the trail at start (and when a replica wins the Lease), so an alert that fired once
  (an event rule, a kernel Xid) is not left to come again.

Every step, refusal, condition and event is one record on the ``actions`` topic (key: node) with the
alert that caused it: the audit trail *and* the remediator's state. On start it reads the whole topic
back, so a restart or a replay of alerts never repeats an action: an action is keyed by (alert
fingerprint, startsAt, action); once done it is never done again for that alert, so a person's
uncordon after kubesight's cordon stands (it is noted once in the trail). kubesight also writes what it
did into the node annotation ``kubesight.io/remediation`` in the same patch as the change, so an
action whose record was lost in a crash is found there and recorded, not redone; a drain is noted there
only when its evictions are done (its cordon as ``<key>|cordoned``), so one that failed or crashed
half-way is resumed when its alert comes again.

Several clusters may share one kubesight (a collector each, the same topics); one remediator runs per cluster, on its
own API server, with ``settings.cluster`` naming it. It acts only on the alerts whose ``cluster`` label is its own (an
alert without one is its own: a single cluster needs no label), in a consumer group of its own (``consumer_group``:
sharing one, the clusters' remediators split the alerts between them), and its trail records carry ``cluster``: read
back, another cluster's records are skipped, so its nodes' state and actions never count toward this one's limits (a
record written without the field, by an earlier version, is this cluster's). The Lease lives in each cluster's own
API server: the replicas of different clusters never elect one leader between them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import orjson

from core.kafkaclient import client_config
from core.records import Alert, decode, format_time, parse_time
from core.retry import backoff
from core.settings import Settings
from rules.ruleset import RuleSet

log = logging.getLogger("kubesight.remediation")

MANAGER = "kubesight"
ANNOTATION = "kubesight.io/remediation"  # JSON {action key: time} of what kubesight did to this node
PDB_REFUSAL = "disruption budget"  # in the Eviction API's 429 when a PodDisruptionBudget refuses
DISRUPTIVE = ("cordon", "drain")  # and taints with NoSchedule / NoExecute
RBAC_HINT = "apply deploy/kubernetes/remediation-rbac.yaml"
FORBIDDEN_ALERT = "KubesightRemediationForbidden"
FORBIDDEN_REPEAT = 43200.0  # s: a missing permission still met is said (log line, alert) again after this long; its
# alert promises to end 2x this after (endsAt), so it resolves a day after the permission stopped failing
EPISODE_FORGET = 15 * 86400.0  # s: what was done, refused or noted for an alert episode is forgotten this long after
# the episode was last handled or acted on: past the alerts topic's retention (7 d) plus a segment's roll (7 d), no
# record of the episode can be read again, so forgetting it can never repeat an action
SWEEP_EVERY = 3600.0  # s: how often (at most) the episodes are looked over
DRAIN_ERROR_REPEAT = 900.0  # s: the same error of a pending drain's retries goes into the trail again after this long
RETRY_FIRST, RETRY_MAX = 10.0, 300.0  # s: an action failed on a transient API error is tried again after 10 s, doubling
RETRY_FOR = 3600.0  # s: how long such an action is retried when max_alert_age is 0 (otherwise until the alert is that old)
RETRY_QUEUE = 1000  # actions waiting for a retry at most: past it a failure is recorded, not retried
RESUME_GAP = 0.2  # s: retries rebuilt from the trail at start are due at least this far apart (no burst at start)
CATCH_UP = 30.0  # s: at start, the alerts topic's backlog is read (at most this long) and handled as one batch
LEASE_NAME, LEASE_NAMESPACE = "kubesight-remediation", "kubesight"  # the Lease the replicas elect a leader on
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 15.0, 10.0, 2.0  # s: client-go's leaderelection defaults
ACTION_EVENTS = ("done", "failed", "refused", "blocked")  # action outcomes posted as an Event on the Node
KUBE_TIMEOUT = 30.0  # s: every API call of the remediator: a hung call (a half-open connection) ends as an error
LEASE_TIMEOUT = 5.0  # s: every Lease call, below the renew deadline (at most half of it): a hung one is a failed try
STALL = 2 * KUBE_TIMEOUT  # s: a leader whose work loop shows no progress this long stops renewing (the Lease lapses)


def forbidden_alert(settings: Settings, msg: str, now: float, node: str | None = None, cause: str = "") -> Alert:
    """The ``KubesightRemediationForbidden`` alert of a missing permission (on a node's write, or on the Lease: no
    node). It has no resolution of its own: it ends when its endsAt passes unless said again (Alertmanager's rule)."""
    labels = {"alertname": FORBIDDEN_ALERT, "severity": "warning", "cluster": settings.cluster, "owner": "platform",
              **({"node": node} if node else {})}
    what = f"act on node {node}" if node else "remediate (leader election)"
    return Alert(labels=labels, startsAt=now, endsAt=now + 2 * FORBIDDEN_REPEAT, source="remediation",
                 annotations={"summary": f"kubesight cannot {what}: {msg}", "cause": cause})


def consumer_group(settings: Settings) -> str:
    """The remediator's consumer group on the alerts topic: one per cluster, as the alerts topic is shared by the
    clusters and a group splits it between its members (with one group, each cluster's remediator read only part of
    its own alerts). The cluster ``default`` (settings without one: a single cluster) keeps the name it always had,
    and so its committed offsets.

    >>> s = Settings()
    >>> consumer_group(s), consumer_group(s.model_copy(update={"cluster": "eu-1"}))
    ('kubesight-remediation', 'kubesight-remediation-eu-1')
    """
    return f"{settings.app_id}-remediation" + ("" if settings.cluster == "default" else f"-{settings.cluster}")


def trail_key(settings: Settings, rec: dict) -> bytes:
    """The key of a record of the actions topic: ``<cluster>/<node>``, as the clusters share the topic and their nodes
    may have the same names.

    >>> trail_key(Settings().model_copy(update={"cluster": "eu-1"}), {"node": "n1"})
    b'eu-1/n1'
    """
    return f"{settings.cluster}/{rec.get('node') or ''}".encode()


def _event_name(node: str, key: str) -> str:
    """The Event's metadata.name: the node and a short hash of what it says (an action key and outcome, or a rule's
    event key), so that posting it again (a new leader, the record of the first post lost) is a 409, not a second
    Event: generateName made each post a new one.

    >>> _event_name("n1", "fp|1.000|cordon|done")
    'n1.ks-926a8d00d11e'
    """
    return f"{node[:230].rstrip('.-')}.ks-{hashlib.sha256(key.encode()).hexdigest()[:12]}"  # a DNS subdomain, <= 253


def _episode(key: str) -> str:
    """The alert episode of an action key ``fingerprint|startsAt|what``."""
    return "|".join(key.split("|", 2)[:2])


def _said(said: tuple | None, msg: str, now: float) -> tuple | None:
    """The (error, when said) to keep for a retry that failed with ``msg`` at ``now``: ``said`` itself (the same
    object: not said again) when the same error was said within ``DRAIN_ERROR_REPEAT``, else a new pair (say it).

    >>> first = _said(None, "503", 0.0)
    >>> _said(first, "503", 60.0) is first, _said(first, "503", 900.0) is first, _said(first, "500", 60.0) is first
    (True, False, False)
    """
    if said is not None and said[0] == msg and now < said[1] + DRAIN_ERROR_REPEAT:
        return said
    return (msg, now)


def _transient(exc: Exception) -> bool:
    """An API error worth trying again: throttled (429), the server failing (5xx), unreachable, conflicts that kept
    coming; not a refusal that stays (403 is ``Forbidden``, 4xx such as 422 an invalid change).

    >>> from kubernetes.client import ApiException
    >>> _transient(ApiException(status=429)), _transient(ApiException(status=503)), _transient(ApiException(status=422))
    (True, True, False)
    """
    from kubernetes.client import ApiException

    if isinstance(exc, Forbidden):
        return False
    return not isinstance(exc, ApiException) or exc.status is None or exc.status == 429 or exc.status >= 500



class Forbidden(Exception):
    """The API server refused (403): kubesight lacks a verb the remediation RBAC grants."""


class NotLeader(BaseException):  # noqa: N818 - a stop, not an error
    """Raised by a write (to the cluster or a topic) of a replica that does not hold the Lease (lost it mid-batch).

    A ``BaseException``, as ``KeyboardInterrupt``: the remediator's ``except Exception`` handlers record an API
    failure in the trail and queue a retry, which a replica that is not leader must not do; it goes up to the Runner,
    which leaves the consumer group without committing, the same as a crash the trail and the node annotation are
    made to survive (the next leader reads them back, and the uncommitted alerts again)."""


class Kube:
    """The few API calls remediation makes, on a ``kubernetes`` ApiClient; dicts in and out."""

    gate: Callable[[], bool] | None = None  # leader election: False -> every write raises NotLeader
    progress: Callable[[], None] | None = None  # called as each API call ends: the leader's watchdog sees its work go on

    def __init__(self, api_client):
        from kubernetes import client

        self.api = api_client
        self.core = client.CoreV1Api(api_client)

    def _writing(self, what: str) -> None:
        """Checked just before each write: a leader whose renew deadline passed stops at once, mid-batch too."""
        if self.gate is not None and not self.gate():
            raise NotLeader(f"not leader: {what} not written")

    def _call(self, what: str, fn, *args, **kw):
        from kubernetes.client import ApiException

        try:
            # with a timeout: an API server that accepts and never answers would hold the leader's loop for good
            resp = fn(*args, _preload_content=False, _request_timeout=KUBE_TIMEOUT, **kw)
        except ApiException as exc:
            if exc.status == 403:
                raise Forbidden(f"forbidden: {what} ({RBAC_HINT})") from None
            raise
        finally:
            if self.progress is not None:
                self.progress()
        return orjson.loads(resp.data) if resp.data else {}

    def node(self, name: str) -> dict | None:
        from kubernetes.client import ApiException

        try:
            return self._call(f"get nodes/{name}", self.core.read_node, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def nodes(self) -> list[dict]:
        return self._call("list nodes", self.core.list_node)["items"]

    def patch_node(self, name: str, body: dict) -> dict:
        self._writing(f"patch nodes/{name}")
        return self._call(f"patch nodes/{name}", self.core.patch_node, name, body,
                          _content_type="application/merge-patch+json")

    def apply_conditions(self, name: str, conditions: list[dict]) -> dict:
        self._writing(f"patch nodes/{name}/status")
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": {"conditions": conditions}}
        return self._call(f"patch nodes/{name}/status", self.core.patch_node_status, name, body,
                          field_manager=MANAGER, force=True, _content_type="application/apply-patch+yaml")

    def event(self, body: dict) -> dict:
        self._writing("create events")
        return self._call("create events", self.core.create_namespaced_event, "default", body)

    def pods_on(self, node: str) -> list[dict]:
        return self._call("list pods", self.core.list_pod_for_all_namespaces,
                          field_selector=f"spec.nodeName={node}")["items"]

    def evict(self, ns: str, name: str) -> int:
        """201 evicted, 429 refused (a PodDisruptionBudget), 404 gone. A 429 whose body is not the budget's refusal
        ("Cannot evict pod as it would violate the pod's disruption budget") is the API server throttling: raised, an
        error to try again, not a budget holding the drain."""
        from kubernetes.client import ApiException

        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}}
        self._writing(f"create pods/eviction {ns}/{name}")
        try:
            self._call(f"create pods/eviction {ns}/{name}", self.core.create_namespaced_pod_eviction, name, ns, body)
            return 201
        except ApiException as exc:
            if exc.status == 404 or (exc.status == 429 and PDB_REFUSAL in str(exc.body or "")):
                return exc.status
            raise


def _now_iso(t: float) -> str:
    return format_time(t)


def _ready(node: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or ())


def _schedulable(node: dict) -> bool:
    return not (node.get("spec") or {}).get("unschedulable")


def _takes_pods(node: dict) -> bool:
    """Schedulable and without a NoSchedule or NoExecute taint: a node new pods can land on."""
    return _schedulable(node) and not any(t.get("effect") in ("NoSchedule", "NoExecute")
                                          for t in (node.get("spec") or {}).get("taints") or ())


def _seconds(v, default: float) -> float:
    """A duration of an action as the trail keeps it (JSON: "1h", or seconds)."""
    from core.durations import parse_duration

    if v is None:
        return default
    return float(v) if isinstance(v, int | float) else parse_duration(v)


def _cordoned(key: str) -> str:
    """The annotation's note that a drain's cordon was made (its evictions not yet all done): the drain's own key
    is noted only when it completes, so a drain that failed or crashed half-way is resumed, not taken as done."""
    return key + "|cordoned"


def _done_map(node: dict) -> dict:
    raw = ((node.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    try:
        return orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}


def _action_id(a) -> str:
    return a.type + (f":{a.key}" if getattr(a, "key", None) else "")


def _kept(pod: dict, action: dict) -> str | None:
    """Why a drain does not evict this pod (None: it does): one no controller re-creates (no controller
    ownerReference: a bare pod, a hand-started job's pod) is gone for good once evicted, and an emptyDir's data is
    lost, so both need the drain's opt-in (``evict_unreplicated``, ``delete_emptydir_data``), as ``kubectl drain``
    needs --force and --delete-emptydir-data.

    >>> _kept({"metadata": {}, "spec": {}}, {})
    'no controller re-creates it (drain: evict_unreplicated)'
    >>> rs = {"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "controller": True}]}}
    >>> _kept({**rs, "spec": {"volumes": [{"name": "s", "emptyDir": {}}]}}, {"delete_emptydir_data": True}) is None
    True
    """
    if not action.get("evict_unreplicated") and not any(
            o.get("controller") for o in (pod.get("metadata") or {}).get("ownerReferences") or ()):
        return "no controller re-creates it (drain: evict_unreplicated)"
    if not action.get("delete_emptydir_data") and any(
            "emptyDir" in v for v in (pod.get("spec") or {}).get("volumes") or ()):
        return "emptyDir data would be lost (drain: delete_emptydir_data)"
    return None


def _action_dict(a) -> dict:
    return a.model_dump(mode="json")


def _disruptive(a) -> bool:
    return a.type in DISRUPTIVE or (a.type == "taint" and a.effect in ("NoSchedule", "NoExecute"))


class Remediator:
    """The decisions, on one Kubernetes API and one publish function; state rebuilt from ``history``
    (the records of the actions topic, oldest first). Not thread-safe: one caller."""

    def __init__(self, settings: Settings, rules: RuleSet, kube: Kube, publish: Callable[[dict], None],
                 history: Iterable[dict] = (), publish_alert: Callable[[Alert], None] | None = None,
                 now: Callable[[], float] = time.time, hold: bool = False):
        self.settings, self.cfg, self.kube, self.publish, self.now = (
            settings, settings.remediation, kube, publish, now)
        self.publish_alert = publish_alert
        self.by_origin = {r.origin: r for r in rules.rules}
        self.by_alert = {r.alert: r for r in rules.rules}
        self.done: dict[tuple, float | None] = {}  # (key, dry_run) -> when it was done
        self.refused: dict[tuple, str] = {}  # (key, dry_run) -> last refusal reason
        self.noted: set[tuple] = set()  # (key, dry_run) whose human uncordon is in the trail
        self.acted: list[tuple[float, str, bool]] = []  # (time, node, dry_run) of actions, for the limits
        self.holders: dict[tuple, set] = {}  # (node, condition type) -> fingerprints of firing alerts
        self.holder_says: dict[tuple, dict] = {}  # (node, condition type) -> holder -> (reason, message), as holders
        self.conds: dict[str, dict] = {}  # node -> {type: condition} kubesight wrote (or would write)
        self.boot: dict[str, str] = {}  # node -> bootID when its conditions were set
        self.drains: dict[tuple, dict] = {}  # (key, dry_run) -> pending drain record
        self.drain_tried: dict[tuple, float] = {}  # (key, dry_run) -> last retry of a pending drain (paced by retry)
        self.drain_error: dict[tuple, tuple] = {}  # (key, dry_run) -> (error of its retries, when first said)
        self.unwritten: dict[tuple, tuple] = {}  # (node, condition type) -> a condition write that failed: retried
        self.retrying: dict[tuple, dict] = {}  # (key, dry_run) -> an action failed on a transient error: retried
        self.forbidden_said: dict[str, float] = {}  # missing-permission message -> when it was last said
        self.episodes: dict[str, float] = {}  # episode of done/refused/noted keys -> when last handled or acted on
        self.event_failures = 0  # action Events the API server did not take (the actions stand)
        self.event_said: tuple | None = None  # (error, when logged) of the last such failure
        # hold: the Runner's, the retries rebuilt from the trail wait until the alerts' backlog is read (release())
        self.held = hold
        self._resumed_at: float | None = None  # when the last retry rebuilt from the trail was tried
        self._swept = now()
        # while the trail is read back: (key, dry_run) -> its last record while waiting for a retry, and the episodes
        # (fingerprint, startsAt as written) the trail says resolved; made into retries by _resume, then dropped
        self._pending: dict[tuple, dict] | None = {}
        self._over: set[tuple] = set()
        for rec in history:
            try:
                self.learn(rec)
            except (KeyError, TypeError, AttributeError) as exc:  # one odd record of the trail never stops start-up
                log.warning("actions: skipping a record without %s: %s", exc, str(rec)[:200])
        pending, self._pending = self._pending, None
        self._resume(pending)
        self._over = set()

    # ------------------------------------------------------------ state from the trail

    def ours(self, alert: Alert) -> bool:
        """The alert is of this remediator's cluster: its ``cluster`` label is ``settings.cluster``, or it has none (a
        single cluster's alerts need not say). Another cluster's node of the same name is not this one's."""
        return (alert.labels.get("cluster") or self.settings.cluster) == self.settings.cluster

    def learn(self, rec: dict) -> None:
        """One record of the trail (read back at start, or just written). The actions topic is shared by the clusters:
        a record of another cluster (its ``cluster``) is skipped: its nodes, conditions and actions are not this
        cluster's, and counted toward the limits they refused this cluster's own nodes. A record without the field
        was written before it was added, by this cluster's remediator (a single cluster)."""
        if (rec.get("cluster") or self.settings.cluster) != self.settings.cluster:
            return
        kind, dr = rec.get("kind"), bool(rec.get("dry_run"))
        if kind in ("action", "event") and isinstance(rec.get("key"), str):
            self.episodes[_episode(rec["key"])] = self.now()  # a trail read at start: kept EPISODE_FORGET from now
        if self._pending is not None:  # the trail read back: what waits for a retry, which alerts are over
            self._waiting(kind, rec, dr)
        if kind == "action":
            k, out = (rec["key"], dr), rec.get("outcome")
            if out != "retry-failed" and not (out == "failed" and rec.get("retry_in")):
                self.retrying.pop(k, None)  # done, refused, abandoned, failed for good: no more retries
            if out in ("done", "dry-run", "recovered"):
                self.done[k] = rec.get("t")
                self.acted.append((rec["t"], rec["node"], dr))
                self.drains.pop(k, None)
            elif out == "blocked":
                self.drains[k] = rec
                self.acted.append((rec["t"], rec["node"], dr))
            elif out == "refused":
                self.refused[k] = rec.get("reason", "")
            elif out in ("failed", "abandoned"):
                self.drains.pop(k, None)
                if rec.get("changed"):  # the cordon of a drain that failed afterwards: an action all the same
                    self.acted.append((rec["t"], rec["node"], dr))
            elif out == "respected":
                self.noted.add(k)
                self.drains.pop(k, None)
        elif kind == "condition" and not dr and rec.get("outcome") != "failed":  # a failed write changed nothing
            c = rec["condition"]
            self.holders[(rec["node"], c["type"])] = set(rec.get("holders") or ())
            says = rec.get("says")
            self.holder_says[(rec["node"], c["type"])] = {fp: tuple(v) for fp, v in says.items()} \
                if isinstance(says, dict) else {}
            self.conds.setdefault(rec["node"], {})[c["type"]] = c
            if rec.get("boot_id"):
                self.boot[rec["node"]] = rec["boot_id"]
        elif kind == "event" and rec.get("outcome") in ("done", "dry-run"):
            self.done[(rec["key"], dr)] = rec.get("t")
        elif kind == "event" and rec.get("outcome") == "refused":
            self.refused[(rec["key"], dr)] = rec.get("reason", "")

    def _waiting(self, kind, rec: dict, dr: bool) -> None:
        """One record of the trail read back: an action's last record is what says whether it still waits for a
        retry (``failed``/``retry-failed`` with ``retry_in``: a transient error), and any record of a resolved alert
        (its condition cleared, its retries abandoned) ends the episode."""
        alert = rec.get("alert")
        if isinstance(alert, dict) and alert.get("status") == "resolved":
            self._over.add((alert.get("fingerprint"), alert.get("startsAt")))
        if kind != "action":
            return
        k, out = (rec["key"], dr), rec.get("outcome")
        if out in ("failed", "retry-failed") and rec.get("retry_in"):
            self._pending[k] = rec
        elif out != "retry-failed":  # a drain's own retry-failed (no retry_in) is the drain's, which pending drains keep
            self._pending.pop(k, None)

    def _resume(self, pending: dict[tuple, dict]) -> None:
        """The retry queue rebuilt from the trail (it lived in memory: after a restart or a change of leader a failed
        action was retried only when its alert came again, never for an alert published once). An action whose last
        record waits for a retry goes back in the queue unless its alert resolved (the trail says so here; the
        backlog read at start, handled before the first tick, abandons it as ever), its endsAt passed, it is too old
        to be retried (``max_alert_age``, or ``RETRY_FOR`` without one, from when the alert's record was written:
        ``alert_at``; a record written before that field, from the alert's startsAt: sooner, never later), dry_run
        changed, the rules no longer ask for it, or its alert is another cluster's (a record of an earlier version,
        which acted on every cluster's alerts, has no ``cluster`` of its own). Its backoff goes on from the tries recorded (the last record:
        the same error is said once per ``DRAIN_ERROR_REPEAT``, so a lower bound), due when that record said, and
        the retries due at start at least ``RESUME_GAP`` apart: a restart does not send them to the API server at
        once. Retried through ``retry_actions`` and ``_action``: the kill switch, the limits, the node's checks and
        the Lease, as before the restart."""
        now, over, resumed, skipped = self.now(), self.cfg.max_alert_age or RETRY_FOR, [], 0
        for k, rec in pending.items():
            d = rec.get("alert") or {}
            if (d.get("fingerprint"), d.get("startsAt")) in self._over or k in self.done or k in self.drains:
                skipped += 1
                continue
            try:
                fp, starts, what = k[0].split("|", 2)
                alert = Alert(labels=dict(d["labels"]), annotations=dict(d.get("annotations") or {}),
                              startsAt=float(starts), endsAt=rec.get("alert_ends_at"), source=d.get("source") or "")
                rule = self.rule_of(alert)
                a = next((x for x in (rule.actions if rule else ()) if _action_id(x) == what), None)
                at = float(rec.get("alert_at", alert.startsAt))
                tries, due = max(int(rec.get("tries") or 1), 1), float(rec["t"]) + float(rec["retry_in"])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                log.warning("actions: a failed action not retried, its record lacks %s: %s", exc, str(rec)[:200])
                skipped += 1
                continue
            if (a is None or not self.ours(alert) or alert.fingerprint != fp or self._key(alert, what) != k[0]
                    or k[1] != self.cfg.dry_run or self.node_of(alert) != rec.get("node") or now - at > over
                    or (alert.endsAt is not None and alert.endsAt <= now)):
                skipped += 1
                continue
            resumed.append((due, k, {"alert": alert, "action": a, "at": at, "tries": tries,
                                     "said": (rec.get("reason") or "", float(rec["t"]))}))
        resumed.sort(key=lambda x: x[0])
        slot = now - RESUME_GAP
        for due, k, q in resumed[-RETRY_QUEUE:]:  # past the queue's bound, the newest
            q["next"] = slot = max(due, slot + RESUME_GAP)
            q["resumed"] = True  # tried one per retry_actions call, RESUME_GAP apart, once released
            self.retrying[k] = q
        if resumed or skipped:
            log.info("remediate: %d failed action(s) of the trail wait for a retry again; %d not (resolved, done, "
                     "too old, or no longer in the rules)", len(self.retrying), skipped)

    def _emit(self, rec: dict) -> dict:
        rec = {"v": 1, "t": self.now(), "time": _now_iso(self.now()), "cluster": self.settings.cluster, **rec}
        pending = rec.get("kind") == "action" and (rec.get("key"), bool(rec.get("dry_run"))) in self.drains
        if rec.get("kind") == "action":
            # the Event before its trail record: a leader that loses the Lease between the two leaves the record to
            # the next one, which posts the same Event again under its fixed name (a 409: there once); after the
            # record, the Event was lost with the Lease
            self._action_event(rec, pending)
        self.publish(rec)
        self.learn(rec)
        line = f"{rec['kind']} {rec.get('outcome')} node={rec.get('node')} " + (
            f"{rec['action']['type']} " if rec.get("action") else "") + (
            f"{rec['condition']['type']}={rec['condition']['status']} " if rec.get("condition") else "") + (
            f"alert={rec['alert']['labels'].get('alertname')} " if rec.get("alert") else "") + (
            "dry-run " if rec.get("dry_run") else "") + (rec.get("reason") or "")
        (log.warning if rec.get("outcome") in ("refused", "failed", "blocked", "retry-failed") else log.info)("%s", line.strip())
        return rec

    def _forbidden(self, node: str, exc: Forbidden, alert: Alert | None) -> None:
        """One clear log line and one alert per missing permission, never a crash."""
        msg, now = str(exc), self.now()
        said = self.forbidden_said.get(msg)
        if said is not None and now < said + FORBIDDEN_REPEAT:
            return
        for old in [m for m, t in self.forbidden_said.items() if now >= t + FORBIDDEN_REPEAT]:
            del self.forbidden_said[old]  # bounded: only what was said within the repeat period
        self.forbidden_said[msg] = now
        log.error("kubesight remediate: %s", msg)
        if self.publish_alert is not None:
            self.publish_alert(forbidden_alert(self.settings, msg, now, node,
                                               alert.labels.get("alertname", "") if alert else ""))

    # ------------------------------------------------------------ alerts in

    def rule_of(self, alert: Alert):
        return self.by_origin.get(alert.source) or self.by_alert.get(alert.labels.get("alertname", ""))

    def node_of(self, alert: Alert) -> str | None:
        for name in self.cfg.node_labels:
            if alert.labels.get(name):
                return alert.labels[name]
        return None

    def handle(self, alert: Alert, at: float | None = None) -> None:
        """One alert of the alerts topic; ``at``: when its record was written (its age refuses stale actions). The
        topic is shared by the clusters: another cluster's alert is none of this one's business (``ours``), though
        its node may have the same name as one here."""
        if not self.ours(alert):
            return
        rule = self.rule_of(alert)
        if rule is None or not (rule.actions or rule.node_condition or rule.node_event):
            return
        node = self.node_of(alert)
        if not node:
            return
        ep = _episode(self._key(alert, ""))
        if ep in self.episodes:  # seen again (a resolution, a replay): its memory is kept EPISODE_FORGET from now
            self.episodes[ep] = self.now()
        # a firing record whose endsAt has passed (read late: a backlog) is its episode's end, as in Alertmanager
        firing = alert.status == "firing" and not (alert.endsAt is not None and alert.endsAt <= self.now())
        if rule.node_condition is not None:
            self._condition(alert, node, rule.node_condition, firing)
        if not firing:
            self._abandon_drains(alert)
            self._abandon_retries(alert)
            return
        age = self.now() - at if at is not None else 0.0
        if rule.node_event is not None:
            self._event(alert, node, rule.node_event, age)
        for a in rule.actions:
            self._action(alert, node, a, age)

    def handle_batch(self, batch: list[tuple[Alert, float | None]]) -> None:
        """The alerts of one poll, in order: a firing record whose resolution (same fingerprint and startsAt) is in
        the same poll is not acted on (read late, a backlog: the episode is over; its resolution is still handled).
        One alert the API could not serve never stops the others."""
        over = {(a.fingerprint, a.startsAt) for a, _ in batch if a.status != "firing"}
        for a, at in batch:
            if a.status == "firing" and (a.fingerprint, a.startsAt) in over:
                continue
            try:
                self.handle(a, at=at)
            except Exception:  # noqa: BLE001 - logged; the next alert goes on
                log.exception("remediation of %s failed", a.labels.get("alertname"))

    @staticmethod
    def _alert_dict(alert: Alert) -> dict:
        d = alert.to_dict()
        return {k: d[k] for k in ("labels", "annotations", "status", "startsAt", "fingerprint", "source")}

    @staticmethod
    def _key(alert: Alert, what: str) -> str:
        return f"{alert.fingerprint}|{alert.startsAt:.3f}|{what}"

    # ------------------------------------------------------------ conditions

    def _condition(self, alert: Alert, node: str, nc, firing: bool) -> None:
        k = (node, nc.type)
        holders = self.holders.setdefault(k, set())
        fp = alert.fingerprint
        cur = self.conds.get(node, {}).get(nc.type)
        says = self.holder_says.setdefault(k, {})  # holder -> (reason, message): what the condition says for it
        if firing:
            if fp in holders and cur and cur["status"] == "True":
                return
            holders.add(fp)
            says[fp] = (nc.reason, alert.annotations.get("summary") or alert.labels.get("alertname", ""))
            cond = {"type": nc.type, "status": "True", "reason": says[fp][0], "message": says[fp][1]}
        else:
            if fp not in holders:
                return
            holders.discard(fp)
            gone = says.pop(fp, None)
            if holders:
                cond = dict(cur) if cur else None
                left = next((says[h] for h in sorted(holders) if h in says), None)
                if cond is not None and left is not None and gone is not None and (cond["reason"], cond["message"]) == gone:
                    cond["reason"], cond["message"] = left  # it said the resolved alert: now a holder still firing
            else:
                cond = self._ok(nc.type, nc.ok_reason, nc.ok_message)
        self._write_conditions(node, nc.type, cond, alert, holders)

    @staticmethod
    def _ok(ctype: str, reason: str | None, message: str | None) -> dict:
        return {"type": ctype, "status": "False", "reason": reason or f"No{ctype}",
                "message": message or f"no {ctype}"}

    def _write_conditions(self, node: str, ctype: str, cond: dict | None, alert: Alert | None, holders: set,
                          why: str = "") -> None:
        dry = self.cfg.dry_run
        says = self.holder_says.get((node, ctype), {})
        rec = {"kind": "condition", "node": node, "holders": sorted(holders), "dry_run": dry,
               "says": {fp: list(says[fp]) for fp in sorted(holders) if fp in says},  # read back by learn()
               "alert": self._alert_dict(alert) if alert else None, "reason": why}
        if cond is None:
            return
        now = _now_iso(self.now())
        prev = self.conds.get(node, {}).get(ctype)
        cond = {**cond, "lastHeartbeatTime": now,
                "lastTransitionTime": prev["lastTransitionTime"] if prev and prev["status"] == cond["status"]
                and prev.get("lastTransitionTime") else now}
        rec["condition"] = cond
        if dry:
            self._emit({**rec, "outcome": "dry-run"})
            return
        mine = {**self.conds.get(node, {}), ctype: cond}
        try:
            got = self.kube.apply_conditions(node, list(mine.values()))
        except Forbidden as exc:
            self._emit({**rec, "outcome": "failed", "reason": str(exc)})
            self._forbidden(node, exc, alert)
            return
        except Exception as exc:  # noqa: BLE001 - reported, and retried at the next tick
            self._emit({**rec, "outcome": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]})
            self.unwritten[(node, ctype)] = (cond, alert, set(holders), why)
            return
        self.unwritten.pop((node, ctype), None)
        rec["boot_id"] = ((got.get("status") or {}).get("nodeInfo") or {}).get("bootID", "")
        self._emit({**rec, "outcome": "done"})

    def retry_conditions(self) -> None:
        """Condition writes that failed (the API server answered 5xx, or was away): written again, the latest of each
        (node, type); a failed write is not learnt, so until then the condition is what the node last got."""
        for (node, ctype), (cond, alert, holders, why) in list(self.unwritten.items()):
            if self.cfg.dry_run:
                self.unwritten.clear()
                return
            self._write_conditions(node, ctype, cond, alert, holders, why=why or "retry of a failed write")

    def check_reboots(self) -> None:
        """Clear the True conditions of nodes whose bootID changed since they were set (a reboot)."""
        for node, conds in list(self.conds.items()):
            if not any(c["status"] == "True" for c in conds.values()) or not self.boot.get(node):
                continue
            try:
                n = self.kube.node(node)
            except Exception:  # noqa: BLE001 - next tick
                continue
            boot = ((n or {}).get("status") or {}).get("nodeInfo", {}).get("bootID", "") if n else ""
            if n is None or (boot and boot != self.boot[node]):
                for ctype, c in list(conds.items()):
                    if c["status"] == "True":
                        self.holders[(node, ctype)] = set()
                        self.holder_says.pop((node, ctype), None)
                        if n is not None:
                            rule = next((r.node_condition for r in self.by_alert.values()
                                         if r.node_condition is not None and r.node_condition.type == ctype), None)
                            ok = self._ok(ctype, rule.ok_reason if rule else None, rule.ok_message if rule else None)
                            self._write_conditions(node, ctype, ok, None, set(), why="node rebooted")
                if n is None:
                    self.conds.pop(node, None)

    # ------------------------------------------------------------ events

    def _event(self, alert: Alert, node: str, ne, age: float = 0.0) -> None:
        """``age``: how old the alert's record is; past ``max_alert_age`` no Event is posted (an old episode read
        from a backlog would say "now" of a problem long over)."""
        dry = self.cfg.dry_run
        key = self._key(alert, "event")
        if (key, dry) in self.done:
            return
        msg = alert.annotations.get("summary") or alert.labels.get("alertname", "")
        rec = {"kind": "event", "node": node, "key": key, "dry_run": dry, "alert": self._alert_dict(alert),
               "event": {"reason": ne.reason, "type": ne.type, "message": msg}}
        if self.cfg.max_alert_age and age > self.cfg.max_alert_age:
            self._refuse((key, dry), rec, f"stale: the alert's record is {age:.0f}s old (settings.remediation."
                         f"max_alert_age {self.cfg.max_alert_age:g}s): no Event for an episode read this late")
            return
        if dry:
            self._emit({**rec, "outcome": "dry-run"})
            return
        try:
            self._post_event(node, key, ne.reason, ne.type, msg)
        except Forbidden as exc:
            self._emit({**rec, "outcome": "failed", "reason": str(exc)})
            self._forbidden(node, exc, alert)
            return
        except Exception as exc:  # noqa: BLE001
            self._emit({**rec, "outcome": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]})
            return
        self._emit({**rec, "outcome": "done"})

    def _post_event(self, node: str, key: str, reason: str, etype: str, message: str) -> None:
        """One core/v1 Event on the Node (the rules' ``node_event`` and the actions' outcomes): uid = the node's name,
        as the kubelet's, which ``kubectl describe node`` looks for; named after ``key`` (``_event_name``): a 409
        AlreadyExists is that Event posted before (by this leader or the last, its record lost), so done; raises any
        other answer of the API server."""
        from kubernetes.client import ApiException

        now = _now_iso(self.now())
        try:
            self.kube.event({"apiVersion": "v1", "kind": "Event",
                             "metadata": {"name": _event_name(node, key), "namespace": "default"},
                             "involvedObject": {"kind": "Node", "name": node, "uid": node, "apiVersion": "v1"},
                             "reason": reason, "message": message[:1024], "type": etype, "count": 1,
                             "firstTimestamp": now, "lastTimestamp": now,
                             "source": {"component": MANAGER, "host": node}, "reportingComponent": MANAGER})
        except ApiException as exc:
            if exc.status != 409:
                raise
            log.debug("remediate: Event %s on node %s posted before (409): not again", reason, node)

    def _action_event(self, rec: dict, pending: bool) -> None:
        """The outcome of an action as an Event on its Node, for ``kubectl describe node`` (as draino's
        CordonSucceeded / DrainFailed): done is Normal ``Kubesight<Type>``; failed, refused and a drain blocked are
        Warning ``Kubesight<Type>Failed/Refused/Blocked``. None in dry-run (it changes nothing in the cluster, Events
        included, as the rules' ``node_event``), none for a stale refusal (an episode read that late is no news of
        the node now), none for a drain's retry still blocked (``pending``: said when it first was, then at its end).
        ``recovered`` (done by the last leader, which lost the Lease before its record and Event) is posted as done,
        under the same name: the Event is there once, whichever leader posts it. Best effort: a failure is counted and logged (once per error per ``DRAIN_ERROR_REPEAT``), never the
        action's."""
        out = "done" if rec.get("outcome") == "recovered" else rec.get("outcome")
        if (rec.get("dry_run") or self.cfg.dry_run or out not in ACTION_EVENTS or (out == "blocked" and pending)
                or (out == "refused" and str(rec.get("reason", "")).startswith("stale:"))):
            return
        what = rec["action"]["type"]
        reason = "Kubesight" + what.capitalize() + ("" if out == "done" else out.capitalize())
        alert = rec.get("alert") or {}
        name = (alert.get("labels") or {}).get("alertname", "")
        summary = (alert.get("annotations") or {}).get("summary") or ""
        said = rec.get("reason") if out != "done" else None  # a refusal or failure for another reason is news
        msg = (f"kubesight {what} {out}" + (f": {rec['reason']}" if rec.get("reason") else "") +
               f"; alert {name}" + (f" ({summary})" if summary else "") + f", fingerprint {alert.get('fingerprint')}")
        try:
            self._post_event(rec["node"], f"{rec['key']}|{out}" + (f"|{said}" if said else ""), reason,
                             "Normal" if out == "done" else "Warning", msg)
        except NotLeader:
            return
        except Exception as exc:  # noqa: BLE001 - the action stands; the trail is its record
            self.event_failures += 1
            err, said = f"{type(exc).__name__}: {exc}"[:300], self.event_said
            self.event_said = _said(said, err, self.now())
            if self.event_said is not said:
                log.warning("remediate: Event %s on node %s not posted (%d so far; the action stands): %s",
                            reason, rec["node"], self.event_failures, err)

    # ------------------------------------------------------------ actions

    def _limits(self, node: str, dry: bool, nodes: list[dict]) -> str | None:
        since = self.now() - self.cfg.window
        if self.acted and self.acted[0][0] < since:  # only the limits' window is ever read: older actions go
            self.acted = [a for a in self.acted if a[0] >= since]
        recent = {n for t, n, d in self.acted if t >= since and d == dry}
        if node in recent:
            return None
        if len(recent) + 1 > self.cfg.max_nodes:
            return (f"limit: kubesight already acted on {len(recent)} node(s) within {self.cfg.window:g}s "
                    f"(settings.remediation.max_nodes {self.cfg.max_nodes})")
        total = len(nodes) or 1
        share = 100.0 * (len(recent) + 1) / total
        if share > self.cfg.max_percent:
            return (f"limit: acting on {len(recent) + 1} of {total} nodes within {self.cfg.window:g}s is {share:.0f}% "
                    f"(settings.remediation.max_percent {self.cfg.max_percent:g})")
        return None

    def _held(self, node: dict, nodes: list[dict]) -> str | None:
        """The cap on nodes taking no pods at once (cordoned or tainted NoSchedule/NoExecute, by anyone): the
        limits above count actions per window, and what kubesight cordons stays cordoned until a person says."""
        cap = self.cfg.max_unschedulable_percent
        cap = self.cfg.max_percent if cap is None else cap
        name = node["metadata"]["name"]
        held = {n["metadata"]["name"] for n in nodes if not _takes_pods(n)}
        if name in held:
            return None
        total = len(nodes) or 1
        share = 100.0 * (len(held) + 1) / total
        if share > cap:
            return (f"limit: {len(held)} of {total} nodes already take no pods (cordoned or tainted); one more is "
                    f"{share:.0f}% (settings.remediation.max_unschedulable_percent {cap:g})")
        return None

    def _pool(self, node: dict) -> str:
        labels = (node.get("metadata") or {}).get("labels") or {}
        for name in self.cfg.pool_labels:
            if labels.get(name):
                return f"{name}={labels[name]}"
        return "(unlabelled)"

    def _last_ready(self, node: dict, nodes: list[dict]) -> str | None:
        pool = self._pool(node)
        name = node["metadata"]["name"]
        peers = [n for n in nodes if n["metadata"]["name"] != name and self._pool(n) == pool
                 and _ready(n) and _takes_pods(n)]  # a peer cordoned or tainted NoSchedule takes no pods
        if not peers:
            return f"refused: {name} is the last Ready schedulable node of pool {pool}"
        return None

    def _action(self, alert: Alert, node: str, a, age: float = 0.0) -> None:
        """``age``: how old the alert's record is; past ``max_alert_age`` the action is refused (stale)."""
        dry = self.cfg.dry_run
        key = self._key(alert, _action_id(a))
        k = (key, dry)
        rec = {"kind": "action", "node": node, "key": key, "action": _action_dict(a), "dry_run": dry,
               "alert": self._alert_dict(alert)}
        if self.cfg.max_alert_age and age > self.cfg.max_alert_age:
            if k not in self.done:
                self._refuse(k, rec, f"stale: the alert's record is {age:.0f}s old (settings.remediation."
                             f"max_alert_age {self.cfg.max_alert_age:g}s): a replay or a backlog, the cluster may "
                             "have moved on")
            return
        if k in self.done or k in self.drains:
            self._respect_person(k, rec, a)
            return
        if self.cfg.kill_switch:
            return self._refuse(k, rec, "kill switch on (settings.remediation.kill_switch)")
        try:
            n = self.kube.node(node)
            if n is None:
                return self._refuse(k, rec, f"node {node} not found")
            md = n.get("metadata") or {}
            rec["node_uid"] = md.get("uid")  # which node of that name was acted on
            created = md.get("creationTimestamp")
            if created and parse_time(created) > alert.startsAt:  # replaced (spot, auto-repair) since the fault
                return self._refuse(k, rec, f"node re-created: {node} (uid {md.get('uid')}) was created {created}, "
                                    f"after the alert started ({format_time(alert.startsAt)}): not the node it is about")
            if not dry and key in _done_map(n):  # done before a crash lost its record
                self._emit({**rec, "outcome": "recovered", "reason": "found in the node's annotation "
                            f"{ANNOTATION}: done before a restart, not repeated"})
                return
            cordon = _done_map(n).get(_cordoned(key)) if a.type == "drain" and not dry else None
            if cordon is not None:  # cordoned, then failed or crashed before its evictions were done
                if _schedulable(n):
                    self._emit({**rec, "outcome": "respected", "reason": "uncordoned by a person after kubesight's "
                                "cordon: the unfinished drain is abandoned, not cordoning again for this alert"})
                else:
                    self._drain(k, rec, started=parse_time(cordon), note="resumed: cordoned earlier, not finished")
                return
            nodes = self.kube.nodes()
        except Forbidden as exc:
            self._refuse(k, rec, str(exc))
            self._forbidden(node, exc, alert)
            return
        except Exception as exc:  # noqa: BLE001 - the API server failing (5xx, 429, unreachable): recorded, retried
            return self._failed(k, rec, exc, alert, a, age)
        why = self._limits(node, dry, nodes) or (
            (self._held(n, nodes) or self._last_ready(n, nodes)) if _disruptive(a) else None)
        if why:
            return self._refuse(k, rec, why)
        if dry:
            self._emit({**rec, "outcome": "dry-run", "reason": "would " + a.type})
            return
        changed = None
        try:
            changed = self._apply(n, key, a)
            if a.type == "drain":
                self._drain(k, rec, started=self.now(), note=changed)
                return
        except Forbidden as exc:
            self._emit({**rec, "outcome": "failed", "reason": str(exc), **({"changed": changed} if changed else {})})
            self._forbidden(node, exc, alert)
            return
        except Exception as exc:  # noqa: BLE001 - in the trail; a transient error is retried (tick), a replay too
            # the drain's cordon, when it was made, counts toward the limits (learn): the node was changed
            return self._failed(k, rec, exc, alert, a, age, changed)
        self._emit({**rec, "outcome": "done", "reason": changed})

    def _failed(self, k: tuple, rec: dict, exc: Exception, alert: Alert, a, age: float, changed: str | None = None):
        """An action the API server failed: recorded; on a transient error (429, 5xx, unreachable) queued for
        ``retry_actions`` (the alert is published once per transition, so it may never come again while it fires),
        and, the queue being in memory, rebuilt from this record after a restart (``_resume``).
        A retry's same error goes into the trail again only after ``DRAIN_ERROR_REPEAT``."""
        msg, now = f"{type(exc).__name__}: {exc}"[:500], self.now()
        extra = {"changed": changed} if changed else {}
        q = self.retrying.get(k)
        if not _transient(exc) or (q is None and len(self.retrying) >= RETRY_QUEUE):
            self._emit({**rec, "outcome": "failed", **extra, "reason": msg + (
                "" if not _transient(exc) else f" (not retried: {RETRY_QUEUE} failed actions already wait)")})
            return
        if q is None:
            q = self.retrying[k] = {"alert": alert, "action": a, "at": now - age, "tries": 0, "said": None}
        q["tries"] += 1
        # no jitter (rng None): the trail's retry_in is the schedule _resume rebuilds after a restart
        delay = backoff(q["tries"] - 1, RETRY_FIRST, RETRY_MAX, rng=None)
        q["next"] = now + delay
        said = _said(q["said"], msg, now)
        if said is q["said"]:
            log.debug("retry of %s on %s: %s", rec["action"]["type"], rec["node"], msg)
            return
        q["said"] = said
        # retry_in: tried again then (reason unchanged: the error); tries, retry_in, alert_at and alert_ends_at are
        # what _resume rebuilds the retry from after a restart
        self._emit({**rec, "outcome": "failed" if q["tries"] == 1 else "retry-failed", **extra, "tries": q["tries"],
                    "retry_in": delay, "reason": msg, "alert_at": q["at"],
                    **({"alert_ends_at": alert.endsAt} if alert.endsAt is not None else {})})

    def release(self) -> None:
        """The alerts' backlog is read (a catch-up reached the end offsets): the retries rebuilt from the trail may go.
        Held until then, a retry whose resolution sat unread in the backlog (a catch-up that timed out: the previous
        leader's consumer still in the group) was made though its alert was over."""
        self.held = False

    def retry_actions(self) -> None:
        """Actions failed on a transient error whose backoff passed: tried again through ``_action`` (the limits, the
        node's checks as the first time); abandoned once the alert is ``max_alert_age`` old (or ``RETRY_FOR`` without
        one) or its endsAt passed. A resolution abandons them in ``handle``. While the kill switch is on they wait, as
        a pending drain does (refused, a retry rebuilt from the trail was ended for good). Those rebuilt from the trail
        wait while ``held``, then go one per call and ``RESUME_GAP`` apart (the Runner calls this at each poll: on its
        5 s tick alone, every one due within a tick went out at once)."""
        now = self.now()
        for k, q in list(self.retrying.items()):
            if now < q["next"]:
                continue
            alert, a = q["alert"], q["action"]
            node, age = self.node_of(alert), now - q["at"]
            rec = {"kind": "action", "node": node, "key": k[0], "action": _action_dict(a), "dry_run": k[1],
                   "alert": self._alert_dict(alert)}
            over = self.cfg.max_alert_age or RETRY_FOR
            if k[1] != self.cfg.dry_run or age > over or (alert.endsAt is not None and alert.endsAt <= now):
                self.retrying.pop(k, None)
                self._emit({**rec, "outcome": "abandoned", "tries": q["tries"], "reason": (
                    "dry_run changed since it failed" if k[1] != self.cfg.dry_run else
                    f"the alert is {age:.0f}s old (retried until {over:g}s)" if age > over else "the alert's endsAt passed")
                    + f": the failed action is not retried (last error: {q['said'][0] if q['said'] else '?'})"})
                continue
            if self.cfg.kill_switch:
                continue  # it waits for the switch to go off (max_alert_age still ends it)
            if q.get("resumed"):
                if self.held or (self._resumed_at is not None and now < self._resumed_at + RESUME_GAP):
                    continue
                self._resumed_at, q["resumed"] = now, False  # this call's one: the next, at the next call at the soonest
            self._action(alert, node, a, age)

    def _refuse(self, k: tuple, rec: dict, why: str) -> None:
        if self.refused.get(k) == why:
            return  # said already (a replay)
        self._emit({**rec, "outcome": "refused", "reason": why})

    def _apply(self, n: dict, key: str, a) -> str:
        """One merge patch with the change and the note of it (resourceVersion: optimistic lock)."""
        from kubernetes.client import ApiException

        name = n["metadata"]["name"]
        note = _cordoned(key) if a.type == "drain" else key  # a drain is done only when its evictions are
        for _ in range(5):
            done = {**_done_map(n), note: format_time(self.now())}
            meta = {"resourceVersion": n["metadata"]["resourceVersion"],
                    "annotations": {ANNOTATION: orjson.dumps(done).decode()}}
            spec: dict = {}
            what = ""
            if a.type in ("cordon", "drain"):
                spec["unschedulable"] = True
                what = "cordoned" if _schedulable(n) else "was already unschedulable"
            elif a.type == "taint":
                taints = list((n.get("spec") or {}).get("taints") or ())
                if any(t.get("key") == a.key and t.get("effect") == a.effect for t in taints):
                    what = "taint already present"
                else:
                    taints.append({"key": a.key, "value": a.value, "effect": a.effect,
                                   **({"timeAdded": format_time(self.now())} if a.effect == "NoExecute" else {})})
                    spec["taints"] = taints
                    what = f"tainted {a.key}={a.value}:{a.effect}"
            elif a.type == "label":
                meta["labels"] = {a.key: a.value}
                what = f"labelled {a.key}={a.value}"
            body = {"metadata": meta, **({"spec": spec} if spec else {})}
            try:
                self.kube.patch_node(name, body)
                return what
            except ApiException as exc:
                if exc.status != 409:
                    raise
                n = self.kube.node(name) or n  # someone changed the node meanwhile: read, retry
        raise RuntimeError(f"node {name} kept changing (5 conflicts)")

    def _drain(self, k: tuple, rec: dict, started: float, note: str = "") -> None:
        node = rec["node"]
        evicted, blocked, kept = [], [], {}
        for p in self.kube.pods_on(node):
            md = p["metadata"]
            if md.get("deletionTimestamp") or (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            if "kubernetes.io/config.mirror" in (md.get("annotations") or {}):
                continue
            if any(o.get("kind") == "DaemonSet" for o in md.get("ownerReferences") or ()):
                continue
            pod = f"{md['namespace']}/{md['name']}"
            why = _kept(p, rec["action"])
            if why:  # as kubectl drain without --force / --delete-emptydir-data: never evicted, it holds the drain
                kept[pod] = why
                continue
            code = self.kube.evict(md["namespace"], md["name"])
            (blocked if code == 429 else evicted).append(pod)
        base = {**rec, "evicted": evicted, "started": started}
        if not blocked and not kept:
            self._note_done(node, rec["key"])
            self._emit({**base, "outcome": "done", "reason": f"drained ({note}; {len(evicted)} pod(s) evicted)"})
            return
        held = ([f"eviction refused (429, a PodDisruptionBudget) for {', '.join(blocked)}"] if blocked else []) + [
            f"not evicted: {pod} ({why})" for pod, why in kept.items()]
        blocked = blocked + list(kept)
        timeout = _seconds(rec["action"].get("timeout"), 3600.0)  # the trail keeps "1h": was a TypeError
        if self.now() - started > timeout:
            self._emit({**base, "outcome": "failed", "blocked": blocked, "kept": kept,
                        "reason": f"drain gave up after {timeout:g}s: {'; '.join(held)}"})
            return
        self._emit({**base, "outcome": "blocked", "blocked": blocked, "kept": kept,
                    "reason": f"{'; '.join(held)}; retrying every {_seconds(rec['action'].get('retry'), 30.0):g}s"})

    def _note_done(self, name: str, key: str) -> None:
        """The drain's key into the node's annotation once every pod is out (a lost ``done`` record is then
        recovered, not redone); failing, the trail's record still says it, so only a warning."""
        from kubernetes.client import ApiException

        for _ in range(5):
            try:
                n = self.kube.node(name)
                if n is None:
                    return
                done = {**_done_map(n), key: format_time(self.now())}
                self.kube.patch_node(name, {"metadata": {"resourceVersion": n["metadata"].get("resourceVersion"),
                                                         "annotations": {ANNOTATION: orjson.dumps(done).decode()}}})
                return
            except ApiException as exc:
                if exc.status == 409:
                    continue
                log.warning("drain of %s done, its note in %s not written: %s", name, ANNOTATION, exc)
                return
            except Exception as exc:  # noqa: BLE001 - Forbidden, the API server away: the trail says it
                log.warning("drain of %s done, its note in %s not written: %s", name, ANNOTATION, exc)
                return

    def retry_drains(self) -> None:
        """Pending drains whose retry interval passed: evict again (unless a person uncordoned the node)."""
        for gone in [k for k in self.drain_tried if k not in self.drains]:
            self.drain_tried.pop(gone, None)
            self.drain_error.pop(gone, None)
        for k, rec in list(self.drains.items()):
            now, retry = self.now(), _seconds(rec["action"].get("retry"), 30.0)
            if k[1] or now - max(rec["t"], self.drain_tried.get(k, 0.0)) < retry:  # a failed try waits its turn too
                continue
            base = {x: rec[x] for x in ("kind", "node", "key", "action", "dry_run", "alert")}
            started, timeout = rec.get("started", rec["t"]), _seconds(rec["action"].get("timeout"), 3600.0)
            if now - started > timeout:  # before any API call: an API server failing every try still ends the drain
                err = self.drain_error.get(k)
                self._emit({**base, "outcome": "failed", "started": started, "blocked": rec.get("blocked") or [],
                            "reason": f"drain gave up after {timeout:g}s" + (f" (last try: {err[0]})" if err else
                                                                            f" ({rec.get('reason') or 'blocked'})")})
                continue
            if self.cfg.kill_switch or self.cfg.dry_run:  # switched on since the drain began: it waits, evicts nothing
                self._refuse(k, base, "kill switch on (settings.remediation.kill_switch): the pending drain waits"
                             if self.cfg.kill_switch else "dry_run on: the pending drain waits")
                continue
            self.drain_tried[k] = now
            try:
                n = self.kube.node(rec["node"])
                if n is None:
                    self._emit({**base, "outcome": "failed", "reason": "node gone"})
                elif _schedulable(n):
                    self._emit({**base, "outcome": "respected", "reason": "node uncordoned by a person during the "
                                "drain: drain abandoned, not cordoning again for this alert"})
                else:
                    self._drain(k, base, started=rec.get("started", rec["t"]), note="retry")
            except Forbidden as exc:
                self._emit({**base, "outcome": "failed", "reason": str(exc)})
            except Exception as exc:  # noqa: BLE001 - tried again after retry; in the trail, once per DRAIN_ERROR_REPEAT
                msg = f"{type(exc).__name__}: {exc}"[:500]
                said = self.drain_error.get(k)
                self.drain_error[k] = _said(said, msg, now)
                if self.drain_error[k] is not said:
                    self._emit({**base, "outcome": "retry-failed", "started": started,
                                "reason": f"drain retry failed: {msg}; retrying every {retry:g}s until {timeout:g}s"})
                else:
                    log.debug("drain retry of %s: %s", rec["node"], msg)

    def _abandon_drains(self, alert: Alert) -> None:
        """The alert resolved (a canceled maintenance, an ended fault): its pending drains stop evicting; the node
        stays cordoned (kubesight never uncordons)."""
        episode = self._key(alert, "")
        for k, rec in list(self.drains.items()):
            if k[0].startswith(episode):
                base = {x: rec[x] for x in ("kind", "node", "key", "action", "dry_run", "alert")}
                self._emit({**base, "outcome": "abandoned",
                            "reason": "the alert resolved: the pending drain stops (the node stays cordoned)"})

    def _abandon_retries(self, alert: Alert) -> None:
        """The alert resolved: its actions waiting for a retry are not tried again."""
        episode = self._key(alert, "")
        for k, q in list(self.retrying.items()):
            if k[0].startswith(episode):
                rec = {"kind": "action", "node": self.node_of(alert), "key": k[0], "action": _action_dict(q["action"]),
                       "dry_run": k[1], "alert": self._alert_dict(alert)}
                self._emit({**rec, "outcome": "abandoned", "tries": q["tries"],
                            "reason": "the alert resolved: the failed action is not retried"})

    def _respect_person(self, k: tuple, rec: dict, a) -> None:
        """Already done for this alert: never again. Note once if a person undid the cordon since."""
        if k[1] or a.type not in DISRUPTIVE or k in self.noted or k in self.drains:
            return
        try:
            n = self.kube.node(rec["node"])
        except Exception:  # noqa: BLE001
            return
        if n is not None and _schedulable(n):
            self._emit({**rec, "outcome": "respected",
                        "reason": "uncordoned by a person after kubesight's cordon: not cordoning again for this alert"})

    def forget(self) -> None:
        """Forget the episodes last handled or acted on more than ``EPISODE_FORGET`` ago (at most once per
        ``SWEEP_EVERY``): the memory of what was done follows the alerts that can still arrive, not every alert
        ever acted on. Pending drains are left to finish."""
        now = self.now()
        if now < self._swept + SWEEP_EVERY:
            return
        self._swept = now
        old = {ep for ep, t in self.episodes.items() if t < now - EPISODE_FORGET}
        if not old:
            return
        for ep in old:
            del self.episodes[ep]
        for m in (self.done, self.refused):
            for k in [k for k in m if _episode(k[0]) in old]:
                del m[k]
        self.noted = {k for k in self.noted if _episode(k[0]) not in old}

    def tick(self) -> None:
        self.forget()
        self.retry_conditions()
        self.retry_drains()
        self.retry_actions()
        if not self.cfg.dry_run:
            self.check_reboots()


# ---------------------------------------------------------------- leader election (coordination.k8s.io/v1 Lease)


def _micro(t: datetime) -> str:
    """A Lease's MicroTime: RFC 3339 with six fractional digits, as the API server parses it.

    >>> _micro(datetime(2026, 11, 29, 8, 0, 0, 250, tzinfo=UTC))
    '2026-11-29T08:00:00.000250Z'
    """
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderLease:
    """Leader election among the remediator's replicas on one ``coordination.k8s.io/v1`` Lease, as client-go's
    leaderelection (and draino, kured) does: the holder renews it every ``retry`` s; another replica takes it only
    once it has seen the same record unchanged for ``duration`` s by its own monotonic clock (no trust in clocks
    across machines), timed from when its read was *answered* (client-go's observedTime: a read answered late saw the
    record late; timed from before the request, a slow GET let a candidate take the Lease inside its holder's renew
    deadline), or at once when the holder released it (no holder); each write carries the resourceVersion
    read, so of two replicas writing at once one gets 409 Conflict: the other won.

    ``leading()`` is what the remediator asks before each write: True only while the last successful acquire or
    renew, timed from *before* its request, is within ``renew_deadline`` (< ``duration``), so a leader that cannot
    renew (the API server away, a stall) stops acting before any other replica may take the Lease; one that reads
    another holder on the Lease (taken over by hand, or after its own lapse) stops at once. Each Lease call has a
    timeout (``LEASE_TIMEOUT``, at most half the renew deadline): a hung request is a failed try, not a thread
    blocked for good. ``healthy`` (the Runner's watchdog, as client-go's leader-election healthz) is asked before
    each renew: a leader whose work is stuck stops renewing, its Lease lapses and another replica takes over.
    A 403 (the Role missing, or a ``--lease-namespace`` the Role does not cover) never elects: said once per
    ``FORBIDDEN_REPEAT`` (an error line, and ``forbidden`` is called: the Runner's alert), not a warning per try.

    Written here rather than with ``kubernetes.leaderelection`` (client 37): its ``LeaseLock`` builds a
    ``CoordinationV1Api()`` on the global default configuration (not the ApiClient with the remediator's token), its
    ``run()`` calls ``onstarted_leading`` in a daemon thread nothing can stop and returns for good once leadership is
    lost (no way back to candidate), and a leader keeps doing its work until the renew loop gives up, with no check a
    write could make before it is sent."""

    def __init__(self, api_client, namespace: str = LEASE_NAMESPACE, name: str = LEASE_NAME,
                 identity: str | None = None, duration: float = LEASE_DURATION, renew_deadline: float = RENEW_DEADLINE,
                 retry: float = RETRY_PERIOD, clock: Callable[[], float] = time.monotonic):
        from kubernetes import client

        if not retry < renew_deadline < duration:
            raise ValueError("leader election needs retry < renew_deadline < duration")
        self.coord = client.CoordinationV1Api(api_client)
        self.namespace, self.name = namespace, name
        self.identity = identity or f"{socket.gethostname()}_{secrets.token_hex(4)}"
        self.duration, self.renew_deadline, self.retry, self.clock = duration, renew_deadline, retry, clock
        self._renewed: float | None = None  # monotonic time before the last successful acquire/renew request
        self._seen: tuple | None = None  # the Lease's record last read (holder, renewTime, ...)
        self._seen_at = 0.0  # monotonic time a read first answered it so
        self.holder: str | None = None  # the holder last read (None: none)
        self.timeout = min(LEASE_TIMEOUT, renew_deadline / 2)
        self.healthy: Callable[[], bool] | None = None  # False: the leader's work is stuck, do not renew
        self.forbidden: Callable[[str], None] | None = None  # told of a 403 on the Lease (once per FORBIDDEN_REPEAT)
        self._forbidden_said: float | None = None  # clock() when a 403 on the Lease was last said
        self._stalled = False  # a renew skipped as the work is stuck (said once)

    def leading(self) -> bool:
        r = self._renewed
        return r is not None and self.clock() < r + self.renew_deadline

    def _read(self) -> dict | None:
        from kubernetes.client import ApiException

        try:
            resp = self.coord.read_namespaced_lease(self.name, self.namespace, _preload_content=False,
                                                    _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._refused("get", exc) from None
        return orjson.loads(resp.data)

    def _refused(self, verb: str, exc):
        """A 403 on the Lease as ``Forbidden`` (with what to fix), any other API error as it is."""
        if getattr(exc, "status", None) != 403:
            return exc
        return Forbidden(f"forbidden: {verb} leases {self.namespace}/{self.name} ({RBAC_HINT}; its Role grants them "
                         f"in namespace {LEASE_NAMESPACE}: --lease-namespace or $POD_NAMESPACE must match): "
                         "no replica can lead, nothing is remediated")

    def try_acquire_or_renew(self) -> bool:
        """One try: read the Lease, create it, renew it, or take it over once it expired. True: this replica leads."""
        from kubernetes.client import ApiException

        t0, now = self.clock(), _micro(datetime.now(UTC))
        mine = {"holderIdentity": self.identity, "leaseDurationSeconds": round(self.duration),
                "acquireTime": now, "renewTime": now, "leaseTransitions": 0}
        lease = self._read()
        seen_at = self.clock()  # when the read was answered: the record is known as of then, not of t0
        if lease is None:
            try:
                self.coord.create_namespaced_lease(self.namespace, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace}, "spec": mine},
                    _request_timeout=self.timeout)
            except ApiException as exc:
                if exc.status == 409:  # another replica created it first
                    return False
                raise self._refused("create", exc) from None
            return self._won(t0)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        seen = (holder, spec.get("renewTime"), spec.get("acquireTime"), spec.get("leaseDurationSeconds"))
        if seen != self._seen:
            self._seen, self._seen_at = seen, seen_at
        if holder != self.holder:
            log.info("remediate: the lease %s/%s is held by %s", self.namespace, self.name, holder or "nobody")
            self.holder = holder
        if holder is not None and holder != self.identity:
            self._renewed = None  # someone else holds it: stop acting now, whatever our last renew said
            if seen_at < self._seen_at + float(spec.get("leaseDurationSeconds") or self.duration):
                return False  # not expired by our own clock
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            mine["acquireTime"], mine["leaseTransitions"] = spec.get("acquireTime") or now, transitions
        else:
            mine["leaseTransitions"] = transitions + 1
        lease["spec"] = {**spec, **mine}
        try:  # metadata.resourceVersion: a lock
            self.coord.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 409:  # written meanwhile: another replica took it (or renewed); read again next try
                return False
            raise self._refused("update", exc) from None
        return self._won(t0)  # the holder's own deadline from before its request: never later than the others see

    def _won(self, t0: float) -> bool:
        if self._renewed is None:
            log.info("remediate: %s leads (lease %s/%s)", self.identity, self.namespace, self.name)
        self._renewed, self.holder = t0, self.identity
        return True

    def release(self) -> None:
        """Stop leading and hand the Lease over at once (no holder, duration 1 s), as client-go's ReleaseOnCancel:
        the next replica takes it without waiting for it to expire."""
        if self._renewed is None:
            return
        self._renewed = None  # first: nothing is written as leader after this
        try:
            lease = self._read()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            now = _micro(datetime.now(UTC))
            lease["spec"] = {**lease["spec"], "holderIdentity": None, "leaseDurationSeconds": 1,
                             "acquireTime": now, "renewTime": now}
            self.coord.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=self.timeout)
            log.info("remediate: %s released the lease %s/%s", self.identity, self.namespace, self.name)
        except Exception as exc:  # noqa: BLE001 - it then expires by itself
            log.warning("remediate: the lease %s/%s not released (it expires in %gs): %s", self.namespace,
                        self.name, self.duration, exc)

    def run(self, stop: threading.Event) -> None:
        """Try every ``retry`` s until ``stop``; then release. An API error is a failed try (the deadline decides)."""
        try:
            while not stop.is_set():
                was = self.leading()
                if self.healthy is not None and not self.healthy():  # nor taken again once lapsed: still stuck
                    if not self._stalled:  # not renewed: leading() lapses, another replica takes the Lease over
                        log.error("remediate: %s's work shows no progress: the lease %s/%s is not renewed, another "
                                  "replica takes over", self.identity, self.namespace, self.name)
                    self._stalled = True
                    stop.wait(self.retry)
                    continue
                self._stalled = False
                try:
                    self.try_acquire_or_renew()
                except Forbidden as exc:
                    self._say_forbidden(str(exc))
                except Exception as exc:  # noqa: BLE001 - the API server away: leading() lapses by itself
                    log.warning("remediate: lease %s/%s not acquired or renewed: %s", self.namespace, self.name, exc)
                if was and not self.leading():
                    log.warning("remediate: %s lost the lease %s/%s: it stops acting and is a candidate again",
                                self.identity, self.namespace, self.name)
                stop.wait(self.retry)
        finally:
            self.release()

    def _say_forbidden(self, msg: str) -> None:
        """A 403 on the Lease, tried every ``retry`` s: one error line and one ``forbidden`` call per
        ``FORBIDDEN_REPEAT`` (a permission missing stays missing until someone applies the Role)."""
        now = self.clock()
        if self._forbidden_said is not None and now < self._forbidden_said + FORBIDDEN_REPEAT:
            log.debug("remediate: %s", msg)
            return
        self._forbidden_said = now
        log.error("kubesight remediate: %s", msg)
        if self.forbidden is not None:
            try:
                self.forbidden(msg)
            except Exception as exc:  # noqa: BLE001 - the line above says it all the same
                log.warning("remediate: the %s alert not published: %s", FORBIDDEN_ALERT, exc)



# ---------------------------------------------------------------- the runner (Kafka in and out)


def kube_from(settings: Settings, kubeconfig: str | None = None) -> Kube:
    from collectors.kubernetes.api import api_client

    return Kube(api_client(kubeconfig or settings.remediation.kubeconfig, in_cluster=None))


def load_rules(settings: Settings) -> RuleSet:
    from rules.load import load_packs, pack_paths

    paths = pack_paths(settings)
    return load_packs(paths) if paths else RuleSet.empty()


def read_trail(bootstrap: str, topic: str) -> list[dict]:
    """Every record of the actions topic, oldest first (one partition)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(**client_config(bootstrap, "kafka-python"), enable_auto_commit=False, group_id=None,
                      isolation_level="read_committed", auto_offset_reset="earliest")
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        end = c.end_offsets([tp])[tp]
        out = []
        while c.position(tp) < end:
            for batch in c.poll(timeout_ms=500, max_records=10_000).values():
                for m in batch:
                    if not m.value:
                        continue
                    try:
                        rec = orjson.loads(m.value)
                    except orjson.JSONDecodeError as exc:  # one bad record of the trail never stops remediation
                        log.warning("actions: skipping a record that is not JSON at %d/%d: %s", m.partition,
                                    m.offset, exc)
                        continue
                    if isinstance(rec, dict):
                        out.append(rec)
        return out
    finally:
        c.close()


class Runner:
    """Consume ``alerts`` (consumer group ``consumer_group``: one per cluster), act, write ``actions``; ``stop()``
    ends it.

    With ``lease`` (``kubesight remediate`` makes one unless ``--no-leader-election``) only the replica holding it
    is a member of the consumer group and writes anything: on winning the Lease it reads the trail back (what the
    previous leader did counts toward the limits), joins the group and handles the backlog; on losing it (renew
    deadline passed, the Lease taken over) it stops before its next write, leaves the group without committing
    (the next leader reads those alerts again) and is a candidate again. Without it, every replica acts.

    A watchdog, as client-go's leader-election healthz: the work loop's passes, its API calls and its records are
    its heartbeat; a leader showing none for ``stall`` s (stuck) stops renewing the Lease, which lapses, and another
    replica takes over (it renewed from its other thread before, acting on nothing while nobody else could).

    ``serve()``: its ``/metrics``, ``/health`` and ``/ready`` on ``web_port`` (``core.telemetry.serve_for``), as every
    long-running kubesight process: it changes the cluster, so an SRE must see its failed actions and which replica
    leads without reading the actions topic. The figures (``collect``, read when scraped, nothing on the work loop
    beyond one count per record):

    - ``kubesight_remediation_actions_total`` {kind, result}: the records this replica wrote, kind the action (cordon,
      drain, taint, label) or ``condition``/``event``, result its outcome (done, dry-run, refused, failed, blocked,
      retry-failed, abandoned, recovered, respected);
    - ``kubesight_remediation_leader``: 1 while this replica acts (leads, or no leader election), else 0;
      ``kubesight_remediation_terms_total``: the times it began to;
    - ``kubesight_remediation_retries_pending`` {what=action|drain|condition}: failed actions waiting for a retry,
      drains blocked (a PodDisruptionBudget) and condition writes that failed, in the current term;
    - ``kubesight_remediation_backlog_records_total`` and ``kubesight_remediation_backlog_read``: the alerts' records
      found at start (each term's) and whether that backlog is handled.

    ``/ready``: the broker answers, and this replica is the leader with its consumer running and its work not stalled
    (the watchdog), or a candidate whose election loop runs; a replica that won the Lease but is still reading the
    trail back and joining the group is not ready yet."""

    def __init__(self, settings: Settings, bootstrap: str, kube: Kube, rules: RuleSet | None = None,
                 group: str | None = None, tick_every: float = 5.0, lease: LeaderLease | None = None,
                 stall: float = STALL):
        self.settings, self.bootstrap, self.kube = settings, bootstrap, kube
        self.rules = rules if rules is not None else load_rules(settings)
        self.group = group or consumer_group(settings)
        self.tick_every = tick_every
        self.lease = lease
        self._stop = threading.Event()
        self.ready = threading.Event()
        self.leading = threading.Event()  # set while this replica acts (leader, or no leader election)
        self.caught_up = threading.Event()  # set once the backlog found at start is handled (and committed)
        self.backlog = 0  # records of that backlog
        self.terms = 0  # times this replica began acting (won the Lease)
        self.stall = stall
        self._beat = time.monotonic()  # the work loop's last sign of progress (the watchdog's heartbeat)
        self.written: dict[tuple[str, str], int] = {}  # (kind, result) -> records written (/metrics)
        self.remediator: Remediator | None = None  # the current term's (its pending retries on /metrics)
        self._electing: threading.Thread | None = None  # the Lease's thread (a candidate's /ready)

    def stop(self) -> None:
        self._stop.set()

    def _progress(self) -> None:
        self._beat = time.monotonic()

    def _alive(self) -> bool:
        """The watchdog, asked by the Lease thread before each renew: False while a term's work shows no progress."""
        return not self.leading.is_set() or time.monotonic() - self._beat < self.stall

    def _may_act(self) -> bool:
        return self.lease is None or self.lease.leading()

    def _gate(self) -> None:
        if not self._may_act():
            raise NotLeader("not leader: nothing published")

    def _count(self, rec: dict) -> None:
        """One record written, for ``kubesight_remediation_actions_total``: an action by its type, else its kind."""
        kind = rec.get("kind")
        if kind == "action":
            kind = (rec.get("action") or {}).get("type") or "action"
        k = (str(kind), str(rec.get("outcome")))
        self.written[k] = self.written.get(k, 0) + 1

    def readiness(self) -> tuple[bool, str]:
        """``/ready``'s check: the leader's consumer runs and its work goes on, or a candidate's election loop runs."""
        if self.leading.is_set():
            if not self._alive():
                return False, f"leader, but its work shows no progress for {self.stall:g}s (stalled)"
            return True, f"leader: consuming {self.settings.topic('alerts')}"
        if self.lease is None or not self.ready.is_set():
            return False, "not started" if not self.ready.is_set() else "starting: reading the trail, joining the group"
        if self.lease.leading():
            return False, "won the lease: reading the trail, joining the group"
        electing = self._electing
        if electing is None or not electing.is_alive():
            return False, "candidate whose leader election stopped"
        return True, f"candidate (lease held by {self.lease.holder or 'nobody'})"

    def describe(self):
        return []  # figures read when scraped; an unchecked collector

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        acts = CounterMetricFamily("kubesight_remediation_actions", "records written to the actions topic by this "
                                   "replica, by kind (action type, condition, event) and result (outcome)",
                                   labels=["kind", "result"])
        for (kind, result), n in sorted(dict(self.written).items()):
            acts.add_metric([kind, result], n)
        yield acts
        yield GaugeMetricFamily("kubesight_remediation_leader", "1 while this replica acts (holds the Lease, or runs "
                                "without leader election)", value=1 if self.leading.is_set() else 0)
        yield CounterMetricFamily("kubesight_remediation_terms", "times this replica began acting", value=self.terms)
        rem = self.remediator if self.leading.is_set() else None
        pending = GaugeMetricFamily("kubesight_remediation_retries_pending", "what waits for a retry in this "
                                    "replica's term: failed actions, blocked drains, failed condition writes",
                                    labels=["what"])
        for what, held in (("action", "retrying"), ("drain", "drains"), ("condition", "unwritten")):
            pending.add_metric([what], len(getattr(rem, held)) if rem is not None else 0)
        yield pending
        yield CounterMetricFamily("kubesight_remediation_backlog_records", "records of the alerts topic's backlog "
                                  "read at the start of each term", value=self.backlog)
        yield GaugeMetricFamily("kubesight_remediation_backlog_read", "1 once the backlog found at start is handled",
                                value=1 if self.caught_up.is_set() else 0)

    def serve(self):
        """``/metrics``, ``/health`` and ``/ready`` on ``settings.web_port`` (None: not set, nothing served); the
        server (``.server_address``). Before ``run()``: the probes answer while the trail is read back."""
        from prometheus_client import CollectorRegistry

        from core.telemetry import serve_for

        registry = CollectorRegistry()
        registry.register(self)
        return serve_for(self.settings, self.bootstrap, "kubesight remediate", [registry],
                         {"remediate": self.readiness})

    def run(self) -> None:
        from kafka import KafkaProducer

        from core.topics import ensure_topics

        s = self.settings
        ensure_topics(s, self.bootstrap)
        trail_topic = s.topic("actions")
        producer = KafkaProducer(**client_config(self.bootstrap, "kafka-python"), acks="all", linger_ms=0)

        def publish(rec: dict) -> None:
            self._gate()
            self._progress()
            if self.lease is not None:
                rec = {**rec, "replica": self.lease.identity}  # which replica did it (trail only, not learnt)
            producer.send(trail_topic, key=trail_key(s, rec), value=orjson.dumps(rec)).get(30)
            self._count(rec)

        def publish_alert(a: Alert) -> None:
            self._gate()
            producer.send(s.topic("alerts"), key=a.key(), value=orjson.dumps(a.to_dict())).get(30)

        def publish_forbidden(msg: str) -> None:
            """The Lease forbidden (from the Lease thread): no replica may ever lead, so no leader gate here."""
            a = forbidden_alert(s, msg, time.time(), cause="leader election")
            producer.send(s.topic("alerts"), key=a.key(), value=orjson.dumps(a.to_dict())).add_errback(
                lambda exc: log.warning("remediate: the %s alert not published: %s", FORBIDDEN_ALERT, exc))

        self.kube.progress = self._progress
        electing, elected = None, threading.Event()  # the Lease is kept until the term's work ended, then released
        if self.lease is not None:
            self.kube.gate = self.lease.leading
            self.lease.healthy, self.lease.forbidden = self._alive, publish_forbidden
            electing = threading.Thread(target=self.lease.run, args=(elected,), daemon=True, name="remediation-lease")
            electing.start()
            self._electing = electing
        self.ready.set()
        try:
            while not self._stop.is_set():
                if not self._may_act():
                    self._stop.wait(0.1)  # a candidate: in no consumer group, writing nothing
                    continue
                try:
                    self._lead(publish, publish_alert, producer)
                except NotLeader as exc:
                    log.warning("remediate: stopped acting (%s); a candidate again", exc)
        finally:
            self.leading.clear()
            elected.set()
            if electing is not None:
                electing.join(30)  # it releases the Lease: the next replica takes it at once
            producer.flush()
            producer.close()

    def _lead(self, publish, publish_alert, producer) -> None:
        """One term: the trail read back, the group joined, alerts handled while this replica may act."""
        from kafka import KafkaConsumer

        s = self.settings
        trail = read_trail(self.bootstrap, s.topic("actions"))
        # hold: the retries rebuilt from the trail wait for the backlog (_catch_up, or the polls after it)
        rem = Remediator(s, self.rules, self.kube, publish, trail, publish_alert=publish_alert, hold=True)
        self.remediator = rem
        records, trail = len(trail), None  # learnt: not kept for the term
        consumer = KafkaConsumer(**client_config(self.bootstrap, "kafka-python"), group_id=self.group,
                                 enable_auto_commit=False, isolation_level="read_committed",
                                 auto_offset_reset="earliest", metadata_max_age_ms=30_000)
        try:
            # the topic's partitions known before the group is joined: joined without them, the range assignor gives
            # this member nothing, and it waits for a metadata refresh to join again (a CI run waited past its 60 s)
            consumer.partitions_for_topic(s.topic("alerts"))
            consumer.subscribe([s.topic("alerts")])
            log.info("remediate: %d rule(s) with node effects, dry_run=%s kill_switch=%s, %d trail record(s) read%s",
                     sum(1 for r in self.rules.rules if r.actions or r.node_condition or r.node_event),
                     s.remediation.dry_run, s.remediation.kill_switch, records,
                     f", leader {self.lease.identity}" if self.lease is not None else "")
            self.terms += 1
            self._progress()
            self.leading.set()
            last_tick = 0.0
            ends = self._catch_up(consumer, rem, producer)
            while not self._stop.is_set() and self._may_act():
                self._progress()
                batches = consumer.poll(timeout_ms=200, max_records=500)
                self._gate()  # polled as leader, lost since: not handled, not committed
                rem.handle_batch(self._alerts(batches))  # the poll's alerts together: one resolved in it is not acted on
                if batches:
                    producer.flush()
                    self._gate()  # a batch cut short by NotLeader raised above; this one ended as leader
                    consumer.commit()
                if rem.held:  # the catch-up timed out: the retries of the trail wait until the backlog is read
                    ends = self._reached(consumer, ends)
                    if ends is True:
                        log.info("remediate: the backlog is read: the retries rebuilt from the trail may go")
                        rem.release()
                try:
                    if time.monotonic() - last_tick >= self.tick_every:
                        last_tick = time.monotonic()
                        rem.tick()
                    else:
                        rem.retry_actions()  # each poll: retries rebuilt from the trail one by one, RESUME_GAP apart
                except Exception:  # the API server failing: the next tick tries again
                    log.exception("remediation tick failed")
            if not self._stop.is_set():
                log.warning("remediate: the lease lapsed: stopped acting; a candidate again")
        finally:
            self.leading.clear()
            self.remediator = None  # its state is the next term's to rebuild from the trail
            consumer.close(autocommit=False)

    @staticmethod
    def _alerts(batches: dict) -> list[tuple[Alert, float | None]]:
        """The alerts of a poll (not remediation's own), each with when its record was written."""
        out: list[tuple[Alert, float | None]] = []
        for msgs in batches.values():
            for m in msgs:
                try:
                    rec = decode(m.value)
                except Exception as exc:  # noqa: BLE001 - not ours to judge; skip
                    log.warning("alerts: skipping undecodable record at %d/%d: %s", m.partition, m.offset, exc)
                    continue
                if isinstance(rec, Alert) and rec.source != "remediation":
                    out.append((rec, m.timestamp / 1000.0 if m.timestamp and m.timestamp > 0 else None))
        return out

    def _catch_up(self, consumer, rem: Remediator, producer) -> None:
        """The backlog found at start (a restart, a remediator down for a while) as one batch: polled until the
        positions reach the end offsets of the first assignment (at most ``CATCH_UP``), the latest record of each
        episode kept. Poll by poll, an episode whose firing record and resolution fell into different polls was
        acted on though it was over. Reaching them releases the retries rebuilt from the trail (``Remediator.release``);
        returns the end offsets still to reach (or None: no assignment yet) when it timed out, else True."""
        latest: dict[tuple, tuple[Alert, float | None]] = {}  # (fingerprint, startsAt) -> its latest record
        ends: dict | bool | None = None
        read = 0  # records of this term's backlog
        deadline = time.monotonic() + CATCH_UP
        while not self._stop.is_set() and self._may_act() and time.monotonic() < deadline:
            self._progress()
            batches = consumer.poll(timeout_ms=200, max_records=500)
            for a, at in self._alerts(batches):
                latest.pop((a.fingerprint, a.startsAt), None)  # re-inserted: the batch keeps the records' order
                latest[(a.fingerprint, a.startsAt)] = (a, at)
            read += sum(len(m) for m in batches.values())
            ends = self._reached(consumer, ends)
            if ends is True:
                rem.release()
                break
        else:
            if self._stop.is_set():
                return None  # stopped half-way: nothing handled nor committed (a firing read without its resolution)
            self._gate()  # the lease lapsed half-way: the same, for the next leader
            log.warning("remediate: the backlog was not read within %gs: the rest is handled poll by poll (the "
                        "retries rebuilt from the trail wait for it)", CATCH_UP)
        self.backlog += read
        rem.handle_batch(list(latest.values()))
        if read:
            producer.flush()
            self._gate()
            consumer.commit()
        log.info("remediate: backlog of %d record(s) handled, %d episode(s)", read, len(latest))
        self.caught_up.set()
        return ends

    @staticmethod
    def _reached(consumer, ends):
        """True once the positions reach the end offsets of the first assignment (taken then: ``ends``); else those
        end offsets (None: nothing assigned yet)."""
        if ends is True:
            return True
        parts = consumer.assignment()
        if not parts:
            return ends
        if ends is None:
            ends = consumer.end_offsets(list(parts))
        return True if all(consumer.position(tp) >= ends.get(tp, 0) for tp in parts) else ends


def register(sub, group) -> None:
    p = sub.add_parser("remediate", help="alerts -> Node conditions, Events and opt-in actions (dry-run by default)")
    p.add_argument("--kubeconfig", help="default: settings.remediation.kubeconfig, in-cluster, ~/.kube/config")
    p.add_argument("--lease-namespace", default=None,
                   help=f"namespace of the leader-election Lease {LEASE_NAME} (default: $POD_NAMESPACE, else "
                   f"{LEASE_NAMESPACE}, the namespace remediation-rbac.yaml grants leases in)")
    p.add_argument("--no-leader-election", action="store_true",
                   help="act without holding the Lease: one replica only (dev, tests); two would each apply max_nodes")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import signal

    from core.broker import bootstrap_for

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.load(args.config)
    kube = kube_from(settings, args.kubeconfig)
    lease = None if args.no_leader_election else LeaderLease(
        kube.api, namespace=args.lease_namespace or os.environ.get("POD_NAMESPACE") or LEASE_NAMESPACE)
    r = Runner(settings, bootstrap_for(settings), kube, lease=lease)
    r.serve()  # web_port set: /metrics, /health, /ready (a Deployment that changes the cluster is watched too)
    signal.signal(signal.SIGTERM, lambda *_: r.stop())
    r.run()
    return 0
