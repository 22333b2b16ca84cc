"""Runtime settings: where Kafka is, topic names and partition counts, worker tuning.

Read from (later wins): defaults, a YAML file (``KUBESIGHT_CONFIG`` or ``--config``), then
environment variables ``KUBESIGHT_KAFKA`` (bootstrap servers; when set, no local broker is
started), ``KUBESIGHT_TOPIC_PREFIX``, ``KUBESIGHT_PARTITIONS``, ``KUBESIGHT_STATE_DIR`` (every file a worker writes).

>>> s = Settings(topic_prefix="t1-")
>>> s.topic("alerts")
't1-alerts'
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.durations import Duration

REPO = Path(__file__).resolve().parent.parent


DEFAULT_KAFKA_PORT = 9092  # a server named without a port: as kafka-python, aiokafka and Faust take it
_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?")


def bootstrap_servers(value: str) -> list[tuple[str, int]]:
    """``host:port,host:port,...`` (``kafka`` in settings) -> [(host, port)]; ValueError naming what is wrong.

    Checked when the settings load, because the clients take a bad list quietly: a stray comma became a server
    ``:9092`` they kept retrying while the start-up check (``core.broker.check_reachable``) was satisfied by the
    first server that answered; a port over 65535 was only ever "connection refused".  A host alone gets port
    9092, as every client gives it; an IPv6 address goes in brackets (``[::1]:9092``): unbracketed, ``::1:9092``
    is ambiguous (an address of its own, to the clients).

    >>> bootstrap_servers("b-1.example.net:9096, 10.0.0.7:9092,kafka,[::1]:9093")
    [('b-1.example.net', 9096), ('10.0.0.7', 9092), ('kafka', 9092), ('::1', 9093)]
    >>> bootstrap_servers("127.0.0.1:9092,")
    Traceback (most recent call last):
    ...
    ValueError: an empty server in '127.0.0.1:9092,' (a stray comma?): expected host:port,host:port,...
    >>> bootstrap_servers("127.0.0.1:99999")
    Traceback (most recent call last):
    ...
    ValueError: the port of '127.0.0.1:99999' must be 1-65535, got 99999
    """
    out = []
    for server in value.split(","):
        server = server.strip()
        if not server:
            raise ValueError(f"an empty server in {value!r} (a stray comma?): expected host:port,host:port,...")
        if "://" in server:
            raise ValueError(f"{server!r}: expected host:port, without a scheme (kafka_security.protocol says how "
                             f"to connect)")
        if server.startswith("["):
            host, bracket, rest = server[1:].partition("]")
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"{server!r}: not an IPv6 address in brackets") from None
            if not bracket or rest and not rest.startswith(":"):
                raise ValueError(f"{server!r}: expected [IPv6 address]:port")
            port = rest[1:] if rest else str(DEFAULT_KAFKA_PORT)
        elif server.count(":") > 1:
            raise ValueError(f"{server!r}: an IPv6 address goes in brackets, as [::1]:9092")
        else:
            host, colon, port = server.partition(":")
            if not host:
                raise ValueError(f"{server!r}: no host before the port")
            if not _HOST.fullmatch(host):
                raise ValueError(f"{server!r}: {host!r} is not a host name or address")
            port = port if colon else str(DEFAULT_KAFKA_PORT)
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"the port of {server!r} must be 1-65535, got {port or 'nothing'}")
        out.append((host, int(port)))
    return out


class KafkaSecurity(BaseModel):
    """How every Kafka client of kubesight authenticates and encrypts (``kafka_security:`` in settings).

    Secrets never sit in the settings file: the password comes from ``password_file`` (a mounted
    Secret) or the environment variable named by ``password_env``, read when a client is built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="required with SASL_PLAINTEXT and SASL_SSL")
    username: str | None = None
    password_file: str | None = Field(None, description="file holding the SASL password (trailing newline ignored)")
    password_env: str | None = Field(None, description="environment variable holding the SASL password")
    ca_file: str | None = Field(None, description="PEM CA bundle that signed the brokers' certificates; "
                                "None = the system's trust store")
    cert_file: str | None = Field(None, description="PEM client certificate (mutual TLS)")
    key_file: str | None = Field(None, description="PEM key of cert_file (None: the key is in cert_file)")
    check_hostname: bool = Field(True, description="the broker certificate must name the host connected to")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        sasl, tls = self.protocol.startswith("SASL_"), self.protocol.endswith("SSL")
        if sasl:
            missing = [n for n in ("sasl_mechanism", "username") if getattr(self, n) is None]
            if self.password_file is None and self.password_env is None:
                missing.append("password_file or password_env")
            if missing:
                raise ValueError(f"protocol {self.protocol} needs {', '.join(missing)}")
            if self.password_file is not None and self.password_env is not None:
                raise ValueError("give password_file or password_env, not both")
        else:
            extra = [n for n in ("sasl_mechanism", "username", "password_file", "password_env") if getattr(self, n)]
            if extra:
                raise ValueError(f"{', '.join(extra)} only apply to SASL_PLAINTEXT or SASL_SSL, not {self.protocol}")
        if not tls:
            extra = [n for n in ("ca_file", "cert_file", "key_file") if getattr(self, n)]
            if extra:
                raise ValueError(f"{', '.join(extra)} only apply to SSL or SASL_SSL, not {self.protocol}")
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file")
        return self


