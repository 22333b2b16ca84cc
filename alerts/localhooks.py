"""Local webhook receivers for the demo (aiohttp) and the benchmarks (a small HTTP/1.1 server on httptools): listen where a routing file's local URLs point.

Every ``webhook_configs`` URL on 127.0.0.1/localhost gets a server; each accepted notification is
kept (receiver, payload) and, with ``echo``, printed as one line: which receiver got what.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from datetime import datetime
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

import httptools
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
            try:
                body = orjson.loads(await request.read())
                line = describe(receiver, body)  # reads what a webhook payload holds: refused unless it does
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                return web.Response(status=400, text=f"not an Alertmanager webhook payload ({type(exc).__name__}: "
                                                     f"{exc})\n")
            self.got.append((receiver, body))
            if self.echo:
                self.echo(line)
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

    A real HTTP/1.1 server, but a small one (``_Hook``, an ``asyncio.Protocol`` over httptools' parser): at 2,000
    notifications/s aiohttp's server cost this process ~75 µs of CPU per request on the machine the benchmark
    measures.
    """

    def __init__(self, out: str, fail: dict[str, int] | None = None, stall: set[str] | None = None):
        self.out = open(out, "a", buffering=1 << 16)  # noqa: SIM115 - flushed by a task, closed at exit
        self.fail = fail or {}
        self.stall = stall or set()

    def accept(self, path: str, body: bytes) -> tuple[int, bytes] | None:
        """(status, body) to answer a POST of ``body`` to ``path``; None: never answer (a stalled path)."""
        if path in self.fail:
            return self.fail[path], b"failing on purpose"
        if path in self.stall:
            return None
        now = time.time()
        note = orjson.loads(body)
        lines = []
        for a in note["alerts"]:
            t = datetime.fromisoformat(a["startsAt"]).timestamp()
            lines.append(f"{path} {t:.3f} {now - t:.4f}\n")
        self.out.write("".join(lines) + f"{path} note {len(note['alerts'])}\n")
        return 200, b"ok"

    async def run(self, port: int) -> None:
        import asyncio

        server = await asyncio.get_running_loop().create_server(lambda: _Hook(self), "127.0.0.1", port, backlog=1024)
        print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
        while True:
            await asyncio.sleep(0.2)
            self.out.flush()


@functools.cache
def _reason(status: int) -> bytes:
    """The status line's reason phrase (the standard library's), ``Status`` for a code it does not know."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Status"


MAX_BODY = 64 << 20


class _Hook:
    r"""One client connection of a ``RecordingReceiver``.  Parsing is httptools' (llhttp, uvicorn's parser, in C:
    ~20 µs of this process's CPU per request where h11 took ~77 and aiohttp's server ~75); requests are kept
    alive, pipelined ones answered in order, until the client closes or asks ``Connection: close`` (HTTP/1.0:
    after each answer).  Another method than POST gets 405, a body over ``MAX_BODY`` 413, a malformed request
    400, and the connection is closed; a stalled path is never answered (nor anything after it).

    >>> class T:
    ...     def __init__(self): self.out, self.closed = [], False
    ...     def write(self, b): self.out.append(b)
    ...     def close(self): self.closed = True
    >>> class R:
    ...     def accept(self, path, body): return (200, b"ok") if path == "/a b" else (500, b"no")
    >>> h, t = _Hook(R()), T()
    >>> h.connection_made(t)
    >>> h.data_received(b"POST /a%20b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}POST /c HTTP/1.1\r\nconte")
    >>> h.data_received(b"nt-length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    >>> [b.split(b"\r\n")[0] for b in t.out], t.closed
    ([b'HTTP/1.1 200 OK', b'HTTP/1.1 500 Internal Server Error', b'HTTP/1.1 405 Method Not Allowed'], True)
    >>> h, t = _Hook(R()), T()
    >>> h.connection_made(t)
    >>> h.data_received(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n")
    >>> t.out[0].split(b"\r\n")[0], t.closed
    (b'HTTP/1.1 400 Bad Request', True)
    """

    __slots__ = ("receiver", "transport", "parser", "url", "body", "size", "stalled")

    def __init__(self, receiver: RecordingReceiver):
        self.receiver = receiver
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.url, self.body, self.size, self.stalled = b"", [], 0, False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.transport = None

    def eof_received(self) -> None:
        return None  # close

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        if self.stalled or self.transport is None:
            return  # a stalled request is never answered; what follows it on this connection waits with it
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._answer(501, b"no protocol upgrade here", close=True)
        except httptools.HttpParserError as exc:
            self._answer(400, str(exc).encode(), close=True)

    # httptools' callbacks, one request at a time, in the order the bytes came
    def on_message_begin(self) -> None:
        self.url, self.body, self.size = b"", [], 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_BODY:
            self._answer(413, b"body too large", close=True)
            raise httptools.HttpParserError("body too large")  # stops the parser; the connection is closed
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.stalled or self.transport is None:
            return
        if self.parser.get_method() != b"POST":
            return self._answer(405, b"POST only", close=True)
        path = unquote(self.url.decode("latin-1").split("?", 1)[0])
        try:
            got = self.receiver.accept(path, b"".join(self.body))
        except (ValueError, KeyError, TypeError):
            got = (400, b"not a notification")
        if got is None:
            self.stalled = True
            return
        self._answer(*got, close=not self.parser.should_keep_alive())

    def _answer(self, status: int, body: bytes, close: bool = False) -> None:
        t = self.transport
        if t is None:
            return
        t.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%s\r\n%s"
                % (status, _reason(status), len(body), b"Connection: close\r\n" if close else b"", body))
        if close:
            t.close()
            self.transport = None


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

    from core.broker import die_with_parent

    cmd = [sys.executable, "-m", "alerts.localhooks", "--out", out]
    cmd += [a for p, s in (fail or {}).items() for a in ("--fail", f"{p}={s}")]
    cmd += [a for p in (stall or ()) for a in ("--stall", p)]
    # dies with its parent: a bench killed past its ``finally`` leaves no receiver behind
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            preexec_fn=die_with_parent)
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
