"""``kubesight routes test|check``, ``kubesight silences add|list|expire|serve``, ``kubesight bench alerts``: the alerting commands (here, in the runtime, because silences and the bench read Kafka).

``routes test`` runs the production router on the labels given.  The silence commands talk to a
silences API (``--url``) or, without one, read and write the compacted ``silences`` topic directly
(through ``streams.alerting.SilenceBook``: the only Kafka code, imported when needed).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from alerts.config import load
from core.durations import format_duration, parse_duration
from core.yamlconfig import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "routing.example.yaml"


def register(sub, group) -> None:

    routes = group("routes", "routing file: test where an alert goes, check a file")
    t = routes.add_parser("test", help="print the receivers and group keys an alert with these labels gets")
    t.add_argument("labels", nargs="+", metavar="NAME=VALUE")
    t.add_argument("--routing", help="routing file (default: settings' routing, else deploy/routing.example.yaml)")
    t.set_defaults(func=_routes_test)
    c = routes.add_parser("check", help="validate routing files; every error with file, line and path")
    c.add_argument("files", nargs="+")
    c.set_defaults(func=_routes_check)

    sil = group("silences", "create, list and expire silences")
    a = sil.add_parser("add", help="silence alerts matching all MATCHERS (name=value, name=~regex, ...)")
    a.add_argument("matchers", nargs="+", metavar="MATCHER")
    a.add_argument("--comment", "-c", required=True)
    a.add_argument("--author", "-a", default=None, help="createdBy (default: $USER)")
    a.add_argument("--duration", "-d", default="1h", help="how long from start (default: %(default)s)")
    a.add_argument("--start", default=None, help="RFC 3339 start (default: now)")
    a.add_argument("--url", help="silences API base URL (default: write the silences topic directly)")
    a.set_defaults(func=_silences_add)
    ls = sil.add_parser("list", help="list silences (active and pending; --all adds expired)")
    ls.add_argument("--all", action="store_true")
    ls.add_argument("--url")
    ls.set_defaults(func=_silences_list)
    ex = sil.add_parser("expire", help="end silences now")
    ex.add_argument("ids", nargs="+", metavar="ID")
    ex.add_argument("--url")
    ex.set_defaults(func=_silences_expire)
    ap = sil.add_parser("apply", help="silences as code: make the silences topic hold the set a YAML file lists "
                                      "(create, update, end the set's silences the file no longer lists)")
    ap.add_argument("file")
    ap.add_argument("--dry-run", action="store_true", help="print what it would do, change nothing")
    ap.set_defaults(func=_silences_apply)
    sv = sil.add_parser("serve", help="run Alertmanager's v2 API (alerts, groups, silences, status, receivers) "
                                      "over kubesight's topics, for amtool, Grafana and Karma")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=9093)
    from core.webconfig import add_arguments

    add_arguments(sv)  # --web-config (TLS, basic_auth_users), --insecure-listen
    sv.add_argument("--routing", help="routing file (default: settings' routing, else deploy/routing.example.yaml)")
    sv.set_defaults(func=_silences_serve)

    bench = group("bench", "benchmarks that print figures")
    b = bench.add_parser("alerts", help="alerting: grouping in process, then delivery, end to end and isolation "
                                        "through Kafka to a receiver process")
    b.add_argument("--alerts", type=int, default=50000, help="in-process grouping bench (default: %(default)s)")
    b.add_argument("--groups", type=int, default=500)
    b.add_argument("--notifications", type=int, default=20000,
                   help="delivery bench: notifications waiting in Kafka (0: skip; default: %(default)s)")
    b.add_argument("--kafka-alerts", type=int, default=10000,
                   help="end to end: alerts through Kafka and a worker (0: skip; default: %(default)s)")
    b.add_argument("--isolation-rate", type=float, default=200.0,
                   help="isolation: alerts/s to 2 healthy, 1 failing and 1 down receiver (0: skip)")
    b.add_argument("--isolation-seconds", type=float, default=10.0)
    b.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    b.set_defaults(func=_bench)


# ---------------------------------------------------------------- routes


def _routing_path(args) -> str:
    if args.routing:
        return args.routing
    from core.settings import Settings

    return Settings.load(args.config).routing or str(EXAMPLE)


def _fail(msg: str, code: int = 2):
    """End the command with ``msg`` on stderr, one line, and ``code`` (2: the user's to fix, as README's Errors
    says; ``SystemExit(msg)`` alone would exit 1)."""
    print(msg, file=sys.stderr)
    raise SystemExit(code)


def _parse_labels(items: list[str]) -> dict:
    labels = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            _fail(f"kubesight routes test: invalid label {item!r} (use name=value)")
        labels[name] = value.strip('"')
    return labels


def _routes_test(args) -> int:
    from alerts.routing import Router

    path = _routing_path(args)
    cfg = load(path)  # its errors: one line each, exit 2 (kubesight.cli)
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    router = Router(cfg)
    labels = _parse_labels(args.labels)
    for d in router.destinations(labels):
        r = d.route
        print(f"{d.receiver}\t{d.group_key}\t(group_wait {format_duration(r.group_wait)}, group_interval "
              f"{format_duration(r.group_interval)}, repeat_interval {format_duration(r.repeat_interval)})")
    return 0


def _routes_check(args) -> int:
    bad = 0
    for f in args.files:
        try:
            cfg = load(f)
            for warning in cfg.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            print(f"{f}: ok")
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            bad += 1
        except BrokenPipeError:  # an OSError, but stdout's, not the file's: `routes check F | true` ends quietly (141)
            raise
        except OSError as exc:
            print(f"{f}: {exc.strerror}", file=sys.stderr)
            bad += 1
    return 1 if bad else 0


# ---------------------------------------------------------------- silences


def _print_silences(items: list[dict]) -> None:
    if not items:
        print("no silences")
        return
    from core.matchers import Matcher

    print(f"{'ID':<36}  {'STATE':<8}  {'ENDS':<24}  {'BY':<10}  MATCHERS  COMMENT")
    for s in items:
        ms = ",".join(str(Matcher.from_api(x)) for x in s["matchers"])
        print(f"{s['id']:<36}  {s['status']['state']:<8}  {s['endsAt']:<24}  {s['createdBy']:<10}  {ms}  {s['comment']}")


def _kafka(args, prefix: str | None = None, ephemeral: bool = False):
    """Settings and bootstrap (the configured cluster, else the local broker, started if needed); topics ensured."""
    from core.broker import bootstrap_for
    from core.settings import Settings
    from core.topics import ensure_topics

    settings = Settings.load(args.config)
    if prefix:
        settings = settings.model_copy(update={"topic_prefix": prefix, "app_id": prefix.rstrip("-")})
    bootstrap = bootstrap_for(settings, ephemeral=ephemeral)
    ensure_topics(settings, bootstrap)
    return settings, bootstrap


def _book_call(args, fn):
    """Run ``fn(book)`` against the silences topic (started, caught up, then stopped)."""
    from streams.alerting import SilenceBook

    settings, bootstrap = _kafka(args)

    async def go():
        book = SilenceBook(settings, bootstrap)
        await book.start()
        try:
            await asyncio.wait_for(book.caught_up.wait(), 60)
            return await fn(book)
        finally:
            await book.stop()

    return asyncio.run(go())


async def _http(method: str, url: str, body=None):
    import aiohttp
    import orjson

    try:
        async with aiohttp.ClientSession(trust_env=True, timeout=aiohttp.ClientTimeout(total=30)) as s, \
                s.request(method, url, data=orjson.dumps(body) if body else None,
                          headers={"Content-Type": "application/json"}) as r:
            data = await r.read()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # refused, not a URL, no answer in 30 s
        _fail(f"kubesight silences: {url}: {type(exc).__name__}: {exc}".rstrip(": "))
    try:
        got = orjson.loads(data) if data else None
    except orjson.JSONDecodeError:
        got = None
        if r.status < 300:  # some other server at --url
            _fail(f"kubesight silences: {url}: HTTP {r.status}, not JSON: is it kubesight's or Alertmanager's API?")
    if r.status >= 300:
        msg = got.get("error") if isinstance(got, dict) else None
        # 4xx: the request's (no such silence, a bad matcher), the user's to fix; 5xx: the server's
        _fail(f"kubesight silences: {url}: HTTP {r.status}" + (f": {msg}" if msg else ""), 2 if r.status < 500 else 1)
    return got


def _silences_add(args) -> int:
    import getpass

    from alerts.silences import Silence, SilenceError
    from core.matchers import parse_matchers
    from core.records import TIME_MAX, TIME_MIN, format_time, parse_time

    try:
        ms = [m for x in args.matchers for m in parse_matchers(x)]
        start = parse_time(args.start) if args.start else time.time()
        ends = start + parse_duration(args.duration)
        if not TIME_MIN <= ends <= TIME_MAX:  # format_time would raise below, with a traceback
            raise ValueError("--start + --duration ends after the year 9999")
    except ValueError as exc:  # a bad matcher, duration or start, or an end no time can say
        print(f"kubesight silences add: {exc}", file=sys.stderr)
        return 2
    body = {"matchers": [x.to_api() for x in ms],
            "startsAt": format_time(start), "endsAt": format_time(ends),
            "createdBy": args.author or getpass.getuser(), "comment": args.comment}
    if args.url:
        out = asyncio.run(_http("POST", args.url.rstrip("/") + "/api/v2/silences", body))
        print(out["silenceID"])
        return 0
    try:
        s = Silence.create(body, time.time())
    except SilenceError as exc:
        print(f"kubesight silences add: {exc}", file=sys.stderr)
        return 2

    async def put(book):
        return await book.put(s)

    print(_book_call(args, put).id)
    return 0


def _silences_apply(args) -> int:
    """``kubesight silences apply FILE``: one line per silence of the set (what was done, set/id, its id, its end)."""
    from alerts.silences import load_file, plan
    from core.records import format_time

    try:
        f = load_file(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2

    async def apply(book):
        now = time.time()
        steps = plan(f, book.silences, now)
        if not args.dry_run:
            for what, s in steps:
                if what in ("create", "update"):
                    await book.put(s)
                elif what == "expire":
                    await book.expire(s.id, now)
        return steps

    if args.dry_run:
        print("dry run: nothing is written")
    for what, s in _book_call(args, apply):
        tag = s.comment.rsplit(" [silences apply ", 1)[-1].rstrip("]")
        ends = "now" if what == "expire" else format_time(s.endsAt)
        print(f"{what:9}  {tag}  {s.id}  ends {ends}")
    return 0


def _silences_list(args) -> int:
    if args.url:
        items = asyncio.run(_http("GET", args.url.rstrip("/") + "/api/v2/silences"))
    else:
        async def get(book):
            now = time.time()
            return [s.to_dict(now) for s in book.list(now)]

        items = _book_call(args, get)
    if not args.all:
        items = [s for s in items if s["status"]["state"] != "expired"]
    _print_silences(items)
    return 0


def _silences_expire(args) -> int:
    if args.url:
        for id in args.ids:
            asyncio.run(_http("DELETE", args.url.rstrip("/") + f"/api/v2/silence/{id}"))
            print(f"expired {id}")
        return 0

    async def expire(book):
        missing = []
        for id in args.ids:
            if id in book.silences.by_id:
                await book.expire(id)
                print(f"expired {id}")
            else:
                missing.append(id)
        return missing

    missing = _book_call(args, expire)
    for id in missing:
        print(f"kubesight silences expire: no silence {id}", file=sys.stderr)
    return 2 if missing else 0  # a wrong id is the user's to fix (the others given were expired)


def _silences_serve(args) -> int:
    from aiohttp import web

    from alerts.api import AlertsState, app
    from core import webconfig
    from core.settings import Settings
    from core.shutdown import on_stop
    from core.telemetry import serve_for
    from streams.alerting import AlertsView, RoutingFile, SilenceBook

    try:
        routing = RoutingFile(_routing_path(args))  # followed: a new version that validates is served
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    cfg = routing.cfg
    try:  # the API creates and expires silences: never open to the network without authentication
        web_cfg, insecure = webconfig.for_command(args, Settings.load(args.config))
        webconfig.check_listen(args.host, what="kubesight silences serve", writes=True,
                               authenticated=web_cfg.authenticates, insecure=insecure)
    except (ConfigError, webconfig.ListenRefused) as exc:
        print(exc, file=sys.stderr)
        return 2
    settings, bootstrap = _kafka(args)

    async def serve():
        book, view = SilenceBook(settings, bootstrap), AlertsView(settings, bootstrap, AlertsState(cfg))
        await book.start()
        await view.start()
        def reload_now() -> list[str]:
            new = routing.reload()
            if new is not None:
                view.alerts.reconfigure(new)
            return routing.errors

        api = app(book, alerts=view.alerts, config=cfg, reload=reload_now)
        api.middlewares.append(web_cfg.middleware())
        runner = web.AppRunner(api, access_log=None)
        try:
            await asyncio.wait_for(book.caught_up.wait(), 60)
            await asyncio.wait_for(view.caught_up.wait(), 60)
            await runner.setup()
            await web.TCPSite(runner, args.host, args.port, ssl_context=web_cfg.ssl_context()).start()
            print(f"Alertmanager v2 API on {web_cfg.scheme}://{args.host}:{args.port}/api/v2 (Ctrl-C to stop)",
                  flush=True)
            serve_for(settings, bootstrap, "kubesight silences serve",
                      checks={"silences": lambda: (book.caught_up.is_set(), "silences topic read to its end"),
                              "alerts": lambda: (view.caught_up.is_set(), "alert-groups read to its end")})
            stop = asyncio.Event()
            on_stop(stop.set, settings.shutdown_timeout, "kubesight silences serve", asyncio.get_running_loop())
            follow = asyncio.ensure_future(routing.follow(view.alerts.reconfigure))
            try:
                await stop.wait()
            finally:
                follow.cancel()
        finally:
            await runner.cleanup()
            await view.stop()
            await book.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


# ---------------------------------------------------------------- bench


def _bench(args) -> int:
    import json
    import logging
    import tempfile
    from pathlib import Path

    from alerts.bench import run
    from streams import bench_alerts as ba

    logging.getLogger("kubesight.alerts.receivers").setLevel(logging.ERROR)  # the failing receivers' retries
    figs = {"engine": run(args.alerts, args.groups)}
    work = Path(tempfile.mkdtemp(prefix="kubesight-bench-alerts-"))

    def fresh(name: str):
        return _kafka(args, prefix=f"bench-alerts-{name}-{int(time.time())}-", ephemeral=True)

    if args.notifications:
        settings, bootstrap = fresh("deliver")
        f = figs["delivery"] = asyncio.run(ba.delivery(settings, bootstrap, args.notifications, work))
        print(f"  delivery (1 worker -> receiver process) {f['per_s_from_start']:>8,.0f} notifications/s from start "
              f"({f['per_s_steady']:,.0f}/s first to last arrival; {f['received']}/{f['notifications']} received; "
              f"{f['cpu_us_per_notification']:.0f} µs CPU each in the worker)")
    if args.kafka_alerts:
        settings, bootstrap = fresh("e2e")
        f = figs["end_to_end"] = asyncio.run(ba.end_to_end(settings, bootstrap, args.kafka_alerts, work))
        print(f"  end to end through Kafka    {f['alerts_per_s']:>10,.0f} alerts/s  ({f['alerts']} alerts produced "
              f"first, one group each, group_wait 0: {f['received']} notifications in {f['seconds']:.1f}s incl. start-up)")
    if args.isolation_rate:
        settings, bootstrap = fresh("iso")
        f = figs["isolation"] = asyncio.run(ba.isolation(settings, bootstrap, args.isolation_rate,
                                                         args.isolation_seconds, work))
        d = f["healthy_delay"]
        verdict = "within" if d["p99"] is not None and d["p99"] <= f["budget"] else "OVER"
        print(f"  isolation ({f['rate']:g} alerts/s for {f['seconds']:g}s; 1 receiver answers 500, 1 is down): "
              f"healthy receivers' delay p50 {d['p50']:.2f}s p95 {d['p95']:.2f}s p99 {d['p99']:.2f}s "
              f"(n={d['n']}), {verdict} group_wait + 1 s = {f['budget']:g}s")
        print(f"    received {f['received']} of sent {f['sent']}")
    if args.json:
        print(json.dumps(figs, default=str))
    return 0
