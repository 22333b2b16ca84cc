"""Large alert groups never stop a partition: no state record grows with the group, a notification too large for a
Kafka record is cut (``truncatedAlerts``) and the rest told at the next flushes, none lost, the dedup decisions stay
Alertmanager's (``DedupStage.needsUpdate``), and state moves between this format and the earlier one both ways (a
rolling update or a rollback)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from alerts import grouping
from alerts.config import load_text
from alerts.engine import Engine
from alerts.payload import pagerduty, slack, webhook
from alerts.receivers import Receivers
from core.records import RECORD_LIMIT, Alert
from streams.state import Store

CFG = """
route: {receiver: ops, group_by: [alertname], group_wait: 30s, group_interval: 5m, repeat_interval: 1h}
receivers: [{name: ops, webhook_configs: [{url: "http://127.0.0.1:1/x", send_resolved: %s}]}]
"""
BIG = 60_000
SMALL = 64 * 1024  # what any one state record stays under, whatever the group's size
EARLIER = "aabdad5017ea87f711f6b62f97a34bd54fc3e7ec"  # the last commit whose grouping listed the log in g|<key>


def _record(pod: str, status: str = "firing", t: float = 0.0) -> dict:
    return Alert({"alertname": "PodDown", "namespace": "shop", "pod": pod}, {"summary": f"{pod} is down"},
                 status=status, startsAt=0.0, endsAt=t if status == "resolved" else None).to_dict()


def _put(eng: Engine, st, d: dict, now: float) -> None:
    (group,) = eng.groups_of(d["labels"])
    eng.group_dict(group, d, 0.0, st, now)


def _largest(st: Store) -> int:
    """The largest changelog record (key + value) the state changes since the last call make."""
    return max((len(k) + len(v or b"") for k, v in st.flush_items()), default=0)


def _pods(note: dict) -> list[tuple[str, str]]:
    return sorted((a["labels"]["pod"], a["status"]) for a in note["alerts"])


def _fits(note: dict) -> bool:
    return len(note["groupKey"].encode()) + len(orjson.dumps(note)) <= RECORD_LIMIT - grouping.NOTE_MARGIN


def test_a_group_of_60000_alerts_keeps_every_state_record_small_and_is_told_in_chunks():
    eng, st = Engine(load_text(CFG % "true")), Store()
    for i in range(BIG):
        _put(eng, st, _record(f"p{i:05d}"), 0.0)
    assert _largest(st) < SMALL
    (note,) = eng.tick(st, 30.0)  # new firing: notified, cut to what a record holds
    kept = len(note["alerts"])
    assert _fits(note) and 1000 < kept < BIG
    assert (note["truncatedAlerts"], note["numFiring"], note["numResolved"]) == (BIG - kept, BIG, 0)
    assert _pods(note) == [(f"p{i:05d}", "firing") for i in range(kept)]  # Alertmanager's order, a prefix of it
    assert not any("notified" in a for a in note["alerts"])  # the state's marks stay in the state
    assert _largest(st) < SMALL  # was 1.14 MB: the group's record listed every notified fingerprint
    (note2,) = eng.tick(st, 330.0)  # the alerts left out are new still: the next chunk
    assert _fits(note2) and note2["id"] != note["id"]
    assert _pods(note2) == [(f"p{i:05d}", "firing") for i in range(kept, kept + len(note2["alerts"]))]
    assert _largest(st) < SMALL
    body = webhook(note2, "http://ks")
    assert (body["truncatedAlerts"], len(body["alerts"]), body["status"]) == (BIG - len(note2["alerts"]),
                                                                              len(note2["alerts"]), "firing")
    assert webhook(note2, "", max_alerts=10)["truncatedAlerts"] == BIG - 10  # max_alerts cuts further
    assert slack(note2, "#ops")["attachments"][0]["title"] == f"[FIRING:{BIG}] PodDown"  # the group's count


def test_an_alert_the_log_still_names_is_not_announced_again_when_it_comes_back():
    """Alertmanager's notification log keeps the fingerprints it sent: an alert that resolved unannounced (no
    send_resolved) and fires again, or that a reload routed away and back, is not news; the log's placeholders
    for them go with the next notification."""
    eng, st = Engine(load_text(CFG % "false")), Store()
    for pod in ("a", "b", "c"):
        _put(eng, st, _record(pod), 0.0)
    assert len(eng.tick(st, 30.0)) == 1
    _put(eng, st, _record("a", "resolved", 100.0), 100.0)
    assert eng.tick(st, 330.0) == []  # no send_resolved: not announced, and "a" leaves the group
    _put(eng, st, _record("a"), 400.0)
    (group,) = eng.groups_of(_record("b")["labels"])
    fp_b = _record("b")["fingerprint"]
    assert grouping.withdraw(st, group.key, fp_b, eng.timers(st).members)  # a reload sent "b" elsewhere...
    _put(eng, st, _record("b"), 410.0)  # ...and back
    assert eng.tick(st, 630.0) == []  # "a" and "b" are in the log already
    _put(eng, st, _record("d"), 700.0)
    (note,) = eng.tick(st, 930.0)
    assert _pods(note) == [("a", "firing"), ("b", "firing"), ("c", "firing"), ("d", "firing")]
    assert not [k for k in st if k.startswith(grouping.GONE_PREFIX)]


def test_a_log_restored_from_the_earlier_format_still_decides():
    """The group record of the earlier format listed the notified fingerprints (``log``: firing, resolved); restored
    from the changelog after an upgrade it is read as it was meant, then written in the new form."""
    eng = Engine(load_text(CFG % "false"))
    a, b, c, d = (_record(p) for p in "abcd")
    group = eng.groups_of(a["labels"])[0]
    st = Store()
    old = {grouping.PREFIX + group.key: {"group": group.to_dict(), "next": 330.0, "flushed": True, "seq": 1,
                                          "log": {"firing": sorted([a["fingerprint"], b["fingerprint"],
                                                                    c["fingerprint"]]), "resolved": [], "at": 30.0}},
           f"{grouping.ALERT_PREFIX}{group.key}|{a['fingerprint']}": a,  # "c" resolved unannounced and left
           f"{grouping.ALERT_PREFIX}{group.key}|{b['fingerprint']}": b}
    for k, v in old.items():
        st.restore(k.encode(), orjson.dumps(v))
    assert eng.tick(st, 330.0) == []  # a and b: notified already
    _put(eng, st, c, 400.0)
    assert eng.tick(st, 630.0) == []  # c fires again: the old log named it
    g = st[grouping.PREFIX + group.key]
    assert g["log"] is None and g["marks_log"] == {"firing": 3, "resolved": 0, "at": 30.0}
    _put(eng, st, d, 700.0)
    (note,) = eng.tick(st, 930.0)  # d is new
    assert _pods(note) == [("a", "firing"), ("b", "firing"), ("c", "firing"), ("d", "firing")]
    assert note["id"] == grouping.notification(group, [], 0.0, 2)["id"]  # the sequence goes on



SMALL_LIMIT = 20_500  # a record limit that cuts a group of 150 alerts (~ 260 bytes each) in three


def _chunked(monkeypatch, send_resolved: str = "true", n: int = 150):
    monkeypatch.setattr(grouping, "RECORD_LIMIT", SMALL_LIMIT)
    eng, st = Engine(load_text(CFG % send_resolved)), Store()
    for i in range(n):
        _put(eng, st, _record(f"p{i:03d}"), 0.0)
    return eng, st


def _fits_small(note: dict) -> bool:
    return len(note["groupKey"].encode()) + len(orjson.dumps(note)) <= SMALL_LIMIT - grouping.NOTE_MARGIN


def test_a_group_too_large_for_one_notification_is_told_in_chunks_none_lost_none_twice(monkeypatch):
    eng, st = _chunked(monkeypatch)
    every = {f"p{i:03d}" for i in range(150)}
    told: list[str] = []  # each alert when it is first told
    notes = []
    for t in (30.0, 330.0, 630.0):
        (note,) = eng.tick(st, t)
        assert _fits_small(note) and note["truncatedAlerts"] == 150 - len(note["alerts"])
        new = [p for p, _ in _pods(note) if p not in told]
        assert new, "each flush tells alerts not told before"
        told += new
        notes.append(note)
    assert sorted(told) == sorted(every) and len(told) == len(set(told))  # none lost, none told twice as new
    first, second = ({p for p, _ in _pods(n)} for n in notes[:2])
    assert not first & second  # the second chunk is all new
    assert eng.tick(st, 930.0) == []  # all told: nothing new, no repeat yet
    # a new firing alert that sorts after every other: the notification is for it, and it is in it
    _put(eng, st, _record("pzzz"), 1000.0)
    (note,) = eng.tick(st, 1230.0)
    assert ("pzzz", "firing") in _pods(note) and note["truncatedAlerts"] == 151 - len(note["alerts"])
    assert eng.tick(st, 1530.0) == []


def test_a_cut_resolved_only_notification_keeps_its_resolution(monkeypatch):
    eng, st = _chunked(monkeypatch)
    for t in (30.0, 330.0, 630.0):
        eng.tick(st, t)
    assert eng.tick(st, 930.0) == []
    _put(eng, st, _record("p149", "resolved", 1000.0), 1000.0)  # sorts last: would be cut in Alertmanager's order
    (note,) = eng.tick(st, 1230.0)
    assert note["resolvedOnly"] is True and note["status"] == "firing"
    assert ("p149", "resolved") in _pods(note) and note["alerts"][0]["status"] == "firing"
    assert note["numFiring"] == 149 and note["numResolved"] == 1
    assert eng.tick(st, 1530.0) == []  # told: not again
    assert not any(k.startswith(grouping.ALERT_PREFIX) and k.endswith(_record("p149")["fingerprint"]) for k in st)


def test_resolutions_a_cut_left_out_stay_until_told(monkeypatch):
    eng, st = _chunked(monkeypatch)
    for t in (30.0, 330.0, 630.0):
        eng.tick(st, t)
    for i in range(0, 150, 1):  # the whole group resolves: more resolutions than one notification holds
        _put(eng, st, _record(f"p{i:03d}", "resolved", 700.0), 700.0)
    told = []
    for t in (930.0, 1230.0, 1530.0):
        (note,) = eng.tick(st, t)
        assert note["status"] == "resolved" and _fits_small(note)
        told += [p for p, s in _pods(note)]
    assert sorted(told) == [f"p{i:03d}" for i in range(150)]
    assert eng.tick(st, 1830.0) == [] and not [k for k in st if k.startswith(("g|", "ga|", "gn|"))]


def test_a_cut_of_a_group_that_still_fires_says_firing(monkeypatch):
    """More new resolutions than a notification holds, while the rest fires: the note keeps a firing alert, so it (and
    PagerDuty's event) does not say the group resolved."""
    eng, st = _chunked(monkeypatch)
    for t in (30.0, 330.0, 630.0):
        eng.tick(st, t)
    for i in range(100):
        _put(eng, st, _record(f"p{i:03d}", "resolved", 700.0), 700.0)
    (note,) = eng.tick(st, 930.0)
    assert note["status"] == "firing" and note["resolvedOnly"] is True
    assert sum(s == "firing" for _, s in _pods(note)) == 1 and note["numFiring"] == 50


def test_a_cut_note_counts_what_each_integration_sends(monkeypatch):
    """The webhook without send_resolved counts only the firing alerts left out (Alertmanager filters resolved alerts
    before its webhook truncates); titles and PagerDuty say the group's totals; the Alertmanager forwarder keeps
    re-sending the alerts earlier chunks told."""
    eng, st = _chunked(monkeypatch)
    for i in range(100, 150):
        _put(eng, st, _record(f"p{i:03d}", "resolved", 10.0), 10.0)
    (note,) = eng.tick(st, 30.0)
    kept = _pods(note)
    kept_firing = sum(s == "firing" for _, s in kept)
    assert (note["numFiring"], note["numResolved"], note["truncatedAlerts"]) == (100, 50, 150 - len(kept))
    assert slack(note, "#ops")["attachments"][0]["title"] == "[FIRING:100] PodDown"  # the group's, not the kept's
    cfg = load_text("""
route: {receiver: ops, group_by: [alertname]}
receivers:
- name: ops
  webhook_configs: [{url: "http://127.0.0.1:1/x", send_resolved: false}]
  pagerduty_configs: [{routing_key: "0123456789abcdef0123456789abcdef", send_resolved: true}]
  alertmanager_configs: [{url: "http://127.0.0.1:1/am"}]
""")
    integ = {i.kind: i for i in Receivers(cfg).integrations["ops"]}
    hook = orjson.loads(integ["webhook"].request(note, "http://ks", 100.0)[1])
    assert (len(hook["alerts"]), hook["truncatedAlerts"]) == (kept_firing, 100 - kept_firing)
    pd = pagerduty(note, "0123456789abcdef0123456789abcdef", "s")["payload"]  # kubesight's renderer (a Go template
    assert (pd["custom_details"]["num_firing"], pd["custom_details"]["num_resolved"]) == (100, 50)  # counts .Alerts)
    assert orjson.loads(integ["pagerduty"].request(note, "http://ks", 100.0)[1])["event_action"] == "trigger"
    fwd = integ["alertmanager"]
    fwd.request(note, "http://ks", 100.0)
    (note2,) = eng.tick(st, 330.0)
    fwd.request(note2, "http://ks", 400.0)
    told = {p for n in (note, note2) for p, s in _pods(n) if s == "firing"}
    assert len(fwd.forward.groups[note["groupKey"]]) == len(told)  # both chunks' firing alerts, not the last's only



def _earlier(tmp_path):
    """alerts/grouping.py as the earlier workers run it (the log listed in g|<key>)."""
    root = Path(__file__).resolve().parents[2]
    try:
        src = subprocess.run(["git", "show", f"{EARLIER}:alerts/grouping.py"], cwd=root, capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("the earlier commit is not in this checkout")
    path = tmp_path / "earlier_grouping.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("earlier_grouping", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # (its dataclass looks its module up)
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[spec.name]
    return mod


def _rec(fp: str, status: str = "firing") -> dict:
    return {"fingerprint": fp, "labels": {"pod": fp}, "status": status, "startsAt": "2021-08-03T10:00:00.000Z"}


def _fps(note) -> list[tuple[str, str]]:
    return sorted((a["fingerprint"], a["status"]) for a in note["alerts"]) if note else []


def test_an_earlier_worker_runs_on_what_this_one_wrote_and_back(tmp_path):
    """A rolling update (2 replicas) or a rollback moves a partition from this worker to an earlier one and back: the
    earlier one runs on this state without failing (it announces the group once more: it reads no log), and this one
    reads the log the earlier one wrote after it as the latest."""
    old = _earlier(tmp_path)
    g_new = grouping.Group("K", "ops", {}, "{}", 30.0, 300.0, 3600.0, False)
    g_old = old.Group("K", "ops", {}, "{}", 30.0, 300.0, 3600.0, False)
    st: dict = {}
    for fp in "abcd":
        grouping.add_dict(st, g_new, _rec(fp), 0.0, 0.0)
    assert _fps(grouping.flush(st, "K", 30.0)) == [(fp, "firing") for fp in "abcd"]
    grouping.add_dict(st, g_new, _rec("a", "resolved"), 0.0, 100.0)
    assert grouping.flush(st, "K", 330.0) is None  # "a" resolved unannounced: a placeholder
    assert grouping.withdraw(st, "K", "b")  # "b" routed away: a placeholder
    assert {k for k in st if k.startswith(grouping.GONE_PREFIX)} == {"gn|K|a", "gn|K|b"}

    # the earlier worker restores this changelog: every one of its operations runs on it
    for run in (lambda s: old.flush(s, "K", 3700.0),
                lambda s: old.flush(s, "K", 3700.0, muted=lambda labels: labels["pod"] == "c"),
                lambda s: old.flush(s, "K", 3700.0, index=old.members(s)),
                lambda s: (old.withdraw(s, "K", "c"), old.withdraw(s, "K", "d"), old.due(s, 0.0)),
                lambda s: (old.add_dict(s, g_old, _rec("e"), 0.0, 3600.0), old.flush(s, "K", 3700.0))):
        run(orjson.loads(orjson.dumps(st)))
    earlier = orjson.loads(orjson.dumps(st))
    assert old.members(earlier) == {"K": {"c", "d"}}  # it sees no placeholder
    assert _fps(old.flush(earlier, "K", 3700.0)) == [("c", "firing"), ("d", "firing")]  # told once more
    old.add_dict(earlier, g_old, _rec("d", "resolved"), 0.0, 3800.0)
    assert _fps(old.flush(earlier, "K", 4000.0)) == []  # (no send_resolved: d leaves, its log says firing)

    # back on this worker: the earlier one's log (c, d firing) is the latest; "a" and "b", of this one's, are not
    back = orjson.loads(orjson.dumps(earlier))
    assert isinstance(back["g|K"]["log"]["firing"], list)
    assert grouping.flush(back, "K", 4300.0) is None  # c notified already
    assert back["g|K"]["log"] is None and back["g|K"]["marks_log"]["firing"] == 2
    assert set(grouping.members(back).gone["K"]) == {"d"}  # stale placeholders (a, b) gone; d's kept
    grouping.add_dict(back, g_new, _rec("d"), 0.0, 4400.0)
    assert grouping.flush(back, "K", 4600.0) is None  # d fires again: the earlier log named it
    grouping.add_dict(back, g_new, _rec("a"), 0.0, 4700.0)
    assert _fps(grouping.flush(back, "K", 4900.0)) == [("a", "firing"), ("c", "firing"), ("d", "firing")]  # a: new
    grouping.add_dict(back, g_new, _rec("b"), 0.0, 5000.0)
    assert ("b", "firing") in _fps(grouping.flush(back, "K", 5200.0))  # b too: the earlier log had not it


