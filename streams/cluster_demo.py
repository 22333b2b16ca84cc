"""The live pipeline against the real local Kubernetes control plane: ``kubesight demo --cluster`` and
``kubesight bench cluster``.

``LiveStack`` brings up (or is given) the cluster of ``deploy/cluster/launcher.py`` and a Kafka
broker, then the demo's local webhook receivers (``DemoReceivers``: one per receiver of the routing
file), a worker (``spawn_worker``) and the Kubernetes collector as a real process on the cluster's
watch, authenticated as its shipped least-privilege ServiceAccount.  Every notification is timestamped on arrival, so a scenario measures, per alert, the time
from the change it wrote to the API server to the notification at its team's receiver.

The scripted incidents (``SCENARIO``) are plain API writes, the way the tests provoke them:

- ``unschedulable``: a Deployment of team A whose pods no Node can take (the scheduler's FailedScheduling);
- ``node``: a Node whose kwok kubelet stops renewing its Lease, with pods of team A and team B on it
  (the node lifecycle controller marks it Unknown ~17 s later and writes NodeNotReady per pod);
- ``crashloop``: a StatefulSet of team B whose container restarts, then waits in CrashLoopBackOff
  (the status written the way a kubelet writes it; kwok plays no restarts).

An apiserver latency spike is not provoked: KubeAPILatencyHigh needs p99 > 1 s on non-streaming
requests, which this single-process control plane does not reach with cheap load.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.broker import die_with_parent, free_port
from core.kafkaclient import client_config
from core.settings import REPO, Settings
from streams.cli_run import DemoReceivers, _quietly, spawn_worker, stop_process, wait_delivered

COLLECTOR_MANIFEST = REPO / "deploy" / "kubernetes" / "collector-kubernetes.yaml"  # its ServiceAccount and RBAC
INTAKE_MANIFEST = REPO / "deploy" / "kubernetes" / "collector-cloud.yaml"  # the intake's (audit events' owners)

ROUTING = REPO / "deploy" / "demo" / "cluster-routing.yaml"
RULES = REPO / "deploy" / "demo" / "cluster-rules.yaml"
IMAGE = "registry.k8s.io/pause:3.10"


def _say(msg: str) -> None:
    print(f"demo: {msg}", file=sys.stderr, flush=True)


@dataclass
class Notified:
    """One alert as it reached a receiver (first firing notification of its fingerprint)."""

    receiver: str
    alert: dict
    at: float  # wall clock, seconds


@dataclass
class Outcome:
    """One scripted incident: what was expected, what arrived, how long it took."""

    step: str
    alertname: str
    expect_receiver: str
    written_at: float
    got: Notified | None = None
    note: str = ""

    @property
    def latency(self) -> float | None:
        return None if self.got is None else self.got.at - self.written_at

    @property
    def ok(self) -> bool:
        return self.got is not None and self.got.receiver == self.expect_receiver


class LiveStack:
    """Cluster + Kafka + receivers + worker + Kubernetes collector; ``with LiveStack(...) as s:``.

    ``cluster`` / ``bootstrap`` given (tests) are used as they are and not stopped; otherwise they are
    started attached to this process (Ctrl-C or a kill takes them down with it)."""

    def __init__(self, routing: Path | str = ROUTING, rules: list[str] | None = None, settings: Settings | None = None,
                 cluster=None, bootstrap: str | None = None, quiet: bool = True, nodes: int = 3,
                 log_dir: Path | None = None, progress=_say, board: bool = False):
        self.tag = uuid.uuid4().hex[:6]
        base = settings or Settings()
        self.settings = base.model_copy(update={
            "topic_prefix": f"{base.topic_prefix}live-{self.tag}-", "app_id": f"{base.app_id}-live-{self.tag}",
            "clock": "wall", "rules": [*base.rules, *(rules if rules is not None else [str(RULES)])],
            # a pod's alert may come before its node's (another collector, another partition): rank the cause on both
            "incident_wait": max(base.incident_wait, 10.0),
            "web_port": free_port()})  # partitions as configured: the collector checks them against its own
        self.routing, self.quiet, self.nodes, self.say = Path(routing), quiet, nodes, progress
        self.cluster, self.bootstrap = cluster, bootstrap or base.kafka
        self._own_cluster, self._own_broker = cluster is None, None
        self.log_dir = log_dir or Path(base.state_dir) / "demo"  # KUBESIGHT_STATE_DIR, as `kubesight demo`'s
        self.receivers: DemoReceivers | None = None
        self.worker: subprocess.Popen | None = None
        self.collector: subprocess.Popen | None = None
        self.intake: subprocess.Popen | None = None
        self.notes: list[Notified] = []
        self.want_board, self.board = board, None  # the stability board (streams.board), for the demo
        self._cv = threading.Condition()
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------ up and down

    def __enter__(self) -> LiveStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        from core.topics import ensure_topics
        from deploy.cluster import launcher

        t0 = time.monotonic()
        if self.cluster is None:
            self.say("starting the local Kubernetes control plane (etcd, kube-apiserver, controller-manager, "
                     "scheduler, kwok nodes)...")
            self.cluster = launcher.start(f"demo-{self.tag}", attach=True, nodes=self.nodes, quiet=True)
        self.timings["cluster"] = time.monotonic() - t0
        if not self.bootstrap:
            from core import broker as kafka

            self.say("starting a local Kafka broker (KRaft, 127.0.0.1)...")
            self._own_broker = kafka.start(f"live-{self.tag}", attach=True, quiet=True)
            self.bootstrap = self._own_broker.bootstrap
        self.timings["kafka"] = time.monotonic() - t0
        self.receivers = DemoReceivers(str(self.routing), self.log_dir / f"cluster-routing-{self.tag}.yaml", self.quiet)
        self.receivers.on_notify = self._notified
        self.receivers.start()
        if not self.receivers.ready.wait(10):
            raise RuntimeError("the local webhook receivers did not start")
        self.settings = self.settings.model_copy(update={"routing": str(self.receivers.out_path),
                                                         "kafka": self.bootstrap})
        ensure_topics(self.settings, self.bootstrap)
        self.worker = spawn_worker(self.settings, self.bootstrap, self.log_dir / f"live-worker-{self.tag}.log",
                                   worker_id=f"live-{self.tag}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
        env.update(KUBESIGHT_KAFKA=self.bootstrap, KUBESIGHT_TOPIC_PREFIX=self.settings.topic_prefix,
                   PYTHONUNBUFFERED="1")
        self.collector_log = self.log_dir / f"live-collector-{self.tag}.log"
        # the collector runs as its shipped ServiceAccount (read-only RBAC of deploy/kubernetes), not as the admin
        kubeconfig = self.cluster.service_account_kubeconfig(COLLECTOR_MANIFEST, self.log_dir / f"collector-{self.tag}.kubeconfig")
        with open(self.collector_log, "wb") as fh:
            self.collector = subprocess.Popen(
                [sys.executable, "-m", "kubesight", "collect", "kubernetes", "--kubeconfig", str(kubeconfig),
                 "--cluster", "local", "--commit-interval", "0.1", "--backoff-base", "0.1", "--backoff-max", "1"],
                cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent)
        # the intake takes the API server's audit webhook (TLS, the token the control plane was given) and reads the
        # owners of what an audit event names as its shipped ServiceAccount
        hostport, token, cert, key = self.cluster.audit
        token_file, web_cfg = self.log_dir / f"audit-{self.tag}.token", self.log_dir / f"audit-web-{self.tag}.yaml"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        web_cfg.write_text(f"tls_server_config: {{cert_file: {cert}, key_file: {key}}}\n")
        intake_kc = self.cluster.service_account_kubeconfig(INTAKE_MANIFEST, self.log_dir / f"intake-{self.tag}.kubeconfig")
        self.intake_log = self.log_dir / f"live-intake-{self.tag}.log"
        with open(self.intake_log, "wb") as fh:
            self.intake = subprocess.Popen(
                [sys.executable, "-m", "kubesight", "collect", "cloud", "--listen", hostport, "--token-file",
                 str(token_file), "--web-config", str(web_cfg), "--kubernetes", "--kubeconfig", str(intake_kc),
                 # kwok plays the kubelets: its own writes (a node's kubelet stopped) are the control plane's
                 "--audit-ignore-users", "kwok", "--cluster", "local"],
                cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent)
        self.say(f"worker, Kubernetes collector and audit intake started (logs {self.log_dir}/live-*-{self.tag}.log)")
        if self.want_board:
            from streams.board import BoardThread

            self.board = BoardThread(self.settings, self.bootstrap)  # read-only, on a free loopback port
            self.say(f"stability board at {self.board.start_and_wait()}")
        deadline = time.monotonic() + 120
        self._until("the collector's first list", lambda: "listed" in self.collector_log.read_text(errors="replace"),
                    deadline, self.collector)
        self._until("the worker's /ready", self._worker_ready, deadline, self.worker)
        self._until("the audit intake", lambda: "listening on" in self.intake_log.read_text(errors="replace"),
                    deadline, self.intake)
        self.timings["ready"] = time.monotonic() - t0
        self.say(f"pipeline ready in {self.timings['ready']:.1f}s (cluster {self.timings['cluster']:.1f}s)")

    def _worker_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.settings.web_port}/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    @staticmethod
    def _until(what: str, probe, deadline: float, proc: subprocess.Popen | None = None) -> None:
        while not probe():
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{what}: the process exited with {proc.returncode} (see its log)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not reached in time")
            time.sleep(0.2)

    def stop(self) -> None:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if threading.current_thread() is threading.main_thread() else None
        try:
            if self.collector is not None:
                _quietly(stop_process, self.collector)
            if self.intake is not None:
                _quietly(stop_process, self.intake)
            if self.board is not None:
                _quietly(self.board.stop)
            if self.worker is not None:
                _quietly(stop_process, self.worker)
            if self.receivers is not None:
                _quietly(self.receivers.stop)
            if self._own_broker is not None:
                _quietly(self._own_broker.stop)
            if self._own_cluster and self.cluster is not None:
                _quietly(self.cluster.stop)
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)

    # ------------------------------------------------------------ notifications

    def _notified(self, receiver: str, body: dict, at: float) -> None:
        with self._cv:
            seen = {n.alert.get("fingerprint") for n in self.notes}
            for a in body.get("alerts", []):
                if a.get("status") == "firing" and a.get("fingerprint") not in seen:
                    self.notes.append(Notified(receiver, a, at))
            self._cv.notify_all()

    def wait_alert(self, match, deadline: float) -> Notified | None:
        """The first firing notification whose alert satisfies ``match(alert)``, or None at ``deadline``."""
        with self._cv:
            while True:
                for n in self.notes:
                    if match(n.alert):
                        return n
                left = deadline - time.monotonic()
                if left <= 0 or (self.worker is not None and self.worker.poll() is not None):
                    return None
                self._cv.wait(min(left, 0.5))

    def delivered(self, timeout: float = 60.0) -> bool:
        """Every alert and notification handled and delivery idle (``wait_delivered``)."""
        return wait_delivered(self.bootstrap, self.settings, self.receivers.settle, time.monotonic() + timeout,
                              self.worker)

    # ------------------------------------------------------------ the API

    def api(self):
        from kubernetes import client

        class Api:
            pass

        a = Api()
        a.client = self.cluster.api_client()
        a.core, a.apps = client.CoreV1Api(a.client), client.AppsV1Api(a.client)
        return a


def alert_about(alertname: str, text: str):
    """A matcher: the alert ``alertname`` whose labels or summary name ``text``."""
    def match(a: dict) -> bool:
        lab = a.get("labels", {})
        return lab.get("alertname") == alertname and (
            any(text in str(v) for v in lab.values()) or text in a.get("annotations", {}).get("summary", ""))
    return match


# ---------------------------------------------------------------- the scripted incidents


def _namespace(api, name: str, team: str) -> None:
    from kubernetes import client

    try:
        api.core.create_namespace({"metadata": {"name": name, "labels": {"team": team}}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    deadline = time.monotonic() + 60  # pods need the namespace's default ServiceAccount
    while not any(sa.metadata.name == "default" for sa in api.core.list_namespaced_service_account(name).items):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no default ServiceAccount in {name}")
        time.sleep(0.2)


def _running(api, ns: str, name: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        p = next(iter(api.core.list_namespaced_pod(ns, field_selector=f"metadata.name={name}").items), None)
        if p is not None and p.status.phase == "Running":
            return p
        if time.monotonic() > deadline:
            raise TimeoutError(f"pod {ns}/{name} not Running in {timeout:.0f}s")
        time.sleep(0.2)


def step_unschedulable(stack: LiveStack, api, ns_a: str, deadline: float) -> list[Outcome]:
    """Team A's Deployment of 3 replicas asks for a disk type no Node has: 3 FailedScheduling -> alert."""
    stack.say(f"Deployment {ns_a}/checkout (team-a) asks for nodes that do not exist")
    t = time.time()
    api.apps.create_namespaced_deployment(ns_a, {
        "metadata": {"name": "checkout"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "checkout"}},
                 "template": {"metadata": {"labels": {"app": "checkout"}},
                              "spec": {"nodeSelector": {"disktype": "nvme-that-no-node-has"},
                                       "containers": [{"name": "main", "image": IMAGE}]}}}})
    o = Outcome("unschedulable workload", "KubePodFailedScheduling", "team-a", t)
    o.got = stack.wait_alert(alert_about("KubePodFailedScheduling", "checkout"), deadline)
    return [o]


