"""Incidents audited in process (2026-11-29): an episode read after its resolution, a full incident's alerts it could
not keep (its end, its hold), pods that share only a node, and what a node explains."""

from __future__ import annotations

import orjson

import alerts.incidents as mod
from alerts.incidents import ENDED, Incidents, rank
from core.records import Alert
from streams.incidents import REKEYED, IncidentStage

T0 = 1_700_000_000.0


def A(t, status="firing", endsAt=None, **labels) -> Alert:
    labels.setdefault("cluster", "prod")
    return Alert(labels, {"summary": labels["alertname"]}, status, t,
                 endsAt if endsAt is not None else (t if status == "resolved" else None))


def ended(a: Alert, t: float) -> Alert:
    return Alert(a.labels, a.annotations, "resolved", a.startsAt, t)


def open_ids(state) -> list[str]:
    return Incidents.open_ids(state)


POD = dict(alertname="KubePodCrashLooping", namespace="a", workload="web", pod="web-1", node="n1")


# ---------------------------------------------------------------- (a) an episode read after its resolution

def test_a_firing_record_read_after_its_resolution_does_not_keep_its_incident_open():
    inc, state = Incidents(quiet=300), {}
    a = A(T0, **POD)
    inc.observe(a, state, T0)
    inc.observe(ended(a, T0 + 60), state, T0 + 60)
    assert inc.observe(a, state, T0 + 61) == []  # the older firing record (a replay, another partition's order)
    assert inc.stale == 1
    done = inc.expire(state, T0 + 360)
    assert [r["status"] for r in done] == ["resolved"] and open_ids(state) == []


def test_a_firing_record_read_after_its_resolution_opens_no_incident():
    inc, state = Incidents(), {}
    a = A(T0, **POD)
    inc.observe(ended(a, T0 + 60), state, T0 + 60)  # the resolution comes first
    assert inc.observe(a, state, T0 + 60) == [] and open_ids(state) == [] and inc.stale == 1


def test_a_notification_handed_over_after_its_incident_closed_opens_nothing_and_tells_nobody():
    inc, state = Incidents(quiet=300), {}
    a = A(T0, **POD)
    inc.observe(a, state, T0)
    inc.observe(ended(a, T0 + 60), state, T0 + 60)
    assert [r["status"] for r in inc.expire(state, T0 + 400)] == ["resolved"]
    assert inc.handed(a, "team-a", state, T0 + 401) == []
    assert inc.take_notes() == [] and open_ids(state) == [] and inc.stale == 1


def test_a_new_episode_and_a_later_promise_are_not_replays():
    inc, state = Incidents(), {}
    a = A(T0, **POD)
    inc.observe(a, state, T0)
    inc.observe(ended(a, T0 + 60), state, T0 + 60)
    again = A(T0 + 100, **POD)  # fires again: a new episode, a new startsAt
    assert [len(r["members"]) for r in inc.observe(again, state, T0 + 100)] == [1]
    dog, state = A(T0, endsAt=T0 + 240, alertname="Watchdog"), {}
    inc.observe(dog, state, T0)
    inc.observe(ended(dog, T0 + 240), state, T0 + 240)  # its promise ran out: alerting resolved it
    inc.observe(A(T0, endsAt=T0 + 480, alertname="Watchdog"), state, T0 + 300)  # the sender is back, same startsAt
    assert len(open_ids(state)) == 1 and inc.stale == 0


def test_resolutions_are_remembered_a_bounded_time_and_number_the_same_across_a_restart(monkeypatch):
    monkeypatch.setattr(mod, "MAX_ENDED", 3)
    stage, state = IncidentStage(Incidents()), {}
    emit = lambda *rec: None  # noqa: E731
    pods = [A(T0 + i, **{**POD, "pod": f"web-{i}"}) for i in range(5)]
    for i, p in enumerate(pods):
        stage.process(Alert(p.labels, {REKEYED: "1"}, "resolved", p.startsAt, T0 + 10 + i), state, emit)
    stage.tick(T0 + 20, state, emit)
    kept = sorted(k for k in state if k.startswith(ENDED))
    assert kept == sorted(ENDED + p.fingerprint for p in pods[2:])  # the 3 read last
    restored = orjson.loads(orjson.dumps(state))
    fresh = IncidentStage(Incidents())
    assert fresh.incidents.observe(pods[4], restored, T0 + 30) == []  # still known resolved after a restart
    fresh.process(Alert(pods[0].labels, {REKEYED: "1"}, "firing", T0 + 14 + mod.ENDED_FOR, None), restored, emit)
    assert not any(k.startswith(ENDED) for k in restored)  # a day later: forgotten
    assert len(open_ids(restored)) == 1


# ---------------------------------------------------------------- (b, c) a full incident's alerts it could not keep

