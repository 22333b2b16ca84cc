"""A ``KafkaSink`` whose producer is transactional: records, dead letters and checkpoint commit together.

Same sends and dead letters as ``collectors.sink.KafkaSink`` (acks=all, idempotent); only the
producer differs: it has a ``transactional.id``, so a batch of records and the checkpoint that
accounts for them become visible to ``read_committed`` consumers atomically, and a restarted
collector with the same id fences its predecessor and aborts its unfinished transaction.
"""

from __future__ import annotations

from collectors.sink import KafkaSink


class TransactionalSink(KafkaSink):
    def __init__(self, bootstrap: str, topic, transactional_id: str, client_id: str = "kubesight-collector-kubernetes",
                 linger_ms: int = 5):
        from kafka import KafkaProducer

        # KafkaSink.__init__ builds a non-transactional producer; build the transactional one instead.
        self.topic = topic
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                      transactional_id=transactional_id, linger_ms=linger_ms, client_id=client_id,
                                      retries=2**31 - 1, max_in_flight_requests_per_connection=5,
                                      batch_size=256 * 1024, transaction_timeout_ms=300_000)
        self.sent = 0
        self.dead = 0
        self.producer.init_transactions()  # fences a previous instance and aborts its open transaction

    def begin(self) -> None:
        self.producer.begin_transaction()

    def commit(self) -> None:
        self.producer.commit_transaction()

    def abort(self) -> None:
        self.producer.abort_transaction()