def step_crashloop(stack: LiveStack, api, ns_b: str, deadline: float) -> list[Outcome]:
    """Team B's StatefulSet: its container exits with 2 twice and waits in CrashLoopBackOff (written to
    the pod's status subresource the way a kubelet writes it)."""
    stack.say(f"StatefulSet {ns_b}/fraud-check (team-b) starts crash-looping")
    api.apps.create_namespaced_stateful_set(ns_b, {
        "metadata": {"name": "fraud-check"},
        "spec": {"replicas": 1, "serviceName": "fraud-check", "selector": {"matchLabels": {"app": "fraud-check"}},
                 "template": {"metadata": {"labels": {"app": "fraud-check"}},
                              "spec": {"containers": [{"name": "main", "image": IMAGE}]}}}})
    _running(api, ns_b, "fraud-check-0", max(deadline - time.monotonic(), 1))
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    t = time.time()
    for restarts in (1, 2):
        at = (now + dt.timedelta(seconds=restarts)).isoformat().replace("+00:00", "Z")
        api.core.patch_namespaced_pod_status("fraud-check-0", ns_b, {"status": {"containerStatuses": [{
            "name": "main", "image": IMAGE, "ready": False, "started": False, "restartCount": restarts,
            "lastState": {"terminated": {"exitCode": 2, "reason": "Error", "startedAt": at, "finishedAt": at}},
            "state": {"waiting": {"reason": "CrashLoopBackOff",
                                  "message": "back-off 10s restarting failed container=main pod=fraud-check-0"}}}]}})
    o = Outcome("crash-looping workload", "KubePodCrashLooping", "team-b", t)
    o.got = stack.wait_alert(alert_about("KubePodCrashLooping", "fraud-check"), deadline)
    return [o]


