"""Local webhook receivers (aiohttp) for the demo and the benchmark: listen where a routing file's local URLs point.

Every ``webhook_configs`` URL on 127.0.0.1/localhost gets a server; each accepted notification is
kept (receiver, payload) and, with ``echo``, printed as one line: which receiver got what.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from alerts.config import RoutingConfig
from alerts.payload import title


def local_targets(cfg: RoutingConfig) -> dict[tuple[str, int], str]:
    """(host, port) -> receiver name, for every local webhook URL in the config."""
    out = {}
    for r in cfg.receivers:
        for c in r.webhook_configs:
            if c.url:
                u = urlsplit(c.url)
                if u.hostname in ("127.0.0.1", "localhost") and u.port:
                    out[(u.hostname, u.port)] = r.name
    return out


def describe(receiver: str, body: dict) -> str:
    """One colourless line: receiver <- [FIRING:2] group labels: alert names/objects."""
    note = {"status": body["status"], "groupLabels": body["groupLabels"], "alerts": body["alerts"]}
    objs = ", ".join(sorted({a["labels"].get("name") or a["labels"].get("pod") or a["labels"].get("node")
                             or a["labels"].get("alertname", "?") for a in body["alerts"]}))
    return f"{receiver:<20} <- {title(note)}: {objs}"


class LocalHooks:
    def __init__(self, cfg: RoutingConfig, echo: Callable[[str], None] | None = None):
        self.targets = local_targets(cfg)
        self.echo = echo
        self.got: list[tuple[str, dict]] = []
        self.runners: list[web.AppRunner] = []

    def _handler(self, receiver: str):
        async def handle(request: web.Request) -> web.Response:
            body = orjson.loads(await request.read())
            self.got.append((receiver, body))
            if self.echo:
                self.echo(describe(receiver, body))
            return web.Response(text="ok")

        return handle

    async def start(self) -> None:
        for (host, port), receiver in self.targets.items():
            a = web.Application(client_max_size=64 << 20)
            a.router.add_post("/{tail:.*}", self._handler(receiver))
            runner = web.AppRunner(a, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, host, port).start()
            self.runners.append(runner)

    async def stop(self) -> None:
        for r in self.runners:
            await r.cleanup()
        self.runners.clear()

    def start_in_thread(self) -> None:
        """Serve from a background thread with its own event loop (for synchronous callers such as the demo)."""
        import asyncio
        import threading

        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(self.start())
            except BaseException as exc:  # e.g. a port in use: reported to the caller
                errors.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self.stop())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="kubesight-localhooks", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]

    def stop_thread(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for receiver, _ in self.got:
            out[receiver] = out.get(receiver, 0) + 1
        return out


def print_line(line: str) -> None:
    print(line, file=sys.stdout, flush=True)
