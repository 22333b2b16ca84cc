"""Build, start, probe and stop a real local Kubernetes control plane on 127.0.0.1.

Components, all real and pinned (``deploy/cluster/build.sh`` builds them once from the Go module
proxy into ``~/.cache/kubesight/cluster/bin-v1.34.3``, or ``$KUBESIGHT_CLUSTER_CACHE``):

- **etcd** 3.6 (plain HTTP on loopback; ``/metrics`` and the v3 JSON gateway on the client port);
- **kube-apiserver** 1.34: self-signed serving certificate (``--cert-dir``), tokens from
  ``--token-auth-file`` (an admin in ``system:masters``, one identity per component),
  ``--authorization-mode=Node,RBAC``, a service-account key pair made with ``openssl``; audit events by
  ``deploy/kubernetes/audit-policy.yaml`` posted to a webhook at ``Cluster.audit`` (TLS, a token of its own),
  where a test or demo may run the intake's ``/audit``;
- **kube-controller-manager** and **kube-scheduler** with their own users
  (``system:kube-controller-manager``, ``system:kube-scheduler``, bound by the bootstrap RBAC
  policy) and delegated authentication/authorization, so their secure ``/metrics`` answer any
  bearer token the API server accepts *and* authorizes for ``get /metrics``;
- **kwok** playing the kubelets of fake Nodes labelled ``kubesight.io/kwok=managed``, with the
  stage files shipped in its module (node initialize + heartbeat with a Lease, pods ``fast``, and
  the ``chaos`` stages a Pod or Node opts into by label).

Each cluster gets a run folder (``.cache/cluster/runs/<name>``, or under ``$KUBESIGHT_HOME``) with
its data, one log per component, ``admin.kubeconfig``, ``admin.token`` and ``cluster.json``
(pids, ports).  ``attach=True`` ties every process to the caller (Linux ``PR_SET_PDEATHSIG``) so
tests and demos never leave orphans, and removes the run folder on ``stop()``.

    from deploy.cluster import launcher
    c = launcher.start("demo", attach=True)      # builds first if needed (progress on stderr)
    c.kubeconfig, c.server, c.admin_token, c.etcd_endpoint
    c.stop()

    python -m deploy.cluster.launcher up|down|status|build [--name N] [--nodes N]

Of kubesight it imports only the base layer's process helpers (``core.broker``: free ports, children
that die with their parent, liveness), as ``deploy/`` may; the ``kubernetes`` client is imported only
by the helpers that need it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from core.broker import dies_with_parent, free_port, process_alive

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD_SH = HERE / "build.sh"
AUDIT_POLICY = REPO / "deploy" / "kubernetes" / "audit-policy.yaml"
K8S_VERSION = "v1.34.3"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
ORDER = BINARIES  # start order; stopped in reverse
KWOK_LABEL = "kubesight.io/kwok"  # nodes with this label = "managed" get a kwok "kubelet"
# kwok stage files (relative to bin/stages): node life and heartbeat, pod life, opt-in chaos
STAGES = ("node/fast/node-initialize.yaml", "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
          "node/chaos/node-not-ready.yaml", "pod/fast/pod-ready.yaml", "pod/fast/pod-complete.yaml",
          "pod/fast/pod-delete.yaml", "pod/chaos/pod-container-running-failed.yaml",
          "pod/chaos/pod-init-container-running-failed.yaml")
GO_NEEDED = (1, 26)  # etcd v3.6.16's go.mod says go 1.26.0 (kubernetes and kwok: 1.24); builds use GOTOOLCHAIN=local
NODE_LEASE_SECONDS = 12  # kwok renews every quarter of it
NODE_GRACE_SECONDS = 16  # the node lifecycle controller's --node-monitor-grace-period


class ClusterError(RuntimeError):
    """The local control plane could not be built or started; the message says why and what to do."""


def _say(msg: str, end: str = "\n") -> None:
    print(f"cluster: {msg}", file=sys.stderr, end=end, flush=True)


def build_cache() -> Path:
    return Path(os.environ.get("KUBESIGHT_CLUSTER_CACHE") or Path.home() / ".cache" / "kubesight" / "cluster")


def bin_dir() -> Path:
    return build_cache() / f"bin-{K8S_VERSION}"


def runs_dir() -> Path:
    return Path(os.environ.get("KUBESIGHT_HOME", REPO / ".cache")) / "cluster" / "runs"


def built() -> bool:
    b = bin_dir()
    return all(os.access(b / n, os.X_OK) for n in BINARIES) and all((b / "stages" / s).is_file() for s in STAGES)


def _go_version() -> tuple[int, int] | None:
    """(major, minor) of the ``go`` on PATH, None without one."""
    if not shutil.which("go"):
        return None
    try:
        out = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, timeout=60).stdout
        major, minor = out.strip().removeprefix("go").split(".")[:2]
        return int(major), int(minor)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def ensure_built(quiet: bool = False) -> Path:
    """The folder of the pinned binaries, built first if missing (~8 min on 2 cores, once).

    Progress lines of ``build.sh`` go to stderr; a missing Go or a failed build raises
    ``ClusterError`` with one line saying what to do."""
    if built():
        return bin_dir()
    have = _go_version()
    if have is None or have < GO_NEEDED:
        what = "Go is not installed" if have is None else f"Go {'.'.join(map(str, have))} is too old"
        raise ClusterError(f"{what}: install Go >= {'.'.join(map(str, GO_NEEDED))} (https://go.dev/dl) so the "
                           "control plane can be built once from the Go module proxy (~8 min on 2 cores), "
                           f"or put prebuilt binaries in {bin_dir()}")
    build_cache().mkdir(parents=True, exist_ok=True)
    if not quiet:
        _say(f"building Kubernetes {K8S_VERSION} control plane into {bin_dir()} (once, ~8 min on 2 cores)")
    t0 = time.monotonic()
    # build.sh takes a lock: a concurrent build (another test session, the demo) is waited for and reused
    proc = subprocess.Popen(["bash", str(BUILD_SH), str(build_cache())], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    tail = b""
    while chunk := proc.stdout.read1(4096):
        tail = (tail + chunk)[-4000:]
        if not quiet:
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
    rc = proc.wait()
    if rc != 0 or not built():
        last = [ln for ln in tail.decode(errors="replace").splitlines() if ln.strip()]
        raise ClusterError(f"control-plane build failed (exit {rc}): {last[-1] if last else 'no output'} "
                           f"(logs: {build_cache()}/build-*.log; rerun: bash {BUILD_SH})")
    if not quiet:
        _say(f"built in {time.monotonic() - t0:.0f}s")
    return bin_dir()


# ---------------------------------------------------------------- processes


# SIGKILL, not SIGTERM: all components get it at once, and an API server terminating gracefully while its
# etcd goes away hangs; an attached cluster's data is thrown away anyway
_DIE_WITH_PARENT = dies_with_parent(signal.SIGKILL)


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE


def _http(url: str, token: str | None = None, ctx: ssl.SSLContext | None = None, data: bytes | None = None,
          timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body); (0, b"") when nothing answers."""
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx if url.startswith("https") else None) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ssl.SSLError):
        return 0, b""


