"""The kernel DaemonSet: least privilege, read-only /dev/kmsg, args the CLI accepts, a loadable pattern file."""

from __future__ import annotations

import yaml

from collectors.kernel.patterns import load_patterns
from core.settings import REPO
from kubesight.cli import build_parser

MANIFEST = REPO / "deploy" / "kubernetes" / "collector-kernel.yaml"


def docs():
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text())}


def test_daemonset_is_least_privilege_with_read_only_kmsg():
    ds = docs()["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["SYSLOG"]}
    host = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
    assert host == {"kmsg": {"path": "/dev/kmsg", "type": "CharDevice"}}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert all(m.get("readOnly") for m in mounts.values())
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_daemonset_args_parse_and_the_shipped_site_patterns_load(tmp_path):
    d = docs()
    (c,) = d["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(c["args"])
    assert (args.checkpoint, args.from_file, args.kmsg) == ("kafka", None, "/dev/kmsg")
    site = tmp_path / "site.yaml"
    site.write_text(d["ConfigMap"]["data"]["site.yaml"])
    assert len(load_patterns(site).patterns) == len(load_patterns().patterns)
