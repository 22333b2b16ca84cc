"""Every Kubernetes manifest under deploy/kubernetes/ passes a server-side apply, dry run, with strict field
validation, against the real API server (schemas, defaulting, admission: what `kubectl apply
--server-side --dry-run=server --validate=strict` checks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import dynamic
from kubernetes.client import ApiException

from tests.cluster.conftest import ensure_namespace

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = DEPLOY / "kubernetes"  # (deploy/demo holds recordings of other clusters, not manifests)


def manifests() -> list[tuple[str, int, dict]]:
    """(file, index, object) of every YAML document under deploy/kubernetes/ that is a Kubernetes object."""
    out = []
    for path in sorted(MANIFESTS.rglob("*.y*ml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(doc, dict) and {"apiVersion", "kind", "metadata"} <= doc.keys() \
                    and "kubesight.io" not in doc["apiVersion"]:
                out.append((str(path.relative_to(DEPLOY)), i, doc))
    return out


def test_there_are_manifests():
    files = {f for f, _, _ in manifests()}
    assert {f"kubernetes/{n}" for n in ("collector-kubernetes.yaml", "collector-metrics.yaml", "collector-kernel.yaml",
                                        "collector-cloud.yaml", "worker.yaml")} <= files


@pytest.mark.parametrize("where, doc", [(f"{f}#{i} {d['kind']}/{d['metadata']['name']}", d)
                                        for f, i, d in manifests()], ids=lambda x: x if isinstance(x, str) else "")
def test_server_side_dry_run(api, where, doc):
    dyn = dynamic.DynamicClient(api.client)
    res = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    ns = doc["metadata"].get("namespace")
    if res.namespaced:
        assert ns, f"{where}: a namespaced object without metadata.namespace"
        ensure_namespace(api, ns)
    try:
        out = dyn.server_side_apply(res, body=doc, namespace=ns, field_manager="kubesight-manifest-test",
                                    dry_run="All", force_conflicts=True, query_params=[("fieldValidation", "Strict")])
    except ApiException as exc:
        pytest.fail(f"{where}: the API server refuses it: {exc.status} {exc.body}")
    assert out.metadata.name == doc["metadata"]["name"] and out.kind == doc["kind"]
