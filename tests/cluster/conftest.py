"""One real local Kubernetes control plane per test session (``deploy.cluster.launcher``), attached to
the session so it dies with it, plus the pieces the cluster tests share: the Kubernetes collector
running as a real process with the project's least-privilege RBAC and a ServiceAccount token, a
tail of the Kafka topics it writes, and waits on conditions with deadlines.

The binaries are built once (``make cluster``, or here on first use: ~8 min on 2 cores) and reused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
import yaml

from deploy.cluster import launcher

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "deploy" / "kubernetes"
COLLECTOR_SA = ("kubesight", "kubesight-kubernetes")


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: needs the real local Kubernetes control plane (one per session)")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/cluster/" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)


def wait_for(what: str, probe, timeout: float = 60.0, interval: float = 0.2, detail=lambda: ""):
    """``probe()`` until it returns something truthy (returned); fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{detail()}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def cluster():
    c = launcher.start(f"pytest-{os.getpid()}", attach=True, nodes=3, quiet=True)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def api(cluster):
    """Admin API objects: ``api.core``, ``api.apps``, ``api.batch``, ``api.rbac``, ``api.authz``, ``api.client``."""
    from kubernetes import client

    class Api:
        pass

    a = Api()
    a.client = cluster.api_client()
    a.core = client.CoreV1Api(a.client)
    a.apps = client.AppsV1Api(a.client)
    a.batch = client.BatchV1Api(a.client)
    a.rbac = client.RbacAuthorizationV1Api(a.client)
    a.authz = client.AuthorizationV1Api(a.client)
    yield a
    a.client.close()


def manifest_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def ensure_namespace(api, name: str, labels: dict | None = None) -> None:
    from kubernetes import client

    try:
        api.core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    # Pods need the namespace's default ServiceAccount (made by the controller-manager)
    wait_for(f"ServiceAccount {name}/default",
             lambda: any(sa.metadata.name == "default" for sa in api.core.list_namespaced_service_account(name).items))


def create_docs(api, docs: list[dict]) -> None:
    """Create objects (ServiceAccount, ClusterRole, ClusterRoleBinding, ...) with the dynamic client."""
    launcher.create_objects(api.client, docs)


def sa_token(api, ns: str, name: str, seconds: int = 3600) -> str:
    """A ServiceAccount token from the TokenRequest API (as a projected token volume would hold)."""
    return launcher.service_account_token(api.client, ns, name, seconds)


@pytest.fixture(scope="session")
def collector_rbac(api):
    """The collector's ServiceAccount, ClusterRole and binding, exactly as in its manifest."""
    ensure_namespace(api, "kubesight")
    docs = [d for d in manifest_docs(MANIFESTS / "collector-kubernetes.yaml")
            if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")]
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    create_docs(api, docs)
    return docs


@pytest.fixture(scope="session")
def collector_kubeconfig(cluster, api, collector_rbac, tmp_path_factory) -> Path:
    """A kubeconfig that authenticates as the collector's ServiceAccount (TokenRequest)."""
    token = sa_token(api, *COLLECTOR_SA)
    return cluster.write_kubeconfig(tmp_path_factory.mktemp("sa") / "collector.kubeconfig", token,
                                    "system:serviceaccount:kubesight:kubesight-kubernetes")


# ---------------------------------------------------------------- Kafka: what the collector committed


class Tail:
    """Every committed record of one topic (read_committed), decoded, accumulated as it is polled."""

    def __init__(self, bootstrap: str, topic: str):
        from kafka import KafkaConsumer, TopicPartition

        self.c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                               isolation_level="read_committed", auto_offset_reset="earliest")
        deadline = time.monotonic() + 30
        parts = None
        while not parts:
            parts = self.c.partitions_for_topic(topic)
            assert parts or time.monotonic() < deadline, f"topic {topic} does not exist"
            if not parts:
                time.sleep(0.2)
        self.c.assign([TopicPartition(topic, p) for p in sorted(parts)])
        self.records: list[dict] = []

    def poll(self) -> list[dict]:
        for batch in self.c.poll(timeout_ms=100, max_records=50_000).values():
            self.records.extend(orjson.loads(m.value) for m in batch if m.value)
        return self.records

    def find(self, **want) -> list[dict]:
        """Records whose fields match: ``reason="X"``, ``entity__name="y"`` (nested with ``__``)."""
        out = []
        for r in self.poll():
            for k, v in want.items():
                cur = r
                for part in k.split("__"):
                    cur = cur.get(part) if isinstance(cur, dict) else None
                if not (v(cur) if callable(v) else cur == v):
                    break
            else:
                out.append(r)
        return out

    def wait(self, what: str, timeout: float = 60.0, **want) -> list[dict]:
        return wait_for(what, lambda: self.find(**want), timeout,
                        detail=lambda: f"; {len(self.records)} records, reasons seen: "
                                       f"{sorted({(r.get('source'), r.get('reason')) for r in self.records})}")

    def close(self):
        self.c.close()


class CollectorProcess:
    """``kubesight collect kubernetes`` as a real process, its log in ``logdir``."""

    def __init__(self, bootstrap: str, prefix: str, kubeconfig: Path, cluster: str, logdir: Path):
        self.bootstrap, self.prefix, self.kubeconfig, self.cluster, self.logdir = (
            bootstrap, prefix, kubeconfig, cluster, logdir)
        self.proc: subprocess.Popen | None = None
        self.n = 0
        self.log: Path | None = None

    def start(self):
        self.n += 1
        env = dict(os.environ, KUBESIGHT_KAFKA=self.bootstrap, KUBESIGHT_TOPIC_PREFIX=self.prefix,
                   PYTHONUNBUFFERED="1")
        self.log = self.logdir / f"collector-{self.cluster}-{self.n}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubesight", "collect", "kubernetes", "--kubeconfig", str(self.kubeconfig),
             "--cluster", self.cluster, "--commit-interval", "0.1", "--backoff-base", "0.1", "--backoff-max", "1",
             "--loglevel", "info"],
            cwd=REPO, env=env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


@pytest.fixture(scope="session")
def collector(cluster, collector_kubeconfig, kafka_bootstrap, tmp_path_factory):
    """The Kubernetes collector with the ServiceAccount token, for the whole session, and a tail of
    its ``events`` topic: ``collector.events`` (a ``Tail``), ``collector.cluster`` (its cluster name)."""
    prefix = f"c{uuid.uuid4().hex[:8]}-"
    proc = CollectorProcess(kafka_bootstrap, prefix, collector_kubeconfig, "kind-local",
                            tmp_path_factory.mktemp("collector")).start()
    wait_for("the collector's first list", lambda: "listed" in proc.text() or not proc.running(), 60)
    assert proc.running(), f"collector exited:\n{proc.text()[-3000:]}"
    proc.events = Tail(kafka_bootstrap, f"{prefix}events")
    yield proc
    proc.events.close()
    code = proc.stop()
    assert code == 0, f"collector exited with {code}:\n{proc.text()[-3000:]}"
    assert "forbidden" not in proc.text().lower(), f"the collector met a refusal:\n{proc.text()[-3000:]}"
