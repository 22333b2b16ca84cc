"""The route tree: which receivers and aggregation groups an alert's labels lead to (Alertmanager semantics).

A route matches when all its matchers match; its children are tried in order; the first child
that matches stops the search unless it has ``continue: true``; when no child matches, the route
itself is the destination.  Children inherit ``receiver``, ``owner_receiver``, ``group_by`` and
the three timings; mute/active time intervals are not inherited (as in Alertmanager).

``owner_receiver: true`` sends to the receiver named by the alert's ``owner`` label; the route's
``receiver`` is the fallback when the owner is empty or has no receiver.  Such routes group by
``owner`` as well, so two teams never share a notification.

``incidents: true`` (a kubesight extension, inherited like ``receiver``): the alerts of this route are
notified per incident, not per group.  The alerting stage still groups them, applies silences,
inhibitions and time intervals and waits ``group_wait``; what it would notify it hands to the incident
stage instead (``streams.incidents.hand_off``), which sends the owner of the probable root cause one
notification carrying the incident and every other receiver one informational notice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from alerts.config import RouteConfig, RoutingConfig
from alerts.timeintervals import active
from core.matchers import Matcher, matches_all

DEFAULTS = {"group_wait": 30.0, "group_interval": 300.0, "repeat_interval": 14400.0}


@dataclass(frozen=True, slots=True)
class Route:
    key: str
    matchers: tuple[Matcher, ...]
    receiver: str
    owner_receiver: bool
    group_by: tuple[str, ...] | None  # None: group by all labels ('...')
    continue_: bool
    group_wait: float
    group_interval: float
    repeat_interval: float
    mute_time_intervals: tuple[str, ...]
    active_time_intervals: tuple[str, ...]
    routes: tuple[Route, ...]
    incidents: bool = False  # extension: notified per incident (the incident stage), not per group
    am_key: str = ""  # Alertmanager's Route.Key() when ``key`` carries kubesight's /N (siblings with equal matchers)

    def match(self, labels: dict) -> list[Route]:
        """The routes (this one or descendants) an alert with these labels goes to, in tree order."""
        if not matches_all(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.routes:
            got = child.match(labels)
            found += got
            if got and not child.continue_:
                break
        return found or [self]


def build(cfg: RouteConfig, parent: Route | None = None, key: str = "{}", am_key: str = "{}") -> Route:
    """Compile a validated route config, resolving inherited options.

    A route's key is Alertmanager's ``Route.Key()``: the parent's key, ``/``, then the route's
    matchers sorted (name, value, operator) in braces; the root's is ``{}``.  Two siblings with the
    same matchers would share a key (Alertmanager tells them apart by object): kubesight keeps the
    groups apart by suffixing the later ones' keys with their position (``/2``); what receivers see
    (``amGroupKey``: webhook groupKey, PagerDuty and Opsgenie dedup keys) is Alertmanager's key.
    """
    inherit = parent or Route("", (), "", False, (), False, *DEFAULTS.values(), (), (), ())
    receiver, owner = inherit.receiver, inherit.owner_receiver
    if cfg.receiver:  # '' on a child inherits, as in Alertmanager
        receiver, owner = cfg.receiver, False
    if cfg.owner_receiver is not None:
        owner = cfg.owner_receiver
    group_by = inherit.group_by
    if cfg.group_by:  # an empty list is no setting: Alertmanager inherits the parent's then too
        group_by = None if "..." in cfg.group_by else tuple(cfg.group_by)
    children, seen = [], set()
    for i, c in enumerate(cfg.routes):
        ckey = key + "/" + matchers_string(c.matchers)
        if ckey in seen:
            ckey += f"/{i}"
        seen.add(ckey)
        children.append(ckey)
    route = Route(
        key=key,
        matchers=tuple(cfg.matchers),
        receiver=receiver,
        owner_receiver=owner,
        group_by=group_by,
        continue_=cfg.continue_,
        group_wait=inherit.group_wait if cfg.group_wait is None else cfg.group_wait,
        group_interval=inherit.group_interval if cfg.group_interval is None else cfg.group_interval,
        repeat_interval=inherit.repeat_interval if cfg.repeat_interval is None else cfg.repeat_interval,
        mute_time_intervals=tuple(cfg.mute_time_intervals),
        active_time_intervals=tuple(cfg.active_time_intervals),
        routes=(),
        incidents=inherit.incidents if cfg.incidents is None else cfg.incidents,
        am_key=am_key if am_key != key else "",
    )
    kids = tuple(build(c, route, k, am_key + "/" + matchers_string(c.matchers))
                 for c, k in zip(cfg.routes, children, strict=True))
    object.__setattr__(route, "routes", kids)
    return route


_OP_ORDER = {"=": 0, "!=": 1, "=~": 2, "!~": 3}  # Alertmanager's MatchType values, its last sort key
_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v", "\\": "\\\\", '"': '\\"'}
_PLAIN = re.compile(r'[ !#-\[\]-~]*')  # printable ASCII without " and \\: quoted as it is


def go_quote(value: str) -> str:
    """A string as Go's ``%q`` writes it (Alertmanager's label sets and matchers in group keys).

    >>> print(go_quote('a "b" \\\\ c'), go_quote("tab\\there"), go_quote("é✓"), go_quote("\\x00\\x7f\\u200b"))
    "a \\"b\\" \\\\ c" "tab\\there" "é✓" "\\x00\\x7f\\u200b"
    """
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:  # what _PLAIN matches
        return f'"{value}"'
    out = []
    for c in value:
        esc = _GO_ESCAPES.get(c)
        if esc is not None:
            out.append(esc)
        elif c.isprintable():  # Go's strconv.IsPrint: letters, marks, numbers, punctuation, symbols, ASCII space
            out.append(c)
        else:
            n = ord(c)
            out.append(f"\\x{n:02x}" if n < 0x80 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
    return '"' + "".join(out) + '"'


def matchers_string(matchers) -> str:
    """Alertmanager's ``labels.Matchers.String()`` of a route's matchers, sorted as ``NewRoute`` sorts them.

    >>> from core.matchers import parse_matchers
    >>> matchers_string(parse_matchers('{team="b", severity=~"crit.*", team="a"}'))
    '{severity=~"crit.*",team="a",team="b"}'
    """
    ms = sorted(matchers, key=lambda m: (m.name, m.value, _OP_ORDER[m.op]))
    return "{" + ",".join(f"{m.name}{m.op}{go_quote(m.value)}" for m in ms) + "}"


@dataclass(slots=True)  # made per alert: not frozen (cheaper to build); never changed after
class Destination:
    """One place an alert goes: the receiver, the aggregation group key and its labels, and the route."""

    receiver: str
    group_key: str
    group_labels: dict
    route: Route

    @property
    def public_key(self) -> str:
        """Alertmanager's group key, where it differs from ``group_key`` (else "")."""
        return f"{self.route.am_key}:{label_string(self.group_labels)}" if self.route.am_key else ""