class Remediation(BaseModel):
    """``kubesight remediate``: Node conditions, Events and the rule packs' opt-in actions (README, Remediation)."""

    model_config = ConfigDict(extra="forbid")

    dry_run: bool = Field(True, description="True: change nothing in the cluster; every would-be condition, "
                          "event and action is logged and published to the actions topic (dry_run: true)")
    kill_switch: bool = Field(False, description="True: refuse every action (each refusal recorded); "
                              "conditions and events still flow")
    max_nodes: int = Field(3, ge=0, description="never act on more than this many nodes within window")
    max_percent: float = Field(25.0, ge=0, le=100, description="never act on more than this share of the "
                               "cluster's nodes within window")
    window: Duration = Field(3600.0, gt=0, description="the sliding window of max_nodes and max_percent (0 would "
                             "count no node acted on, and let every node be acted on)")
    max_unschedulable_percent: float | None = Field(
        None, ge=0, le=100, description="cordon, drain and NoSchedule/NoExecute taints are refused while this share "
        "of the cluster's nodes or more would take no pods (cordoned or tainted so, by anyone, at any time: "
        "kubesight never uncordons, so max_nodes/max_percent per window alone let a slow storm take every node); "
        "None = max_percent")
    max_alert_age: Duration = Field(900.0, ge=0, description="an action is refused for an alert whose record is "
                                    "older than this (a replay of the alerts topic, a backlog after downtime: the "
                                    "cluster may have moved on); conditions and events still follow; 0 = no limit")
    pool_labels: list[str] = Field(
        default_factory=lambda: ["kubesight.io/pool", "alibabacloud.com/nodepool-id", "eks.amazonaws.com/nodegroup",
                                 "cloud.google.com/gke-nodepool", "kubernetes.azure.com/agentpool"],
        description="the first of these node labels a node has names its pool (none: the unlabelled pool); "
        "cordon, drain and NoSchedule/NoExecute taints never take the last Ready schedulable node of a pool")
    node_labels: list[str] = Field(default_factory=lambda: ["node", "Hostname"],
                                   description="alert labels that name the node, first present wins")
    kubeconfig: str | None = Field(None, description="None: in-cluster config, else $KUBECONFIG / ~/.kube/config")