def step_node(stack: LiveStack, api, ns_a: str, ns_b: str, deadline: float) -> list[Outcome]:
    """A node with a pod of each team stops heartbeating; the node lifecycle controller marks it Unknown
    (~17 s: lease + grace period) and each pod not ready.  Latency counts from the controller's write
    (the Ready condition's lastTransitionTime, 1 s resolution), not from the kubelet's silence."""
    node = f"kwok-rack7-{stack.tag[:4]}"
    stack.cluster.add_nodes([node])
    pods = [(ns_a, "cart-0", "team-a"), (ns_b, "ledger-0", "team-b")]
    for ns, name, _ in pods:
        api.core.create_namespaced_pod(ns, {"metadata": {"name": name}, "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node}, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": IMAGE}]}})
    for ns, name, _ in pods:
        _running(api, ns, name, max(deadline - time.monotonic(), 1))
    stack.say(f"node {node} (pods of team-a and team-b) stops heartbeating; the node controller "
              "notices after its 16 s grace period")
    t_silent = time.time()
    stack.cluster.set_kubelet(node, running=False)
    node_alert = stack.wait_alert(alert_about("KubeNodeUnreachable", node), deadline)
    cond = next((c for c in api.core.read_node(node).status.conditions or () if c.type == "Ready"), None)
    written = cond.last_transition_time.timestamp() if cond is not None and cond.status == "Unknown" else t_silent
    note = f"kubelet silent {written - t_silent:.0f}s before the controller wrote Unknown"
    out = [Outcome("node NotReady", "KubeNodeUnreachable", "platform", written, node_alert, note)]
    for _ns, name, team in pods:
        out.append(Outcome("node NotReady", "KubePodOnNotReadyNode", team, written,
                           stack.wait_alert(alert_about("KubePodOnNotReadyNode", name), deadline), note))
    return out


