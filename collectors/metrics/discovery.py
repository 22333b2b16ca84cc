"""Discovery of the usual scrape targets through the Kubernetes API (official client).

| role | found by | scraped at |
|---|---|---|
| apiserver | Endpoints ``default/kubernetes`` | ``https://<ip>:<port>/metrics`` |
| kubelet, cadvisor | Nodes (InternalIP, kubelet port) | ``https://<ip>:10250/metrics``, ``/metrics/cadvisor`` |
| etcd | Pods ``component=etcd`` | its ``--listen-metrics-urls`` (kubeadm: ``:2381``) |
| scheduler | Pods ``component=kube-scheduler`` | ``https://<pod ip>:<--secure-port or 10259>/metrics`` |
| controller-manager | Pods ``component=kube-controller-manager`` | ``https://<pod ip>:<--secure-port or 10257>/metrics`` |
| node-exporter | Pods ``app.kubernetes.io/name`` in (node-exporter, prometheus-node-exporter) | port ``metrics`` or 9100 |
| kube-state-metrics | Pods ``app.kubernetes.io/name=kube-state-metrics`` | port ``http-metrics``/``http`` or 8080 |
| dcgm-exporter | Pods ``app.kubernetes.io/name=dcgm-exporter`` or ``app=nvidia-dcgm-exporter`` | port ``metrics`` or 9400 |
| coredns | Pods ``k8s-app=kube-dns`` (kubeadm, ACK) or ``app.kubernetes.io/name=coredns`` | port ``metrics`` or 9153 |
| annotated | Pods ``prometheus.io/scrape: "true"`` | ``prometheus.io/scheme``, ``/port``, ``/path`` |

Only Running pods with an IP count.  A control-plane component that listens on loopback only
(kubeadm's default ``--bind-address=127.0.0.1``) cannot be scraped from another pod: it is
reported in ``skipped`` with the reason instead of producing a target that always fails.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from collectors.metrics.relabel import compile_rules
from collectors.metrics.scrape import ScrapeTarget, ssl_context

_EXPORTERS = {  # role -> (label matchers (any), port names, default port)
    "node-exporter": ((("app.kubernetes.io/name", "node-exporter"), ("app.kubernetes.io/name", "prometheus-node-exporter"),
                       ("app", "node-exporter")), ("metrics", "http-metrics"), 9100),
    "kube-state-metrics": ((("app.kubernetes.io/name", "kube-state-metrics"), ("k8s-app", "kube-state-metrics")),
                           ("http-metrics", "http", "metrics"), 8080),
    "dcgm-exporter": ((("app.kubernetes.io/name", "dcgm-exporter"), ("app", "nvidia-dcgm-exporter"),
                       ("app", "dcgm-exporter")), ("metrics", "gpu-metrics"), 9400),
    # the default pack's CoreDNSDown / CoreDNSPanic read job="coredns"; kubeadm annotates only the Service
    "coredns": ((("k8s-app", "kube-dns"), ("app.kubernetes.io/name", "coredns")), ("metrics",), 9153),
}
SA_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
_CONTROL = {"kube-scheduler": ("scheduler", 10259), "kube-controller-manager": ("controller-manager", 10257)}


@dataclass
class Found:
    targets: list[ScrapeTarget] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what, why)


def _flag(pod, name: str) -> str | None:
    for c in pod.spec.containers or ():
        for arg in (c.command or []) + (c.args or []):
            if arg.startswith(f"--{name}="):
                return arg.split("=", 1)[1]
    return None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _port(pod, names: tuple, default: int) -> int:
    for c in pod.spec.containers or ():
        for p in c.ports or ():
            if p.name in names:
                return p.container_port
    return default


def discover(nodes, pods, apiserver_endpoints, cfg, defaults) -> Found:
    """Targets from API objects (``V1Node``/``V1Pod`` lists, the ``default/kubernetes`` ``V1Endpoints``)."""
    roles = set(cfg.roles)
    found = Found()
    tls = cfg.tls
    if tls.ca_file is None and os.path.exists(SA_CA):
        tls = tls.model_copy(update={"ca_file": SA_CA})
    token = cfg.bearer_token_file if cfg.bearer_token_file and os.path.exists(cfg.bearer_token_file) else None
    https = {"bearer_token_file": token, "ssl": ssl_context(tls)}
    kubelet = {"bearer_token_file": token, "ssl": ssl_context(cfg.kubelet_tls)}
    keep = compile_rules(cfg.relabel)

    def add(role: str, url: str, labels: dict, auth: dict | None = None) -> None:
        # exporters that describe OTHER objects keep their own namespace/pod labels (honor_labels)
        found.targets.append(ScrapeTarget(job=role, url=url, interval=defaults.interval, timeout=defaults.timeout,
                                          max_bytes=defaults.max_bytes, max_series=defaults.max_series,
                                          labels={**cfg.labels, **labels}, keep=keep,
                                          honor_labels=role in _EXPORTERS, **(auth or {})))

    if "apiserver" in roles and apiserver_endpoints is not None:
        for sub in apiserver_endpoints.subsets or ():
            port = next((p.port for p in sub.ports or () if p.name == "https"), None) or sub.ports[0].port
            for a in sub.addresses or ():
                add("apiserver", f"https://{a.ip}:{port}/metrics", {}, https)
    for node in nodes if roles & {"kubelet", "cadvisor"} else ():
        ip = next((a.address for a in node.status.addresses or () if a.type == "InternalIP"), None)
        if ip is None:
            found.skipped.append((f"node {node.metadata.name}", "no InternalIP"))
            continue
        ep = node.status.daemon_endpoints
        port = ep.kubelet_endpoint.port if ep and ep.kubelet_endpoint else 10250
        host = f"[{ip}]" if ":" in ip else ip
        if "kubelet" in roles:
            add("kubelet", f"https://{host}:{port}/metrics", {"node": node.metadata.name}, kubelet)
        if "cadvisor" in roles:
            add("cadvisor", f"https://{host}:{port}/metrics/cadvisor", {"node": node.metadata.name}, kubelet)
    seen = {t.url for t in found.targets}
    for pod in pods:
        md, st = pod.metadata, pod.status
        if cfg.namespaces and md.namespace not in cfg.namespaces:
            continue
        if st is None or st.phase != "Running" or not st.pod_ip:
            continue
        labels = md.labels or {}
        ann = md.annotations or {}
        where = {"namespace": md.namespace, "pod": md.name, "node": pod.spec.node_name or ""}
        what = f"pod {md.namespace}/{md.name}"
        comp = labels.get("component")
        url = None
        role = None
        if comp == "etcd" and "etcd" in roles:
            role = "etcd"
            urls = [u for u in (_flag(pod, "listen-metrics-urls") or f"http://{st.pod_ip}:2381").split(",") if u]
            usable = [u for u in urls if not _loopback(urlsplit(u).hostname or "")]
            if not usable:
                found.skipped.append((what, f"etcd serves metrics on loopback only ({', '.join(urls)}); "
                                            "set --listen-metrics-urls to a reachable address"))
                continue
            url = usable[0].rstrip("/") + "/metrics"
        elif comp in _CONTROL and _CONTROL[comp][0] in roles:
            role, default_port = _CONTROL[comp]
            bind = _flag(pod, "bind-address")
            if bind and _loopback(bind):
                found.skipped.append((what, f"{comp} listens on {bind} only (--bind-address); "
                                            "set --bind-address=0.0.0.0 to scrape it"))
                continue
            url = f"https://{st.pod_ip}:{_flag(pod, 'secure-port') or default_port}/metrics"
        else:
            for r, (matchers, names, default_port) in _EXPORTERS.items():
                if r in roles and any(labels.get(k) == v for k, v in matchers):
                    role, url = r, f"http://{st.pod_ip}:{_port(pod, names, default_port)}/metrics"
                    break
            else:
                if "annotated" in roles and ann.get("prometheus.io/scrape") == "true":
                    scheme = ann.get("prometheus.io/scheme", "http")
                    port = ann.get("prometheus.io/port") or next(
                        (p.container_port for c in pod.spec.containers or () for p in c.ports or ()), None)
                    if not port:
                        found.skipped.append((what, "prometheus.io/scrape is true but no port is declared"))
                        continue
                    path = ann.get("prometheus.io/path", "/metrics")
                    role = labels.get("app.kubernetes.io/name") or labels.get("app") or md.namespace
                    url = f"{scheme}://{st.pod_ip}:{port}{path if path.startswith('/') else '/' + path}"
        if url is None or url in seen:
            continue
        seen.add(url)
        if role in _EXPORTERS:  # they describe other objects: no pod labels of their own; KSM not even a node
            where = {} if role == "kube-state-metrics" else {"node": where["node"]}
        add(role, url, where, https if url.startswith("https") else None)
    return found


def discover_with(api, cfg, defaults) -> Found:
    """Ask the API (a ``kubernetes.client.CoreV1Api``) and build the targets."""
    from kubernetes.client.exceptions import ApiException

    roles = set(cfg.roles)
    nodes = api.list_node().items if roles & {"kubelet", "cadvisor"} else []
    pods = api.list_pod_for_all_namespaces(field_selector="status.phase=Running").items
    eps = None
    if "apiserver" in roles:
        try:
            eps = api.read_namespaced_endpoints("kubernetes", "default")
        except ApiException as exc:
            if exc.status != 404:
                raise
    return discover(nodes, pods, eps, cfg, defaults)


def core_api(kubeconfig: str | None = None, host: str | None = None):
    """A CoreV1Api: in-cluster, from a kubeconfig, or (tests) at a plain ``host`` URL."""
    from kubernetes import client

    if host:
        c = client.Configuration()
        c.host = host
        return client.CoreV1Api(client.ApiClient(c))
    from collectors.kubernetes.api import api_client

    return client.CoreV1Api(api_client(kubeconfig, in_cluster=not kubeconfig))
