"""Local webhook receivers (aiohttp) for the demo and the benchmark: listen where a routing file's local URLs point.

Every ``webhook_configs`` URL on 127.0.0.1/localhost gets a server; each accepted notification is
kept (receiver, payload) and, with ``echo``, printed as one line: which receiver got what.
"""

from __future__ import annotations

import sys
import time
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

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for receiver, _ in self.got:
            out[receiver] = out.get(receiver, 0) + 1
        return out


# ---------------------------------------------------------------- a receiver process for the benchmarks


class RecordingReceiver:
    """Webhook receiver for benchmarks, meant to run in its own process (``python -m alerts.localhooks``).

    Paths behave as told: ``fail`` answers a status, ``stall`` never answers in time; any other path
    accepts.  Each accepted alert appends ``path event_time delay`` to ``out`` (delay: arrival wall
    time minus the alert's ``startsAt``, which the benchmarks set to the time they produced it).
    """

    def __init__(self, out: str, fail: dict[str, int] | None = None, stall: set[str] | None = None):
        self.out = open(out, "a", buffering=1 << 16)  # noqa: SIM115 - flushed by a task, closed at exit
        self.fail = fail or {}
        self.stall = stall or set()

    async def handle(self, request: web.Request) -> web.Response:
        import asyncio
        from datetime import datetime

        body = await request.read()
        path = request.path
        if path in self.fail:
            return web.Response(status=self.fail[path], text="failing on purpose")
        if path in self.stall:
            await asyncio.sleep(3600)
        now = time.time()
        note = orjson.loads(body)
        lines = []
        for a in note["alerts"]:
            t = datetime.fromisoformat(a["startsAt"]).timestamp()
            lines.append(f"{path} {t:.3f} {now - t:.4f}\n")
        self.out.write("".join(lines) + f"{path} note {len(note['alerts'])}\n")
        return web.Response(text="ok")

    async def run(self, port: int) -> None:
        import asyncio

        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        print(f"listening {site._server.sockets[0].getsockname()[1]}", flush=True)
        while True:
            await asyncio.sleep(0.2)
            self.out.flush()


def read_recorded(path: str) -> tuple[dict[str, list[tuple[float, float]]], dict[str, int]]:
    """What a RecordingReceiver wrote: per path [(event time, delay)], and notifications per path."""
    delays: dict[str, list[tuple[float, float]]] = {}
    notes: dict[str, int] = {}
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if len(parts) != 3:
                continue  # a line being written
            if parts[1] == "note":
                notes[parts[0]] = notes.get(parts[0], 0) + 1
            else:
                delays.setdefault(parts[0], []).append((float(parts[1]), float(parts[2])))
    return delays, notes


def spawn_receiver(out: str, fail: dict[str, int] | None = None, stall: set[str] | None = None):
    """Start a RecordingReceiver process; returns (process, base URL)."""
    import subprocess

    cmd = [sys.executable, "-m", "alerts.localhooks", "--out", out]
    cmd += [a for p, s in (fail or {}).items() for a in ("--fail", f"{p}={s}")]
    cmd += [a for p in (stall or ()) for a in ("--stall", p)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "listening":
        proc.kill()
        raise RuntimeError(f"the receiver process did not start: {line}")
    return proc, f"http://127.0.0.1:{line[1]}"


def main(argv: list[str] | None = None) -> None:
    import argparse
    import asyncio

    p = argparse.ArgumentParser(description="a recording webhook receiver for the benchmarks")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--fail", action="append", default=[], metavar="PATH=STATUS")
    p.add_argument("--stall", action="append", default=[], metavar="PATH")
    a = p.parse_args(argv)
    fail = {x.rsplit("=", 1)[0]: int(x.rsplit("=", 1)[1]) for x in a.fail}
    try:
        asyncio.run(RecordingReceiver(a.out, fail, set(a.stall)).run(a.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
