"""The vendored real series (NAB ambient_temperature_system_failure) as a one-file NAB-layout folder."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent / "data"
KEY = "realKnownCause/ambient_temperature_system_failure.csv"


def nab_folder(root: Path) -> Path:
    """Write data/<KEY> and labels/combined_windows.json under ``root``; returns ``root``."""
    target = root / "data" / KEY
    target.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(HERE / "ambient_temperature_system_failure.csv.gz", "rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    (root / "labels").mkdir(exist_ok=True)
    shutil.copy(HERE / "ambient_temperature_system_failure.windows.json", root / "labels" / "combined_windows.json")
    return root
