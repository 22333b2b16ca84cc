"""Alert lifecycle per fingerprint: firing -> resolved, duplicates dropped, quiet sources resolved by timeout.

State is a mapping (a ``Store`` partitioned by fingerprint in the worker, a dict in tests):
``a|<fingerprint>`` -> the alert as it was last passed on, plus the time it ends by itself (and the
group keys routing sent it to, which ``alerts.engine`` notes as ``g``).

>>> from core.records import Alert
>>> st = {}
>>> a = Alert({"alertname": "NodeNotReady", "node": "n1"}, startsAt=100.0)
>>> receive(st, a, now=100.0, resolve_timeout=300.0).status
'firing'
>>> receive(st, a, now=160.0, resolve_timeout=300.0) is None   # a duplicate: nothing to pass on
True
>>> expire(st, now=400.0), [x.status for x in expire(st, now=461.0)]
([], ['resolved'])
"""

from __future__ import annotations

from core.records import Alert, from_dict

PREFIX = "a|"


def _load(d: dict) -> Alert:
    return from_dict(d)


def receive(state, alert: Alert, now: float, resolve_timeout: float) -> Alert | None:
    """Merge one incoming transition; return the alert to pass on, or None when nothing changed."""
    key = PREFIX + alert.fingerprint
    prev = state.get(key)
    if alert.status == "resolved" or (alert.endsAt is not None and alert.endsAt <= now):
        if prev is None:
            return None  # resolved an alert that is not firing here (already resolved, or a duplicate)
        del state[key]
        out = Alert(alert.labels, alert.annotations or prev["alert"]["annotations"], "resolved",
                    parse_start(prev), alert.endsAt if alert.endsAt is not None else now,
                    alert.source, alert.generatorURL)
        return out
    until = alert.endsAt if alert.endsAt is not None else (now + resolve_timeout if resolve_timeout > 0 else None)
    if prev is not None:
        starts = min(parse_start(prev), alert.startsAt or parse_start(prev))
        same = prev["alert"]["annotations"] == alert.annotations
        # keeps what the engine noted in the entry (the group keys it routed the alert to)
        state[key] = {**prev, "alert": prev["alert"] if same else _firing(alert, starts).to_dict(), "until": until}
        return None if same else _firing(alert, starts)
    fired = _firing(alert, alert.startsAt or now)
    state[key] = {"alert": fired.to_dict(), "until": until}
    return fired


def _firing(a: Alert, starts: float) -> Alert:
    out = Alert(a.labels, a.annotations, "firing", starts, None, a.source, a.generatorURL)
    fp = a.__dict__.get("fingerprint")  # same labels, same fingerprint: not hashed again
    if fp is not None:
        out.__dict__["fingerprint"] = fp
    return out


def parse_start(entry: dict) -> float:
    from core.records import parse_time

    return parse_time(entry["alert"]["startsAt"])


def expire(state, now: float, keys=None) -> list[Alert]:
    """Firing alerts whose source went quiet (their end time passed): resolved at that time, removed from state.

    ``keys`` limits the check to these state keys (an index of the candidates); default: all alerts.
    """
    out = []
    for key in [k for k in state if k.startswith(PREFIX)] if keys is None else keys:
        if key not in state:
            continue
        entry = state[key]
        if entry["until"] is not None and entry["until"] <= now:
            a = _load(entry["alert"])
            a.status, a.endsAt = "resolved", entry["until"]
            del state[key]
            out.append(a)
    return out
