"""The real Alertmanager and amtool for interop tests: a process on a free port, a webhook sink, amtool calls.

The binaries are Debian's (``prometheus-alertmanager``, ``amtool``; upstream names ``alertmanager``
too).  Nothing is skipped: a missing binary fails the test and says how to install it.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

INSTALL = "apt-get install -y prometheus-alertmanager (amtool comes with it); .ci/run does it"


def binary(*names: str) -> str:
    for n in names:
        path = shutil.which(n)
        if path:
            return path
    raise AssertionError(f"none of {', '.join(names)} on PATH: {INSTALL}")


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


def amtool(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([binary("amtool"), *args], capture_output=True, text=True, timeout=timeout)


class Alertmanager:
    """A real Alertmanager on 127.0.0.1:<free port> with ``config`` (YAML text), its own storage, no cluster."""

    def __init__(self, config: str, workdir: Path):
        self.config = config
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Alertmanager:
        cfg = self.workdir / "alertmanager.yml"
        cfg.write_text(self.config)
        (self.workdir / "data").mkdir(exist_ok=True)
        self.log = open(self.workdir / "alertmanager.log", "w")
        self.proc = subprocess.Popen(
            [binary("alertmanager", "prometheus-alertmanager"), f"--config.file={cfg}",
             f"--storage.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--cluster.listen-address=", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"alertmanager exited {self.proc.returncode}: "
                                     f"{(self.workdir / 'alertmanager.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(ready, 20, "alertmanager /-/ready")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()

    def post_alerts(self, alerts: list[dict]) -> None:
        req = urllib.request.Request(f"{self.url}/api/v2/alerts", data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200, r.status

    def get(self, path: str):
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as r:
            return json.loads(r.read())


class WebhookSink:
    """A plain HTTP server (thread) that records every JSON body posted to it."""

    def __init__(self):
        self.bodies: list[dict] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                sink.bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookSink:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
