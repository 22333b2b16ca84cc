"""A real local HTTP receiver (aiohttp) whose behaviour per request is scripted: ok, 500, 429, 400, stall, reset."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web


class ScriptedReceiver:
    """Answers requests following ``script`` (then ``after``); records only the bodies it accepted with 2xx."""

    def __init__(self, script: list | None = None, after="ok", stall: float = 2.0):
        self.script = list(script or [])
        self.after = after
        self.stall = stall
        self.accepted: list[dict] = []
        self.requests = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        how = self.script.pop(0) if self.script else self.after
        body = await request.read()
        if how == "ok":
            self.accepted.append({"path": request.path, "query": request.query_string, "body": orjson.loads(body),
                                  "headers": dict(request.headers)})
            return web.Response(text="ok")
        if how == "stall":
            await asyncio.sleep(self.stall)  # longer than the client's timeout: the client gives up
            return web.Response(status=503)
        if how == "reset":
            request.transport.close()
            return web.Response(status=500)
        if how == 429:
            return web.Response(status=429, headers={"Retry-After": "0"}, text="slow down")
        return web.Response(status=int(how), text=f"status {how}")

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)  # POST, and GET for services that fetch a token
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()
