"""Fetch, format, start, probe and stop a real single-node Apache Kafka (KRaft) on 127.0.0.1.

Broker resolution (:func:`bootstrap_for`): the configured cluster, else a local broker. The local
broker's jars come from Maven Central through ``deploy/kafka/pom.xml`` (``mvn dependency:copy-dependencies``)
into ``.cache/kafka/lib`` and are reused while the pom is unchanged.  Each broker gets a run folder
(``.cache/kafka/runs/<name>``) holding its properties, data, ``kafka.log`` and ``broker.json``
(pid and bootstrap address).  ``attach=True`` ties the JVM to the calling process (Linux
``PR_SET_PDEATHSIG``) so tests and the demo never leave an orphan JVM, even when killed.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.settings import Settings

REPO = Path(__file__).resolve().parent.parent
POM = REPO / "deploy" / "kafka" / "pom.xml"  # data read by path: the base layer imports nothing of ours
LOG4J = REPO / "deploy" / "kafka" / "log4j2.yaml"


def cache_dir() -> Path:
    return Path(os.environ.get("KUBESIGHT_HOME", REPO / ".cache")) / "kafka"


class KafkaLaunchError(RuntimeError):
    """The local broker could not be fetched, formatted or started; the message says why."""


class KafkaUnreachable(RuntimeError):
    """No bootstrap server of the configured cluster answers; the message names them and why."""


def check_reachable(bootstrap: str, timeout: float = 5.0) -> None:
    """Raise KafkaUnreachable unless some bootstrap server accepts a connection within ``timeout``, with
    the security it carries (``core.kafkaclient``): TCP, TLS handshake, a Kafka request, SASL login.

    A start-up check, so a command with a wrong address, password or CA fails in seconds with one line
    instead of retrying for half a minute (clients running later reconnect by themselves).  The list is
    read whole first (``core.settings.bootstrap_servers``, as the settings are checked when they load):
    a bad entry after a server that answers would otherwise pass, and be retried by every client.

    Each server has its share of the time left (divided among it and the servers after it), so a server that
    accepts the connection and then says nothing cannot starve the others: with one deadline for all, a healthy
    broker after it had 0.1 s, failed the check and was called "not a Kafka broker".  A server that fails at once
    leaves its time to the ones after it, and the first that answers ends the check, as before.

    >>> check_reachable("127.0.0.1:1", timeout=1)
    Traceback (most recent call last):
    ...
    core.broker.KafkaUnreachable: Kafka unreachable at 127.0.0.1:1 (127.0.0.1:1: connection refused)
    >>> check_reachable("127.0.0.1:99999")
    Traceback (most recent call last):
    ...
    core.broker.KafkaUnreachable: Kafka: the port of '127.0.0.1:99999' must be 1-65535, got 99999
    """
    from core.kafkaclient import problem, seconds
    from core.settings import bootstrap_servers

    try:
        servers = bootstrap_servers(bootstrap)
    except ValueError as exc:
        raise KafkaUnreachable(f"Kafka: {exc}") from None
    why, rejected = [], False
    deadline = time.monotonic() + timeout
    for n, ((host, port), server) in enumerate(zip(servers, (s.strip() for s in bootstrap.split(",")), strict=True)):
        if (left := deadline - time.monotonic()) <= 0 and n:  # the ones before it overran (a slow name lookup)
            why.append(f"{server}: not tried, the check's {seconds(timeout)} s were spent on the servers before it")
            continue
        own = time.monotonic() + left / (len(servers) - n)
        try:
            sock = socket.create_connection((host, port), timeout=max(0.1, own - time.monotonic()))
            trouble = problem(bootstrap, sock, host, own)
            if trouble is None:
                return
            why.append(f"{server}: {trouble}")
            rejected = True
        except OSError as exc:
            text = "connection refused" if isinstance(exc, ConnectionRefusedError) else (
                "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc))
            why.append(f"{server}: {text}")
    if rejected:
        raise KafkaUnreachable(f"Kafka at {bootstrap} rejects kubesight's connection ({'; '.join(why)})")
    raise KafkaUnreachable(f"Kafka unreachable at {bootstrap} ({'; '.join(why)})")


def _say(msg: str) -> None:
    print(f"kafka: {msg}", file=sys.stderr, flush=True)


def ensure_jars(quiet: bool = False) -> Path:
    """Download Kafka and its log4j2 binding once; return the lib folder."""
    lib = cache_dir() / "lib"
    stamp = lib / ".pom-sha256"
    want = hashlib.sha256(POM.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == want and any(lib.glob("kafka_2.13-*.jar")):
        return lib
    if not shutil.which("mvn"):
        raise KafkaLaunchError("mvn not found: install Maven (apt-get install maven) or set KUBESIGHT_KAFKA")
    tmp = lib.with_name("lib.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        _say("fetching Apache Kafka jars from Maven Central (once)...")
    cmd = ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise KafkaLaunchError(f"mvn failed ({res.returncode}): {(res.stdout + res.stderr)[-2000:]}")
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    stamp.write_text(want)
    return lib


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def dies_with_parent(sig: int = signal.SIGTERM):
    """A ``preexec_fn``: the child gets ``sig`` when the process that started it dies (Linux PR_SET_PDEATHSIG)."""
    def preexec() -> None:  # runs in the child between fork and exec
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)
        except OSError:
            pass
    return preexec


die_with_parent = dies_with_parent(signal.SIGTERM)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def metadata_ok(bootstrap: str, timeout: float = 3.0) -> bool:
    """True when a real Metadata request to the broker succeeds."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError, RetriableError

    from core.kafkaclient import client_config

    transient = (RetriableError, KafkaTimeoutError, KafkaConnectionError, OSError)
    try:
        c = KafkaConsumer(**client_config(bootstrap, "kafka-python"), request_timeout_ms=int(timeout * 1000) + 1000,
                          metadata_max_age_ms=1000)
    except transient:
        return False
    try:
        c.topics()  # a Metadata request
        return True
    except transient:
        return False
    finally:
        c.close()