def label_string(labels: dict) -> str:
    """Alertmanager's ``model.LabelSet.String()``: sorted, Go-quoted values, ``, `` between pairs.

    >>> label_string({"namespace": "shop", "alertname": 'say "hi"'})
    '{alertname="say \\\\"hi\\\\"", namespace="shop"}'
    """
    return "{" + ", ".join(f"{k}={go_quote(v)}" for k, v in sorted(labels.items())) + "}"


class Router:
    """Routes alerts through the compiled tree; the same code runs in the worker and in ``routes test``."""

    def __init__(self, cfg: RoutingConfig):
        self.root = build(cfg.route)
        self.receivers = {r.name for r in cfg.receivers}
        self.intervals = {t.name: t.time_intervals for t in cfg.time_intervals}
        self.by_key = {}
        stack = [self.root]
        while stack:
            r = stack.pop()
            self.by_key[r.key] = r
            stack.extend(r.routes)
        # group keys start with their route's key and ':' (a child's key goes on with '/', never ':')
        self.incident_prefixes = tuple(k + ":" for k, r in self.by_key.items() if r.incidents)

    def per_incident(self, group_key: str) -> bool:
        """Whether the group's route notifies per incident (``incidents: true``)."""
        return group_key.startswith(self.incident_prefixes)

    def receiver_for(self, route: Route, labels: dict) -> str:
        owner = labels.get("owner", "")
        if route.owner_receiver and owner in self.receivers:
            return owner
        return route.receiver

    def destinations(self, labels: dict) -> list[Destination]:
        out = []
        for route in self.root.match(labels):
            if route.group_by is None:
                glabels = {k: v for k, v in labels.items() if v != ""}  # an empty label is no label
            else:
                names = route.group_by + (("owner",) if route.owner_receiver else ())
                glabels = {k: labels[k] for k in names if labels.get(k, "") != ""}
            receiver = self.receiver_for(route, labels)
            out.append(Destination(receiver, f"{route.key}:{label_string(glabels)}", glabels, route))
        return out

    def muted(self, route: Route, now: float) -> bool:
        """Whether the route's time intervals silence it at ``now`` (mute intervals, or outside its active ones)."""
        if any(active(self.intervals[n], now) for n in route.mute_time_intervals):
            return True
        if route.active_time_intervals:
            return not any(active(self.intervals[n], now) for n in route.active_time_intervals)
        return False
