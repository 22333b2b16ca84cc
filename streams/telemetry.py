"""The worker's ``/metrics``, ``/health`` and ``/ready`` (Faust web pages), and its hot-path figures as metrics.

Metrics, besides prometheus-client's standard ``process_*``/``python_*`` ones (all in the default
registry; add yours there too):

- ``kubesight_signals_in_total`` / ``kubesight_signals_out_total`` {processor}: records read by a hot
  path, and records it produced in committed transactions (alerts, derived samples, dead letters);
- ``kubesight_late_signals_total`` {processor}: signals older than ``allowed_lateness`` behind their
  partition's event time (dead-lettered with the reason, never dropped silently);
- ``kubesight_transactions_total`` {processor, result=committed|aborted};
- ``kubesight_consumer_lag`` {processor, topic, partition}: offsets between the consumer's position
  and the last stable offset (a transactional topic's commit marker counts as one); for delivery
  (``processor="delivery"``, on ``notifications``) between its last commit and the last stable offset,
  so notifications read but still being sent or retried (a receiver down) count (``Deliverer.lag``);
- ``kubesight_rule_evaluation_seconds_total`` and ``kubesight_rule_evaluations_total``: time the rule
  engine took, and how many signals it evaluated (their ratio: the mean time per signal);
- ``kubesight_deadletters_total`` {origin, reason}: everything on the dead-letter topic, counted by the
  worker(s) reading it (``core.telemetry``).

With ``kubesight worker --role all`` incidents, alerting and delivery run in child processes: each serves its
own registry on a loopback port (``streams.cli_run.serve_child_metrics``) and the worker's ``/metrics``
appends every child's samples with a ``role`` label (``ChildrenMetrics``), e.g.
``kubesight_notifications_total{receiver, result, role="delivery"}``.

``/ready`` is 200 only while the broker answers, the signal processor has its partitions assigned
and their state restored, the rules are loaded and (with routing) the alerting views have caught
up; with ``--role all``, while every child runs and has stayed up a few seconds since its last start
(``children``: a child that exits at start, e.g. on a routing file it refuses, is restarted every second,
and no notification flows meanwhile); the body names each check.  ``/health`` is liveness: the event
loop answers.

A part run alone (``kubesight worker --role incidents|alerting|delivery``, ``web_port`` set) serves the three
pages itself (``core.telemetry.serve_for``, ``part_metrics``, ``part_checks``): ``/ready`` is the broker and that
part, its processor's partitions assigned and restored, alerting's views caught up, delivery's partitions assigned.
"""

from __future__ import annotations

import asyncio

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from core.telemetry import DEADLETTERS, broker_check, ready_report


def consumer_lag(consumer) -> dict:
    """{TopicPartition: offsets behind the last stable offset} for the partitions with a known position."""
    out = {}
    if consumer is None:
        return out
    assignment = consumer._subscription.subscription
    if assignment is None or assignment.assignment is None:
        return out
    for tp in list(consumer.assignment()):
        st = assignment.assignment.state_value(tp)
        end = consumer.last_stable_offset(tp)
        if end is None:
            end = consumer.highwater(tp)
        if st is None or not st.has_valid_position or end is None:
            continue
        out[tp] = max(0, end - st.position)
    return out


