"""Request bodies of the HTTP intakes (cloud events and audit webhook, remote-write), read up to their size limit.

A body over the limit is answered 413 and kept as a dead letter (its first ``PAYLOAD_LIMIT`` bytes, with
``TooLarge.reason`` and its size) where the sender is authenticated: a sender whose payloads grew past the limit is
seen on the dead-letter topic instead of dropped. Only that beginning is held in memory, never the whole body:
aiohttp's ``client_max_size`` read it whole or not at all (``request.read``), so these read ``request.content``
themselves. The rest is read and discarded, counted for the reason (``TooLarge.measure``), only when the sender
gave no Content-Length; with one, aiohttp discards it after the answer.

Past the limit, a body is read for at most ``MEASURE_SECONDS`` and ``MEASURE_BYTES`` more than the limit (its kept
beginning and its measure together): a sender that stalls mid-body, or streams without end, had no answer at all,
where aiohttp's own limit answered 413 at once. Stopped there, the size is not known: ``TooLarge.cut`` says why, the
reason says "at least" the bytes read, and the dead letter (``TooLarge.dead_letter``) holds them as its ``size``
and ``size_at_least``; the answer then closes the connection (``closing``), whose rest is never read.
"""

from __future__ import annotations

import asyncio

from aiohttp.web_protocol import RequestPayloadError

from core.records import PAYLOAD_LIMIT

MEASURE_SECONDS = 2.0  # a body over the limit: read on for at most this long, then answered
MEASURE_BYTES = 4 * 2**20  # and at most this far past the limit


class TooLarge(Exception):
    """A body over ``limit`` bytes: its first bytes (``head``) and its size (None: not known yet, or ever where the
    reading stopped short: ``cut`` says why, and the body has at least ``read`` bytes)."""

    def __init__(self, head: bytes, size: int | None, limit: int, read: int, cut: str | None = None,
                 until: float | None = None):
        super().__init__(f"body larger than {limit} bytes")
        self.head, self.size, self.limit, self.read, self.cut = head, size, limit, read, cut
        self.until = until  # the loop time the body is read until (``MEASURE_SECONDS`` after it passed the limit)

    @property
    def reason(self) -> str:
        """The dead letter's reason.

        >>> TooLarge(b"{", 5000, 2048, 1).reason, TooLarge(b"{", None, 2048, 2049).reason
        ('body of 5000 bytes over the 2048-byte limit', 'body of more than 2048 bytes over the 2048-byte limit')
        >>> TooLarge(b"{", None, 2048, 9000, cut="2 s passed").reason
        'body of at least 9000 bytes (not read to its end: 2 s passed) over the 2048-byte limit'
        """
        if self.size is not None:
            size = f"{self.size} bytes"
        elif self.cut:
            size = f"at least {self.read} bytes (not read to its end: {self.cut})"
        else:
            size = f"more than {self.limit} bytes"
        return f"body of {size} over the {self.limit}-byte limit"

    @property
    def dead_letter(self) -> dict:
        """The dead letter's ``size`` (``core.records.deadletter``): the body's; where it is not known, the bytes read,
        also as ``size_at_least`` (in ``where``: always there then, where ``size`` is left out when no more than the
        kept payload, which is then all that came).

        >>> TooLarge(b"{", 5000, 2048, 1).dead_letter, TooLarge(b"{", None, 2048, 9000, "2 s passed").dead_letter
        ({'size': 5000}, {'size': 9000, 'size_at_least': 9000})
        """
        return {"size": self.size} if self.size is not None else {"size": self.read, "size_at_least": self.read}

    async def measure(self, stream) -> None:
        """Read the rest of a body without Content-Length, discarding it, to know its ``size``; for at most
        ``MEASURE_SECONDS`` since it passed the limit, up to ``MEASURE_BYTES`` past the limit (else ``cut``)."""
        if self.size is not None or self.cut:
            return
        most = self.limit + MEASURE_BYTES

        async def rest():
            while self.read < most:
                chunk = await stream.readany()
                if not chunk:
                    self.size = self.read
                    return
                self.read += len(chunk)

        self.cut = await _bounded(rest(), self.until)
        if self.size is None and not self.cut:
            self.cut = f"{MEASURE_BYTES} bytes past the limit read"


def _deadline() -> float:
    return asyncio.get_running_loop().time() + MEASURE_SECONDS


async def _bounded(reading, until: float | None) -> str | None:
    """Await ``reading`` until the loop time ``until`` (None: ``MEASURE_SECONDS`` from now): why it stopped short, or
    None."""
    try:
        async with asyncio.timeout_at(_deadline() if until is None else until):
            await reading
    except TimeoutError:
        return f"{MEASURE_SECONDS:g} s passed"
    except (ConnectionError, RequestPayloadError) as exc:  # the sender went away, or broke the chunk framing
        return f"the body broke off ({exc})"
    return None


async def _up_to(stream, n: int, into: bytearray | None = None) -> bytes:
    """The next ``n`` bytes of ``stream`` (an aiohttp ``StreamReader``), fewer where the body ends (appended to
    ``into``, which holds what was read where the reading is stopped)."""
    buf = bytearray() if into is None else into
    end = len(buf) + n
    while len(buf) < end:
        chunk = await stream.read(end - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


async def read_body(request, limit: int, keep: int = PAYLOAD_LIMIT) -> bytes:
    """The whole body, at most ``limit`` bytes as sent; else ``TooLarge`` with its first ``keep`` bytes.

    A Content-Length over ``limit`` is refused after reading ``keep`` bytes; a body without one after ``limit + 1``
    (it may be under the limit: it is read until it is not), or ``keep`` if more; the kept bytes are read for at
    most ``MEASURE_SECONDS`` (then ``cut``, with what came by then), a measure after them until the same time.
    aiohttp's ``RequestPayloadError`` (broken chunk framing) passes through, under the limit."""
    length = request.content_length
    if length is not None and length > limit:
        head = bytearray()
        cut = await _bounded(_up_to(request.content, min(keep, length), into=head), None)
        raise TooLarge(bytes(head), length, limit, len(head), cut)
    body = await _up_to(request.content, limit + 1)
    if len(body) > limit:
        head, cut, until = bytearray(body), None, _deadline()
        if keep > len(head):
            cut = await _bounded(_up_to(request.content, keep - len(head), into=head), until)
        raise TooLarge(bytes(head[:keep]), None, limit, len(head), cut, until)
    return body


async def closing(request, response):
    """``response`` sent, then the connection closed: a body not read to its end (``TooLarge.cut``) would otherwise
    be read on by aiohttp after the answer (its ``lingering_time``), a sender that streams without end for that long."""
    response.force_close()  # Connection: close
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response