def _full(inc: Incidents, state: dict, n: int, t: float = T0) -> list[Alert]:
    pods = [A(t + i * 0.001, alertname="KubePodNotReady", node="n1", namespace="a", workload="w", pod=f"p{i}")
            for i in range(n)]
    for p in pods:
        inc.observe(p, state, t)
    return pods


LATE = dict(alertname="KubePodNotReady", node="n1", namespace="a", workload="w", pod="late")


def test_a_full_incident_stays_open_while_an_alert_it_could_not_keep_fires_and_tells_its_receiver_the_end(monkeypatch):
    monkeypatch.setattr(mod, "MAX_MEMBERS", 5)
    inc, state = Incidents(quiet=300), {}
    pods = _full(inc, state, 5)
    late = A(T0 + 1, **LATE)
    inc.handed(late, "team-9", state, T0 + 1)
    assert [(n["receiver"], n["status"]) for n in inc.take_notes()] == [("team-9", "firing")]
    for p in pods:
        inc.observe(ended(p, T0 + 100), state, T0 + 100)
    assert inc.expire(state, T0 + 1000) == [] and len(open_ids(state)) == 1  # "late" still fires
    inc.observe(ended(late, T0 + 1100), state, T0 + 1100)
    assert inc.expire(state, T0 + 1399) == []  # quiet from the last end
    assert [r["status"] for r in inc.expire(state, T0 + 1400)] == ["resolved"]
    notes = inc.take_notes()
    assert [(n["receiver"], n["status"], [(x["labels"]["pod"], x["status"], x["endsAt"]) for x in n["alerts"]])
            for n in notes] == [("team-9", "resolved", [("late", "resolved", "2023-11-14T22:31:40.000Z")])]


def test_a_full_incident_that_absorbs_another_stays_open_while_the_members_it_could_not_keep_fire(monkeypatch):
    monkeypatch.setattr(mod, "MAX_MEMBERS", 5)
    inc, state = Incidents(quiet=300), {}
    pods = _full(inc, state, 4)
    node = A(T0 + 5, alertname="KubeNodeNotReady", node="n2")
    inc.handed(node, "platform", state, T0 + 5)  # its own incident, its receiver told
    p4 = A(T0 + 6, **{**LATE, "pod": "p4"})
    inc.handed(p4, "team-a", state, T0 + 6)  # the 5th member
    bridge = A(T0 + 7, alertname="KubePodNotReady", node="n2", namespace="a", workload="w", pod="p5")
    inc.observe(bridge, state, T0 + 7)  # links both: merged into the full one, which can keep neither it nor n2's
    assert len(open_ids(state)) == 1
    inc.take_notes()
    for p in pods + [p4, bridge]:
        inc.observe(ended(p, T0 + 100), state, T0 + 100)
    assert inc.expire(state, T0 + 1000) == []  # n2's alert still fires
    inc.observe(ended(node, T0 + 1100), state, T0 + 1100)
    assert [r["status"] for r in inc.expire(state, T0 + 1400)] == ["resolved"]
    ends = {n["receiver"]: [(x["labels"]["alertname"], x["labels"].get("pod")) for x in n["alerts"]]
            for n in inc.take_notes()}
    assert ends == {"team-a": [("KubePodNotReady", "p4")], "platform": [("KubeNodeNotReady", None)]}


def test_a_held_full_incident_tells_a_receiver_that_came_during_the_hold_once_released(monkeypatch):
    monkeypatch.setattr(mod, "MAX_MEMBERS", 5)
    inc, state = Incidents(hold=10), {}
    _full(inc, state, 5)
    inc.handed(A(T0 + 1, **LATE), "team-9", state, T0 + 1)
    assert inc.take_notes() == []  # held
    inc.expire(state, T0 + 10)
    assert [(n["receiver"], n["status"], [x["labels"]["pod"] for x in n["alerts"]]) for n in inc.take_notes()] == [
        ("team-9", "firing", ["late"])]
    inc.handed(A(T0 + 1, **LATE), "team-9", state, T0 + 11)
    assert inc.take_notes() == []  # once


# ---------------------------------------------------------------- (d, e) what a node links and explains

def test_two_pods_that_share_only_a_node_are_two_incidents_until_the_node_alerts():
    inc, state = Incidents(), {}
    inc.handed(A(T0, **POD, owner="team-a"), "team-a", state, T0)
    inc.handed(A(T0 + 30, alertname="KubePodOOMKilled", namespace="b", workload="db", pod="db-1", node="n1",
                 owner="team-b"), "team-b", state, T0 + 30)
    assert len(open_ids(state)) == 2
    assert [(n["receiver"], n["incident"]["role"]) for n in inc.take_notes()] == [("team-a", "cause"),
                                                                                  ("team-b", "cause")]
    out = inc.observe(A(T0 + 40, alertname="KubeNodeNotReady", node="n1"), state, T0 + 40)
    assert len(open_ids(state)) == 1 and [r.get("mergedInto") is not None for r in out] == [True, False]
    assert out[-1]["candidates"][0]["entity"] == "node/n1" and len(out[-1]["members"]) == 3


