"""One web configuration for every HTTP listener kubesight runs, in the Prometheus exporter-toolkit format.

A ``web-config.yml`` (``web_config:`` in settings, ``KUBESIGHT_WEB_CONFIG`` or ``--web-config``)::

    tls_server_config:
      cert_file: /etc/kubesight/web/tls.crt
      key_file: /etc/kubesight/web/tls.key
      client_ca_file: /etc/kubesight/web/ca.crt        # optional: verify client certificates
      client_auth_type: RequireAndVerifyClientCert     # NoClientCert (default) | RequestClientCert |
                                                       # RequireAnyClientCert | VerifyClientCertIfGiven |
                                                       # RequireAndVerifyClientCert
      min_version: TLS12                               # TLS12 (default) | TLS13
    basic_auth_users:
      alice: $2b$12$...                                # bcrypt hash (htpasswd -nBC 12 alice)

``load`` checks it with the strict loader (``file:line: yaml.path: message``, every problem at once,
certificate files included) and returns a ``WebConfig``: ``ssl_context`` for the server socket, and
``middleware`` (aiohttp) / ``authorized`` (any server) for basic auth.  ``check_listen`` is the rule
every listener applies before binding: a *write* endpoint on a non-loopback address without
authentication refuses to start unless the operator said ``insecure_listen``.

>>> check_listen("127.0.0.1", what="x", writes=True, authenticated=False)
>>> check_listen("0.0.0.0", what="silences API", writes=True, authenticated=False)
Traceback (most recent call last):
...
core.webconfig.ListenRefused: silences API: refusing to accept writes on 0.0.0.0 without authentication: set basic_auth_users in a web config (--web-config), or say --insecure-listen to accept it
>>> check_listen("0.0.0.0", what="x", writes=True, authenticated=False, insecure=True)
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import hmac
import ipaddress
import os
import re
import ssl
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core import yamlconfig
from core.yamlconfig import ConfigError  # noqa: F401 - what load raises, for callers

ClientAuth = Literal["NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven",
                     "RequireAndVerifyClientCert"]
_BCRYPT = re.compile(r"^\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}$")
OPEN_PATHS = ("/health", "/healthz", "/ready")  # probes: kubelet sends no credentials


class ListenRefused(ValueError):
    """A listener that must not start as configured (one line for the operator)."""


class TLSServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: str = Field(description="PEM server certificate (chain)")
    key_file: str = Field(description="PEM key of cert_file")
    client_ca_file: str | None = Field(None, description="PEM CA bundle that client certificates must chain to")
    client_auth_type: ClientAuth = "NoClientCert"
    min_version: Literal["TLS12", "TLS13"] = "TLS12"


class WebConfig(BaseModel):
    """The parsed web config; ``None`` fields mean plain HTTP / no basic auth."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tls_server_config: TLSServerConfig | None = None
    basic_auth_users: dict[str, str] = Field(default_factory=dict, description="user: bcrypt hash")

    @field_validator("basic_auth_users")
    @classmethod
    def _hashes(cls, users: dict[str, str]) -> dict[str, str]:
        bad = [u for u, h in users.items() if not _BCRYPT.match(str(h))]
        if bad:  # never echo the value: it may be a password pasted by mistake
            raise ValueError(f"not a bcrypt hash for {', '.join(sorted(bad))} (make one with htpasswd -nBC 12 USER)")
        if any(":" in u for u in users):
            raise ValueError("a user name cannot contain ':'")
        return users

    # ---------------------------------------------------------------- TLS

    @property
    def scheme(self) -> str:
        return "https" if self.tls_server_config else "http"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server-side context (None: plain HTTP).  Raises ``OSError``/``ssl.SSLError`` on unusable files."""
        t = self.tls_server_config
        if t is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if t.min_version == "TLS13" else ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(t.cert_file, t.key_file)
        if t.client_ca_file:
            ctx.load_verify_locations(cafile=t.client_ca_file)
        mode = t.client_auth_type
        if mode == "RequireAndVerifyClientCert":
            ctx.verify_mode = ssl.CERT_REQUIRED
        elif mode in ("VerifyClientCertIfGiven", "RequestClientCert"):
            ctx.verify_mode = ssl.CERT_OPTIONAL
        elif mode == "RequireAnyClientCert":  # Go's "any certificate": Python can only ask for a verified one
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    @property
    def client_certs_required(self) -> bool:
        t = self.tls_server_config
        return t is not None and t.client_auth_type in ("RequireAndVerifyClientCert", "RequireAnyClientCert")

    # ---------------------------------------------------------------- basic auth

    @property
    def authenticates(self) -> bool:
        """Does every request prove who it is (basic auth, or a verified client certificate)?"""
        return bool(self.basic_auth_users) or self.client_certs_required

    def authorized(self, authorization: str | None) -> bool:
        """Does an ``Authorization`` header value carry a valid basic-auth user and password?

        True when no users are configured.  A good pair is remembered (as a SHA-256 of it, keyed by user)
        so that bcrypt's deliberate cost is paid once per credential, not per request."""
        if not self.basic_auth_users:
            return True
        pair = _credentials(authorization)
        return pair is not None and (self._remembered(*pair) or self._verify(*pair))

    async def authorized_async(self, authorization: str | None) -> bool:
        """``authorized`` for an event loop: bcrypt (a quarter of a second at cost 12) runs in a worker thread, two
        at a time at most, so wrong passwords never freeze the server's other requests (probes, acks)."""
        if not self.basic_auth_users:
            return True
        pair = _credentials(authorization)
        if pair is None:
            return False
        if self._remembered(*pair):
            return True
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(_CHECKS, self._verify, *pair)

    def _remembered(self, user: str, password: str) -> bool:
        known = _VERIFIED.get((id(self), user))
        return known is not None and hmac.compare_digest(known, _digest(user, password))

    def _verify(self, user: str, password: str) -> bool:
        """bcrypt's check; an unknown user is checked against another user's hash (the same cost), so the time of a
        refusal does not tell which user names exist."""
        import bcrypt

        hashed = self.basic_auth_users.get(user)
        try:
            ok = bcrypt.checkpw(password.encode("utf-8", "surrogateescape"),
                                (hashed or next(iter(self.basic_auth_users.values()))).encode())
        except ValueError:
            return False
        if ok and hashed is not None:
            _VERIFIED[(id(self), user)] = _digest(user, password)
            return True
        return False

    def middleware(self, open_paths: Iterable[str] = OPEN_PATHS,
                   also: Callable[[object], bool] | None = None):
        """aiohttp middleware: 401 with ``WWW-Authenticate: Basic`` unless the request has a valid user.

        ``open_paths`` (probes) pass; so does a request for which ``also(request)`` is true: a listener
        that checks credentials of its own (bearer tokens, HMAC signatures) in its handler."""
        from aiohttp import web

        opened = frozenset(open_paths)

        @web.middleware
        async def basic_auth(request, handler):
            if (self.basic_auth_users and request.path not in opened
                    and not (also is not None and also(request))
                    and not await self.authorized_async(request.headers.get("Authorization"))):
                return web.Response(status=401, text="authentication required\n",
                                    headers={"WWW-Authenticate": 'Basic realm="kubesight"'})
            return await handler(request)

        return basic_auth


