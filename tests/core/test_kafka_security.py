"""Kafka client security (issue 19 #1) against a real broker with a SASL_SSL listener and SCRAM users.

The broker (core.broker's launcher, ``security=``) gets a CA and a certificate made here with openssl;
SCRAM credentials are written at storage format time. kubesight's own clients (the sinks, the admin
client, the transactional hot path, the test reader) go through ``core.kafkaclient.client_config``;
each misconfiguration a user is likely to make gives one line within seconds, no hang, no traceback.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from collectors.sink import AsyncKafkaSink, KafkaSink
from core import broker as launcher
from core.broker import bootstrap_for
from core.kafkaclient import client_config
from core.records import Entity, Event
from core.settings import REPO, KafkaSecurity, Settings
from core.topics import ensure_topics
from tests import tlsfiles
from tests.kafkatools import read_to_end, until

pytestmark = pytest.mark.kafka

PASSWORD = "s3cret-" + uuid.uuid4().hex[:8]
PACK = REPO / "tests" / "streams" / "packs" / "skeleton.yaml"


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tls")
    ca = tlsfiles.ca(d)
    server = tlsfiles.signed(d, ca, "broker")
    other = tlsfiles.ca(d / "other", "other-ca")
    (d / "password").write_text(PASSWORD + "\n")
    (d / "wrong").write_text("not-the-password\n")
    return {"ca": ca.cert, "other_ca": other.cert, "keystore": tlsfiles.pkcs12(d, server, "ks-pass"),
            "password": d / "password", "wrong": d / "wrong", "dir": d}


@pytest.fixture(scope="module")
def secure_broker(tls):
    sec = launcher.BrokerSecurity(tls["keystore"], "ks-pass", (("alice", PASSWORD),))
    b = launcher.start(f"pytest-sasl-{os.getpid()}", attach=True, quiet=True, heap_mb=384, security=sec)
    try:
        yield b
    finally:
        b.stop()


def scram(tls, mechanism="SCRAM-SHA-512", **kw) -> KafkaSecurity:
    base = dict(protocol="SASL_SSL", sasl_mechanism=mechanism, username="alice", password_file=str(tls["password"]),
                ca_file=str(tls["ca"]))
    return KafkaSecurity(**{**base, **kw})


@pytest.fixture
def secure_settings(secure_broker, tls) -> Settings:
    tag = uuid.uuid4().hex[:8]
    s = Settings(kafka=secure_broker.secure_bootstrap, kafka_security=scram(tls), topic_prefix=f"s{tag}-",
                 app_id=f"ks-{tag}", partitions=2, default_pack=False, rules=[str(PACK)])
    assert ensure_topics(s, bootstrap_for(s))  # the admin client over SASL_SSL created them
    return s


def event(name: str, t: float) -> Event:
    return Event(source="k8s", reason="BackOff", type="Warning", time=t,
                 entity=Entity(namespace="shop", kind="Pod", name=name), message="Back-off restarting failed container")


def test_one_function_gives_every_library_the_same_security(tls, monkeypatch):
    from core.kafkaclient import Bootstrap

    b = Bootstrap("127.0.0.1:1,127.0.0.2:1", scram(tls, "SCRAM-SHA-256"))
    kp, ak, fa = (client_config(b, f) for f in ("kafka-python", "aiokafka", "faust"))
    assert kp["security_protocol"] == ak["security_protocol"] == "SASL_SSL"
    assert kp["sasl_plain_password"] == PASSWORD and kp["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kp["ssl_context"].check_hostname and kp["ssl_context"].verify_mode.name == "CERT_REQUIRED"
    assert fa["broker"] == "kafka://127.0.0.1:1;kafka://127.0.0.2:1"
    assert fa["broker_credentials"].password == PASSWORD and fa["broker_credentials"].protocol.value == "SASL_SSL"
    assert PASSWORD not in repr(fa["broker_credentials"]) and PASSWORD not in repr(b.security)
    monkeypatch.setenv("KS_TEST_KAFKA_PW", "from-env")
    env = Bootstrap("h:1", KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", username="u",
                                         password_env="KS_TEST_KAFKA_PW"))
    assert client_config(env, "aiokafka")["sasl_plain_password"] == "from-env" and \
        "ssl_context" not in client_config(env, "aiokafka")


def test_settings_reject_inconsistent_security(tmp_path):
    from core.yamlconfig import ConfigError

    f = tmp_path / "settings.yaml"
    f.write_text("kafka: k:9093\nkafka_security:\n  protocol: SASL_SSL\n  sasl_mechanism: SCRAM-SHA-256\n")
    with pytest.raises(ConfigError) as err:
        Settings.load(f)
    assert "protocol SASL_SSL needs username, password_file or password_env" in str(err.value)
    f.write_text("kafka: k:9093\nkafka_security:\n  protocol: PLAINTEXT\n  ca_file: /x.pem\n")
    with pytest.raises(ConfigError) as err:
        Settings.load(f)
    assert "ca_file only apply to SSL or SASL_SSL, not PLAINTEXT" in str(err.value)


def test_sinks_and_the_hot_path_over_sasl_ssl(secure_settings):
    from streams.hotpath import Pipeline, TransactionalProcessor
    from streams.stages import RulePacks, RulesStage

    s = secure_settings
    bootstrap = bootstrap_for(s)
    sink = KafkaSink(bootstrap, s.topic, transactional_id=f"{s.app_id}-sink")  # kafka-python, transactional
    sink.begin()
    sink.send(event("web-1", 1000.0))
    sink.commit()
    sink.close()

    async def run() -> dict:
        intake = AsyncKafkaSink(bootstrap, s.topic)  # aiokafka
        await intake.start()
        try:
            await intake.send_all([event("web-2", 1001.0)])
        finally:
            await intake.stop()
        proc = TransactionalProcessor(s, bootstrap, "signals", ["events", "samples"],
                                      Pipeline([RulesStage(RulePacks(s).holder)]), worker_id="sasl")
        await proc.start()
        try:
            await until(lambda: proc.stats["in"] >= 2 and proc.stats["commits"] > 0, lambda: proc.stats)
        finally:
            await proc.stop()
        return proc.stats

    stats = asyncio.run(run())
    assert stats["in"] == 2 and stats["deadletter"] == 0
    deadline = time.monotonic() + 20
    while len(alerts := [orjson.loads(r.value) for r in read_to_end(bootstrap, s.topic("alerts"))]) < 2:
        assert time.monotonic() < deadline, alerts
        time.sleep(0.2)
    assert sorted(a["labels"]["pod"] for a in alerts) == ["web-1", "web-2"]
    assert {a["labels"]["alertname"] for a in alerts} == {"KubeBackOff"}


def test_plain_and_scram_256_logins_work(secure_broker, tls):
    from core.broker import check_reachable
    from core.kafkaclient import Bootstrap

    for sec in (scram(tls, "PLAIN"), scram(tls, "SCRAM-SHA-256"), scram(tls, "SCRAM-SHA-512")):
        check_reachable(Bootstrap(secure_broker.secure_bootstrap, sec))  # raises if refused


def test_a_plain_login_is_not_in_the_debug_log(secure_broker, tls, caplog):
    """kafka-python and aiokafka log a SASL login's bytes at DEBUG (PLAIN: the password in clear); an audit found
    35 such lines in `kubesight worker --loglevel debug`. The command's filters drop them."""
    import asyncio
    import logging

    from aiokafka import AIOKafkaProducer
    from kafka import KafkaConsumer

    from core.kafkaclient import Bootstrap, client_config, quiet_startup_noise

    quiet_startup_noise()
    caplog.set_level(logging.DEBUG)
    boot = Bootstrap(secure_broker.secure_bootstrap, scram(tls, "PLAIN"))
    KafkaConsumer(**client_config(boot, "kafka-python")).topics()

    async def aio():
        p = AIOKafkaProducer(**client_config(boot, "aiokafka"))
        await p.start()
        await p.stop()

    asyncio.run(aio())
    assert caplog.records and [(r.name, r.getMessage()[:80]) for r in caplog.records if PASSWORD in r.getMessage()] == []


