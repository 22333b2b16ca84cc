"""Alertmanager's v2 HTTP API (aiohttp), the part amtool, Grafana and Karma use, over kubesight's state.

    GET    /api/v2/alerts               ?filter=<matcher>...&active&silenced&inhibited&unprocessed&receiver=<regex>
    GET    /api/v2/alerts/groups        same parameters; one entry per (receiver, group)
    GET    /api/v2/status               cluster (disabled), config.original (``amtool config show``), uptime, version
    GET    /api/v2/receivers            [{"name": ...}]
    POST   /-/reload                    the routing file read again -> 200 | 500 with why (the running one stays)
    POST   /api/v2/silences             body: PostableSilence  -> 200 {"silenceID": id}
    GET    /api/v2/silences             ?filter=<matcher>... -> 200 [GettableSilence...] (active first)
    GET    /api/v2/silence/{id}         -> 200 GettableSilence | 404
    DELETE /api/v2/silence/{id}         -> 200 (expired) | 404      (also /api/v2/silences/{id})

``book`` is any object with ``silences`` (a ``Silences``), ``list(now)``, ``async put(silence)`` and
``async expire(id)``; in kubesight it is ``streams.alerting.SilenceBook`` (the compacted topic).
``alerts`` is an ``AlertsState`` fed with the records of the ``alert-groups`` topic (every alert
after the lifecycle, with the receiver and group routing gave it); ``config`` the routing config.
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from alerts.engine import from_grouped
from alerts.inhibit import Inhibitor, rules_from
from alerts.silences import Silence, SilenceError
from core.matchers import Matcher, MatcherError, RegexError, full_match, parse_matchers
from core.records import Alert, RecordError, decode, fingerprint, format_time

VERSION = {"version": "0.25.0-kubesight", "revision": "kubesight", "branch": "main", "buildUser": "kubesight",
           "buildDate": "", "goVersion": "none (kubesight, Python)"}


class AlertsState:
    """The alerts that are firing now, each with its receivers and groups; the inhibitor fed alongside."""

    def __init__(self, cfg=None):
        self.by_fp: dict[str, dict] = {}
        self.cfg = cfg  # the routing config in force (``status``, ``receivers``); a reload swaps it (``reconfigure``)
        self.inhibitor = Inhibitor(rules_from(cfg) if cfg is not None else [])

    def reconfigure(self, cfg) -> None:
        self.cfg = cfg
        self.inhibitor.set_rules(rules_from(cfg))

    def apply(self, key, value) -> None:
        """One record of ``alert-groups`` (an alert transition re-keyed by group)."""
        if value is None:
            return
        try:
            rec = decode(value)
        except RecordError:
            return
        got = from_grouped(rec) if isinstance(rec, Alert) else None
        if got is None:
            return
        group, alert = got
        fp = fingerprint(alert.labels)
        entry = self.by_fp.get(fp)
        if group.withdraw:  # a routing reload took it out of this group (it still fires, in its other groups)
            if entry is not None:
                for where in [w for w in entry["groups"] if w[1] == group.key]:
                    del entry["groups"][where]
                if not entry["groups"]:  # in no group any more (a withdraw read after its resolution): gone
                    del self.by_fp[fp]
            return
        self.inhibitor.observe(alert.labels, alert.status)
        if alert.status == "firing":
            if entry is None:
                entry = self.by_fp[fp] = {"groups": {}}
            entry["alert"], entry["updated"] = alert, time.time()
            for where in [w for w in entry["groups"] if w[1] == group.key and w[0] != group.receiver]:
                del entry["groups"][where]  # a group has one receiver: a reload gave this one another
            entry["groups"][(group.receiver, group.key)] = group.labels
        elif entry is not None:
            entry["groups"].pop((group.receiver, group.key), None)
            if not entry["groups"]:
                del self.by_fp[fp]


def filter_matches(matchers: list[Matcher], labels: dict) -> bool:
    """Alertmanager's ``matchFilterLabels``: a filter on an empty value also accepts a missing label."""
    for m in matchers:
        present = labels.get(m.name, "") != ""
        if m.op in ("!=", "!~"):
            if m.value == "" and present:
                continue
        elif m.value == "" and not present:
            continue
        if not m.matches(labels):
            return False
    return True


