"""``kubesight board`` (the stability board web page) and ``kubesight bench board`` (10,000 alerts in Chromium)."""

from __future__ import annotations

import asyncio
import sys
import time

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")


def register(sub, group) -> None:
    b = sub.add_parser("board", help="the stability board: a live traffic-light page of clusters x layers and "
                                     "teams x namespaces from the alerts topic (read-only unless --token-file)")
    b.add_argument("--listen", default="127.0.0.1:9094", help="HOST:PORT to bind (default: %(default)s)")
    b.add_argument("--token-file", default=None,
                   help="file holding the bearer token that allows creating and expiring silences from the page")
    b.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a DNS name the board is reached by (repeatable); requests with another Host header are "
                        "refused 421 (DNS rebinding) unless it is an IP address, localhost or the --listen host")
    from core.webconfig import add_arguments

    add_arguments(b)  # --web-config (TLS, basic_auth_users), --insecure-listen
    b.set_defaults(func=_board)

    bench = group("bench", "benchmarks that print figures")
    bb = bench.add_parser("board", help="the board with N firing alerts: ingest, server aggregation, and the page "
                                        "rendered in headless Chromium")
    bb.add_argument("--alerts", type=int, default=10000, help="firing alerts (default: %(default)s)")
    bb.add_argument("--clusters", type=int, default=12)
    bb.add_argument("--teams", type=int, default=25)
    bb.add_argument("--namespaces", type=int, default=200)
    bb.set_defaults(func=_bench)


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``; a bare port binds 127.0.0.1).

    >>> parse_listen("127.0.0.1:9094"), parse_listen("9000"), parse_listen("[::1]:80")
    (('127.0.0.1', 9094), ('127.0.0.1', 9000), ('::1', 80))
    """
    host, sep, port = listen.rpartition(":")
    if not sep:
        return "127.0.0.1", int(listen)
    return host.strip("[]") or "127.0.0.1", int(port)


def _board(args) -> int:
    from core import webconfig
    from core.broker import bootstrap_for
    from core.settings import Settings
    from core.shutdown import on_stop
    from core.topics import ensure_topics
    from streams.board import start_board

    try:
        host, port = parse_listen(args.listen)
    except ValueError:
        print(f"kubesight board: --listen {args.listen!r} is not HOST:PORT", file=sys.stderr)
        return 2
    token = None
    if args.token_file:
        try:
            token = webconfig.read_tokens(args.token_file)  # every line: a rotation
        except (OSError, ValueError) as exc:
            print(f"kubesight board: {exc}", file=sys.stderr)
            return 2
    settings = Settings.load(args.config)
    try:  # writes need the token (their authentication); the web config adds TLS and users for reading
        web_cfg, insecure = webconfig.for_command(args, settings)
        webconfig.check_listen(host, what="kubesight board", writes=token is not None,
                               authenticated=token is not None, insecure=insecure)
    except webconfig.ConfigError as exc:
        print(f"kubesight board: {exc}", file=sys.stderr)
        return 2
    bootstrap = bootstrap_for(settings)
    ensure_topics(settings, bootstrap)

    async def main():
        board, runner, url = await start_board(settings, bootstrap, host, port, token, web_cfg, args.allow_host)
        mode = "silences allowed with the token" if token else "read-only"
        print(f"kubesight board: {url} ({mode}; alerts from {settings.topic('alerts')})", flush=True)
        serve_telemetry(settings, bootstrap, board)
        stop = asyncio.Event()
        on_stop(stop.set, settings.shutdown_timeout, "kubesight board", asyncio.get_running_loop())
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            await board.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return 0


class BoardMetrics:
    """The board's figures for ``/metrics``, read when scraped from what it keeps anyway (nothing added to its
    loop): pages connected, the last summary's time and size, alert records read, whether it has caught up."""

    def __init__(self, board):
        self.board = board

    def describe(self):
        return []  # figures read when scraped; an unchecked collector

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        b = self.board
        yield GaugeMetricFamily("kubesight_board_clients", "pages connected (event streams open)", value=len(b.clients))
        yield GaugeMetricFamily("kubesight_board_summary_seconds", "time the last summary took to compute",
                                value=b.summary_ms / 1000)
        yield GaugeMetricFamily("kubesight_board_summary_bytes", "size of the last summary pushed to the pages",
                                value=len(b.latest))
        yield CounterMetricFamily("kubesight_board_alert_records", "alert records read", value=b.model.read)
        yield GaugeMetricFamily("kubesight_board_caught_up", "1 once the alerts and silences topics are read to "
                                "their end", value=1 if _caught_up(b) else 0)


def _caught_up(board) -> bool:
    return board.caught_up.is_set() and board.book.caught_up.is_set()


def serve_telemetry(settings, bootstrap: str, board):
    """``/metrics``, ``/health``, ``/ready`` on ``web_port`` (``core.telemetry.serve_for``; None: not set), as every
    long-running kubesight process: the board's own port serves the page and its API, whose users may need a
    token or TLS the kubelet and Prometheus lack. Ready once the alerts and silences topics are read to their end
    (before, the page says "unknown")."""
    from prometheus_client import CollectorRegistry

    from core.telemetry import serve_for

    registry = CollectorRegistry()
    registry.register(BoardMetrics(board))
    return serve_for(settings, bootstrap, "kubesight board", [registry],
                     {"topics": lambda: (_caught_up(board), "alerts and silences read to their end")})


# ---------------------------------------------------------------- browser and bench


