"""bench rca --openshift: the demo's recorded OpenShift events, alerts vs incidents and notifications per alert vs
per incident, printed as JSON."""

from __future__ import annotations

import json

from kubesight.cli import main


def test_the_openshift_recording_gives_fewer_notifications_per_incident_than_per_alert(capsys):
    assert main(["bench", "rca", "--openshift", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["openshift"]
    assert res["events"] == 5371 and res["alerts"] > 50
    assert 1 <= res["incidents"] <= res["incidents_opened"] < res["alerts"]
    before, after = res["per_alert"], res["per_incident"]
    assert after["firing"] < before["firing"] and after["notifications"] < before["notifications"]
    # every route of the demo's routing notifies per incident in the second run: no per-group notification left
    assert res["per_incident_notifications_of_incidents"] == after["notifications"]
    assert set(after["by_receiver"]) <= set(before["by_receiver"])
