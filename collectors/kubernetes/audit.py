"""kube-apiserver audit events -> Event records (``source: k8s-audit``): who exec'd into a pod, cordoned or relabelled
a node, evicted a pod, deleted a namespace or a workload.

The apiserver sends its audit events (``audit.k8s.io/v1`` ``EventList``) to a webhook backend: the intake takes them
at ``POST /audit`` (``collectors/cloud/server.py``, the same server, auth and dead-letter handling as cloud events;
with ``--kubernetes`` the intake also reads each pod's workload and team, ``attach_owners``).
``deploy/kubernetes/audit-policy.yaml`` is the policy that records just these requests; the local control plane
(``deploy/cluster``) runs with it.  Only requests that went through count (a 2xx/3xx answer; an exec refused by RBAC
is the apiserver's business, not an action on the cluster; 101 for a session that switched protocols), at stage
``ResponseComplete`` (or ``ResponseStarted`` for the streaming exec, attach and port-forward, whose response never
completes while the session lasts).  The
control plane's own actors (``DEFAULT_IGNORE``: nodes, the controller-manager's and scheduler's users and every
``kube-system`` service account, whose taints and evictions are already reported as the conditions that cause them)
are left out.

>>> body = orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [{
...     "auditID": "4f2a", "stage": "ResponseComplete", "verb": "patch", "user": {"username": "alice"},
...     "objectRef": {"resource": "nodes", "name": "w1"}, "responseStatus": {"code": 200},
...     "requestObject": {"spec": {"unschedulable": True}}, "stageTimestamp": "2026-11-28T10:00:00.123456Z"}]})
>>> [(e.reason, e.entity.kind, e.entity.node, e.labels["user"], e.time, e.id) for e in events_from_audit(body)]
[('NodeCordoned', 'Node', 'w1', 'alice', 1795860000.123456, 'audit-4f2a-NodeCordoned')]
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

import msgspec
import orjson

from collectors.cloud.event import PayloadError, field_list, field_obj, field_str, json_kind, refusing
from core.records import Entity, Event, RecordError, parse_time

SOURCE = "k8s-audit"
DEFAULT_IGNORE = re.compile(r"^system:(node:.*|kube-controller-manager|kube-scheduler|serviceaccount:kube-system:.*)$")
# what a delete of these resources is called; others are not reported (pods, events, leases come and go all day)
DELETED = {"namespaces": "NamespaceDeleted", "deployments": "WorkloadDeleted", "statefulsets": "WorkloadDeleted",
           "daemonsets": "WorkloadDeleted", "persistentvolumeclaims": "VolumeClaimDeleted",
           "persistentvolumes": "VolumeDeleted", "nodes": "NodeObjectDeleted", "customresourcedefinitions": "CRDDeleted"}
KINDS = {"namespaces": "Namespace", "deployments": "Deployment", "statefulsets": "StatefulSet", "daemonsets": "DaemonSet",
         "persistentvolumeclaims": "PersistentVolumeClaim", "persistentvolumes": "PersistentVolume", "nodes": "Node",
         "customresourcedefinitions": "CustomResourceDefinition", "pods": "Pod"}
SESSIONS = {"exec": "PodExec", "attach": "PodAttach", "portforward": "PodPortForward"}
PUBLIC = "APIRequestFromPublicIP"
MAX_TEXT = 300
Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


def trusted_networks(text: str) -> tuple:
    """``--audit-trusted-networks``: comma-separated CIDRs (an office's or a VPN's egress) whose public addresses are
    not reported; ValueError names the one that is not a network.

    >>> [str(n) for n in trusted_networks("203.0.113.0/24, 2001:db8::/32")]
    ['203.0.113.0/24', '2001:db8::/32']
    >>> trusted_networks("10.0.0.0/8,bogus")
    Traceback (most recent call last):
    ...
    ValueError: 'bogus' is not a network (CIDR, e.g. 203.0.113.0/24)
    """
    out = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            try:
                out.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"{part!r} is not a network (CIDR, e.g. 203.0.113.0/24)") from None
    return tuple(out)


def public_ip(ips: list, trusted: Networks = ()) -> str:
    """The first of a request's ``sourceIPs`` that is a public (globally routed) address outside ``trusted``, or "".

    ``sourceIPs`` is the ``X-Forwarded-For`` chain then the peer: the peer (last) is what the API server saw and
    cannot be forged; a public address a proxy passed on in front of it is reported too (a forged one as well: a
    client that claims to be on the internet is worth a look).

    >>> public_ip(["10.0.4.2"]), public_ip(["8.8.4.4", "10.0.0.5"]), public_ip(["100.64.1.1", "::1", "not an ip"])
    ('', '8.8.4.4', '')
    >>> public_ip(["8.8.4.4"], trusted_networks("8.8.0.0/16")), public_ip(["::ffff:8.8.4.4"])  # a dual-stack server's
    ('', '8.8.4.4')
    """
    for ip in ips:
        try:
            a = ipaddress.ip_address(str(ip))
        except ValueError:
            continue
        if a.version == 6 and a.ipv4_mapped is not None:
            a = a.ipv4_mapped
        if a.is_global and not any(a in n for n in trusted):
            return str(a)
    return ""


def _items(body: bytes) -> list:
    try:
        d = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"not valid JSON: {exc}") from None
    if not isinstance(d, dict):
        raise PayloadError(f"expected an audit.k8s.io EventList object, got {json_kind(d)}")
    kind = d.get("kind")
    if kind == "Event":
        return [d]
    if kind != "EventList" or not str(d.get("apiVersion", "")).startswith("audit.k8s.io/"):
        raise PayloadError(f"expected kind EventList (apiVersion audit.k8s.io/v1), got kind {kind!r} "
                           f"(apiVersion {d.get('apiVersion')!r})")
    return field_list(d, "items")


def _taints(taints) -> str:
    return ", ".join(f"{t.get('key', '')}{'=' + str(t['value']) if t.get('value') else ''}:{t.get('effect', '')}"
                     for t in (taints if isinstance(taints, list) else []) if isinstance(t, dict))


def _node_change(req) -> list[tuple[str, str]]:
    """What a node patch asks: cordon / uncordon, labels, taints -> [(reason, detail)].

    A merge or strategic-merge patch is an object (kubectl cordon, label, taint); a JSON patch a list of operations
    (``{"op": "replace", "path": "/spec/unschedulable", "value": true}``).  Anything else asks nothing we report.
    """
    out = []
    if isinstance(req, list):  # JSON patch
        ops = [op for op in req if isinstance(op, dict) and isinstance(op.get("path"), str)]
        for op in ops:
            if op["path"] == "/spec/unschedulable":
                out.append(("NodeCordoned", "") if op.get("op") != "remove" and op.get("value") else ("NodeUncordoned", ""))
        for prefix, reason in (("/spec/taints", "NodeTaintsChanged"), ("/metadata/labels", "NodeLabelsChanged")):
            mine = [op for op in ops if op["path"].startswith(prefix)]
            if mine:
                out.append((reason, ", ".join(f"{op.get('op', '')} {op['path'][len(prefix) + 1:].replace('~1', '/')}"
                                              + (f"={op['value']}" if isinstance(op.get("value"), str) else "")
                                              for op in mine)))
        return out
    if not isinstance(req, dict):
        return out
    spec = req.get("spec") if isinstance(req.get("spec"), dict) else {}
    if "unschedulable" in spec:
        out.append(("NodeCordoned", "") if spec["unschedulable"] else ("NodeUncordoned", ""))
    if "taints" in spec:
        out.append(("NodeTaintsChanged", _taints(spec["taints"])))
    meta = req.get("metadata") if isinstance(req.get("metadata"), dict) else {}
    if isinstance(meta.get("labels"), dict):
        out.append(("NodeLabelsChanged", ", ".join(f"{k}={v}" for k, v in sorted(meta["labels"].items()))))
    return out


def events_from_audit(body: bytes, *, cluster: str = "default", ignore: re.Pattern | None = DEFAULT_IGNORE,
                      trusted: Networks = ()) -> list[Event]:
    """An audit webhook body (``EventList``, or one ``Event``) -> the Events it is worth; PayloadError says why not.

    One audit event gives at most one record per change it asks (a node patch may cordon and relabel at once), and
    one ``APIRequestFromPublicIP`` about the user when the request came from a public address (``public_ip``: ACK's
    audit rule on access from the internet; the policy records every request of a person for it).
    Ids are ``audit-<auditID>-<reason>``: the apiserver retries a batch, so the same audit event may come twice.
    """
    with refusing("audit payload"):  # a shape no check anticipated: a refusal with the reason (400), never a 500
        return _events_from_audit(body, cluster, ignore, trusted)


def _events_from_audit(body: bytes, cluster: str, ignore: re.Pattern | None, trusted: Networks) -> list[Event]:
    out: list[Event] = []
    for i, it in enumerate(_items(body)):
        where = f"items[{i}]."
        if not isinstance(it, dict):
            raise PayloadError(f"items[{i}]: expected an object, got {json_kind(it)}")
        ref = field_obj(it, "objectRef", where, required=False)
        user = field_obj(it, "user", where, required=False)
        status = field_obj(it, "responseStatus", where, required=False)
        verb, stage = field_str(it, "verb", where, required=False), field_str(it, "stage", where, required=False)
        resource = field_str(ref, "resource", where + "objectRef.", required=False)
        sub = field_str(ref, "subresource", where + "objectRef.", required=False)
        username = field_str(user, "username", where + "user.", required=False)
        code = status.get("code", 0)
        if not isinstance(code, int):
            raise PayloadError(f"{where}responseStatus.code: expected an integer, got {json_kind(code)}")
        if ignore is not None and ignore.fullmatch(username):
            continue
        session = resource == "pods" and sub in SESSIONS and verb in ("create", "get")
        if stage != ("ResponseStarted" if session else "ResponseComplete") or not 100 <= code < 400:  # 101: a session
            continue
        changes: list[tuple[str, str]] = []
        if session:
            changes = [(SESSIONS[sub], "")]
        elif resource == "pods" and sub == "eviction" and verb == "create":
            changes = [("PodEvictionRequested", "")]
        elif resource == "nodes" and not sub and verb == "patch":  # an update sends the whole node: no telling what changed
            changes = _node_change(it.get("requestObject"))
        elif verb == "delete" and not sub and resource in DELETED:
            changes = [(DELETED[resource], "")]
        ips = it.get("sourceIPs") if isinstance(it.get("sourceIPs"), list) else []
        public = public_ip(ips, trusted)
        if not changes and not public:
            continue
        name = field_str(ref, "name", where + "objectRef.", required=False)
        ns = field_str(ref, "namespace", where + "objectRef.", required=False)
        try:
            t = parse_time(it.get("stageTimestamp") or it.get("requestReceivedTimestamp"))
        except (RecordError, TypeError, ValueError) as exc:
            raise PayloadError(f"{where}stageTimestamp: {exc}") from None
        kind = KINDS.get(resource, resource)
        entity = Entity(cluster=cluster, namespace=ns, kind=kind, name=name, node=name if kind == "Node" else "")
        labels = {"user": username, "verb": verb, "resource": resource + (f"/{sub}" if sub else ""),
                  "source_ip": str(ips[0]) if ips else "",
                  "user_agent": field_str(it, "userAgent", where, required=False)[:MAX_TEXT]}
        audit_id = field_str(it, "auditID", where, required=False)
        what = f"{kind} {ns + '/' if ns else ''}{name}"
        for reason, detail in changes:
            message = f"{username} {verb} {resource}{'/' + sub if sub else ''} of {what}" + (f": {detail}" if detail else "")
            out.append(Event(source=SOURCE, reason=reason, type="Normal", time=t, entity=entity,
                             labels=dict(labels, **({"change": detail[:MAX_TEXT]} if detail else {})),
                             message=message[:MAX_TEXT * 2], id=f"audit-{audit_id}-{reason}"))
        if public:  # about the person: one alert group per user and address, whatever they touched
            target = (what if name else f"{resource}{'/' + sub if sub else ''}{' in ' + ns if ns else ''}") if resource \
                else field_str(it, "requestURI", where, required=False)
            out.append(Event(source=SOURCE, reason=PUBLIC, type="Warning", time=t,
                             entity=Entity(cluster=cluster, kind="User", name=username),
                             labels=dict(labels, public_ip=public, target=target[:MAX_TEXT]),
                             message=f"{username} {verb} {target} from public address {public}"[:MAX_TEXT * 2],
                             id=f"audit-{audit_id}-{PUBLIC}"))
    return out


def attach_owners(events: list[Event], owners) -> list[Event]:
    """Each event about a namespaced object (or a Namespace) with its workload and owning team (``Owners``, read
    through the API, as the Kubernetes collector does), so its alert reaches that team: a pod or workload its own,
    any other object (a PersistentVolumeClaim, a Secret) the namespace's, as the collector gives its Events; an
    object that cannot be read (gone, forbidden) keeps what it had, and the namespace's team where that one can be
    read.  Cluster-scoped objects (a Node, a PersistentVolume) and users are nobody's."""
    out = []
    for e in events:
        ent = e.entity
        if ent.namespace or ent.kind == "Namespace":
            workload, team = owners.resolve_named(ent.namespace, ent.kind, ent.name)
            e = msgspec.structs.replace(e, entity=msgspec.structs.replace(ent, workload=workload, owner=team))
        out.append(e)
    return out
