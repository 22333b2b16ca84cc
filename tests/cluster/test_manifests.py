"""Every Kubernetes manifest under deploy/kubernetes/ passes a server-side apply, dry run, with strict field
validation, against the real API server (schemas, defaulting, admission: what `kubectl apply
--server-side --dry-run=server --validate=strict` checks).

And every workload's pod passes Pod Security "restricted" (enforced by the API server's PodSecurity admission)
in a namespace labelled for it -- except the kernel collector, which cannot: it reads the node's /dev/kmsg
through a hostPath, as root with CAP_SYSLOG (README, Kernel).  That it is *refused* there is asserted too,
so the label is known to bite."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from kubernetes import dynamic
from kubernetes.client import ApiException

from tests.cluster.conftest import create_docs, ensure_namespace

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


RESTRICTED = "kubesight-restricted"
PRIVILEGED = "kubesight-node"
WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet", "Job", "CronJob")
NOT_RESTRICTED = {"kubesight-kernel"}  # hostPath /dev/kmsg, runAsUser 0, CAP_SYSLOG


def _in(doc: dict, ns: str) -> dict:
    d = copy.deepcopy(doc)
    if "namespace" in d.get("metadata", {}):
        d["metadata"]["namespace"] = ns
    for s in d.get("subjects") or []:
        if "namespace" in s:
            s["namespace"] = ns
    if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
        d["metadata"]["name"] = f"{ns}-{d['metadata']['name']}"
        if d["kind"] == "ClusterRoleBinding":
            d["roleRef"]["name"] = f"{ns}-{d['roleRef']['name']}"
    return d


def _pod_of(workload: dict) -> dict:
    spec = workload["spec"]
    template = spec["jobTemplate"]["spec"]["template"] if workload["kind"] == "CronJob" else spec["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": workload["metadata"]["name"], "namespace": workload["metadata"]["namespace"],
                         "labels": template["metadata"].get("labels", {})},
            "spec": template["spec"]}


def _dry_run(dyn, doc: dict) -> None:
    res = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    if res.namespaced:
        res.create(body=doc, namespace=doc["metadata"]["namespace"], query_params=[("dryRun", "All")])
    else:
        res.create(body=doc, query_params=[("dryRun", "All")])


@pytest.fixture(scope="module")
def namespaces(api):
    ensure_namespace(api, RESTRICTED, {"pod-security.kubernetes.io/enforce": "restricted",
                                       "pod-security.kubernetes.io/enforce-version": "latest"})
    ensure_namespace(api, PRIVILEGED, {"pod-security.kubernetes.io/enforce": "privileged"})
    return api


def _docs():
    return [(Path(f).name, d) for f, _, d in manifests()]


def test_every_manifest_passes_a_server_side_dry_run_and_restricted_where_it_can(namespaces):
    api = namespaces
    dyn = dynamic.DynamicClient(api.client)
    failures, checked, refused = [], [], []
    for name, doc in _docs():
        kernel = doc["metadata"].get("name") in NOT_RESTRICTED
        ns = PRIVILEGED if kernel or name == "collector-kernel.yaml" else RESTRICTED
        d = _in(doc, ns)
        if d["kind"] in ("ServiceAccount", "ConfigMap", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
            create_docs(api, [d])  # pods need their ServiceAccount to exist, even in a dry-run
            continue
        try:
            _dry_run(dyn, d)
            if d["kind"] in WORKLOADS:
                _dry_run(dyn, _pod_of(d))  # PodSecurity enforces on pods, not on their controllers
        except ApiException as exc:
            failures.append(f"{name}: {d['kind']} {d['metadata']['name']} in {ns}: {exc.status} {exc.body}")
        else:
            checked.append((d["kind"], d["metadata"]["name"], ns))
        if kernel and d["kind"] in WORKLOADS:  # and it cannot meet restricted: the label does refuse it
            pod = _pod_of(_in(doc, RESTRICTED))
            pod["spec"].pop("serviceAccountName", None)  # its ServiceAccount lives in the privileged namespace
            try:
                _dry_run(dyn, pod)
            except ApiException as exc:
                assert exc.status == 403 and "violates PodSecurity" in exc.body, exc.body
                refused.append(d["metadata"]["name"])
            else:
                failures.append(f"{name}: the kernel collector passed Pod Security restricted; update NOT_RESTRICTED")
    assert not failures, "\n".join(failures)
    kinds = {(k, n) for k, n, _ in checked}
    assert {("Deployment", "kubesight-worker"), ("Deployment", "kubesight-cloud-intake"),
            ("NetworkPolicy", "kubesight-cloud-intake"), ("NetworkPolicy", "kubesight-metrics-intake")} <= kinds, kinds
    assert refused == ["kubesight-kernel"]
    restricted = [n for k, n, ns in checked if k in WORKLOADS and ns == RESTRICTED]
    assert len(restricted) >= 4, restricted  # worker, cloud intake, metrics, kubernetes collectors


def test_every_container_is_hardened():
    """Non-root (or documented), read-only root, no capabilities but documented ones, seccomp, requests and limits."""
    problems = []
    for name, doc in _docs():
        if doc["kind"] not in WORKLOADS:
            continue
        pod = _pod_of({**doc, "metadata": {**doc["metadata"], "namespace": "x"}})["spec"]
        psc = pod.get("securityContext", {})
        for c in pod["containers"]:
            sc, where = c.get("securityContext", {}), f"{name}: {c['name']}"
            if (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccomp RuntimeDefault")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities drop ALL")
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("privileged"):
                problems.append(f"{where}: no privilege escalation")
            if not {"requests", "limits"} <= set(c.get("resources", {})):
                problems.append(f"{where}: resource requests and limits")
            if sc.get("readOnlyRootFilesystem") is not True:  # every one, the kernel collector and the worker too
                problems.append(f"{where}: readOnlyRootFilesystem")
            if doc["metadata"]["name"] in NOT_RESTRICTED:
                if sc.get("capabilities", {}).get("add") != ["SYSLOG"]:
                    problems.append(f"{where}: exactly CAP_SYSLOG added")
                continue
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                problems.append(f"{where}: runAsNonRoot")
    assert not problems, "\n".join(problems)


def test_the_worker_writes_only_to_an_empty_dir():
    """readOnlyRootFilesystem holds for the worker because every file it writes is under settings.state_dir
    (streams.app: rules-topic packs, Faust's data dir), and the manifest mounts an emptyDir exactly there."""
    from core.settings import Settings

    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in _docs()}
    config = yaml.safe_load(docs[("ConfigMap", "kubesight-worker")]["data"]["settings.yaml"])
    state_dir = Settings.model_validate(config).state_dir
    assert state_dir.startswith("/") and state_dir != str(Settings().state_dir), state_dir
    pod = docs[("Deployment", "kubesight-worker")]["spec"]["template"]["spec"]
    (c,) = [c for c in pod["containers"] if c["name"] == "worker"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert state_dir in mounts and not mounts[state_dir].get("readOnly"), mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[state_dir]["name"]], volumes