def chromium(width: int = 1400, height: int = 900):
    """Debian's headless Chromium through its chromedriver (Selenium; nothing downloaded)."""
    import shutil
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        raise RuntimeError("chromium and chromium-driver are needed (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for f in CHROMIUM_FLAGS:
        opts.add_argument(f)
    profile = tempfile.mkdtemp(prefix="kubesight-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    from core.broker import die_with_parent

    # chromedriver dies with us (it was only stopped by quit()); quit() also removes the profile (one per run piled
    # up in /tmp)
    try:
        drv = webdriver.Chrome(service=Service(executable_path=driver, popen_kw={"preexec_fn": die_with_parent}),
                               options=opts)
    except BaseException:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    quit_ = drv.quit

    def quit_and_clean() -> None:
        try:
            quit_()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    drv.quit = quit_and_clean
    return drv


def synthetic_alerts(n: int, clusters: int = 12, teams: int = 25, namespaces: int = 200, seed: int = 7) -> list:
    """``n`` distinct firing alerts spread over clusters, packs (layers), teams and namespaces."""
    import random

    from core.records import Alert

    rnd = random.Random(seed)
    packs = ("cloud", "nodes", "kernel", "gpu", "control-plane", "workloads", "resources", "storage")
    sev = ("critical", "warning", "warning", "info")
    now = time.time()
    out = []
    for i in range(n):
        ns = rnd.randrange(namespaces)
        labels = {"alertname": f"Synthetic{rnd.choice(('Backoff', 'Pressure', 'Down', 'Latency'))}",
                  "severity": rnd.choice(sev), "cluster": f"cluster-{rnd.randrange(clusters):02d}",
                  "namespace": f"ns-{ns:03d}", "owner": f"team-{ns % teams:02d}", "pod": f"pod-{i}"}
        out.append(Alert(labels, {"summary": f"synthetic alert {i}"}, "firing", now - rnd.randrange(86400),
                         source=f"{rnd.choice(packs)}/{labels['alertname']}@1.0.0"))
    return out


def produce_alerts(bootstrap: str, topic: str, alerts: list) -> None:
    from kafka import KafkaProducer

    from core.kafkaclient import client_config
    from core.records import encode

    p = KafkaProducer(**client_config(bootstrap, "kafka-python"), acks="all", linger_ms=20)
    try:
        for a in alerts:
            p.send(topic, encode(a), key=a.key())
        p.flush(60)
    finally:
        p.close()


def _bench(args) -> int:
    from selenium.webdriver.support.ui import WebDriverWait

    from streams.board import BoardThread
    from streams.cli_alerts import _kafka

    settings, bootstrap = _kafka(args, prefix=f"bench-board-{int(time.time())}-", ephemeral=True)
    alerts = synthetic_alerts(args.alerts, args.clusters, args.teams, args.namespaces)
    t = time.monotonic()
    produce_alerts(bootstrap, settings.topic("alerts"), alerts)
    produced = time.monotonic() - t
    board = BoardThread(settings, bootstrap)
    t = time.monotonic()
    url = board.start_and_wait()
    try:
        if not board.wait_caught_up(120):
            print("bench board: the board did not read the alerts topic to its end in 120 s", file=sys.stderr)
            return 1
        ingest = time.monotonic() - t
        n = board.call(lambda: len(board.board.model.alerts))
        summary_ms = []
        for _ in range(5):
            summary_ms.append(board.call(lambda: (board.board.summary(), board.board.summary_ms)[1]))
        size = board.call(lambda: len(board.board.latest))
        drv = chromium()
        try:
            drv.get("about:blank")  # the browser's own start-up is not the page's time
            t = time.monotonic()
            drv.get(url)
            WebDriverWait(drv, 60, poll_frequency=0.02).until(
                lambda d: d.execute_script("return document.body.dataset.firing") == str(n))
            wall = time.monotonic() - t
            first, first_n = drv.execute_script(
                "return [window.__board.firstRenderMs, window.__board.firstRenderFiring]")
            render_ms = drv.execute_script("return window.__board.lastRenderMs")
            # drill into the fullest cell: the first page of its alerts, fetched and rendered
            # found and clicked in one script: a heartbeat's re-render between a lookup and a click made the
            # element stale (5,000 clusters, 2026-12)
            cell_n = drv.execute_script(
                "const c = [...document.querySelectorAll('button.cell')].sort((a, b) => b.dataset.firing - "
                "a.dataset.firing)[0]; c.click(); return +c.dataset.firing")
            WebDriverWait(drv, 30, poll_frequency=0.02).until(
                lambda d: d.execute_script("return window.__board.drills") >= 1)
            drill_ms = drv.execute_script("return window.__board.lastDrillMs")
            items = len(drv.find_elements("css selector", "#drill-list li"))
            drv.find_element("id", "tab-team").click()
            chips = len(drv.find_elements("css selector", "#teams button.chip"))
        finally:
            drv.quit()
    finally:
        board.stop()
    print(f"board bench: {n} firing alerts ({args.clusters} clusters x 7 layers, {args.teams} teams, "
          f"{args.namespaces} namespaces)")
    print(f"  produced to Kafka           {produced:6.2f} s")
    print(f"  board read them (caught up) {ingest:6.2f} s from start")
    print(f"  server aggregation          {sorted(summary_ms)[2]:6.1f} ms per summary (median of 5; "
          f"{size / 1024:.0f} KB of JSON per push)")
    print(f"  page showing all {n}     {first:6.0f} ms after navigation start (the page's first render, "
          f"{first_n} alerts; {render_ms:.1f} ms of it DOM work per render); {wall * 1000:.0f} ms as WebDriver saw it")
    print(f"  drill-down                  {drill_ms:6.0f} ms to fetch and render {items} of the {cell_n} alerts "
          f"of the fullest cell; teams view {chips} namespace tiles")
    return 0
