"""The Faust app: topics declared once, the hot-path processor as a service, low-rate agents.

The whole topology in one place:

    events, samples --(signals processor: derived -> rules (+ detectors))--> alerts, deadletter, samples (derived)
    rules (compacted), pack files --(RulesTopicWatcher)--> validated hot reload of the rule engine
    alerts, alert-groups --(alerting processor, if routing is configured)--> notifications --> receivers
    alerts, incident-alerts --(incidents processor: re-keyed by cluster)--> incidents (streams.incidents)
    deadletter      --(Faust agent)--> kubesight_deadletters_total{origin, reason} on /metrics, /deadletter

Faust runs what it does well (the app and its lifecycle, web views, low-rate agents and
their changelog-backed tables, rebalancing); the per-signal loop is the batch consumer in
``streams.hotpath`` (see its docstring for why and for the exactly-once design).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import faust
import faust.auth
import orjson

from core import kafkaclient, webconfig
from core.settings import Settings
from core.telemetry import DEADLETTERS, count_deadletter
from core.topics import replication_of
from streams.hotpath import Pipeline, TransactionalProcessor
from streams.incidents import incident_processor
from streams.owners import OwnerBook
from streams.stages import RulePacks, RulesStage, RulesTopicWatcher, signal_stages, watchdog
from streams.telemetry import install as install_telemetry

log = logging.getLogger("kubesight.app")


def client_config(bootstrap: str) -> dict:
    """``core.kafkaclient.client_config`` for the Faust app: its broker URL, and the security (``kafka_security``) as
    Faust's own ``SSLCredentials`` or ``SASLCredentials``, made here from the plain values of the "faust" flavour
    (the base layer imports nothing of Faust)."""
    out = kafkaclient.client_config(bootstrap, "faust")
    cred = out.get("broker_credentials")
    if cred is not None and cred.protocol is kafkaclient.Protocol.SSL:
        out["broker_credentials"] = faust.auth.SSLCredentials(cred.ssl_context)
    elif cred is not None:  # SASL_PLAINTEXT, SASL_SSL (with its context)
        out["broker_credentials"] = faust.auth.SASLCredentials(
            username=cred.username, password=cred.password, ssl_context=cred.ssl_context, mechanism=cred.mechanism)
    return out


def create_app(settings: Settings, bootstrap: str, *, worker_id: str | None = None, alerting_here: bool = True,
               incidents_here: bool = True, services: tuple = ()) -> faust.App:
    """``alerting_here=False`` / ``incidents_here=False``: alerting and delivery / incidents run in processes of their
    own (``kubesight worker --role``), started and stopped by ``services`` (``streams.cli_run.child_processes``)."""
    worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    web_cfg = webconfig.load(settings.web_config)  # TLS and basic_auth_users of the worker's web port
    state = Path(settings.state_dir)  # every file the worker writes is under it (a pod's emptyDir)
    (state / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.app_id}-faust",
        **client_config(bootstrap),  # broker URL and credentials (kafka_security)
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=replication_of(settings, bootstrap)[0],  # its internal topics, like ours
        web_enabled=settings.web_port is not None,
        web_port=settings.web_port or 6066,
        web_host=settings.web_host,
        web_bind=settings.web_host,  # Faust binds web_bind (default 0.0.0.0); web_host only names the URL
        web_ssl_context=web_cfg.ssl_context(),
        web_application_options={"middlewares": [web_cfg.middleware()]},  # every page but the probes
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        # Faust's own group (its agents, the worker's readiness): a member killed -9 is gone after this, not after
        # Faust's 60 s default, which held a restarted worker's every part for a minute
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        datadir=str(state / "faust" / "{conf.name}-data"),  # not the (read-only) working dir
    )
    # Topics, declared once.  Values are raw bytes: records are plain JSON (core.records).
    topics = {name: app.topic(settings.topic(name), value_serializer="raw", key_serializer="raw",
                              partitions=settings.partitions, internal=False)
              for name in ("events", "samples", "alerts", "deadletter")}
    app.kubesight_topics = topics

    packs = RulePacks(settings, topic_dir=state / "rules-topic" / f"{settings.app_id}-{worker_id}")
    owners = OwnerBook(settings, bootstrap)  # the teams of alerts from scraped series (streams.owners)
    processor = TransactionalProcessor(settings, bootstrap, "signals", ["events", "samples"],
                                       Pipeline(signal_stages(settings, packs, owners.directory.owner_of)),
                                       worker_id=worker_id,
                                       urgent=("alerts",),  # an alert commits within 0.1 s, not commit_interval
                                       heartbeat=watchdog(settings))
    watcher = RulesTopicWatcher(settings, bootstrap, packs)
    # alerts --(re-keyed by cluster)--> incidents (streams.incidents): one incident per root cause
    incidents = incident_processor(settings, bootstrap, worker_id=worker_id) if incidents_here else None
    alerting = None
    if settings.routing and alerting_here:
        from streams.alerting import AlertingService

        alerting = AlertingService(settings, bootstrap, worker_id=worker_id)
    app.kubesight_processor, app.kubesight_packs, app.kubesight_alerting = processor, packs, alerting
    app.kubesight_incidents, app.kubesight_owners = incidents, owners

    @app.service
    class KubesightServices(faust.Service):  # the hot path and its helpers, started and stopped with the app
        async def on_start(self) -> None:
            await self.add_runtime_dependency(watcher)
            await self.add_runtime_dependency(owners)
            # no signal is evaluated before the teams written so far are known: an alert that fired before the
            # directory was read would go out without its team (and keep that identity until it resolves)
            await owners.caught_up.wait()
            await self.add_runtime_dependency(processor)
            if incidents is not None:
                await self.add_runtime_dependency(incidents)
            if alerting is not None:
                await self.add_runtime_dependency(alerting)
            for service in services:
                await self.add_runtime_dependency(service)

    @app.agent(topics["deadletter"])
    async def count_deadletters(stream):  # each worker counts the partitions it reads; Prometheus sums them
        async for value in stream:
            try:
                d = orjson.loads(value)
                count_deadletter(d.get("origin"), d.get("reason"))
            except (orjson.JSONDecodeError, AttributeError):
                DEADLETTERS.labels("?", "unreadable dead letter").inc()

    # /metrics, /health, /ready, /deadletter
    install_telemetry(app, settings, bootstrap, processor, packs, alerting,
                      next((s for s in processor.stage.stages if isinstance(s, RulesStage)), None), services)

    return app