def step_cordon(stack: LiveStack, api, deadline: float) -> list[Outcome]:
    """A person cordons a node (``kubectl cordon``): the API server's audit webhook -> the intake -> KubeNodeCordoned,
    naming who did it, to the platform team; uncordoned again, it resolves."""
    node = f"kwok-rack9-{stack.tag[:4]}"
    stack.cluster.add_nodes([node])
    stack.say(f"the admin cordons node {node} (kubectl cordon): the API server's audit webhook tells the intake")
    t = time.time()
    api.core.patch_node(node, {"spec": {"unschedulable": True}})
    o = Outcome("node cordoned by hand", "KubeNodeCordoned", "platform", t)
    o.got = stack.wait_alert(alert_about("KubeNodeCordoned", node), deadline)
    api.core.patch_node(node, {"spec": {"unschedulable": False}})
    return [o]


def run_scenario(stack: LiveStack, steps=("unschedulable", "node", "crashloop", "cordon"),
                 timeout: float = 120.0) -> list[Outcome]:
    """Play the incidents in order; each waits (bounded) for its notifications before the next."""
    api = stack.api()
    try:
        ns_a, ns_b = f"shop-{stack.tag}", f"payments-{stack.tag}"
        _namespace(api, ns_a, "team-a")
        _namespace(api, ns_b, "team-b")
        out: list[Outcome] = []
        for i, s in enumerate(steps, 1):
            deadline = time.monotonic() + timeout
            stack.say(f"incident {i}/{len(steps)}: {s}")
            if s == "unschedulable":
                got = step_unschedulable(stack, api, ns_a, deadline)
            elif s == "node":
                got = step_node(stack, api, ns_a, ns_b, deadline)
            elif s == "crashloop":
                got = step_crashloop(stack, api, ns_b, deadline)
            elif s == "cordon":
                got = step_cordon(stack, api, deadline)
            else:
                raise ValueError(f"unknown step {s!r}")
            for o in got:
                stack.say(f"  {o.alertname:24} -> {o.got.receiver if o.got else 'NOTHING':9} "
                          + (f"{o.latency:.2f}s after the write" if o.got else f"(expected {o.expect_receiver})"))
            out.extend(got)
        return out
    finally:
        api.client.close()


