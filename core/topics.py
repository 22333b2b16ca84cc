"""The topics, declared once: names, partition counts, cleanup policies; created idempotently.

| topic | key | value | policy |
|---|---|---|---|
| events | entity key (workload, object or node) | Event | delete, 7 d |
| samples | series key (name + sorted labels) | Sample | delete, 1 d |
| alerts | fingerprint | Alert (every transition) | delete, 7 d |
| deadletter | original key | {v, kind: deadletter, reason, origin, where (topic, partition, offset, file, url ...), key, payload, encoding, time} | delete, 14 d |
| state-changelog | store key | compact JSON state (objects, or scalars such as a watermark), no `v` (partition p = input partition p) | compact |
| checkpoints | collector id | collector resume point: the collector's own JSON object, no `v` | compact |
| silences | silence id | Silence: Alertmanager's silence object (JSON), no `v` | compact |
| rules | pack name | rule pack YAML text (not JSON) | compact |
| alert-groups | group key | alerts re-keyed by their routing group (alerting) | delete, 7 d |
| notifications | group key | pending notifications (alerting) | delete, 7 d |
| alerting-changelog | store key | the alerting pipeline's partitioned state (JSON, no `v`) | compact |
| actions | cluster/node | every remediation step, refusal, condition and event, with its alert and `cluster` (the audit trail; the remediator's state; a remediator reads only its own cluster's) | delete, 90 d |
| incident-alerts | cluster | alerts re-keyed by cluster (incidents) | delete, 7 d |
| incidents | incident id | Incident: status, ranked root-cause candidates with evidence, blast radius, members (streams.incidents) | delete, 30 d |
| incidents-changelog | store key | the incident stage's partitioned state (JSON, no `v`) | compact |
| owners | `cluster/namespace` or `cluster/namespace/Pod/name` | {v, kind: owner, owner (team), workload, controller}: written by the Kubernetes collector, a tombstone when the pod is deleted; read whole by every worker (the team of alerts that do not name one) | compact |
| receiver-health | integration (`receiver/kind[i]`) | {v, kind: receiver-health, receiver, integration, state (ok, retrying, failing), since, attempts, reason}: written by delivery when an integration's state changes | compact |

tests/test_interop.py reads every topic with the real kcat (read_committed, zstd changelogs included) and
checks each value is what this table says.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.records import RECORD_LIMIT
from core.settings import Settings
from core.yamlconfig import ConfigError

DAY_MS = 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitioned: bool  # True: settings.partitions; False: 1 partition
    config: tuple[tuple[str, str], ...]


SPECS = (
    TopicSpec("events", True, (("retention.ms", str(7 * DAY_MS)),)),
    TopicSpec("samples", True, (("retention.ms", str(DAY_MS)),)),
    TopicSpec("alerts", True, (("retention.ms", str(7 * DAY_MS)),)),
    TopicSpec("deadletter", True, (("retention.ms", str(14 * DAY_MS)),)),
    # changelogs are stored zstd-compressed by the broker (~8x on their JSON); only the hot path reads them
    TopicSpec("state-changelog", True, (("cleanup.policy", "compact"), ("min.compaction.lag.ms", "60000"),
                                        ("compression.type", "zstd"))),
    TopicSpec("checkpoints", False, (("cleanup.policy", "compact"),)),
    TopicSpec("silences", False, (("cleanup.policy", "compact"),)),
    TopicSpec("rules", False, (("cleanup.policy", "compact"),)),
    TopicSpec("alert-groups", True, (("retention.ms", str(7 * DAY_MS)),)),  # alerts re-keyed by group key (alerting)
    TopicSpec("notifications", True, (("retention.ms", str(7 * DAY_MS)),)),  # pending notifications (alerting)
    TopicSpec("alerting-changelog", True, (("cleanup.policy", "compact"), ("min.compaction.lag.ms", "60000"),
                                           ("compression.type", "zstd"))),
    TopicSpec("actions", False, (("retention.ms", str(90 * DAY_MS)),)),  # remediation audit trail (streams.remediation)
    TopicSpec("incident-alerts", True, (("retention.ms", str(7 * DAY_MS)),)),  # alerts re-keyed by cluster (incidents)
    TopicSpec("incidents", True, (("retention.ms", str(30 * DAY_MS)),)),  # incident records (streams.incidents)
    TopicSpec("incidents-changelog", True, (("cleanup.policy", "compact"), ("min.compaction.lag.ms", "60000"),
                                            ("compression.type", "zstd"))),
    TopicSpec("owners", False, (("cleanup.policy", "compact"),)),  # who owns a namespace, a pod (streams.owners)
    TopicSpec("receiver-health", False, (("cleanup.policy", "compact"),)),  # delivery's view of each integration
)


class TopicMismatch(ConfigError):
    """Existing topics kubesight cannot run on as they are; one line per topic, each naming the fix."""


def replication(settings: Settings, brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for new topics on a cluster of ``brokers``.

    >>> replication(Settings(), 1), replication(Settings(), 3), replication(Settings(), 5)
    ((1, 1), (3, 2), (3, 2))
    >>> replication(Settings(replication_factor=2, min_insync_replicas=2), 3)
    (2, 2)
    """
    rf = settings.replication_factor or min(3, brokers)
    if rf > brokers:
        raise TopicMismatch([f"replication_factor {rf} needs {rf} brokers; the cluster has {brokers}"])
    return rf, min(settings.min_insync_replicas or 2, rf)


