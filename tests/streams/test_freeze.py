"""After a freeze as long as the group session, delivery waits before it sends what it had queued (streams.freeze).

An audit stopped a delivery child for 20 s (SIGSTOP) with a second worker running: on SIGCONT its lanes sent,
within 40 ms, 37-59 notifications the other worker had delivered during the stall. The lane now waits while the
process is in doubt; the consumer's heartbeat revokes the partition meanwhile if the group moved on, and then
nothing is sent.
"""

from __future__ import annotations

import asyncio

from streams.alerting import Deliverer, Lane
from streams.freeze import FreezeWatch


class Owner:
    """What a Lane needs of its Deliverer: the freeze watch, the pause, and a _deliver that records."""

    freeze_pause = Deliverer.freeze_pause

    def __init__(self):
        self._stopping = False
        self.freeze = FreezeWatch.for_session(10.0, 1.0)
        self.sent: list[tuple[float, str]] = []
        self.merge = False
        self.stats = {"coalesced": 0}

        class NoLimits:
            rate_limit: dict = {}

        self.receivers = NoLimits()

    async def _deliver(self, lane, note) -> None:
        self.sent.append((self.freeze.clock(), note["id"]))


class Prog:
    active = True

    def mark(self, entry) -> None:
        pass


def test_a_lane_in_doubt_waits_and_sends_nothing_once_its_partition_is_revoked():
    async def run():
        owner = Owner()
        lane = Lane("team", owner)
        prog = Prog()
        until = owner.freeze.doubt(0.6)  # as after a freeze
        await lane._send_group("g", {"id": "n1", "_covers": [(prog, None)]}, prog)
        sent_at = owner.sent[0][0]
        # in doubt again, and the heartbeat revokes the partition meanwhile: nothing is sent
        owner.freeze.doubt(0.6)
        task = asyncio.ensure_future(lane._send_group("g", {"id": "n2", "_covers": [(prog, None)]}, prog))
        await asyncio.sleep(0.2)
        prog.active = False
        await asyncio.wait_for(task, 5)
        return owner.sent, sent_at, until

    sent, sent_at, until = asyncio.run(run())
    assert [i for _, i in sent] == ["n1"] and sent_at >= until  # sent once the doubt was over, and n2 never


def test_faust_group_forgets_a_killed_worker_within_seconds(tmp_path):
    """A worker killed -9 and restarted under its id waited ~60 s (Faust's default session) in Faust's own group
    before any of its parts started (an audit: 80 s runs instead of 22). Its session is now the hot path's order."""
    from core.settings import Settings
    from streams.app import create_app

    settings = Settings(replication_factor=1, state_dir=str(tmp_path))
    app = create_app(settings, "127.0.0.1:1", worker_id="t")  # nothing connects until the app starts
    assert app.conf.broker_session_timeout <= 10.0 and app.conf.broker_heartbeat_interval <= 1.0


def test_the_watch_counts_time_the_machine_was_suspended():
    """time.monotonic stops while the machine sleeps, so a whole suspended VM was not noticed as a freeze; the watch
    reads CLOCK_BOOTTIME, which goes on. (No suspend happens here: this checks which clock is read.)"""
    import time

    from streams.freeze import CLOCK

    w = FreezeWatch.for_session(10.0, 1.0)
    assert w.clock is CLOCK
    if hasattr(time, "CLOCK_BOOTTIME"):
        assert abs(w.clock() - time.clock_gettime(time.CLOCK_BOOTTIME)) < 1.0
