"""``group_lag`` counts records, not offsets: commit markers and aborted records of transactional topics are not lag."""

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from streams.cli_run import group_lag
from tests.kafkatools import write_transaction

pytestmark = pytest.mark.kafka


def _consume_all_and_commit(bootstrap: str, topic: str, group: str) -> int:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                      isolation_level="read_committed", auto_offset_reset="earliest")
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        end = c.end_offsets([tp])[tp]
        last = -1
        while c.position(tp) < end:
            for recs in c.poll(timeout_ms=500).values():
                last = max([last] + [m.offset for m in recs])
        # as the worker does: the offset after the last record it processed (not past the marker after it)
        c.commit({tp: OffsetAndMetadata(last + 1, "", -1)})
        return c.committed(tp)
    finally:
        c.close()


def test_lag_reaches_zero_on_a_transactional_topic_and_counts_only_data_records(settings):
    boot, topic, group = settings.kafka, settings.topic("events"), f"{settings.app_id}-lag"
    for _ in range(3):
        write_transaction(boot, topic, [b"{}"] * 5, tid=f"lag-test-{topic}")
    committed = _consume_all_and_commit(boot, topic, group)
    c = KafkaConsumer(bootstrap_servers=boot)
    end = c.end_offsets([TopicPartition(topic, 0)])[TopicPartition(topic, 0)]
    c.close()
    assert end > committed  # the last commit marker takes an offset: an offset count never reaches 0
    assert group_lag(boot, group, [topic]) == 0

    write_transaction(boot, topic, [b"{}"] * 2, commit=False, tid=f"lag-test-{topic}")  # aborted: never readable, not lag
    write_transaction(boot, topic, [b"{}"] * 3, tid=f"lag-test-{topic}")
    assert group_lag(boot, group, [topic]) == 3
    assert group_lag(boot, group, [topic], exact_below=0) > 3  # the offset gap, when too large to read
