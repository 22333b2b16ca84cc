"""Where collectors put what they read: Kafka, with acks=all and an idempotent producer.

``KafkaSink`` (kafka-python, synchronous) serves the thread-based collectors (Kubernetes,
kernel, replay); ``AsyncKafkaSink`` (aiokafka) serves the HTTP intakes, which must await the
broker's acknowledgement before answering 2xx.  Both send bad input to the dead-letter topic
with its reason instead of dropping it.  ``StdoutSink`` prints JSON lines (``--stdout``).
"""

from __future__ import annotations

import sys

from core.records import Event, Record, Sample, deadletter, deadletter_key, encode, oversize


def _topic_of(rec: Record) -> str:
    return "events" if isinstance(rec, Event) else "samples" if isinstance(rec, Sample) else "alerts"


class KafkaSink:
    def __init__(self, bootstrap: str, topic, client_id: str = "kubesight-collector", linger_ms: int = 5,
                 transactional_id: str | None = None):
        """``topic`` maps a logical name (events, samples, deadletter, checkpoints) to the real topic.

        With a ``transactional_id`` the producer is transactional: ``begin()``, sends, ``commit()``
        make a batch of records, its dead letters and the checkpoint that accounts for them visible
        to ``read_committed`` readers together; a restarted collector with the same id fences its
        predecessor and aborts the predecessor's open transaction.
        """
        from kafka import KafkaProducer

        from core.kafkaclient import client_config

        self.topic = topic
        extra = {"transactional_id": transactional_id, "batch_size": 256 * 1024,
                 "transaction_timeout_ms": 300_000} if transactional_id else {}
        self.producer = KafkaProducer(**client_config(bootstrap, "kafka-python"), acks="all", enable_idempotence=True,
                                      linger_ms=linger_ms, client_id=client_id, retries=2**31 - 1,
                                      max_in_flight_requests_per_connection=5, **extra)
        self.sent = 0
        self.dead = 0
        if transactional_id:
            self.producer.init_transactions()

    def begin(self) -> None:
        self.producer.begin_transaction()

    def commit(self) -> None:
        self.producer.commit_transaction()

    def abort(self) -> None:
        self.producer.abort_transaction()

    def send(self, rec: Record):
        topic, value, key = self.topic(_topic_of(rec)), encode(rec), rec.key()
        why = oversize(key, value)
        if why is not None:  # kafka-python would raise MessageSizeTooLargeError, and the broker refuse it
            return self.reject(why, value, origin="collector", key=key, topic=topic)
        self.sent += 1
        return self.producer.send(topic, value, key=key)

    def send_raw(self, logical: str, key: bytes | None, value: bytes | None):
        return self.producer.send(self.topic(logical), value, key=key)

    def reject(self, reason: str, payload, *, origin: str, key: bytes | None = None, **where):
        self.dead += 1
        return self.producer.send(self.topic("deadletter"), deadletter(reason, payload, origin=origin, key=key, **where),
                                  key=deadletter_key(key))

    def flush(self, timeout: float | None = None) -> None:
        self.producer.flush(timeout)

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()


class AsyncKafkaSink:
    def __init__(self, bootstrap: str, topic, client_id: str = "kubesight-intake"):
        from aiokafka import AIOKafkaProducer

        from core.kafkaclient import client_config

        self.topic = topic
        self.producer = AIOKafkaProducer(**client_config(bootstrap, "aiokafka"), acks="all", enable_idempotence=True,
                                         linger_ms=2, client_id=client_id, request_timeout_ms=10000)
        self.sent = 0
        self.dead = 0

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def send_all(self, recs: list[Record]) -> None:
        """Send and wait for every acknowledgement (raises if Kafka did not take them)."""
        import asyncio

        futs, dead = [], 0
        for r in recs:
            topic, value, key = self.topic(_topic_of(r)), encode(r), r.key()
            why = oversize(key, value)
            if why is not None:  # aiokafka would raise MessageSizeTooLargeError, and the broker refuse it
                dead += 1
                topic, value = self.topic("deadletter"), deadletter(why, value, origin="collector", key=key,
                                                                    topic=topic)
                key = deadletter_key(key)
            futs.append(await self.producer.send(topic, value, key=key))
        if futs:
            await asyncio.gather(*futs)
        self.sent += len(recs) - dead
        self.dead += dead

    async def reject(self, reason: str, payload, *, origin: str, key: bytes | None = None, **where) -> None:
        await self.producer.send_and_wait(self.topic("deadletter"),
                                          deadletter(reason, payload, origin=origin, key=key, **where),
                                          key=deadletter_key(key))
        self.dead += 1


class StdoutSink:
    """Prints records as JSON lines and rejects as ``# deadletter: reason`` lines on stderr."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.sent = 0
        self.dead = 0

    def send(self, rec: Record):
        self.out.write(encode(rec).decode() + "\n")
        self.sent += 1

    def reject(self, reason: str, payload, *, origin: str, key=None, **where):
        print(f"# deadletter ({origin}): {reason} {where or ''}", file=sys.stderr)
        self.dead += 1

    def flush(self, timeout=None) -> None:
        self.out.flush()

    def close(self) -> None:
        self.flush()
