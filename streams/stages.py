"""The signal stages of the worker and the rule packs they evaluate, with hot reload.

``signal_stages`` lists, in order, what every record from ``events`` and ``samples`` goes
through: derived signals (``streams.derived``), then the rule engine (``rules.engine``, which
runs the detectors of ``anomaly`` conditions on the same partition state).  ``RulesStage``
reads ``holder.engine`` once per record, so a reload (``RulePacks.reload``) takes effect
between two records, atomically, in every worker that sees it.

Where packs come from: the default pack (``rules/packs/default``, unless
``default_pack: false``), the paths in ``settings.rules``, and packs published on the
compacted ``rules`` topic (key = pack name, value = the pack's YAML; an empty value removes
it), which every worker reads in full.  A candidate set that fails validation is refused
with every error (file, line, YAML path) and the running set stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from pathlib import Path
from time import perf_counter

import mode

from core.records import Alert, Event, Sample, encode
from core.settings import Settings
from core.yamlconfig import ConfigError
from rules.holder import EngineHolder
from rules.load import load_packs, pack_paths
from rules.ruleset import RuleSet
from streams.follow import follow_topic
from streams.hotpath import WATERMARK

log = logging.getLogger("kubesight.rules")

class RulesStage:
    """Hot-path adapter: engine.process / engine.tick -> emit alert transitions to ``alerts``.

    ``seconds`` and ``evaluations`` add up the rule evaluation time (``kubesight_rule_evaluation_seconds``)
    and the signals evaluated: those that reach a rule.  ``wants`` tells the hot path's ``Pipeline`` which
    signals those are (by name, or source and reason), so the others never call this stage; ``routing``
    is the engine in force, whose swap (a reload) renews that answer.  ``owner_of`` (``streams.owners``) gives the
    team of alerts whose signal names none, ``generator_url`` (``board_link``) their link; every engine in force
    is handed both."""

    accepts = (Event, Sample)

    def __init__(self, holder: EngineHolder, owner_of=None, generator_url=None):
        self.holder = holder
        self.owner_of = owner_of
        self.generator_url = generator_url
        self.seconds = 0.0
        self.evaluations = 0

    def _hand_over(self, engine) -> None:
        """Give a new engine (a reload's) this stage's owners and link, before it fires: a tick fires too (``for``,
        ``absent``), and one due before the next signal's evaluation sent its alerts without a link."""
        if engine.owner_of is not self.owner_of or engine.generator_url is not self.generator_url:
            engine.owner_of, engine.generator_url = self.owner_of, self.generator_url

    @property
    def routing(self):
        return self.holder.engine

    def wants(self, rtype: type, key) -> bool:
        return self.holder.engine.reaches(rtype, key)

    def process(self, rec, state, emit) -> None:
        engine = self.holder.engine
        rules = engine.rules_for(rec)
        if rules is None:  # most signals: no rule to evaluate (and so no time to add)
            return
        self.evaluations += 1
        self._hand_over(engine)
        t0 = perf_counter()
        out = engine.apply(rec, rules, state, state.get(WATERMARK))
        copies = engine.rekey(rec)  # anomaly_vector / event_count by: the signal again, keyed by its entity or group
        self.seconds += perf_counter() - t0
        for a in out:
            emit("alerts", a.key(), encode(a))
        for key, copy in copies:
            emit("samples" if type(copy) is Sample else "events", key, encode(copy))

    def tick(self, now: float, state, emit) -> None:
        engine = self.holder.engine
        self._hand_over(engine)
        out = engine.tick(now, state)
        if out:
            for a in out:
                emit("alerts", a.key(), encode(a))

class Watchdog:
    """The pipeline's dead man's switch, as kubernetes-mixin's Watchdog: an alert that always fires while it works.

    The hot path's loop (``TransactionalProcessor.heartbeat``) emits it every ``interval`` seconds of wall time
    with ``endsAt`` 4 intervals ahead (Prometheus' resend convention): every beat renews it in the alert
    lifecycle, so while events flow through the hot path, alerting and delivery, a route to a dead man's switch
    (Opsgenie heartbeat, healthchecks.io, PagerDuty) is notified every ``repeat_interval``.  When the loop stops
    or stalls, the alert ends by itself 4 intervals later (resolved, and the repeats stop); when alerting or
    delivery stop, the notifications stop.  Every worker beats: one fingerprint, so one alert.

    >>> from core.records import decode
    >>> beats = []
    >>> w = Watchdog(60.0, "prod", clock=lambda: 1000.0)
    >>> w(lambda *rec: beats.append(rec)); w(lambda *rec: beats.append(rec))  # not due again within 60 s
    >>> [(topic, decode(value).labels["alertname"], decode(value).endsAt) for topic, _, value in beats]
    [('alerts', 'Watchdog', 1240.0)]
    """

    def __init__(self, interval: float, cluster: str, clock=time.time):
        self.interval, self.clock = interval, clock
        self.started, self.last = clock(), float("-inf")
        self.alert = Alert({"alertname": "Watchdog", "severity": "none", "cluster": cluster},
                           {"summary": "kubesight's alert pipeline is alive",
                            "description": "Always firing while events go through kubesight's hot path, alerting "
                                           "and delivery: route it to a dead man's switch; its notifications "
                                           "stopping is the alert."}, startsAt=self.started, source="kubesight/watchdog")

    def __call__(self, emit) -> None:
        now = self.clock()
        if now - self.last < self.interval:
            return
        self.last = now
        a = self.alert
        beat = Alert(a.labels, a.annotations, "firing", a.startsAt, now + 4 * self.interval, a.source)
        emit("alerts", beat.key(), encode(beat))


def watchdog(settings: Settings) -> Watchdog | None:
    """The hot path's Watchdog when ``watchdog_interval`` is set and the clock is the wall's (a replay has no now)."""
    if settings.watchdog_interval > 0 and settings.clock == "wall":
        return Watchdog(settings.watchdog_interval, settings.cluster)
    return None


class RulePacks:
    """The pack sources of one worker and the engine holder they feed."""

    def __init__(self, settings: Settings, topic_dir: Path | None = None):
        self.paths = pack_paths(settings)
        self.topic_dir = topic_dir  # packs received on the rules topic, one file each
        self.replayed: set[str] = set()  # the topic's packs written (or removed) since this start
        self.version = 0
        self.errors: list[str] = []
        self.holder = EngineHolder(self._load_at_start())
        self._mtimes = self._scan()

    def _load_at_start(self) -> RuleSet:
        """The packs in force from the first record: the settings' and those the last run received from the topic
        (state_dir outlives a restart: without them the hot path ran without those rules until the topic was read
        again, and a tick meanwhile resolved their alerts).  A topic pack the settings' packs now refuse (one moved
        into a settings file: a duplicate name, fatal, a crash loop) is left out until the topic is read again;
        one the topic no longer holds is dropped then (``forget_unreplayed``)."""
        try:
            return self._load_or_empty()
        except ConfigError as exc:
            stale = list(self.topic_dir.glob("*.yaml")) if self.topic_dir is not None else []
            if not stale:
                raise
            log.warning("the rule packs the last run received from the rules topic are refused with the others; "
                        "starting without them until the topic is read again: %s", "; ".join(exc.errors))
            for f in stale:
                f.unlink()
            return self._load_or_empty()

    def forget_unreplayed(self) -> list[str]:
        """Once the rules topic was read to its end at start: drop the packs the last run left that the topic no
        longer holds (tombstoned since, the tombstone compacted away), and reload if any was dropped."""
        if self.topic_dir is None or not self.topic_dir.is_dir():
            return []
        gone = [f for f in self.topic_dir.glob("*.yaml") if f.stem not in self.replayed]
        for f in gone:
            f.unlink()
        return self.reload() if gone else []

    def sources(self) -> list[str]:
        out = list(self.paths)
        if self.topic_dir is not None and any(self.topic_dir.glob("*.yaml")):
            out.append(str(self.topic_dir))
        return out

    def _load_or_empty(self) -> RuleSet:
        if not self.sources():
            return RuleSet.empty()
        return load_packs(self.sources())  # at start-up an invalid pack is fatal: ConfigError propagates

    def reload(self) -> list[str]:
        """Validate every source again and swap; returns the errors (running set kept) or []."""
        if not self.sources():
            self.holder.swap(RuleSet.empty())
            return []
        errors = self.holder.reload(self.sources())
        self.errors = errors
        if errors:
            log.error("rule packs refused, running version stays: %s", "; ".join(errors))  # one collector entry
        else:
            self.version += 1
            log.warning("rule packs reloaded (%d rules)", len(self.holder.engine.ruleset))
        return errors

    def _scan(self) -> dict[str, float]:
        from rules.load import pack_files

        out = {}
        for f in pack_files([p for p in self.paths if os.path.exists(p)]):
            try:
                out[str(f)] = f.stat().st_mtime
            except OSError:
                out[str(f)] = -1.0
        return out

    def poll_files(self) -> list[str] | None:
        """Reload when a pack file changed on disk; None when nothing changed."""
        now = self._scan()
        if now == self._mtimes:
            return None
        self._mtimes = now
        return self.reload()

    def apply_topic_record(self, key: bytes | None, value: bytes | None) -> list[str]:
        """A record of the rules topic: write (or remove) the pack file, then validate all and swap.

        If the new set is refused, the file is put back as it was, so the next good record
        validates against what is actually running.
        """
        assert self.topic_dir is not None
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", (key or b"unnamed").decode("utf-8", "replace"))
        self.replayed.add(name)
        path = self.topic_dir / f"{name}.yaml"
        before = path.read_bytes() if path.exists() else None
        self.topic_dir.mkdir(parents=True, exist_ok=True)
        if value:
            path.write_bytes(value)
        elif path.exists():
            path.unlink()
        errors = self.reload()
        if errors:
            if before is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(before)
        return errors

class RulesTopicWatcher(mode.Service):
    """Every worker reads the whole compacted ``rules`` topic (no consumer group) and follows it."""

    def __init__(self, settings: Settings, bootstrap: str, packs: RulePacks, **kw):
        super().__init__(**kw)
        self.settings, self.bootstrap, self.packs = settings, bootstrap, packs
        self.applied = 0
        self.caught_up = asyncio.Event()

    @mode.Service.task
    async def _follow(self) -> None:
        await follow_topic(self, self.bootstrap, self.settings.topic("rules"), 1, self._apply, self.caught_up,
                           f"{self.settings.app_id}-rules")

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        self.packs.apply_topic_record(key, value)
        self.applied += 1

    @mode.Service.task
    async def _after_replay(self) -> None:
        await self.caught_up.wait()
        self.packs.forget_unreplayed()

    @mode.Service.timer(2.0)
    async def _poll_files(self) -> None:
        self.packs.poll_files()


def signal_stages(settings: Settings, packs: RulePacks, owner_of=None):
    """The stages every signal goes through, in order (``owner_of``: ``RulesStage``'s; its alerts' link from the
    settings' ``board_url``)."""
    from streams.derived import Derived

    return [Derived(), RulesStage(packs.holder, owner_of, board_link(settings.board_url))]


BOARD_PAGE = "/"  # streams.board's page: with view, row and col it opens that cell's drill-down (board.js openLinked)
LINK_MAX = 4096  # characters; a longer link is the board's page (aiohttp refuses a request line over 8 KiB)


def team_cell(labels: dict) -> tuple[str, str]:
    """Where the board's teams x namespaces view files an alert: its team (``owner``, else ``team``) and namespace,
    the one rule ``streams.board.Entry`` and ``board_link`` share (a link to another cell would show nothing).

    >>> team_cell({"owner": "db", "namespace": "shop"}), team_cell({"node": "n1"})
    (('db', 'shop'), ('(unowned)', '(cluster-scoped)'))
    """
    return labels.get("owner") or labels.get("team") or "(unowned)", labels.get("namespace") or "(cluster-scoped)"


def board_link(base: str | None):
    """``Engine.generator_url`` for the settings' ``board_url``: (labels, source) -> the board's page with the drill-down
    of the alert's cell open, or None without a board_url (no host is guessed: generatorURL stays "", as before).

    The cell is the teams x namespaces view's (``view=team``: ``team_cell``, as ``streams.board.Entry`` files it), the narrowest the board serves from labels alone: the
    clusters x layers cell needs ``streams.board.layer_of``, whose module imports ``streams.alerting`` and would
    register its routing-reload gauges in the hot path (exported at 0: an alert on them fires).  A name too long for
    a URL (a team from a workload's annotation) links the board's page instead.

    >>> link = board_link("https://ops.example/board")
    >>> link({"alertname": "KubePodCrashLooping", "namespace": "shop", "owner": "team a"}, "workloads/K@1")
    'https://ops.example/board/?view=team&row=team%20a&col=shop'
    >>> link({"alertname": "KubeNodeNotReady", "node": "n1"}, "nodes/KubeNodeNotReady@1")
    'https://ops.example/board/?view=team&row=%28unowned%29&col=%28cluster-scoped%29'
    >>> link({"alertname": "A", "owner": "t" * LINK_MAX}, "p/A@1"), board_link(None)
    ('https://ops.example/board/', None)
    """
    if not base:
        return None
    from urllib.parse import quote, urlencode

    def link(labels: dict, source: str) -> str:
        row, col = team_cell(labels)
        cell = {"view": "team", "row": row, "col": col}
        url = f"{base}{BOARD_PAGE}?{urlencode(cell, quote_via=quote, safe='')}"
        return url if len(url) <= LINK_MAX else base + "/"

    return link

