"""``kubesight bench alerts``, in process: alerts/s through lifecycle + routing + grouping (delivery: ``streams.bench_alerts``)."""

from __future__ import annotations

import socket
import sys
import time

from alerts.config import load_text
from alerts.engine import Engine
from core.records import Alert

TEAMS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(port: int) -> str:
    receivers = "\n".join(f"  - name: team-{i}\n    webhook_configs: [{{url: 'http://127.0.0.1:{port}/team-{i}'}}]"
                          for i in range(TEAMS))
    return f"""
route:
  receiver: platform
  group_by: [alertname, namespace]
  group_wait: 30s
  group_interval: 5m
  routes:
    - matchers: ['severity="critical"']
      receiver: platform
      continue: true
    - matchers: ['owner=~".+"']
      owner_receiver: true
receivers:
  - name: platform
    webhook_configs: [{{url: 'http://127.0.0.1:{port}/platform'}}]
{receivers}
"""


def alerts(n: int, groups: int, start: float = 1_700_000_000.0, resolved_every: int = 4) -> list[tuple[float, Alert]]:
    """n transitions over ``groups`` (alertname, namespace) groups; every 4th resolves one (0: none resolve)."""
    out = []
    t = start
    for i in range(n):
        g = i % groups
        labels = {"alertname": f"Alert{g % 50}", "namespace": f"ns-{g // 50}",
                  "pod": f"pod-{i // 5}" if resolved_every else f"pod-{i}",
                  "owner": f"team-{g % (TEAMS + 2)}", "severity": "critical" if g % 7 == 0 else "warning"}
        status = "resolved" if resolved_every and i % resolved_every == resolved_every - 1 else "firing"
        t += 0.01 if resolved_every else 0.0
        out.append((t, Alert(labels, status=status, startsAt=t - 1, endsAt=t if status == "resolved" else None)))
    return out


def run(n: int, groups: int) -> dict:
    from tqdm import tqdm

    port = free_port()
    cfg = load_text(config(port))
    eng, state = Engine(cfg), {}
    inputs = alerts(n, groups)
    notes: list[dict] = []
    t0 = time.perf_counter()
    last_tick = inputs[0][0]
    for t, a in tqdm(inputs, desc="grouping", unit="alert", file=sys.stderr, mininterval=0.5, leave=False,
                     disable=None):  # None: no bar when stderr is no terminal (a log, a pipe)
        eng.receive(a, state, t)
        if t - last_tick >= 1.0:
            notes += eng.tick(state, t)
            last_tick = t
    end = inputs[-1][0]
    for k in range(1, 40):  # let every group flush: group_wait, then group intervals
        notes += eng.tick(state, end + 30.0 * k)
    engine_s = time.perf_counter() - t0
    carried = sum(len(x["alerts"]) for x in notes)

    fig = {
        "alerts": n, "groups": groups, "notifications": len(notes), "alerts_in_notifications": carried,
        "engine_alerts_per_s": n / engine_s, "engine_us_per_alert": engine_s / n * 1e6,
    }
    print(f"bench alerts: {n} alert transitions over {groups} groups, {TEAMS} owner receivers + fallback")
    print(f"  lifecycle+routing+grouping  {fig['engine_alerts_per_s']:>10,.0f} alerts/s  "
          f"({fig['engine_us_per_alert']:.1f} µs/alert, {len(notes)} notifications, {carried} alerts in them)")
    return fig
