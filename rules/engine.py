"""The rule engine: signals in, Alert transitions out; pure, event-time, state in a given mapping.

State layout (one key per rule and group, so a group's whole state moves as one changelog
record): ``rule|<alert>#<hash>|<group>`` -> ``{"s": 0|1|2 (inactive, pending, firing), "a": activeAt,
"e": last evaluation time, "l": labels, "n": annotations, "c": condition state}``, plus
``rule|~due`` (the earliest timer) and ``rule|~ver`` (the rule set the timers were scanned for and
when).  ``tick`` scans the partition's rule keys only when a timer is due, the rule set changed,
or an hour of event time passed (dropping idle groups).

Time: only event time (record times and the watermark ``now``).  Every transition happens at an
exact time (a pending rule fires at activeAt + ``for``, a window expires at its last event +
``window``), whatever the tick cadence; a timer due at t applies before the records of time t.
A firing alert's ``startsAt`` is the time its condition began to hold (as in Prometheus).

Co-partitioning: events are keyed in Kafka by entity (``Entity.key()``: workload, else object,
else node) and samples by series.  A group key is always that key (plus, for events, the node
of a workload's pod and the rule's ``group_by`` values), so a group never spans partitions: ``group_by`` can split a group further
(by ``xid``, ``container``...) but never merge entities.  Two kinds of rule need signals of several keys
together, and get them through re-keyed copies (``Engine.rekey``), which only those rules see: ``anomaly_vector``
(several series of one entity: the worker copies their samples back to ``samples`` keyed by the entity) and
``event_count`` with ``by`` (counting across entities, "50 FailedScheduling in a namespace": the worker copies the
matching events back to ``events`` keyed by the ``by`` labels); either key holds the signal's ``cluster`` too
(``entity_key``), so such a group never spans clusters.

>>> from rules.load import load_packs
>>> from core.records import Event, Entity
>>> import pathlib, tempfile
>>> p = pathlib.Path(tempfile.mkdtemp()) / "p.yaml"
>>> _ = p.write_text('''apiVersion: kubesight.io/v1
... kind: RulePack
... metadata: {name: demo, version: "1"}
... rules:
...   - alert: KubeBackOff
...     match: {source: k8s, reason: BackOff}
...     condition: {type: event_count, count: 1, window: 10m}
...     annotations: {summary: "{{ labels.pod }} backing off: {{ message }}"}
... ''')
>>> eng, state = Engine(load_packs([p])), {}
>>> ev = Event(source="k8s", reason="BackOff", type="Warning", time=0.0, message="restarting",
...            entity=Entity(namespace="shop", kind="Pod", name="cart-1", owner="team-a"))
>>> [(a.status, a.labels["alertname"], a.labels["owner"], a.annotations["summary"], a.source)
...  for a in eng.process(ev, state, 0.0)]
[('firing', 'KubeBackOff', 'team-a', 'cart-1 backing off: restarting', 'demo/KubeBackOff@1')]
>>> [(a.status, a.endsAt) for a in eng.tick(600.0, state)]
[('resolved', 600.0)]
"""

from __future__ import annotations

from collections.abc import MutableMapping

from core.records import Alert, Event, Sample
from core.statememo import PerState
from rules import conditions as C
from rules.ruleset import CompiledRule, RuleSet

PREFIX = "rule|"
DUE = "rule|~due"
VER = "rule|~ver"
GC_EVERY = 3600.0  # idle groups (no timer of their own) are dropped by a full scan at least this often
ANOMALY_FORGET = 86400.0  # an idle anomaly group's detector is dropped once its series has been silent this long
# and past this many anomaly groups in one partition's state (a detector each, ~1.3 KB live; 2 new series a second
# make ~170k within ANOMALY_FORGET), a new one drops the longest-idle inactive ones to 90 % of it: per partition, so
# what a partition evicts hangs on its own signals only (replays stay deterministic per partition)
ANOMALY_MAX = 20_000
_NONE: list = []
_NEG = float("-inf")
_INF = float("inf")
QUIET_MARGIN = 1.0  # s: near the time a group may be dropped, the scan tests it exactly (float rounding)


class _AnomalyState(dict):
    """A group state holding a live detector; saved with the detector's snapshot."""

    def snapshot(self) -> dict:
        d = dict(self)
        c = dict(d["c"])
        det = c.get("det")
        if det is not None and not isinstance(det, dict):
            c["det"] = det.snapshot()
        d["c"] = c
        return d


