"""Who may post: a shared bearer token or an HMAC-SHA256 signature of the raw body; nothing else.

>>> import hashlib, hmac
>>> a = Auth(tokens=[b"s3cret"], hmac_keys=[b"k"])
>>> a.check({"Authorization": "Bearer s3cret"}, b"{}"), a.check({"Authorization": "Bearer nope"}, b"{}")
(True, False)
>>> sig = "sha256=" + hmac.new(b"k", b"{}", hashlib.sha256).hexdigest()
>>> a.check({SIGNATURE_HEADER: sig}, b"{}"), a.check({SIGNATURE_HEADER: sig}, b"{ }"), a.check({}, b"{}")
(True, False, False)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from core.webconfig import bearer_matches

SIGNATURE_HEADER = "X-Kubesight-Signature"
_BEARER = re.compile(r"^Bearer ([\x21-\x7e]+)$")
_SIGNATURE = re.compile(r"^sha256=([0-9a-f]{64})$")


def _header(headers: Mapping[str, str], name: str) -> str:
    low = name.lower()
    return next((v for k, v in headers.items() if k.lower() == low), "")


@dataclass
class Auth:
    tokens: list[bytes] = field(default_factory=list)
    hmac_keys: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.tokens and not self.hmac_keys:
            raise ValueError("no credentials configured: give a token or an HMAC key (refusing to run open)")

    def presented(self, headers: Mapping[str, str]) -> bool:
        """Cheap pre-check before reading the body: does the request carry a credential we accept at all?"""
        return bool((self.tokens and _BEARER.match(_header(headers, "Authorization")))
                    or (self.hmac_keys and _SIGNATURE.match(_header(headers, SIGNATURE_HEADER).lower())))

    def bearer(self, headers: Mapping[str, str]) -> bool:
        """A valid bearer token: the credential that vouches for a body not read whole (over the size limit)."""
        return bearer_matches(_header(headers, "Authorization"), self.tokens)

    def check(self, headers: Mapping[str, str], body: bytes) -> bool:
        if self.bearer(headers):
            return True
        m = _SIGNATURE.match(_header(headers, SIGNATURE_HEADER).lower())
        if m and self.hmac_keys:
            for key in self.hmac_keys:
                if hmac.compare_digest(m.group(1), hmac.new(key, body, hashlib.sha256).hexdigest()):
                    return True
        return False


def sign(key: bytes, body: bytes) -> str:
    """The signature header value a sender computes: ``sha256=<hex HMAC-SHA256 of the raw body>``."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def read_secret(path: str | None, env: str) -> list[bytes]:
    """Secrets from a file (one per line: several allow rotation) or an environment variable.  A file that cannot be
    read is a ValueError naming it (a decoding error alone says which byte, not which file)."""
    text = ""
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    elif os.environ.get(env):
        text = os.environ[env]
    return [line.strip().encode() for line in text.splitlines() if line.strip()]
