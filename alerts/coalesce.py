"""Coalescing pending notifications of one group: a newer one that still fires everything an older one fired replaces it.

When a receiver was down, several notifications of one group may be waiting.  A newer
notification supersedes an older one when every alert the older one announced as firing is
still firing in the newer one (the group only grew, or nothing changed): the receiver gets the
current state once, with the resolutions the older one carried.  An older notification whose
firing alerts have since resolved is kept, so a receiver never sees a resolution for an alert it
was never told about.

>>> def a(fp, st): return {"fingerprint": fp, "status": st, "labels": {"alertname": fp}, "startsAt": "t"}
>>> def n(id, *alerts): return {"id": id, "receiver": "r", "groupKey": "g", "status": "firing", "alerts": list(alerts)}
>>> [(x["id"], [y["fingerprint"] for y in x["alerts"]])
...  for x in coalesce([n("1", a("x", "resolved"), a("y", "firing")), n("2", a("y", "firing"), a("z", "firing"))])]
[('2', ['y', 'z', 'x'])]
>>> [x["id"] for x in coalesce([n("1", a("y", "firing")), n("2", a("y", "resolved"))])]
['1', '2']
"""

from __future__ import annotations


def _firing(note: dict) -> set[str]:
    return {a["fingerprint"] for a in note["alerts"] if a["status"] == "firing"}


def coalesce(notes: list[dict]) -> list[dict]:
    """The notifications to send, in order; superseded ones merged into their successor."""
    out: list[dict | None] = []
    latest: dict[tuple, int] = {}
    for n in notes:
        k = (n.get("receiver", ""), n["groupKey"])
        i = latest.get(k)
        if i is not None and _firing(out[i]) <= _firing(n):
            prev = out[i]
            out[i] = None
            have = {a["fingerprint"] for a in n["alerts"]}
            carried = [a for a in prev["alerts"] if a["status"] == "resolved" and a["fingerprint"] not in have]
            n = dict(n, alerts=n["alerts"] + carried)
            if "_covers" in prev:  # the records the merged one stands for (the deliverer marks them all done)
                n["_covers"] = prev["_covers"] + n.get("_covers", [])
        latest[k] = len(out)
        out.append(n)
    return [n for n in out if n is not None]


def aggregate(notes: list[dict]) -> dict:
    """All pending notifications of one receiver+group as one (a storm: more are waiting than the receiver takes).

    The newest notification's header with each alert in its latest known state (so an alert
    that fired and resolved while queued arrives as resolved); ``_covers`` lists are joined.

    >>> def a(fp, st): return {"fingerprint": fp, "status": st}
    >>> def n(id, *alerts): return {"id": id, "groupKey": "g", "status": "firing", "alerts": list(alerts), "_covers": [id]}
    >>> m = aggregate([n("1", a("x", "firing")), n("2", a("x", "resolved"), a("y", "firing")), n("3", a("y", "firing"))])
    >>> m["id"], [(x["fingerprint"], x["status"]) for x in m["alerts"]], m["_covers"]
    ('3', [('y', 'firing'), ('x', 'resolved')], ['1', '2', '3'])
    """
    newest = notes[-1]
    latest: dict[str, dict] = {}
    for n in notes:
        for a in n["alerts"]:
            latest[a["fingerprint"]] = a
    have = {a["fingerprint"] for a in newest["alerts"]}
    alerts = list(newest["alerts"]) + [a for fp, a in latest.items() if fp not in have]
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return dict(newest, alerts=alerts, status=status, _covers=[c for n in notes for c in n.get("_covers", [])])
