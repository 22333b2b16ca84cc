"""Kernel log line shapes: raw /dev/kmsg, ``[ 1.2]``, ``[..][ T1]``, syslog, ``dmesg -T``, pstore, journal.

``parse_line`` strips whatever prefix a line carries and returns a ``Line`` with the kernel
message and the position/time information the prefix held.

>>> parse_line("6,3964,206764307,-;nvidia-nvswitch2: open (major=510)").seq
3964
>>> ln = parse_line("[  990.309025][    C0] rcu: INFO: rcu_preempt self-detected stall on CPU")
>>> ln.mono, ln.ctx, ln.text
(990.309025, 'C0', 'rcu: INFO: rcu_preempt self-detected stall on CPU')
>>> parse_line("<4>[  201.668783] PGD 0 ").prio
4
>>> parse_line("4,100,5000000,-,caller=T42;INFO: task jbd2/sda1-8:42 blocked for more than 120 seconds.").ctx
'T42'

``dmesg -T`` and syslog stamps are the local time of the node that wrote them: ``tz`` names that
zone (default: this machine's):

>>> parse_line("[Sun Feb 23 16:24:18 2025] NVRM: GPU Board Serial Number: 1", tz=UTC).wall
1740327858.0
>>> parse_line("[Sun Feb 23 16:24:18 2025] NVRM: GPU Board Serial Number: 1", tz=ZoneInfo("Asia/Shanghai")).wall
1740299058.0
>>> parse_line("Jan  2 15:04:05 node-1 kernel: [ 5.000000] EXT4-fs error x", year=2024).text
'EXT4-fs error x'
>>> parse_line("kern  :warn  : 2025-01-21T04:41:44,283302+00:00 VFS: file-max limit 1000000 reached").wall
1737434504.283302
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from core.records import RecordError, check_time

LEVELS = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")


class LineError(ValueError):
    """A line that claims a known shape but breaks it (dead-lettered with this reason)."""


@dataclass(slots=True)
class Line:
    text: str  # the kernel message, prefix removed
    shape: str  # kmsg | pstore | bracket | dmesg-T | iso | syslog | journal | journal-monotonic | datetime | bare | header
    prio: int | None = None  # syslog level 0..7
    seq: int | None = None  # kmsg sequence number
    mono: float | None = None  # seconds since boot
    wall: float | None = None  # epoch seconds, when the line says
    ctx: str = ""  # printk caller: "T123" (task) or "C0" (cpu)
    host: str = ""
    ident: str = ""  # syslog identifier: "kernel", "dockerd", "systemd", ...; "" when the line does not say
    dict: dict = field(default_factory=dict)  # kmsg dictionary (continuation lines " KEY=value")


_KMSG = re.compile(r"^(\d+),(\d+),(\d+),([^;,]*)(,[^;]*)?;(.*)$", re.S)
_CALLER = re.compile(r",caller=([TC]\d+)(?:,|$)")  # CONFIG_PRINTK_CALLER: the task or CPU that printed
_KMSG_LOOSE = re.compile(r"^\d+,[^;]{0,60};")
_TS = r"\[\s*(\d+\.\d+)\](?:\[\s*([TC]\d+)\])?"
_PSTORE = re.compile(r"^<(\d)>" + _TS + r" ?(.*)$", re.S)
_BRACKET = re.compile(r"^" + _TS + r" ?(.*)$", re.S)
_DMESG_T = re.compile(r"^\[(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d \d{4})\] ?(.*)$", re.S)
_ISO = re.compile(r"^([a-z]+) *:([a-z]+) *: (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[,.]\d+)?(?:Z|[+-]\d\d:?\d\d)?) ?(.*)$", re.S)
_SYSLOG = re.compile(  # "<ts> <host> <ident>[pid]: message"; the kernel's may carry "[ 12.3]"
    r"^(?:<\d+>)?([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
    r" (\S+) ([^\s\[:]+)(?:\[\d+\])?: ?(?:" + _TS + r" ?)?(.*)$", re.S)
_HOST_KERNEL = re.compile(r"^(\S+) kernel: ?(.*)$", re.S)  # journalctl -o short-monotonic
_SYZ_TIME = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) (.*)$", re.S)
_NOISE = re.compile(r"^(?:\*\* \d+ printk messages dropped \*\* ?|[\w.-]+ login: )(?=.)")
_PSTORE_HEADER = re.compile(r"^(?:Panic|Oops|Emergency|Restart|Halt|Poweroff|Unknown)#\d+ Part\d+$")


def zone(name: str | None) -> tzinfo | None:
    """An IANA time zone name -> tzinfo (None: this machine's local time); ValueError if unknown.

    >>> zone("Europe/Berlin"), zone(None)
    (zoneinfo.ZoneInfo(key='Europe/Berlin'), None)
    """
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (expected an IANA name like Europe/Berlin or UTC)") from None


class Stamps:
    """The local-time stamps of one stream (a file, stdin) as read so far: what tells which pass of the hour that
    is repeated when summer time ends a stamp in it is from, which the stamp alone does not say.

    Lines come in the order they were written: a stamp of the repeated hour that reads behind the stream's last
    one, where its second reading does not, is from the second pass (Europe/Berlin: 02:59:59 CEST, then 02:05 CET).

    >>> from datetime import datetime
    >>> berlin, st = ZoneInfo("Europe/Berlin"), Stamps()
    >>> [datetime.fromtimestamp(st.read(datetime(2024, 10, 27, 2, m), berlin), UTC).strftime("%H:%M") for m in (40, 5, 30)]
    ['00:40', '01:05', '01:30']
    """

    __slots__ = ("last",)
    JITTER = 60.0  # s a stream's stamps may step back without a change of pass (lines of several writers interleave)

    def __init__(self) -> None:
        self.last: float | None = None  # epoch seconds of the stream's last local stamp

    def read(self, dt: datetime, tz: tzinfo | None) -> float:
        """``dt`` (no zone) read in ``tz`` (None: this machine's local time), then taken as the stream's last."""
        t = self.last = _local(dt, tz, self.last)
        return t


def _local(dt: datetime, tz: tzinfo | None, last: float | None = None) -> float:
    """A wall-clock time without zone, read in ``tz`` (None: this machine's local time).

    A time of the hour repeated when summer time ends has two readings (fold 0, the first pass, and fold 1); the
    first is taken unless it is behind ``last`` (the stream's previous stamp) by more than ``Stamps.JITTER`` while
    the second is not: the clock went back, so this is the second pass."""
    first = (dt.replace(tzinfo=tz) if tz is not None else dt).replace(fold=0).timestamp()
    if last is None or first >= last - Stamps.JITTER:
        return first
    # (a time skipped when summer time starts reads earlier with fold 1, so further behind: the first is taken)
    second = (dt.replace(tzinfo=tz) if tz is not None else dt).replace(fold=1).timestamp()
    return second if second >= last - Stamps.JITTER else first


def _iso(ts: str, tz: tzinfo | None = UTC, stamps: Stamps | None = None) -> float:
    ts = ts.replace(",", ".")
    if ts.endswith("Z"):
        ts = ts[:-1] + "+00:00"
    dt = datetime.fromisoformat(ts)
    if dt.tzinfo is None:
        return stamps.read(dt, tz) if stamps is not None else _local(dt, tz)
    return dt.timestamp()


MONO_MAX = 1e10  # s since boot a line may say (317 years): beyond it the stamp is not an uptime


def _checked(ln: Line) -> Line:
    """A line's times as a record can carry them: a wall time of the years 1-9999, an uptime below MONO_MAX."""
    if ln.wall is not None:
        try:
            check_time(ln.wall, "the line's time")
        except RecordError as exc:
            raise LineError(str(exc)) from None
    if ln.mono is not None and not 0 <= ln.mono < MONO_MAX:
        raise LineError(f"uptime {ln.mono!r} s is not one (0 to {MONO_MAX:.0e} s)")
    return ln


def parse_line(raw: str, *, year: int | None = None, tz: tzinfo | None = None, now: float | None = None,
               stamps: Stamps | None = None) -> Line:
    """One text line (no trailing newline) -> Line; ``year`` completes year-less syslog stamps.

    Without ``year``, a year-less stamp is of the current year in ``tz`` at ``now`` (epoch seconds; None: the
    clock), or of the one before when that would put it more than ``AHEAD`` in the future: a line read just
    after New Year's midnight is from the old year.

    Stamps without a zone (syslog, ``dmesg -T``, ISO times without offset) are local time in ``tz``
    (None: this machine's zone); ``stamps``, the stream's ``Stamps``, tells the two passes of the hour repeated
    when summer time ends apart.

    Raises ``LineError`` for a line that is recognisably broken (a NUL byte, a JSON journal line
    that is not valid JSON, a kmsg record header with non-numeric fields).
    """
    try:
        return _checked(_parse_line(raw, year, tz, now, stamps))
    except LineError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:  # a date that does not exist (Feb 30), a number too big
        raise LineError(f"unreadable line: {exc}") from None


def _parse_line(raw: str, year: int | None, tz: tzinfo | None, now: float | None, stamps: Stamps | None) -> Line:
    if "\x00" in raw:
        raise LineError("line contains NUL bytes (binary data, not a kernel log)")
    if raw[:2] == "**" or " login: " in raw[:64]:
        raw = _NOISE.sub("", raw, count=1)
    c = raw[:1]
    if c.isdigit():
        m = _KMSG.match(raw)
        if m:
            p = int(m.group(1))
            c = _CALLER.search(m.group(5)) if m.group(5) else None
            return Line(m.group(6), "kmsg", prio=p & 7, seq=int(m.group(2)), mono=int(m.group(3)) / 1e6,
                        ctx=c.group(1) if c else "")
        if _KMSG_LOOSE.match(raw) and raw.split(",", 1)[0].isdigit() and len(raw.split(";", 1)[0].split(",")) >= 3:
            raise LineError("malformed /dev/kmsg record header (expected 'prio,seq,usec,flags;message')")
        m = _SYZ_TIME.match(raw)
        if m:
            return Line(m.group(2), "datetime", wall=_iso(m.group(1).replace("/", "-").replace(" ", "T")))
        m = _SYSLOG.match(raw)
        if m:
            return _syslog(m, year, tz, now, stamps)
    elif c == "[":
        m = _BRACKET.match(raw)
        if m:
            text = m.group(3)
            if " kernel: " in text[:80]:
                h = _HOST_KERNEL.match(text)
                if h:
                    return Line(h.group(2), "journal-monotonic", mono=float(m.group(1)), host=h.group(1),
                                ident="kernel")
            return Line(text, "bracket", mono=float(m.group(1)), ctx=m.group(2) or "")
        m = _DMESG_T.match(raw)
        if m:
            dt = datetime.strptime(m.group(1).replace("  ", " "), "%b %d %H:%M:%S %Y")
            wall = stamps.read(dt, tz) if stamps is not None else _local(dt, tz)
            return Line(m.group(2), "dmesg-T", wall=wall)
    elif c == "<":
        m = _PSTORE.match(raw)
        if m:
            return Line(m.group(4), "pstore", prio=int(m.group(1)), mono=float(m.group(2)), ctx=m.group(3) or "")
        m = _SYSLOG.match(raw)
        if m:
            return _syslog(m, year, tz, now, stamps)
    elif c == "{" and raw[1:2] == '"':
        return _journal(raw)
    elif c.isalpha():
        if c == "k":
            m = _ISO.match(raw)
            if m and m.group(2) in LEVELS:
                return Line(m.group(4), "iso", prio=LEVELS.index(m.group(2)), wall=_iso(m.group(3), tz, stamps))
        m = _SYSLOG.match(raw)
        if m:
            return _syslog(m, year, tz, now, stamps)
        if _PSTORE_HEADER.match(raw):
            return Line("", "header")
    return Line(raw, "bare")


AHEAD = 86400.0  # s a year-less stamp may be ahead of now (the node's clock ahead of this one) and be of this year


def _syslog(m: re.Match, year: int | None, tz: tzinfo | None, now: float | None, stamps: Stamps | None) -> Line:
    ts, host, ident, mono, ctx, text = m.groups()
    if ts[0].isdigit():
        wall = _iso(ts, tz, stamps)
    else:
        ts, _, frac = ts.partition(".")
        stamp = ts.replace("  ", " ")
        if year:  # a given year is taken as given
            years: tuple[int, ...] = (year,)
        else:
            # the year where the node is: at 05:00 on Jan 1 in Tokyo it is still Dec 31 in UTC
            clock = datetime.now(tz) if now is None else datetime.fromtimestamp(now, tz)
            latest = clock.timestamp() + AHEAD
            # a line cannot come from the future: "Dec 31 23:59:50" read at 00:00:30 on Jan 1 is from the old year;
            # a year-less Feb 29 is from the latest leap year not ahead (four years back, read in a January)
            years = tuple(range(clock.year, clock.year - 5, -1))
        for y in years:
            try:
                dt = datetime.strptime(f"{y} {stamp}", "%Y %b %d %H:%M:%S")
            except ValueError:
                continue
            if year or _local(dt, tz) <= latest:
                break
        else:
            raise LineError(f"syslog time {ts!r} is not a date{f' in {year}' if year else ''}")
        wall = stamps.read(dt, tz) if stamps is not None else _local(dt, tz)
        wall += float(f"0.{frac}") if frac else 0.0
    return Line(text, "syslog", wall=wall, host=host, mono=float(mono) if mono else None, ctx=ctx or "", ident=ident)


def _journal(raw: str) -> Line:
    """``journalctl -k -o json`` line."""
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise LineError(f"journal JSON line is not valid JSON: {exc}") from None
    if not isinstance(d, dict):
        raise LineError("journal JSON line is not an object")
    return journal_entry(d, "journal")


def journal_entry(d: dict, shape: str = "journal") -> Line:
    """A journal entry (``journalctl -o json`` object or ``-o export`` fields) -> Line."""
    try:
        return _checked(_journal_entry(d, shape))
    except LineError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:  # MESSAGE as a list of other than bytes, a huge timestamp
        raise LineError(f"{shape} entry is unreadable: {exc}") from None


def _journal_entry(d: dict, shape: str) -> Line:
    if "MESSAGE" not in d:
        raise LineError(f"{shape} entry has no MESSAGE field")
    msg = d["MESSAGE"]
    if isinstance(msg, list):  # journald exports non-UTF-8 messages as byte arrays
        msg = bytes(msg).decode("utf-8", "replace")
    try:
        wall = int(d["__REALTIME_TIMESTAMP"]) / 1e6 if "__REALTIME_TIMESTAMP" in d else None
        mono_us = d.get("_SOURCE_MONOTONIC_TIMESTAMP", d.get("__MONOTONIC_TIMESTAMP"))
        mono = int(mono_us) / 1e6 if mono_us is not None else None
        prio = int(d["PRIORITY"]) if "PRIORITY" in d else None
    except (TypeError, ValueError) as exc:
        raise LineError(f"{shape} entry has a non-numeric timestamp or priority: {exc}") from None
    ident = str(d.get("SYSLOG_IDENTIFIER") or ("kernel" if d.get("_TRANSPORT") == "kernel" else ""))
    return Line(str(msg).rstrip("\n"), shape, prio=prio, wall=wall, mono=mono, host=str(d.get("_HOSTNAME", "")),
                ident=ident)
