"""``kubesight collect cloud`` (the HTTP intake) and ``kubesight bench cloud`` (its events/s through Kafka)."""

from __future__ import annotations

import argparse
import os
import sys

EPILOG = """\
endpoints:
  POST /events     one payload: Alibaba CloudMonitor notification, Alibaba EventBridge (CloudEvent, source
                   acs.ecs), AWS EventBridge EC2 / AWS Health event, CloudEvents 1.0 (structured, batch or
                   binary mode), ECS Describe* responses; IMDS bodies with ?instance=<instance id>
  GET  /healthz    liveness
  GET  /metrics    Prometheus counters (requests by status, events by reason)

authentication (at least one is required):
  Authorization: Bearer <token>                       token from --token-file or $KUBESIGHT_CLOUD_TOKEN
  X-Kubesight-Signature: sha256=<hex HMAC-SHA256 of the raw body>   key from --hmac-key-file or
                                                      $KUBESIGHT_CLOUD_HMAC_KEY
  (one secret per line: several lines allow rotation)

answers: 200 after Kafka acknowledged every event (acks=all); 400 + dead letter for a malformed or
unknown payload; 401 (nothing stored); 413 body too large; 503 Kafka unavailable (retry).

examples:
  kubesight collect cloud --listen 0.0.0.0:8090 --token-file /etc/kubesight/token --kubernetes
  kubesight collect cloud --check payload.json --nodes nodes.yaml
"""


