"""`kubesight collect replay`: the ``--owners`` file, read by the strict config loader."""

from __future__ import annotations

import orjson
import pytest

from collectors.replay import load_owners
from core.yamlconfig import ConfigError
from kubesight.cli import main

EVENTS = """\
kind: EventList
items:
{}
"""
EVENT = """\
  - {{reason: BackOff, type: Warning, count: 1, lastTimestamp: "2021-08-03T09:21:4{i}Z", message: m,
     involvedObject: {{kind: Pod, name: p{i}, namespace: {ns}}}, metadata: {{uid: e{i}, namespace: {ns}}}}}
"""


def _events(tmp_path, *namespaces):
    f = tmp_path / "events.yaml"
    f.write_text(EVENTS.format("".join(EVENT.format(i=i, ns=ns) for i, ns in enumerate(namespaces))))
    return f


def test_owners_name_the_team_of_a_namespace_anchored_first_match_wins(tmp_path, capsys):
    owners = tmp_path / "owners.yaml"
    owners.write_text('"shop-.*": team-shop-envs\n"shop|pay": team-shop\n"[[:alpha:]]+": team-other\n')
    events = _events(tmp_path, "shop", "shop-dev", "payments", "kube-system")
    assert main(["collect", "replay", str(events), "--owners", str(owners), "--stdout"]) == 0
    got = [orjson.loads(line)["entity"] for line in capsys.readouterr().out.splitlines()]
    assert [(e["namespace"], e["owner"]) for e in got] == [  # anchored: shop is not shop-dev, pay not payments
        ("shop", "team-shop"), ("shop-dev", "team-shop-envs"), ("payments", "team-other"), ("kube-system", "")]


def test_events_about_cluster_scoped_objects_are_named_as_the_live_collector_names_them(tmp_path, capsys):
    """Recorders file them in "default": a Node's has no namespace and that node, a Namespace's is that namespace's
    team, a PersistentVolume's nobody's; not default's team."""
    from collectors.kubernetes.testing import to_events_v1

    def ev(i, kind, name):
        return {"reason": "R", "type": "Warning", "count": 1, "lastTimestamp": f"2021-08-03T09:21:4{i}Z",
                "message": "m", "metadata": {"uid": f"e{i}", "namespace": "default"}, "source": {"host": "other"},
                "involvedObject": {"kind": kind, "name": name, "apiVersion": "v1"}}
    items = [ev(0, "Node", "w1"), to_events_v1(ev(1, "Namespace", "shop")), ev(2, "PersistentVolume", "pv-1")]
    events = tmp_path / "events.yaml"
    events.write_text(orjson.dumps({"kind": "EventList", "items": items}).decode())
    owners = tmp_path / "owners.yaml"
    owners.write_text("default: team-apps\nshop: team-shop\n")
    assert main(["collect", "replay", str(events), "--owners", str(owners), "--stdout"]) == 0
    got = [orjson.loads(line)["entity"] for line in capsys.readouterr().out.splitlines()]
    assert [(e["kind"], e["namespace"], e["node"], e["owner"]) for e in got] == [
        ("Node", "", "w1", ""), ("Namespace", "", "other", "team-shop"), ("PersistentVolume", "", "other", "")]


def test_a_bad_owners_file_exits_2_naming_every_problem_at_its_line(tmp_path, capsys):
    """The owners file went around the strict config loader: a duplicate key was taken (the last winning), a null or a
    list became the team 'None' or "['x', 'y']", a bad regex exited 1 without a line, a syntax error or a non-UTF-8
    file was not said as file:line: message."""
    owners = tmp_path / "owners.yaml"
    owners.write_text('"a.*": team-a\n"a.*": team-b\n"b": ~\n"c": [x, y]\n"d((": team-d\n"e": 500\n')
    events = _events(tmp_path, "a")
    assert main(["collect", "replay", str(events), "--owners", str(owners), "--stdout"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "kubesight collect replay: invalid owners file",
        f'{owners}:2: a.*: duplicate key "a.*" (first at line 1)',
        f"{owners}:3: b: expected a string, got null",
        f'{owners}:4: c: expected a string, got ["x", "y"]',
        f'{owners}:5: d((: invalid regex "d((": missing ): d((',
        f'{owners}:6: e: expected a string, got 500 (YAML reads 500 as a number: quote it, "500")']


@pytest.mark.parametrize("content, message", [
    (b'"a": [team\n', "2: YAML syntax error: did not find expected ',' or ']'"),
    (b'"a": team-\xff\n', "1: cannot read: 'utf-8' codec can't decode byte 0xff in position 10: invalid start byte"),
    (b"- a\n", '1: expected a mapping, got ["a"]'),
    (b'"(?=x)": t\n', "1: (?=x): invalid regex \"(?=x)\": invalid perl operator: (?="),  # Go's syntax: no lookahead
])
def test_an_unreadable_owners_file_names_the_file_and_line(tmp_path, content, message):
    owners = tmp_path / "owners.yaml"
    owners.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_owners(str(owners))
    assert str(err.value) == f"{owners}:{message}"


def test_an_alias_bomb_in_a_recording_is_dead_lettered_not_expanded(tmp_path, capsys):
    """491 bytes of nested aliases expanded to 2 GB and crashed `collect replay` (an audit, under a 3 GB limit); the
    file is refused with the reason, the other recordings go on."""
    from collectors.replay import read_events

    good = tmp_path / "a"
    good.mkdir()
    _events(good, "shop")
    bomb = tmp_path / "b" / "events.yaml"
    bomb.parent.mkdir()
    levels = ["a0: &a0 [" + ", ".join(["x"] * 9) + "]"]
    levels += [f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 9) + "]" for k in range(1, 10)]
    bomb.write_text("kind: EventList\n" + "\n".join(levels) + "\nitems: [*a9]\n")
    assert len(bomb.read_bytes()) < 600
    events, rejected = read_events(tmp_path)
    assert [e.entity.namespace for e in events] == ["shop"]
    assert [(r.reason, r.file) for r in rejected] == [
        (f"{bomb}: its aliases expand to more than 200,000 values: an alias bomb?", str(bomb))]


@pytest.mark.parametrize("command", [["collect", "replay", "--stdout"], ["demo"]])
@pytest.mark.parametrize("value", ["-1", "nan", "inf", "fast"])
def test_a_speed_that_is_not_a_number_of_zero_or_more_is_a_usage_error(command, value, capsys):
    """A negative or NaN speed replayed at full speed without a word (paced() reads speed <= 0 and NaN waits as no
    pause); the demo's --speed the same."""
    with pytest.raises(SystemExit) as exc:
        main([*command, "--speed", value])
    assert exc.value.code == 2
    assert f"argument --speed: must be a number >= 0 (0: as fast as possible), not '{value}'" in capsys.readouterr().err
