"""The ``alertmanager_configs`` receiver against two REAL Alertmanager processes, read back with the real amtool.

Forwarded alerts show in ``amtool alert query``; with ``resend_delay: 1s`` an alert's ``endsAt`` is
4 s ahead, so only the periodic resend keeps it active past that; the resolution removes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp
import pytest

from alerts.config import load_text
from alerts.receivers import Receivers, resend_forever
from core.records import format_time, parse_time
from core.yamlconfig import ConfigError
from tests.alerts.amtools import Alertmanager, amtool

AM_CONFIG = "route: {receiver: sink}\nreceivers: [{name: sink}]\n"
SECRET_PATH = "/SECRETpath0123"


def note(status: str, started: float, ended: float | None = None) -> dict:
    return {"id": f"k-{status}", "receiver": "upstream", "groupKey": '{}:{alertname="Forwarded"}',
            "groupLabels": {"alertname": "Forwarded"}, "status": status,
            "alerts": [{"labels": {"alertname": "Forwarded", "severity": "critical", "pod": "p1"},
                        "annotations": {"summary": "forwarded by kubesight"}, "status": status,
                        "startsAt": format_time(started), "endsAt": format_time(ended),
                        "fingerprint": "f1", "generatorURL": "http://kubesight.local/g"}]}


def active(am: Alertmanager) -> list[dict]:
    res = amtool(f"--alertmanager.url={am.url}", "alert", "query", "-o", "json")
    assert res.returncode == 0, res.stderr
    return [a for a in json.loads(res.stdout) if a["labels"].get("alertname") == "Forwarded"]


async def until(cond, what: str, timeout: float = 15.0):
    end = time.monotonic() + timeout
    while True:
        got = await asyncio.to_thread(cond)
        if got:
            return got
        assert time.monotonic() < end, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.2)


def test_forward_resend_and_resolve_with_real_alertmanagers(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with Alertmanager(AM_CONFIG, tmp_path / "a") as am1, Alertmanager(AM_CONFIG, tmp_path / "b") as am2:
        (tmp_path / "url").write_text(am2.url + "\n")
        cfg = load_text(f"""
route: {{receiver: upstream}}
receivers:
  - name: upstream
    alertmanager_configs:
      - {{url: "{am1.url}", resend_delay: 1s, timeout: 2s}}
      - {{url_file: "{tmp_path / 'url'}", resend_delay: 1s}}
      - {{url: "http://127.0.0.1:9{SECRET_PATH}", resend_delay: 1s, timeout: 1s}}
    retry: {{initial: 10ms, max_backoff: 20ms, budget: 100ms}}
""")
        rcv = Receivers(cfg)

        async def go():
            async with aiohttp.ClientSession() as session:
                started = time.time()
                outs = await rcv.notify(session, note("firing", started))
                assert [o.ok for _, o in outs] == [True, True, False]  # the third Alertmanager is down
                assert "retry budget" in outs[2][1].reason and SECRET_PATH not in outs[2][1].reason
                for am in (am1, am2):
                    (got,) = await until(lambda am=am: active(am), f"the alert in {am.url}")
                    assert got["labels"] == {"alertname": "Forwarded", "severity": "critical", "pod": "p1"}
                    assert got["annotations"] == {"summary": "forwarded by kubesight"}
                    assert got["generatorURL"] == "http://kubesight.local/g"
                    assert abs(parse_time(got["startsAt"]) - started) < 0.01
                    assert 3.0 < parse_time(got["endsAt"]) - started < 5.0  # now + 4 x resend_delay
                first_ends = parse_time(active(am1)[0]["endsAt"])
                resender = asyncio.create_task(resend_forever(lambda: rcv, every=0.25))
                try:
                    await asyncio.sleep(6.0)  # past the first endsAt: only the resends keep it active
                    for am in (am1, am2):
                        (got,) = await asyncio.to_thread(active, am)
                        assert parse_time(got["endsAt"]) > first_ends + 1.0
                    outs = await rcv.notify(session, note("resolved", started, time.time()))
                    assert [o.ok for _, o in outs] == [True, True, False]
                    for am in (am1, am2):
                        await until(lambda am=am: not active(am), f"the resolution in {am.url}")
                    assert all(not i.forward.groups for i in rcv.forwarders())  # nothing left to resend
                    await asyncio.sleep(1.5)
                    assert not await asyncio.to_thread(active, am1)  # a resend did not bring it back
                finally:
                    resender.cancel()
                    await asyncio.gather(resender, return_exceptions=True)

        asyncio.run(go())
    assert SECRET_PATH not in caplog.text
    assert "resending firing alerts failed" in caplog.text  # the down Alertmanager, logged without its URL


def test_group_without_the_alert_stops_its_resend():
    rcv = Receivers(load_text("route: {receiver: upstream}\nreceivers:\n  - name: upstream\n"
                              "    alertmanager_configs: [{url: 'http://127.0.0.1:9', resend_delay: 1m}]\n"))
    (integ,) = rcv.forwarders()
    n = note("firing", 1627984800.0)
    integ.request(n, "", 1627984800.0)
    assert len(integ.forward.due(1627984900.0)) == 1
    integ.request(dict(n, alerts=[]), "", 1627984900.0)  # silenced or inhibited since: not resent, expires
    assert integ.forward.due(1627985000.0) == []


def test_config_errors():
    with pytest.raises(ConfigError) as exc:
        load_text("route: {receiver: r}\nreceivers:\n  - name: r\n    alertmanager_configs:\n"
                  "      - resend_delay: 0s\n      - url: am:9093\n", "routing.yaml")
    assert exc.value.errors == [
        "routing.yaml:5: receivers[0].alertmanager_configs[0].resend_delay: must be greater than 0",
        "routing.yaml:5: receivers[0].alertmanager_configs[0]: exactly one of url or url_file is required",
        "routing.yaml:6: receivers[0].alertmanager_configs[1].url: must be an http:// or https:// URL"]


def test_a_forwarded_group_is_forgotten_after_twice_the_longest_repeat_interval():
    """A firing group is notified at least every repeat_interval; the forwarder drops a group silent for twice the
    routing file's longest (a child route's 12h here), so it never keeps telling Alertmanager a gone group fires."""

    rcv = Receivers(load_text("""
route:
  receiver: am
  routes: [{matchers: ['team="db"'], receiver: am, repeat_interval: 12h}]
receivers:
  - name: am
    alertmanager_configs: [{url: "http://127.0.0.1:9"}]
"""))
    [f] = rcv.forwarders()
    assert f.forward.stale_after == 2 * 12 * 3600
