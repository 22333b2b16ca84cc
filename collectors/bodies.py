"""Request bodies of the HTTP intakes (cloud events and audit webhook, remote-write), read up to their size limit.

A body over the limit is answered 413 and kept as a dead letter (its first ``PAYLOAD_LIMIT`` bytes, with
``TooLarge.reason`` and its size) where the sender is authenticated: a sender whose payloads grew past the limit is
seen on the dead-letter topic instead of dropped. Only that beginning is held in memory, never the whole body:
aiohttp's ``client_max_size`` read it whole or not at all (``request.read``), so these read ``request.content``
themselves. The rest is read and discarded, counted for the reason (``TooLarge.measure``), only when the sender
gave no Content-Length; with one, aiohttp discards it after the answer.
"""

from __future__ import annotations

from core.records import PAYLOAD_LIMIT


class TooLarge(Exception):
    """A body over ``limit`` bytes: its first bytes (``head``) and its size (None: not known yet)."""

    def __init__(self, head: bytes, size: int | None, limit: int, read: int):
        super().__init__(f"body larger than {limit} bytes")
        self.head, self.size, self.limit, self.read = head, size, limit, read

    @property
    def reason(self) -> str:
        """The dead letter's reason.

        >>> TooLarge(b"{", 5000, 2048, 1).reason, TooLarge(b"{", None, 2048, 2049).reason
        ('body of 5000 bytes over the 2048-byte limit', 'body of more than 2048 bytes over the 2048-byte limit')
        """
        return f"body of {self.size if self.size is not None else f'more than {self.limit}'} bytes over the " \
               f"{self.limit}-byte limit"

    async def measure(self, stream) -> None:
        """Read the rest of a body without Content-Length, discarding it, to know its ``size``."""
        while self.size is None:
            chunk = await stream.readany()
            self.read += len(chunk)
            if not chunk:
                self.size = self.read


async def _up_to(stream, n: int) -> bytes:
    """The next ``n`` bytes of ``stream`` (an aiohttp ``StreamReader``), fewer where the body ends."""
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


async def read_body(request, limit: int, keep: int = PAYLOAD_LIMIT) -> bytes:
    """The whole body, at most ``limit`` bytes as sent; else ``TooLarge`` with its first ``keep`` bytes.

    A Content-Length over ``limit`` is refused after reading ``keep`` bytes; a body without one after ``limit + 1``
    (it may be under the limit: it is read until it is not), or ``keep`` if more. aiohttp's ``RequestPayloadError`` (broken chunk framing)
    passes through."""
    length = request.content_length
    if length is not None and length > limit:
        head = await _up_to(request.content, min(keep, length))
        raise TooLarge(head, length, limit, len(head))
    body = await _up_to(request.content, limit + 1)
    if len(body) > limit:
        body += await _up_to(request.content, keep - len(body)) if keep > len(body) else b""
        raise TooLarge(body[:keep], None, limit, len(body))
    return body
