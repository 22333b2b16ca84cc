"""A local Kubernetes API server (aiohttp, in a thread) speaking list/watch, serving recorded objects.

Used by the tests and by ``kubesight bench kubernetes``.  It implements the parts of the API
the collector uses, the way kube-apiserver does: one resourceVersion counter for all
resources; paged lists (``limit``/``continue``, one snapshot); chunked watch streams from a
resourceVersion with ``BOOKMARK`` events; a watch from a compacted resourceVersion answered
with an ``ERROR`` event carrying a 410 ``Status``; core/v1 and events.k8s.io/v1 as two views of
the same stored Events; list/watch of namespaces; ``get`` of namespaces, pods and workloads.  The test side mutates it
(``put``, ``delete``, ``inject``), compacts its history (``compact``) and cuts the watch
connections in the middle of a line (``cut``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
import threading
import uuid
from pathlib import Path

import orjson

WATCHED = {"events": "Event", "nodes": "Node", "pods": "Pod", "namespaces": "Namespace"}
NAMESPACED_GET = {"pods", "replicasets", "deployments", "statefulsets", "daemonsets", "jobs", "cronjobs",
                  "replicationcontrollers"}
_UID_NS = uuid.UUID("6f1c3a9e-2d7b-4c55-9a51-4b1f0c3e8d20")


def to_events_v1(e: dict) -> dict:
    """The events.k8s.io/v1 view of a core/v1 Event, converted as kube-apiserver converts it."""
    out = {
        "kind": "Event", "apiVersion": "events.k8s.io/v1", "metadata": e.get("metadata"),
        "eventTime": e.get("eventTime"), "series": e.get("series"),
        "reportingController": e.get("reportingComponent") or None,
        "reportingInstance": e.get("reportingInstance") or None, "action": e.get("action"),
        "reason": e.get("reason"), "regarding": e.get("involvedObject"), "related": e.get("related"),
        "note": e.get("message"), "type": e.get("type"), "deprecatedSource": e.get("source"),
        "deprecatedFirstTimestamp": e.get("firstTimestamp"), "deprecatedLastTimestamp": e.get("lastTimestamp"),
        "deprecatedCount": e.get("count"),
    }
    return {k: v for k, v in out.items() if v is not None}


def repeat(e: dict, when: str | None = None) -> dict:
    """The same core/v1 Event observed once more, as its recorder would update it (count or series).

    >>> repeat({"count": 2, "lastTimestamp": "2021-08-03T10:00:00Z"})["count"]
    3
    >>> repeat({"series": {"count": 1, "lastObservedTime": "2021-08-03T10:00:00.000000Z"}})["series"]["count"]
    2
    """
    e = copy.deepcopy(e)
    if e.get("series"):
        e["series"]["count"] = (e["series"].get("count") or 1) + 1
        if when:
            e["series"]["lastObservedTime"] = when
    else:
        e["count"] = (e.get("count") or 1) + 1
        if when:
            e["lastTimestamp"] = when
    return e


def _key(resource: str, obj: dict) -> str:
    m = obj["metadata"]
    return f"{m.get('namespace') or ''}/{m['name']}"


class FakeApiServer:
    def __init__(self, bookmark_interval: float = 0.2, host: str = "127.0.0.1"):
        self.bookmark_interval = bookmark_interval
        self.host = host
        self.port = 0
        self.rv = 1000
        self.compacted = 0
        self.objects: dict[str, dict[str, dict]] = {}
        self.history: list[tuple[int, str, bytes]] = []  # (rv, resource, line) of watched resources
        self.requests: dict[str, int] = {}  # "list events", "watch pods", "get deployments", "410 events" ...
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._failing: dict[str, int] = {}  # view -> list/watch requests still to answer 500
        self.paused = False  # True: watches hold back history (and bookmarks cannot pass it)
        self._cuts = 0  # generation: watches opened before a cut are cut
        self._cut_after = 0  # ... after this many more lines each
        self._snapshots: dict[str, tuple[int, list]] = {}
        self._thread: threading.Thread | None = None
        self._runner = None

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeApiServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="fake-apiserver", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("test API server did not start")
        return self

    def _serve(self, ready: threading.Event) -> None:
        from aiohttp import web

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._changed = asyncio.Event()
        app = web.Application()
        app.router.add_get("/api/v1/{resource:events|nodes|pods|namespaces}", self._collection)
        app.router.add_get("/apis/events.k8s.io/v1/events", self._collection_v1events)
        app.router.add_get("/api/v1/namespaces/{name}", self._get_namespace)
        app.router.add_get("/api/v1/namespaces/{ns}/{resource}/{name}", self._get)
        app.router.add_get("/apis/{group:apps|batch}/v1/namespaces/{ns}/{resource}/{name}", self._get)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.host, 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def stop(self) -> None:
        if self._loop and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)

    def kubeconfig(self, path: str | Path) -> Path:
        """Write a kubeconfig that points the official client at this server; returns its path."""
        return write_kubeconfig(self.url, path)

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ the test side

    def notify(self) -> None:
        """Wake the watches (after ``put(..., notify=False)`` of a batch)."""
        self._notify()

    @contextlib.contextmanager
    def held(self):
        """Watches deliver nothing inside the block, then everything at once (a burst)."""
        self.paused = True
        try:
            yield self
        finally:
            self.paused = False
            self._notify()

    def _notify(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()

    def load(self, resource: str, objs) -> int:
        """Store objects without watch history (the state before anybody watched); returns the rv."""
        with self._lock:
            table = self.objects.setdefault(resource, {})
            for obj in objs:
                obj = copy.deepcopy(obj)
                self.rv += 1
                obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
                table[_key(resource, obj)] = obj
            return self.rv

    def put(self, resource: str, obj: dict, notify: bool = True) -> int:
        """Create or update an object (ADDED or MODIFIED on watches); returns its resourceVersion."""
        obj = copy.deepcopy(obj)
        with self._lock:
            table = self.objects.setdefault(resource, {})
            k = _key(resource, obj)
            typ = "MODIFIED" if k in table else "ADDED"
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            table[k] = obj
            if resource in WATCHED:
                self.history.append((self.rv, resource, orjson.dumps({"type": typ, "object": obj})))
            rv = self.rv
        if notify:
            self._notify()
        return rv

    def delete(self, resource: str, namespace: str, name: str, notify: bool = True) -> int:
        with self._lock:
            obj = self.objects.get(resource, {}).pop(f"{namespace}/{name}")
            self.rv += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.history.append((self.rv, resource, orjson.dumps({"type": "DELETED", "object": obj})))
            rv = self.rv
        if notify:
            self._notify()
        return rv

    def inject(self, resource: str, line: bytes, notify: bool = True) -> int:
        """Put a raw (typically malformed) line on the watch streams of ``resource``."""
        with self._lock:
            self.rv += 1
            self.history.append((self.rv, resource, line))
            rv = self.rv
        if notify:
            self._notify()
        return rv

    def get(self, resource: str, namespace: str, name: str) -> dict:
        with self._lock:
            return copy.deepcopy(self.objects[resource][f"{namespace}/{name}"])

    def compact(self) -> int:
        """Forget the history up to now: watches from an older resourceVersion get 410 Gone."""
        with self._lock:
            self.compacted = self.rv
        return self.compacted

    def cut(self, after: int = 0) -> None:
        """Abort every open watch connection in the middle of a line, after ``after`` more lines each."""
        with self._lock:
            self._cuts += 1
            self._cut_after = after
        self._notify()

    def fail(self, view: str, times: int) -> None:
        """Answer the next ``times`` list/watch requests of ``view`` (events, events.k8s.io, nodes, pods, namespaces) with
        500."""
        with self._lock:
            self._failing[view] = times

    def count(self, what: str) -> int:
        return self.requests.get(what, 0)

    # ------------------------------------------------------------ HTTP

    def _hit(self, what: str) -> None:
        self.requests[what] = self.requests.get(what, 0) + 1

    async def _collection(self, request):
        return await self._list_or_watch(request, request.match_info["resource"], None)

    async def _collection_v1events(self, request):
        return await self._list_or_watch(request, "events", to_events_v1)

    async def _list_or_watch(self, request, resource: str, convert):
        view = "events.k8s.io" if convert else resource
        if self._failing.get(view):
            self._failing[view] -= 1
            self._hit(f"500 {view}")
            return _status(500, "InternalError", "etcdserver: request timed out")
        if request.query.get("watch") in ("true", "1"):
            self._hit(f"watch {view}")
            return await self._watch(request, resource, convert, view)
        self._hit(f"list {view}")
        return self._list(request, resource, convert)

    def _list(self, request, resource: str, convert):
        from aiohttp import web

        limit = int(request.query.get("limit") or 0)
        token = request.query.get("continue")
        with self._lock:
            if token:
                if token not in self._snapshots:
                    return _status(410, "Expired", "the provided continue parameter is too old")
                rv, items = self._snapshots[token]
            else:
                rv = self.rv
                items = [self.objects.get(resource, {})[k] for k in sorted(self.objects.get(resource, {}))]
            page, rest = (items[:limit], items[limit:]) if limit else (items, [])
            meta = {"resourceVersion": str(rv)}
            if rest:
                nxt = uuid.uuid4().hex
                self._snapshots[nxt] = (rv, rest)
                meta["continue"] = nxt
            self._snapshots.pop(token, None)
            body = b"".join([
                b'{"kind":"', WATCHED[resource].encode(), b'List","apiVersion":"',
                b"events.k8s.io/v1" if convert else b"v1", b'","metadata":', orjson.dumps(meta), b',"items":[',
                b",".join(orjson.dumps(convert(o) if convert else o) for o in page), b"]}",
            ])
        return web.Response(body=body, content_type="application/json")

    async def _watch(self, request, resource: str, convert, view: str):
        from aiohttp import web

        try:
            since = int(request.query.get("resourceVersion") or 0)
        except ValueError:
            return _status(400, "BadRequest", "resourceVersion must be an integer here")
        timeout = float(request.query.get("timeoutSeconds") or 300)
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if since and since < self.compacted:
            self._hit(f"410 {view}")
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": f"too old resource version: {since} ({self.compacted})", "reason": "Expired",
                      "code": 410}
            await resp.write(orjson.dumps({"type": "ERROR", "object": status}) + b"\n")
            return resp
        try:
            return await self._stream(request, resp, resource, convert, since, timeout, bookmarks)
        except ConnectionResetError:  # the client went away
            return resp

    async def _stream(self, request, resp, resource, convert, since, timeout, bookmarks):
        cuts = self._cuts
        budget = None  # lines left before this connection is cut
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        pos = 0
        last = since or self.rv
        while True:
            changed = self._changed
            if self._cuts != cuts:
                cuts, budget = self._cuts, self._cut_after
            if budget == 0:
                await resp.write(b'{"type":"MODIFIED","object":{"kind":')
                return await _abort(request, resp)
            hist = self.history if not self.paused else []
            while pos < len(hist) and hist[pos][0] <= last:
                pos += 1
            out = []
            while pos < len(hist):
                rv, res, line = hist[pos]
                pos += 1
                last = rv
                if res != resource:
                    continue
                if convert:
                    try:
                        ev = orjson.loads(line)
                        line = orjson.dumps({"type": ev["type"], "object": convert(ev["object"])})
                    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                        pass  # an injected malformed line goes out as it is
                out.append(line)
                if len(out) >= 1000:
                    break
            if budget is not None and budget < len(out):
                await resp.write(b"".join(x + b"\n" for x in out[:budget]) + out[budget][: len(out[budget]) // 2])
                return await _abort(request, resp)
            if budget is not None:
                budget -= len(out)
            if out:
                await resp.write(b"".join(x + b"\n" for x in out))
                continue
            left = end - loop.time()
            if left <= 0:
                return resp
            try:
                await asyncio.wait_for(changed.wait(), min(left, self.bookmark_interval))
            except TimeoutError:
                with self._lock:  # nothing pending for anybody: the bookmark may move to the newest rv
                    if not (self.history and self.history[-1][0] > last):
                        last = max(last, self.rv)
                if bookmarks:
                    mark = {"kind": WATCHED[resource], "apiVersion": "events.k8s.io/v1" if convert else "v1",
                            "metadata": {"resourceVersion": str(last)}}
                    await resp.write(orjson.dumps({"type": "BOOKMARK", "object": mark}) + b"\n")

    async def _get_namespace(self, request):
        return self._object("namespaces", "", request.match_info["name"])

    async def _get(self, request):
        res = request.match_info["resource"]
        if res not in NAMESPACED_GET:
            return _status(404, "NotFound", f"{res} not served here")
        return self._object(res, request.match_info["ns"], request.match_info["name"])

    def _object(self, resource: str, ns: str, name: str):
        from aiohttp import web

        self._hit(f"get {resource}")
        with self._lock:
            obj = self.objects.get(resource, {}).get(f"{ns}/{name}")
            if obj is None:
                return _status(404, "NotFound", f'{resource} "{name}" not found')
            return web.Response(body=orjson.dumps(obj), content_type="application/json")


def write_kubeconfig(url: str, path: str | Path) -> Path:
    """A kubeconfig for the API server at ``url`` (plain HTTP, a dummy token)."""
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": url}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "users": [{"name": "test", "user": {"token": "test-token"}}],
    }))
    return path


def _status(code: int, reason: str, message: str):
    from aiohttp import web

    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    return web.Response(status=code, body=orjson.dumps(body), content_type="application/json")


async def _abort(request, resp):
    """Kill the connection without ending the chunked body: the client sees a broken stream."""
    request.transport.abort()
    return resp


# ---------------------------------------------------------------- recorded data


def load_yaml(path: Path):
    """A YAML file, or, when ``path`` is missing, ``path`` + ``.gz`` (tests/data keeps large files gzipped:
    nri-kubernetes' pods.yaml is pods.yaml.gz there, and ``bench kubernetes`` found nothing to read)."""
    import gzip

    import yaml

    path = Path(path)
    gz = path.with_name(path.name + ".gz")
    if path.suffix != ".gz" and not path.exists() and gz.exists():
        path = gz
    with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def must_gather_events(data_dir: Path) -> list[dict]:
    """The 5,373 real core/v1 Events of the OpenShift must-gather, in file order."""
    root = Path(data_dir) / "openshift-must-gather-events" / "must-gather-aws" / "namespaces"
    out = []
    for f in sorted(root.glob("*/core/events.yaml")):
        out.extend(load_yaml(f).get("items") or [])
    return out


_KSM = re.compile(r'^(kube_\w+)\{([^}]*)\} \S+$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _ksm(path: Path) -> list[tuple[str, dict]]:
    out = []
    for line in path.read_text().splitlines():
        m = _KSM.match(line)
        if m:
            out.append((m.group(1), dict(_LABEL.findall(m.group(2)))))
    return out


def _obj(kind: str, api: str, ns: str, name: str, labels=None, owner: tuple[str, str] | None = None) -> dict:
    meta = {"name": name, "namespace": ns, "uid": str(uuid.uuid5(_UID_NS, f"{kind}/{ns}/{name}")), "labels": labels or {}}
    if owner and owner[0]:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1" if owner[0] != "CronJob" else "batch/v1",
                                    "kind": owner[0], "name": owner[1], "controller": True,
                                    "uid": str(uuid.uuid5(_UID_NS, f"{owner[0]}/{ns}/{owner[1]}"))}]
    return {"kind": kind, "apiVersion": api, "metadata": meta}