# ---------------------------------------------------------------- the cluster


@dataclass
class Cluster:
    name: str
    run_dir: Path
    server: str  # https://127.0.0.1:<port>
    admin_token: str
    etcd_endpoint: str  # http://127.0.0.1:<port>
    ports: dict[str, int]
    pids: dict[str, int]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)
    ephemeral: bool = False

    # ------------------------------------------------------------ where things are

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (token in ``system:masters``, CA = the API server's self-signed certificate)."""
        return self.run_dir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        """The API server's certificate bundle (its serving certificate and the CA that signed it)."""
        return self.run_dir / "pki" / "apiserver.crt"

    @property
    def audit(self) -> tuple[str, str, Path, Path]:
        """Where the API server posts its audit events, to run the intake there: host:port, the bearer token, and the
        TLS certificate and key to serve with (client-go sends a token over TLS only)."""
        pki = self.run_dir / "pki"
        return (f"127.0.0.1:{self.ports['audit']}", (self.run_dir / "audit.token").read_text().strip(),
                pki / "audit.crt", pki / "audit.key")

    def log(self, component: str) -> Path:
        return self.run_dir / f"{component}.log"

    @property
    def metrics_urls(self) -> dict[str, str]:
        """``/metrics`` of each control-plane component. etcd: plain HTTP, no auth; the others: HTTPS,
        a bearer token allowed ``get`` on the non-resource URL ``/metrics`` (self-signed certificates:
        the API server's is ``ca_file``, the scheduler's and controller-manager's are generated at start)."""
        p = self.ports
        return {"etcd": f"{self.etcd_endpoint}/metrics", "kube-apiserver": f"{self.server}/metrics",
                "kube-scheduler": f"https://127.0.0.1:{p['kube-scheduler']}/metrics",
                "kube-controller-manager": f"https://127.0.0.1:{p['kube-controller-manager']}/metrics"}

    # ------------------------------------------------------------ health

    def health(self) -> dict[str, bool]:
        """Is each component's process alive."""
        out = {}
        for comp, pid in self.pids.items():
            proc = self.procs.get(comp)
            out[comp] = proc.poll() is None if proc is not None else process_alive(pid)
        return out

    def alive(self) -> bool:
        h = self.health()
        return bool(h) and all(h.values())

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of each component, MB."""
        return {comp: round(_rss_mb(pid), 1) for comp, pid in self.pids.items()}

    def ready(self) -> bool:
        """The API server answers /readyz (every post-start hook done) for the admin token."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return _http(f"{self.server}/readyz", self.admin_token, ctx)[0] == 200

    # ------------------------------------------------------------ helpers for tests and demos

    def write_kubeconfig(self, path: Path | str, token: str, user: str = "user") -> Path:
        """A kubeconfig for this cluster that authenticates with ``token`` (e.g. a ServiceAccount's)."""
        path = Path(path)
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": self.name, "preferences": {},
            "clusters": [{"name": self.name, "cluster": {"server": self.server, "certificate-authority-data": ca}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": user}}],
        }, indent=1))
        path.chmod(0o600)
        return path

    def service_account_kubeconfig(self, manifest: Path | str, path: Path | str, seconds: int = 86400) -> Path:
        """Create the ServiceAccount, ClusterRole(s) and binding(s) of a shipped manifest, exactly as shipped (its
        namespace too), and write a kubeconfig that authenticates as that ServiceAccount with a TokenRequest token
        valid ``seconds``: a component then runs here with the least privilege it gets in a real cluster."""
        import yaml

        docs = [d for d in yaml.safe_load_all(Path(manifest).read_text()) if d and d["kind"] in (
            "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]
        sas = [d for d in docs if d["kind"] == "ServiceAccount"]
        if len(sas) != 1:
            raise ClusterError(f"{manifest}: expected one ServiceAccount, found {len(sas)}")
        ns, name = sas[0]["metadata"]["namespace"], sas[0]["metadata"]["name"]
        api = self.api_client()
        try:
            create_objects(api, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, *docs])
            token = service_account_token(api, ns, name, seconds)
        finally:
            api.close()
        return self.write_kubeconfig(path, token, f"system:serviceaccount:{ns}:{name}")

    def api_client(self, token: str | None = None):
        """A ``kubernetes.client.ApiClient`` (admin unless ``token`` is given)."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.server
        cfg.ssl_ca_cert = str(self.ca_file)
        cfg.api_key = {"authorization": f"Bearer {token or self.admin_token}"}
        return client.ApiClient(cfg)

    def etcd_revision(self) -> int:
        """etcd's current revision (the v3 JSON gateway)."""
        code, body = _http(f"{self.etcd_endpoint}/v3/kv/range", data=json.dumps({"key": "AA=="}).encode(), timeout=10)
        if code != 200:
            raise ClusterError(f"etcd range failed: HTTP {code} {body[:200]!r}")
        return int(json.loads(body)["header"]["revision"])

    def compact_etcd(self, revision: int | None = None) -> int:
        """Compact etcd's history up to ``revision`` (default: the current one); returns it. Watches and
        lists from an older resourceVersion then get ``410 Gone`` wherever the API server reads etcd."""
        rev = revision or self.etcd_revision()
        code, body = _http(f"{self.etcd_endpoint}/v3/kv/compaction",
                           data=json.dumps({"revision": str(rev), "physical": True}).encode(), timeout=30)
        if code != 200:
            raise ClusterError(f"etcd compaction failed: HTTP {code} {body[:200]!r}")
        return rev

    def add_nodes(self, names: list[str], labels: dict[str, str] | None = None, timeout: float = 60.0) -> None:
        """Create fake Nodes managed by kwok and wait until each is Ready."""
        from kubernetes import client

        with self.api_client() as api:
            core = client.CoreV1Api(api)
            for n in names:
                body = {"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": n, "labels": {KWOK_LABEL: "managed", "type": "kwok",
                                                           "kubernetes.io/hostname": n, "kubernetes.io/os": "linux",
                                                           "kubernetes.io/arch": "amd64", **(labels or {})},
                                     "annotations": {"kwok.x-k8s.io/node": "fake"}}}
                try:
                    core.create_node(body)
                except client.ApiException as exc:
                    if exc.status != 409:
                        raise
            deadline = time.monotonic() + timeout
            while True:
                ready = {n.metadata.name for n in core.list_node().items
                         if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or ())}
                if ready >= set(names):
                    return
                if time.monotonic() > deadline:
                    raise ClusterError(f"nodes not Ready within {timeout:.0f}s: {sorted(set(names) - ready)} "
                                       f"(kwok log: {self.log('kwok')})")
                time.sleep(0.2)

    def set_kubelet(self, node: str, running: bool) -> None:
        """Stop (``False``) or resume kwok's kubelet of ``node``. Stopped, its Lease is no longer renewed:
        after ``NODE_GRACE_SECONDS`` the node lifecycle controller marks the Node ``Unknown``, taints it
        ``node.kubernetes.io/unreachable`` and marks its Pods not ready. Resumed, kwok reports it Ready again.
        The label is written as kwok's own user, not the admin: kwok plays the kubelet, and the audit trail says so."""
        from kubernetes import client

        kwok = next(line.split(",")[0] for line in (self.run_dir / "tokens.csv").read_text().splitlines()
                    if line.split(",")[1:2] == ["kwok"])
        with self.api_client(token=kwok) as api:
            client.CoreV1Api(api).patch_node(node, {"metadata": {"labels": {KWOK_LABEL: "managed" if running else None}}})

    # ------------------------------------------------------------ stop

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the components one by one, kwok first, etcd last (an API server that loses etcd while
        shutting down hangs): SIGTERM, then SIGKILL after ``timeout``; removes cluster.json, and the
        whole run folder of an ephemeral (``attach=True``) cluster."""
        for comp in reversed(ORDER):
            pid = self.pids.get(comp)
            if not pid or not self.health().get(comp):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + timeout
            while self.health().get(comp) and time.monotonic() < deadline:
                proc = self.procs.get(comp)
                if proc is not None:
                    try:
                        proc.wait(0.05)
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    time.sleep(0.05)
            if self.health().get(comp):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                if comp in self.procs:
                    try:
                        self.procs[comp].wait(5)
                    except subprocess.TimeoutExpired:
                        pass
        (self.run_dir / "cluster.json").unlink(missing_ok=True)
        if self.ephemeral:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- start-up


def create_objects(api_client, docs: list[dict]) -> None:
    """Create objects (Namespace, ServiceAccount, ClusterRole, ...) with the dynamic client; one that exists stays."""
    from kubernetes import dynamic
    from kubernetes.client import ApiException

    dyn = dynamic.DynamicClient(api_client)
    for d in docs:
        res = dyn.resources.get(api_version=d["apiVersion"], kind=d["kind"])
        ns = d["metadata"].get("namespace")
        try:
            res.create(body=d, namespace=ns) if res.namespaced else res.create(body=d)
        except ApiException as exc:
            if exc.status != 409:
                raise


def service_account_token(api_client, namespace: str, name: str, seconds: int = 3600) -> str:
    """A ServiceAccount token from the TokenRequest API (what a projected token volume holds)."""
    from kubernetes import client

    tr = client.CoreV1Api(api_client).create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": seconds}})
    return tr.status.token


def _keypair(pki: Path) -> None:
    """With the openssl CLI: the service-account signing key pair (RSA 2048), a client CA and a
    front-proxy CA (the API server publishes both in ``kube-system/extension-apiserver-authentication``,
    where the scheduler and controller-manager look them up for their delegated authentication)."""
    if not shutil.which("openssl"):
        raise ClusterError("openssl not found: install it (apt-get install openssl); it makes the "
                           "service-account signing key")
    for cmd in (["openssl", "genrsa", "-out", str(pki / "sa.key"), "2048"],
                ["openssl", "rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")],
                *(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj",
                   f"/CN=kubesight-local-{ca}", "-keyout", str(pki / f"{ca}.key"), "-out", str(pki / f"{ca}.crt")]
                  for ca in ("client-ca", "front-proxy-ca")),
                # the audit intake's serving certificate: the API server sends its webhook's bearer token over TLS only
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj",
                 "/CN=kubesight-audit-intake", "-addext", "subjectAltName=IP:127.0.0.1",
                 "-keyout", str(pki / "audit.key"), "-out", str(pki / "audit.crt")]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise ClusterError(f"{' '.join(cmd[:2])} failed: {res.stderr.strip()[-300:]}")


def _wait(what: str, cluster: Cluster, comp: str, probe, deadline: float) -> None:
    while not probe():
        if not cluster.health().get(comp, True):
            tail = cluster.log(comp).read_text(errors="replace")[-2500:]
            raise ClusterError(f"{comp} exited during start-up; log tail:\n{tail}")
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} not ready in time (log: {cluster.log(comp)})")
        time.sleep(0.1)


def start(name: str = "default", attach: bool = False, nodes: int = 3, timeout: float = 120.0,
          quiet: bool = False) -> Cluster:
    """Start (or reuse a running) named cluster: etcd, kube-apiserver, kube-controller-manager,
    kube-scheduler and kwok with ``nodes`` Ready fake Nodes (``kwok-node-0`` ...), and wait until the
    ServiceAccount controller has made ``default/default`` (so Pods can be created)."""
    existing = status(name)
    if existing is not None:
        if (existing.alive() and json.loads((existing.run_dir / "cluster.json").read_text()).get("ready")
                and "audit" in existing.ports):  # one started before the audit webhook is started again
            return existing
        existing.stop()
    _reap_stale()
    bins = ensure_built(quiet=quiet)
    run = runs_dir() / name
    shutil.rmtree(run, ignore_errors=True)
    pki = run / "pki"
    pki.mkdir(parents=True)
    t0 = time.monotonic()
    deadline = t0 + timeout
    _keypair(pki)
    ports: dict[str, int] = {}
    # "audit": where the API server sends its audit events (the intake's /audit, when a test or demo runs one)
    for comp in ("etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "audit"):
        p = free_port()
        while p in ports.values():
            p = free_port()
        ports[comp] = p
    tokens = {u: secrets.token_hex(16) for u in ("admin", "kube-controller-manager", "kube-scheduler", "kwok")}
    (run / "tokens.csv").write_text(
        f'{tokens["admin"]},admin,admin,"system:masters"\n'
        f'{tokens["kube-controller-manager"]},system:kube-controller-manager,kube-controller-manager\n'
        f'{tokens["kube-scheduler"]},system:kube-scheduler,kube-scheduler\n'
        f'{tokens["kwok"]},kwok,kwok,"system:masters,system:nodes"\n')  # it plays the kubelets
    (run / "tokens.csv").chmod(0o600)
    (run / "admin.token").write_text(tokens["admin"] + "\n")
    (run / "admin.token").chmod(0o600)
    # the audit webhook: deploy/kubernetes/audit-policy.yaml, posted with a token of its own to the intake's /audit
    shutil.copyfile(AUDIT_POLICY, run / "audit-policy.yaml")
    (run / "audit.token").write_text(secrets.token_hex(16) + "\n")
    (run / "audit.token").chmod(0o600)
    (run / "audit-webhook.kubeconfig").write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "audit",
        "clusters": [{"name": "intake", "cluster": {"server": f"https://127.0.0.1:{ports['audit']}/audit",
                                                    "certificate-authority": str(pki / "audit.crt")}}],
        "users": [{"name": "apiserver", "user": {"token": (run / "audit.token").read_text().strip()}}],
        "contexts": [{"name": "audit", "context": {"cluster": "intake", "user": "apiserver"}}]}))
    # kwok reads Stage objects from one multi-document config file
    (run / "kwok.yaml").write_text("\n---\n".join((bins / "stages" / s).read_text() for s in STAGES))
    server = f"https://127.0.0.1:{ports['kube-apiserver']}"
    etcd = f"http://127.0.0.1:{ports['etcd']}"
    cluster = Cluster(name=name, run_dir=run, server=server, admin_token=tokens["admin"], etcd_endpoint=etcd,
                      ports=ports, pids={}, ephemeral=attach)
    peer = f"http://127.0.0.1:{ports['etcd-peer']}"
    kc = {c: run / f"{c}.kubeconfig" for c in ("kube-controller-manager", "kube-scheduler", "kwok")}
    cmds = {
        "etcd": [bins / "etcd", "--name=kubesight", f"--data-dir={run / 'etcd'}", f"--listen-client-urls={etcd}",
                 f"--advertise-client-urls={etcd}", f"--listen-peer-urls={peer}",
                 f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=kubesight={peer}",
                 "--initial-cluster-state=new", "--log-level=warn"],
        "kube-apiserver": [
            bins / "kube-apiserver", f"--etcd-servers={etcd}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={ports['kube-apiserver']}", f"--cert-dir={pki}",
            f"--token-auth-file={run / 'tokens.csv'}", f"--client-ca-file={pki / 'client-ca.crt'}",
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--authorization-mode=Node,RBAC",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16", "--allow-privileged=true", "--profiling=false",
            # the Endpoints of the `kubernetes` Service may not hold a loopback address: publish none
            "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=true",
            f"--audit-policy-file={run / 'audit-policy.yaml'}",
            f"--audit-webhook-config-file={run / 'audit-webhook.kubeconfig'}",
            # batches within a second; a batch nobody takes (no intake running) is retried 5 times from 1 s, then dropped
            "--audit-webhook-batch-max-wait=1s", "--audit-webhook-initial-backoff=1s", "--v=1"],
        "kube-controller-manager": [
            bins / "kube-controller-manager", f"--kubeconfig={kc['kube-controller-manager']}",
            f"--authentication-kubeconfig={kc['kube-controller-manager']}",
            f"--authorization-kubeconfig={kc['kube-controller-manager']}", "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-controller-manager']}", f"--cert-dir={run / 'kcm-certs'}",
            "--leader-elect=false", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'apiserver.crt'}",
            f"--cluster-name=kubesight-{name}", "--node-monitor-period=1s",
            f"--node-monitor-grace-period={NODE_GRACE_SECONDS}s", "--profiling=false", "--v=1"],
        "kube-scheduler": [
            bins / "kube-scheduler", f"--kubeconfig={kc['kube-scheduler']}",
            f"--authentication-kubeconfig={kc['kube-scheduler']}", f"--authorization-kubeconfig={kc['kube-scheduler']}",
            "--bind-address=127.0.0.1", f"--secure-port={ports['kube-scheduler']}", f"--cert-dir={run / 'ks-certs'}",
            "--leader-elect=false", "--profiling=false", "--v=1"],
        "kwok": [
            bins / "kwok", f"--kubeconfig={kc['kwok']}", f"--config={run / 'kwok.yaml'}",
            f"--manage-nodes-with-label-selector={KWOK_LABEL}=managed",
            f"--server-address=127.0.0.1:{ports['kwok']}", f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
            "--cidr=10.244.0.0/16", "--node-ip=10.0.0.1"],
    }
    env = dict(os.environ, GOMAXPROCS=os.environ.get("KUBESIGHT_CLUSTER_GOMAXPROCS", "2"))

    def launch(comp: str) -> None:
        log = open(cluster.log(comp), "ab")
        proc = subprocess.Popen([str(c) for c in cmds[comp]], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=run, env=env,
                                preexec_fn=_DIE_WITH_PARENT if attach else None, start_new_session=not attach)
        log.close()
        cluster.procs[comp], cluster.pids[comp] = proc, proc.pid
        _write_state(cluster, attach, ready=False)  # from the first pid on: a killed owner's folder is reaped

    try:
        launch("etcd")
        _wait("etcd", cluster, "etcd", lambda: b'"true"' in _http(f"{etcd}/health")[1], deadline)
        launch("kube-apiserver")
        _wait("kube-apiserver's certificate", cluster, "kube-apiserver", cluster.ca_file.exists, deadline)
        time.sleep(0.05)  # the certificate file is written in one go, but give the writer a moment
        _wait("kube-apiserver", cluster, "kube-apiserver", cluster.ready, deadline)
        for comp in kc:
            cluster.write_kubeconfig(kc[comp], tokens[comp], comp)
        cluster.write_kubeconfig(cluster.kubeconfig, tokens["admin"], "admin")
        for comp in ("kube-controller-manager", "kube-scheduler", "kwok"):
            launch(comp)
        for comp in ("kube-controller-manager", "kube-scheduler"):
            url = f"https://127.0.0.1:{ports[comp]}/healthz"
            _wait(comp, cluster, comp, lambda url=url: _http(url, ctx=_INSECURE)[0] == 200, deadline)
        _wait("kwok", cluster, "kwok", lambda: _http(f"http://127.0.0.1:{ports['kwok']}/healthz")[0] == 200, deadline)
        cluster.add_nodes([f"kwok-node-{i}" for i in range(nodes)], timeout=max(deadline - time.monotonic(), 1))
        _wait("the default ServiceAccount", cluster, "kube-controller-manager",
              lambda: _http(f"{server}/api/v1/namespaces/default/serviceaccounts/default", tokens["admin"],
                            ssl.create_default_context(cafile=str(cluster.ca_file)))[0] == 200, deadline)
    except BaseException:
        cluster.ephemeral = False  # keep the run folder: its logs say why
        cluster.stop()
        raise
    startup = time.monotonic() - t0
    _write_state(cluster, attach, ready=True, startup_s=round(startup, 2))
    if not quiet:
        _say(f"'{name}' ready at {server} in {startup:.1f}s with {nodes} kwok node(s); "
             f"KUBECONFIG={cluster.kubeconfig}")
    return cluster


def _write_state(c: Cluster, attached: bool, ready: bool, **extra) -> None:
    (c.run_dir / "cluster.json").write_text(json.dumps({
        "server": c.server, "etcd": c.etcd_endpoint, "ports": c.ports, "pids": c.pids, "admin_token": c.admin_token,
        "kubeconfig": str(c.kubeconfig), "version": K8S_VERSION, "attached": attached, "ready": ready,
        "started": time.time(), **extra}, indent=1))


def _forget(meta: Path, info: dict) -> None:
    """A cluster whose processes are all gone: drop an attached one's folder, keep a detached one's logs."""
    if info.get("attached"):
        shutil.rmtree(meta.parent, ignore_errors=True)
    else:
        meta.unlink(missing_ok=True)


def _reap_stale() -> None:
    """Forget clusters whose every process is gone (their owner was killed)."""
    root = runs_dir()
    for meta in root.glob("*/cluster.json") if root.exists() else ():
        try:
            info = json.loads(meta.read_text())
            pids = info["pids"]
        except (OSError, ValueError, KeyError):
            continue
        if not any(process_alive(p) for p in pids.values()):
            _forget(meta, info)


def status(name: str = "default") -> Cluster | None:
    """The cluster of that name if any of its processes runs (check ``.alive()``), else None
    (a stale cluster.json is removed)."""
    run = runs_dir() / name
    meta = run / "cluster.json"
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    c = Cluster(name=name, run_dir=run, server=info["server"], admin_token=info["admin_token"],
                etcd_endpoint=info["etcd"], ports=info["ports"], pids=info["pids"])
    if not any(c.health().values()):
        _forget(meta, info)
        return None
    return c


def stop(name: str = "default") -> bool:
    c = status(name)
    if c is None:
        return False
    c.stop()
    return True


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.cluster.launcher",
                                description="A real local Kubernetes control plane (etcd, kube-apiserver, "
                                            "kube-controller-manager, kube-scheduler, kwok nodes) on 127.0.0.1.")
    p.add_argument("action", choices=["up", "down", "status", "build"])
    p.add_argument("--name", default="default", help="cluster name (run folder; default: %(default)s)")
    p.add_argument("--nodes", type=int, default=3, help="kwok nodes created by 'up' (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        if args.action == "build":
            print(ensure_built())
            return 0
        if args.action == "up":
            c = start(args.name, nodes=args.nodes)
            print(f"server:     {c.server}\nkubeconfig: {c.kubeconfig}\ntoken:      {c.run_dir / 'admin.token'}\n"
                  f"etcd:       {c.etcd_endpoint}\nexport KUBECONFIG={c.kubeconfig}")
            return 0
        if args.action == "down":
            ok = stop(args.name)
            print(f"cluster '{args.name}' {'stopped' if ok else 'was not running'}")
            return 0
        c = status(args.name)
        if c is None:
            print(f"cluster '{args.name}' is not running")
            return 1
        rss = c.rss_mb()
        for comp, up in c.health().items():
            print(f"{comp:<24} {'running' if up else 'DEAD':<8} pid {c.pids[comp]:<8} {rss[comp]:>7.0f} MB")
        print(f"{'total':<24} {'':<8} {'':<12} {sum(rss.values()):>7.0f} MB\nserver:     {c.server}\n"
              f"kubeconfig: {c.kubeconfig}")
        return 0 if c.alive() else 1
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
