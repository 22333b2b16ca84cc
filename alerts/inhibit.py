"""Inhibition: a firing source alert mutes target alerts that share its ``equal`` labels; with a topology-aware default set.

The default set (``default_inhibit_rules: true``; off unless a file asks, as Alertmanager has none) follows the cluster's shape:

* a node that is NotReady/unreachable, or that a cloud maintenance reboot is taking down,
  mutes the pod and workload alerts on that node (same ``cluster`` and ``node``: clusters name their
  nodes alike, and one kubesight may watch several; an absent ``cluster`` equals an absent one);
* a critical alert mutes warning and info alerts of the same alertname on the same entity
  (same cluster, namespace, workload, pod and node).

>>> inh = Inhibitor(default_rules())
>>> inh.observe({"alertname": "KubeNodeNotReady", "node": "n1", "severity": "critical"}, "firing")
>>> inh.inhibited({"alertname": "KubePodCrashLooping", "node": "n1", "workload": "Deployment/cart"})
True
>>> inh.inhibited({"alertname": "KubePodCrashLooping", "node": "n2", "workload": "Deployment/cart"})
False
>>> inh.inhibited({"alertname": "KubePodCrashLooping", "cluster": "b", "node": "n1", "workload": "Deployment/cart"})
False
"""

from __future__ import annotations

from dataclasses import dataclass

from core.matchers import Matcher, matches_all, parse_matcher
from core.records import fingerprint

NODE_DOWN = ("KubeNodeNotReady|KubeNodeUnreachable|NodeNotReady|NodeUnreachable|NodeDown"
             "|CloudMaintenanceReboot|NodeMaintenanceReboot|ScheduledMaintenanceReboot|MaintenanceReboot"
             # the default rule pack's cloud rules for a node that is going away or gone
             "|CloudInstanceRebootScheduled|CloudInstanceRedeployScheduled|CloudSpotInterruption|CloudInstanceFailure"
             "|CloudInstanceStopped")
ENTITY = ("alertname", "cluster", "namespace", "workload", "pod", "node")


@dataclass(frozen=True, slots=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]

    @classmethod
    def parse(cls, source: list[str], target: list[str], equal: list[str]) -> InhibitRule:
        return cls(tuple(parse_matcher(x) for x in source), tuple(parse_matcher(x) for x in target), tuple(equal))


def default_rules() -> list[InhibitRule]:
    return [
        InhibitRule.parse([f'alertname=~"{NODE_DOWN}"', 'node=~".+"'], ['workload=~".+"'], ["cluster", "node"]),
        InhibitRule.parse([f'alertname=~"{NODE_DOWN}"', 'node=~".+"'], ['pod=~".+"'], ["cluster", "node"]),
        InhibitRule.parse(['severity="critical"'], ['severity=~"warning|info"'], list(ENTITY)),
    ]


def rules_from(cfg) -> list[InhibitRule]:
    """The config's inhibit rules, after the default set when ``default_inhibit_rules`` is on."""
    own = [InhibitRule(tuple(r.source_matchers), tuple(r.target_matchers), tuple(r.equal)) for r in cfg.inhibit_rules]
    return (default_rules() if cfg.default_inhibit_rules else []) + own