class WorkerMetrics:
    """A prometheus-client collector reading the processors' counters when scraped (nothing on the hot path)."""

    def __init__(self, processors: list, rules_stage=None, deliverers=()):
        self.processors = processors
        self.rules_stage = rules_stage
        self.deliverers = list(deliverers)  # streams.alerting.Deliverer: only their lag (DeliveryMetrics the rest)

    def describe(self):
        return []  # figures appear after start; an unchecked collector

    def collect(self):
        sig_in = CounterMetricFamily("kubesight_signals_in", "records read by a hot path", labels=["processor"])
        sig_out = CounterMetricFamily("kubesight_signals_out", "records produced in committed transactions",
                                      labels=["processor"])
        late = CounterMetricFamily("kubesight_late_signals", "signals older than allowed_lateness (dead-lettered)",
                                   labels=["processor"])
        future = CounterMetricFamily("kubesight_future_signals", "signals ahead of the wall clock by more than "
                                     "max_future (dead-lettered)", labels=["processor"])
        tx = CounterMetricFamily("kubesight_transactions", "hot-path transactions", labels=["processor", "result"])
        lag = GaugeMetricFamily("kubesight_consumer_lag", "offsets behind the last stable offset",
                                labels=["processor", "topic", "partition"])
        for p in self.processors:
            s = p.stats
            sig_in.add_metric([p.name], s["in"])
            sig_out.add_metric([p.name], s["out"])
            late.add_metric([p.name], s.get("late", 0))
            future.add_metric([p.name], s.get("future", 0))
            tx.add_metric([p.name, "committed"], s["commits"])
            tx.add_metric([p.name, "aborted"], s["aborts"])
            for tp, n in sorted(consumer_lag(p.consumer).items()):
                lag.add_metric([p.name, tp.topic, str(tp.partition)], n)
        for d in self.deliverers:
            for tp, n in sorted(d.lag().items()):
                lag.add_metric(["delivery", tp.topic, str(tp.partition)], n)
        if self.processors:  # a delivery process has no hot path: no families of counters that never move
            yield from (sig_in, sig_out, late, future, tx)
        if self.processors or self.deliverers:
            yield lag
        if self.rules_stage is not None:
            yield CounterMetricFamily("kubesight_rule_evaluation_seconds", "time the rule engine took on signals",
                                      value=self.rules_stage.seconds)
            yield CounterMetricFamily("kubesight_rule_evaluations", "signals the rule engine evaluated",
                                      value=self.rules_stage.evaluations)
            yield CounterMetricFamily("kubesight_anomaly_groups_evicted", "idle anomaly groups dropped at the cap of "
                                      "live detectors per partition (rules.engine.ANOMALY_MAX)",
                                      value=self.rules_stage.holder.engine.evicted)
            directory = getattr(self.rules_stage.owner_of, "__self__", None)  # streams.owners.OwnerDirectory
            if directory is not None:
                known = GaugeMetricFamily("kubesight_owner_directory_entries", "teams known from the owners topic, "
                                          "by what they own (joined onto alerts that name no owner)", labels=["of"])
                known.add_metric(["namespace"], len(directory.namespaces))
                known.add_metric(["pod"], len(directory.pods))
                known.add_metric(["workload"], len(directory.workloads))
                yield known
                yield CounterMetricFamily("kubesight_owner_records", "records of the owners topic applied (a rising "
                                          "count with no entries: the collector writes none)", value=directory.applied)


class ChildrenMetrics:
    """The worker's registry followed by its children's (each scraped on its loopback port when ``/metrics``
    is): one family per name, the children's samples labelled ``role``.  A child that does not answer
    (starting, restarting) is left out of that scrape."""

    def __init__(self, registry, sources, timeout: float = 2.0):
        self.registry = registry
        self.sources = sources  # callables -> {role: file holding its port}
        self.timeout = timeout

    def _child(self, role: str, port_file) -> list:
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        try:
            port = int(port_file.read_text())
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=self.timeout) as r:
                text = r.read().decode()
        except (OSError, ValueError):
            return []
        fams = list(text_string_to_metric_families(text))
        counters = {f.name for f in fams if f.type == "counter"}
        out = []
        for fam in fams:
            if fam.name.endswith("_created") and fam.name[:-len("_created")] in counters:
                continue  # a counter's creation time (the text parser makes it a family of its own): left out
            fam.samples = [s._replace(labels={**s.labels, "role": role}) for s in fam.samples]
            out.append(fam)
        return out

    def collect(self):
        fams: dict[str, object] = {}
        for fam in self.registry.collect():
            fams[fam.name] = fam
        for source in self.sources:
            for role, port_file in sorted(source().items()):
                for fam in self._child(role, port_file):
                    have = fams.get(fam.name)
                    if have is None:
                        fams[fam.name] = fam
                    elif have.type == fam.type:
                        have.samples = list(have.samples) + fam.samples
        yield from fams.values()


def partitions_check(proc):
    """Readiness: the processor's consumer has partitions, and each one's state is restored."""
    def check():
        c = proc.consumer
        if c is None:
            return False, f"{proc.name}: not started"
        assigned = sorted({tp.partition for tp in c.assignment()})
        if not assigned:
            return False, f"{proc.name}: no partitions assigned yet"
        missing = [p for p in assigned if p not in proc.stores]
        if missing:
            return False, f"{proc.name}: restoring the state of partitions {missing}"
        return True, f"{proc.name}: partitions {assigned} assigned and restored"
    return check


def delivery_check(deliverer):
    """Readiness of delivery: its consumer runs and has partitions of ``notifications`` assigned."""
    def check():
        c = deliverer.consumer
        if c is None:
            return False, "delivery: not started"
        assigned = sorted({tp.partition for tp in c.assignment()})
        if not assigned:
            return False, "delivery: no partitions of notifications assigned yet"
        return True, f"delivery: partitions {assigned} of notifications assigned"
    return check


