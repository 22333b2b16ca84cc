"""A lean HTTP/1.1 client for delivery: keep-alive connections per origin, one request at a time on each.

aiohttp costs about 150 µs of CPU per request (request and response objects, header multidicts,
tracing hooks, cookie jars, timers); a webhook POST needs none of that.  ``Pool.post`` hands the
request to h11 (the sans-I/O HTTP/1.1 library of httpx and uvicorn), one ``h11.Connection`` per
kept-alive connection: h11 writes the request's bytes, and parses the response (status line, headers,
interim 1xx, ``Content-Length``, chunked or close-delimited body) from the bytes an ``asyncio.Protocol``
feeds it; h11's states say whether the connection may be reused.  Only plain requests take this path
(``plain`` says which): an ASCII URL without credentials, no proxy; everything else stays with aiohttp
(``alerts.receivers._post``).

A connection is reused while the server keeps it alive.  A reused connection that the server closed
while idle fails before any byte of the response: the request is sent once more on a new
connection (what browsers and aiohttp's keep-alive retry do), so an idle timeout on the receiver's
side never costs a retry with backoff.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from functools import lru_cache
from urllib.parse import urlsplit

import h11

from alerts.sending import Outcome, classify, redact

_DEFAULT_TLS: _ssl.SSLContext | None = None


def _default_tls() -> _ssl.SSLContext:
    global _DEFAULT_TLS
    if _DEFAULT_TLS is None:
        _DEFAULT_TLS = _ssl.create_default_context()
    return _DEFAULT_TLS


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body


class _Headers(dict):
    """Response headers by lower-cased name (``get`` as on aiohttp's, case-insensitive)."""

    def get(self, name: str, default=None):
        return dict.get(self, name.lower(), default)


@lru_cache(maxsize=1024)
def plain(url: str) -> tuple[str, str, int, str, str] | None:
    """(scheme, host, port, Host header, request target) of a URL this client sends as it is, else None.

    >>> plain("http://127.0.0.1:8080/hook?x=1"), plain("https://hooks.example/a b"), plain("http://u:p@h/")
    (('http', '127.0.0.1', 8080, '127.0.0.1:8080', '/hook?x=1'), None, None)
    """
    if not url.isascii() or any(c in url for c in ' \t\r\n"<>\\^`{|}'):
        return None  # aiohttp (yarl) quotes such URLs: leave them to it
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname or u.username is not None or u.password is not None:
        return None
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        return None
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    return u.scheme, u.hostname, port, u.netloc, target


class _Conn(asyncio.Protocol):
    """One kept-alive connection: its own ``h11.Connection``, one request/response cycle at a time."""

    __slots__ = ("transport", "h11", "waiter", "closed", "got", "response", "body")

    def __init__(self):
        self.transport = None
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.got = False  # bytes of a response arrived since the request went out
        self.response: h11.Response | None = None
        self.body: list = []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        w = self.waiter
        if w is None or w.done():  # bytes no request asked for (a 408 before an idle close, a second response)
            self.close()  # the connection is out of step: never reused
            return
        self.got = True
        self.h11.receive_data(data)
        self._events(w, False)

    def connection_lost(self, exc) -> None:
        self.closed = True
        w = self.waiter
        if w is not None and not w.done():
            if not self.got:  # nothing of a response: an idle close when the connection was reused
                w.set_exception(_Closed(False))
                return
            self.h11.receive_data(b"")
            self._events(w, True)
            if not w.done():
                w.set_exception(_Closed(True))

    def _events(self, w: asyncio.Future, eof: bool) -> None:
        """Take h11's events until the response is complete (the waiter's result) or more bytes are needed."""
        c = self.h11
        try:
            while True:
                ev = c.next_event()
                t = type(ev)
                if t is h11.Data:
                    self.body.append(ev.data)
                elif t is h11.Response:
                    self.response = ev
                elif t is h11.EndOfMessage:
                    w.set_result(None)
                    return
                elif ev is h11.NEED_DATA or ev is h11.PAUSED:
                    return
                elif t is not h11.InformationalResponse:  # 1xx (100 Continue): the real response follows
                    raise h11.RemoteProtocolError(f"unexpected {t.__name__}")
        except h11.RemoteProtocolError as exc:
            if eof:
                part = "body" if self.response is not None else "headers"
                w.set_exception(ValueError(f"incomplete HTTP response {part}"))
            else:
                w.set_exception(ValueError(f"malformed HTTP response: {str(exc)[:120]}"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Closed(ConnectionError):
    def __init__(self, got_bytes: bool):
        super().__init__("the server closed the connection" + (" in the middle of a response" if got_bytes else ""))
        self.got_bytes = got_bytes


_DEFAULTS = (("user-agent", b"User-Agent", b"kubesight"), ("accept", b"Accept", b"*/*"))


def _request(target: str, hostport: str, body: bytes, headers: dict) -> h11.Request:
    """The request h11 will write; ValueError naming (never quoting) a header h11 refuses."""
    hs = [(b"Host", hostport.encode("ascii")), (b"Content-Length", str(len(body)).encode("ascii"))]
    given = set()
    for k, v in headers.items():
        if "\r" in k or "\n" in k or "\r" in v or "\n" in v:
            raise ValueError(f"header {k!r}: line breaks are not allowed")
        given.add(k.lower())
        hs.append((k.encode("latin-1"), v.strip(" \t").encode("latin-1")))
    for lower, k, v in _DEFAULTS:
        if lower not in given:  # as aiohttp: the caller's User-Agent/Accept replace the defaults
            hs.append((k, v))
    try:
        return h11.Request(method=b"POST", target=target.encode("ascii"), headers=hs)
    except h11.LocalProtocolError:  # its message quotes the value (a secret, perhaps): name the header instead
        for k, v in hs:
            try:
                h11.Request(method=b"POST", target=b"/", headers=[(k, v)], http_version=b"1.0")
            except h11.LocalProtocolError:
                raise ValueError(f"header {k.decode('latin-1')!r}: not a valid HTTP/1.1 header") from None
        raise ValueError("the request is not valid HTTP/1.1 (a second Host or Content-Length header?)") from None


class Pool:
    """Idle keep-alive connections per origin; a caller holds one connection for the length of a request."""

    def __init__(self, limit_idle: int = 64):
        self.idle: dict[tuple, list[_Conn]] = {}
        self.limit_idle = limit_idle
        self.closed = False

    async def post(self, where: tuple[str, str, int, str, str], body: bytes, headers: dict, timeout: float,
                   tls: _ssl.SSLContext | None = None) -> Response:
        """POST ``body``; raises TimeoutError, OSError/ConnectionError, or ValueError for a malformed response."""
        scheme, host, port, hostport, target = where
        request = _request(target, hostport, body, headers)
        if scheme == "https" and tls is None:
            tls = _default_tls()
        key = (host, port, id(tls) if scheme == "https" else None)
        async with asyncio.timeout(timeout):
            while True:
                conn, reused = await self._acquire(key, host, port, tls if scheme == "https" else None)
                try:
                    resp, keep = await self._exchange(conn, request, body)
                except _Closed as exc:
                    conn.close()
                    if reused and not exc.got_bytes:
                        continue  # closed by the server while idle: once more on a new connection
                    raise
                except BaseException:
                    conn.close()
                    raise
                if keep and not conn.closed and not self.closed:
                    idle = self.idle.setdefault(key, [])
                    if len(idle) < self.limit_idle:
                        idle.append(conn)
                    else:
                        conn.close()
                else:
                    conn.close()
                return resp

    async def _acquire(self, key, host: str, port: int, tls) -> tuple[_Conn, bool]:
        idle = self.idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed and not conn.transport.is_closing():
                return conn, True
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Conn, host, port, ssl=tls, server_hostname=host if tls else None)
        return conn, False

    @staticmethod
    async def _exchange(conn: _Conn, request: h11.Request, body: bytes) -> tuple[Response, bool]:
        if conn.closed:
            raise _Closed(False)
        c = conn.h11
        data = c.send(request) + c.send(h11.Data(data=body)) + c.send(h11.EndOfMessage())
        conn.got, conn.response, conn.body = False, None, []
        w = conn.waiter = asyncio.get_running_loop().create_future()
        conn.transport.write(data)
        try:
            await w
        finally:
            conn.waiter = None
        r = conn.response
        headers = _Headers()
        for name, value in r.headers:  # h11 gives names lower-cased; the last of repeated ones wins
            headers[name.decode("latin-1")] = value.decode("latin-1")
        resp = Response(r.status_code, headers, b"".join(conn.body))
        conn.body = []
        # reused only when both sides are done with the cycle (not HTTP/1.0, no Connection: close) and
        # nothing came after the response (bytes beyond it: the connection is out of step)
        keep = c.our_state is h11.DONE and c.their_state is h11.DONE and not c.trailing_data[0]
        if keep:
            c.start_next_cycle()
        return resp, keep

    def close(self) -> None:
        self.closed = True
        for conns in self.idle.values():
            for c in conns:
                c.close()
        self.idle.clear()


class DeliverySession:
    """What delivery sends with: this lean client for plain URLs, aiohttp for the rest (``post``).

    Honours ``HTTP(S)_PROXY``, ``NO_PROXY`` and ``~/.netrc`` as aiohttp's ``trust_env=True`` does, but
    reads them once per URL (``env_for``), not on every request: ``trust_env`` parses the environment
    and reads ``.netrc`` in two executor threads per request, which cost delivery about 40 % of its CPU.
    A URL with a proxy, netrc or URL credentials, one that needs quoting, an ``http_config`` with
    proxy/redirect/TLS options, and a request answered by a redirect go through aiohttp.
    """

    def __init__(self, limit: int = 100):
        self.limit = limit
        self.pool = Pool(limit)
        self._aiohttp = None

    def aiohttp(self):
        import aiohttp

        if self._aiohttp is None:
            self._aiohttp = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.limit), trust_env=False)
        return self._aiohttp

    async def close(self) -> None:
        self.pool.close()
        if self._aiohttp is not None:
            await self._aiohttp.close()

    async def __aenter__(self) -> DeliverySession:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


