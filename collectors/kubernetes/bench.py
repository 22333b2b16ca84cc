"""``kubesight bench kubernetes``: records/s from the local test API server through the collector into Kafka.

The API server runs in its own process (as a real one would), serving the recorded
must-gather Events and nri-kubernetes Nodes/Pods; the collector runs here with the real
client and its transactional producer, and the figure is records committed per second.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import sys
import threading
import time
import uuid
from pathlib import Path


def _server(conn, data: str) -> None:
    """Child process: serve the recorded cluster; on ("updates", n) stream n Event repeats as one burst."""
    from collectors.kubernetes.testing import (
        FakeApiServer,
        must_gather_events,
        nri_cluster,
        repeat,
        serve_cluster,
    )

    events = must_gather_events(Path(data))
    with FakeApiServer(bookmark_interval=0.05) as srv:
        rv = serve_cluster(srv, nri_cluster(Path(data)), events)
        conn.send((srv.url, rv, len(events)))
        rng = random.Random(7)
        current = dict(enumerate(events))
        while True:
            cmd = conn.recv()
            if cmd[0] != "updates":
                return
            with srv.held():
                for _ in range(cmd[1]):
                    i = rng.randrange(len(events))
                    current[i] = repeat(current[i])
                    last = srv.put("events", current[i], notify=False)
            conn.send(last)


def _wait(collector, rv: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = collector.stats.committed_rv
        if all(int(done.get(s) or 0) >= rv for s in collector.o.streams):
            return
        if collector.stop.is_set() or time.monotonic() > deadline:
            raise RuntimeError(f"collector did not reach resourceVersion {rv} (at {done})")
        time.sleep(0.005)


def run(args) -> int:
    import logging

    from collectors.kubernetes.api import Api, api_client
    from collectors.kubernetes.collector import Collector, Options
    from collectors.kubernetes.testing import write_kubeconfig
    from collectors.sink import KafkaSink
    from core.broker import bootstrap_for
    from core.settings import Settings
    from core.topics import ensure_topics

    logging.basicConfig(level="ERROR")
    from core.datafolder import data_root

    data = data_root(args.data, "openshift-must-gather-events", "nri-kubernetes-testdata")
    settings = Settings.load(args.config)
    settings = settings.model_copy(update={"topic_prefix": f"bench-k8s-{uuid.uuid4().hex[:6]}-"})
    bootstrap = bootstrap_for(settings, ephemeral=True)
    ensure_topics(settings, bootstrap)
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    server = ctx.Process(target=_server, args=(child_conn, str(data)), daemon=True)
    server.start()
    child_conn.close()  # the child's end lives in the child only: if the server dies, recv() sees EOF, not a hang
    kc = None
    try:
        try:
            url, rv, n_events = conn.recv()
        except EOFError:
            print("bench kubernetes: the test API server did not start (its traceback is above)", file=sys.stderr)
            return 2
        kc = write_kubeconfig(url, Path(os.environ.get("TMPDIR", "/tmp")) / f"kubesight-bench-{os.getpid()}.kubeconfig")
        sink = KafkaSink(bootstrap, settings.topic, transactional_id=f"kubesight-bench-{uuid.uuid4().hex[:6]}")
        collector = Collector(Api(api_client(str(kc))), sink, Options(cluster="bench"))
        stop = threading.Event()
        th = threading.Thread(target=collector.run, args=(stop,), daemon=True)
        t0 = time.perf_counter()
        th.start()
        _wait(collector, rv)
        t_list = time.perf_counter() - t0
        n_list = collector.stats.records
        print(f"list:  {n_list} records ({n_events} Events + state changes) in {t_list:.2f}s "
              f"= {n_list / t_list:,.0f} records/s (includes {collector.owners.fetches} owner reads)")
        conn.send(("updates", args.updates))
        last = conn.recv()
        t1 = time.perf_counter()
        _wait(collector, last)
        t_watch = time.perf_counter() - t1
        n_watch = collector.stats.records - n_list
        print(f"watch: {n_watch} records from {args.updates} count updates x 2 Event APIs in {t_watch:.2f}s "
              f"= {n_watch / t_watch:,.0f} records/s ({collector.stats.transactions} transactions, acks=all)")
        stop.set()
        th.join(10)
        sink.producer.close(timeout=5)
    finally:
        try:
            conn.send(("stop",))
        except OSError:  # the server is gone already
            pass
        server.join(10)
        if kc:
            kc.unlink(missing_ok=True)
    if n_watch != args.updates:
        print(f"bench: expected {args.updates} records from the watch, got {n_watch}", file=sys.stderr)
        return 1
    return 0