class Inhibitor:
    """Keeps the firing alerts that can inhibit, indexed per rule by their equal labels.

    Every firing alert's labels are kept too (``firing``, by fingerprint), as Alertmanager's alert store
    keeps them: a routing reload that brings new rules (``set_rules``) finds its sources among the alerts
    already firing, not only among those that fire after it.

    >>> inh = Inhibitor([])
    >>> inh.observe({"alertname": "KubeNodeNotReady", "node": "n1"}, "firing")
    >>> inh.inhibited({"alertname": "KubePodCrashLooping", "node": "n1", "pod": "p"})
    False
    >>> inh.set_rules(default_rules())
    >>> inh.inhibited({"alertname": "KubePodCrashLooping", "node": "n1", "pod": "p"})
    True
    """

    def __init__(self, rules: list[InhibitRule]):
        self.firing: dict[str, dict] = {}
        self.set_rules(rules)

    def set_rules(self, rules: list[InhibitRule]) -> None:
        """Swap the rules (a routing reload); their sources are indexed again from the alerts firing now."""
        self.rules = rules
        self.sources: list[dict[tuple, set[str]]] = [{} for _ in rules]
        # per rule: the firing sources that match its target side too. Alertmanager leaves them out for a target
        # that matches the source side (its two-sided exclusion): two such alerts would otherwise mute each other
        self.both: list[set[str]] = [set() for _ in rules]
        for labels in self.firing.values():
            self._index(labels, "firing")

    def observe(self, labels: dict, status: str) -> None:
        """Feed one alert transition (every worker sees every transition of the alerts topic)."""
        fp = fingerprint(labels)
        if status == "firing":
            self.firing[fp] = labels
        else:
            self.firing.pop(fp, None)
        self._index(labels, status, fp)

    def _index(self, labels: dict, status: str, fp: str | None = None) -> None:
        for rule, index, both in zip(self.rules, self.sources, self.both, strict=True):
            if not matches_all(rule.source, labels):
                continue
            fp = fp or fingerprint(labels)
            key = tuple(labels.get(n, "") for n in rule.equal)
            if status == "firing":
                index.setdefault(key, set()).add(fp)
                if matches_all(rule.target, labels):
                    both.add(fp)
            else:
                both.discard(fp)
                fps = index.get(key)
                if fps is not None:
                    fps.discard(fp)
                    if not fps:
                        del index[key]

    def inhibiting(self, labels: dict) -> list[str]:
        """The fingerprints of the firing alerts that inhibit an alert with these labels (Alertmanager's inhibitedBy)."""
        fp, out = fingerprint(labels), []
        for rule, index, both in zip(self.rules, self.sources, self.both, strict=True):
            if index and matches_all(rule.target, labels):
                two_sided = both and matches_all(rule.source, labels)
                out += [f for f in index.get(tuple(labels.get(n, "") for n in rule.equal), ())
                        if f != fp and f not in out and not (two_sided and f in both)]
        return sorted(out)

    def inhibited_by(self, labels: dict) -> list[str]:
        """Alertmanager's ``inhibitedBy``: one fingerprint, of a source under the first rule that inhibits (AM's
        ``Mutes`` stops there, with whichever source its map gives first; here the smallest, so it is the same on
        every call and every worker), or [] when nothing inhibits.  ``inhibiting`` lists them all.

        >>> inh = Inhibitor(default_rules())
        >>> for n in ("KubeNodeNotReady", "NodeDown"):
        ...     inh.observe({"alertname": n, "node": "n1"}, "firing")
        >>> target = {"alertname": "KubePodCrashLooping", "node": "n1", "pod": "p"}
        >>> (len(inh.inhibiting(target)), inh.inhibited_by(target) == inh.inhibiting(target)[:1])
        (2, True)
        """
        fp = fingerprint(labels)
        for rule, index, both in zip(self.rules, self.sources, self.both, strict=True):
            if index and matches_all(rule.target, labels):
                two_sided = both and matches_all(rule.source, labels)
                fps = [f for f in index.get(tuple(labels.get(n, "") for n in rule.equal), ())
                       if f != fp and not (two_sided and f in both)]
                if fps:
                    return [min(fps)]
        return []

    def inhibited(self, labels: dict) -> bool:
        fp = None
        for rule, index, both in zip(self.rules, self.sources, self.both, strict=True):
            if not index or not matches_all(rule.target, labels):
                continue
            fps = index.get(tuple(labels.get(n, "") for n in rule.equal))
            if fps:
                if both and matches_all(rule.source, labels):  # two-sided: sources that are targets too do not count
                    fps = fps - both
                    if not fps:
                        continue
                fp = fp or fingerprint(labels)
                if len(fps) > 1 or fp not in fps:  # an alert never inhibits itself
                    return True
        return False