def _cli_with(tmp_path: Path, bootstrap: str, security: dict) -> subprocess.CompletedProcess:
    """``collect replay`` with these settings; the timeout guards against a command that never stops, it is no
    measure of how soon the command should stop (the line it says shows which check stopped it)."""
    import yaml

    cfg = tmp_path / "settings.yaml"
    cfg.write_text(yaml.safe_dump({"kafka": bootstrap, "kafka_security": security,
                                   "topic_prefix": f"bad{uuid.uuid4().hex[:6]}-"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
    return subprocess.run([sys.executable, "-m", "kubesight.cli", "--config", str(cfg), "collect", "replay"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=REPO)


@pytest.mark.parametrize("case, expect", [
    ("wrong password", "SASL SCRAM-SHA-512 authentication of user 'alice' failed: Authentication failed during "
                       "authentication due to invalid credentials"),
    ("unknown CA", "TLS: the broker's certificate is not trusted (unable to get local issuer certificate); "
                   "set kafka_security.ca_file to the CA that signed it"),
    ("plaintext client", "a TLS listener? set kafka_security.protocol to SSL or SASL_SSL"),
    ("missing password file", "settings.yaml:5: kafka_security.password_file: no such file"),  # at load, its line
])
def test_each_misconfiguration_is_one_line_within_seconds(secure_broker, tls, tmp_path, case, expect):
    good = scram(tls).model_dump(exclude_none=True)
    security = {
        "wrong password": {**good, "password_file": str(tls["wrong"])},
        "unknown CA": {**good, "ca_file": str(tls["other_ca"])},
        "plaintext client": {"protocol": "PLAINTEXT"},
        "missing password file": {**good, "password_file": str(tmp_path / "nope")},
    }[case]
    res = _cli_with(tmp_path, secure_broker.secure_bootstrap, security)
    lines = res.stderr.strip().splitlines()
    # the line is the start-up check's diagnosis (or the settings' at load), so no client was left retrying
    assert res.returncode != 0, (res.returncode, res.stderr)
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert expect in lines[0], lines[0]
    if case != "missing password file":  # that one is said when the settings load, before any connection
        assert secure_broker.secure_bootstrap in lines[0], lines[0]
    assert PASSWORD not in res.stderr + res.stdout and "not-the-password" not in res.stderr + res.stdout


def test_every_kafka_client_in_the_code_is_built_through_client_config():
    """A new client built without ``**client_config(...)`` would ignore kafka_security: caught here."""
    import ast

    clients = {"KafkaProducer", "KafkaConsumer", "KafkaAdminClient", "AIOKafkaProducer", "AIOKafkaConsumer", "App"}
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True).stdout.split()
    bad, seen = [], 0
    for rel in tracked:
        if rel.startswith(("tests/", ".")) or not (REPO / rel).exists():
            continue
        for node in ast.walk(ast.parse((REPO / rel).read_text(), rel)):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name not in clients or (name == "App" and not (isinstance(f, ast.Attribute) and
                                                              getattr(f.value, "id", None) == "faust")):
                continue
            seen += 1
            if not any(k.arg is None and isinstance(k.value, ast.Call) and getattr(k.value.func, "id", None) ==
                       "client_config" for k in node.keywords):
                bad.append(f"{rel}:{node.lineno}: {name}(...) without **client_config(bootstrap, flavour)")
    assert seen >= 20 and not bad, "\n".join(bad)
