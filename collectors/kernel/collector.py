"""The kernel collector loop: items from a source -> classifier -> sink, with checkpoints.

Bad lines go to the dead-letter topic with their reason; lost kmsg records become a
``KernelLogLost`` event saying how many; a checkpoint is saved only after the sink has
flushed (acks=all), so a restart neither loses nor repeats events.

A checkpoint of a file also holds the file's identity (inode, size, first line): when the file
read after a restart is not that one grown (logrotate made a new one, it was truncated), the saved
line number means nothing there and reading starts again at line 1.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from collectors.kernel.classify import Classifier
from collectors.kernel.sources import Item, same_file
from core.records import Entity, Event

ORIGIN = "collector/kernel"


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
        checkpoint then points before them, so the next run re-reads them.
        """
        since = 0
        t_commit = time.monotonic()
        for it in items:
            if it.kind == "line":
                if it.pos <= self.resume_pos:
                    continue
                self.lines += 1
                since += 1
                self._send(self.c.feed(it.line, it.pos))
                self.last_pos = max(self.last_pos, it.pos)
            elif it.kind == "bad":  # remembered in the checkpoint like an event: dead-lettered once
                key = f"{it.pos}.{it.sub}"
                if it.pos < self.resume_pos or key in self.skip_dead:
                    continue
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
                t_commit, since = time.monotonic(), 0
            elif it.kind == "file":  # a folder: reports never span two files
                self._send(self.c.flush())
                if it.where:
                    if self.saved_file is not None and not same_file(self.saved_file, it.where):
                        self._forget()
                    self.saved_file, self.file_id = None, it.where
                self.c.source_id = it.raw
                self.c.file = it.raw
            if since >= self.commit_lines or (since and time.monotonic() - t_commit >= self.commit_seconds):
                self.commit()
                t_commit, since = time.monotonic(), 0
            if max_lines is not None and self.lines >= max_lines:
                self.commit()
                return
        self._send(self.c.flush())
        self.commit()

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
