"""The ``alertmanager_configs`` forwarders' memory, rebuilt from Kafka when delivery starts.

A forwarder re-sends the alerts it forwarded that still fire (``alerts.receivers.Forwarder``), or the
Alertmanager lets them expire after 4 x ``resend_delay``.  That memory is each group's latest
notification to the receiver, and every notification is in the ``notifications`` topic (key: the
group key, so a group's notifications are in order in one partition): reading it from the beginning to
the end offsets seen at start gives back, per group, the alerts that still fire, and the time they
were last sent.  Firing alerts whose last send is older than ``resend_delay`` go out at the first
re-send tick after the start.
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from core.records import parse_time
from streams.follow import follow_topic

log = logging.getLogger("kubesight.alerts.forward")


class _UntilCaughtUp:
    """``follow_topic`` reads until its service stops: this one stops once the start's end offsets are read."""

    def __init__(self, caught_up: asyncio.Event):
        self.caught_up = caught_up

    @property
    def should_stop(self) -> bool:
        return self.caught_up.is_set()


def remember(receivers, note: dict) -> bool:
    """Feed one notification already written to the forwarders of its receiver (nothing is sent)."""
    items = [i for i in receivers.integrations.get(note.get("receiver"), []) if i.forward is not None]
    if not items:
        return False
    at = parse_time(note["time"])
    for integ in items:
        f = integ.forward
        last = f.last
        f.postable(note, at)
        f.last = max(last, at)
    return True


async def restore_forwarders(settings, bootstrap: str, receivers) -> int:
    """Rebuild every forwarder's memory from ``notifications``; the number of notifications fed to them."""
    if not receivers.forwarders():
        return 0
    fed = 0

    def on(key, value) -> None:
        nonlocal fed
        note = orjson.loads(value)
        if isinstance(note, dict) and note.get("time") and remember(receivers, note):
            fed += 1

    caught_up = asyncio.Event()
    try:
        await follow_topic(_UntilCaughtUp(caught_up), bootstrap, settings.topic("notifications"), settings.partitions,
                           on, caught_up, f"{settings.app_id}-forward-memory")
    except Exception as exc:  # noqa: BLE001 - re-sending what is known beats not re-sending at all
        log.warning("alertmanager_configs: reading notifications back failed (%s: %s); re-sending what was read",
                    type(exc).__name__, exc)
    groups = sum(len(i.forward.groups) for i in receivers.forwarders())
    log.info("alertmanager_configs: %d notifications read back, %d groups still firing to re-send", fed, groups)
    return fed
