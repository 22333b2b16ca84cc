"""The silence API answers as Alertmanager 0.25 does: the same requests to a real Alertmanager and to kubesight's
API (a ``SilenceBook`` on the real broker), the answers compared (audit au4: updates, starts, names, order, filters).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from alerts.api import AlertsState, app
from alerts.config import load_text
from alerts.silences import Silences
from core.records import Alert, fingerprint, format_time, parse_time
from tests.alerts.amtools import Alertmanager, binary
from tests.alerts.test_silences_api import silence_api

pytestmark = pytest.mark.kafka

CONFIG = "route: {receiver: ops}\nreceivers: [{name: ops}]\n"


def _body(matchers, start=-1.0, end=3600.0, **kw) -> dict:
    now = time.time()
    return {"matchers": [{"name": n, "value": v, "isRegex": r, "isEqual": e} for n, v, r, e in matchers],
            "startsAt": format_time(now + start), "endsAt": format_time(now + end), "createdBy": "t", "comment": "c",
            **kw}


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str):
        self.s, self.base = session, base

    async def post(self, body: dict) -> tuple[int, dict | str]:
        async with self.s.post(f"{self.base}/api/v2/silences", data=orjson.dumps(body),
                               headers={"Content-Type": "application/json"}) as r:
            text = await r.text()
            return r.status, (orjson.loads(text) if r.status == 200 else text)

    async def new(self, matchers, **kw) -> str:
        status, got = await self.post(_body(matchers, **kw))
        assert status == 200, got
        return got["silenceID"]

    async def get(self, id: str) -> dict:
        async with self.s.get(f"{self.base}/api/v2/silence/{id}") as r:
            assert r.status == 200
            return await r.json()

    async def shows(self, id: str, key: str, want: str, deadline: float = 5.0) -> bool:
        """Whether GET shows ``want`` within ``deadline`` s: kubesight's book re-reads its own writes from the
        topic, so for a moment after a write it may show the one before."""
        end = time.monotonic() + deadline
        while (await self.get(id))[key] != want:
            if time.monotonic() > end:
                return False
            await asyncio.sleep(0.02)
        return True

    async def list(self, *filters: str) -> list[dict]:
        async with self.s.get(f"{self.base}/api/v2/silences", params=[("filter", f) for f in filters]) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def expire(self, id: str) -> None:
        async with self.s.delete(f"{self.base}/api/v2/silence/{id}") as r:
            assert r.status == 200

    async def amtool(self, *args: str) -> str:
        p = await asyncio.create_subprocess_exec(binary("amtool"), f"--alertmanager.url={self.base}", *args,
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(p.communicate(), 30)
        assert p.returncode == 0, err.decode()
        return out.decode()


async def _updates(api: Api) -> list:
    """Alertmanager's ``Set``/``canUpdate``: which posts with an id update in place, which replace."""
    out = []

    async def states(old: str, new: str) -> tuple:
        return new == old, (await api.get(old))["status"]["state"], (await api.get(new))["status"]["state"]

    sid = await api.new([("job", "a", False, True)], start=-7200)  # a new silence starting in the past starts now
    got = await api.get(sid)
    out.append(("new, start 2h ago -> now", abs(parse_time(got["startsAt"]) - time.time()) < 60))
    # posted back as read (milliseconds), start cut to its second, end later: in place, the start kept as sent
    second = got["startsAt"][:19] + ".000Z"
    status, r = await api.post(dict(_body([("job", "a", False, True)], end=7200), id=sid, startsAt=second))
    out.append(("active, same second", await states(sid, r["silenceID"]), await api.shows(sid, "startsAt", second)))
    _, r = await api.post(_body([("job", "b", False, True)], id=sid))
    out.append(("active, other matchers", await states(sid, r["silenceID"])))
    sid = await api.new([("job", "c", False, True)])
    _, r = await api.post(_body([("job", "c", False, True)], start=600, id=sid))
    out.append(("active, start moved ahead", await states(sid, r["silenceID"])))
    sid = await api.new([("job", "d", False, True)])
    await api.expire(sid)
    _, r = await api.post(_body([("job", "d", False, True)], id=sid))
    out.append(("expired, posted again", await states(sid, r["silenceID"])))
    sid = await api.new([("job", "e", False, True)], start=600)
    _, r = await api.post(_body([("job", "e", False, True)], start=1200, id=sid))
    out.append(("pending, start moved later", await states(sid, r["silenceID"])))
    _, r = await api.post(_body([("job", "e", False, True)], start=-60, id=sid))
    new = r["silenceID"]
    out.append(("pending, start in the past", await states(sid, new),
                abs(parse_time((await api.get(new))["startsAt"]) - time.time()) < 60))
    # amtool silence update of an expired silence: a new one, the old stays expired
    sid = await api.new([("job", "f", False, True)])
    await api.expire(sid)
    await api.amtool("silence", "update", sid, "--duration=1h")
    out.append(("amtool update expired", sorted((s["id"] == sid, s["status"]["state"])
                                                for s in await api.list('job="f"'))))
    return out