def event_view(ev: Event) -> dict:
    """What event matchers and templates see: the event's labels plus entity and event fields,
    ``pod`` (for Pods) and ``object`` (the workload, else ``Kind/name``, else the node)."""
    e = ev.entity
    view = dict(ev.labels)
    view.update(cluster=e.cluster, namespace=e.namespace, kind=e.kind, name=e.name, node=e.node,
                workload=e.workload, owner=e.owner, type=ev.type, severity=ev.severity,
                source=ev.source, reason=ev.reason)
    if e.kind == "Pod":
        view["pod"] = e.name
    view["object"] = e.workload or (f"{e.kind}/{e.name}" if e.kind and e.name else e.node)
    return view


def event_identity(ev: Event) -> dict:
    """Identity labels of an event's group, mirroring ``Entity.key()`` (workload, object, node).

    A workload's signals are split by node as well, so that its alerts carry ``node`` and a node
    alert (NotReady, maintenance reboot) can inhibit them; the split stays within the partition.
    """
    e = ev.entity
    if e.workload:
        d = {"cluster": e.cluster, "namespace": e.namespace, "workload": e.workload, "node": e.node}
    elif e.kind and e.name and e.kind != "Node":
        d = {"cluster": e.cluster, "namespace": e.namespace}
        if e.kind == "Pod":
            d["pod"] = e.name
        else:
            d["kind"], d["name"] = e.kind, e.name
        if e.node:
            d["node"] = e.node
    elif e.node or e.name:
        d = {"cluster": e.cluster, "node": e.node or e.name}
    else:
        d = {"cluster": e.cluster, "namespace": e.namespace}
    return {k: v for k, v in d.items() if v}


def _str_labels(labels: dict) -> dict:
    """Alert label values are strings (Alertmanager's contract), whatever the signal carried; an empty one is no
    label (Alertmanager drops those as alerts arrive, and the fingerprint ignores them)."""
    return {k: v if v.__class__ is str else str(v) for k, v in labels.items() if v is not None and v != ""}


class _EventCtx:
    """The event being applied, with its view and identity computed once, when first needed."""

    __slots__ = ("ev", "_view", "_ident")

    def __init__(self, ev: Event):
        self.ev = ev
        self._view = None
        self._ident = None

    def view(self) -> dict:
        if self._view is None:
            self._view = event_view(self.ev)
        return self._view

    def labels(self, rule: CompiledRule) -> dict:
        if self._ident is None:
            self._ident = event_identity(self.ev)
        labels = dict(rule.labels)
        labels.update(self._ident)
        if rule.group_by:
            view = self.view()
            for g in rule.group_by:
                v = view.get(g)
                if v:
                    labels[g] = v
        if self.ev.entity.owner:
            labels["owner"] = self.ev.entity.owner
        labels["alertname"] = rule.alert
        labels["severity"] = rule.severity
        return labels

    def message(self, c: dict) -> str:
        return c.get("m", self.ev.message)


class _SampleCtx:
    """The sample being applied: its labels are its identity."""

    __slots__ = ("s",)

    def __init__(self, s: Sample):
        self.s = s

    def view(self) -> dict:
        return self.s.labels

    def labels(self, rule: CompiledRule) -> dict:
        labels = dict(rule.labels)
        labels.update(self.s.labels)
        labels.pop(MARK, None)  # kubesight's mark of a derived or re-keyed signal is not the alert's (upstream has none)
        labels["alertname"] = rule.alert
        labels["severity"] = rule.severity
        return labels

    def message(self, c: dict) -> str:
        return ""


ENTITY = "entity"  # value of the ``kubesight`` label on a signal re-keyed by its entity or group (see Engine.rekey)
MARK = "kubesight"


def entity_key(by: tuple, labels: dict) -> str | None:
    """The Kafka key (as text) of an entity named by the ``by`` labels, or None if one is missing.

    Its ``cluster`` comes first when the signal has one, named in ``by`` or not: several clusters feed one kubesight
    and name their nodes, instances and namespaces alike, so a group never spans clusters (as a scalar rule's series,
    which holds every label, never does); a signal without one keys as before. ``by: [namespace]`` and
    ``by: [cluster, namespace]`` make the same key.

    >>> entity_key(("instance",), {"cluster": "a", "instance": "10.0.0.5:9100"})
    'entity|cluster=a,instance=10.0.0.5:9100'
    >>> entity_key(("instance",), {"instance": "10.0.0.5:9100"})
    'entity|instance=10.0.0.5:9100'
    >>> entity_key(("cluster", "instance"), {"cluster": "a", "instance": "10.0.0.5:9100"})
    'entity|cluster=a,instance=10.0.0.5:9100'
    """
    cluster = labels.get("cluster")
    vals = [f"cluster={cluster}"] if cluster and "cluster" not in by else []
    for b in by:
        v = labels.get(b)
        if not v:
            return None
        vals.append(f"{b}={v}")
    return "entity|" + ",".join(vals)


