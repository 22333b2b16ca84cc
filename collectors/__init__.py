"""Collectors: read a source (Kubernetes, kernel log, cloud events, metrics, recorded files) and produce records to Kafka."""