def test_a_node_explains_only_what_runs_on_it():
    members = {"node": {"labels": {"alertname": "KubeNodeNotReady", "node": "n1"}, "startsAt": T0, "summary": ""}}
    for i, node in enumerate(("n1", "n2", "n3", "n4")):
        members[f"p{i}"] = {"labels": {"alertname": "KubePodNotReady", "namespace": "a", "workload": "web",
                                       "pod": f"web-{i}", "node": node}, "startsAt": T0 + 10, "summary": ""}
    top = next(c for c in rank(members) if c["entity"] == "node/n1")
    assert any(e.startswith("explains 1/4 other alerts") for e in top["evidence"])


# ---------------------------------------------------------------- reviewed again (8d9094d): restarts, GPUs, clocks

def _merged_full(inc: Incidents, state: dict) -> tuple[list[Alert], Alert, list[Alert]]:
    """A full incident (5 members) that absorbed another of two pods it could not keep (a control-plane alert links
    both), as ``bench``'s storms make them."""
    webs = _full(inc, state, 5)
    dbs = [A(T0 + 10, alertname="KubePodNotReady", namespace="b", workload="db", pod=f"db-{i}") for i in range(2)]
    for d in dbs:
        inc.observe(d, state, T0 + 10)
    cp = A(T0 + 20, alertname="KubeAPIErrorBudgetBurn", service="apiserver")
    inc.observe(cp, state, T0 + 20)
    assert len(open_ids(state)) == 1
    return webs, cp, dbs


def test_a_full_incident_that_absorbed_another_resolves_after_a_restart(monkeypatch):
    monkeypatch.setattr(mod, "MAX_MEMBERS", 5)
    inc, state = Incidents(quiet=300), {}
    webs, cp, dbs = _merged_full(inc, state)
    [iid] = open_ids(state)
    assert sorted(state[mod.PREFIX + iid]["over"]) == sorted(d.fingerprint for d in dbs + [cp])
    inc, state = Incidents(quiet=300), orjson.loads(orjson.dumps(state))  # restored from the changelog
    for a in webs + [cp] + dbs:
        inc.observe(ended(a, T0 + 100), state, T0 + 100)
    assert [r["status"] for r in inc.expire(state, T0 + 400)] == ["resolved"] and open_ids(state) == []


def test_what_a_full_incident_could_not_keep_links_to_it_after_a_restart_as_before(monkeypatch):
    monkeypatch.setattr(mod, "MAX_MEMBERS", 5)
    inc, state = Incidents(), {}
    _merged_full(inc, state)
    [iid] = open_ids(state)
    later = A(T0 + 30, alertname="KubeContainerBackOff", namespace="b", workload="db", pod="db-0")
    live = inc.index(state).candidates("prod", later.labels)
    restored = orjson.loads(orjson.dumps(state))
    # the control-plane alert that merged them is one of those it could not keep: it still links cluster-wide
    assert live == Incidents().index(restored).candidates("prod", later.labels) == {iid: "control plane (cluster-wide)"}


# dcgm-exporter's series of a GPU in use carry the pod holding it (namespace/pod/container), and kubesight's ``node``
GPU = dict(alertname="GPUDoubleBitECCErrors", gpu="0", Hostname="g1", namespace="ml", pod="train-0",
           container="trainer", node="g1", owner="platform", severity="critical")


def test_a_gpu_alert_naming_the_pod_that_holds_the_gpu_is_about_its_node():
    assert mod.node_level(GPU) and mod.entity(GPU) == "node/g1"
    infer = dict(alertname="KubePodCrashLooping", namespace="serve", workload="infer", pod="infer-1", node="g1")
    train = dict(alertname="KubePodCrashLooping", namespace="ml", workload="train", pod="train-1", node="g1")
    assert mod.linked(GPU, infer) == "same node g1"
    inc, state = Incidents(), {}
    inc.observe(A(T0, **train), state, T0)
    inc.observe(A(T0 + 10, **infer), state, T0 + 10)
    assert len(open_ids(state)) == 2  # two workloads that share only a node
    out = inc.observe(A(T0 + 20, **GPU), state, T0 + 20)
    assert len(open_ids(state)) == 1 and out[-1]["candidates"][0]["entity"] == "node/g1"


