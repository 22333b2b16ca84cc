"""``kubesight collect kubernetes`` (the list+watch collector) and ``kubesight bench kubernetes``."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
what it watches (get/list/watch only; see deploy/kubernetes/collector-kubernetes.yaml):
  events          core/v1 Events, all namespaces        -> source k8s, one record per occurrence
  events.k8s.io   events.k8s.io/v1 Events (same objects, deduplicated with the above on uid + count)
  nodes           Node conditions                        -> source k8s-state: NodeNotReady, NodeReady,
                  NodeMemoryPressure, NodeDiskPressure, NodePIDPressure, NodeNetworkUnavailable (+ ...Cleared)
  pods            container and pod states               -> source k8s-state: ContainerOOMKilled,
                  ContainerError (non-zero exit), CrashLoopBackOff, ImagePullBackOff (waiting on
                  ErrImagePull or ImagePullBackOff), ContainerRestarted, Evicted, Preempted
  and reads (get) namespaces, pods, replicasets, deployments, statefulsets, daemonsets, jobs, cronjobs,
  replicationcontrollers to resolve owners, and the custom resources --owner-kind names (none by default).

delivery: exactly once for read_committed consumers. Each batch of records, its dead letters and the
checkpoint (resourceVersion per stream, occurrences already emitted) are one Kafka transaction;
a restarted collector reads the last committed checkpoint and resumes from there; on 410 Gone it
re-lists and emits only the occurrences it has not emitted. Two collectors with the same
--cluster (or --transactional-id) fence each other: the newest wins, the older exits at its next
transaction (at the latest after --heartbeat seconds).

Kafka: $KUBESIGHT_KAFKA (else the local broker), topics prefixed by $KUBESIGHT_TOPIC_PREFIX.

examples:
  kubesight collect kubernetes --cluster prod-eu1                  # ~/.kube/config, current context
  kubesight collect kubernetes --in-cluster --cluster prod-eu1     # in a pod, with its ServiceAccount
  kubesight collect kubernetes --context staging --watch events,nodes,pods
  kubesight collect kubernetes --cluster prod-eu1 --owner-kind argoproj.io/v1alpha1/rollouts=Rollout
                                                                   # Rollouts' teams (role: get rollouts)
"""


