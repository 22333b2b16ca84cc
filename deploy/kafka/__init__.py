"""A real single-node Apache Kafka 4.x (KRaft, broker+controller) on 127.0.0.1, fetched from Maven Central."""
