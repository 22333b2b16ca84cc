"""``kubesight worker`` (one Faust worker) and ``kubesight demo`` (the main job on its embedded default)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from core.broker import bootstrap_for, die_with_parent
from core.settings import REPO, Settings


def register(sub, group) -> None:
    w = sub.add_parser("worker", help="run one stream worker (workers of one app id split the partitions)")
    w.add_argument("--worker-id", default=None, help="stable id (transactional.id suffix); default host-pid")
    w.add_argument("--loglevel", default="warning", choices=["debug", "info", "warning", "error"])
    w.add_argument("--role", default="all", choices=["all", "one", "signals", "incidents", "alerting", "delivery"],
                   help="all: the hot path here; incidents, and alerting and delivery (with routing), each in a child "
                        "process it starts, stops and restarts; one: all of them in this process, on one event loop "
                        "(least memory); signals, incidents, alerting, delivery: only that part, in this process (each "
                        "part is its own consumer group and transactional id; default: %(default)s)")
    w.add_argument("--metrics-file", default=None, help=argparse.SUPPRESS)  # a child: serve /metrics on loopback,
    # write the port here (the parent worker scrapes it and appends it to its own /metrics)
    w.set_defaults(func=_worker)

    d = sub.add_parser("demo", help="local Kafka + worker + replay of real recorded events; prints alerts")
    from collectors.replay import DEFAULT_EVENTS
    from collectors.replay import speed as replay_speed

    d.add_argument("--events", default=str(DEFAULT_EVENTS), help="recorded events folder or events.yaml "
                                                                  "(default: %(default)s)")
    d.add_argument("--speed", type=replay_speed, default=0.0, help="replay time acceleration; 0 = as fast as possible")
    d.add_argument("--owners", default=str(REPO / "deploy" / "demo" / "owners.yaml"),
                   help="namespace -> team map for the replay (default: %(default)s)")
    d.add_argument("--routing", default=str(REPO / "deploy" / "demo" / "routing.yaml"),
                   help="routing file; the demo starts a local webhook receiver per receiver (default: %(default)s)")
    d.add_argument("--quiet", action="store_true", help="print only the summary, not every alert")
    d.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the worker to catch up")
    d.add_argument("--hold", action="store_true", help="keep the stability board (and the broker) up after the "
                                                       "summary until Ctrl-C")
    d.set_defaults(func=_demo)


# ---------------------------------------------------------------- worker


def _worker(args) -> int:
    import logging

    from faust.worker import Worker

    from core.topics import ensure_topics
    from streams.app import create_app

    settings = Settings.load(args.config)
    bootstrap = bootstrap_for(settings)
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from core.kafkaclient import debug_logging

    debug_logging(args.loglevel)  # --loglevel debug: kafka-python's own lines too
    if args.role in ("incidents", "alerting", "delivery"):
        return _part_worker(args, settings, bootstrap)
    if settings.web_port is not None:  # Faust binds it late, and a port in use was its 48-line traceback, exit 1
        from core.telemetry import can_listen

        can_listen(settings.web_host, settings.web_port)
    ensure_topics(settings, bootstrap)
    worker_id = args.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    children = ()
    if args.role == "all":  # one event loop per part: none waits behind another's CPU
        roles = ("incidents", "alerting", "delivery") if settings.routing else ("incidents",)
        metrics_dir = (Path(settings.state_dir) / "metrics" / f"{settings.app_id}-{worker_id}"
                       if settings.web_port is not None else None)  # no web port: no /metrics to append to
        from core.settings import routing_snapshot

        children = (child_processes(args, worker_id, roles, settings.shutdown_timeout, metrics_dir,
                                    routing_snapshot(settings, worker_id)),)
    app = create_app(settings, bootstrap, worker_id=worker_id, alerting_here=args.role == "one",
                     incidents_here=args.role == "one", services=children)
    print(f"kubesight worker: {what_it_runs(app, settings, children)}", file=sys.stderr, flush=True)
    from core.shutdown import arm

    class BoundedWorker(Worker):  # Faust's own stop, within settings.shutdown_timeout whatever hangs
        def _on_sigterm(self) -> None:
            arm(settings.shutdown_timeout, "kubesight worker")
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            arm(settings.shutdown_timeout, "kubesight worker")
            super()._on_sigint()

    worker = BoundedWorker(app, loglevel=args.loglevel, quiet=True, redirect_stdouts=False)
    no_spinner(worker)
    worker.execute_from_commandline()
    return 0


def no_spinner(worker):
    """Faust's start-up spinner off: it writes cursor hide/show codes without asking whether its stream is a terminal
    (``kubesight worker > worker.out`` got ``ESC[?25l ... ESC[?25h`` in the file); the worker logs what it does."""
    worker.spinner = None
    return worker


def what_it_runs(app, settings: Settings, children=()) -> str:
    """The start-up line: rules, routing file and receivers, or plainly that notifications are off."""
    rs = app.kubesight_packs.holder.engine.ruleset
    packs = ", ".join(f"{p.name}@{p.version}" for p in getattr(rs, "packs", ())) or "no pack"
    out = f"{len(rs)} rules ({packs}) on {settings.topic('events')}, {settings.topic('samples')}; "
    if not settings.routing:
        return out + "notifications are OFF (no routing file in the settings: alerts go to the alerts topic only)"
    from alerts.config import load as load_routing

    names = [r.name for r in load_routing(settings.routing).receivers]
    where = "; incidents, alerting and delivery in child processes" if children else (
        "" if app.kubesight_alerting is not None else "; alerting and delivery run elsewhere (--role signals)")
    return out + f"routing {settings.routing}: {len(names)} receivers ({', '.join(names)}){where}"


def _part_worker(args, settings: Settings, bootstrap: str) -> int:
    """``--role incidents`` (alerts -> incidents), ``--role alerting`` (lifecycle, grouping, silences, inhibition) or
    ``--role delivery`` (the receivers' lanes): a mode worker with that one service; the same consumer groups and
    transactional ids as in one process."""
    import mode

    from core.shutdown import arm

    if args.role != "incidents" and not settings.routing:
        print(f"kubesight worker --role {args.role}: no routing file in the settings", file=sys.stderr)
        return 2
    worker_id = args.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    # streams.alerting only in the roles that load the routing file: importing it registers the routing-reload
    # gauges, at 0 until a load, which the incidents child exported for ever (an alert on == 0 fired)
    if args.role == "incidents":
        from streams.incidents import incident_processor

        service = incident_processor(settings, bootstrap, worker_id=worker_id)
    elif args.role == "alerting":
        from streams.alerting import AlertingService

        service = AlertingService(settings, bootstrap, worker_id=worker_id, deliver=False)
    else:
        from alerts.receivers import Receivers
        from streams.alerting import Deliverer, RoutingFile

        routing = RoutingFile(settings.routing)  # followed: a new version that validates is delivered by
        service = Deliverer(settings, bootstrap, Receivers(routing.cfg), routing_file=routing)
    if args.metrics_file:
        serve_child_metrics(service, Path(args.metrics_file))
    elif settings.web_port is not None:  # a part run alone, as the README allows: its own /metrics, /health, /ready
        from prometheus_client import REGISTRY

        from core.telemetry import serve_for
        from streams.telemetry import part_checks, part_metrics

        REGISTRY.register(part_metrics(service))
        serve_for(settings, bootstrap, f"kubesight worker --role {args.role}", checks=part_checks(service))
    print(f"kubesight worker --role {args.role}: pid {os.getpid()}", file=sys.stderr, flush=True)

    class BoundedWorker(mode.Worker):
        def _on_sigterm(self) -> None:
            arm(settings.shutdown_timeout, f"kubesight worker --role {args.role}")
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            arm(settings.shutdown_timeout, f"kubesight worker --role {args.role}")
            super()._on_sigint()

    BoundedWorker(service, loglevel=args.loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()
    return 0


def serve_child_metrics(service, port_file: Path) -> None:
    """A child's registry (its processor's figures, per-receiver delivery and its lag, process_*) on a free loopback port,
    written to ``port_file`` for the parent worker, which appends it to its own ``/metrics``."""
    from prometheus_client import REGISTRY

    from core.telemetry import serve
    from streams.telemetry import part_metrics

    REGISTRY.register(part_metrics(service))  # delivery's: its lag (the parent appends it with role="delivery")
    server = serve("127.0.0.1", 0)
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(server.server_address[1]))
    tmp.replace(port_file)  # atomic: the parent never reads half a number


def child_processes(args, worker_id: str, roles: tuple[str, ...], stop_timeout: float = 30.0,
                    metrics_dir: Path | None = None, routing_kept: Path | None = None):
    """The mode service that runs ``kubesight worker --role R`` children beside a worker, one per role.

    With ``metrics_dir`` (emptied here) each child serves its metrics on a loopback port named in
    ``metrics_dir/ROLE.port``; ``metrics_ports()`` says where for the worker's ``/metrics``.  ``routing_kept``
    (``core.settings.routing_snapshot``): where the children keep the routing version in force, for one restarted
    while the file is refused; removed when they stop."""
    import logging

    import mode

    log = logging.getLogger("kubesight.worker")
    config = args.config or os.environ.get("KUBESIGHT_CONFIG")  # the file the worker read, wherever it was named
    argv = [sys.executable, "-m", "kubesight"] + (["--config", os.path.abspath(config)] if config else []) + [
        "worker", "--worker-id", worker_id, "--loglevel", args.loglevel]

    if metrics_dir is not None:
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.iterdir():  # a previous run's ports: nothing listens there now
            stale.unlink(missing_ok=True)

    class Children(mode.Service):
        """Starts each part's process, starts it again if it dies, stops it (SIGTERM, then waits) with the worker.

        The children share the worker's id (so their transactional ids are the ones a single process used)
        and its stdout/stderr; they die with it (PR_SET_PDEATHSIG) even if it is killed -9."""

        settle = 5.0  # seconds a (re)started child must stay up to count as running (one dying at start never does)
        loop_window, loop_restarts = 60.0, 3  # this many restarts within the window: a crash loop, which must
        loop_settle = 20.0  # stay up this long (past a broker session timeout, 10 s) to count as running again

        def __init__(self, **kw):
            super().__init__(**kw)
            self.roles = roles
            self.routing_kept = routing_kept
            self.procs: dict[str, subprocess.Popen] = {}
            # for check(), which runs in /ready's thread: each value is replaced whole, never changed in place
            self.up_since: dict[str, float] = {}  # role -> time.monotonic() of its last start
            self.restarts: dict[str, tuple[float, ...]] = {}  # role -> its restarts within loop_window
            self.exits: dict[str, int] = {}  # role -> the exit code of its last process

        def metrics_ports(self) -> dict[str, Path]:
            return {} if metrics_dir is None else {role: metrics_dir / f"{role}.port" for role in roles}

        def _spawn(self, role: str) -> subprocess.Popen:
            from core.settings import ROUTING_SNAPSHOT

            extra = []
            if metrics_dir is not None:
                port_file = metrics_dir / f"{role}.port"
                port_file.unlink(missing_ok=True)  # the dead child's port
                extra = ["--metrics-file", str(port_file)]
            # where the last routing text that validated is kept: a child restarted while the file is refused runs
            # it; the worker's working directory, where its relative paths (config, routing, rules) were checked
            env = None if self.routing_kept is None else {**os.environ, ROUTING_SNAPSHOT: str(self.routing_kept)}
            return subprocess.Popen(argv + ["--role", role] + extra, stdin=subprocess.DEVNULL, env=env,
                                    preexec_fn=die_with_parent)

        async def on_start(self) -> None:
            for role in roles:
                self.procs[role] = self._spawn(role)

        @mode.Service.task
        async def _watch(self) -> None:
            for role in list(self.procs):  # a task starts right after on_start, which started them
                self.up_since[role] = time.monotonic()
            while not self.should_stop:
                await self.sleep(1.0)
                for role, proc in list(self.procs.items()):
                    if proc.poll() is not None and not self.should_stop:
                        log.error("worker: the %s process exited with %s; starting it again", role,
                                  proc.returncode)
                        now = time.monotonic()
                        self.exits[role] = proc.returncode
                        self.restarts[role] = tuple(t for t in self.restarts.get(role, ())
                                                    if t > now - self.loop_window) + (now,)
                        self.up_since[role] = time.monotonic()  # first: check() never sees the new child as old
                        self.procs[role] = self._spawn(role)

        def check(self, only: tuple[str, ...] = ()) -> tuple[bool, str]:
            """Readiness (``streams.telemetry.install``): each child (of the roles ``only``) runs and has stayed up
            ``settle`` seconds since its last start, ``loop_settle`` in a crash loop.  A child that exits at start (a
            routing file it refuses) is restarted every second: without this the worker was ready all along, though
            no notification could flow; the detail names the child and its exit code."""
            now = time.monotonic()
            ok, parts = True, []
            for role in only or roles:
                proc, started, last = self.procs.get(role), self.up_since.get(role), self.exits.get(role)
                recent = [t for t in self.restarts.get(role, ()) if t > now - self.loop_window]
                loop = len(recent) >= self.loop_restarts
                history = (f" ({len(recent)} restart{'s' * (len(recent) != 1)} in the last {self.loop_window:.0f} s, "
                           f"last exit {last}{', a crash loop' if loop else ''})" if recent else "")
                need = self.loop_settle if loop else self.settle
                if proc is None or started is None:
                    good, detail = False, "not started yet"
                elif (code := proc.poll()) is not None:
                    good, detail = False, f"exited with {code}, starting it again{history}"
                elif now - started < need:
                    good, detail = False, f"up {now - started:.0f} s of the {need:.0f} s it must stay up{history}"
                else:
                    good, detail = True, f"pid {proc.pid}, up {now - started:.0f} s{history}"
                ok = ok and good
                parts.append(f"{role}: {detail}")
            return ok, "; ".join(parts)

        async def on_stop(self) -> None:
            procs = list(self.procs.values())
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            await asyncio.get_running_loop().run_in_executor(None, _wait_all, procs, stop_timeout)
            # the routing version kept for a restarted child holds receiver URLs and tokens: gone with the children
            # that wrote it (a half-written copy of a killed one too), or every worker id (``hostname-pid`` by
            # default) would leave a copy behind, and copies of rotated secrets would outlive the rotation
            kept = self.routing_kept
            if kept is not None:
                try:
                    for path in [kept, *(p for p in kept.parent.iterdir()
                                         if p.name.startswith(f"{kept.name}.") and p.name.endswith(".tmp"))]:
                        path.unlink(missing_ok=True)
                except OSError as exc:  # no folder: no child kept a version
                    if kept.parent.exists():
                        log.warning("worker: cannot remove the routing version kept in %s (%s)", kept, exc)

    return Children()


def _wait_all(procs: list, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def spawn_worker(settings: Settings, bootstrap: str, log_path: Path, worker_id: str = "w0",
                 role: str = "all") -> subprocess.Popen:
    """Start ``kubesight worker`` as a child process with exactly these settings (a YAML beside its log)."""
    import yaml

    log_path.parent.mkdir(parents=True, exist_ok=True)
    config = log_path.with_suffix(".settings.yaml")
    config.write_text(yaml.safe_dump(settings.model_copy(update={"kafka": bootstrap}).model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "kubesight", "--config", str(config), "worker", "--worker-id", worker_id,
           "--loglevel", "info", "--role", role]
    with open(log_path, "ab") as fh:

        # the worker dies with its parent (demo, tests): no orphan even if the parent is killed
        # in our working directory, as the worker's own part processes: relative paths in the settings (a relative
        # KUBESIGHT_STATE_DIR) mean to it what they mean here
        return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=die_with_parent)


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def group_lag(bootstrap: str, group: str, topics: list[str], exact_below: int = 10_000) -> int | None:
    """Records not yet committed by ``group`` on ``topics`` (None if the group has committed nothing).

    Counted in records, not offsets: on topics written in transactions every commit marker (and every
    aborted record) takes an offset, so the offset gap after the last record never closes.  Gaps of up
    to ``exact_below`` offsets are read (read_committed) and their data records counted; a larger gap
    is returned as it is (the group is behind either way).
    """
    from kafka import KafkaConsumer, TopicPartition

    from core.kafkaclient import client_config

    # a consumer that never subscribes only reads the group's committed offsets
    c = KafkaConsumer(**client_config(bootstrap, "kafka-python"), group_id=group, enable_auto_commit=False,
                      isolation_level="read_committed")
    try:
        tps = [TopicPartition(t, p) for t in topics for p in (c.partitions_for_topic(t) or ())]
        ends = c.end_offsets(tps)  # read_committed: the last stable offsets
        committed = {tp: c.committed(tp) for tp in tps}
        if not any(v is not None for v in committed.values()):
            return None if any(ends.values()) else 0
        gaps = {tp: ends[tp] - (committed[tp] or 0) for tp in tps if ends[tp] > (committed[tp] or 0)}
        if not gaps or sum(gaps.values()) > exact_below:
            return sum(gaps.values())
    finally:
        c.close()
    return _records_between(bootstrap, {tp: (committed[tp] or 0, ends[tp]) for tp in gaps})


def _records_between(bootstrap: str, spans: dict, timeout: float = 10.0) -> int:
    """Data records (read_committed) in [start, end) of each partition: markers and aborted records not counted."""
    from kafka import KafkaConsumer

    from core.kafkaclient import client_config

    r = KafkaConsumer(**client_config(bootstrap, "kafka-python"), group_id=None, enable_auto_commit=False,
                      isolation_level="read_committed")
    try:
        r.assign(list(spans))
        for tp, (start, _) in spans.items():
            r.seek(tp, start)
        n = 0
        deadline = time.monotonic() + timeout
        while any(r.position(tp) < end for tp, (_, end) in spans.items()):
            if time.monotonic() > deadline:  # could not read to the end: count the rest as offsets
                return n + sum(max(0, end - r.position(tp)) for tp, (_, end) in spans.items())
            for tp, recs in r.poll(timeout_ms=200).items():
                n += sum(1 for m in recs if m.offset < spans[tp][1])
        return n
    finally:
        r.close()


# ---------------------------------------------------------------- demo

# the reader of this process's stdout has gone (`kubesight demo | head -3`): the threads that print alerts and
# notifications stop printing (and go on reading and answering), the demo itself stops at its next step
STDOUT_GONE = threading.Event()


def print_line(line: str, out=None) -> None:
    """Print ``line`` above any progress bar, at once (a reader of the pipe sees each alert as it comes); once the
    reader is gone, print nothing more."""
    out = out if out is not None else sys.stdout
    if STDOUT_GONE.is_set():
        return
    from tqdm import tqdm

    try:
        tqdm.write(line, file=out)
        out.flush()
    except BrokenPipeError:
        STDOUT_GONE.set()
        null = os.open(os.devnull, os.O_WRONLY)  # what is still buffered would fail again at exit: send it nowhere
        os.dup2(null, out.fileno())
        os.close(null)


def stop_if_reader_gone() -> None:
    """Raise ``BrokenPipeError`` once stdout's reader has gone: the CLI then ends quietly with 141, as any command
    whose reader went away (the cleanup of ``finally`` blocks runs on the way)."""
    if STDOUT_GONE.is_set():
        raise BrokenPipeError("stdout's reader has gone")


def delivered_state(notes: list[dict]) -> tuple[int, dict]:
    """(groups notified, {alert fingerprint: its last notified status}) of one receiver's notifications.

    >>> delivered_state([{"groupKey": "g1", "alerts": [{"fingerprint": "a", "status": "firing"}]},
    ...                  {"groupKey": "g1", "alerts": [{"fingerprint": "a", "status": "resolved"}]}])
    (1, {'a': 'resolved'})
    """
    final: dict[str, str] = {}
    for n in notes:
        for a in n.get("alerts", []):
            final[a.get("fingerprint", "")] = a.get("status", "")
    return len({n.get("groupKey") for n in notes}), final


def receiver_lines(got: dict[str, list[dict]], alerts: list[dict]) -> list[str]:
    """The demo summary's line per receiver: groups, alerts and their state as the receiver last heard it, and how
    many it still has firing that resolved on the alerts topic (``alerts``: every transition, in order) after their
    group's last notification.

    >>> notes = [{"groupKey": "g", "alerts": [{"fingerprint": "a", "status": "firing"},
    ...                                       {"fingerprint": "b", "status": "resolved"}]}]
    >>> [line] = receiver_lines({"ops": notes}, [{"fingerprint": "a", "status": "firing"},
    ...                                          {"fingerprint": "a", "status": "resolved"}])
    >>> print(line.replace("  ", " "))
     -> ops   1 groups, 2 alerts (1 firing, 1 resolved at the end) in 1 notifications; 1 of the firing resolved after their group's last notification
    >>> receiver_lines({"ops": notes}, [{"fingerprint": "a", "status": "firing"}])[0].endswith("in 1 notifications")
    True
    """
    on_topic = {a.get("fingerprint"): a.get("status") for a in alerts}  # each alert's last transition
    out = []
    for name, notes in sorted(got.items()):
        groups, final = delivered_state(notes)
        firing = sum(1 for s in final.values() if s == "firing")
        late = sum(1 for fp, s in final.items() if s == "firing" and on_topic.get(fp) == "resolved")
        out.append(f"  -> {name:20} {groups} groups, {len(final)} alerts ({firing} firing, "
                   f"{len(final) - firing} resolved at the end) in {len(notes)} notifications"
                   + (f"; {late} of the firing resolved after their group's last notification" if late else ""))
    return out


def wait_delivered(bootstrap: str, settings: Settings, settle: float, deadline: float, worker) -> bool:
    """Delivery is done: the alerting pipeline has read every alert and alert-group record, the deliverer
    every notification (lags in records: transaction markers are not records), and that has held, with
    no new alert-group or notification written, for ``settle`` seconds (longer than group_interval: a
    group flushes at most that long after its last change).  False at ``deadline`` or if the worker died."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from core.kafkaclient import client_config

    watch = [settings.topic("alert-groups"), settings.topic("notifications")]
    c = KafkaConsumer(**client_config(bootstrap, "kafka-python"), enable_auto_commit=False, isolation_level="read_committed")
    try:
        tps = [TopicPartition(t, p) for t in watch for p in (c.partitions_for_topic(t) or ())]
        since, ends = None, None
        while time.monotonic() < deadline and worker.poll() is None:
            stop_if_reader_gone()
            try:
                now_ends = c.end_offsets(tps)
                done = (group_lag(bootstrap, f"{settings.app_id}-alerting", [settings.topic("alerts"), watch[0]]) == 0
                        and group_lag(bootstrap, f"{settings.app_id}-deliver", [watch[1]]) in (0, None)
                        and now_ends == ends)
            except KafkaError as exc:  # a slow answer (a loaded machine) is not an answer: ask again
                print(f"demo: asking Kafka for offsets: {exc}; asking again", file=sys.stderr)
                now_ends, done = None, False
            if not done:
                since, ends = None, now_ends
            elif since is None:
                since = time.monotonic()
            elif time.monotonic() - since >= settle:
                return True
            time.sleep(0.3)
        return False
    finally:
        c.close()


class AlertTail(threading.Thread):
    """Reads the alerts topic (read_committed) from the beginning and prints one line per alert."""

    def __init__(self, bootstrap: str, topic: str, quiet: bool):
        super().__init__(daemon=True)
        from kafka import KafkaConsumer

        from core.kafkaclient import client_config

        self.consumer = KafkaConsumer(topic, **client_config(bootstrap, "kafka-python"), auto_offset_reset="earliest",
                                      isolation_level="read_committed", enable_auto_commit=False,
                                      group_id=None, consumer_timeout_ms=200)
        self.quiet = quiet
        self.alerts: list[dict] = []
        self._halt = threading.Event()

    def run(self) -> None:
        import orjson

        while not self._halt.is_set():
            for m in self.consumer:
                a = orjson.loads(m.value)
                self.alerts.append(a)
                if not self.quiet:
                    print_line(format_alert(a))
                if self._halt.is_set():
                    break

    def wait_read(self, bootstrap: str, deadline: float) -> None:
        """Until the tail holds every committed alert on the topic now (or ``deadline``): no sleep-and-hope."""
        from kafka import KafkaConsumer, TopicPartition

        from core.kafkaclient import client_config

        (topic,) = self.consumer.subscription()
        c = KafkaConsumer(**client_config(bootstrap, "kafka-python"), isolation_level="read_committed")
        try:
            tps = [TopicPartition(topic, p) for p in (c.partitions_for_topic(topic) or ())]
            want = _records_between(bootstrap, {tp: (0, end) for tp, end in c.end_offsets(tps).items()})
        finally:
            c.close()
        while len(self.alerts) < want and time.monotonic() < deadline:
            stop_if_reader_gone()
            time.sleep(0.1)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.consumer.close()


def format_alert(a: dict) -> str:
    """One readable, colourless line per alert.

    >>> format_alert({"status": "firing", "startsAt": "2021-08-03T09:21:42.000Z",
    ...   "labels": {"alertname": "KubeBackOff", "severity": "warning", "namespace": "shop", "name": "web-1",
    ...              "owner": "team-a"}, "annotations": {"summary": "Back-off restarting"}})
    '2021-08-03T09:21:42Z FIRING   warning  KubeBackOff shop/web-1 owner=team-a: Back-off restarting'
    >>> format_alert({"status": "resolved", "startsAt": "2021-08-03T09:21:42.000Z", "endsAt": "2021-08-03T09:40:00.000Z",
    ...   "labels": {"alertname": "KubeBackOff", "severity": "warning"}, "annotations": {}})[:29]
    '2021-08-03T09:40:00Z RESOLVED'
    """
    lab = a.get("labels", {})
    where = "/".join(x for x in (lab.get("namespace"), lab.get("pod") or lab.get("name") or lab.get("node")) if x)
    owner = f" owner={lab['owner']}" if lab.get("owner") else ""
    summary = (a.get("annotations", {}).get("summary") or "").replace("\n", " ")[:120]
    resolved = a.get("status") == "resolved" and a.get("endsAt")
    t = (a["endsAt"] if resolved else a.get("startsAt") or "")[:19] + "Z"  # a resolution happened at endsAt
    return f"{t} {a.get('status', '').upper():8} {lab.get('severity', ''):8} {lab.get('alertname')} {where}{owner}: {summary}"


class DemoReceivers(threading.Thread):
    """One real local webhook server per receiver of the routing file (free loopback ports)."""

    def __init__(self, routing_path: str, out_path: Path, quiet: bool):
        """Reads the routing file with the worker's loader: a file it refuses raises ConfigError (every problem,
        ``file:line: path: message``, as ``routes check`` prints them) before anything is started."""
        super().__init__(daemon=True)
        from alerts.config import load_with_data
        from alerts.routing import build

        routing, self.cfg = load_with_data(routing_path)
        if routing.templates:  # Alertmanager resolves them relative to the file: the copy lives elsewhere
            base = Path(routing_path).resolve().parent
            self.cfg["templates"] = [str(base / f) for f in routing.templates]
        root = build(routing.route)  # the root's timings, Alertmanager's defaults where the file has none
        # how long delivery must stay idle to be done: a group flushes within group_interval of a change
        self.settle = root.group_interval + root.group_wait + 1.0
        self.out_path = out_path
        self.quiet = quiet
        self.got: dict[str, list[dict]] = {}
        self.on_notify = None  # optional callable(receiver, body, wall-clock arrival time), on the server's thread
        self.ready = threading.Event()
        self.loop = None
        self.runner = None
        self.last = time.monotonic()

    def run(self) -> None:
        import asyncio

        from aiohttp import web

        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        app = web.Application()

        async def hook(request):
            name = request.match_info["name"]
            body = await request.json()
            self.got.setdefault(name, []).append(body)
            self.last = time.monotonic()
            if self.on_notify is not None:
                self.on_notify(name, body, time.time())
            if not self.quiet:  # the notification is taken whether or not it can be shown (a 500 would be retried)
                names = sorted({a["labels"].get("alertname", "?") for a in body.get("alerts", [])})
                print_line(f"  -> {name:20} {body.get('status', '').upper():8} {', '.join(names)} "
                           f"({len(body.get('alerts', []))} alerts, group {body.get('groupLabels')})")
            return web.Response(text="ok")

        app.router.add_post("/hook/{name}", hook)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]
        for r in self.cfg.get("receivers", []):
            for w in r.get("webhook_configs", []):
                w.pop("url_file", None)  # one of url and url_file, and the URL is ours now
                w["url"] = f"http://127.0.0.1:{port}/hook/{r['name']}"
        import yaml

        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self.out_path.write_text(yaml.safe_dump(self.cfg, sort_keys=False))
        self.ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        if self.loop is not None:
            async def _close():
                await self.runner.cleanup()
            import asyncio

            asyncio.run_coroutine_threadsafe(_close(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self.ident is not None:  # never started: the demo failed before (a thread not started cannot be joined)
            self.join(5)


def _demo(args) -> int:
    from collectors.replay import load_owners, replay
    from collectors.sink import KafkaSink
    from core.topics import ensure_topics

    t_start = time.monotonic()
    settings = Settings.load(args.config)
    tag = uuid.uuid4().hex[:6]
    # one partition: with clock: event (the default) the whole pipeline then reads one order, so every run
    # notifies the same groups and alerts (across partitions the interleaving is the fetches', README)
    settings = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}demo-{tag}-",
                                           "app_id": f"{settings.app_id}-demo-{tag}", "partitions": 1})
    root = Path(args.events)
    if not root.exists():  # said now, not after a broker, a worker and the board have started (~10 s)
        raise FileNotFoundError(f"{root}: no such file or folder")
    broker = None
    procs: list[subprocess.Popen] = []
    tail = None
    receivers = None
    board = None
    log_dir = Path(settings.state_dir) / "demo"  # KUBESIGHT_STATE_DIR: a read-only checkout runs the demo too
    done = False
    if args.routing:
        from core.yamlconfig import ConfigError

        try:  # a routing file the worker would refuse is refused before a broker starts, in `routes check`'s words
            receivers = DemoReceivers(args.routing, log_dir / f"routing-{tag}.yaml", args.quiet)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the demo as Ctrl-C does: through its cleanup below
    try:
        if settings.kafka:
            bootstrap = bootstrap_for(settings)  # carries kafka_security
            print(f"demo: using Kafka at {bootstrap} (topics {settings.topic_prefix}*)", file=sys.stderr)
        else:
            from core import broker as launcher

            print("demo: starting a local Kafka broker (KRaft, 127.0.0.1)...", file=sys.stderr)
            broker = launcher.start(f"demo-{tag}", attach=True)
            bootstrap = broker.bootstrap
        t_kafka = time.monotonic() - t_start
        if receivers is not None:
            receivers.start()
            receivers.ready.wait(10)
            settings = settings.model_copy(update={"routing": str(receivers.out_path)})
        ensure_topics(settings, bootstrap)
        procs.append(spawn_worker(settings, bootstrap, log_dir / f"worker-{tag}.log", worker_id=f"demo-{tag}"))
        print(f"demo: worker started (log {log_dir / f'worker-{tag}.log'})", file=sys.stderr)
        from streams.board import BoardThread

        board = BoardThread(settings, bootstrap)  # the stability board on a free loopback port, read-only
        print(f"demo: stability board at {board.start_and_wait()}", file=sys.stderr, flush=True)
        tail = AlertTail(bootstrap, settings.topic("alerts"), args.quiet)
        tail.start()
        sink = KafkaSink(bootstrap, settings.topic, client_id="kubesight-demo-replay")
        owners = load_owners(args.owners) if args.owners and Path(args.owners).exists() else []
        sent, dead = replay(sink, root, speed=args.speed, owners=owners)
        sink.close()
        # wait for the worker to commit everything it was given, then for the tail to read it
        deadline = time.monotonic() + args.timeout
        group = f"{settings.app_id}-signals"
        from kafka.errors import KafkaError

        while True:
            try:
                lag = group_lag(bootstrap, group, [settings.topic("events"), settings.topic("samples")])
            except KafkaError as exc:  # a slow answer on a loaded machine: ask again until the deadline
                lag = f"unknown ({exc})"
            if lag == 0:
                break
            stop_if_reader_gone()
            if procs[0].poll() is not None:
                print(f"demo: the worker exited with {procs[0].returncode}; see its log", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print(f"demo: worker still {lag} records behind after {args.timeout:.0f}s", file=sys.stderr)
                return 1
            time.sleep(0.3)
        if receivers is not None and not wait_delivered(bootstrap, settings, receivers.settle, deadline, procs[0]):
            print(f"demo: notifications still in flight after {args.timeout:.0f}s", file=sys.stderr)
            return 1
        tail.wait_read(bootstrap, deadline)
        tail.stop()
        alerts = tail.alerts
        tail = None
        stop_if_reader_gone()  # printing the summary to /dev/null would end the demo with 0
        elapsed = time.monotonic() - t_start
        by_name: dict[str, int] = {}
        for a in alerts:
            by_name[a["labels"].get("alertname", "?")] = by_name.get(a["labels"].get("alertname", "?"), 0) + 1
        print("\nsummary")
        print(f"  signals in     {sent} events replayed, {dead} rejected to the dead-letter topic")
        print(f"  alerts out     {len(alerts)} ({', '.join(f'{k} {v}' for k, v in sorted(by_name.items()))})")
        if receivers is not None:
            for line in receiver_lines(receivers.got, alerts):
                print(line)
            if settings.clock == "event":
                print("     (alerting follows the recording's time (clock: event): group_wait and group_interval are\n"
                      "      measured on the alerts' own times, so every run prints these figures; a group due after\n"
                      "      the recording's last alert is not flushed: its time never comes, so an alert that\n"
                      "      resolved in the recording's last group_interval is still firing at its receiver)")
            else:
                print("     (clock: wall: alerting groups on the wall clock while the replay compresses hours into\n"
                      "      seconds, so these figures vary between runs; the alerts above do not)")
        print(f"  seconds        {elapsed:.1f} end to end (Kafka ready after {t_kafka:.1f})")
        print(f"  board          {board.url}" + (" (until Ctrl-C)" if args.hold else " (stops with the demo; --hold keeps it)"),
              flush=True)
        while args.hold:
            time.sleep(3600)
        done = True
        return 0
    finally:
        # each step on its own: one failing must not leave a worker or a JVM behind; a second
        # Ctrl-C (or SIGTERM) must not cut the cleanup short either
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if tail is not None:
            _quietly(tail.stop)
        if receivers is not None:
            _quietly(receivers.stop)
        if board is not None:
            _quietly(board.stop)
        for p in procs:
            _quietly(stop_process, p)
        if broker is not None:
            _quietly(broker.stop)
        if done:  # a run that failed keeps its worker's log for the reader; one that worked leaves nothing behind
            _quietly(_forget_run, log_dir, tag, settings)


def _forget_run(log_dir: Path, tag: str, settings: Settings) -> None:
    """A finished demo's files: its worker's log and settings, its routing copy, the routing version its processes
    kept (core.settings.routing_snapshot), the worker's Faust data folder (every run has a tag and an app id of its
    own, so they piled up: 83 files after a day of demos)."""
    import shutil

    state = Path(settings.state_dir)
    for f in [*log_dir.glob(f"*-{tag}.*"), *(state / "routing").glob(f"{settings.app_id}-*.yaml")]:
        f.unlink(missing_ok=True)
    shutil.rmtree(state / "faust" / f"{settings.app_id}-faust-data", ignore_errors=True)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # the command's "interrupted" (exit 130), after the cleanup in ``finally``


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except Exception as exc:  # cleanup goes on
        print(f"demo: cleanup step {getattr(fn, '__name__', fn)} failed: {exc}", file=sys.stderr)
