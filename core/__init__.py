"""kubesight's base layer: the vocabulary every other package shares; imports nothing of ours.

records (wire records and codec), settings, topics, broker (resolution and the local broker),
durations (Prometheus grammar), matchers (Alertmanager semantics, RE2), retry (the one capped backoff), httpauth (basic_auth, authorization and their
``*_file`` secrets), yamlconfig (the strict
config loader).
"""
