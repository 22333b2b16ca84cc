"""A lean HTTP/1.1 client for delivery: keep-alive connections per origin, one request at a time on each.

aiohttp costs about 150 µs of CPU per request (request and response objects, header multidicts,
tracing hooks, cookie jars, timers); a webhook POST needs none of that.  ``Pool.post`` writes the
request in one ``write`` and parses the status line, the headers and a ``Content-Length``, chunked or
close-delimited body straight from the socket's bytes (an ``asyncio.Protocol``), about a fifth of
the cost.  Only plain requests take this path (``plain`` says which): an ASCII URL without
credentials, no proxy; everything else stays with aiohttp (``alerts.receivers._post``).

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
    __slots__ = ("transport", "buf", "waiter", "closed", "used")

    def __init__(self):
        self.transport = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.used = False  # a response came back on it (so a failure before any byte may be an idle close)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        w = self.waiter
        if w is not None and not w.done():
            try:
                r = _parse(self.buf, False)
            except ValueError as exc:
                w.set_exception(exc)
                return
            if r is not None:
                w.set_result(r)

    def connection_lost(self, exc) -> None:
        self.closed = True
        w = self.waiter
        if w is not None and not w.done():
            try:
                r = _parse(self.buf, True)
            except ValueError as e:
                r, exc = None, e
            if r is not None:
                w.set_result(r)
            else:
                w.set_exception(_Closed(bool(self.buf)) if not isinstance(exc, ValueError) else exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Closed(ConnectionError):
    def __init__(self, got_bytes: bool):
        super().__init__("the server closed the connection" + (" in the middle of a response" if got_bytes else ""))
        self.got_bytes = got_bytes


def _parse(buf: bytearray, eof: bool):
    """(status, headers, body, keep-alive, bytes used) of the response at the start of ``buf``, None if incomplete."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if eof and buf:
                raise ValueError("incomplete HTTP response headers")
            return None
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ValueError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
        status = int(parts[1])
        headers = _Headers()
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        start = end + 4
        if 100 <= status < 200:  # an interim response (100 Continue): the real one follows
            del buf[:start]
            continue
        keep = parts[0] != "HTTP/1.0" and headers.get("connection", "").lower() != "close"
        if status in (204, 304):
            return status, headers, b"", keep, start
        te = headers.get("transfer-encoding", "").lower()
        if "chunked" in te:
            body, pos = bytearray(), start
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return _incomplete(eof)
                try:
                    size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ValueError("bad chunk size in HTTP response") from None
                if size == 0:
                    trailer = buf.find(b"\r\n\r\n", eol)
                    if trailer < 0:
                        if buf[eol:eol + 4] == b"\r\n\r\n":
                            trailer = eol
                        else:
                            return _incomplete(eof)
                    return status, headers, bytes(body), keep, trailer + 4
                if len(buf) < eol + 2 + size + 2:
                    return _incomplete(eof)
                body += buf[eol + 2:eol + 2 + size]
                pos = eol + 2 + size + 2
        n = headers.get("content-length")
        if n is not None:
            try:
                n = int(n)
            except ValueError:
                raise ValueError("bad Content-Length in HTTP response") from None
            if len(buf) < start + n:
                return _incomplete(eof)
            return status, headers, bytes(buf[start:start + n]), keep, start + n
        if not eof:  # the body runs to the end of the connection
            return None
        return status, headers, bytes(buf[start:]), False, len(buf)


def _incomplete(eof: bool):
    if eof:
        raise ValueError("incomplete HTTP response body")
    return None


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
        head = [f"POST {target} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: {len(body)}\r\n"
                "User-Agent: kubesight\r\nAccept: */*\r\n"]
        for k, v in headers.items():
            if "\r" in k or "\n" in k or "\r" in v or "\n" in v:
                raise ValueError(f"header {k!r}: line breaks are not allowed")
            head.append(f"{k}: {v}\r\n")
        head.append("\r\n")
        request = "".join(head).encode("latin-1") + body
        if scheme == "https" and tls is None:
            tls = _default_tls()
        key = (host, port, id(tls) if scheme == "https" else None)
        async with asyncio.timeout(timeout):
            while True:
                conn, reused = await self._acquire(key, host, port, tls if scheme == "https" else None)
                try:
                    status, hdrs, data, keep = await self._exchange(conn, request)
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
                return Response(status, hdrs, data)

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
    async def _exchange(conn: _Conn, request: bytes):
        if conn.closed:
            raise _Closed(False)
        conn.buf.clear()
        w = conn.waiter = asyncio.get_running_loop().create_future()
        conn.transport.write(request)
        try:
            status, hdrs, data, keep, used = await w
        finally:
            conn.waiter = None
        conn.used = True
        if len(conn.buf) > used:  # bytes beyond the response: the connection is out of step
            keep = False
        return status, hdrs, data, keep

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
