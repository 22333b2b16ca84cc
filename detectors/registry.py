"""Detectors by name: build from (name, params), restore from a snapshot, list what exists."""

from __future__ import annotations

from typing import Any

from detectors.base import Detector, build_from
from detectors.mahalanobis import Mahalanobis
from detectors.novelty import RangeNovelty
from detectors.onset import Onset
from detectors.seasonal import Seasonal
from detectors.zscore import ZScore

# name -> class; the default univariate configuration is Onset with its default parameters
CLASSES: dict[str, type[Detector]] = {
    c.name: c for c in (RangeNovelty, ZScore, Seasonal, Onset, Mahalanobis)
}
DEFAULT = "onset"


def names() -> list[str]:
    """Registered detector names, sorted."""
    return sorted(CLASSES)


def build(name: str, params: dict[str, Any] | None = None) -> Detector:
    """A new detector; ValueError (listing what is valid) on an unknown name or bad params.

    >>> build("zscore", {"alpha": 0.05}).alpha
    0.05
    >>> build("zscor", {})
    Traceback (most recent call last):
    ...
    ValueError: unknown detector 'zscor'; known: mahalanobis, novelty, onset, seasonal, zscore
    """
    return build_from(CLASSES, name, params)


def restore(snapshot: dict[str, Any]) -> Detector:
    """Rebuild a detector from ``Detector.snapshot()`` (or its JSON round trip): name and params are inside."""
    if not isinstance(snapshot, dict) or "detector" not in snapshot:
        raise ValueError("not a detector snapshot (expected a dict with 'detector', 'params', 'state')")
    d = build(snapshot["detector"], snapshot.get("params", {}))
    d._load(snapshot["state"])
    return d
