"""The live demo's core, end to end on the session's real control plane and broker: a Deployment of
team A that no Node can take and a crash-looping StatefulSet of team B, written to the API server,
reach team A's and team B's webhook receivers as KubePodFailedScheduling and KubePodCrashLooping
(collector -> Kafka -> worker -> routing -> delivery); a node cordoned by the admin reaches the platform team as
KubeNodeCordoned (audit webhook -> intake -> Kafka -> ...), and nothing else reaches a receiver."""

from __future__ import annotations

import json
import time

from streams.cluster_demo import LiveStack, run_scenario


def test_unschedulable_and_crash_loop_reach_their_teams(cluster, kafka_bootstrap, tmp_path):
    t0 = time.monotonic()
    with LiveStack(cluster=cluster, bootstrap=kafka_bootstrap, log_dir=tmp_path, progress=lambda m: None) as stack:
        outcomes = run_scenario(stack, steps=("unschedulable", "crashloop", "cordon"), timeout=40)
        assert stack.delivered(30), "delivery not done within 30 s"
        got = {(o.alertname, o.got.receiver if o.got else None) for o in outcomes}
        assert got == {("KubePodFailedScheduling", "team-a"), ("KubePodCrashLooping", "team-b"),
                       ("KubeNodeCordoned", "platform")}, (
            got, (tmp_path / f"live-worker-{stack.tag}.log").read_text()[-2000:],
            (tmp_path / f"live-intake-{stack.tag}.log").read_text()[-2000:])
        for o in outcomes:
            assert 0 < o.latency < 20, (o.alertname, o.latency)
            lab = o.got.alert["labels"]
            assert lab["owner"] == o.expect_receiver and (lab.get("namespace") or stack.tag).endswith(stack.tag), lab
        # the cordon came through the API server's audit webhook and the intake (`collect cloud`, TLS, its shipped
        # ServiceAccount), and says who did it
        cordon = next(o for o in outcomes if o.alertname == "KubeNodeCordoned")
        assert cordon.got.alert["annotations"]["summary"].endswith("cordoned by admin"), cordon.got.alert
        # the collector ran as its shipped ServiceAccount, not as the cluster's admin
        kubeconfig = json.loads((tmp_path / f"collector-{stack.tag}.kubeconfig").read_text())
        assert [u["name"] for u in kubeconfig["users"]] == ["system:serviceaccount:kubesight:kubesight-kubernetes"]
        assert f"collector-{stack.tag}.kubeconfig" in " ".join(stack.collector.args)
        # every notified alert is one of the incidents: each team's once, the cordon (and its resolution) to platform
        # (this stack's namespaces and cluster-scoped alerts: pods another test left crash-looping in the session's
        # cluster are collected too, and go to their own teams)
        notes = [(n.receiver, n.alert["labels"]["alertname"]) for n in stack.notes
                 if (n.alert["labels"].get("namespace") or stack.tag).endswith(stack.tag)]
        assert sorted(n for n in notes if n[1] != "KubeNodeCordoned") == [
            ("team-a", "KubePodFailedScheduling"), ("team-b", "KubePodCrashLooping")]
        assert {n for n in notes if n[1] == "KubeNodeCordoned"} == {("platform", "KubeNodeCordoned")}
    assert stack.worker.poll() is not None and stack.collector.poll() is not None  # stopped with the stack
    assert stack.intake.poll() is not None
    assert time.monotonic() - t0 < 90