def replication_of(settings: Settings, bootstrap: str) -> tuple[int, int]:
    """``replication`` for the cluster at ``bootstrap`` (asked for its broker count unless settings fix the factor)."""
    if settings.replication_factor is not None:
        return replication(settings, settings.replication_factor)
    from kafka.admin import KafkaAdminClient

    from core.kafkaclient import client_config

    admin = KafkaAdminClient(**client_config(bootstrap, "kafka-python"), client_id=f"{settings.app_id}-admin")
    try:
        return replication(settings, len(admin.describe_cluster()["brokers"]))
    finally:
        admin.close()


def check_existing(settings: Settings, spec: TopicSpec, partitions: int, replicas: int, config: dict,
                   rf: int, min_isr: int) -> tuple[list[str], list[str]]:
    """(errors, warnings) for one existing topic against its spec; ``config``: its effective settings."""
    name, errors, warnings = settings.topic(spec.name), [], []
    want = dict(spec.config)
    policy = config.get("cleanup.policy", "delete")
    policies = {p.strip() for p in policy.split(",")}
    fix = f"fix: kafka-configs.sh --alter --entity-type topics --entity-name {name} --add-config cleanup.policy="
    if want.get("cleanup.policy") == "compact" and policies != {"compact"}:  # compact,delete deletes state too
        errors.append(f"topic {name}: cleanup.policy is {policy}, kubesight keeps state in it and needs compact "
                      f"alone; {fix}compact")
    elif "cleanup.policy" not in want and "compact" in policies:  # a log, a trail: compaction keeps one per key
        errors.append(f"topic {name}: cleanup.policy is {policy}, kubesight keeps every record of it (compaction "
                      f"keeps one per key and refuses records without one); {fix}delete")
    expected = settings.partitions if spec.partitioned else 1
    if partitions != expected:
        if spec.partitioned:  # inputs, changelogs and re-keyed topics are co-partitioned: partition p with p
            errors.append(f"topic {name}: {partitions} partitions but partitions is {expected}; its partitions "
                          f"must match the other partitioned topics (co-partitioning); fix: set partitions: "
                          f"{partitions} in settings if every partitioned topic has {partitions}, else recreate it "
                          f"with {expected}")
        else:  # its readers (the remediator's trail, the collectors' checkpoints) read partition 0
            errors.append(f"topic {name}: {partitions} partitions, kubesight reads it from one partition and needs 1; "
                          f"fix: recreate it with 1 partition")
    if replicas < rf:
        warnings.append(f"topic {name}: replication factor {replicas} < {rf}: losing a broker loses it; fix: "
                        f"kafka-reassign-partitions.sh with {rf} replicas")
    isr = int(config.get("min.insync.replicas", "1"))
    if isr < min(min_isr, replicas):
        warnings.append(f"topic {name}: min.insync.replicas {isr} < {min(min_isr, replicas)}")
    for key, value in want.items():
        if key != "cleanup.policy" and key in config and config[key] != value:
            warnings.append(f"topic {name}: {key} is {config[key]}, kubesight declares {value}")
    limit = int(config.get("max.message.bytes", "1048588"))
    if limit < RECORD_LIMIT + 1024:  # a record and its batch's own bytes
        warnings.append(f"topic {name}: max.message.bytes {limit} is under the {RECORD_LIMIT} bytes of a record "
                        f"kubesight may write; larger ones are refused, and a worker writing one stops that partition "
                        f"until it is raised; fix: kafka-configs.sh --alter --entity-type topics --entity-name {name} "
                        f"--add-config max.message.bytes=1048588")
    if config.get("unclean.leader.election.enable") == "true":
        warnings.append(f"topic {name}: unclean.leader.election.enable is true: a replica out of sync may become "
                        f"leader and acknowledged (acks=all) writes may be lost")
    return errors, warnings