def register(sub, group) -> None:

    g = group("collect", "run a collector")
    p = g.add_parser("cloud", help="HTTP intake of cloud events (Alibaba ECS, AWS EventBridge/Health, CloudEvents)",
                     description="Receive cloud provider events over HTTP, map each instance to its Kubernetes "
                                 "node and produce Event records to Kafka before answering 2xx.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default="127.0.0.1:8090", metavar="HOST:PORT",
                   help="address to listen on (default: %(default)s)")
    p.add_argument("--token-file", metavar="PATH", help="bearer token(s), one per line (else $KUBESIGHT_CLOUD_TOKEN)")
    p.add_argument("--hmac-key-file", metavar="PATH",
                   help="HMAC-SHA256 key(s), one per line (else $KUBESIGHT_CLOUD_HMAC_KEY)")
    p.add_argument("--max-body", type=int, default=256 * 1024, metavar="BYTES",
                   help="largest accepted body; larger gets 413 (default: %(default)s)")
    p.add_argument("--nodes", action="append", default=[], metavar="PATH",
                   help="node map file or folder, repeatable: Node / NodeList YAML or JSON (kubectl get nodes -o "
                        "yaml), or a mapping {instance id or providerID: node name}")
    p.add_argument("--node", action="append", default=[], metavar="INSTANCE=NODE",
                   help="one static mapping, repeatable, e.g. --node i-0abc1234=ip-10-0-1-2.ec2.internal")
    p.add_argument("--kubernetes", action="store_true",
                   help="list nodes with the Kubernetes API (in-cluster config, else kubeconfig) to map "
                        "instances to nodes through spec.providerID, and read the workload and team of the pods "
                        "that audit events (POST /audit) name")
    p.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig file for --kubernetes (default: the usual one)")
    from collectors.kubernetes.cli import add_owner_arguments

    add_owner_arguments(p.add_argument_group(
        "owners of audit events (with --kubernetes)",
        "as `collect kubernetes` takes them: give the values the Kubernetes collector runs with,\n"
        "or the audit events of a pod go to another team than its other alerts"))
    p.add_argument("--node-refresh", type=float, default=300.0, metavar="SECONDS",
                   help="re-list nodes this often; an unknown instance re-lists at most every 30 s "
                        "(default: %(default)s)")
    p.add_argument("--audit-ignore-users", metavar="REGEX", default=None,
                   help="also leave out the audit events (POST /audit) of users this regex matches (the whole name), "
                        "besides the control plane's own (nodes, controller-manager, scheduler, kube-system service "
                        "accounts); e.g. your GitOps bot")
    p.add_argument("--audit-trusted-networks", metavar="CIDRS", default="",
                   help="comma-separated public networks (your office's or VPN's egress) whose requests are not "
                        "reported as API access from the internet (APIRequestFromPublicIP); private, loopback and "
                        "carrier-grade NAT addresses never are")
    p.add_argument("--cluster", default="default", help="cluster name put on the events (default: %(default)s)")
    p.add_argument("--kafka-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="wait this long for Kafka's acknowledgement before answering 503 (default: %(default)s)")
    p.add_argument("--stdout", action="store_true", help="print Event records as JSON lines instead of producing")
    from core.webconfig import add_arguments

    add_arguments(p)  # --web-config, --insecure-listen
    p.add_argument("--check", metavar="PAYLOAD", help="no server: parse one payload file, print its Event records "
                                                      "(or the reason it would be rejected) and exit")
    p.add_argument("--instance", metavar="ID", help="with --check: the instance an IMDS body belongs to")
    p.set_defaults(func=_collect)

    b = group("bench", "measure throughput")
    bp = b.add_parser("cloud", help="cloud events/s through the HTTP intake into Kafka (loopback, acks=all)",
                      description="Start the intake on a loopback port with a local (or configured) Kafka, post "
                                  "real-shaped payloads with several concurrent clients and print events/s.")
    bp.add_argument("--events", type=int, default=5000, help="events to send (default: %(default)s)")
    bp.add_argument("--concurrency", type=int, default=32, help="requests in flight (default: %(default)s)")
    bp.add_argument("--batch", type=int, default=1,
                    help="events per request (a CloudEvents batch when > 1; default: %(default)s)")
    bp.set_defaults(func=_bench)


def _node_map(args):
    """The node map of ``--nodes``, ``--node`` and ``--kubernetes``; None (every problem printed) if one is bad."""
    from collectors.cloud.nodes import (
        NodeMap,
        NodeMapError,
        kubernetes_lister,
        load_node_files,
        nodes_from_objects,
    )
    from core.yamlconfig import ConfigError

    problems: list[str] = []
    static: dict[str, str] = {}
    try:
        static = load_node_files(args.nodes) if args.nodes else {}
    except ConfigError as exc:
        problems += exc.errors
    pairs = [n.partition("=") for n in args.node]
    bad = [f"--node {n!r}: expected INSTANCE=NODE" for n, (inst, eq, node) in zip(args.node, pairs, strict=True)
           if not (inst and eq and node)]
    try:
        static |= nodes_from_objects({inst: node for inst, eq, node in pairs if inst and eq and node})
    except NodeMapError as exc:
        bad += [f"--node {line}" for line in str(exc).splitlines()]
    if problems or bad:
        print("kubesight collect cloud: bad node map:", *problems, *bad, sep="\n", file=sys.stderr)
        return None
    lister = None
    if args.kubernetes:
        from collectors.kubernetes.api import api_client

        lister = kubernetes_lister(api_client(args.kubeconfig, in_cluster=None))
    return NodeMap(static, lister, refresh=args.node_refresh)


def _check(args, nodes) -> int:
    from collectors.cloud.event import PayloadError
    from collectors.cloud.intake import parse
    from core.records import encode

    if nodes.lister:
        nodes.relist()
    with open(args.check, "rb") as fh:
        body = fh.read()
    try:
        events = parse(body, instance=args.instance, nodes=nodes.snapshot(), cluster=args.cluster)
    except PayloadError as exc:
        print(f"rejected (400): {exc}", file=sys.stderr)
        return 1
    for ev in events:
        print(encode(ev).decode())
    return 0


def _collect(args) -> int:
    import asyncio
    import logging

    from collectors.cloud.auth import Auth, read_secret

    nodes = _node_map(args)
    if nodes is None:
        return 2
    if args.check:
        return _check(args, nodes)
    try:
        auth = Auth(read_secret(args.token_file, "KUBESIGHT_CLOUD_TOKEN"),
                    read_secret(args.hmac_key_file, "KUBESIGHT_CLOUD_HMAC_KEY"))
    except (OSError, ValueError) as exc:
        print(f"kubesight collect cloud: {exc}", file=sys.stderr)
        return 2
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        print(f"kubesight collect cloud: --listen must be HOST:PORT (a port 0-65535), got {args.listen!r}",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(args, auth, nodes, host.strip("[]"), int(port)))


async def _serve(args, auth, nodes, host: str, port: int) -> int:
    import asyncio
    import re

    from aiohttp import web

    from collectors.cloud.server import CONFIG, PrintSink, create_app
    from collectors.kubernetes.audit import DEFAULT_IGNORE, trusted_networks
    from collectors.sink import AsyncKafkaSink
    from core.settings import Settings
    from core.shutdown import on_stop
    from core.telemetry import serve_for
    from core.webconfig import ConfigError, for_command

    try:  # the token or HMAC key is always required, so any address may be used; TLS and users from the web config
        web_cfg, _ = for_command(args, Settings.load(args.config))
        ssl_context = web_cfg.ssl_context()
    except (ConfigError, OSError) as exc:
        print(f"kubesight collect cloud: {exc}", file=sys.stderr)
        return 2
    try:
        extra = args.audit_ignore_users and re.compile(args.audit_ignore_users).pattern  # its errors, not the union's
        ignore = re.compile(f"(?:{DEFAULT_IGNORE.pattern})|(?:{extra})") if extra else DEFAULT_IGNORE
    except re.error as exc:
        print(f"kubesight collect cloud: --audit-ignore-users: not a valid regex: {exc}", file=sys.stderr)
        return 2
    try:
        trusted = trusted_networks(args.audit_trusted_networks)
    except ValueError as exc:
        print(f"kubesight collect cloud: --audit-trusted-networks: {exc}", file=sys.stderr)
        return 2
    if args.stdout:
        sink = PrintSink()
    else:
        from core.broker import KafkaUnreachable, bootstrap_for
        from core.topics import ensure_topics

        settings = Settings.load(args.config)
        bootstrap = bootstrap_for(settings)
        # Kafka unreachable, topics kubesight cannot run on: one line, exit 2 (kubesight.cli); checked before the
        # producer exists, so none is left unclosed ("Unclosed AIOKafkaProducer" at exit)
        await asyncio.to_thread(ensure_topics, settings, bootstrap)
        sink = AsyncKafkaSink(bootstrap, settings.topic, client_id="kubesight-cloud-intake")
        try:
            await sink.start()
        except Exception as exc:  # whatever the client raised: the broker answered the TCP check a moment ago
            await sink.stop()
            raise KafkaUnreachable(f"Kafka unreachable at {bootstrap} ({type(exc).__name__}: {exc})") from None
    owners = None
    if args.kubernetes:  # audit events get the workload and team of the pod they name, as the Kubernetes collector's
        from collectors.kubernetes.api import Api, api_client
        from collectors.kubernetes.cli import owners_for

        in_pod = not args.kubeconfig and "KUBERNETES_SERVICE_HOST" in os.environ
        owners = owners_for(args, Api(api_client(args.kubeconfig, in_cluster=in_pod)).read)
    app = create_app(sink, auth, nodes, max_body=args.max_body, cluster=args.cluster,
                     kafka_timeout=args.kafka_timeout, owners=owners, audit_ignore=ignore,
                     audit_trusted=trusted)
    # POST /events and /audit keep their own credentials (token or HMAC signature, checked by the handler; a sender
    # has one Authorization header); basic_auth_users of the web config guard the rest (/metrics)
    app.middlewares.append(web_cfg.middleware(also=lambda request: request.path in ("/events", "/audit")))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    print(f"cloud intake listening on {web_cfg.scheme}://{host}:{port}/events (and /audit)", file=sys.stderr)
    stop = asyncio.Event()
    settings = Settings.load(args.config)
    on_stop(stop.set, settings.shutdown_timeout, "kubesight collect cloud", asyncio.get_running_loop())
    serve_for(settings, None if args.stdout else bootstrap, "kubesight collect cloud", [app[CONFIG]["registry"]])
    await stop.wait()
    await runner.cleanup()  # lets in-flight requests finish (their events are acknowledged or answered 503)
    if not args.stdout:
        await sink.stop()
    return 0


def _bench(args) -> int:
    from collectors.cloud.bench import run

    return run(args)
