"""``kubesight routes test`` and ``routes check`` run the production code."""

from pathlib import Path

from kubesight.cli import main

EXAMPLE = str(Path(__file__).resolve().parents[2] / "deploy" / "routing.example.yaml")


def test_routes_test_prints_receivers_and_group_keys(capsys):
    assert main(["routes", "test", "--routing", EXAMPLE, "alertname=KubePodCrashLooping", "severity=critical",
                 "namespace=openshift-etcd", "owner=team-control-plane"]) == 0
    lines = [line.split("\t")[:2] for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        # Alertmanager's group keys: route matchers sorted, label pairs separated by ", "
        ["platform", '{}/{namespace=~"kube-system|openshift-.*",severity="critical"}:'
                     '{alertname="KubePodCrashLooping", namespace="openshift-etcd"}'],
        ["team-control-plane", '{}/{owner=~".+"}:{alertname="KubePodCrashLooping", namespace="openshift-etcd", '
                               'owner="team-control-plane"}'],
    ]


def test_routes_test_owner_without_receiver_falls_back(capsys):
    assert main(["routes", "test", "--routing", EXAMPLE, "alertname=X", "owner=team-observability"]) == 0
    assert capsys.readouterr().out.split("\t")[0] == "platform"


def test_routes_check(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("route:\n  receiver: nobody\nreceivers: [{name: a}]\n")
    assert main(["routes", "check", EXAMPLE, str(bad)]) == 1
    out = capsys.readouterr()
    assert out.out == f"{EXAMPLE}: ok\n"
    assert f"{bad}:2: route.receiver: undefined receiver \"nobody\" (defined: a)" in out.err


def test_routes_check_reports_missing_secret_files(tmp_path, capsys):
    """A secret file that is not there fails the check (exit 1) at its line: it printed ok, then the worker stopped."""
    f = tmp_path / "r_file.yaml"
    f.write_text("route:\n  receiver: r\nreceivers:\n  - name: r\n    webhook_configs:\n      - url_file: /nonexistent/url\n"
                 "    email_configs:\n      - to: a@b\n        from: c@d\n        smarthost: h:25\n        auth_username: u\n"
                 "        auth_password_file: /nonexistent/pw\n")
    assert main(["routes", "check", str(f)]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.splitlines() == [
        f"{f}:6: receivers[0].webhook_configs[0].url_file: cannot read the file named there: No such file or directory",
        f"{f}:12: receivers[0].email_configs[0].auth_password_file: cannot read the file named there: No such file or "
        "directory"]