def _csv(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


def _streams(value: str) -> tuple[str, ...]:
    from collectors.kubernetes.api import STREAMS

    names = _csv(value)
    bad = [n for n in names if n not in STREAMS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown stream(s) {', '.join(bad) or '(none)'}; "
                                         f"choose from {', '.join(STREAMS)}")
    return names


def _owner_kind(value: str):
    from collectors.kubernetes.api import OwnerKind

    try:
        return OwnerKind.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_owner_arguments(group) -> None:
    """--owner-keys, --owner-kind, --cache-size, --cache-ttl: every command that resolves owners (this collector, the audit
    intake of ``collect cloud --kubernetes``) takes the same, or one alert of a pod would go to another team than
    the next."""
    from collectors.kubernetes.collector import Options

    o = Options()
    group.add_argument("--owner-keys", type=_csv, default=o.owner_keys, metavar="LIST",
                       help="label/annotation keys naming the owning team, looked up on the workload then the "
                            "namespace, first found wins; app.kubernetes.io/part-of (an application's name) only "
                            f"when no other key is found (default: {','.join(o.owner_keys)})")
    group.add_argument("--owner-kind", dest="owner_kinds", type=_owner_kind, action="append", default=[],
                       metavar="GROUP/VERSION/PLURAL=KIND",
                       help="also read this custom resource kind when it controls a workload's pods or ReplicaSets, "
                            "for its team (as a Deployment's), e.g. argoproj.io/v1alpha1/rollouts=Rollout; "
                            "repeatable; the role needs get on it (a 403 is logged once and the kind gets the "
                            "namespace's team). Unlisted, such a controller is named with the namespace's team")
    group.add_argument("--cache-size", type=int, default=o.cache_size, metavar="N",
                       help="owner objects kept in the LRU cache (default: %(default)s)")
    group.add_argument("--cache-ttl", type=float, default=o.cache_ttl, metavar="SECONDS",
                       help="how long a cached owner is trusted (default: %(default)s; an absent owner or a "
                            "failed read is asked again after 10 s, a kind refused with 403 after this long)")


def owners_for(args, fetch):
    """The ``Owners`` that ``add_owner_arguments``' options ask for."""
    from collectors.kubernetes.owners import Owners

    return Owners(fetch, args.owner_keys, args.cache_size, args.cache_ttl, kinds=args.owner_kinds)


def register(sub, group) -> None:
    from collectors.kubernetes.collector import Options

    o = Options()
    g = group("collect", "run a collector")
    p = g.add_parser("kubernetes", help="list+watch Kubernetes Events, Node and Pod state changes, with owners",
                     description="List then watch Events (core/v1 and events.k8s.io/v1), Nodes and Pods with the "
                                 "official client; produce one Event record per real occurrence and per state "
                                 "change, resolved to its workload and owning team, to Kafka.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    conn = p.add_argument_group("connection")
    conn.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    conn.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")
    conn.add_argument("--in-cluster", action="store_true",
                      help="use the pod's ServiceAccount (in-cluster config) instead of a kubeconfig")
    conn.add_argument("--request-timeout", type=float, default=30.0, metavar="SECONDS",
                      help="timeout of list and get requests (default: %(default)s)")
    what = p.add_argument_group("what to collect")
    what.add_argument("--cluster", default=None,
                      help="cluster name on every record, and the checkpoint identity (default: settings' cluster, "
                           "'default')")
    what.add_argument("--watch", type=_streams, default=o.streams, metavar="LIST",
                      help="comma-separated streams: events, events.k8s.io, nodes, pods, namespaces (their teams; "
                           "default: all)")
    add_owner_arguments(what)
    tune = p.add_argument_group("tuning")
    tune.add_argument("--commit-interval", type=float, default=o.commit_interval, metavar="SECONDS",
                      help="longest wait before a batch is committed (default: %(default)s)")
    tune.add_argument("--max-batch", type=int, default=o.max_batch, metavar="N",
                      help="most watch items per Kafka transaction (default: %(default)s)")
    tune.add_argument("--page-size", type=int, default=o.page, metavar="N",
                      help="objects per list page (limit/continue; default: %(default)s)")
    tune.add_argument("--watch-timeout", type=int, default=o.watch_timeout, metavar="SECONDS",
                      help="server-side timeout of one watch request, then it is renewed from the last "
                           "resourceVersion (default: %(default)s)")
    tune.add_argument("--backoff-base", type=float, default=o.backoff_base, metavar="SECONDS",
                      help="first reconnect delay bound; doubles per failure, full jitter (default: %(default)s)")
    tune.add_argument("--backoff-max", type=float, default=o.backoff_max, metavar="SECONDS",
                      help="largest reconnect delay bound (default: %(default)s)")
    tune.add_argument("--heartbeat", type=float, default=o.heartbeat, metavar="SECONDS",
                      help="an idle collector commits its checkpoint this often, so one replaced by a newer "
                           "instance (same transactional id) finds out it is fenced and exits (default: %(default)s)")
    tune.add_argument("--transactional-id", metavar="ID",
                      help="Kafka transactional.id (default: kubesight-collector-kubernetes-<cluster>)")
    p.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level on stderr (default: %(default)s)")
    p.set_defaults(func=_collect)

    b = group("bench", "measure throughput")
    bp = b.add_parser("kubernetes", help="Event records/s from a local API server through the collector into Kafka",
                      description="Serve the recorded must-gather Events and nri-kubernetes Nodes/Pods from the "
                                  "local test API server, run the collector (real client, transactional producer) "
                                  "and print the records/s it sustains: the initial list, then a stream of "
                                  "watched count updates on both Event APIs.")
    bp.add_argument("--updates", type=int, default=20_000, metavar="N",
                    help="count updates streamed through the watches after the list (default: %(default)s)")
    bp.add_argument("--data", metavar="PATH", help="shared data folder (default: $KUBESIGHT_DATA or ../shared/data)")
    bp.set_defaults(func=_bench)


def _collect(args) -> int:
    import logging
    import threading

    from collectors.kubernetes import checkpoint
    from collectors.kubernetes.api import Api, api_client
    from collectors.kubernetes.collector import Collector, Options, SelfMetrics
    from collectors.sink import KafkaSink
    from core.broker import bootstrap_for
    from core.settings import Settings
    from core.shutdown import on_stop
    from core.telemetry import serve_for
    from core.topics import ensure_topics

    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retries are summed up by ours
    settings = Settings.load(args.config)
    cluster = args.cluster or settings.cluster
    opts = Options(cluster=cluster, streams=args.watch, owner_keys=args.owner_keys, owner_kinds=tuple(args.owner_kinds),
                   cache_size=args.cache_size, cache_ttl=args.cache_ttl, commit_interval=args.commit_interval, max_batch=args.max_batch,
                   page=args.page_size, watch_timeout=args.watch_timeout, backoff_base=args.backoff_base,
                   backoff_max=args.backoff_max, heartbeat=args.heartbeat)
    try:
        client = api_client(args.kubeconfig, args.context, args.in_cluster)
    except Exception as exc:
        print(f"kubesight: cannot configure the Kubernetes client: {exc}", file=sys.stderr)
        return 2
    bootstrap = bootstrap_for(settings)
    ensure_topics(settings, bootstrap)
    sink = KafkaSink(bootstrap, settings.topic, client_id="kubesight-collector-kubernetes",
                     transactional_id=args.transactional_id or f"kubesight-collector-kubernetes-{cluster}")
    restored = checkpoint.load(bootstrap, settings.topic("checkpoints"), cluster)
    log = logging.getLogger("kubesight.collect.kubernetes")
    log.info("cluster %s: resuming from %s", cluster, restored["rv"] or "nothing (first start: list everything)")
    collector = Collector(Api(client, timeout=args.request_timeout), sink, opts, restored)
    stop = threading.Event()
    on_stop(stop.set, settings.shutdown_timeout, "kubesight collect kubernetes")
    serve_for(settings, bootstrap, "kubesight collect kubernetes", [SelfMetrics(collector).registry],
              checks={"watches": collector.watch_check})
    try:
        collector.run(stop)
    except Exception as exc:
        log.error("stopping: %s: %s (restart resumes from the last committed checkpoint)", type(exc).__name__, exc)
        return 1
    finally:
        try:
            sink.producer.close(timeout=5)
        except Exception:
            pass
    s = collector.stats
    log.info("stopped: %d records, %d dead letters, %d transactions", s.records, s.dead, s.transactions)
    return 0


def _bench(args) -> int:
    from collectors.kubernetes.bench import run

    return run(args)