def part_metrics(service) -> WorkerMetrics:
    """The collector of one part run on its own (``kubesight worker --role incidents|alerting|delivery``): its
    transactional processor's figures, or delivery's lag (a ``Deliverer``, told by its ``lag``: importing
    ``streams.alerting`` to ask ``isinstance`` would register the routing gauges in the incidents part too)."""
    proc = getattr(service, "processor", service)
    if hasattr(proc, "stats") and hasattr(proc, "consumer") and hasattr(proc, "stores"):  # a TransactionalProcessor
        return WorkerMetrics([proc])
    return WorkerMetrics([], deliverers=[service] if hasattr(service, "lag") else [])


def part_checks(service) -> dict:
    """``/ready`` of one part run on its own (the broker is ``core.telemetry.serve_for``'s): a processor's partitions
    assigned and restored, alerting's silence and inhibition views caught up, delivery's consumer assigned."""
    proc = getattr(service, "processor", service)
    checks = {}
    if hasattr(proc, "stores"):
        checks[proc.name] = partitions_check(proc)
    if hasattr(service, "views_ready"):
        checks["views"] = lambda: ((True, "silences and inhibition views caught up") if service.views_ready() else
                                   (False, "silences and inhibition views still catching up"))
    if hasattr(service, "lag"):
        checks["delivery"] = delivery_check(service)
    return checks


def install(app, settings, bootstrap: str, processor, packs, alerting, rules_stage=None, services=()) -> None:
    """Add the metrics collector and the /metrics, /health, /ready pages to the Faust app (``services`` with
    ``metrics_ports()``: child processes whose metrics ``/metrics`` appends; with ``check()``, whose state
    ``/ready`` includes)."""
    procs = [processor] + ([alerting.processor] if alerting is not None else [])
    delivering = [alerting.deliverer] if alerting is not None and alerting.deliverer is not None else []
    collector = WorkerMetrics(procs, rules_stage, delivering)
    REGISTRY.register(collector)
    app.kubesight_metrics = collector
    page = ChildrenMetrics(REGISTRY, [s.metrics_ports for s in services if hasattr(s, "metrics_ports")])

    def rules_check():
        rs = packs.holder.engine.ruleset
        detail = f"{len(rs)} rules, version {packs.version}"
        return True, detail + (f"; last reload refused: {packs.errors}" if packs.errors else "")

    # --role all: the children (streams.cli_run.child_processes), alerting and delivery among them with routing
    children = next((s for s in services if hasattr(s, "check") and hasattr(s, "roles")), None)
    routed_by = [r for r in ("alerting", "delivery") if children is not None and r in children.roles]

    def routing_check():
        if alerting is None and routed_by:  # loaded in the children: ready while they run (the children check)
            ok, detail = children.check(tuple(routed_by))
            return ok, f"{settings.routing}: in the {' and '.join(routed_by)} child processes; {detail}"
        if alerting is None:
            return True, ("notifications off (no routing file)" if not settings.routing else
                          f"{settings.routing}: alerting and delivery run elsewhere (--role signals)")
        if not alerting.views_ready():
            return False, f"{settings.routing}: silences and inhibition views still catching up"
        return partitions_check(alerting.processor)()

    checks = {"broker": broker_check(bootstrap), "signals": partitions_check(processor),
              "rules": rules_check, "routing": routing_check}
    if children is not None:  # each child runs, and has stayed up (not a crash loop restarting it every second)
        checks["children"] = children.check
    app.kubesight_ready_checks = checks

    @app.page("/metrics")
    async def metrics(web, request):
        body = await asyncio.to_thread(generate_latest, page)  # the children are asked over loopback HTTP
        return web.bytes(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/health")
    async def health(web, request):
        return web.json({"ok": True})

    @app.page("/ready")
    async def ready(web, request):
        ok, report = await asyncio.to_thread(ready_report, checks)
        return web.json({"ready": ok, "checks": report, "signals": processor.stats}, status=200 if ok else 503)

    @app.page("/deadletter")
    async def deadletter_view(web, request):
        """Dead letters counted by this worker, by origin and reason (the same figures as /metrics)."""
        out: dict = {}
        for m in DEADLETTERS.collect():
            for s in m.samples:
                if s.name.endswith("_total"):
                    out.setdefault(s.labels["origin"], {})[s.labels["reason"]] = int(s.value)
        return web.bytes(orjson.dumps(out), content_type="application/json")
