"""What every long-running kubesight process serves: ``/metrics``, ``/health`` (liveness), ``/ready``.

Metrics go to prometheus-client's default registry (``REGISTRY``), which already carries the
standard ``process_*`` and ``python_*`` metrics; a module adds its own there (the worker's
hot-path figures come from ``streams.telemetry``; receivers' deliveries can be added the same
way).  ``/ready`` answers 200 only while every readiness check passes, else 503, and always says
which check failed; ``/health`` answers 200 while the process can answer at all.

Processes without a web server of their own (the collectors, ``silences serve``) start
``serve(host, port, checks)``: a small threaded HTTP server, independent of their event loop,
bound to ``Settings.web_host`` (127.0.0.1 unless configured).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest

# one check: () -> (ok, detail)
Check = Callable[[], tuple[bool, object]]

DEADLETTERS = Counter("kubesight_deadletters", "dead letters on the dead-letter topic, by origin and reason",
                      ["origin", "reason"], registry=REGISTRY)

_NUMBER = re.compile(r"\d+(\.\d+)?")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")  # as repr() writes it: \' inside is no end
_QUOTED_LIST = re.compile(r"'…'(?:, '…')+")


class LabelCap:
    """At most ``limit`` distinct label values (tuples) for a metric fed from input (reasons, metric names): past
    that a new one is counted as ``other`` — each value is a series Prometheus keeps, and a remote-write client
    naming a new metric per request made 100,000 of them (an audit).

    The first ``keep`` values of a tuple are a fixed set (the dead letter's origin) and stay as given: only the
    values from input become ``other``.  Capping the origin too lost where the dead letters came from once one
    collector had filled the cap with reasons (an audit: ``{origin="other",reason="other"}`` for everything after).

    >>> cap = LabelCap(2)
    >>> cap("a", "x"), cap("b", "y"), cap("c", "z"), cap("a", "x")
    (('a', 'x'), ('b', 'y'), ('other', 'other'), ('a', 'x'))
    >>> cap = LabelCap(2, keep=1)
    >>> cap("a", "x"), cap("a", "y"), cap("b", "z"), cap("a", "x")
    (('a', 'x'), ('a', 'y'), ('b', 'other'), ('a', 'x'))
    """

    def __init__(self, limit: int = 200, keep: int = 0):
        self.limit = limit
        self.keep = keep
        self.seen: set[tuple] = set()

    def __call__(self, *values: str) -> tuple:
        if values in self.seen:
            return values
        if len(self.seen) >= self.limit:
            return values[:self.keep] + ("other",) * (len(values) - self.keep)
        self.seen.add(values)
        return values


DEADLETTER_LABELS = LabelCap(200, keep=1)  # origins are kubesight's own (collector/..., worker/...)


def count_deadletter(origin: object, reason: object) -> None:
    """One dead letter in ``kubesight_deadletters_total`` (origin and ``reason_key``; at most 200 pairs, then the
    origin's reason is ``other``)."""
    DEADLETTERS.labels(*DEADLETTER_LABELS(str(origin), reason_key(reason))).inc()


def reason_key(reason: object, limit: int = 80) -> str:
    """A dead letter's reason as a metric label: numbers (attempts, offsets, sizes) become N and quoted text
    (a metric's, a label's or an event's name from the input) '…', cut to ``limit``; a list of quoted names
    (a payload's keys) is one '…', however many it has.

    One cause is then one series, however many attempts, offsets, seconds or names its messages name.

    >>> reason_key("retry budget of 20s spent after 7 attempts; last: HTTP 500")
    'retry budget of Ns spent after N attempts; last: HTTP N'
    >>> reason_key("remote-write: timeseries[3]: duplicate label 'job'")
    "remote-write: timeseries[N]: duplicate label '…'"
    >>> reason_key("unknown payload shape (top-level keys: 'alpha', 'bravo')")
    "unknown payload shape (top-level keys: '…')"
    """
    return _NUMBER.sub("N", _QUOTED_LIST.sub("'…'", _QUOTED.sub("'…'", str(reason))))[:limit]


def ready_report(checks: dict[str, Check]) -> tuple[bool, dict]:
    """Run every check; (all passed, {name: {"ok", "detail"}}).  A check that raises has failed."""
    out, ok = {}, True
    for name, check in checks.items():
        try:
            good, detail = check()
        except Exception as exc:  # a broken check is a failed check, never a 500
            good, detail = False, f"{type(exc).__name__}: {exc}"
        out[name] = {"ok": bool(good), "detail": detail}
        ok = ok and bool(good)
    return ok, out


def broker_check(bootstrap: str) -> Check:
    """Readiness: some bootstrap server of ``bootstrap`` accepts a connection (1 s)."""
    from core.broker import KafkaUnreachable, check_reachable

    def check():
        try:
            check_reachable(bootstrap, timeout=1.0)
        except KafkaUnreachable as exc:
            return False, str(exc)
        return True, bootstrap

    return check


class ListenError(OSError):
    """An address a server of ours cannot bind (a port in use, an address not on this host): its ``strerror``
    names the address and the setting, for the CLI's one-line error."""


def can_listen(host: str, port: int, setting: str = "web_port") -> None:
    """Raise ``ListenError`` now if ``host:port`` cannot be bound: a server that binds later, inside a framework
    (Faust's web server), fails with a traceback of that framework instead of one line.

    >>> import socket
    >>> with socket.socket() as s:
    ...     s.bind(("127.0.0.1", 0)); s.listen()
    ...     try:
    ...         can_listen("127.0.0.1", s.getsockname()[1])
    ...     except ListenError as exc:
    ...         print(exc.strerror.split(":")[0], exc.strerror.endswith("Address already in use"))
    cannot listen on 127.0.0.1 True
    """
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
            s.bind(addr)
    except OSError as exc:  # socket.gaierror too: a host name that does not resolve
        raise ListenError(exc.errno, f"cannot listen on {host}:{port} ({setting}): {exc.strerror or exc}") from None


def serve(host: str, port: int, checks: dict[str, Check] | None = None, registries=(), web=None) -> ThreadingHTTPServer:
    """Serve /metrics, /health and /ready on ``host:port`` from a daemon thread; ``.server_address`` says where.

    ``/metrics`` is the default registry followed by ``registries`` (a component's own).  ``web``, a
    ``core.webconfig.WebConfig``, adds TLS (the handshake runs in the request's thread) and basic auth
    on /metrics (the probes stay open)."""
    from core.webconfig import NONE, OPEN_PATHS

    checks = dict(checks or {})
    web = web or NONE
    ctx = web.ssl_context()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0]
            if path not in OPEN_PATHS and not web.authorized(self.headers.get("Authorization")):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="kubesight"')
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/metrics":
                self._send(200, b"".join(generate_latest(r) for r in (REGISTRY, *registries)), CONTENT_TYPE_LATEST)
            elif path == "/health":
                self._send(200, b'{"ok":true}', "application/json")
            elif path == "/ready":
                ok, report = ready_report(checks)
                self._send(200 if ok else 503, orjson.dumps({"ready": ok, "checks": report}), "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # probes every few seconds: no access log
            pass

    class Server(ThreadingHTTPServer):
        def finish_request(self, request, client_address):
            if ctx is not None:
                request.settimeout(10)
                try:
                    request = ctx.wrap_socket(request, server_side=True)
                except (OSError, ValueError):  # a failed handshake: nothing to answer
                    request.close()
                    return
                try:
                    super().finish_request(request, client_address)
                finally:
                    request.close()
                return
            super().finish_request(request, client_address)

    try:
        server = Server((host, port), Handler)
    except OSError as exc:
        raise ListenError(exc.errno, f"cannot listen on {host}:{port} (web_port): {exc.strerror or exc}") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="kubesight-telemetry", daemon=True).start()
    return server


def serve_for(settings, bootstrap: str | None, what: str, registries=(), checks: dict[str, Check] | None = None):
    """A long-running command's telemetry, if ``settings.web_port`` is set: readiness includes the broker."""
    import sys

    if settings.web_port is None:
        return None
    all_checks = ({"broker": broker_check(bootstrap)} if bootstrap else {}) | dict(checks or {})
    from core import webconfig

    web = webconfig.load(settings.web_config)  # read-only endpoints: TLS and users as configured, any address
    server = serve(settings.web_host, settings.web_port, all_checks, registries, web)
    host, port = server.server_address[:2]
    print(f"{what}: /metrics, /health, /ready on {web.scheme}://{host}:{port}", file=sys.stderr, flush=True)
    return server
