"""The kernel collector loop: items from a source -> classifier -> sink, with checkpoints.

Bad lines go to the dead-letter topic with their reason; lost kmsg records become a
``KernelLogLost`` event saying how many; a checkpoint is saved only after the sink has
flushed (acks=all), so a restart neither loses nor repeats events.

A checkpoint of a file also holds the file's identity (inode, size, first line): when the file
read after a restart is not that one grown (logrotate made a new one, it was truncated), the saved
line number means nothing there. The rest of the file it was is read first, from where rotation put
it (kern.log.1), or a ``KernelLogLost`` event says it could not be; then the new file from line 1.

A checkpoint also holds the file's last local time stamp (``stamp``): a new file's first stamps in the hour repeated
when summer time ends are read after it (``collectors.kernel.lines.Stamps``), as one stream: a restart that finds
kern.log rotated inside that hour does not put the new file's first lines of its second pass an hour early.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from collectors.kernel.classify import Classifier
from collectors.kernel.sources import Item, find_rotated, same_file
from core.records import Entity, Event

ORIGIN = "collector/kernel"


class SelfMetrics:
    """The collector's own counters, read from it when scraped, in a registry of its own (``serve_for`` serves it on
    ``/metrics``): its totals were printed only on exit, and a follower of /dev/kmsg never exits."""

    def __init__(self, collector: KernelCollector, registry=None):
        from prometheus_client import CollectorRegistry

        self.c = collector
        self.registry = registry or CollectorRegistry()
        self.registry.register(self)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        c = self.c
        yield CounterMetricFamily("kubesight_kernel_lines", "kernel log lines read", value=c.lines)
        yield CounterMetricFamily("kubesight_kernel_events", "events produced (KernelLogLost included)", value=c.events)
        yield CounterMetricFamily("kubesight_kernel_deadletters", "unreadable lines sent to the dead-letter topic",
                                  value=c.bad)
        yield CounterMetricFamily("kubesight_kernel_events_skipped", "events not produced again after a restart "
                                  "(produced before it, per the checkpoint)", value=c.skipped)


class KernelCollector:
    def __init__(self, classifier: Classifier, sink, *, checkpoint=None, source_id: str = "",
                 commit_lines: int = 5000, commit_seconds: float = 1.0):
        self.c = classifier
        self.sink = sink
        self.cp = checkpoint
        self.source_id = source_id
        self.commit_lines = commit_lines
        self.commit_seconds = commit_seconds
        self.resume_pos = -1
        self.skip: set[int] = set()
        self.emitted: set[int] = set()  # start positions produced after the last safe position
        self.dead: set[str] = set()  # "pos.n" of dead-lettered lines at or after the last safe position
        self.skip_dead: set[str] = set()
        self.last_pos = -1
        self.lines = 0
        self.events = 0
        self.bad = 0
        self.skipped = 0
        self.saved_file: dict | None = None  # identity of the file the loaded checkpoint was taken on
        self.file_id: dict | None = None  # identity of the file being read
        self.grown = True  # the file has lines the last run did not see (or it ends inside a line)
        self.stamps = None  # the Stamps of the file being read (``Item.stamps``)
        self.saved_stamp: float | None = None  # its last local stamp at the loaded checkpoint
        self._since, self._t_commit = 0, 0.0  # lines since the last commit, and when that was

    # ------------------------------------------------------------ checkpoints

    def resume(self) -> int | None:
        """Load the checkpoint for this source; returns the last handled position (None: none)."""
        if self.cp is None:
            return None
        cp = self.cp.load()
        if not cp or cp.get("source") != self.source_id:
            return None
        self.resume_pos = int(cp.get("pos", -1))
        self.skip = {int(p) for p in cp.get("emitted", [])}
        self.emitted = set(self.skip)
        self.skip_dead = {str(k) for k in cp.get("dead", [])}
        self.dead = set(self.skip_dead)
        self.last_pos = self.resume_pos
        self.saved_file = cp.get("file") if isinstance(cp.get("file"), dict) else None
        self.saved_stamp = float(cp["stamp"]) if isinstance(cp.get("stamp"), int | float) else None
        return self.resume_pos

    def _forget(self) -> None:
        """The loaded checkpoint is of another file that had the same name: read this one from its start."""
        self.resume_pos = self.last_pos = -1
        self.skip, self.emitted, self.skip_dead, self.dead = set(), set(), set(), set()

    def commit(self) -> None:
        self.sink.flush()
        if self.cp is None:
            return
        low = self.c.low_water()
        safe = self.last_pos if low is None else low - 1
        self.emitted = {p for p in self.emitted if p > safe}
        self.dead = {k for k in self.dead if int(k.split(".")[0]) >= safe}
        cp = {"source": self.source_id, "pos": safe, "emitted": sorted(self.emitted),
              "dead": sorted(self.dead), "time": time.time()}
        if self.file_id is not None:
            cp["file"] = self.file_id
        if self.stamps is not None and self.stamps.last is not None:
            cp["stamp"] = self.stamps.last
        self.cp.save(cp)

    # ------------------------------------------------------------ loop

    def _send(self, events: list[Event]) -> None:
        for e in events:
            pos = self.c.pos_of.pop(e.id, None)
            if pos is not None and pos in self.skip:
                self.skipped += 1
                continue
            if pos is not None:
                self.emitted.add(pos)
            self.sink.send(e)
            self.events += 1

    def run(self, items: Iterable[Item], *, max_lines: int | None = None) -> None:
        """Consume ``items`` until they end (or ``max_lines`` lines were handled), then flush and commit.

        Stopping at ``max_lines`` leaves open reports unsent, exactly like a crash would: the
        checkpoint then points before them, so the next run re-reads them. So does the end of a file
        read with a checkpoint that grew since the last run (or ends in the middle of a line): its
        writer may still be adding to the reports open at its end, and a run that finds the file as
        the last one left it sends them.
        """
        self._since, self._t_commit = 0, time.monotonic()
        for it in items:
            if self._step(it, max_lines):
                return
        if self.cp is not None and self.file_id is not None and self.grown:
            self.commit()
            return
        self._send(self.c.flush())
        self.commit()

    def _step(self, it: Item, max_lines: int | None) -> bool:
        """Handle one item; True when ``max_lines`` lines were handled (committed: stop there)."""
        if it.partial and it.kind != "file" and self.cp is not None:
            return False  # the file's last line, still being written: the next run reads it whole
        if it.kind == "line":
            if it.pos <= self.resume_pos:
                return False
            self.lines += 1
            self._since += 1
            self._send(self.c.feed(it.line, it.pos))
            self.last_pos = max(self.last_pos, it.pos)
        elif it.kind == "bad":  # remembered in the checkpoint like an event: dead-lettered once
            key = f"{it.pos}.{it.sub}"
            if it.pos < self.resume_pos or key in self.skip_dead:
                return False
            self.bad += 1
            self.sink.reject(it.reason, it.raw, origin=ORIGIN, key=self._key(), node=self.c.node, **it.where)
            self.dead.add(key)
            if not it.after:
                self.last_pos = max(self.last_pos, it.pos)
        elif it.kind == "gap":
            self._send([self._lost(it)])
        elif it.kind == "idle":
            self._send(self.c.flush())
            self.commit()
            self._t_commit, self._since = time.monotonic(), 0
        elif it.kind == "file":  # a folder: reports never span two files
            self._send(self.c.flush())
            if it.where:
                saved = self.saved_file
                self.grown = (saved is None or it.partial or not same_file(saved, it.where)
                              or int(it.where["size"]) > int(saved.get("size", 0)))
                if saved is not None and not same_file(saved, it.where):
                    if self._rotated(it, saved, max_lines):
                        return True
                    self._forget()
                    if it.stamps is not None:  # the new file goes on from where the one it replaced ended
                        last = self.stamps.last if self.stamps is not None else None
                        it.stamps.last = last if last is not None else self.saved_stamp
                self.saved_file, self.file_id = None, it.where
            self.stamps = it.stamps
            self._read_as(it.raw, it.where)
        if self._since >= self.commit_lines or (
                self._since and time.monotonic() - self._t_commit >= self.commit_seconds):
            self.commit()
            self._t_commit, self._since = time.monotonic(), 0
        if max_lines is not None and self.lines >= max_lines:
            self.commit()
            return True
        return False

    def _read_as(self, path: str, identity: dict) -> None:
        """Events from now on come from the file ``path`` in the generation ``identity``.

        Their ids name the file by its resolved path (the same whatever path it was given by) and its
        generation (inode and first line): line 12 of the file logrotate or a truncation put in its
        place is another line, and its event another event.
        """
        self.c.file = path
        self.c.source_id = f"file:{Path(path).resolve()}"
        if identity:
            self.c.source_id += f"@{identity.get('inode')}:{identity.get('head')}"

    def _rotated(self, it: Item, saved: dict, max_lines: int | None) -> bool:
        """The file ``it`` is not the one the checkpoint was taken on: finish that one where rotation put it.

        The lines of it after the checkpoint are read (as from the file it was, so a re-read after a crash
        yields the same ids) before the new file; when it is not found, a ``KernelLogLost`` event says
        what was not read. True when ``max_lines`` stopped the reading (the checkpoint stays in it).
        """
        old = find_rotated(it.raw, saved) if it.reopen is not None else None
        if old is None:
            self._read_as(it.raw, saved)
            self._send([self._lost_file(it.raw, saved)])
            return False
        items = it.reopen(old)
        self.stamps = next(items).stamps  # its own ``file`` item: the identity that counts is the checkpoint's
        self.file_id = saved
        self._read_as(it.raw, saved)
        for x in items:
            x.partial = False  # rotated away: its writer moved on to the new file
            if self._step(x, max_lines):
                return True
        self._send(self.c.flush())
        return False

    def _key(self) -> bytes:
        return Entity(cluster=self.c.cluster, kind="Node", name=self.c.node, node=self.c.node).key()

    def _lost(self, it: Item) -> Event:
        c = self.c
        t = time.time()
        return Event(source="kernel", reason="KernelLogLost", time=t, type="Warning", severity="warning",
                     entity=Entity(cluster=c.cluster, kind="Node", name=c.node, node=c.node),
                     labels={"family": "system", "missed": str(it.missed), "cause": it.cause,
                             "from_seq": str(it.where.get("from_seq", "")), "to_seq": str(it.where.get("to_seq", "")),
                             "seq": str(it.pos)},
                     message=f"{it.missed} kernel log records were lost ({it.cause}): "
                             f"sequence {it.where.get('from_seq')}..{it.where.get('to_seq')} never read",
                     id=f"lost-{c.node}-{c.source_id}-{it.pos}")

    def _lost_file(self, path: str, saved: dict) -> Event:
        """What the previous generation of ``path`` (``saved``: its identity at the last checkpoint) still had
        unread when rotation or a truncation replaced it and it was not found (``find_rotated``): the lines
        after the checkpoint that were read but not yet handled, and whatever was written to it later (not known)."""
        c = self.c
        pos = max(self.resume_pos, 0)
        lines = int(saved.get("lines", pos))
        missed = max(lines - pos, 0)
        return Event(source="kernel", reason="KernelLogLost", time=time.time(), type="Warning", severity="warning",
                     entity=Entity(cluster=c.cluster, kind="Node", name=c.node, node=c.node),
                     labels={"family": "system", "missed": str(missed), "cause": "rotated", "file": path,
                             "inode": str(saved.get("inode", "")), "from_line": str(pos + 1),
                             "to_line": str(lines), "size": str(saved.get("size", ""))},
                     message=f"{path} was replaced (rotated or truncated) and its previous file was not found next to "
                             f"it: its lines after line {pos} were not read ({missed} of the {lines} lines, "
                             f"{saved.get('size')} bytes, it had when last read; any written to it later are lost too)",
                     id=f"lost-{c.node}-{c.source_id}-{pos + 1}")