ENV = {  # settings an environment variable sets (collectors in pods are configured by env), over the file's
    "kafka": "KUBESIGHT_KAFKA", "topic_prefix": "KUBESIGHT_TOPIC_PREFIX", "partitions": "KUBESIGHT_PARTITIONS",
    "app_id": "KUBESIGHT_APP_ID", "web_port": "KUBESIGHT_WEB_PORT", "web_host": "KUBESIGHT_WEB_HOST",
    "web_config": "KUBESIGHT_WEB_CONFIG", "shutdown_timeout": "KUBESIGHT_SHUTDOWN_TIMEOUT",
    "state_dir": "KUBESIGHT_STATE_DIR",
}


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kafka: str | None = Field(None, description="bootstrap servers of an existing cluster, host:port,host:port,... "
                              "(checked at load: bootstrap_servers); None = local broker")
    kafka_security: KafkaSecurity = Field(default_factory=KafkaSecurity,
                                          description="SASL and TLS of every Kafka client (core.kafkaclient)")
    topic_prefix: str = "kubesight-"
    partitions: int = Field(4, ge=1, le=1024)
    replication_factor: int | None = Field(
        None, ge=1, le=32, description="replicas of every topic kubesight creates; None = min(3, brokers)")
    min_insync_replicas: int | None = Field(
        None, ge=1, le=32, description="min.insync.replicas of the topics kubesight creates; None = 2, "
        "capped by the replication factor (1 on a single broker)")
    app_id: str = "kubesight"
    cluster: str = "default"
    commit_interval: float = Field(0.5, gt=0, description="seconds between transactions of the hot path")
    max_batch: int = Field(5000, ge=1)
    incident_wait: float = Field(
        0.0, ge=0, description="seconds an incident's first notifications wait after it opens (routes with "
        "incidents: true), so its probable cause is ranked on more than its first alert; 0 = at once")
    watchdog_interval: float = Field(
        0.0, ge=0, description="seconds between the hot path's Watchdog heartbeats (clock: wall): an alert that fires "
        "while the pipeline works, for a dead man's switch; 0 = off (streams.stages.Watchdog)")
    silence_reminder_after: float = Field(
        0.0, ge=0, description="seconds a silence may stay active and still mute firing alerts before a "
        "SilenceStillMuting alert reminds of it (clock: wall; alerts.silences.reminders); 0 = no reminders")
    clock: Literal["event", "wall"] = Field(
        "event", description="event: timers follow record time (replays, tests); wall: idle partitions also tick")
    web_port: int | None = Field(None, ge=0, le=65535, description="Faust web port (health, /metrics); None = disabled")
    web_host: str = Field("127.0.0.1", description="address the web port (/metrics, /health, /ready) binds to")
    web_config: str | None = Field(
        None, description="web config file (Prometheus exporter-toolkit format: tls_server_config, basic_auth_users) "
        "of every HTTP listener of the process (core.webconfig); None = plain HTTP, no users")
    insecure_listen: bool = Field(False, description="accept writes (intakes, silences) on a non-loopback address "
                                  "without authentication")
    allowed_lateness: float | None = Field(
        600.0, ge=0, description="seconds a signal may be behind its partition's event time and still be "
        "evaluated; later ones are counted (kubesight_late_signals_total) and dead-lettered; None = no limit")
    max_future: float | None = Field(
        3600.0, gt=0, description="seconds a signal's time may be ahead of the worker's wall clock; later ones are "
        "counted (kubesight_future_signals_total) and dead-lettered, so one mistyped time (a year 2100, "
        "microseconds read as seconds) cannot move a partition's event time past every signal to come; capped by "
        "allowed_lateness (further ahead, every on-time signal would be late); None = no limit")
    shutdown_timeout: float = Field(
        10.0, gt=0, le=300, description="seconds a long-running command may take to stop after SIGTERM/SIGINT, "
        "Kafka reachable or not; then it exits anyway (keep terminationGracePeriodSeconds above it)")
    state_dir: str = Field(
        str(REPO / ".cache"), description="the one directory a worker writes to (packs received on the rules topic, "
        "Faust's data directory); KUBESIGHT_STATE_DIR; pods mount an emptyDir there (readOnlyRootFilesystem)")
    default_pack: bool = Field(True, description="evaluate rules/packs/default")
    rules: list[str] = Field(default_factory=list, description="rule-pack paths in addition to the default pack")
    routing: str | None = None
    board_url: str | None = Field(
        None, description="the address users open the board (``kubesight board``) at, as their browsers reach it "
        "(a proxy's, with its path: https://ops.example/board); every alert the rules fire links its cell's "
        "drill-down there (generatorURL: the Source of Alertmanager's templates); None = no link (generatorURL "
        "stays empty: no host is guessed)")
    remediation: Remediation = Field(default_factory=Remediation)

    @field_validator("kafka")
    @classmethod
    def _servers(cls, value: str | None) -> str | None:
        if value:  # None or "": the local broker
            bootstrap_servers(value)
        return value

    @field_validator("board_url")
    @classmethod
    def _board_url(cls, value: str | None) -> str | None:
        """An absolute http(s) address without query or fragment (the drill-down's path and query are added to it),
        kept without its trailing '/'.  Checked at load: a host without a scheme was a link to nowhere on every page
        and email, found only when someone clicked it.

        >>> Settings(board_url="https://ops.example/board/").board_url, Settings(board_url="").board_url
        ('https://ops.example/board', None)
        """
        if not value:  # "" (an empty environment or template value): unset
            return None
        from urllib.parse import urlsplit

        try:
            u = urlsplit(value)
            u.port  # noqa: B018 - raises ValueError for a port out of range or not a number
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a URL ({exc})") from None
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"{value!r}: expected an http:// or https:// address with a host, as a browser opens it")
        if u.query or u.fragment or value.endswith(("?", "#")):
            raise ValueError(f"{value!r}: no query or fragment (the link adds the drill-down's own)")
        return value.rstrip("/")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, **overrides) -> Settings:
        """Raises ``ConfigError`` listing every problem (the file's with their lines)."""
        from core import yamlconfig

        path = path or os.environ.get("KUBESIGHT_CONFIG")
        doc = yamlconfig.read(path) if path else yamlconfig.parse("", "(settings)")
        from pydantic import ValidationError

        env = {k: os.environ[var] for k, var in ENV.items() if os.environ.get(var)}
        env_errors = []
        try:  # an environment variable's problem is said under its own name, not blamed on a line of the file
            cls.model_validate(env)
        except ValidationError as exc:
            for loc, message in yamlconfig.pydantic_errors(exc, cls):
                if loc and loc[0] in env:
                    env_errors.append(f"{ENV[loc[0]]}={env.pop(loc[0])!r}: {message}")
        data = {} if doc.data is None else doc.data
        if isinstance(data, dict):
            data = {**data, **env, **{k: v for k, v in overrides.items() if v is not None}}
        settings = doc.validate(cls, data)
        if isinstance(data, dict):  # from the raw values: said with the schema's problems, not after they are fixed
            for loc, message in missing_files(data):
                if loc == ("routing",) and kept_routing():  # a worker's child: runs the version its worker ran
                    continue
                if loc[0] in env:
                    env_errors.append(f"{ENV[loc[0]]}={env[loc[0]]!r}: {message}")
                else:
                    doc.error(loc, message)
        if doc.problems or env_errors:
            raise yamlconfig.ConfigError(doc.errors + env_errors)
        return settings


