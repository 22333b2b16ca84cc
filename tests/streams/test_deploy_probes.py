"""Issue 13 #3, #4: every long-running pod has probes on the port its telemetry serves, and a grace
period above the shutdown bound its settings give it."""

from pathlib import Path

import pytest
import yaml

from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))


def workloads():
    for f in MANIFESTS:
        docs = list(yaml.safe_load_all(f.read_text()))
        config = {d["metadata"]["name"]: d for d in docs if d and d["kind"] == "ConfigMap"}
        for d in docs:
            if d and d["kind"] in ("Deployment", "DaemonSet"):
                yield f.name, d, config


@pytest.mark.parametrize("name,workload,config", list(workloads()), ids=lambda v: v if isinstance(v, str) else "")
def test_probes_and_grace_period_agree_with_the_settings(name, workload, config, monkeypatch):
    pod = workload["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if "--config" in c["args"]:  # the worker: settings from its config map
        (cm,) = config.values()
        settings = Settings(**yaml.safe_load(cm["data"]["settings.yaml"]))
    else:
        settings = Settings.load()
    assert settings.web_port is not None and settings.web_host == "0.0.0.0", name  # the kubelet probes the pod IP
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        get = c[probe]["httpGet"]
        assert get["path"] == path and ports[get["port"]] == settings.web_port, (name, probe)
    assert settings.shutdown_timeout <= 10
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_timeout, name
