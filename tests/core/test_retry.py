"""core.retry.backoff, the one backoff of every retry loop: bounded however long the loop has failed."""

import random

import pytest

from core.retry import backoff


@pytest.mark.parametrize("attempt", [0, 1, 10, 1023, 1024, 1025, 10**6])
def test_full_jitter_within_the_ceiling_at_any_attempt(attempt):
    """2**1024 overflowed a float: the receivers' copy raised OverflowError at attempt 1,024."""
    ceiling = min(60.0, 1.0 * 2 ** min(attempt, 1023))
    waits = [backoff(attempt, 1.0, 60.0, random.Random(seed)) for seed in range(20)]
    assert all(0 <= w <= ceiling for w in waits) and len(set(waits)) > 1


@pytest.mark.parametrize("attempt, expected", [(0, 10.0), (1, 20.0), (4, 160.0), (5, 300.0), (1024, 300.0),
                                               (10**6, 300.0)])
def test_without_jitter_the_ceiling_itself(attempt, expected):
    """rng None: the remediator's schedule (10 s doubling up to 300 s), the same after a restart."""
    assert backoff(attempt, 10.0, 300.0, rng=None) == expected


def test_a_huge_base_gives_the_cap():
    assert backoff(2000, 1e300, 5.0, rng=None) == 5.0
