"""Incidents at their edges (found by an audit, 2026-11-29): the stage's clock and a firing alert's promised end,
an alert that comes after its would-be incident ended, merges of incidents told to different receivers, an incident
opened again by the same alert, and a full incident's new receiver."""

from __future__ import annotations

from alerts.incidents import MAX_MEMBERS, Incidents
from core.records import Alert
from streams.incidents import CLOCK, REKEYED, IncidentStage

T0 = 1_700_000_000.0


def A(t, status="firing", endsAt=None, **labels) -> Alert:
    labels.setdefault("cluster", "prod")
    return Alert(labels, {"summary": labels["alertname"]}, status, t,
                 endsAt if endsAt is not None else (t if status == "resolved" else None))


def rekeyed(a: Alert) -> Alert:
    return Alert(a.labels, {**a.annotations, REKEYED: "1"}, a.status, a.startsAt, a.endsAt)


def run(stage: IncidentStage, state: dict, *alerts: Alert) -> list[dict]:
    out: list = []
    for a in alerts:
        stage.process(rekeyed(a), state, lambda topic, key, value: out.append((topic, value)))
    return out


def test_a_firing_alerts_promised_end_does_not_move_the_stage_clock():
    """The remediator's missing-permission alert promises to end a day later: the clock jumped a day ahead, closing
    every open incident at once and holding new ones for a day."""
    stage, state = IncidentStage(Incidents(quiet=300)), {}
    run(stage, state, A(T0, alertname="KubeNodeNotReady", node="n1"))
    run(stage, state, A(T0 + 70, endsAt=T0 + 86_400, alertname="KubesightRemediationForbidden"))
    assert state[CLOCK] == T0 + 70


def test_an_alert_after_its_incident_ended_opens_a_new_one():
    """n1's incident ended 300 s after its last member resolved; a pod alert at +500 joined it, because the stage
    observed before it expired."""
    stage, state = IncidentStage(Incidents(quiet=300)), {}
    run(stage, state, A(T0, alertname="KubeNodeNotReady", node="n1"),
        A(T0, status="resolved", endsAt=T0 + 60, alertname="KubeNodeNotReady", node="n1"))
    first = {k for k in state if k.startswith("inc|")}
    run(stage, state, A(T0 + 500, alertname="KubePodNotReady", node="n1", namespace="a", workload="web"))
    opened = {k for k in state if k.startswith("inc|")} - first
    assert len(opened) == 1


def test_a_receiver_of_a_merged_incident_hears_its_end_under_the_key_it_was_told():
    inc, state = Incidents(), {}
    a1 = A(T0, alertname="KubeNodeNotReady", node="n1")
    inc.handed(a1, "platform", state, T0)
    a2 = A(T0 + 10, alertname="KubePodCrashLooping", node="n2", namespace="a", workload="web", pod="web-1")
    inc.handed(a2, "team-a", state, T0 + 10)
    told = {n["receiver"]: n["groupKey"] for n in inc.take_notes()}
    assert told["platform"] != told["team-a"]
    a3 = A(T0 + 20, alertname="KubePodNotReady", node="n1", namespace="a", workload="web", pod="web-2")
    inc.observe(a3, state, T0 + 20)  # links n1's incident and web's: merged
    for a in (a1, a2, a3):
        inc.observe(Alert(a.labels, a.annotations, "resolved", a.startsAt, T0 + 100), state, T0 + 100)
    inc.take_notes()
    inc.expire(state, T0 + 500)
    ended = {(n["receiver"], n["groupKey"]) for n in inc.take_notes() if n["status"] == "resolved"}
    assert ended == {("platform", told["platform"]), ("team-a", told["team-a"])}


def test_the_same_alert_after_its_incident_closed_opens_an_incident_with_new_notification_ids():
    inc, state = Incidents(), {}
    lab = {"alertname": "KubeNodeNotReady", "node": "n1"}
    inc.handed(A(T0, endsAt=T0 + 240, **lab), "platform", state, T0)
    first = [n["id"] for n in inc.take_notes()]
    inc.expire(state, T0 + 240)
    inc.expire(state, T0 + 600)
    inc.take_notes()
    inc.handed(A(T0, endsAt=T0 + 900, **lab), "platform", state, T0 + 700)  # the sender is back, same startsAt
    again = [n["id"] for n in inc.take_notes()]
    assert again and not set(again) & set(first)


def test_a_full_incident_still_tells_a_receiver_it_never_told():
    inc, state = Incidents(), {}
    for i in range(MAX_MEMBERS):
        inc.observe(A(T0 + i * 0.001, alertname="KubePodNotReady", node="n1", namespace="a", pod=f"p{i}"), state, T0)
    inc.handed(A(T0 + 1, alertname="KubePodNotReady", node="n1", namespace="b", pod="late"), "team-9", state, T0 + 1)
    notes = inc.take_notes()
    assert [(n["receiver"], n["status"], [x["labels"]["pod"] for x in n["alerts"]]) for n in notes] == [
        ("team-9", "firing", ["late"])]
    inc.handed(A(T0 + 1, alertname="KubePodNotReady", node="n1", namespace="b", pod="late"), "team-9", state, T0 + 2)
    assert inc.take_notes() == []  # once
