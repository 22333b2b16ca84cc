"""Discovery with the official client against a local API server serving the recorded cluster objects."""

from __future__ import annotations

import asyncio
import copy

import pytest
import yaml
from aiohttp import web

from collectors.metrics.config import Kubernetes, Limits
from collectors.metrics.discovery import core_api, discover_with

K8S = "nri-kubernetes-testdata/1_35"


def _extra_pods(pods: list) -> list:
    """Two more pods made from the recorded kube-state-metrics pod: an annotated app and a DCGM exporter."""
    ksm = next(p for p in pods if p["metadata"]["labels"].get("app.kubernetes.io/name") == "kube-state-metrics")
    app = copy.deepcopy(ksm)
    app["metadata"].update(name="shop-cart-1", namespace="shop", labels={"app": "cart"},
                           annotations={"prometheus.io/scrape": "true", "prometheus.io/port": "9102",
                                        "prometheus.io/path": "stats"})
    app["status"]["podIP"] = "10.244.0.50"
    gpu = copy.deepcopy(ksm)
    gpu["metadata"].update(name="dcgm-exporter-x1", namespace="gpu", labels={"app": "nvidia-dcgm-exporter"})
    gpu["status"]["podIP"] = "10.244.0.51"
    return [app, gpu]


async def _serve_and_discover(data_dir, cfg):
    def load(name):
        return yaml.safe_load((data_dir / K8S / name).read_text())

    nodes, pods, eps = load("nodes.yaml"), load("pods.yaml"), load("endpoints.yaml")
    pods["items"] += _extra_pods(pods["items"])
    kube = next(e for e in eps["items"] if e["metadata"]["name"] == "kubernetes")
    seen = []

    def handler(doc):
        async def h(request):
            seen.append(request.path)
            return web.json_response(doc)
        return h

    app = web.Application()
    app.router.add_get("/api/v1/nodes", handler({**nodes, "kind": "NodeList"}))
    app.router.add_get("/api/v1/pods", handler({**pods, "kind": "PodList"}))
    app.router.add_get("/api/v1/namespaces/default/endpoints/kubernetes", handler(kube))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        api = core_api(host=f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}")
        return await asyncio.to_thread(discover_with, api, cfg, Limits()), seen
    finally:
        await runner.cleanup()


def test_the_recorded_cluster_yields_its_targets_and_says_what_it_cannot_scrape(data_dir):
    cfg = Kubernetes(enabled=True, labels={"cluster": "datagen"})
    found, seen = asyncio.run(_serve_and_discover(data_dir, cfg))
    assert sorted(seen) == ["/api/v1/namespaces/default/endpoints/kubernetes", "/api/v1/nodes", "/api/v1/pods"]
    assert [(t.job, t.url) for t in found.targets] == [
        ("apiserver", "https://192.168.67.2:8443/metrics"),
        ("kubelet", "https://192.168.67.2:10250/metrics"),
        ("cadvisor", "https://192.168.67.2:10250/metrics/cadvisor"),
        ("coredns", "http://10.244.0.2:9153/metrics"),  # the recorded kubeadm CoreDNS: k8s-app=kube-dns, port metrics
        ("kube-state-metrics", "http://10.244.0.7:8080/metrics"),
        ("cart", "http://10.244.0.50:9102/stats"),
        ("dcgm-exporter", "http://10.244.0.51:9400/metrics"),  # no port named metrics: the default
    ]
    by_job = {t.job: t for t in found.targets}
    ksm = by_job["kube-state-metrics"]
    assert ksm.target_labels() == {"job": "kube-state-metrics", "instance": "10.244.0.7:8080", "cluster": "datagen"}
    assert by_job["coredns"].target_labels() == {"job": "coredns", "instance": "10.244.0.2:9153", "cluster": "datagen",
                                                 "node": "datagen-1-35"}  # the job CoreDNSDown/CoreDNSPanic read
    assert by_job["cart"].target_labels() == {"job": "cart", "instance": "10.244.0.50:9102", "cluster": "datagen",
                                                "namespace": "shop", "pod": "shop-cart-1", "node": "datagen-1-35"}
    assert by_job["dcgm-exporter"].labels == {"cluster": "datagen", "node": "datagen-1-35"}
    assert ksm.honor_labels and not found.targets[0].honor_labels  # KSM's own namespace/pod labels win
    assert found.targets[1].ssl is not None and found.targets[1].ssl.check_hostname is False  # kubelet: self-signed
    assert found.skipped == [
        ("pod kube-system/etcd-datagen-1-35", "etcd serves metrics on loopback only (http://127.0.0.1:2381); "
                                              "set --listen-metrics-urls to a reachable address"),
        ("pod kube-system/kube-controller-manager-datagen-1-35", "kube-controller-manager listens on 127.0.0.1 only "
                                                                 "(--bind-address); set --bind-address=0.0.0.0 to scrape it"),
        ("pod kube-system/kube-scheduler-datagen-1-35", "kube-scheduler listens on 127.0.0.1 only (--bind-address); "
                                                        "set --bind-address=0.0.0.0 to scrape it"),
    ]


@pytest.mark.parametrize("roles, jobs", [
    (["apiserver"], ["apiserver"]),
    (["cadvisor", "kube-state-metrics"], ["cadvisor", "kube-state-metrics"]),
])
def test_roles_select_what_is_discovered(data_dir, roles, jobs):
    found, _ = asyncio.run(_serve_and_discover(data_dir, Kubernetes(enabled=True, roles=roles)))
    assert [t.job for t in found.targets] == jobs