class _VectorCtx(_SampleCtx):
    """A re-keyed sample applied to an anomaly_vector rule: the entity (``by`` labels, and its ``cluster``, as
    ``entity_key`` groups it) is its identity."""

    __slots__ = ()

    def labels(self, rule: CompiledRule) -> dict:
        labels = dict(rule.labels)
        cluster = self.s.labels.get("cluster")
        if cluster:
            labels["cluster"] = cluster
        for b in rule.cond.by:
            labels[b] = self.s.labels[b]
        labels["alertname"] = rule.alert
        labels["severity"] = rule.severity
        return labels


class _AggCtx(_EventCtx):
    """A re-keyed event applied to an event_count rule with ``by``: the ``by`` labels (and the event's ``cluster``,
    as ``entity_key`` groups it) are its group's identity."""

    __slots__ = ()

    def labels(self, rule: CompiledRule) -> dict:
        labels = dict(rule.labels)
        view = self.view()
        if view.get("cluster"):
            labels["cluster"] = view["cluster"]
        for b in rule.cond.by:
            labels[b] = view[b]
        labels["alertname"] = rule.alert
        labels["severity"] = rule.severity
        return labels


def _aggregates(rule: CompiledRule) -> bool:
    return rule.on == "event" and rule.cond.type == "event_count" and bool(rule.cond.by)


