"""Shared pieces of the metrics tests: the real pages served by a local aiohttp server, topic reading."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from tests.kafkatools import read_to_end

PAGES = {  # path on the test server -> (file under the shared data folder, content type)
    "apiserver": ("nri-kubernetes-testdata/1_35/controlplane/api-server/metrics", "text/plain"),
    "etcd": ("nri-kubernetes-testdata/1_35/controlplane/etcd/metrics", "text/plain"),
    "scheduler": ("nri-kubernetes-testdata/1_35/controlplane/scheduler/metrics", "text/plain"),
    "controller-manager": ("nri-kubernetes-testdata/1_35/controlplane/controller-manager/metrics", "text/plain"),
    "cadvisor": ("nri-kubernetes-testdata/1_35/kubelet/metrics/cadvisor", "text/plain"),
    "ksm": ("nri-kubernetes-testdata/1_35/ksm/metrics", "text/plain"),
    "node-exporter": ("node-exporter-fixtures/e2e-output.txt", "text/plain"),
    "prometheus": ("prometheus-textparse/alltypes.237mfs.prom.txt", "text/plain"),
    "om-alltypes": ("prometheus-textparse/alltypes.5mfs.om.txt", "application/openmetrics-text"),
    "om-histogram": ("prometheus-textparse/1histogram.om.txt", "application/openmetrics-text"),
    "dcgm": ("datadog-integrations-fixtures/dcgm/metrics.txt", "text/plain"),
    "openshift": ("openshift-insights-archive-sample/metrics", "text/plain"),
}


def read_topic(bootstrap: str, topic: str, raw: bool = False) -> list[tuple]:
    """Every (key, JSON value) on ``topic`` right now (all partitions, from the start);
    ``raw``: (partition, key, value bytes)."""
    return [(r.partition, r.key, r.value) if raw else (r.key, orjson.loads(r.value))
            for r in read_to_end(bootstrap, topic)]


class PageServer:
    """A real local HTTP server with the recorded pages and the misbehaving targets."""

    def __init__(self, data_dir, hang_seconds: float = 30.0):
        self.data_dir = data_dir
        self.hang_seconds = hang_seconds
        self.hits: dict[str, int] = {}
        self.seen_headers: dict[str, dict] = {}
        self.runner = None
        self.base = ""

    async def _page(self, request):
        name = request.match_info["name"]
        self.hits[name] = self.hits.get(name, 0) + 1
        self.seen_headers[name] = dict(request.headers)
        if name not in PAGES:
            raise web.HTTPNotFound()
        path, ctype = PAGES[name]
        resp = web.Response(body=(self.data_dir / path).read_bytes(), content_type=ctype)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            resp.enable_compression()  # like most exporters
        return resp

    async def _huge(self, request):  # a 50 MB page, streamed
        resp = web.StreamResponse()
        resp.content_type = "text/plain"
        await resp.prepare(request)
        line = b'huge_series{i="%d"} 1\n'
        chunk = b"".join(line % i for i in range(20_000))
        sent = 0
        try:
            while sent < 50 * 2**20:
                await resp.write(chunk)
                sent += len(chunk)
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    async def _hang(self, request):
        await asyncio.sleep(self.hang_seconds)
        return web.Response(text="late 1\n")

    async def _explode(self, request):  # a series explosion: 5,000 series of one metric
        body = "".join(f'exploding{{id="{i}"}} {i}\n' for i in range(5000))
        return web.Response(text=body)

    async def _bad(self, request):
        return web.Response(text='ok_metric 1\nbroken{a="1" 2\n')

    async def start(self):
        app = web.Application()
        app.router.add_get("/huge", self._huge)
        app.router.add_get("/hang", self._hang)
        app.router.add_get("/explode", self._explode)
        app.router.add_get("/bad", self._bad)
        app.router.add_get("/{name}", self._page)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def stop(self):
        await self.runner.cleanup()
