"""Where kernel lines come from: /dev/kmsg (record per read, EPIPE on overrun), files, folders, stdin.

Every source yields ``Item``s: a parsed line with its position (kmsg sequence number, or line
number in a file or on stdin), a bad line with the reason, a ``gap`` (records lost), or an ``idle`` tick
(no input for a while: open reports may be emitted).

>>> items = list(from_lines(["6,10,5000000,-;eth0: Link is Down", " SUBSYSTEM=net", " DEVICE=n2", "6,12,6000000,-;x"]))
>>> [(i.kind, i.pos, i.line.seq) for i in items]
[('line', 1, 10), ('line', 4, 12)]
>>> items[0].line.dict
{'SUBSYSTEM': 'net', 'DEVICE': 'n2'}
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import re
import select
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path

import orjson

from collectors.kernel.lines import Line, LineError, Stamps, journal_entry, parse_line

MAX_LINE = 65536
_ESC = re.compile(r"\\x([0-9a-f]{2})")


@dataclass(slots=True)
class Item:
    kind: str  # line | bad | gap | idle | file
    pos: int = 0
    line: Line | None = None
    raw: str = ""
    reason: str = ""
    where: dict = field(default_factory=dict)  # file: the file's identity (see ``file_identity``)
    missed: int = 0  # gap: how many records were lost
    sub: int = 0  # bad: n-th bad record after the same position
    after: bool = False  # bad: sits after record `pos` (a torn kmsg record has no sequence number of its own)
    cause: str = ""  # gap: overrun | while-stopped
    # line, bad: from a file's last line, not ended by a newline yet (its writer may be writing it);
    # file: the file ends with such a line
    partial: bool = False
    reopen: Callable[[Path], Iterator[Item]] | None = None  # file: reads another file as this one is read
    # file: the stamps its lines are read with; a reader that knows where the stream was before this file (the file
    # that rotation replaced by it) sets their ``last`` before reading on
    stamps: Stamps | None = None


def _unescape(text: str) -> str:
    return _ESC.sub(lambda m: chr(int(m.group(1), 16)), text) if "\\x" in text else text


def parse_record(rec: str, year: int | None = None) -> list[Line]:
    """One /dev/kmsg record (header;message + " KEY=value" dictionary lines) -> its Line(s).

    The kernel escapes newlines inside a message as ``\\x0a``; such a message becomes several
    Lines with the same sequence number.
    """
    head, *dict_lines = rec.rstrip("\n").split("\n")
    ln = parse_line(head, year=year)
    if ln.shape != "kmsg":
        raise LineError("not a /dev/kmsg record (expected 'prio,seq,usec,flags;message')")
    for d in dict_lines:
        k, sep, v = d.strip().partition("=")
        if sep:
            ln.dict[k] = v
    text = _unescape(ln.text)
    if "\n" not in text:
        ln.text = text
        return [ln]
    out = []
    for part in text.split("\n"):
        out.append(Line(part, "kmsg", prio=ln.prio, seq=ln.seq, mono=ln.mono, ctx=ln.ctx, dict=ln.dict))
    return out


def from_lines(lines: Iterable[str | None], *, start: int = 1, year: int | None = None,
               where: dict | None = None, tz: tzinfo | None = None, stamps: Stamps | None = None) -> Iterator[Item]:
    """Text lines (any shape, mixed) -> Items; kmsg dictionary lines join their record.

    ``None`` in ``lines`` means the writer went quiet: it becomes an ``idle`` item. ``tz``: the zone
    of stamps without one (syslog, dmesg -T; None: this machine's). ``stamps``: the stream's stamps read
    before these lines (a new ``Stamps`` when they start it).
    """
    where = where or {}
    # the lines' order tells which pass of the hour repeated when summer time ends a local stamp is from
    stamps = stamps if stamps is not None else Stamps()
    pending: tuple[int, str] | None = None  # a kmsg record waiting for its dictionary lines
    dict_lines: list[str] = []

    def emit_pending():
        no, raw = pending
        try:
            for ln in parse_record("\n".join([raw, *dict_lines]), year):
                yield Item("line", no, ln, raw)
        except LineError as exc:
            yield Item("bad", no, raw=raw, reason=str(exc), where={**where, "line": no})

    export: dict | None = None  # a `journalctl -o export` entry being collected (KEY=value lines)
    export_no = 0
    no = start - 1
    for raw in lines:
        if raw is None:
            if pending is not None:
                yield from emit_pending()
                pending, dict_lines = None, []
            yield Item("idle")
            continue
        no += 1
        raw = raw.rstrip("\r\n")
        if export is not None:
            if raw:
                k, sep, v = raw.partition("=")
                if sep:
                    export[k] = v
                continue
            try:
                yield Item("line", export_no, journal_entry(export, "journal-export"), "")
            except LineError as exc:
                yield Item("bad", export_no, raw=orjson.dumps(export).decode(), reason=str(exc),
                           where={**where, "line": export_no})
            export = None
            continue
        if raw.startswith("__CURSOR="):
            export, export_no = {}, no
            continue
        if pending is not None:
            if raw.startswith(" ") and "=" in raw and not raw.lstrip().startswith(("[", "?")):
                dict_lines.append(raw)
                continue
            yield from emit_pending()
            pending, dict_lines = None, []
        if len(raw) > MAX_LINE:
            yield Item("bad", no, raw=raw[:MAX_LINE], reason=f"line longer than {MAX_LINE} characters",
                       where={**where, "line": no})
            continue
        if raw[:1].isdigit() and ";" in raw[:64]:
            try:
                ln = parse_line(raw, year=year, tz=tz, stamps=stamps)
            except LineError as exc:
                yield Item("bad", no, raw=raw, reason=str(exc), where={**where, "line": no})
                continue
            if ln.shape == "kmsg":
                pending = (no, raw)
                continue
            yield Item("line", no, ln, raw)
            continue
        try:
            ln = parse_line(raw, year=year, tz=tz, stamps=stamps)
        except LineError as exc:
            yield Item("bad", no, raw=raw, reason=str(exc), where={**where, "line": no})
            continue
        yield Item("line", no, ln, raw)
    if pending is not None:
        yield from emit_pending()
    if export:
        try:
            yield Item("line", export_no, journal_entry(export, "journal-export"), "")
        except LineError as exc:
            yield Item("bad", export_no, raw=orjson.dumps(export).decode(), reason=str(exc),
                       where={**where, "line": export_no})


def _text_lines(data: bytes) -> list[str]:
    return data.decode("utf-8", "replace").splitlines()


def _head(first: bytes) -> str:
    return hashlib.blake2b(first, digest_size=8).hexdigest()


def file_identity(st: os.stat_result, data: bytes) -> dict:
    """What tells a log file from the one that replaced it (logrotate, truncation): inode, size, first line.

    >>> a = file_identity(os.stat_result((0, 7, 0, 0, 0, 0, 0, 0, 0, 0)), b"Mar 28 08:00 x\\nnext\\n")
    >>> a["inode"], a["size"]
    (7, 20)
    >>> same_file(a, {**a, "size": 40}), same_file(a, {**a, "size": 10}), same_file(a, {**a, "inode": 8})
    (True, False, False)
    """
    nl = data.find(b"\n")
    first = data[:nl + 1] if nl >= 0 else data
    return {"inode": st.st_ino, "size": len(data), "head": _head(first)}


def same_file(before: dict, now: dict) -> bool:
    """Is ``now`` the file ``before`` described, grown or not: same inode and first line, not shorter."""
    return (before.get("inode") == now.get("inode") and before.get("head") == now.get("head")
            and int(before.get("size", 0)) <= int(now.get("size", 0)))


def find_rotated(path: str | Path, saved: dict) -> Path | None:
    """Where rotation put the file generation ``saved`` (a ``file_identity``) once ``path`` names another one.

    Looked for next to ``path`` under a longer name (kern.log.1, kern.log-20250328): the same inode
    (logrotate moved it) or else a copy (copytruncate), each with the same first line and not shorter.
    None when it is not there (deleted, compressed).
    """
    p = Path(path)
    found = []
    for s in sorted(p.parent.glob(glob.escape(p.name) + "?*")):
        try:
            with open(s, "rb") as fh:
                st = os.fstat(fh.fileno())
                first = fh.readline()
        except OSError:  # a folder, gone meanwhile, not ours to read: not the generation looked for
            continue
        if _head(first) == saved.get("head") and st.st_size >= int(saved.get("size", 0)):
            found.append((st.st_ino != saved.get("inode"), s))
    return min(found)[1] if found else None


def from_path(path: str | Path, *, year: int | None = None, tz: tzinfo | None = None) -> Iterator[Item]:
    """A file, or every file under a folder (sorted; hidden files skipped), one ``file`` item each.

    The ``file`` item's ``where`` is the identity of what was read (``file_identity``) and its
    ``lines``, the number of lines; both leave out a last line not ended by a newline, whose items
    come last and are marked ``partial``: its writer may not be done with it, so a reader that goes
    on later (a checkpoint) leaves it for then, and one that does not can take it as it is.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "kern.log"
    >>> _ = p.write_bytes(b"[ 1.0] one\\n[ 2.0] EXT4-fs")
    >>> [(i.kind, i.pos, i.partial) for i in from_path(p)]
    [('file', 0, True), ('line', 1, False), ('line', 2, True)]
    >>> next(from_path(p)).where["size"], next(from_path(p)).where["lines"]
    (11, 1)
    """
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file() and not any(x.startswith(".") for x in f.relative_to(p).parts)) \
        if p.is_dir() else [p]

    def reopen(other: Path) -> Iterator[Item]:
        return from_path(other, year=year, tz=tz)

    for f in files:
        with open(f, "rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read()
        cut = data.rfind(b"\n") + 1
        done, tail = data[:cut], data[cut:]
        lines = _text_lines(done)
        stamps = Stamps()
        yield Item("file", raw=str(f), where={**file_identity(st, done), "lines": len(lines)}, partial=bool(tail),
                   reopen=reopen, stamps=stamps)
        yield from from_lines(lines, year=year, where={"file": str(f)}, tz=tz, stamps=stamps)
        if tail:  # parsed on its own: a half-written line joins no record above it (its stamp follows theirs)
            for it in from_lines(_text_lines(tail), start=len(lines) + 1, year=year, where={"file": str(f)}, tz=tz,
                                 stamps=stamps):
                it.partial = True
                yield it


def _stream_lines(fd: int, idle: float | None) -> Iterator[str | None]:
    """Lines from a descriptor (pipe, tty, file); None after ``idle`` seconds without data.

    Each read is searched once for its newlines (re-splitting the whole buffer on every read took 15 s and 144 MB for
    one 40 MB line); a line is held to its first ``4 * (MAX_LINE + 1)`` bytes, more than ``MAX_LINE`` characters in
    any encoding, so ``from_lines`` dead-letters it as too long and the rest of it is read past, not kept."""
    cap = 4 * (MAX_LINE + 1)
    parts: list[bytes] = []
    held = 0
    while True:
        if idle is not None:
            r, _, _ = select.select([fd], [], [], idle)
            if not r:
                yield None
                continue
        data = os.read(fd, 65536)
        if not data:
            break
        start = 0
        while (nl := data.find(b"\n", start)) >= 0:
            if held < cap:
                parts.append(data[start:min(nl, start + cap - held)])
            yield b"".join(parts).decode("utf-8", "replace")
            parts, held = [], 0
            start = nl + 1
        if start < len(data) and held < cap:
            piece = data[start:start + cap - held]
            parts.append(piece)
            held += len(piece)
    if held:
        yield b"".join(parts).decode("utf-8", "replace")


def from_stream(fd: int = 0, *, idle: float | None = 2.0, year: int | None = None,
                tz: tzinfo | None = None) -> Iterator[Item]:
    """Lines from a descriptor (stdin), any shape; ``idle`` items while the writer is quiet."""
    return from_lines(_stream_lines(fd, idle), year=year, where={"file": "-"}, tz=tz)


def kmsg_items(reads: Iterable[bytes | OSError | None], *, after: int | None = None,
               path: str = "/dev/kmsg") -> Iterator[Item]:
    """What successive read()s of /dev/kmsg returned (a record, an EPIPE error, None = idle) -> Items.

    ``after``: last sequence number already handled (skipped; a jump past it is a ``gap`` with
    cause ``while-stopped``). EPIPE means the ring buffer overwrote records we had not read yet;
    the next record's sequence number says how many (``gap`` with cause ``overrun``).

    >>> recs = [b"6,7,1,-;a", BrokenPipeError(32, "Broken pipe"), b"6,10,2,-;b"]
    >>> [(i.kind, i.pos, i.missed, i.cause) for i in kmsg_items(recs, after=6)]
    [('line', 7, 0, ''), ('gap', 8, 2, 'overrun'), ('line', 10, 0, '')]
    """
    expected = None if after is None else after + 1
    cause = "while-stopped"
    last, nbad = (after if after is not None else -1), 0
    for data in reads:
        if data is None:
            yield Item("idle")
            continue
        if isinstance(data, OSError):
            if data.errno == errno.EPIPE:
                cause = "overrun"
                continue
            raise data
        rec = data.decode("utf-8", "replace")
        try:
            lines = parse_record(rec)
        except LineError as exc:
            nbad += 1
            yield Item("bad", pos=last, raw=rec, reason=str(exc), where={"file": path, "after_seq": last},
                       sub=nbad, after=True)
            continue
        seq = lines[0].seq
        last, nbad = seq, 0
        if after is not None and seq <= after:
            continue
        if expected is not None and seq > expected:
            yield Item("gap", pos=expected, missed=seq - expected, cause=cause,
                       where={"from_seq": expected, "to_seq": seq - 1})
        cause = "overrun"
        expected = seq + 1
        for ln in lines:
            yield Item("line", seq, ln, rec)


def _kmsg_reads(path: str, follow: bool, idle: float) -> Iterator[bytes | OSError | None]:
    if os.path.isdir(path):  # os.open of a directory succeeds and its read fails without naming it
        raise IsADirectoryError(21, "Is a directory (expected the kmsg device or a file)", path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                data = os.read(fd, 16384)  # one record per read; records are at most ~8 KiB
            except BlockingIOError:
                if not follow:
                    return
                r, _, _ = select.select([fd], [], [], idle)
                if not r:
                    yield None
                continue
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    yield exc
                    continue
                raise
            if not data:
                return
            yield data
    finally:
        os.close(fd)


def read_kmsg(path: str = "/dev/kmsg", *, after: int | None = None, follow: bool = True,
              idle: float = 2.0) -> Iterator[Item]:
    """Records from /dev/kmsg (one per read), from the oldest still in the ring buffer; see ``kmsg_items``.

    ``follow=False`` stops at the end of the buffer instead of waiting for new records.
    """
    return kmsg_items(_kmsg_reads(path, follow, idle), after=after, path=path)


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def stdin_fd() -> int:
    return sys.stdin.fileno()
