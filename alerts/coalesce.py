"""Coalescing pending notifications of one group: the newest wins, resolved alerts it no longer carries are kept.

When a receiver was down, several notifications of one group may be waiting; sending only the
newest (plus the resolutions the older ones carried) gives the receiver the current state once.

>>> def a(fp, st): return {"fingerprint": fp, "status": st, "labels": {"alertname": fp}, "startsAt": "t"}
>>> old = {"id": "1", "groupKey": "g", "status": "firing", "alerts": [a("x", "resolved"), a("y", "firing")]}
>>> new = {"id": "2", "groupKey": "g", "status": "firing", "alerts": [a("y", "firing"), a("z", "firing")]}
>>> [(n["id"], [x["fingerprint"] for x in n["alerts"]]) for n in coalesce([old, new])]
[('2', ['y', 'z', 'x'])]
"""

from __future__ import annotations


def coalesce(notes: list[dict]) -> list[dict]:
    """One notification per (receiver, group key), in the order of their newest version."""
    latest: dict[tuple, dict] = {}
    for n in notes:
        k = (n["receiver"] if "receiver" in n else "", n["groupKey"])
        prev = latest.pop(k, None)
        if prev is not None:
            have = {a["fingerprint"] for a in n["alerts"]}
            carried = [a for a in prev["alerts"] if a["status"] == "resolved" and a["fingerprint"] not in have]
            if carried:
                n = dict(n, alerts=n["alerts"] + carried)
        latest[k] = n
    return list(latest.values())
