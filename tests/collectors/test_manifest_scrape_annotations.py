"""Every kubesight pod in deploy/kubernetes is scraped where it serves /metrics (the prometheus.io annotations)."""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))


def pod_templates() -> list:
    return [pytest.param(doc["spec"]["template"], id=f"{path.stem}/{doc['metadata']['name']}")
            for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("kind") in ("Deployment", "DaemonSet", "StatefulSet")]


def web_port(container) -> int:
    """The port the container's /health probe asks (a named port resolved), which is where /metrics is too."""
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/health"
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    return named.get(probe["port"], probe["port"])


def test_every_manifest_with_a_workload_is_seen():
    """The parametrised test below runs on the worker and all four collectors (a glob that found none would pass)."""
    names = {p.id.split("/")[0] for p in pod_templates()}
    assert {"worker", "collector-cloud", "collector-kernel", "collector-kubernetes", "collector-metrics"} <= names


@pytest.mark.parametrize("template", pod_templates())
def test_pod_template_announces_its_metrics_port(template):
    """The kernel, kubernetes and metrics collectors served /metrics but had no prometheus.io annotations, so an
    annotation-driven Prometheus (or kubesight's own discovery) never scraped them (an audit), while the worker
    and the cloud intake were; the port must be the one the process listens on (KUBESIGHT_WEB_PORT if set)."""
    [container] = template["spec"]["containers"]
    port = web_port(container)
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    if "KUBESIGHT_WEB_PORT" in env:
        assert int(env["KUBESIGHT_WEB_PORT"]) == port
    ann = template["metadata"].get("annotations") or {}
    assert ann.get("prometheus.io/scrape") == "true"
    assert ann.get("prometheus.io/port") == str(port)
    assert ann.get("prometheus.io/path", "/metrics") == "/metrics"
