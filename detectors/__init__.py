"""Online anomaly detectors: pure, per-series, bounded memory, snapshot/restore."""
