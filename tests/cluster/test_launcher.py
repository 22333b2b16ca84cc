"""The launcher's API on the session's cluster: what the demo and the bench build on."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from deploy.cluster import launcher

REPO = Path(__file__).resolve().parents[2]


def test_status_finds_the_running_cluster(cluster):
    found = launcher.status(cluster.name)
    assert found is not None and found.alive()
    assert (found.server, found.etcd_endpoint, found.pids) == (cluster.server, cluster.etcd_endpoint, cluster.pids)
    assert set(found.health()) == set(launcher.BINARIES)
    # starting it again returns the running one (no second control plane)
    t0 = time.monotonic()
    again = launcher.start(cluster.name, attach=True, quiet=True)
    assert again.pids == cluster.pids and time.monotonic() - t0 < 5


def test_the_cli_reports_every_component(cluster):
    out = subprocess.run([sys.executable, "-m", "deploy.cluster.launcher", "status", "--name", cluster.name],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for comp in launcher.BINARIES:
        assert any(line.split()[:2] == [comp, "running"] for line in out.stdout.splitlines()), out.stdout


def test_kubeconfig_and_token_reach_a_1_34_api_server(cluster):
    cfg = json.loads(cluster.kubeconfig.read_text())
    assert cfg["clusters"][0]["cluster"]["server"] == cluster.server
    assert (cluster.run_dir / "admin.token").read_text().strip() == cluster.admin_token
    req = urllib.request.Request(f"{cluster.server}/version", headers={"Authorization": f"Bearer {cluster.admin_token}"})
    with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(cluster.ca_file)), timeout=10) as r:
        assert json.load(r)["gitVersion"] == launcher.K8S_VERSION


def test_etcd_revision_moves_with_writes(cluster, api):
    before = cluster.etcd_revision()
    api.core.create_namespaced_config_map("default", {"metadata": {"generateName": "rev-"}})
    assert cluster.etcd_revision() > before


def test_memory_stays_within_budget(cluster):
    rss = cluster.rss_mb()
    assert all(v > 0 for v in rss.values()), rss
    assert sum(rss.values()) < 1200, rss  # the target is ~1 GB for the whole control plane
