"""The worker's manifest and the launcher's pom stay in step with the code that reads them."""

from pathlib import Path

import yaml

from alerts.config import load as load_routing
from core.settings import Settings
from kubesight.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


def test_worker_manifest_settings_routing_and_args_are_valid(tmp_path):
    docs = list(yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "worker.yaml").read_text()))
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    s = Settings(**yaml.safe_load(cm["data"]["settings.yaml"]))  # extra="forbid": unknown keys fail here
    assert s.clock == "wall" and s.routing == "/etc/kubesight/routing.yaml"
    routing = tmp_path / "routing.yaml"
    routing.write_text(cm["data"]["routing.yaml"])
    # its secret files exist only in the cluster: the file is checked here without them (as promtool --syntax-only)
    assert load_routing(str(routing), files=False).route.receiver == "platform"
    dep = next(d for d in docs if d["kind"] == "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    parsed = build_parser().parse_args(args)
    assert parsed.command == "worker" and parsed.config == "/etc/kubesight/settings.yaml"


def test_pom_fetches_kafka_4_and_one_log4j2_binding():
    pom = (REPO / "deploy" / "kafka" / "pom.xml").read_text()
    assert "<artifactId>kafka_2.13</artifactId>" in pom and "<kafka.version>4." in pom
    assert pom.count("<artifactId>log4j-slf4j2-impl</artifactId>") == 1


def test_launcher_starts_a_real_broker_and_stop_leaves_no_jvm_and_no_folder():
    import os

    from core import broker as launcher

    b = launcher.start(f"lifecycle-{os.getpid()}", attach=True, quiet=True)
    try:
        assert launcher.metadata_ok(b.bootstrap)  # a real Metadata request answered
        assert launcher.status(b.name).pid == b.pid  # broker.json names the running JVM
        assert "kafka.Kafka" in open(f"/proc/{b.pid}/cmdline").read()
    finally:
        b.stop()
    assert not b.alive()
    assert not b.run_dir.exists() and launcher.status(b.name) is None
