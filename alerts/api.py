"""The silences HTTP API in Alertmanager's v2 shape (aiohttp): create, list, get, expire.

    POST   /api/v2/silences             body: PostableSilence  -> 200 {"silenceID": id}
    GET    /api/v2/silences             -> 200 [GettableSilence...] (active first)
    GET    /api/v2/silence/{id}         -> 200 GettableSilence | 404
    DELETE /api/v2/silence/{id}         -> 200 (expired) | 404      (also /api/v2/silences/{id})

``book`` is any object with ``silences`` (a ``Silences``), ``list(now)``, ``async put(silence)`` and
``async expire(id)``; in kubesight it is ``streams.alerting.SilenceBook`` (the compacted topic).
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from alerts.silences import Silence, SilenceError


def _json(data, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def app(book, clock=time.time) -> web.Application:
    async def post(request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return _json({"error": f"body is not valid JSON: {exc}"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "body must be a JSON object (a PostableSilence)"}, 400)
        now = clock()
        if body.get("id") and body["id"] not in book.silences.by_id:
            return _json({"error": f"silence {body['id']} not found"}, 404)
        try:
            s = Silence.create(body, now)
        except SilenceError as exc:
            return _json({"error": str(exc)}, 400)
        await book.put(s)
        return _json({"silenceID": s.id})

    async def list_(request: web.Request) -> web.Response:
        now = clock()
        return _json([s.to_dict(now) for s in book.list(now)])

    async def get(request: web.Request) -> web.Response:
        s = book.silences.by_id.get(request.match_info["id"])
        if s is None:
            return _json({"error": "silence not found"}, 404)
        return _json(s.to_dict(clock()))

    async def delete(request: web.Request) -> web.Response:
        id = request.match_info["id"]
        if id not in book.silences.by_id:
            return _json({"error": "silence not found"}, 404)
        await book.expire(id, clock())
        return web.Response(status=200)

    a = web.Application()
    a.router.add_post("/api/v2/silences", post)
    a.router.add_get("/api/v2/silences", list_)
    for prefix in ("/api/v2/silence/", "/api/v2/silences/"):
        a.router.add_get(prefix + "{id}", get)
        a.router.add_delete(prefix + "{id}", delete)
    return a
