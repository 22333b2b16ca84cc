"""The topics, declared once: names, partition counts, cleanup policies; created idempotently.

| topic | key | value | policy |
|---|---|---|---|
| events | entity key (workload, object or node) | Event | delete, 7 d |
| samples | series key (name + sorted labels) | Sample | delete, 1 d |
| alerts | fingerprint | Alert (every transition) | delete, 7 d |
| deadletter | original key | {v, kind: deadletter, reason, origin, where (topic, partition, offset, file, url ...), key, payload, encoding, time} | delete, 14 d |
| state-changelog | store key | JSON snapshot (partition p = input partition p) | compact |
| checkpoints | collector id | collector resume point | compact |
| silences | silence id | Silence | compact |
| rules | pack name | rule pack YAML | compact |
| alert-groups | group key | alerts re-keyed by their routing group (alerting) | delete, 7 d |
| notifications | group key | pending notifications (alerting) | delete, 7 d |
| alerting-changelog | store key | the alerting pipeline's partitioned state | compact |
| actions | node | every remediation step, refusal, condition and event, with its alert (the audit trail; the remediator's state) | delete, 90 d |
"""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings

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
)


def ensure_topics(settings: Settings, bootstrap: str) -> list[str]:
    """Create every kubesight topic that does not exist yet; returns the names created.

    Raises ``core.broker.KafkaUnreachable`` within seconds when no bootstrap server answers."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from core.broker import check_reachable
    from core.kafkaclient import client_config

    check_reachable(bootstrap)
    admin = KafkaAdminClient(**client_config(bootstrap, "kafka-python"), client_id=f"{settings.app_id}-admin")
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(settings.topic(s.name), settings.partitions if s.partitioned else 1, 1,
                     topic_configs=dict(s.config))
            for s in SPECS
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
