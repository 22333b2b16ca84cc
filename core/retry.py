"""Exponential backoff with full jitter, written once for every retry loop (receivers, watches, remediation).

Try ``attempt`` (0 for the first retry) waits up to ``base * 2**attempt``, never more than ``cap``.  The exponent
stops growing at 1023: ``2**1024`` is past the largest float, and a retry loop that kept failing for that long (a
receiver down for days) raised ``OverflowError`` there instead of waiting ``cap``; the caller that caught it began
again at attempt 0, so its retry budget never ran out.  Past that exponent the product is larger than any cap
(or ``inf``), so capping it changes no wait.

>>> import random
>>> backoff(0, 1.0, 60.0, None), backoff(3, 1.0, 60.0, None), backoff(10_000, 1.0, 60.0, None)
(1.0, 8.0, 60.0)
>>> all(0 <= backoff(a, 0.5, 30.0, random.Random(a)) <= min(30.0, 0.5 * 2**a) for a in range(12))
True
>>> 0 <= backoff(10**6, 0.001, 60.0, random.Random(1)) <= 60.0
True
"""

from __future__ import annotations

import random

_MAX_EXPONENT = 1023  # 2.0**1023 is the largest power of two a float holds


def backoff(attempt: int, base: float, cap: float, rng=random) -> float:
    """Seconds to wait before retry ``attempt``: uniform in [0, min(cap, base * 2**attempt)] (full jitter).

    ``rng`` is anything with ``uniform`` (a seeded ``random.Random`` in tests); ``None`` gives the ceiling itself,
    for a schedule that must be the same every time (the remediator writes its ``retry_in`` into the trail and
    rebuilds the retry from it after a restart)."""
    ceiling = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    return ceiling if rng is None else rng.uniform(0, ceiling)
