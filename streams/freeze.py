"""Noticing that this process was frozen long enough to have lost its partitions.

A consumer group member that stops answering heartbeats for its session timeout is removed and its
partitions go to another member.  A process that was frozen that long (SIGSTOP, a paused VM or
container, a loop blocked by a stall) resumes with partitions it may no longer own: aiokafka has no
group-generation check on a transaction's offsets (KIP-447) and the delivery lanes send what they had
queued, so the first milliseconds after such a freeze re-did what the new owner had already done
(an audit measured 37-88 duplicate notifications per 20 s stall of a two-worker setup).

``FreezeWatch`` is beaten every ``every`` seconds by a task of the process; a gap longer than
``limit`` (the session timeout less two heartbeats: shorter freezes cannot lose the membership) puts
it *in doubt* for ``hold`` seconds (three heartbeats: enough for the consumer's heartbeat to learn
that the group moved on and revoke the partitions).  While in doubt, a transaction waits and delivery
lanes wait; a revocation that comes meanwhile drops the uncommitted work instead of committing it
(the new owner redoes it from the last commit); after the doubt, whatever still owns a partition goes
on.  A loop that was merely blocked as long (a false alarm) only commits and sends a few seconds late.
A caller that looks before the task has run sees the gap itself.  The clock is Linux's ``CLOCK_BOOTTIME``, which
counts the time the machine was suspended (``time.monotonic`` stops then: a whole suspended VM went unnoticed while
its Kafka session expired all the same); elsewhere ``time.monotonic``.

>>> t = [0.0]
>>> w = FreezeWatch(limit=4.0, hold=3.0, clock=lambda: t[0])
>>> t[0] = 1.0; w.beat(); w.in_doubt()
False
>>> t[0] = 21.0; w.in_doubt()  # frozen for 20 s, the beating task has not run yet
True
>>> w.beat(); t[0] = 23.9; w.in_doubt()
True
>>> t[0] = 24.1; w.in_doubt()
False
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

# seconds that go on while the machine is suspended (a VM paused and resumed, a laptop's sleep)
CLOCK: Callable[[], float] = (functools.partial(time.clock_gettime, time.CLOCK_BOOTTIME)
                              if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic)


class FreezeWatch:
    def __init__(self, limit: float, hold: float, clock: Callable[[], float] = CLOCK):
        self.limit, self.hold, self.clock = limit, hold, clock
        self._last = clock()
        self._doubt_until = 0.0
        self.freezes = 0  # freezes noticed (self-metrics and tests)

    @classmethod
    def for_session(cls, session_timeout: float, heartbeat: float) -> FreezeWatch:
        return cls(limit=max(heartbeat, session_timeout - 2 * heartbeat), hold=3 * heartbeat)

    def _gap(self, now: float) -> None:
        if now - self._last > self.limit and now + self.hold > self._doubt_until:
            if self._doubt_until <= self._last:
                self.freezes += 1
            self._doubt_until = now + self.hold

    def beat(self) -> None:
        now = self.clock()
        self._gap(now)
        self._last = now

    def doubt(self, seconds: float) -> float:
        """In doubt for ``seconds`` from now, as after a freeze (tests; 0 ends a doubt); when it ends, on ``clock``."""
        self._doubt_until = self.clock() + seconds
        return self._doubt_until

    def in_doubt(self) -> bool:
        now = self.clock()
        self._gap(now)
        return now < self._doubt_until

    async def run(self, every: float = 0.25) -> None:
        """Beat until cancelled (a task of the process that owns the consumer); the time before it starts is not a
        freeze (a service waiting for Kafka at start-up)."""
        self._last = self.clock()
        while True:
            self.beat()
            await asyncio.sleep(every)
