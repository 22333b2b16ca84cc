"""Issue 13 #9: the replay demo's notifications are the same every run (clock: event).

The demo's pipeline (worker with the default pack, the demo's routing, one local webhook receiver per
receiver, one partition) runs twice on the same recorded events, once produced as fast as possible and
once in paced chunks, so the fetches, batches and transactions interleave differently; the receivers
must get the same notifications: per receiver the same number, the same groups and the same alerts
in the same final state.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from core.settings import REPO, Settings

pytestmark = pytest.mark.kafka

N_EVENTS = 1500


def _run(bootstrap: str, events, log_dir: Path, paced: bool) -> dict:
    from collectors.sink import KafkaSink
    from core.topics import ensure_topics
    from streams.cli_run import (
        DemoReceivers,
        delivered_state,
        group_lag,
        spawn_worker,
        stop_process,
        wait_delivered,
    )

    tag = uuid.uuid4().hex[:6]
    receivers = DemoReceivers(str(REPO / "deploy" / "demo" / "routing.yaml"), log_dir / f"routing-{tag}.yaml", True)
    receivers.start()
    assert receivers.ready.wait(10)
    s = Settings(kafka=bootstrap, topic_prefix=f"det-{tag}-", app_id=f"det-{tag}", partitions=1, clock="event",
                 routing=str(receivers.out_path))
    ensure_topics(s, bootstrap)
    proc = spawn_worker(s, bootstrap, log_dir / f"worker-{tag}.log", worker_id="w")
    try:
        sink = KafkaSink(bootstrap, s.topic, client_id="det-replay")
        chunk = 60 if paced else len(events)
        for i in range(0, len(events), chunk):
            for e in events[i:i + chunk]:
                sink.send(e)
            sink.flush()
            if paced:
                time.sleep(0.15)
        sink.close()
        deadline = time.monotonic() + 240
        while group_lag(bootstrap, f"{s.app_id}-signals", [s.topic("events"), s.topic("samples")]) != 0:
            assert proc.poll() is None, f"worker died (log {log_dir})"
            assert time.monotonic() < deadline, "the worker did not catch up"
            time.sleep(0.3)
        assert wait_delivered(bootstrap, s, receivers.settle, deadline, proc), "delivery not done"
        out = {}
        for name, notes in receivers.got.items():
            groups, final = delivered_state(notes)
            out[name] = {"notifications": len(notes), "groups": groups, "alerts": sorted(final.items())}
        return out
    finally:
        stop_process(proc)
        receivers.stop()


def test_the_replay_demo_notifies_the_same_alerts_every_run(kafka_bootstrap, tmp_path):
    from collectors.replay import DEFAULT_EVENTS, load_owners, read_events

    owners = load_owners(str(REPO / "deploy" / "demo" / "owners.yaml"))
    events = read_events(DEFAULT_EVENTS, owners=owners)[0][:N_EVENTS]
    fast = _run(kafka_bootstrap, events, tmp_path, paced=False)
    paced = _run(kafka_bootstrap, events, tmp_path, paced=True)
    summary = {r: (v["notifications"], v["groups"], len(v["alerts"])) for r, v in fast.items()}
    assert len(fast) >= 2 and all(v["notifications"] > 0 for v in fast.values()), summary
    assert paced == fast, (summary, {r: (v["notifications"], v["groups"], len(v["alerts"])) for r, v in paced.items()})