def _credentials(authorization: str | None) -> tuple[str, str] | None:
    """(user, password) of a basic-auth header value; None when it carries none (a header of non-ASCII or raw bytes
    included: a 401, not a 500)."""
    if not authorization or authorization[:6].lower() != "basic ":
        return None
    try:
        user, sep, password = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeError):  # binascii.Error is a ValueError; so is a non-ASCII str
        return None
    return (user, password) if sep else None


def _digest(user: str, password: str) -> bytes:
    return hashlib.sha256(f"{user}\0{password}".encode("utf-8", "surrogateescape")).digest()


_CHECKS = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="bcrypt")  # checks off the event loops
_VERIFIED: dict[tuple[int, str], bytes] = {}
NONE = WebConfig()


def bearer_matches(authorization: str | None, tokens) -> bool:
    """Whether an ``Authorization`` header is ``Bearer <t>`` for one of ``tokens`` (bytes; several: a rotation, old
    and new both accepted), each compared in constant time.  A header that is not UTF-8 is compared as its raw
    bytes: a mismatch, never an error.

    >>> bearer_matches("Bearer new", [b"old", b"new"]), bearer_matches("Bearer x", [b"old"]), bearer_matches(None, [b"a"])
    (True, False, False)
    """
    if not tokens or not authorization or not authorization.startswith("Bearer "):
        return False
    got = authorization.removeprefix("Bearer ").strip().encode("utf-8", "surrogateescape")
    return any([hmac.compare_digest(got, t) for t in tokens])


