"""``kubesight collect cloud`` / ``bench cloud``: documented options, ``--check`` on sample files, refusing to run open."""

from __future__ import annotations

import orjson
import pytest

from kubesight.cli import build_parser, main


def _sub(parser, *path):
    for name in path:
        action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("path", [("collect", "cloud"), ("bench", "cloud")])
def test_every_option_is_documented(path):
    p = _sub(build_parser(), *path)
    text = p.format_help()
    options = [a for a in p._actions if a.option_strings and a.dest != "help"]
    assert options
    for a in options:
        assert a.help and len(a.help) > 15, a.option_strings
        assert a.option_strings[0] in text


def test_check_prints_the_events_of_a_sample(data_dir, capsys):
    sample = data_dir / "aws-ec2-health-events" / "aws-health-tools" / "testevent.json"
    assert main(["collect", "cloud", "--check", str(sample)]) == 0
    [line] = capsys.readouterr().out.splitlines()
    ev = orjson.loads(line)
    assert (ev["source"], ev["reason"], ev["severity"], ev["labels"]["instance"]) == \
           ("cloud", "DiskStalled", "warning", "i-abcd1111")


def test_check_maps_nodes_and_explains_refusals(data_dir, tmp_path, capsys):
    imds = tmp_path / "instance-action.json"
    imds.write_text('{"action": "terminate", "time": "2017-09-18T08:22:00Z"}')
    nodes = str(data_dir / "openshift-must-gather-events/must-gather-aws/cluster-scoped-resources/core/nodes")
    assert main(["collect", "cloud", "--check", str(imds), "--nodes", nodes]) == 1
    assert "post it with ?instance=<instance id> in the URL" in capsys.readouterr().err
    assert main(["collect", "cloud", "--check", str(imds), "--nodes", nodes, "--instance", "i-0ff943b959e44c16f"]) == 0
    ev = orjson.loads(capsys.readouterr().out)
    assert (ev["reason"], ev["entity"]["node"], ev["labels"]["scheduled_time"]) == \
           ("SpotInterruption", "ip-10-0-151-183.ec2.internal", "2017-09-18T08:22:00.000Z")


def test_refuses_to_run_without_credentials(monkeypatch, capsys):
    monkeypatch.delenv("KUBESIGHT_CLOUD_TOKEN", raising=False)
    monkeypatch.delenv("KUBESIGHT_CLOUD_HMAC_KEY", raising=False)
    assert main(["collect", "cloud", "--listen", "127.0.0.1:0", "--stdout"]) == 2
    assert "no credentials configured" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--token-file", "--hmac-key-file"])
def test_an_unreadable_secret_file_is_named(tmp_path, option, capsys):
    """A non-UTF-8 token file was said as "'utf-8' codec can't decode byte 0xff ...", without the file."""
    binary, missing = tmp_path / "secret.bin", tmp_path / "none"
    binary.write_bytes(b"\xff\xfetoken\n")
    assert main(["collect", "cloud", "--listen", "127.0.0.1:0", "--stdout", option, str(binary)]) == 2
    assert capsys.readouterr().err == (f"kubesight collect cloud: {binary}: cannot read: 'utf-8' codec can't decode "
                                       "byte 0xff in position 0: invalid start byte\n")
    assert main(["collect", "cloud", "--listen", "127.0.0.1:0", "--stdout", option, str(missing)]) == 2
    assert capsys.readouterr().err == f"kubesight collect cloud: {missing}: cannot read: No such file or directory\n"


def test_bad_listen_address(monkeypatch, capsys):
    monkeypatch.setenv("KUBESIGHT_CLOUD_TOKEN", "x" * 20)
    assert main(["collect", "cloud", "--listen", "8090", "--stdout"]) == 2
    assert "--listen must be HOST:PORT (a port 0-65535), got '8090'" in capsys.readouterr().err


