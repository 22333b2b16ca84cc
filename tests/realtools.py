"""Real third-party binaries in tests: found on PATH, started on free loopback ports with their own temp dirs.

Nothing is skipped: a missing binary fails the test and says how to install it (``.ci/run`` installs
every one).  Waits poll a condition under a deadline; a process that dies while being waited on fails
the test with the tail of its log.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def binary(*names: str, install: str) -> str:
    """The first of ``names`` on PATH; else an AssertionError naming ``install`` (how to get it)."""
    for n in names:
        path = shutil.which(n)
        if path:
            return path
    raise AssertionError(f"none of {', '.join(names)} on PATH: {install}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, deadline: float, what: str, every: float = 0.05):
    """Poll ``cond()`` until it returns something truthy; fail naming ``what`` after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline}s waiting for {what}")
        time.sleep(every)


class Daemon:
    """``argv`` (with ``env``, default ours) as a child process logging to ``workdir/<name>.log``; ``__enter__`` returns once
    GET ``ready_url`` answers 200 (within ``ready_timeout`` s); ``__exit__`` terminates it (kill after 10 s)."""

    def __init__(self, name: str, argv: list[str], workdir: Path, ready_url: str, ready_timeout: float = 20,
                 env: dict | None = None):
        self.name, self.argv, self.workdir, self.env = name, argv, workdir, env
        self.ready_url, self.ready_timeout = ready_url, ready_timeout
        self.logfile = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def log_tail(self, n: int = 2000) -> str:
        return self.logfile.read_text(errors="replace")[-n:]

    def __enter__(self) -> Daemon:
        self.log = open(self.logfile, "w")
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        try:
            wait_for(ready, self.ready_timeout, f"{self.name} at {self.ready_url}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 10 s; the exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode if self.proc else None

    def __exit__(self, *exc) -> None:
        self.stop()
        self.log.close()


def serve_get(body, content_type: str, *, port: int = 0, tls: tuple | None = None):
    """A loopback HTTP server (HTTPS with ``tls`` = (cert, key)) answering every GET with 200 and ``body()``, in a
    daemon thread: a stand-in for a page or an API another program reads.  Stop it with ``stop_server``."""
    import http.server
    import ssl
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            data = body()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if tls is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*map(str, tls))
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop_server(server) -> None:
    server.shutdown()
    server.server_close()


@contextlib.asynccontextmanager
async def serve_app(app):
    """An aiohttp application on a free loopback port, for the ``async with`` block: yields its root URL."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()
