"""Read a NAB-layout folder (data/<category>/<file>.csv + labels/combined_windows.json): the bench's only I/O."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from detectors.nab import Labelled


@dataclass
class Series:
    """One NAB file: its key (path relative to data/), epoch-second times, values and labels."""

    key: str
    times: list[float]
    values: list[float]
    labelled: Labelled


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.strip()).replace(tzinfo=UTC).timestamp()


def load(root: Path | str, labels: str = "combined_windows.json") -> list[Series]:
    """Every file listed in the labels file, in sorted key order; windows become row indices."""
    root = Path(root)
    lpath = root / "labels" / labels
    if not lpath.is_file():
        raise FileNotFoundError(f"{lpath}: no labels file (expected a NAB-layout folder)")
    windows = orjson.loads(lpath.read_bytes())
    out = []
    for key in sorted(windows):
        path = root / "data" / key
        if not path.is_file():
            raise FileNotFoundError(f"{path}: listed in {lpath.name} but missing")
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows or [c.strip() for c in rows[0][:2]] != ["timestamp", "value"]:
            raise ValueError(f"{path}: header must be 'timestamp,value'")
        stamps = [r[0].strip() for r in rows[1:] if r]
        values = [float(r[1]) for r in rows[1:] if r]
        times = [_epoch(s) for s in stamps]
        index = {t: i for i, t in reversed(list(enumerate(times)))}  # first occurrence wins, as in NAB
        wins = []
        for first, last in windows[key]:
            try:
                wins.append((index[_epoch(first)], index[_epoch(last)]))
            except KeyError:
                raise ValueError(f"{lpath.name}: {key}: window [{first}, {last}] does not match rows of the file") from None
        out.append(Series(key, times, values, Labelled(key, len(values), wins)))
    return out

