"""``kubesight kafka up | down | purge | status``: the local single-node broker (or the configured one).

``down`` stops the broker and keeps its data and port (``up`` brings both back); ``purge`` deletes them."""

from __future__ import annotations

import os
import sys


def register(sub, group) -> None:

    g = group("kafka", "the local Kafka broker (KRaft, 127.0.0.1)")
    up = g.add_parser("up", help="fetch (once) and start the local broker, print its bootstrap address")
    up.add_argument("--heap-mb", type=int, default=512)
    up.set_defaults(func=_up)
    g.add_parser("down", help="stop the local broker; its topics and data stay for the next `up`").set_defaults(func=_down)
    g.add_parser("purge", help="stop the local broker and DELETE its topics and data").set_defaults(func=_purge)
    g.add_parser("status", help="is the local (or configured) broker answering?").set_defaults(func=_status)


def _up(args) -> int:
    from core import broker as launcher

    if os.environ.get("KUBESIGHT_KAFKA"):
        print(f"KUBESIGHT_KAFKA is set ({os.environ['KUBESIGHT_KAFKA']}): nothing started")
        return 0
    b = launcher.start(heap_mb=args.heap_mb)
    print(b.bootstrap)
    return 0


def _elsewhere(args, what: str) -> bool:
    """Whether a broker is configured (KUBESIGHT_KAFKA, or ``kafka`` in the settings) that is not the running local one:
    then ``down`` and ``purge`` leave the local broker alone and say so, as ``up`` starts none. ``status`` reports the
    configured broker, and ``down`` stopped another one, maybe a broker that other work on this machine uses."""
    from core import broker as launcher
    from core.settings import Settings

    kafka = Settings.load(args.config).kafka
    local = launcher.status() if kafka else None
    if not kafka or (local is not None and local.bootstrap == kafka):
        return False
    where = "KUBESIGHT_KAFKA" if os.environ.get("KUBESIGHT_KAFKA") else "the settings' kafka"
    print(f"{where} is {kafka}, not the local broker ({local.bootstrap if local else 'not running'}): nothing "
          f"{what} (unset it to act on the local broker)", file=sys.stderr)
    return True


def _down(args) -> int:
    from core import broker as launcher

    if _elsewhere(args, "stopped"):
        return 0
    print("stopped (data kept: `kubesight kafka up` brings it back on the same port)" if launcher.stop()
          else "not running")
    return 0


def _purge(args) -> int:
    from core import broker as launcher

    if _elsewhere(args, "deleted"):
        return 0
    gone = launcher.purge()
    print(f"deleted {gone} (every topic and its data)" if gone else "nothing to delete")
    return 0


def _status(args) -> int:
    from core import broker as launcher
    from core.settings import Settings

    settings = Settings.load(args.config)  # the file and KUBESIGHT_KAFKA, as every other command reads them
    if settings.kafka:
        where = "KUBESIGHT_KAFKA" if os.environ.get("KUBESIGHT_KAFKA") else "settings"
        try:  # a connection first: the client's own bootstrap waits 30 s for an address that never answers
            launcher.check_reachable(settings.kafka, timeout=3.0)
            ok = launcher.metadata_ok(settings.kafka)
        except launcher.KafkaUnreachable:
            ok = False
        print(f"{settings.kafka} ({where}): {'up' if ok else 'not answering'}")
        return 0 if ok else 1
    b = launcher.status()
    if b is None:
        print("local broker: not running", file=sys.stderr)
        return 1
    ok = launcher.metadata_ok(b.bootstrap)
    print(f"local broker: {b.bootstrap} pid {b.pid} {'up' if ok else 'not answering'}")
    return 0 if ok else 1
