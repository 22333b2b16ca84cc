"""One list+watch loop per stream, in a thread: resume from the last resourceVersion, re-list on 410.

The watcher only reads; it puts what it read on a queue, in order, for the collector loop:

- ``("sync", stream, items, rv)``: a full list (first start without checkpoint, or after 410);
- ``("event", stream, type, obj, rv)``: a watch event (ADDED, MODIFIED, DELETED);
- ``("bookmark", stream, rv)``: progress without a change (allowWatchBookmarks);
- ``("bad", stream, reason, raw, rv)``: an unreadable watch line (dead-lettered by the loop).

After a dropped connection it watches again from the last resourceVersion it delivered, after
an exponential backoff with full jitter; a 410 (HTTP or a watch ERROR event) makes it re-list.
It keeps count of its failures and the time of its last success (``reconnects``, ``failing``,
``last_ok``) for the collector's ``/metrics`` and ``/ready``: with the API server gone the
warnings in the log were all there was.

A resourceVersion from a checkpoint is first compared with the cluster's current one (a list of
one object): one ahead of the cluster (etcd restored from a snapshot, a cluster rebuilt under the
same ``--cluster`` name) is treated like 410 and re-listed, since a watch from it would wait,
silent, for a revision the cluster reaches much later if ever (no 410 comes: it is not too old).
resourceVersions are opaque to clients, but etcd's are integers; when the two do not compare as
integers, the watcher re-lists too: a re-list is always safe, a blind watch is not.
"""

from __future__ import annotations

import logging
import threading
import time

import orjson

from collectors.kubernetes.api import Gone, lines
from core.retry import backoff

log = logging.getLogger("kubesight.collect.kubernetes")


def _rv(obj) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return str(meta.get("resourceVersion") or "") if isinstance(meta, dict) else ""


def _ahead(rv: str, current: str) -> str:
    """Why a watch from ``rv`` must not be trusted, given the cluster's ``current`` resourceVersion ("" = it can be).

    >>> _ahead("1200", "1500"), _ahead("1500", "1500"), _ahead("98765", "1500")
    ('', '', 'it is ahead of the cluster, at 1500')
    >>> _ahead("1200", "opaque-7")
    "it cannot be compared with the cluster's 'opaque-7'"
    """
    try:
        return "" if int(rv) <= int(current) else f"it is ahead of the cluster, at {current}"
    except (TypeError, ValueError):
        return f"it cannot be compared with the cluster's {current!r}"


class Watcher(threading.Thread):
    def __init__(self, api, stream, out, rv: str | None, stop: threading.Event, *, page: int = 500,
                 timeout_seconds: int = 300, backoff_base: float = 0.5, backoff_max: float = 30.0):
        super().__init__(name=f"watch-{stream.name}", daemon=True)
        self.api = api
        self.stream = stream
        self.out = out
        self.rv = rv or None
        self.stop = stop
        self.page = page
        self.timeout_seconds = timeout_seconds
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.relists = 0
        self.reconnects = 0  # list/watch failures (410 excluded: a re-list is the protocol, not a failure)
        self.last_ok = 0.0  # time.time() of the last list, watch opened, item or bookmark (0: none yet)
        self.failing = 0  # failures since then, in a row
        self.failing_since: float | None = None  # time.monotonic() of the first of them
        self.last_error = ""
        self._resp = None
        self._check = self.rv is not None  # a checkpoint's resourceVersion, not yet compared with the cluster's

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.5)
                return
            except Exception:  # queue.Full: the loop is behind (Kafka slow); wait, never drop
                continue

    def run(self) -> None:
        attempt = 0
        while not self.stop.is_set():
            try:
                if self.rv is None:
                    items, rv = self.api.list(self.stream, self.page)
                    self.relists += 1
                    self._ok()
                    self.rv = rv
                    self._put(("sync", self.stream.name, items, rv))
                    attempt = 0
                elif self._check:
                    why = _ahead(self.rv, self.api.resource_version(self.stream))
                    self._check = False
                    self._ok()
                    if why:
                        log.warning("%s: not resuming from the checkpointed resourceVersion %s: %s (etcd restored "
                                    "from a snapshot, or a new cluster under the same --cluster name?); re-listing",
                                    self.stream.name, self.rv, why)
                        self.rv = None
                        continue
                for item in self._watch(self.rv):
                    self._put(item)
                    self._ok()
                    attempt = 0
                self._ok()  # the server ended the watch (its timeoutSeconds): it answered all along
            except Gone as exc:
                log.info("%s: %s; re-listing", self.stream.name, exc)
                self.rv = None
                self.stop.wait(backoff(0, self.backoff_base, self.backoff_max))
            except Exception as exc:  # dropped connection, timeouts, 5xx: resume from self.rv
                if self.stop.is_set():
                    return
                self.reconnects += 1
                self.failing += 1
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                self.last_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                delay = backoff(attempt, self.backoff_base, self.backoff_max)
                attempt += 1
                log.warning("%s: list/watch failed (%s: %s); retry from resourceVersion %s in %.2fs",
                            self.stream.name, type(exc).__name__, " ".join(str(exc).split())[:300], self.rv, delay)
                self.stop.wait(delay)

    def _ok(self) -> None:
        """The API server answered this stream: the failures in a row are over."""
        self.last_ok = time.time()
        self.failing, self.failing_since = 0, None

    def down_for(self, after: int) -> float:
        """Seconds this stream has been failing, once its last ``after`` list/watch attempts in a row failed; else 0."""
        since = self.failing_since
        return time.monotonic() - since if since is not None and self.failing >= after else 0.0

    def _watch(self, rv: str):
        resp = self.api.watch(self.stream, rv, self.timeout_seconds)
        self._ok()
        self._resp = resp
        try:
            for line in lines(resp):
                if self.stop.is_set():
                    return
                try:
                    ev = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield ("bad", self.stream.name, f"watch line is not JSON: {exc}", line, self.rv)
                    continue
                if not isinstance(ev, dict) or not isinstance(ev.get("object"), dict) or not isinstance(ev.get("type"), str):
                    yield ("bad", self.stream.name, "watch event without type or object", line, self.rv)
                    continue
                typ, obj = ev["type"], ev["object"]
                if typ == "ERROR":
                    code = obj.get("code")
                    if code == 410:
                        raise Gone(f"{obj.get('reason') or 'Expired'}: {obj.get('message') or ''}")
                    raise ConnectionError(f"watch ERROR {code}: {obj.get('message') or obj}")
                new_rv = _rv(obj)
                if typ == "BOOKMARK":
                    if new_rv:
                        self.rv = new_rv
                        yield ("bookmark", self.stream.name, new_rv)
                    continue
                if typ not in ("ADDED", "MODIFIED", "DELETED"):
                    yield ("bad", self.stream.name, f"unknown watch event type {typ!r}", line, self.rv)
                    continue
                if new_rv:
                    self.rv = new_rv
                yield ("event", self.stream.name, typ, obj, self.rv)
        finally:
            self._resp = None
            resp.release_conn()
