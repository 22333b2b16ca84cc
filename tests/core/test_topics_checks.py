"""An existing topic against kubesight's spec (core.topics.check_existing), without a broker: what an audit against a
real cluster found accepted in silence (2026-11-29)."""

from __future__ import annotations

from core.settings import Settings
from core.topics import SPECS, check_existing

S = Settings()
SPEC = {s.name: s for s in SPECS}


def check(name: str, config: dict, partitions: int | None = None):
    spec = SPEC[name]
    return check_existing(S, spec, partitions or (S.partitions if spec.partitioned else 1), 3, config, 3, 2)


def test_a_changelog_compacted_and_deleted_is_an_error():
    """compact,delete deletes state older than retention.ms: a restore would miss it."""
    errors, _ = check("state-changelog", {"cleanup.policy": "compact,delete", "min.insync.replicas": "2"})
    assert errors and "needs compact alone" in errors[0]
    assert check("state-changelog", {"cleanup.policy": "compact", "min.insync.replicas": "2"}) == ([], [])


def test_a_log_or_trail_compacted_is_an_error():
    """Compaction keeps one record per key (the 90-day actions trail, every event) and refuses records without a key
    (a dead letter of a keyless record: the hot path's transaction then failed)."""
    for name in ("events", "alerts", "actions", "deadletter"):
        errors, _ = check(name, {"cleanup.policy": "compact", "min.insync.replicas": "2"})
        assert errors and "cleanup.policy=delete" in errors[0], name


def test_a_one_partition_topic_with_more_is_an_error():
    """The remediator's trail and the collectors' checkpoints are read from partition 0: with 3 partitions a restart
    forgot two thirds of what was done (and the limits let a fourth node through)."""
    errors, _ = check("actions", {"min.insync.replicas": "2"}, partitions=3)
    assert errors == ["topic kubesight-actions: 3 partitions, kubesight reads it from one partition and needs 1; "
                      "fix: recreate it with 1 partition"]


def test_unclean_leader_election_is_a_warning():
    _, warnings = check("events", {"min.insync.replicas": "2", "unclean.leader.election.enable": "true"})
    assert any("unclean.leader.election.enable is true" in w for w in warnings)


def test_a_message_limit_under_a_records_size_is_a_warning():
    """A topic whose max.message.bytes is under kubesight's RECORD_LIMIT refuses records the worker sends (the
    transaction aborts and rewinds, again): said at start. The broker's default (1048588) passes."""
    _, warnings = check("alerts", {"min.insync.replicas": "2", "max.message.bytes": "524288"})
    assert any("max.message.bytes 524288 is under the 1000000 bytes" in w for w in warnings)
    assert check("alerts", {"min.insync.replicas": "2", "max.message.bytes": "1048588"}) == ([], [])