@lru_cache(maxsize=1024)
def env_for(url: str, has_authorization: bool) -> tuple[tuple[str, object], ...]:
    """The proxy (and its credentials) and the netrc credentials aiohttp's ``trust_env`` would use for ``url``."""
    from aiohttp.helpers import basicauth_from_netrc, get_env_proxy_for_url, netrc_from_env
    from yarl import URL

    u, kw = URL(url), []
    try:
        proxy, proxy_auth = get_env_proxy_for_url(u)
        kw.append(("proxy", proxy))
        if proxy_auth is not None:
            kw.append(("proxy_auth", proxy_auth))
    except LookupError:
        pass
    if u.host is not None and u.user is None and not has_authorization:
        try:
            kw.append(("auth", basicauth_from_netrc(netrc_from_env(), u.host)))
        except LookupError:
            pass
    return tuple(kw)


async def post(session: DeliverySession, integ, url: str, body: bytes, headers: dict):
    """(outcome, None, None) when this client sent it; else (None, the aiohttp session, the env's keyword
    arguments for it: proxy, netrc credentials) for the caller's aiohttp request."""
    env = dict(env_for(url, "Authorization" in headers))
    http = getattr(integ, "http", None)
    where = None if env or (http is not None and http.kwargs) else plain(url)
    if where is not None:
        try:
            resp = await session.pool.post(where, body, headers, integ.timeout, integ.ssl)
            out = None if 300 <= resp.status < 400 and resp.headers.get("Location") else \
                classify(resp.status, resp.body, resp.headers)  # a redirect: aiohttp follows those
        except TimeoutError:
            out = Outcome(False, True, reason=f"timeout after {integ.timeout:g}s")
        except (OSError, ValueError) as exc:  # refused, reset, TLS (certificate verify failed ...), malformed
            out = Outcome(False, True, reason=f"{type(exc).__name__}: cannot send to {where[1]}:{where[2]}: {exc}")
        if out is not None:
            if out.reason:
                out.reason = redact(out.reason, integ.secrets())
            return out, None, None
    return None, session.aiohttp(), env