async def _order(api: Api) -> list[str]:
    names = {}
    for n, start, end in [("act_late", -1, 7200), ("act_soon", -1, 3600), ("pend_early_start", 600, 9000),
                          ("pend_late_start", 1200, 3000), ("exp_first", -1, 3600), ("exp_second", -1, 3600)]:
        names[await api.new([("ord", "1", False, True), ("n", n, False, True)], start=start, end=end)] = n
    for n in ("exp_first", "exp_second"):
        await api.expire(next(k for k, v in names.items() if v == n))
        await asyncio.sleep(0.01)  # distinct ends
    return [names[s["id"]] for s in await api.list('ord="1"')]


async def _filters(api: Api) -> list:
    names = {}
    for n, m in [("eq_x", ("job", "x", False, True)), ("ne_x", ("job", "x", False, False)),
                 ("re_a", ("job", "a.*", True, True)), ("nre_x", ("job", "x", True, False)),
                 ("k_empty", ("k", "", False, True))]:
        names[await api.new([("flt", "1", False, True), m])] = n
    out = []
    for f in ['job="x"', 'job!="x"', 'job=~"a.*"', 'job=~"a.+"', 'job=~"x"', 'job!~"x"', 'job=~".*"', 'k=""',
              'k=~""']:
        out.append((f, sorted(names[s["id"]] for s in await api.list('flt="1"', f))))
    got = await api.amtool("silence", "query", "-q", 'flt="1"', "job=x")
    out.append(("amtool silence query job=x", sorted(names[i] for i in got.split())))
    return out


async def _names(api: Api) -> list:
    return [(name, (await api.post(_body([(name, "v", False, True)])))[0]) for name in ("a:b", "foo.bar", "_ok")]


def test_silence_posts_lists_and_filters_answer_as_alertmanager(settings, tmp_path):
    async def run(base: str) -> dict:
        async with aiohttp.ClientSession() as s:
            api = Api(s, base)
            return {"updates": await _updates(api), "order": await _order(api), "filters": await _filters(api),
                    "names": await _names(api)}

    async def go():
        async with silence_api(settings) as root:
            with Alertmanager(CONFIG, tmp_path) as am:
                return await run(am.url), await run(root)

    am, ks = asyncio.run(go())
    assert ks == am
    # what Alertmanager 0.25 answered when this was written, so a change on its side shows as one
    assert ks["updates"] == [
        ("new, start 2h ago -> now", True),
        ("active, same second", (True, "active", "active"), True),
        ("active, other matchers", (False, "expired", "active")),
        ("active, start moved ahead", (False, "expired", "pending")),
        ("expired, posted again", (False, "expired", "active")),
        ("pending, start moved later", (True, "pending", "pending")),
        ("pending, start in the past", (False, "expired", "active"), True),
        ("amtool update expired", [(False, "active"), (True, "expired")]),
    ]
    assert ks["order"] == ["act_soon", "act_late", "pend_early_start", "pend_late_start", "exp_second", "exp_first"]
    assert dict(ks["filters"]) == {
        'job="x"': ["eq_x"], 'job!="x"': ["ne_x"], 'job=~"a.*"': ["re_a"], 'job=~"a.+"': [], 'job=~"x"': [],
        'job!~"x"': ["nre_x"], 'job=~".*"': [], 'k=""': ["k_empty"], 'k=~""': [], "amtool silence query job=x": ["eq_x"]}
    assert ks["names"] == [("a:b", 400), ("foo.bar", 400), ("_ok", 200)]


INHIBIT = """
route: {receiver: ops}
receivers: [{name: ops}]
inhibit_rules:
  - source_matchers: ['alertname="Src"']
    target_matchers: ['alertname="Tgt"']
    equal: [zone]
  - source_matchers: ['alertname="Src2"']
    target_matchers: ['alertname="Tgt"']
    equal: [zone]
"""


class _Book:
    def __init__(self):
        self.silences = Silences()

    def list(self, now):
        return self.silences.list(now)


def test_inhibited_by_holds_one_source_of_the_first_rule_that_inhibits():
    """Alertmanager's ``Mutes`` stops at the first rule and source: ``inhibitedBy`` is one fingerprint."""
    alerts = AlertsState(load_text(INHIBIT, "routing.yaml"))
    sources = [{"alertname": "Src", "n": str(i)} for i in range(3)] + [{"alertname": "Src2", "n": "9"}]
    for labels in sources:
        alerts.inhibitor.observe(labels, "firing")
    now = time.time()
    target = Alert({"alertname": "Tgt", "n": "t"}, {}, "firing", now, None, "")
    alerts.by_fp[fingerprint(target.labels)] = {"alert": target, "updated": now, "groups": {("ops", "{}"): {}}}

    async def go():
        async with TestClient(TestServer(app(_Book(), alerts=alerts))) as c:
            out = []
            for _ in range(2):
                r = await c.get("/api/v2/alerts")
                assert r.status == 200
                out.append(await r.json())
            return out

    first, again = asyncio.run(go())
    (got,) = first
    by = got["status"]["inhibitedBy"]
    assert got["status"]["state"] == "suppressed" and len(by) == 1
    assert by[0] in {fingerprint(x) for x in sources[:3]}  # a source of the first rule, not Src2's
    assert [a["status"] for a in again] == [got["status"]]  # the same one every time