# A child a worker starts (``streams.cli_run.child_processes``) is told here where the last routing text its worker's
# processes validated is kept (``streams.alerting.RoutingFile``): restarted after an OOM kill while the routing file
# is refused (broken, or gone with its ConfigMap), it runs that version instead of exiting 2 in a loop.
ROUTING_SNAPSHOT = "KUBESIGHT_ROUTING_SNAPSHOT"


def kept_routing() -> str | None:
    """The kept routing text's path when this process is a worker's child and one is kept, else None."""
    path = os.environ.get(ROUTING_SNAPSHOT)
    return path if path and os.path.isfile(path) else None


def routing_snapshot(settings: Settings, worker_id: str) -> Path | None:
    """Where worker ``worker_id``'s processes keep the last routing text they validated, for its children to be told
    (``ROUTING_SNAPSHOT``); None without a routing file.  A version kept by an earlier run is forgotten here, at the
    worker's start: it is no version this worker ran.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> routing_snapshot(Settings(state_dir=d, app_id="ks", routing="r.yaml"), "w-1").relative_to(d).as_posix()
    'routing/ks-w-1.yaml'
    >>> routing_snapshot(Settings(state_dir=d), "w-1") is None
    True
    """
    if not settings.routing:
        return None
    snap = Path(settings.state_dir).absolute() / "routing" / f"{settings.app_id}-{worker_id}.yaml"
    snap.unlink(missing_ok=True)
    return snap


# The files the settings name, checked when they load: a missing CA or password file was found only when a client
# first connected, a missing routing file or rule pack by the command that reads it, without the settings' line.
FILES = (("kafka_security", "password_file"), ("kafka_security", "ca_file"), ("kafka_security", "cert_file"),
         ("kafka_security", "key_file"), ("web_config",), ("routing",), ("remediation", "kubeconfig"))


def missing_files(data: dict) -> list[tuple[tuple, str]]:
    """(YAML path, message) for every file or rule-pack folder named in raw settings ``data`` that is not there or
    cannot be read.  Paths are taken as the code that opens them takes them: relative to the working directory, a
    ``kubeconfig`` as the Kubernetes client reads it (``~`` expanded; ``a:b``, a list, needs one of them).

    >>> missing_files({"routing": "/nonexistent/r.yaml", "rules": ["/", "/nonexistent/pack"], "web_config": ""})
    [(('routing',), 'no such file: /nonexistent/r.yaml'), (('rules', 1), 'no such file or folder: /nonexistent/pack')]
    """
    from core.yamlconfig import is_secret_key

    out = []
    for loc in FILES:
        value = data
        for key in loc:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, str) or not value:  # not a path (the schema says so), or none ("": unset)
            continue
        paths = [os.path.expanduser(p) for p in value.split(os.pathsep) if p] if loc[-1] == "kubeconfig" else [value]
        there = [p for p in paths if os.path.exists(p)]
        problems = [(_unreadable(p), p) for p in there] if there else [
            ("no such file" if len(paths) == 1 else "none of these files exists", value)]
        for problem, path in problems:
            if problem:  # a secret pasted in place of a password file's path is not quoted back
                out.append((loc, problem if is_secret_key(loc[-1]) else f"{problem}: {path}"))
    rules = data.get("rules")
    for i, value in enumerate(rules if isinstance(rules, list) else ()):
        if isinstance(value, str) and value:
            if not os.path.exists(value):
                out.append((("rules", i), f"no such file or folder: {value}"))
            elif not os.path.isdir(value) and _unreadable(value):
                out.append((("rules", i), f"{_unreadable(value)}: {value}"))
    return out


def _unreadable(path: str) -> str | None:
    """Why an existing path cannot be read as a file (``yamlconfig.unreadable``), in the settings' words, or None."""
    from core.yamlconfig import unreadable

    why = unreadable(path)
    if why is None:
        return None
    return "a folder, not a file" if os.path.isdir(path) else f"cannot read ({why.lower()})"
