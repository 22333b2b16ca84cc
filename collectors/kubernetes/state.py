"""Node and Pod state changes as Event records (``source: k8s-state``), from summaries of the objects.

A summary is the small JSON-able part of an object that changes are computed from; the
collector keeps one per object (checkpointed), and ``node_changes`` / ``pod_changes`` compare the
previous summary (``None`` on first sight) with the current one.  On first sight only current
bad states are reported (a node not Ready, a container in CrashLoopBackOff), never history such
as an old restart count.

>>> n = {"metadata": {"name": "w1", "uid": "n1"}, "status": {"conditions": [
...      {"type": "Ready", "status": "True", "lastTransitionTime": "2021-08-03T10:00:00Z"}]}}
>>> a = node_summary(n)
>>> n["status"]["conditions"][0].update(status="Unknown", lastTransitionTime="2021-08-03T10:05:00Z",
...                                     reason="NodeStatusUnknown")
>>> ent = Entity(kind="Node", name="w1", node="w1")
>>> [(e.reason, e.entity.node, e.labels["status"]) for e in node_changes(a, node_summary(n), ent, 0.0)]
[('NodeNotReady', 'w1', 'Unknown')]
"""

from __future__ import annotations

import hashlib

from core.records import Entity, Event, RecordError, parse_time

PRESSURES = {
    "MemoryPressure": "NodeMemoryPressure",
    "DiskPressure": "NodeDiskPressure",
    "PIDPressure": "NodePIDPressure",
    "NetworkUnavailable": "NodeNetworkUnavailable",
}
IMAGE_PULL = ("ErrImagePull", "ImagePullBackOff")
# status.reason / DisruptionTarget condition reason -> our reason
DISRUPTIONS = {
    "Evicted": "Evicted",
    "EvictionByEvictionAPI": "Evicted",
    "TerminationByKubelet": "Evicted",
    "Preempted": "Preempted",
    "PreemptionByScheduler": "Preempted",
}


def _id(*parts) -> str:
    return hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=10).hexdigest()


def _meta(obj) -> dict:
    if not isinstance(obj, dict):
        raise RecordError(f"object must be a JSON object, got {type(obj).__name__}")
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not meta.get("uid") or not meta.get("name"):
        raise RecordError("object without metadata.name or metadata.uid")
    return meta


def _list(v, what: str) -> list:
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise RecordError(f"{what} must be a list of objects")
    return v


def _ts(v, default: float) -> float:
    return parse_time(v) if v else default


# ---------------------------------------------------------------- nodes


def node_summary(obj) -> dict:
    """``{"name", "uid", "conds": {type: [status, reason, lastTransitionTime]}}``."""
    meta = _meta(obj)
    status = obj.get("status") or {}
    if not isinstance(status, dict):
        raise RecordError("Node status must be an object")
    conds = {}
    for c in _list(status.get("conditions"), "Node status.conditions"):
        t = c.get("type")
        if t == "Ready" or t in PRESSURES:
            when = c.get("lastTransitionTime") or ""
            if when:
                parse_time(when)  # validate now: a bad time is a bad object
            conds[t] = [str(c.get("status") or "Unknown"), str(c.get("reason") or ""), when]
    return {"name": str(meta["name"]), "uid": str(meta["uid"]), "conds": conds}


def node_changes(prev: dict | None, cur: dict, entity: Entity, now: float) -> list[Event]:
    """NodeNotReady / NodeReady and pressure conditions set / cleared (``...Cleared``)."""
    out = []
    before = (prev or {}).get("conds", {})
    for t, (status, reason, when) in cur["conds"].items():
        was = before.get(t, [None])[0]
        if t == "Ready":
            bad, was_bad = status != "True", (was is not None and was != "True")
            name = "NodeNotReady" if bad else "NodeReady"
        else:
            bad, was_bad = status == "True", was == "True"
            name = PRESSURES[t] if bad else PRESSURES[t] + "Cleared"
        if bad == was_bad or (not bad and was is None):
            continue  # no transition, or healthy on first sight
        out.append(Event(
            source="k8s-state", reason=name, type="Warning" if bad else "Normal", time=_ts(when, now),
            entity=entity, labels={"condition": t, "status": status, "condition_reason": reason},
            message=f"node {cur['name']} condition {t} is {status}" + (f" ({reason})" if reason else ""),
            id=_id("node", entity.cluster, cur["uid"], t, status, when),
        ))
    return out


