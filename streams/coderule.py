"""The walking skeleton's first rule, written in code (moves to the rule-pack engine with issue 6).

Warning events whose reason is BackOff, FailedScheduling, FailedMount or Unhealthy fire an
alert per object; repeats of a firing alert are deduplicated through partition state.

>>> from streams.records import Event, Entity, decode
>>> out = []
>>> st = {}
>>> ev = Event(source="k8s", reason="BackOff", type="Warning", time=100.0,
...            entity=Entity(namespace="shop", kind="Pod", name="cart-1", owner="team-a"))
>>> CodeRule().process(ev, st, lambda t, k, v, p=None: out.append((t, decode(v))))
>>> CodeRule().process(ev, st, lambda t, k, v, p=None: out.append((t, decode(v))))
>>> [(t, a.labels["alertname"], a.labels["owner"]) for t, a in out]
[('alerts', 'KubeBackOff', 'team-a')]
"""

from __future__ import annotations

from streams.records import Alert, Event, encode

REASONS = frozenset({"BackOff", "FailedScheduling", "FailedMount", "Unhealthy"})


class CodeRule:
    source = "skeleton/warning-reasons@1"

    def process(self, rec, state, emit) -> None:
        if not isinstance(rec, Event) or rec.type != "Warning" or rec.reason not in REASONS:
            return
        e = rec.entity
        labels = {"alertname": f"Kube{rec.reason}", "severity": "warning", "cluster": e.cluster,
                  "namespace": e.namespace, "kind": e.kind, "name": e.name}
        if e.owner:
            labels["owner"] = e.owner
        # identity is the object; the node an event was reported from varies, so it is an annotation
        annotations = {"summary": rec.message[:500]}
        if e.node:
            annotations["node"] = e.node
        alert = Alert(labels=labels, annotations=annotations, startsAt=rec.time, source=self.source)
        key = f"code|{alert.fingerprint}"
        if key in state:
            return
        state[key] = rec.time
        emit("alerts", alert.key(), encode(alert))

    def tick(self, now, state, emit) -> None:
        return None