def ensure_topics(settings: Settings, bootstrap: str, warn=None, only: tuple[str, ...] | None = None) -> list[str]:
    """Create every kubesight topic that does not exist yet (replication factor and min.insync.replicas
    from settings, by default min(3, brokers) and 2), check the existing ones against their spec;
    returns the names created.  ``only``: these topics (logical names) alone.

    A compacted topic that is not compacted alone, a log compacted, a one-partition topic with more, or a
    partitioned topic whose partition count breaks co-partitioning, raises ``TopicMismatch`` naming every such
    topic and its fix; other differences (replication, min.insync.replicas, retention, unclean leader election)
    go to ``warn`` (default: one stderr line each).
    Raises ``core.broker.KafkaUnreachable`` within seconds when no bootstrap server answers."""
    import sys

    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from core.broker import check_reachable
    from core.kafkaclient import client_config

    warn = warn or (lambda line: print(f"kubesight: warning: {line}", file=sys.stderr, flush=True))
    check_reachable(bootstrap)
    admin = KafkaAdminClient(**client_config(bootstrap, "kafka-python"), client_id=f"{settings.app_id}-admin")
    try:
        rf, min_isr = replication(settings, len(admin.describe_cluster()["brokers"]))
        existing = set(admin.list_topics())
        specs = SPECS if only is None else [s for s in SPECS if s.name in only]
        ours = [s for s in specs if settings.topic(s.name) in existing]
        if ours:
            names = [settings.topic(s.name) for s in ours]
            described = {t["name"]: t for t in admin.describe_topics(names)}
            # every effective value (the broker's and the cluster's defaults too), not only the topic's overrides
            configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names],
                                             config_filter="all")["topic"]
            errors = []
            for s in ours:
                t = described[settings.topic(s.name)]
                conf = {k: v["value"] for k, v in configs.get(t["name"], {}).items()}
                errs, warns = check_existing(settings, s, len(t["partitions"]),
                                             min(len(p["replica_nodes"]) for p in t["partitions"]), conf, rf, min_isr)
                errors += errs
                for w in warns:
                    warn(w)
            if errors:
                raise TopicMismatch(errors)
        new = [
            NewTopic(settings.topic(s.name), settings.partitions if s.partitioned else 1, rf,
                     # a log or trail is deleted by time whatever the cluster's default policy (a compacting
                     # default would make kubesight refuse, at its next start, a topic it created itself)
                     topic_configs={"cleanup.policy": "delete", **dict(s.config), "min.insync.replicas": str(min_isr)})
            for s in specs
            if settings.topic(s.name) not in existing
        ]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in new]
    finally:
        admin.close()
