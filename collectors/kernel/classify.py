"""Kernel lines -> kernel Events: pattern matching, multi-line report grouping, enrichment.

Reports are grouped per printk caller (the ``[ T123]``/``[ C0]`` tag when the log has one), so
an oops interleaved with another task's lines still becomes one event.

>>> from collectors.kernel.lines import parse_line
>>> from collectors.kernel.patterns import load_patterns
>>> c = Classifier(load_patterns(), node="node-1", boot_time=1_700_000_000.0)
>>> text = '''[  100.000000] BUG: unable to handle kernel NULL pointer dereference at 0000000000000078
... [  100.000100] Oops: 0000 [#1] SMP
... [  100.000200] Call Trace:
... [  100.000300]  [<ffffffff8101b975>] ? sched_clock+0x5/0x10
... [  100.000400] ---[ end trace 61f6991dc9ee5be0 ]---
... [  101.000000] unregister_netdevice: waiting for lo to become free. Usage count = 1'''
>>> evs = [e for i, raw in enumerate(text.splitlines(), 1) for e in c.feed(parse_line(raw), i)] + c.flush()
>>> [(e.reason, e.labels["lines"], e.labels.get("bug")) for e in evs]
[('KernelOops', '5', 'null-pointer-dereference'), ('UnregisterNetDevice', '1', None)]
>>> evs[0].entity.kind, evs[0].entity.node, evs[0].time
('Node', 'node-1', 1700000100.0)

A syslog line names the host it came from, and that is the node (a file collected from node-7
read on another machine):

>>> line = "Nov 28 10:00:01 node-7 kernel: [  100.000000] unregister_netdevice: waiting for lo to become free. Usage count = 1"
>>> [(e.reason, e.entity.node, e.entity.name) for e in c.feed(parse_line(line, year=2026), 1) + c.flush()]
[('UnregisterNetDevice', 'node-7', 'node-7')]
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from collectors.kernel.enrich import XidCatalog, cper_labels, memcg_labels
from collectors.kernel.lines import Line
from collectors.kernel.patterns import Compiled, PatternSet
from core.records import Entity, Event


@dataclass(slots=True)
class _Report:
    pat: Compiled
    first: Line
    pos: int
    labels: dict
    lines: list[str] = field(default_factory=list)  # the first ones, enough for max_message characters
    n: int = 0  # lines in the report
    size: int = 0  # characters of all its lines joined by newlines
    last_mono: float | None = None
    last_wall: float | None = None
    opened_at: int = 0  # lines fed before the report opened

    def add(self, text: str, limit: int) -> None:
        """One more line; its text is kept only while the message (``limit`` characters) still needs it."""
        kept = self.size <= limit  # the lines so far are all kept and not yet past the limit
        self.size += len(text) + (1 if self.n else 0)
        self.n += 1
        if kept:
            self.lines.append(text)


class Classifier:
    """Feed ``Line``s in order with their position (kmsg seq or line number); get Events back.

    ``boot_time`` turns seconds-since-boot stamps into wall time; ``fallback_time`` dates lines
    that carry no time at all; ``source_id`` (boot id; a file's path and identity) makes event ids
    stable, so a re-read of the same input yields the same ids. An id is made of the source and the
    position of the report's first line, except on ``source_id`` "stdin": line numbers there restart
    at 1 on every run and name other lines, so the id is made of the line itself (text, time) and
    how many times that same line came before in this run.
    """

    def __init__(self, patterns: PatternSet, *, node: str = "", cluster: str = "default",
                 boot_time: float = 0.0, fallback_time: float = 0.0, source_id: str = "",
                 xid_catalog: XidCatalog | None = None):
        self.ps = patterns
        self.node = node
        self.cluster = cluster
        self.boot_time = boot_time
        self.fallback_time = fallback_time
        self.source_id = source_id
        self.xid = xid_catalog or patterns.xid_catalog
        self.open: dict[str, _Report] = {}
        self.gap = patterns.defaults.gap_seconds
        self.lines_seen = 0
        self.file = ""  # the log file being read (--from-file), added as label `file`
        self.pos_of: dict[str, int] = {}  # event id -> position of its first line (read and cleared by the collector)
        self.seen: dict[str, int] = {}  # stdin: first line of a report -> how many times it was seen

    # ------------------------------------------------------------ feeding

    def feed(self, line: Line, pos: int) -> list[Event]:
        self.lines_seen += 1
        text = line.text
        out: list[Event] = []
        # Reports group per printk caller; lines of other programs (syslog identifier) never join a kernel report.
        ctx = line.ctx or (line.ident if line.ident not in ("", "kernel") else "")
        if len(self.open) > 1 or (self.open and ctx not in self.open):
            out += self._expire(line, ctx)
        r = self.open.get(ctx)
        if r is not None and (self._gap(r, line) or r.n >= r.pat.max_lines):
            out.append(self._close(ctx))
            r = None
        hit = None
        if r is not None:
            pat = r.pat
            if pat.until is not None and pat.until.match(text):
                self._absorb(r, line, self.ps.match(text, line.ident))
                out.append(self._close(ctx))
                return out
            if pat.cont is not None:
                if pat.cont.match(text):
                    self._absorb(r, line, self.ps.match(text, line.ident))  # e.g. CPER "event severity" fills a label
                    return out
                out.append(self._close(ctx))
            else:
                hit = self.ps.match(text, line.ident)
                if hit is None:
                    self._absorb(r, line, None)
                    return out
                if pat.reason in hit[0].merge:
                    self._absorb(r, line, hit)
                    return out
                out.append(self._close(ctx))
        elif not text:
            return out
        if hit is None:
            hit = self.ps.match(text, line.ident)
            if hit is None:
                return out
        c, m = hit
        rep = _Report(c, line, pos, c.labels(m), opened_at=self.lines_seen)
        rep.add(text, self.ps.defaults.max_message)
        rep.last_mono, rep.last_wall = line.mono, line.wall
        if c.p.report:
            self.open[ctx] = rep
        else:
            out.append(self._event(rep))
        return out

    def flush(self) -> list[Event]:
        """Close every open report (end of input, or the live input went idle)."""
        reps = sorted(self.open.values(), key=lambda r: r.pos)
        self.open.clear()
        return [self._event(r) for r in reps]

    def low_water(self) -> int | None:
        """Position of the oldest line still held in an open report (None: nothing held)."""
        return min((r.pos for r in self.open.values()), default=None)

    # ------------------------------------------------------------ internals

    def _expire(self, line: Line, key: str) -> list[Event]:
        """Close other callers' reports that went quiet (time gap, or 4 x max_lines of other lines)."""
        out = []
        for ctx, r in list(self.open.items()):
            if ctx != key and (self._gap(r, line) or self.lines_seen - r.opened_at > 4 * r.pat.max_lines):
                out.append(self._close(ctx))
        return out

    def _gap(self, r: _Report, line: Line) -> bool:
        if r.last_mono is not None and line.mono is not None:
            return abs(line.mono - r.last_mono) > self.gap
        if r.last_wall is not None and line.wall is not None:
            return abs(line.wall - r.last_wall) > self.gap
        return False

    def _absorb(self, r: _Report, line: Line, hit) -> None:
        r.add(line.text, self.ps.defaults.max_message)
        if line.mono is not None:
            r.last_mono = line.mono
        if line.wall is not None:
            r.last_wall = line.wall
        if hit is not None and hit[0].reason == r.pat.reason:
            for k, v in hit[0].labels(hit[1]).items():
                r.labels.setdefault(k, v)

    def _close(self, ctx: str) -> Event:
        return self._event(self.open.pop(ctx))

    def _time(self, ln: Line) -> float:
        if ln.wall is not None:
            return ln.wall
        if ln.mono is not None:
            return self.boot_time + ln.mono
        return self.fallback_time

    def _event(self, r: _Report) -> Event:
        p = r.pat.p
        first = r.first
        labels = dict(p.labels)
        labels.update(r.labels)
        severity = p.severity
        node = first.host or self.node  # a syslog or journal line names its host: a collected file is another node's
        entity = Entity(cluster=self.cluster, kind="Node", name=node, node=node)
        if p.enrich == "memcg":
            path = labels.get("memcg") or labels.get("oom_memcg") or ""
            extra = memcg_labels(path) if path else {}
            labels.update(extra)
            if "pod_uid" in extra:
                entity = Entity(cluster=self.cluster, kind="Pod", uid=extra["pod_uid"], node=node)
        elif p.enrich == "xid" and labels.get("xid", "").isdigit():
            extra, severity = self.xid.labels(int(labels["xid"]), self.ps.xid.fatal, labels.get("detail", ""))
            labels.update(extra)
        elif p.enrich == "cper":
            extra, sev = cper_labels(labels)
            labels.update(extra)
            severity = sev or severity
        labels["pattern"] = p.id
        labels["lines"] = str(r.n)
        labels["title"] = r.lines[0][:512]
        if self.file:
            labels["file"] = self.file
        if first.seq is not None:
            labels["seq"] = str(first.seq)
        else:
            labels["line"] = str(r.pos)
        if first.ctx:
            labels["caller"] = first.ctx
        for k, v in first.dict.items():  # /dev/kmsg dictionary: SUBSYSTEM=pci, DEVICE=+pci:0000:00:1f.2
            labels.setdefault(f"kmsg_{k.lower()}", v)
        message = "\n".join(r.lines)
        limit = self.ps.defaults.max_message
        if r.size > limit:
            message = message[:limit] + f"\n... ({r.size - limit} more characters)"
        where: object = r.pos
        if self.source_id == "stdin":
            # the time is the line's own stamp, or when it arrived (unstamped live stdin): one line re-sent by a
            # restarted writer (journalctl -f repeats its last lines) keeps its id, another line gets another
            line = f"{first.text}|{first.seq}|{self._time(first)!r}"
            if len(self.seen) >= 65536:  # a repeat of the same line and time comes soon after it, not hours later
                self.seen.clear()
            n = self.seen[line] = self.seen.get(line, 0) + 1
            where = f"{line}|{n}"
        h = hashlib.blake2b(f"{self.cluster}|{node}|{self.source_id}|{where}|{p.reason}".encode(), digest_size=10)
        self.pos_of[h.hexdigest()] = r.pos
        return Event(source="kernel", reason=p.reason, time=self._time(first), type=p.type, severity=severity,
                     entity=entity, labels={k: str(v) for k, v in labels.items()}, message=message,
                     id=h.hexdigest())
