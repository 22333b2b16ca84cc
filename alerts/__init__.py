"""Alerting: lifecycle, grouping, dedup, inhibition, silences, routing to owners, receivers."""