def print_summary(outcomes: list[Outcome], stack: LiveStack, delivered: bool) -> None:
    print("\nsummary: scripted incidents on a real kube-apiserver -> collector -> Kafka -> worker -> team receivers")
    print(f"  {'incident':24} {'alert':24} {'expected':10} {'went to':10} {'write -> notification':>22}")
    for o in outcomes:
        lat = f"{o.latency:.2f}s" if o.got else "-"
        print(f"  {o.step:24} {o.alertname:24} {o.expect_receiver:10} {(o.got.receiver if o.got else 'NOTHING'):10} "
              f"{lat:>22}{'' if o.ok else '  <- WRONG'}{f'  ({o.note})' if o.note else ''}")
    print("  apiserver latency spike: not provoked (KubeAPILatencyHigh needs p99 > 1s on non-streaming requests;\n"
          "  this control plane does not get there with cheap load)")
    by_receiver: dict[str, list[str]] = {}
    for n in stack.notes:
        lab = n.alert.get("labels", {})
        by_receiver.setdefault(n.receiver, []).append(f"{lab.get('alertname')}({lab.get('namespace') or lab.get('node', '')})")
    print("  every firing alert notified, by receiver:")
    for r, names in sorted(by_receiver.items()):
        print(f"    {r:10} {len(names):3}  {', '.join(sorted(names))}")
    print(f"  delivery done: {'yes' if delivered else 'NO (still in flight at the deadline)'}; start-up "
          f"{stack.timings.get('ready', 0):.1f}s (cluster {stack.timings.get('cluster', 0):.1f}s)")