def test_which_alerts_are_about_their_node_by_kind_not_by_labels():
    pod = dict(namespace="a", workload="web", pod="web-1", node="n1")
    about_node = [dict(pod, alertname=n) for n in ("CloudSpotInterruption", "NodeKernelPanic", "GPUXidFatal",
                                                   "KubeNodeNotReady", "NodeOOMKillStorm")]
    about_node += [dict(pod, alertname="MyRule", layer="gpu"), dict(alertname="NodeSystemSaturation", node="n1")]
    own = [dict(pod, alertname=n) for n in ("NodeOOMKill", "GPUXidApplicationError", "KubePodCrashLooping")]
    own += [dict(pod, alertname="NodeKernelPanic", layer="workloads"), dict(alertname="GPUXidFatal")]
    assert [mod.node_level(x) for x in about_node] == [True] * 7
    assert [mod.node_level(x) for x in own] == [False] * 5


def test_with_the_wall_clock_a_backlog_a_day_old_keeps_its_resolutions():
    t, wall = T0, T0 + 2 * 86_400  # event time of the backlog; the wall clock (the worker was down two days)
    stage, state = IncidentStage(Incidents(quiet=300), wall=True), {}
    emit = lambda *rec: None  # noqa: E731
    stage.process(Alert(POD | {"cluster": "prod"}, {REKEYED: "1"}, "firing", t), state, emit)
    stage.process(Alert(POD | {"cluster": "prod"}, {REKEYED: "1"}, "resolved", t, t + 60), state, emit)
    stage.tick(wall, state, emit)
    assert open_ids(state) == [] and any(k.startswith(ENDED) for k in state)
    # the same episode's firing record, read after (the alerting stage's notification of it comes later)
    stage.process(Alert(POD | {"cluster": "prod"}, {REKEYED: "1"}, "firing", t), state, emit)
    assert open_ids(state) == [] and stage.incidents.stale == 1
    stage.process(Alert({**POD, "cluster": "prod", "pod": "x"}, {REKEYED: "1"}, "firing", t + 60 + mod.ENDED_FOR),
                  state, emit)
    assert not any(k.startswith(ENDED) for k in state)  # a day of event time later: forgotten


def test_the_end_heap_grows_with_the_records_not_with_the_resolutions_read(monkeypatch):
    monkeypatch.setattr(mod, "MAX_ENDED", 2)
    inc, state = Incidents(), {}
    flap, other, third = (A(T0, **{**POD, "pod": p}) for p in ("flap", "other", "third"))
    inc.observe(ended(other, T0 + 5), state, T0 + 5)
    for i in range(200):  # a new episode every 10 s
        t = T0 + 10 * i
        inc.observe(A(t, **{**POD, "pod": "flap"}), state, t)
        inc.observe(ended(A(t, **{**POD, "pod": "flap"}), t + 5), state, t + 5)
    ix = inc.index(state)
    assert (len(ix.ended), ix.n_ended) == (2, 2)
    inc.observe(ended(third, T0 + 2000), state, T0 + 2000)
    inc.expire(state, T0 + 2000)  # one too many: the earliest read goes, not the one read again since
    assert sorted(k for k in state if k.startswith(ENDED)) == sorted(ENDED + a.fingerprint for a in (flap, third))
    assert len(ix.ended) == 2
    inc.expire(state, T0 + 1995 + mod.ENDED_FOR - 1)
    assert ENDED + flap.fingerprint in state  # read last at T0 + 1995: kept a day from then
    inc.expire(state, T0 + 1995 + mod.ENDED_FOR)
    assert ENDED + flap.fingerprint not in state and len(ix.ended) == ix.n_ended == 1


def test_a_receiver_told_of_several_alerts_a_full_incident_could_not_keep_is_told_the_end_of_each(monkeypatch):
    monkeypatch.setattr(mod, "MAX_MEMBERS", 5)
    inc, state = Incidents(quiet=300), {}
    webs = _full(inc, state, 5)
    dbs = [A(T0 + 10, alertname="KubePodNotReady", namespace="b", workload="db", pod=f"db-{i}") for i in range(2)]
    for d in dbs:
        inc.handed(d, "team-b", state, T0 + 10)  # their own incident: team-b told of both
    cp = A(T0 + 20, alertname="KubeAPIErrorBudgetBurn", service="apiserver")
    inc.observe(cp, state, T0 + 20)  # merged into the full one, which keeps neither
    inc.take_notes()
    for a in webs + [cp] + dbs:
        inc.observe(ended(a, T0 + 100), state, T0 + 100)
    assert [r["status"] for r in inc.expire(state, T0 + 400)] == ["resolved"]
    ends = {n["receiver"]: sorted((x["labels"]["pod"], x["status"]) for x in n["alerts"]) for n in inc.take_notes()}
    assert ends == {"team-b": [("db-0", "resolved"), ("db-1", "resolved")]}