class Engine:
    """Evaluates a RuleSet; ``process`` per signal, ``tick`` on the event-time watermark."""

    def __init__(self, ruleset: RuleSet, registry=None, anomaly_max: int = ANOMALY_MAX):
        self.ruleset = ruleset
        self.anomaly_max = anomaly_max
        self.evicted = 0  # anomaly groups dropped by ``anomaly_max`` (their detectors learn anew if the series returns)
        self._registry = registry
        self._by_event = ruleset.by_event
        self._by_source = ruleset.by_source
        self._by_metric = {k: v for k, v in ruleset.by_metric.items() if v}
        self._vector = frozenset(k for k, v in self._by_metric.items()
                                 if any(r.cond.type == "anomaly_vector" for r in v))
        self._event_rules: dict = {}  # (source, reason) -> the rules an event may reach, or None
        self._agg_rules: dict = {}  # (source, reason) -> those of them that aggregate (event_count with by)
        # event_count rules with by (their events are re-keyed, and only the copies reach them), named once here
        self._aggregating = frozenset(r.sid for r in ruleset.rules if _aggregates(r))
        # groups of a state a full scan may skip: key -> (its deadline, the time before which it has no timer
        # due and cannot be dropped), as the last scan or the last signal applied to it left the group.
        # In memory only (rebuilt by scanning after a restore or a reload: a new state or a new engine)
        self._quiet = PerState(lambda state: {})
        # anomaly groups of a state, as counted by the last ``_room`` scan plus those created since (deletions are not
        # counted: at most an early scan), or None (not counted since a restore or a reload)
        self._anomalies = PerState(lambda state: [None])
        # labels -> the team owning what they name ("" if unknown), asked for a signal whose labels name no owner
        # (a scraped series: streams.owners); None: none asked. The team joins the alert's labels while it fires
        self.owner_of = None
        # (labels, source) -> the address of a page showing the alert (``streams.stages.board_link``: the board's
        # drill-down under the settings' ``board_url``), its ``generatorURL``; None: none (""). Given, not read from
        # the environment: a replay links where the settings say.  Asked per transition, never per signal
        self.generator_url = None

    # ------------------------------------------------------------ entry points

    def rules_for(self, rec):
        """The rules a signal may reach (a non-empty tuple), or None: most signals reach none."""
        if type(rec) is Sample:
            return self._by_metric.get(rec.name)
        if type(rec) is Event:
            k = (rec.source, rec.reason)
            try:
                return self._event_rules[k]
            except KeyError:
                return self._event_rules_for(k)
        return None

    def reaches(self, rtype: type, key) -> bool:
        """Whether a signal may reach a rule, by its type and routing key (a sample's name, an event's
        ``(source, reason)``): ``rules_for`` of every such signal is then not None (the hot path memoises it)."""
        if rtype is Sample:
            return key in self._by_metric
        if rtype is Event:
            rules = self._event_rules.get(key, _NONE)
            return (rules if rules is not _NONE else self._event_rules_for(key)) is not None
        return False

    def _event_rules_for(self, k: tuple):
        rules = self._by_event.get(k)
        extra = self._by_source.get(k[0])
        if extra:
            rules = rules + extra if rules else extra
        if len(self._event_rules) >= 100_000:  # reasons are open-ended: keep the memo bounded
            self._event_rules.clear()
        rules = self._event_rules[k] = rules or None
        return rules

    def _rekey_event(self, ev: Event) -> list[tuple[bytes, Event]]:
        """Copies of an event for the event_count rules with ``by`` it matches, each keyed by its ``by`` labels:
        events are keyed by entity, so one namespace's pods live on many partitions; the copies of one group meet
        on one (the worker produces them back to the events topic; only copies reach those rules)."""
        k = (ev.source, ev.reason)
        rules = self._agg_rules.get(k, _NONE)
        if rules is _NONE:  # the aggregating ones of the rules it may reach, remembered per (source, reason)
            rules = tuple(r for r in self.rules_for(ev) or () if r.sid in self._aggregating)
            if len(self._agg_rules) >= 100_000:
                self._agg_rules.clear()
            self._agg_rules[k] = rules
        if not rules:
            return _NONE
        out = _NONE
        view = seen = None
        for rule in rules:
            if rule.kinds is not None and ev.entity.kind not in rule.kinds:
                continue
            if rule.reasons is not None and ev.reason not in rule.reasons or ev.source not in rule.sources:
                continue
            if view is None:
                view = event_view(ev)
            if rule.matchers and not all(m.matches(view) for m in rule.matchers):
                continue
            key = entity_key(rule.cond.by, view)
            if key is None or (seen is not None and key in seen):
                continue
            if out is _NONE:
                out, seen = [], set()
            seen.add(key)
            out.append((key.encode(), Event(ev.source, ev.reason, ev.time, ev.type, ev.severity, ev.entity,
                                            {**ev.labels, MARK: ENTITY}, ev.message, ev.count, ev.id)))
        return out

    def process(self, rec, state: MutableMapping, now: float | None = None) -> list[Alert]:
        """Apply one signal; ``now`` is the partition watermark (defaults to the record's time)."""
        rules = self.rules_for(rec)
        if rules is None:
            return _NONE
        return self.apply(rec, rules, state, now)

    def apply(self, rec, rules, state: MutableMapping, now: float | None = None) -> list[Alert]:
        """``process`` for a signal whose ``rules_for`` is ``rules`` (not None)."""
        t = rec.time if now is None or now < rec.time else now
        if type(rec) is Event:
            return self._process_event(rec, rules, state, t)
        return self._process_sample(rec, rules, state, t)

    def rekey(self, rec) -> list[tuple[bytes, Sample]]:
        """Copies of a sample for the anomaly_vector rules it feeds, each keyed by its entity.

        Samples are keyed by series, so one pod's CPU and latency live on different partitions; a
        vector rule needs them together. The worker produces these copies (label
        ``kubesight="entity"``) back to the samples topic under the entity's key (``by`` labels and cluster),
        as derived signals re-key their partials; there the copies of every metric of one entity
        meet on one partition, and only copies reach vector rules (originals reach the others).
        ``rules test`` runs the same: every sample and its copies on its one state.
        """
        if type(rec) is Event:
            return self._rekey_event(rec) if self._aggregating and MARK not in rec.labels else _NONE
        if type(rec) is not Sample or rec.name not in self._vector or rec.labels.get(MARK) not in (None, "derived"):
            return _NONE
        rules = self._by_metric[rec.name]
        out = _NONE
        seen = None
        for rule in rules:
            if rule.cond.type != "anomaly_vector":
                continue
            if rule.matchers and not all(m.matches(rec.labels) for m in rule.matchers):
                continue
            key = entity_key(rule.cond.by, rec.labels)
            if key is None or (seen is not None and key in seen):
                continue
            if out is _NONE:
                out, seen = [], set()
            seen.add(key)
            out.append((key.encode(), Sample(rec.name, rec.value, rec.time, {**rec.labels, MARK: ENTITY})))
        return out

    def tick(self, now: float, state: MutableMapping) -> list[Alert]:
        """Fire and resolve what timers say at ``now``; orphaned states (rule gone) resolve and go."""
        due = state.get(DUE)
        ver = state.get(VER)
        if (type(ver) is list and ver[0] == self.ruleset.digest and (due is None or now < due)
                and now < ver[1] + GC_EVERY):
            return _NONE
        out: list[Alert] = []
        nxt = None
        by_sid = self.ruleset.by_sid
        quiet = self._quiet(state)
        for key in [k for k in state if k.startswith(PREFIX) and k not in (DUE, VER)]:
            q = quiet.get(key)
            if q is not None and q[1] > now:  # unchanged since a scan found no timer and nothing to drop before q[1]
                d = q[0]
                if d is not None and (nxt is None or d < nxt):
                    nxt = d
                continue
            st = state[key]
            rest = key[len(PREFIX):]
            sid = rest.split("|", 1)[0]
            rule = by_sid.get(sid)
            if rule is None:
                if st.get("s") == 2:
                    labels, origin = _str_labels(st["l"]), st.get("o", "")
                    out.append(Alert(labels=labels, annotations=st.get("n") or {}, status="resolved",
                                     startsAt=st["a"], endsAt=now, source=origin,
                                     generatorURL=self._link(labels, origin)))
                del state[key]
                quiet.pop(key, None)
                continue
            d = self._deadline(rule, st)
            if d is None or d > now:  # no timer of this group is due: only an idle group may go
                if st["s"] == 0 and self._empty(rule, st, now):
                    del state[key]
                    quiet.pop(key, None)
                    continue
            else:
                st = self._restore(rule, st)
                emitted = self._advance(rule, st, now)
                if emitted:
                    out.extend(emitted)
                if st["s"] == 0 and self._empty(rule, st, now):
                    del state[key]
                    quiet.pop(key, None)
                    continue
                state[key] = st
                d = self._deadline(rule, st)
            quiet[key] = (d, self._quiet_until(rule, st, d))
            if d is not None and (nxt is None or d < nxt):
                nxt = d
        if nxt is None:
            if DUE in state:
                del state[DUE]
        elif state.get(DUE) != nxt:
            state[DUE] = nxt
        state[VER] = [self.ruleset.digest, now]
        if len(out) > 1:
            out.sort(key=lambda a: (a.endsAt if a.status == "resolved" else a.startsAt, a.fingerprint))
        return out

    # ------------------------------------------------------------ events

    def _process_event(self, ev: Event, rules, state, t: float) -> list[Alert]:
        ctx = None
        gkey = None
        quiet = None
        out = _NONE
        copy = ev.labels.get(MARK) == ENTITY  # re-keyed: for event_count rules with by only
        for rule in rules:
            if rule.kinds is not None and ev.entity.kind not in rule.kinds:
                continue
            if (rule.sid in self._aggregating) != copy:
                continue
            resolving = ev.reason in rule.resolve_reasons
            if not resolving and (rule.reasons is not None and ev.reason not in rule.reasons
                                  or ev.source not in rule.sources):
                continue
            if ctx is None:
                ctx = _AggCtx(ev) if copy else _EventCtx(ev)
            if rule.matchers and not resolving:
                view = ctx.view()
                if not all(m.matches(view) for m in rule.matchers):
                    continue
            if copy:
                agg = entity_key(rule.cond.by, ctx.view())
                if agg is None:
                    continue
                key = f"{PREFIX}{rule.sid}|{agg}"
            else:
                if gkey is None:
                    e = ev.entity
                    gkey = e.key().decode()
                    if e.workload and e.node:
                        gkey += "|@" + e.node  # a workload's pods on one node: inhibitable by node alerts
                key = f"{PREFIX}{rule.sid}|{gkey}"
            if rule.group_by:
                view = ctx.view()
                if resolving and not all(view.get(g) for g in rule.group_by):
                    # a resolving event that does not carry the labels a state rule groups by (Recovered says no
                    # container) clears every group of its entity: it matched none and the alert never resolved
                    # (rare: scans the state once, for this rule and entity only)
                    keys = [k for k in state if k.startswith(key + "|")]
                else:
                    keys = [key + "|" + "|".join(str(view.get(g, "")) for g in rule.group_by)]
            else:
                keys = [key]
            if quiet is None:
                quiet = self._quiet(state)
            for key in keys:
                emitted = self._event_group(rule, key, state, t, ctx, ev, resolving, quiet)
                if emitted:
                    out = emitted if out is _NONE else out + emitted
        return out

    def _event_group(self, rule, key: str, state, t: float, ctx, ev: Event, resolving: bool, quiet) -> list[Alert]:
        """One event applied to one group of one rule: its timers up to now, the condition, the transition."""
        q = quiet.pop(key, None)  # about to change: _settle says anew what a scan may skip
        st = state.get(key)
        if st is None:
            if resolving:
                return _NONE  # nothing to clear
            st = {"s": 0, "a": 0.0, "e": _NEG, "c": {}}
            te = t
            emitted = _NONE  # a new group has no timer
        else:
            te = t if t > st["e"] else st["e"]
            # its timers up to te first; none is due when the group's deadline, as last noted, is later
            emitted = _NONE if q is not None and (q[0] is None or q[0] > te) else self._advance(rule, st, te)
        ct = rule.cond.type
        c = st["c"]
        if ct == "event_count":
            C.ec_update(rule.cond, c, te, ev)
        elif ct == "state":
            C.st_update(rule.cond, c, te, ev, resolving)
        else:  # absent
            C.ab_update(rule.cond, c, ev.time, None)
        return self._settle(rule, st, te, ctx, key, state, emitted, quiet)

    # ------------------------------------------------------------ samples

    def _process_sample(self, s: Sample, rules, state, t: float) -> list[Alert]:
        ctx = None
        gkey = None
        quiet = None
        out = _NONE
        copy = s.labels.get(MARK) == ENTITY  # a re-keyed copy: for anomaly_vector rules only
        for rule in rules:
            vector = rule.cond.type == "anomaly_vector"
            if vector != copy:
                continue
            if rule.matchers and not all(m.matches(s.labels) for m in rule.matchers):
                continue
            if vector:
                ekey = entity_key(rule.cond.by, s.labels)
                if ekey is None:
                    continue
                key = f"{PREFIX}{rule.sid}|{ekey}"
                vctx = _VectorCtx(s)
            else:
                if gkey is None:
                    gkey = s.series()
                    ctx = _SampleCtx(s)
                key = f"{PREFIX}{rule.sid}|{gkey}"
            if quiet is None:
                quiet = self._quiet(state)
            q = quiet.pop(key, None)  # about to change: _settle says anew what a scan may skip
            st = state.get(key)
            if st is None:
                st = {"s": 0, "a": 0.0, "e": _NEG, "c": {}}
                if rule.detector is not None:
                    self._room(state, quiet)
            st = self._restore(rule, st)
            te = t if t > st["e"] else st["e"]
            emitted = _NONE if q is not None and (q[0] is None or q[0] > te) else self._advance(rule, st, te)
            ct = rule.cond.type
            c = st["c"]
            if ct == "threshold":
                C.th_update(rule.cond, c, te, s)
            elif ct == "burn_rate":
                C.br_update(rule.cond, c, te, s)
            elif ct == "predict":
                C.pr_update(rule.cond, c, te, s)
            elif ct == "anomaly":
                C.an_update(rule.cond, c, te, s, c["det"])
            elif vector:
                C.av_update(rule.cond, c, te, s, c["det"], rule.metrics)
            else:
                C.ab_update(rule.cond, c, s.time, s.value)
            emitted = self._settle(rule, st, te, vctx if vector else ctx, key, state, emitted, quiet)
            if emitted:
                out = emitted if out is _NONE else out + emitted
        return out

    def _settle(self, rule: CompiledRule, st: dict, te: float, ctx, key: str, state, emitted, quiet: dict):
        """After a condition update: evaluate, then save the group's state (or drop it when empty), with its
        deadline in the state's earliest timer and what a scan may skip of it in ``quiet`` (as a scan would
        find it: so a scan looks only at groups whose timer is due, not at every group changed since the last)."""
        got = self._eval(rule, st, te, ctx)
        if got:
            emitted = got if emitted is _NONE else emitted + got
        if st["s"] == 0 and self._empty(rule, st, te):
            if key in state:
                del state[key]
        else:
            state[key] = st
            d = self._deadline(rule, st)
            if d is not None:
                due = state.get(DUE)
                if due is None or d < due:
                    state[DUE] = d
            quiet[key] = (d, self._quiet_until(rule, st, d))
        return emitted

    def _room(self, state, quiet: dict) -> None:
        """Count a new anomaly group in ``state``; when the state holds ``anomaly_max`` of them already, drop the
        longest-idle inactive ones (oldest last point first) down to 90 % of it."""
        box = self._anomalies(state)
        if box[0] is not None and box[0] < self.anomaly_max:
            box[0] += 1
            return
        by_sid = self.ruleset.by_sid
        groups = []
        for k, st in state.items():
            if k.startswith(PREFIX) and k != DUE and k != VER:
                rule = by_sid.get(k[len(PREFIX):].split("|", 1)[0])
                if rule is not None and rule.detector is not None:
                    groups.append((st["c"].get("lt", _NEG) if st["s"] == 0 else _INF, k))
        n = len(groups)
        if n >= self.anomaly_max:
            groups.sort()
            for lt, k in groups[: n - self.anomaly_max * 9 // 10]:
                if lt == _INF:
                    break  # pending or firing: kept (its resolution is due)
                del state[k]
                quiet.pop(k, None)
                n -= 1
                self.evicted += 1
        box[0] = n + 1

    # ------------------------------------------------------------ what a scan may skip

    @staticmethod
    def _quiet_until(rule: CompiledRule, st: dict, d) -> float:
        """Until when a scan may skip this unchanged group: its timer (``d``), and for an inactive one the time it
        may be dropped (event_count: its last event + window, less a margin; other kinds: never skipped)."""
        if st["s"]:
            e = _INF  # a pending or firing group is never dropped by a scan, only by its timer
        elif rule.cond.type == "event_count":
            ts = st["c"].get("t")
            if not ts:
                return _NEG
            e = ts[-1] + rule.cond.window - QUIET_MARGIN
        else:
            return _NEG
        return e if d is None or d > e else d

    # ------------------------------------------------------------ lifecycle

    def _restore(self, rule: CompiledRule, st: dict) -> dict:
        """Anomaly states carry a live detector; build it (new, or from a restored snapshot)."""
        if rule.cond.type not in ("anomaly", "anomaly_vector") or type(st) is _AnomalyState:
            return st
        st = _AnomalyState(st)
        c = st["c"] = dict(st["c"])
        reg = self._registry
        if reg is None:
            from rules.load import default_registry

            reg = self._registry = default_registry()
        det = c.get("det")
        if det is None:
            c["det"] = reg.build(rule.detector[0], dict(rule.detector[1]))
        elif isinstance(det, dict):
            c["det"] = reg.restore(det)
        return st

    def _holds(self, rule: CompiledRule, c: dict, t: float, active: bool) -> bool:
        ct = rule.cond.type
        if ct == "event_count":
            return C.ec_holds(rule.cond, c, t, active)
        if ct == "state":
            return C.st_holds(rule.cond, c, t, active)
        if ct == "threshold":
            return C.th_holds(rule.cond, c, t, active, rule.stale_after)
        if ct == "burn_rate":
            return C.br_holds(rule.cond, c, t, active, rule.stale_after)
        if ct == "predict":
            return C.pr_holds(rule.cond, c, t, active, rule.stale_after)
        if ct == "absent":
            return C.ab_holds(rule.cond, c, t, active)
        return C.an_holds(rule.cond, c, t, active, rule.stale_after)

    def _cond_deadline(self, rule: CompiledRule, st: dict):
        ct = rule.cond.type
        c = st["c"]
        if ct == "event_count":
            return C.ec_deadline(rule.cond, c)
        if ct == "state":
            return C.st_deadline(rule.cond, c)
        if ct == "absent":
            if "lt" not in c:
                return None
            if st["s"] == 0 and c["lt"] + rule.cond.after > st["e"]:
                return c["lt"] + rule.cond.after
            return c["lt"] + rule.cond.forget if rule.cond.forget else None
        # threshold, anomaly: going stale matters only to a pending or firing group; idle ones are
        # garbage-collected by the periodic full scan
        stale = c["lt"] + rule.stale_after if "lt" in c and st["s"] else None
        if ct == "burn_rate":  # and a holding pair's own `for` running out
            d = C.br_deadline(rule.cond, c, st["e"])
            if d is not None and (stale is None or d < stale):
                return d
        return stale

    def _deadline(self, rule: CompiledRule, st: dict):
        """The next time this group may change without new data (strictly after its last evaluation)."""
        d = self._cond_deadline(rule, st)
        if st["s"] == 1:
            p = st["a"] + rule.for_
            d = p if d is None or p < d else d
        return d if d is not None and d > st["e"] else None

    def _empty(self, rule: CompiledRule, st: dict, t: float) -> bool:
        ct = rule.cond.type
        c = st["c"]
        if ct == "event_count":
            return C.ec_empty(rule.cond, c, t)
        if ct == "state":
            return C.st_empty(rule.cond, c, t)
        if ct == "threshold":
            return "lt" not in c or not rule.cond.window or t >= c["lt"] + rule.stale_after
        if ct in ("burn_rate", "predict"):
            # its windows' history is the state: kept while any of it is inside the longest window (PromQL's
            # rate[3d] still sees the days before a scrape gap), so the outcome does not hang on when ticks come
            longest = max(rule.cond.lengths) if ct == "burn_rate" else rule.cond.window
            return "lt" not in c or t >= c["lt"] + max(rule.stale_after, longest)
        if ct == "absent":
            return bool(rule.cond.forget) and "lt" in c and t >= c["lt"] + rule.cond.forget
        # anomaly, anomaly_vector: what the detector learnt is the state, kept across an outage (a node rebooting, a
        # scrape failing for an hour) but not for a series gone for good (a node the autoscaler removed, a pod
        # replaced): each would keep its few KB in the store and the changelog for ever
        return "lt" not in c or t >= c["lt"] + max(rule.stale_after, ANOMALY_FORGET)

    def _advance(self, rule: CompiledRule, st: dict, t: float) -> list[Alert]:
        """Apply every timer of this group that falls in (last evaluation, t]."""
        out = _NONE
        for _ in range(8):
            d = self._deadline(rule, st)
            if d is None or d > t:
                break
            got = self._eval(rule, st, d, None)
            if got:
                out = got if out is _NONE else out + got
        return out

    def _eval(self, rule: CompiledRule, st: dict, t: float, ctx) -> list[Alert]:
        """Re-evaluate the condition at ``t`` and move pending/firing/inactive; returns transitions.

        ``ctx`` is the signal being applied (labels and annotations are taken from it), or None
        for a timer (the stored ones are used).  Annotations are rendered while pending, so a
        firing alert says what held just before it fired.
        """
        if t > st["e"]:
            st["e"] = t
        s = st["s"]
        c = st["c"]
        out = _NONE
        # a threshold's resolve level (hysteresis) holds once firing; a pending alert clears as soon as its condition
        # is false, as in Prometheus (it stayed pending below the threshold, and fired where upstream never does)
        if self._holds(rule, c, t, s == 2):
            if ctx is not None:
                labels = self._labels(ctx, rule, st["l"].get("owner") if s == 2 else None)
                if s == 2:
                    if MARK in st["l"] and MARK not in labels:  # firing since before alerts lost the mark
                        labels[MARK] = st["l"][MARK]  # (2026-11-29): the same alert until it resolves, not a new one
                    if labels != st["l"]:
                        # identity changed under a firing alert (new owner, new rule labels): replace it
                        out = [self._alert(rule, st, "resolved", t), None]
                        st["a"] = t
                        st["l"] = labels
                        st["n"] = self._annotations(rule, c, labels, ctx, t) if rule.annotations else {}
                        out[1] = self._alert(rule, st, "firing", t)
                    return out
                st["l"] = labels
                st["n"] = self._annotations(rule, c, labels, ctx, st["a"] if s else t) if rule.annotations else {}
            elif "l" not in st:
                return out  # a timer-only change for a group never labelled
            if s == 0:
                st["s"] = s = 1
                st["a"] = t
            if s == 1 and t >= st["a"] + rule.for_:
                st["s"] = 2
                st["o"] = rule.origin
                out = [self._alert(rule, st, "firing", t)]
        else:
            if s == 2:  # resolved as it fired: the same labels, so the same fingerprint (before they are updated)
                out = [self._alert(rule, st, "resolved", t)]
            if ctx is not None and rule.cond.type == "absent":
                # absent fires from a timer, without a record: keep what it will say
                labels = self._labels(ctx, rule)
                if st.get("l") != labels:
                    st["l"] = labels
                    st["n"] = self._annotations(rule, c, labels, ctx) if rule.annotations else {}
            if s:
                st["s"] = 0
        return out

    def _labels(self, ctx, rule: CompiledRule, held: str | None = None) -> dict:
        """The alert's labels from the signal being applied, with its owner's team when they name none: ``held``,
        the team a firing alert has (it keeps it until it resolves: a late sample of a pod whose tombstone was read
        first, or a workload's last pod gone in a rollout, would otherwise move it to the namespace's team, a new
        fingerprint paging another team about the same problem), else the directory's (``owner_of``).  A signal
        that names another owner itself still replaces the alert (an event's entity resolved to a new team)."""
        labels = ctx.labels(rule)
        if "owner" not in labels:
            team = held or (self.owner_of(labels) if self.owner_of is not None else "")
            if team:
                labels["owner"] = team
        return labels

    @staticmethod
    def _annotations(rule: CompiledRule, c: dict, labels: dict, ctx, since: float | None = None) -> dict:
        tctx = dict(ctx.view())
        tctx.update(labels)
        ct = rule.cond.type
        value = c.get("k") if ct == "event_count" else c.get("n") if ct == "predict" else c.get("v")
        message = ctx.message(c)
        if "fs" in c:  # anomaly conditions: since the first anomalous point of this episode
            since = c["fs"]
        return {k: t.render(tctx, value=value, score=c.get("sc"), count=c.get("k"), message=message,
                            expected_low=c.get("lo"), expected_high=c.get("hi"), since=since, feature=c.get("ft"))
                for k, t in rule.annotations.items()}

    def _alert(self, rule: CompiledRule, st: dict, status: str, t: float) -> Alert:
        labels = _str_labels(st["l"])
        return Alert(labels=labels, annotations=dict(st.get("n") or {}), status=status,
                     startsAt=st["a"], endsAt=t if status == "resolved" else None, source=rule.origin,
                     generatorURL=self._link(labels, rule.origin))

    def _link(self, labels: dict, source: str) -> str:
        """The alert's ``generatorURL``, from the labels it is sent with (a resolution links where its firing did)."""
        link = self.generator_url
        return link(labels, source) if link is not None else ""