def demo_cluster(args) -> int:
    """``kubesight demo --cluster``."""
    from deploy.cluster.launcher import ClusterError

    settings = Settings.load(args.config)
    # the replay demo's routing names the replay's teams: the cluster demo has its own unless one is given
    routing = args.routing if args.routing and Path(args.routing) != REPO / "deploy" / "demo" / "routing.yaml" else ROUTING
    try:
        with LiveStack(routing=routing, settings=settings, quiet=args.quiet, board=True) as stack:
            outcomes = run_scenario(stack, timeout=args.timeout)
            delivered = stack.delivered(args.timeout)
            print_summary(outcomes, stack, delivered)
            print(f"  board          {stack.board.url} (stops with the demo)")
            return 0 if delivered and all(o.ok for o in outcomes) else 1
    except ClusterError as exc:
        print(f"kubesight: cluster: {(str(exc).splitlines() or [''])[0]}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------- bench cluster


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def bench_cluster(args) -> int:
    """``kubesight bench cluster``: write -> notification latency over ``--changes`` Events, and the
    collector's records/s over a burst of ``--burst`` Events on the real watch."""
    import yaml

    from deploy.cluster.launcher import ClusterError

    settings = Settings.load(args.config)
    routing = Path(settings.state_dir) / "demo" / f"bench-cluster-routing-{uuid.uuid4().hex[:6]}.yaml"
    routing.parent.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load(ROUTING.read_text())
    # one group per alert: every change is its own notification after group_wait
    cfg["route"].update(group_by=["..."], group_wait=args.group_wait, group_interval="1s")
    cfg["receivers"].append({"name": "team-bench", "webhook_configs": [{"url": "http://127.0.0.1:9/hook"}]})
    routing.write_text(yaml.safe_dump(cfg, sort_keys=False))
    say = (lambda m: None) if args.json else _say
    try:
        with LiveStack(routing=routing, settings=settings, quiet=True, nodes=1, progress=say) as stack:
            res = _bench(stack, args, say)
    except ClusterError as exc:
        print(f"kubesight: cluster: {(str(exc).splitlines() or [''])[0]}", file=sys.stderr)
        return 2
    finally:
        routing.unlink(missing_ok=True)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        lat = res["latency"]
        print(f"bench cluster: {lat['changes']} Events written to kube-apiserver at {lat['rate']}/s -> collector -> "
              f"Kafka -> worker -> routed webhook (group_wait {args.group_wait})")
        print(f"  write -> notification   p50 {lat['p50_s']*1000:.0f} ms   p99 {lat['p99_s']*1000:.0f} ms   "
              f"max {lat['max_s']*1000:.0f} ms   ({lat['notified']}/{lat['changes']} notified, "
              f"{lat['misrouted']} misrouted)")
        w = res["watch"]
        print(f"  collector on the real watch: {w['records']} records in {w['seconds']:.2f}s = "
              f"{w['records_per_s']:.0f} records/s (API writes went at {w['write_per_s']:.0f}/s with "
              f"{w['writers']} writers: the watch keeps up with what one API server takes)")
    return 0 if res["latency"]["notified"] == res["latency"]["changes"] and not res["latency"]["misrouted"] else 1


def _event(ns: str, obj: str, reason: str, i: int) -> dict:
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    return {"metadata": {"name": f"{obj}.{i:x}{uuid.uuid4().hex[:6]}", "namespace": ns},
            "involvedObject": {"kind": "Pod", "namespace": ns, "name": obj, "apiVersion": "v1"},
            "reason": reason, "type": "Warning", "message": "Back-off restarting failed container main",
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "source": {"component": "kubelet", "host": "kwok-node-0"}, "reportingComponent": "kubelet",
            "reportingInstance": "kwok-node-0"}


def _bench(stack: LiveStack, args, say) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from kafka import KafkaConsumer, TopicPartition

    api = stack.api()
    ns = f"bench-{stack.tag}"
    _namespace(api, ns, "team-bench")
    # warm-up: the first alert through the whole path (connections, JIT of nothing, caches)
    api.core.create_namespaced_event(ns, _event(ns, "warmup", "BackOff", 0))
    if stack.wait_alert(alert_about("KubeContainerBackOff", "warmup"), time.monotonic() + 90) is None:
        raise RuntimeError("warm-up alert never arrived (see the worker and collector logs)")
    say(f"latency: {args.changes} Events at {args.rate}/s, each a new crash loop of its own pod")
    written: dict[str, float] = {}
    t_next = time.monotonic()
    for i in range(args.changes):
        obj = f"web-{i:04d}"
        t_next += 1.0 / args.rate
        time.sleep(max(0.0, t_next - time.monotonic()))
        written[obj] = time.time()
        api.core.create_namespaced_event(ns, _event(ns, obj, "BackOff", i))
    deadline = time.monotonic() + 60
    lats, misrouted = [], 0
    for obj, t in written.items():
        n = stack.wait_alert(alert_about("KubeContainerBackOff", f"Pod/{obj}"), deadline)
        if n is not None:
            lats.append(n.at - t)
            misrouted += n.receiver != "team-bench"
    latency = {"changes": args.changes, "rate": args.rate, "notified": len(lats), "misrouted": misrouted,
               "p50_s": round(_pct(lats, 0.5), 4) if lats else None, "p99_s": round(_pct(lats, 0.99), 4) if lats else None,
               "max_s": round(max(lats), 4) if lats else None, "mean_s": round(statistics.fmean(lats), 4) if lats else None,
               "group_wait": args.group_wait}
    # records/s: a burst of Events written as fast as the API server takes them, read back from the topic
    say(f"watch: a burst of {args.burst} Events with {args.writers} writers")
    topic = stack.settings.topic("events")
    c = KafkaConsumer(**client_config(stack.bootstrap, "kafka-python"), isolation_level="read_committed", enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic)]
    start = c.end_offsets(tps)
    c.assign(tps)
    for tp in tps:
        c.seek(tp, start[tp])
    apis = [stack.api() for _ in range(args.writers)]

    def write(k: int) -> None:
        a = apis[k]
        for i in range(k, args.burst, args.writers):
            a.core.create_namespaced_event(ns, _event(ns, f"burst-{i % 50}", "BurstTest", i))

    t0 = time.time()
    with ThreadPoolExecutor(args.writers) as ex:
        list(ex.map(write, range(args.writers)))
    t_written = time.time() - t0
    stamps: list[float] = []
    deadline = time.monotonic() + 120
    while len(stamps) < args.burst and time.monotonic() < deadline:
        for batch in c.poll(timeout_ms=200).values():
            stamps += [m.timestamp / 1000 for m in batch if b'"BurstTest"' in m.value]
    c.close()
    for a in apis + [api]:
        a.client.close()
    secs = (max(stamps) - t0) if stamps else float("nan")
    watch = {"records": len(stamps), "burst": args.burst, "writers": args.writers, "seconds": round(secs, 3),
             "records_per_s": round(len(stamps) / secs, 1) if stamps else 0.0,
             "write_per_s": round(args.burst / t_written, 1)}
    return {"latency": latency, "watch": watch, "startup_s": round(stack.timings.get("ready", 0), 1)}


