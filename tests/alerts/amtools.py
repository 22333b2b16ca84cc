"""The real Alertmanager and amtool for interop tests: a process on a free port, a webhook sink, amtool calls.

The binaries are Debian's (``prometheus-alertmanager``, ``amtool``; upstream names ``alertmanager``
too).  Nothing is skipped: a missing binary fails the test and says how to install it.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import urllib.request
from pathlib import Path

from tests import realtools
from tests.realtools import Daemon, free_port, wait_for  # noqa: F401 (free_port, wait_for: used by other tests)

INSTALL = "apt-get install -y prometheus-alertmanager (amtool comes with it); .ci/run does it"


def binary(*names: str) -> str:
    return realtools.binary(*names, install=INSTALL)


def amtool(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([binary("amtool"), *args], capture_output=True, text=True, timeout=timeout)


class Alertmanager:
    """A real Alertmanager on 127.0.0.1:<free port> with ``config`` (YAML text), its own storage, no cluster."""

    def __init__(self, config: str, workdir: Path):
        self.config = config
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Daemon | None = None

    def __enter__(self) -> Alertmanager:
        cfg = self.workdir / "alertmanager.yml"
        cfg.write_text(self.config)
        (self.workdir / "data").mkdir(exist_ok=True)
        self.proc = Daemon("alertmanager", [
            binary("alertmanager", "prometheus-alertmanager"), f"--config.file={cfg}",
            f"--storage.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=", "--log.level=warn"], self.workdir, f"{self.url}/-/ready").__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.proc:
            self.proc.__exit__(*exc)

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