def node_deleted(prev: dict, entity: Entity, now: float) -> Event:
    """``NodeDeleted``: the Node object is gone (scaled in, a spot node reclaimed), so the node's state alerts have
    nothing left to watch; the default pack's node state rules resolve on it (a NotReady node that is deleted
    would otherwise stay NotReady in the alerts for ever)."""
    return Event(source="k8s-state", reason="NodeDeleted", type="Normal", time=now, entity=entity, labels={},
                 message=f"node {prev['name']} was deleted", id=_id("node-deleted", entity.cluster, prev["uid"]))


# ---------------------------------------------------------------- pods


def _term(state) -> str:
    t = (state or {}).get("terminated")
    if not isinstance(t, dict):
        return ""
    return f"{t.get('reason') or ''}|{t.get('exitCode', '')}|{t.get('finishedAt') or ''}"


def pod_summary(obj) -> dict:
    """``{"name", "ns", "uid", "node", "owner": [kind, name, uid], "labels", "disruption",
    "containers": {name: [restartCount, waitingReason, term, lastTerm]}, "terms", "times"}``;
    a term is ``"reason|exitCode|finishedAt"``; ``terms`` and ``times`` are details for the
    records' messages and times, not compared or checkpointed (``compact``). The owner's uid tells a workload
    re-created under the same name from the one cached (``Owners.get``); a summary checkpointed before it was kept
    has ``[kind, name]``."""
    meta = _meta(obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if not isinstance(spec, dict) or not isinstance(status, dict):
        raise RecordError("Pod spec and status must be objects")
    owner = ["", "", ""]
    for ref in _list(meta.get("ownerReferences"), "metadata.ownerReferences"):
        if ref.get("controller") or owner == ["", "", ""]:
            owner = [str(ref.get("kind") or ""), str(ref.get("name") or ""), str(ref.get("uid") or "")]
    disruption = ""
    times = {}  # when things happened, as the object says (not checkpointed; see compact)
    if status.get("reason") in DISRUPTIONS:
        disruption = DISRUPTIONS[status["reason"]]
    for c in _list(status.get("conditions"), "Pod status.conditions"):
        if c.get("type") == "DisruptionTarget" and c.get("status") == "True" and c.get("reason") in DISRUPTIONS:
            disruption = disruption or DISRUPTIONS[c["reason"]]
            times[""] = c.get("lastTransitionTime") or ""  # "" is no container's name
    containers = {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in _list(status.get(key), f"Pod status.{key}"):
            rc = cs.get("restartCount", 0)
            if not isinstance(rc, int) or isinstance(rc, bool):
                raise RecordError(f"restartCount must be an integer, got {rc!r}")
            state = cs.get("state") or {}
            last = cs.get("lastState") or {}
            if not isinstance(state, dict) or not isinstance(last, dict):
                raise RecordError("container state and lastState must be objects")
            waiting = (state.get("waiting") or {}).get("reason") or ""
            name = str(cs.get("name") or "")
            containers[name] = [rc, str(waiting), _term(state), _term(last)]
            times[name] = ((state.get("running") or {}).get("startedAt")
                           or (last.get("terminated") or {}).get("finishedAt") or "")
    labels = meta.get("labels") or {}
    return {
        "name": str(meta["name"]), "ns": str(meta.get("namespace") or ""), "uid": str(meta["uid"]),
        "node": str(spec.get("nodeName") or ""), "owner": owner,
        "labels": {"pod-template-hash": labels["pod-template-hash"]} if "pod-template-hash" in labels else {},
        "disruption": disruption, "message": str(status.get("message") or ""),
        "terms": _terms(status), "times": times, "containers": containers,
    }


def _terms(status: dict) -> dict:
    """Full terminated states, by ``"reason|exitCode|finishedAt"``, for the messages of new ones."""
    out = {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            for st in (cs.get("state") or {}, cs.get("lastState") or {}):
                t = st.get("terminated")
                if isinstance(t, dict):
                    out[_term(st)] = {"exitCode": t.get("exitCode"), "message": str(t.get("message") or "")[:500],
                                      "signal": t.get("signal")}
    return out


def _termination(pod: dict, entity: Entity, container: str, term: str, rc: int, now: float) -> Event | None:
    reason, code, finished = term.split("|", 2)
    try:
        exit_code = int(code)
    except ValueError:
        exit_code = 0
    if reason == "OOMKilled":
        name, typ = "ContainerOOMKilled", "Warning"
    elif exit_code != 0:
        name, typ = "ContainerError", "Warning"
    else:
        return None
    detail = pod.get("terms", {}).get(term, {})
    msg = f"container {container} of pod {pod['ns']}/{pod['name']} terminated: {reason or 'exit'} (exit code {exit_code})"
    if detail.get("message"):
        msg += f": {detail['message']}"
    return Event(
        source="k8s-state", reason=name, type=typ, time=_ts(finished, now), entity=entity,
        labels={"container": container, "exit_code": str(exit_code), "termination_reason": reason,
                "restart_count": str(rc)},
        message=msg, id=_id("pod", entity.cluster, pod["uid"], container, "terminated", term),
    )


def pod_changes(prev: dict | None, cur: dict, entity: Entity, now: float) -> list[Event]:
    """Container terminations (OOMKilled, non-zero exit), CrashLoopBackOff, image pull failures,
    restart count increases, evictions and preemptions."""
    out = []
    first = prev is None
    before = (prev or {}).get("containers", {})
    for name, (rc, waiting, term, last_term) in cur["containers"].items():
        p_rc, p_waiting, p_term, p_last = before.get(name, [None, "", "", ""])
        when = _ts(cur["times"].get(name), now)  # the restart's start, else the last termination
        seen_terms = {p_term, p_last, ""}
        for t in (last_term, term) if not first else (term,):
            if t not in seen_terms:
                seen_terms.add(t)
                ev = _termination(cur, entity, name, t, rc, now)
                if ev:
                    out.append(ev)
        if p_rc is not None and rc > p_rc:
            out.append(Event(
                source="k8s-state", reason="ContainerRestarted", type="Warning", time=when, entity=entity,
                labels={"container": name, "restart_count": str(rc), "previous_restart_count": str(p_rc)},
                message=f"container {name} of pod {cur['ns']}/{cur['name']} restarted ({p_rc} -> {rc})",
                id=_id("pod", entity.cluster, cur["uid"], name, "restart", rc),
            ))
        entered = None
        if waiting == "CrashLoopBackOff" and p_waiting != "CrashLoopBackOff":
            entered = "CrashLoopBackOff"
        elif waiting in IMAGE_PULL and p_waiting not in IMAGE_PULL:
            entered = "ImagePullBackOff"  # ErrImagePull and ImagePullBackOff alternate: one record per episode
        if entered:
            out.append(Event(
                source="k8s-state", reason=entered, type="Warning", time=when, entity=entity,
                labels={"container": name, "restart_count": str(rc), "waiting_reason": waiting},
                message=f"container {name} of pod {cur['ns']}/{cur['name']} is waiting: {waiting}",
                id=_id("pod", entity.cluster, cur["uid"], name, "waiting", entered, rc),
            ))
    if cur["disruption"] and cur["disruption"] != (prev or {}).get("disruption"):
        out.append(Event(
            source="k8s-state", reason=cur["disruption"], type="Warning",
            time=_ts(cur["times"].get(""), now), entity=entity,
            labels={}, message=cur["message"] or f"pod {cur['ns']}/{cur['name']}: {cur['disruption']}",
            id=_id("pod", entity.cluster, cur["uid"], cur["disruption"]),
        ))
    return out


def compact(summary: dict) -> dict:
    """The summary as checkpointed and compared: without the details only messages and times use."""
    return {k: v for k, v in summary.items() if k not in ("terms", "times")}