def register(sub, group) -> None:
    # ``demo --cluster``: a flag on the replay demo's parser (streams.cli_run registers it first; it does
    # not import this module, which builds on its receivers and worker spawning)
    demo = sub.choices["demo"]
    demo.add_argument("--cluster", action="store_true",
                      help="live instead of a replay: a local Kubernetes control plane, its collector and scripted "
                           "incidents routed to their teams")
    replay_demo = demo.get_default("func")
    demo.set_defaults(func=lambda args: demo_cluster(args) if args.cluster else replay_demo(args))
    b = group("bench", "benchmarks").add_parser(
        "cluster", help="write to the real kube-apiserver -> routed notification latency (p50/p99), collector records/s")
    b.add_argument("--changes", type=int, default=200, help="Events whose alerts are timed (default: %(default)s)")
    b.add_argument("--rate", type=float, default=20.0, help="Events written per second while timing (default: %(default)s)")
    b.add_argument("--group-wait", default="100ms", help="group_wait of the bench routing (default: %(default)s)")
    b.add_argument("--burst", type=int, default=2000, help="Events written at once to measure the collector's records/s")
    b.add_argument("--writers", type=int, default=8, help="concurrent API writers of the burst (default: %(default)s)")
    b.add_argument("--json", action="store_true", help="print the figures as JSON")
    b.set_defaults(func=bench_cluster)