def read_tokens(path: str | os.PathLike) -> list[str]:
    """The bearer tokens of a token file, one per line (several: a rotation); ConfigError if it cannot be read or
    holds none, since a listener given a token file and no token would let everyone in."""
    try:
        tokens = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read the token file: {getattr(exc, 'strerror', None) or exc}"]) from None
    if not tokens:
        raise ConfigError([f"{path}: the token file holds no token (refusing to run open)"])
    return tokens


def load(path: str | os.PathLike | None) -> WebConfig:
    """Read and check a web config (``None``: plain HTTP, no users).  Raises ``ConfigError``."""
    if path is None:
        return NONE
    doc = yamlconfig.read(path)
    cfg = doc.validate(WebConfig)
    # from the raw values: said with the schema's problems (an unknown key), not only once those are fixed
    base = ("tls_server_config",)
    raw = doc.data.get("tls_server_config") if isinstance(doc.data, dict) else None
    raw = raw if isinstance(raw, dict) else {}
    for key in ("cert_file", "key_file", "client_ca_file"):
        f = raw.get(key)
        if isinstance(f, str) and not Path(f).is_file():
            doc.error(base + (key,), f"no such file: {f}")
    mode = raw.get("client_auth_type")
    if mode in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and not raw.get("client_ca_file"):
        doc.error(base + ("client_auth_type",), f"{mode} needs client_ca_file")
    if cfg is not None and cfg.tls_server_config is not None and not doc.problems:
        try:
            cfg.ssl_context()
        except (OSError, ssl.SSLError) as exc:
            doc.error(base, f"cannot use the certificate, key or CA: {exc}")
    doc.raise_for_errors()
    return cfg


def client_ssl_context(ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None,
                       insecure_skip_verify: bool = False) -> ssl.SSLContext | None:
    """The context of an outbound HTTPS call (receivers, scrapes, the Kubernetes API): the server is verified
    against ``ca_file`` (None: the system's CAs), with a client certificate if given.  None: nothing to
    change from the default, which verifies (aiohttp ``ssl=True``)."""
    if not (ca_file or cert_file or insecure_skip_verify):
        return None
    ctx = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    if insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def is_loopback(host: str) -> bool:
    """>>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "", "10.0.0.1")]
    [True, True, True, False, False, False]
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen(host: str, *, what: str, writes: bool, authenticated: bool, insecure: bool = False) -> None:
    """Raise ``ListenRefused`` for a write endpoint on a non-loopback address without authentication."""
    if writes and not authenticated and not insecure and not is_loopback(host):
        raise ListenRefused(f"{what}: refusing to accept writes on {host or 'every address'} without "
                            "authentication: set basic_auth_users in a web config (--web-config), or say "
                            "--insecure-listen to accept it")


def add_arguments(parser) -> None:
    """``--web-config`` and ``--insecure-listen`` for a command that serves HTTP."""
    parser.add_argument("--web-config", metavar="PATH", default=None,
                        help="web config (Prometheus exporter-toolkit format: tls_server_config, "
                             "basic_auth_users) for this listener; default: settings' web_config")
    parser.add_argument("--insecure-listen", action="store_true", default=None,
                        help="accept writes on a non-loopback address without authentication")


def for_command(args, settings) -> tuple[WebConfig, bool]:
    """(the web config, insecure_listen) of a command: its flags, else settings.  Raises ``ConfigError``."""
    path = getattr(args, "web_config", None) or settings.web_config
    return load(path), bool(getattr(args, "insecure_listen", None) or settings.insecure_listen)
