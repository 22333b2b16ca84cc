"""The runtime: Faust app, topics, wire records, the hot path that wires detectors, rules and alerts, and the CLI."""