@dataclass
class Broker:
    name: str
    bootstrap: str
    pid: int
    run_dir: Path
    proc: subprocess.Popen | None = None
    ephemeral: bool = False
    secure_bootstrap: str | None = None  # the SASL_SSL listener, when started with ``security``

    @property
    def log(self) -> Path:
        return self.run_dir / "kafka.log"

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return process_alive(self.pid)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (controlled shutdown), then SIGKILL after ``timeout``; removes broker.json, and the
        whole run folder of a broker started with ``attach=True`` (its data dies with its owner)."""
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:
                if self.proc is not None:
                    try:
                        self.proc.wait(0.1)
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    time.sleep(0.1)
            if self.alive():
                os.kill(self.pid, signal.SIGKILL)
                if self.proc is not None:
                    self.proc.wait(5)
        (self.run_dir / "broker.json").unlink(missing_ok=True)
        if self.ephemeral:
            shutil.rmtree(self.run_dir, ignore_errors=True)


@dataclass(frozen=True)
class BrokerSecurity:
    """A SASL_SSL listener beside the PLAINTEXT one (which stays for the controller, inter-broker
    traffic and the launcher's own probe, on loopback): TLS from a PKCS#12 keystore, SASL users
    for PLAIN (JAAS) and SCRAM-SHA-256/512 (credentials written at storage format time)."""

    keystore: Path  # PKCS#12: the broker's certificate chain and key
    keystore_password: str
    users: tuple[tuple[str, str], ...]  # (name, password), for every mechanism


def _secure_properties(sec: BrokerSecurity) -> str:
    plain_users = " ".join(f'user_{u}="{pw}"' for u, pw in sec.users)
    return f"""ssl.keystore.type=PKCS12
ssl.keystore.location={sec.keystore}
ssl.keystore.password={sec.keystore_password}
ssl.client.auth=none
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
"""


def _properties(run: Path, port: int, cport: int, sport: int | None = None,
                security: BrokerSecurity | None = None, node_id: int = 1, voters: str | None = None,
                internal_rf: int = 1) -> str:
    secure = f",SASL_SSL://127.0.0.1:{sport}" if security else ""
    return f"""# written by kubesight's launcher: a KRaft node, broker + controller, loopback only
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters or f"1@127.0.0.1:{cport}"}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}{secure}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}{secure}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
{_secure_properties(security) if security else ""}inter.broker.listener.name=PLAINTEXT
log.dirs={run / "data"}
num.partitions=1
default.replication.factor={internal_rf}
offsets.topic.replication.factor={internal_rf}
offsets.topic.num.partitions=8
transaction.state.log.replication.factor={internal_rf}
transaction.state.log.min.isr={min(2, internal_rf)}
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor={internal_rf}
share.coordinator.state.topic.min.isr={min(2, internal_rf)}
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
log.retention.hours=168
"""


def start(name: str = "default", attach: bool = False, heap_mb: int = 512, timeout: float = 90.0,
          quiet: bool = False, security: BrokerSecurity | None = None) -> Broker:
    """Start (or reuse a running) named broker and wait until it answers a Metadata request.

    ``security`` adds a SASL_SSL listener (``Broker.secure_bootstrap``); only with ``attach``.
    A broker started without ``attach`` keeps its folder when stopped (``kubesight kafka down``):
    the next start reuses its data (topics, silences, state) and its port, so running clients
    reconnect by themselves.  ``purge`` deletes it.  An attached broker starts empty every time.
    """
    if security is not None and not attach:
        raise KafkaLaunchError("a broker with a SASL_SSL listener is for tests: start it with attach=True")
    existing = status(name)
    if existing is not None:
        return existing
    _reap_stale()
    lib = ensure_jars(quiet=quiet)
    run = cache_dir() / "runs" / name
    props = run / "server.properties"
    java = shutil.which("java") or "java"
    cp = f"{lib}/*"
    jvm = [java, f"-Xmx{heap_mb}m", f"-Xms{heap_mb}m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
           "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={LOG4J}"]
    kept = _kept_ports(run) if not attach else None
    if kept is not None:
        (port, cport), sport = kept, None
        taken = [p for p in (port, cport) if _port_open(p)]
        if taken:
            raise KafkaLaunchError(f"broker '{name}' keeps port {port} (controller {cport}) but port {taken[0]} is "
                                   f"in use by another process: stop it, or `kubesight kafka purge` to start afresh")
        if not quiet:
            _say(f"broker '{name}': reusing its data and port {port} ({run})")
    else:
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        port, cport, sport = free_port(), free_port(), free_port()
        while len({port, cport, sport}) < 3:
            cport, sport = free_port(), free_port()
        props.write_text(_properties(run, port, cport, sport, security))
        scram = [f"--add-scram={m}=[name={u},password={pw}]" for u, pw in (security.users if security else ())
                 for m in ("SCRAM-SHA-256", "SCRAM-SHA-512")]
        cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")  # may start with "-": pass as --x=y
        res = subprocess.run(jvm[:1] + ["-Xmx256m", f"-Dlog4j2.configurationFile={LOG4J}", "-cp", cp,
                                        "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c",
                                        str(props), *scram], capture_output=True, text=True)
        if res.returncode != 0:
            raise KafkaLaunchError(f"formatting storage failed: {(res.stdout + res.stderr)[-2000:]}")
    t0 = time.monotonic()
    log = open(run / "kafka.log", "ab")
    proc = subprocess.Popen(jvm + ["-cp", cp, "kafka.Kafka", str(props)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=run, preexec_fn=die_with_parent if attach else None,
                            start_new_session=not attach)
    log.close()
    broker = Broker(name=name, bootstrap=f"127.0.0.1:{port}", pid=proc.pid, run_dir=run, proc=proc, ephemeral=attach,
                    secure_bootstrap=f"127.0.0.1:{sport}" if security else None)
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if not broker.alive():
            tail = broker.log.read_text(errors="replace")[-3000:]
            raise KafkaLaunchError(f"broker exited with {proc.returncode} during start-up; log tail:\n{tail}")
        # a plain TCP connect first: kafka-python's client backs off for seconds on a refused bootstrap
        if _port_open(port) and metadata_ok(broker.bootstrap, timeout=2.0):
            break
        time.sleep(0.1)
    else:
        broker.ephemeral = False  # keep the run folder: its kafka.log says why
        broker.stop()
        raise KafkaLaunchError(f"broker did not answer a Metadata request within {timeout:.0f}s (log: {broker.log})")
    _write_meta(run / "broker.json", {"pid": proc.pid, "bootstrap": broker.bootstrap, "ephemeral": attach,
                                      "started": time.time(), "startup_s": time.monotonic() - t0})
    if not quiet:
        _say(f"broker '{name}' ready at {broker.bootstrap} in {time.monotonic() - t0:.1f}s (pid {proc.pid})")
    return broker


def start_cluster(name: str, nodes: int = 3, heap_mb: int = 256, timeout: float = 120.0) -> list[Broker]:
    """``nodes`` KRaft nodes (each broker + controller, one voter each) forming one cluster on loopback,
    tied to this process like ``attach=True`` (their folders removed when stopped); internal topics
    replicated min(3, nodes) times. Returns the nodes; ``stop_cluster`` stops them. For tests of replicated topics."""
    lib = ensure_jars(quiet=True)
    java = shutil.which("java") or "java"
    cp = f"{lib}/*"
    ports = set()
    while len(ports) < 2 * nodes:
        ports.add(free_port())
    ports = sorted(ports)
    pairs = [(ports[2 * i], ports[2 * i + 1]) for i in range(nodes)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(pairs))
    cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    jvm = [java, f"-Xmx{heap_mb}m", f"-Xms{heap_mb}m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
           "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={LOG4J}"]
    out: list[Broker] = []
    try:
        for i, (port, cport) in enumerate(pairs):
            run = cache_dir() / "runs" / f"{name}-{i + 1}"
            shutil.rmtree(run, ignore_errors=True)
            run.mkdir(parents=True)
            props = run / "server.properties"
            props.write_text(_properties(run, port, cport, node_id=i + 1, voters=voters, internal_rf=min(3, nodes)))
            res = subprocess.run([java, "-Xmx256m", f"-Dlog4j2.configurationFile={LOG4J}", "-cp", cp,
                                  "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(props)],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                raise KafkaLaunchError(f"formatting node {i + 1} failed: {(res.stdout + res.stderr)[-2000:]}")
            with open(run / "kafka.log", "ab") as log:
                proc = subprocess.Popen(jvm + ["-cp", cp, "kafka.Kafka", str(props)], stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=run,
                                        preexec_fn=die_with_parent)
            out.append(Broker(name=f"{name}-{i + 1}", bootstrap=f"127.0.0.1:{port}", pid=proc.pid, run_dir=run,
                              proc=proc, ephemeral=True))
        deadline = time.monotonic() + timeout
        for b in out:
            while not (_port_open(int(b.bootstrap.rpartition(":")[2])) and metadata_ok(b.bootstrap, timeout=2.0)):
                if not b.alive():
                    raise KafkaLaunchError(f"node {b.name} exited; log tail:\n{b.log.read_text(errors='replace')[-3000:]}")
                if time.monotonic() > deadline:
                    raise KafkaLaunchError(f"node {b.name} did not answer within {timeout:.0f}s (log: {b.log})")
                time.sleep(0.2)
        return out
    except BaseException:
        stop_cluster(out)
        raise


def stop_cluster(nodes: list[Broker], timeout: float = 15.0) -> None:
    """Stop every node of ``start_cluster`` together (one by one, the last ones wait for a lost quorum)."""
    for b in nodes:
        if b.alive():
            try:
                os.kill(b.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for b in nodes:
        b.stop(timeout=max(0.5, deadline - time.monotonic()))


def _kept_ports(run: Path) -> tuple[int, int] | None:
    """(port, controller port) of a stopped broker whose formatted data is still there, else None."""
    props = run / "server.properties"
    if not (props.exists() and (run / "data" / "meta.properties").exists()):
        return None
    conf = dict(line.split("=", 1) for line in props.read_text().splitlines() if "=" in line and not line.startswith("#"))
    ports = {}
    for part in conf.get("listeners", "").split(","):
        name, _, addr = part.partition("://")
        ports[name] = int(addr.rpartition(":")[2])
    return (ports["PLAINTEXT"], ports["CONTROLLER"]) if {"PLAINTEXT", "CONTROLLER"} <= set(ports) else None


def _write_meta(meta: Path, info: dict) -> None:
    """Write broker.json whole or not at all (a temporary file renamed over it): a start killed mid-write left an
    empty or cut file, and every later ``kafka status``/``up``/``down`` crashed on it."""
    tmp = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, meta)


def _read_meta(meta: Path) -> dict | None:
    """broker.json's pid, bootstrap and flags; None when it is missing or says no broker (empty, cut short, not
    JSON, no pid): such a file names no process to check, and reading it must not crash the caller.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     meta = Path(folder) / "broker.json"
    ...     _ = meta.write_text("")
    ...     empty, missing = _read_meta(meta), _read_meta(meta.with_name("none.json"))
    ...     _write_meta(meta, {"pid": 7, "bootstrap": "127.0.0.1:9092"})
    ...     empty, missing, _read_meta(meta)["pid"]
    (None, None, 7)
    """
    try:
        info = json.loads(meta.read_text())
        if isinstance(info["pid"], int) and isinstance(info["bootstrap"], str):
            return info
    except (OSError, ValueError, KeyError, TypeError):  # TypeError: JSON, but not an object
        pass
    return None


def _reap_stale() -> None:
    """Remove run folders of attached brokers that died without cleaning up (their owner was killed);
    a dead kept broker (``kafka up``) only loses its broker.json: its data stays for the next start."""
    runs = cache_dir() / "runs"
    for meta in runs.glob("*/broker.json") if runs.exists() else ():
        info = _read_meta(meta)
        if info is None:  # status() removes it when that broker is asked for
            continue
        if not process_alive(info["pid"]):
            if info.get("ephemeral", True):
                shutil.rmtree(meta.parent, ignore_errors=True)
            else:
                meta.unlink(missing_ok=True)


def status(name: str = "default") -> Broker | None:
    """The running broker of that name, or None (a stale or unreadable broker.json is removed)."""
    run = cache_dir() / "runs" / name
    meta = run / "broker.json"
    if not meta.exists():
        return None
    info = _read_meta(meta)
    b = None if info is None else Broker(name=name, bootstrap=info["bootstrap"], pid=info["pid"], run_dir=run)
    if b is None or not b.alive():
        meta.unlink(missing_ok=True)
        return None
    return b


def stop(name: str = "default") -> bool:
    """Stop the named broker; its data and port stay for the next ``start`` (``purge`` deletes them)."""
    b = status(name)
    if b is None:
        return False
    b.stop()
    return True


def purge(name: str = "default") -> Path | None:
    """Stop the named broker and delete its folder (every topic and its data); the folder deleted, or None."""
    stop(name)
    run = cache_dir() / "runs" / name
    if not run.exists():
        return None
    shutil.rmtree(run)
    return run


def bootstrap_for(settings: Settings, *, ephemeral: bool = False) -> str:
    """The configured cluster, else the local broker.

    Long-running commands (worker, collectors, silences) share the local ``default`` broker,
    starting it if needed (``kubesight kafka down`` stops it). ``ephemeral`` (benchmarks) starts a
    broker of its own, tied to this process and stopped, its folder removed, when the process exits.
    """
    from core.kafkaclient import Bootstrap

    if settings.kafka:
        return Bootstrap(settings.kafka, settings.kafka_security)
    if not ephemeral:
        return start("default").bootstrap
    import atexit

    broker = start(f"bench-{uuid.uuid4().hex[:6]}", attach=True, quiet=True)
    atexit.register(broker.stop)
    return broker.bootstrap
