"""onset with each family of members its --cv grids try (context, resonance, volatility): a snapshot restores
exactly (the run after a restore scores as the uninterrupted one) and stays under 4 KiB."""

from __future__ import annotations

import orjson
import pytest

from detectors import registry
from detectors.onset import (
    CONTEXT_MEMBERS,
    GRID_CONTEXT,
    GRID_RESONANCE,
    GRID_VOLATILITY,
    RESONANCE_MEMBERS,
    VOLATILITY_MEMBERS,
)
from tests.detectors.test_contract import run, stream


@pytest.mark.parametrize("members, weights", [
    (CONTEXT_MEMBERS, GRID_CONTEXT["weights"][0]),
    (RESONANCE_MEMBERS, GRID_RESONANCE["weights"][-1]),
    (VOLATILITY_MEMBERS, GRID_VOLATILITY["weights"][-1]),
], ids=["context", "resonance", "volatility"])
def test_onset_with_the_family_restores_exactly_and_stays_under_4_kib(members, weights):
    params = {"members": list(members), "weights": list(weights)}
    points = stream("onset", 3000)
    a = registry.build("onset", params)
    expected = run(a, points)
    assert len(orjson.dumps(a.snapshot())) <= 4096
    b = registry.build("onset", params)
    run(b, points[:1700])
    c = registry.restore(orjson.loads(orjson.dumps(b.snapshot())))
    assert run(c, points[1700:]) == expected[1700:]
