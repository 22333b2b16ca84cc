"""Topics fit for a real cluster (issue 19 #2), on a local 3-broker KRaft cluster (marked three_brokers).

Three JVMs of 256 MB start with the module (~15 s); the tests create kubesight's topics replicated
and check existing ones against core.topics' specs: a changelog that is not compacted and a partition
count that breaks co-partitioning are errors naming the topic and the fix, other differences warnings.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

from core import broker as launcher
from core.settings import Settings
from core.topics import SPECS, TopicMismatch, ensure_topics

pytestmark = [pytest.mark.kafka, pytest.mark.three_brokers]


@pytest.fixture(scope="module")
def cluster():
    nodes = launcher.start_cluster(f"pytest-3b-{os.getpid()}", nodes=3, heap_mb=256)
    bootstrap = ",".join(b.bootstrap for b in nodes)
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        deadline = time.monotonic() + 60
        while len(admin.describe_cluster()["brokers"]) < 3:  # every node registered and unfenced
            assert time.monotonic() < deadline, admin.describe_cluster()
            time.sleep(0.3)
        yield bootstrap, admin
        admin.close()
    finally:
        launcher.stop_cluster(nodes)


def visible_everywhere(bootstrap: str, topics: list[str], timeout: float = 30.0) -> None:
    """Wait until every broker's metadata lists ``topics``: a topic just created is known to the controller
    first, and ensure_topics' own admin client may ask a broker that has not heard of it yet."""
    deadline = time.monotonic() + timeout
    for addr in bootstrap.split(","):
        a = KafkaAdminClient(bootstrap_servers=addr)
        try:
            while not set(topics) <= set(a.list_topics()):
                assert time.monotonic() < deadline, f"{addr} does not list {topics}"
                time.sleep(0.2)
        finally:
            a.close()


def replicas(admin, topics: list[str]) -> set[int]:
    """Replica counts of every partition of ``topics``, once their metadata has reached the broker asked."""
    deadline = time.monotonic() + 15
    while True:
        described = admin.describe_topics(topics)
        if all(t["partitions"] for t in described) and len(described) == len(topics):
            return {len(p["replica_nodes"]) for t in described for p in t["partitions"]}
        assert time.monotonic() < deadline, described
        time.sleep(0.2)


def settings_for(bootstrap: str, **kw) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(kafka=bootstrap, topic_prefix=f"t{tag}-", app_id=f"ks-{tag}", partitions=4, **kw)


def test_new_topics_are_replicated_three_times_with_min_insync_two(cluster):
    bootstrap, admin = cluster
    s = settings_for(bootstrap)
    warnings = []
    created = ensure_topics(s, bootstrap, warn=warnings.append)
    assert sorted(created) == sorted(s.topic(spec.name) for spec in SPECS) and warnings == []
    assert replicas(admin, created) == {3}
    conf = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in created])["topic"]
    assert {c["min.insync.replicas"]["value"] for c in conf.values()} == {"2"}
    assert conf[s.topic("state-changelog")]["cleanup.policy"]["value"] == "compact"
    assert conf[s.topic("events")]["cleanup.policy"]["value"] == "delete"  # set, whatever the cluster's default
    assert ensure_topics(s, bootstrap, warn=warnings.append) == [] and warnings == []  # checked, all as declared


def test_configured_replication_and_a_factor_above_the_brokers(cluster):
    bootstrap, admin = cluster
    s = settings_for(bootstrap, replication_factor=2, min_insync_replicas=1)
    created = ensure_topics(s, bootstrap)
    assert replicas(admin, created) == {2}
    with pytest.raises(TopicMismatch) as err:
        ensure_topics(settings_for(bootstrap, replication_factor=5), bootstrap)
    assert str(err.value) == "replication_factor 5 needs 5 brokers; the cluster has 3"


def test_existing_topics_that_break_state_are_errors_others_warnings(cluster):
    bootstrap, admin = cluster
    s = settings_for(bootstrap)
    admin.create_topics([
        NewTopic(s.topic("state-changelog"), 4, 3, topic_configs={"cleanup.policy": "delete"}),  # not compacted
        NewTopic(s.topic("samples"), 3, 3),  # breaks co-partitioning with events (4)
        NewTopic(s.topic("alerts"), 4, 1),  # under-replicated: a warning
    ])
    assert replicas(admin, [s.topic(n) for n in ("state-changelog", "samples", "alerts")]) == {1, 3}
    visible_everywhere(bootstrap, [s.topic(n) for n in ("state-changelog", "samples", "alerts")])
    warnings = []
    with pytest.raises(TopicMismatch) as err:
        ensure_topics(s, bootstrap, warn=warnings.append)
    errors = err.value.errors
    assert len(errors) == 2, errors
    assert errors[0].startswith(f"topic {s.topic('samples')}: 3 partitions but partitions is 4") or \
        errors[1].startswith(f"topic {s.topic('samples')}: 3 partitions but partitions is 4")
    changelog = next(e for e in errors if s.topic("state-changelog") in e)
    assert "cleanup.policy is delete" in changelog and \
        f"--entity-name {s.topic('state-changelog')} --add-config cleanup.policy=compact" in changelog
    samples = next(e for e in errors if s.topic("samples") in e)
    assert "co-partitioning" in samples and "set partitions: 3" in samples
    assert any(w.startswith(f"topic {s.topic('alerts')}: replication factor 1 < 3") for w in warnings), warnings
    assert s.topic("events") not in set(admin.list_topics())  # nothing created while the existing ones are wrong