def nri_cluster(data_dir: Path) -> dict[str, list[dict]]:
    """The recorded single-node cluster of nri-kubernetes 1.35: nodes, pods, namespaces (as
    recorded) and its workloads (ReplicaSets, Deployments, Jobs, CronJobs, StatefulSets,
    DaemonSets), rebuilt from the same scrape's kube-state-metrics owner and label series."""
    root = Path(data_dir) / "nri-kubernetes-testdata" / "1_35"
    out = {r: (load_yaml(root / f"{r}.yaml").get("items") or []) for r in ("nodes", "pods", "namespaces")}
    wl: dict[str, dict] = {}
    for metric, lab in _ksm(root / "ksm" / "metrics"):
        ns = lab.get("namespace", "")
        labels = {k[6:]: v for k, v in lab.items() if k.startswith("label_")}
        if metric == "kube_replicaset_owner":
            wl[f"replicasets/{ns}/{lab['replicaset']}"] = _obj("ReplicaSet", "apps/v1", ns, lab["replicaset"], owner=(
                lab.get("owner_kind", ""), lab.get("owner_name", "")))
        elif metric == "kube_job_owner":
            wl[f"jobs/{ns}/{lab['job_name']}"] = _obj("Job", "batch/v1", ns, lab["job_name"], owner=(
                lab.get("owner_kind", ""), lab.get("owner_name", "")))
        elif metric == "kube_deployment_labels":
            wl[f"deployments/{ns}/{lab['deployment']}"] = _obj("Deployment", "apps/v1", ns, lab["deployment"], labels)
        elif metric == "kube_statefulset_created":
            wl[f"statefulsets/{ns}/{lab['statefulset']}"] = _obj("StatefulSet", "apps/v1", ns, lab["statefulset"])
        elif metric == "kube_daemonset_created":
            wl[f"daemonsets/{ns}/{lab['daemonset']}"] = _obj("DaemonSet", "apps/v1", ns, lab["daemonset"])
        elif metric == "kube_cronjob_info":
            wl[f"cronjobs/{ns}/{lab['cronjob']}"] = _obj("CronJob", "batch/v1", ns, lab["cronjob"])
    for k, obj in sorted(wl.items()):
        out.setdefault(k.split("/", 1)[0], []).append(obj)
    return out


def serve_cluster(server: FakeApiServer, cluster: dict[str, list[dict]], events: list[dict] = ()) -> int:
    """Load a cluster (``nri_cluster``) and Events into the server; returns the resourceVersion."""
    for resource, objs in cluster.items():
        server.load(resource, objs)
    return server.load("events", events)