def silence_filter_matches(matchers: list[Matcher], s: Silence) -> bool:
    """Alertmanager 0.25's silence filter (``amtool silence query``): every filter matcher is one of the silence's,
    by name, operator and value, not a label set the silence would mute (``job=~"a.+"`` does not select a silence
    ``job=~"a.*"``).  A silence with two matchers on one name is looked up by its last, as Alertmanager does.

    >>> s = Silence("s1", (Matcher("job", "=~", "a.*"), Matcher("env", "!=", "")), 0.0, 1.0, "ana", "c", 0.0)
    >>> [silence_filter_matches(parse_matchers(f), s) for f in ('job=~"a.*"', 'job=~"a.+"', 'env!=""', 'env=""', '{}')]
    [True, False, True, False, True]
    """
    own = {m.name: m for m in s.matchers}
    return all(m == own.get(m.name) for m in matchers)


def _json(data, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _flag(request: web.Request, name: str, default: bool = True) -> bool:
    v = request.query.get(name)
    return default if v is None else v.lower() not in ("false", "0")


def _filters(request: web.Request) -> list[Matcher]:
    out = []
    for f in request.query.getall("filter", []):
        out += parse_matchers(f)
    return out


def _json(data, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def app(book, clock=time.time, alerts: AlertsState | None = None, config=None, reload=None,
        silences_only: bool = False) -> web.Application:
    """The API over ``book`` (silences) and ``alerts``; the routing config is ``alerts.cfg`` (else ``config``).
    ``silences_only``: the silence routes alone (and the health probes), for a process that holds no alerts (the
    board): the others answer 404 there, not an empty list that says nothing fires.

    ``reload()`` (returning the errors of a refused version, or []) answers Alertmanager's ``POST /-/reload``, which
    config-reloader sidecars call after a ConfigMap update; kubesight's processes also look at the file every 2 s."""
    started = clock()
    alerts = alerts if alerts is not None else AlertsState(config)

    def gettable(entry: dict, now: float, receivers: list[str]) -> dict:
        a: Alert = entry["alert"]
        silenced = book.silences.muting(a.labels, now)
        inhibited = alerts.inhibitor.inhibited_by(a.labels)
        return {"labels": a.labels, "annotations": a.annotations, "startsAt": format_time(a.startsAt),
                "endsAt": format_time(a.endsAt if a.endsAt else now + 300.0),
                "updatedAt": format_time(entry["updated"]), "fingerprint": fingerprint(a.labels),
                "generatorURL": a.generatorURL, "receivers": [{"name": r} for r in receivers],
                "status": {"state": "suppressed" if silenced or inhibited else "active",
                           "silencedBy": silenced, "inhibitedBy": inhibited}}

    def selected(request: web.Request):
        """(matchers, keep(gettable) -> bool, receiver regex) from the query, or a 400 response."""
        try:
            ms = _filters(request)
        except MatcherError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        active, silenced = _flag(request, "active"), _flag(request, "silenced")
        inhibited = _flag(request, "inhibited")
        rx = None
        if request.query.get("receiver"):  # Go's syntax, the whole name: what Alertmanager refuses is a 400 here too
            try:
                rx = full_match(request.query["receiver"])
            except RegexError as exc:
                raise web.HTTPBadRequest(text=f"invalid receiver regex: {exc}") from None

        def keep(g: dict) -> bool:
            st = g["status"]
            if st["silencedBy"] and not silenced or st["inhibitedBy"] and not inhibited:
                return False
            if st["state"] == "active" and not active:
                return False
            return filter_matches(ms, g["labels"])

        return keep, rx

    async def get_alerts(request: web.Request) -> web.Response:
        keep, rx = selected(request)
        now, out = clock(), []
        for entry in alerts.by_fp.values():
            receivers = sorted({r for r, _ in entry["groups"]})
            if rx is not None and not any(rx(r) for r in receivers):
                continue
            g = gettable(entry, now, receivers)
            if keep(g):
                out.append(g)
        out.sort(key=lambda g: (g["labels"].get("alertname", ""), g["fingerprint"]))
        return _json(out)

    async def get_groups(request: web.Request) -> web.Response:
        keep, rx = selected(request)
        now, groups = clock(), {}
        for entry in alerts.by_fp.values():
            for (receiver, key), labels in entry["groups"].items():
                if rx is not None and not rx(receiver):
                    continue
                g = gettable(entry, now, [receiver])
                if keep(g):
                    groups.setdefault((receiver, key), {"labels": labels, "receiver": {"name": receiver},
                                                        "alerts": []})["alerts"].append(g)
        return _json([groups[k] for k in sorted(groups)])

    async def status(request: web.Request) -> web.Response:
        return _json({"cluster": {"status": "disabled", "peers": [], "name": ""},
                      "config": {"original": getattr(alerts.cfg, "original", "") or ""},
                      "uptime": format_time(started), "versionInfo": VERSION})

    async def receivers(request: web.Request) -> web.Response:
        return _json([{"name": r.name} for r in getattr(alerts.cfg, "receivers", [])])

    async def post(request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return _json({"error": f"body is not valid JSON: {exc}"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "body must be a JSON object (a PostableSilence)"}, 400)
        now = clock()
        if body.get("id") is not None and not isinstance(body["id"], str):
            return _json({"error": f"id: expected a string, got {type(body['id']).__name__}"}, 400)
        if body.get("id") and body["id"] not in book.silences.by_id:
            return _json({"error": f"silence {body['id']} not found"}, 404)
        try:
            s = Silence.create(body, now)
        except SilenceError as exc:
            return _json({"error": str(exc)}, 400)
        if body.get("id"):  # Alertmanager's Set: in place when it can, else the old one expires and s gets a new id
            s, old = book.silences.posted(s, now)
            if old is not None:
                await book.expire(old, now)
        await book.put(s)
        return _json({"silenceID": s.id})

    async def list_(request: web.Request) -> web.Response:
        try:
            ms = _filters(request)
        except MatcherError as exc:
            return _json({"error": str(exc)}, 400)
        now = clock()
        return _json([s.to_dict(now) for s in book.list(now) if silence_filter_matches(ms, s)])

    async def get(request: web.Request) -> web.Response:
        s = book.silences.by_id.get(request.match_info["id"])
        if s is None:
            return _json({"error": "silence not found"}, 404)
        return _json(s.to_dict(clock()))

    async def delete(request: web.Request) -> web.Response:
        id = request.match_info["id"]
        if id not in book.silences.by_id:
            return _json({"error": "silence not found"}, 404)
        await book.expire(id, clock())
        return web.Response(status=200)

    async def reload_(request: web.Request) -> web.Response:
        if reload is None:
            return web.Response(status=404, text="no routing file to reload")
        errors = reload()
        if errors:  # as Alertmanager answers: 500 and why; the running version stays
            return web.Response(status=500, text="failed to reload config: " + "\n".join(errors))
        return web.Response(status=200)

    a = web.Application()
    if not silences_only:
        a.router.add_post("/-/reload", reload_)
        a.router.add_get("/api/v2/alerts", get_alerts)
        a.router.add_get("/api/v2/alerts/groups", get_groups)
        a.router.add_get("/api/v2/status", status)
        a.router.add_get("/api/v2/receivers", receivers)
    a.router.add_get("/-/ready", lambda r: web.Response(text="OK"))
    a.router.add_get("/-/healthy", lambda r: web.Response(text="OK"))
    a.router.add_post("/api/v2/silences", post)
    a.router.add_get("/api/v2/silences", list_)
    for prefix in ("/api/v2/silence/", "/api/v2/silences/"):
        a.router.add_get(prefix + "{id}", get)
        a.router.add_delete(prefix + "{id}", delete)
    return a
