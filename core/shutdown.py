"""Bounded shutdown: after the first SIGTERM/SIGINT a long-running command has ``timeout`` seconds.

Each command stops gracefully its own way (flush, commit, close); a watchdog started by the
first stop signal ends the process when that takes longer than ``Settings.shutdown_timeout``
(a producer waiting for an unreachable broker, a transaction that cannot commit), so a pod
stops within its grace period and Ctrl-C always works.  What was not committed is re-read
after the restart (every producer here is idempotent or transactional).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

EXIT_TIMEOUT = 124  # like timeout(1): the graceful stop did not finish in time
_armed = threading.Event()


def arm(timeout: float, what: str) -> None:
    """Start the watchdog once: ``timeout`` seconds from now the process exits, stopped or not."""
    if _armed.is_set():
        return
    _armed.set()

    def expire() -> None:
        print(f"{what}: still stopping after {timeout:g}s (shutdown_timeout): exiting now", file=sys.stderr, flush=True)
        os._exit(EXIT_TIMEOUT)

    t = threading.Timer(timeout, expire)
    t.daemon = True
    t.start()


def on_stop(stop: Callable[[], None], timeout: float, what: str, loop=None) -> None:
    """On SIGTERM or SIGINT: ``stop()`` (begin the graceful stop) and arm the watchdog.

    With ``loop`` the handlers run in that asyncio loop (``stop`` may then set an asyncio.Event);
    without, they are plain signal handlers (main thread).  A second signal only re-requests the stop.
    """
    def handle(*_):
        arm(timeout, what)
        stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        if loop is not None:
            loop.add_signal_handler(sig, handle)
        else:
            signal.signal(sig, handle)
