"""The default pack's alerts that kubernetes-mixin, node-exporter-mixin and etcd's mixin also raise carry their
``runbook_url`` (kube-prometheus sets one on each: runbooks.prometheus-operator.dev, the alert's name in lower case),
so a notification says where the fix is written, as the same alert from Prometheus does; kubesight's variants of
them (a critical twin, a per-member etcd alert) link the runbook of the alert they follow."""

from __future__ import annotations

import re

import yaml

from rules.load import DEFAULT_PACK, pack_files

# the mixins' alerts in the default pack under their own names, by the runbooks' folder (prometheus-operator/runbooks,
# content/runbooks/<folder>/<Alert>.md)
MIXIN = {
    "kubernetes": "KubeAPIDown KubeAPIErrorBudgetBurn KubeClientCertificateExpiration KubeClientErrors "
                  "KubeAggregatedAPIDown KubeAggregatedAPIErrors KubeSchedulerDown KubeControllerManagerDown "
                  "KubeNodeNotReady KubeNodeReadinessFlapping KubeletPlegDurationHigh KubeletDown KubeQuotaAlmostFull "
                  "KubeQuotaFullyUsed KubeQuotaExceeded KubePersistentVolumeErrors KubePersistentVolumeFillingUp "
                  "KubePersistentVolumeInodesFillingUp KubePodCrashLooping KubeJobFailed KubeDeploymentGenerationMismatch "
                  "KubeStatefulSetGenerationMismatch KubeDaemonSetRolloutStuck KubeDaemonSetNotScheduled "
                  "KubeDaemonSetMisScheduled KubePodNotReady KubeContainerWaiting KubeHpaMaxedOut KubeHpaReplicasMismatch",
    "node": "NodeClockNotSynchronising NodeClockSkewDetected NodeFilesystemAlmostOutOfSpace NodeFilesystemSpaceFillingUp "
            "NodeFilesystemFilesFillingUp NodeSystemSaturation NodeDiskIOSaturation NodeMemoryMajorPagesFaults "
            "NodeFileDescriptorLimit NodeRAIDDiskFailure",
    "etcd": "EtcdNoLeader EtcdHighNumberOfFailedGRPCRequests EtcdHighFsyncDurations EtcdHighCommitDurations",
}
URL = re.compile(r"https://runbooks\.prometheus-operator\.dev/runbooks/(kubernetes|node|etcd)/[a-z]+")


def rules() -> dict[str, dict]:
    return {r["alert"]: r for f in pack_files([DEFAULT_PACK]) for r in yaml.safe_load(f.read_text())["rules"]}


def test_each_mixin_alert_of_the_default_pack_links_its_runbook():
    pack = rules()
    for folder, names in MIXIN.items():
        for name in names.split():
            assert (pack[name].get("annotations") or {}).get("runbook_url") == \
                f"https://runbooks.prometheus-operator.dev/runbooks/{folder}/{name.lower()}", name


def test_every_runbook_url_of_the_default_pack_is_a_runbook_page():
    links = {name: r["annotations"]["runbook_url"] for name, r in rules().items()
             if "runbook_url" in (r.get("annotations") or {})}
    assert len(links) >= 71 and all(URL.fullmatch(url) for url in links.values()), links
    assert links["KubeNodeDiskPressure"].endswith("/kubernetes/kubenodepressure")  # a variant: the runbook it follows
    assert links["EtcdMemberDown"].endswith("/etcd/etcdmembersdown")