def test_a_bad_audit_ignore_regex_is_refused_before_anything_starts(monkeypatch, capsys):
    monkeypatch.setenv("KUBESIGHT_CLOUD_TOKEN", "x" * 20)
    assert main(["collect", "cloud", "--listen", "127.0.0.1:0", "--stdout", "--audit-ignore-users", "ci-(bot"]) == 2
    assert capsys.readouterr().err == ("kubesight collect cloud: --audit-ignore-users: not a valid regex: "
                                       "missing ), unterminated subpattern at position 3\n")


def test_a_bad_trusted_network_is_refused_before_anything_starts(monkeypatch, capsys):
    monkeypatch.setenv("KUBESIGHT_CLOUD_TOKEN", "x" * 20)
    assert main(["collect", "cloud", "--listen", "127.0.0.1:0", "--stdout", "--audit-trusted-networks",
                 "203.0.113.0/24,203.0.113.300/32"]) == 2
    assert capsys.readouterr().err == ("kubesight collect cloud: --audit-trusted-networks: '203.0.113.300/32' is not a "
                                       "network (CIDR, e.g. 203.0.113.0/24)\n")


def test_the_deployment_runs_a_valid_command():
    import yaml

    from core.settings import REPO

    docs = {d["kind"]: d for d in yaml.safe_load_all((REPO / "deploy/kubernetes/collector-cloud.yaml").read_text())}
    assert set(docs) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service",
                         "NetworkPolicy"}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    [c] = pod["containers"]
    args = build_parser().parse_args(c["args"])
    assert (args.listen, args.kubernetes, args.stdout) == ("0.0.0.0:8090", True, False)
    mount = c["volumeMounts"][0]["mountPath"]
    secret = next(v["secret"] for v in pod["volumes"] if v["name"] == c["volumeMounts"][0]["name"])
    assert {f"{mount}/{i['path']}" for i in secret["items"]} == {args.token_file, args.hmac_key_file}
    # nodes to map instances; and what owner resolution reads for audit events, as the Kubernetes collector's role
    assert docs["ClusterRole"]["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["namespaces", "pods", "replicationcontrollers"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["replicasets", "deployments", "statefulsets", "daemonsets"], "verbs": ["get"]},
        {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["get"]}]
    from collectors.kubernetes.api import READERS

    # every kind the owner resolution reads is granted, and no more
    granted = {r for rule in docs["ClusterRole"]["rules"][1:] for r in rule["resources"]}
    assert granted == {k.lower() + "s" for k in READERS}
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == c["ports"][0]["name"]


def test_static_node_option(data_dir, capsys):
    sample = str(data_dir / "aws-ec2-health-events" / "aws-health-tools" / "testevent.json")
    assert main(["collect", "cloud", "--check", sample, "--node", "i-abcd1111=node-x"]) == 0
    assert orjson.loads(capsys.readouterr().out)["entity"]["node"] == "node-x"
    assert main(["collect", "cloud", "--check", sample, "--node", "i-abcd1111", "--node", "=n"]) == 2
    assert capsys.readouterr().err == ("kubesight collect cloud: bad node map:\n--node 'i-abcd1111': expected "
                                       "INSTANCE=NODE\n--node '=n': expected INSTANCE=NODE\n")


def test_a_bad_node_file_exits_2_naming_every_problem_at_its_line(data_dir, tmp_path, capsys):
    """The --nodes file went around the strict config loader: a duplicate key was taken (the last winning), only the
    first bad entry was said, without a line, and the command exited 1."""
    sample = str(data_dir / "aws-ec2-health-events" / "aws-health-tools" / "testevent.json")
    f = tmp_path / "nodes.yaml"
    f.write_text("i-0abc: node-a\ni-0abc: node-b\ni-0def: [x]\n")
    assert main(["collect", "cloud", "--check", sample, "--nodes", str(f), "--node", "x=y"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "kubesight collect cloud: bad node map:",
        f'{f}:2: i-0abc: duplicate key "i-0abc" (first at line 1)',
        f'{f}:3: i-0def: expected a node name, got ["x"]',
        '--node x: expected an instance id (i-...) or a providerID as the key, got "x"']
