"""Issue 13 #6: every user error is one clear line on stderr (file:line where a file is involved), no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run(*args: str, env: dict | None = None, timeout: float = 60.0, stdin=None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "kubesight", *args], capture_output=True, text=True, cwd=REPO,
                          env=e, timeout=timeout, stdin=stdin)


def one_line(res: subprocess.CompletedProcess) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def test_settings_typo_names_file_line_and_key(tmp_path):
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("kafka: 127.0.0.1:9092\ncommit_intervall: 2\n")
    res = run("--config", str(cfg), "worker")
    assert res.returncode == 2
    assert one_line(res) == (f'kubesight: {cfg}:2: commit_intervall: unknown key "commit_intervall" '
                             '(did you mean "commit_interval"?)')


def test_missing_config_file():
    res = run("--config", "/nonexistent.yaml", "worker")
    assert res.returncode == 2 and one_line(res) == "kubesight: /nonexistent.yaml:1: cannot read: No such file or directory"


def test_replay_of_a_missing_folder():
    res = run("collect", "replay", "/nonexistent", "--stdout")
    assert res.returncode == 2 and one_line(res) == "kubesight: /nonexistent: no such file or folder"


def test_unreachable_kafka_at_start_is_one_line_within_seconds():
    """Was 36 lines after 30 s: the clients retried the address until their own bootstrap gave up. The one line, and
    its text, are the start-up check's (``core.broker.check_reachable``, bounded by its own timeout), so the worker
    stopped there and no client retried; the run's timeout only guards against a worker that never stops."""
    res = run("worker", env={"KUBESIGHT_KAFKA": "127.0.0.1:1"})
    assert res.returncode == 2
    assert one_line(res) == "kubesight: Kafka unreachable at 127.0.0.1:1 (127.0.0.1:1: connection refused)"


@pytest.mark.kafka
def test_a_stray_comma_in_the_kafka_address_is_a_settings_error(kafka_bootstrap):
    """The audit's ``KUBESIGHT_KAFKA=<broker>,``: the start-up check stopped at the broker that answered and the
    command ran (exit 0) while kafka-python kept logging ``Unable connect to ":9092"``."""
    value = f"{kafka_bootstrap},"
    res = run("silences", "list", env={"KUBESIGHT_KAFKA": value})
    assert res.returncode == 2
    assert one_line(res) == (f"kubesight: KUBESIGHT_KAFKA={value!r}: an empty server in {value!r} (a stray comma?): "
                             "expected host:port,host:port,...")


def test_a_port_out_of_range_in_the_settings_is_not_connection_refused(tmp_path):
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("kafka: 127.0.0.1:99999\n")
    res = run("--config", str(cfg), "silences", "list")
    assert res.returncode == 2
    assert one_line(res) == f"kubesight: {cfg}:1: kafka: the port of '127.0.0.1:99999' must be 1-65535, got 99999"


def test_reader_closing_the_pipe_is_not_an_error():
    r, w = os.pipe()
    os.close(r)  # `kubesight rules list | head` after head has exited
    with os.fdopen(w, "w") as out:
        e = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
        res = subprocess.run([sys.executable, "-m", "kubesight", "rules", "list"], stdout=out,
                             stderr=subprocess.PIPE, text=True, cwd=REPO, env=e, timeout=60)
    assert res.stderr == "" and res.returncode == 141


def test_rules_check_reports_every_template_error_in_one_pass(tmp_path):
    pack = tmp_path / "p.yaml"
    pack.write_text("""apiVersion: kubesight.io/v1
kind: RulePack
metadata: {name: bad, version: "1.0.0", description: two broken rules}
rules:
  - alert: A
    match: {source: k8s, reason: BackOff}
    condition: {type: event_count, count: 1, window: 5m}
    annotations: {summary: "broken {{ labels.node ", description: ok}
  - alert: B
    match: {source: k8s, reason: Failed}
    condition: {type: event_count, count: 1, window: 5m}
    annotations: {summary: "also {{ nosuchthing }", description: "{{ x | nofilter }}"}
""")
    res = run("rules", "check", str(pack))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert [ln.split(": ")[0] for ln in lines[:3]] == [f"{pack}:8", f"{pack}:12", f"{pack}:12"]
    assert lines[-1] == "3 error(s)"


@pytest.mark.kafka
def test_bad_routing_file_at_worker_start(settings, tmp_path):
    routing = tmp_path / "routing.yaml"
    routing.write_text("route: {receiver: nobody}\nreceivers:\n  - name: platform\n    webhook_configs: [{url: http://x}]\n")
    cfg = tmp_path / "settings.yaml"
    cfg.write_text(f"kafka: {settings.kafka}\ntopic_prefix: {settings.topic_prefix}\napp_id: {settings.app_id}\n"
                   f"routing: {routing}\n")
    res = run("--config", str(cfg), "worker")
    assert res.returncode == 2
    line = one_line(res)
    assert line.startswith(f"kubesight: {routing}:1: route.receiver: ") and "nobody" in line


@pytest.mark.parametrize("args, files, code, line", [
    # an audit of every command with wrong input (2026-11-29): each of these was a traceback, a hang or exit 0
    (("kafka", "status"), {}, 1, "127.0.0.1:1 (KUBESIGHT_KAFKA): not answering"),  # was silent for 30 s
    (("silences", "list", "--url", "http://127.0.0.1:1"), {}, 2,
     "kubesight silences: http://127.0.0.1:1/api/v2/silences: ClientConnectorError: Cannot connect to host "
     "127.0.0.1:1 ssl:default [Connect call failed ('127.0.0.1', 1)]"),
    (("remediate", "--kubeconfig", "/nonexistent"), {}, 2,
     "kubesight: Kubernetes client configuration: Invalid kube-config file. No configuration found. (looked at "
     "--kubeconfig, $KUBECONFIG, ~/.kube/config, then the in-cluster service account)"),
    (("collect", "replay", "{d}/nonutf8.yaml", "--stdout"), {"nonutf8.yaml": b"\xff\xfe"}, 2,
     "kubesight: a file is not UTF-8 text ('utf-8' codec can't decode byte 0xff in position 0: invalid start byte)"),
    (("collect", "kernel", "--checkpoint", "{d}/cp.json", "--from-file", "{d}/log.txt", "--stdout"),
     {"cp.json": b"{oops", "log.txt": b"[ 1.0] x\n"}, 2,
     "kubesight: checkpoint file {d}/cp.json is not valid JSON (unexpected character, expected a string key: line 1 "
     "column 2 (char 1)); delete it to start over"),
    (("collect", "cloud", "--token-file", "{d}/tok", "--listen", "127.0.0.1:99999", "--stdout"), {"tok": b"t\n"}, 2,
     "kubesight collect cloud: --listen must be HOST:PORT (a port 0-65535), got '127.0.0.1:99999'"),
    # the README audit (2026-11-29): these said a missing file in their own way, with exit 1
    (("--config", "{d}/none.yaml", "rules", "list"), {}, 2, "kubesight: {d}/none.yaml:1: cannot read: No such file or directory"),
    (("--config", "{d}/off.yaml", "rules", "signals"), {"off.yaml": b"default_pack: false\n"}, 2,
     "kubesight: no rule packs: the settings turn the default pack off (default_pack: false) and name no rules"),
    (("routes", "test", "--routing", "{d}/none.yaml", "a=b"), {}, 2,
     "kubesight: {d}/none.yaml:1: cannot read: No such file or directory"),
    (("collect", "kernel", "--from-file", "{d}/none.log", "--stdout"), {}, 2,
     "kubesight: {d}/none.log: No such file or directory"),
])
def test_wrong_input_to_a_command_is_one_line_and_a_failure(tmp_path, args, files, code, line):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    # a deadline, not a figure: `kafka status` used to wait 30 s for the unreachable address before saying so
    res = run(*(a.format(d=tmp_path) for a in args), env={"KUBESIGHT_KAFKA": "127.0.0.1:1", "KUBECONFIG": "/nonexistent"},
              timeout=25)
    out = (res.stdout + res.stderr).strip().splitlines()
    assert res.returncode == code and out[-1] == line.format(d=tmp_path) and "Traceback" not in res.stderr, out


def test_a_replay_that_replays_nothing_fails(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    res = run("collect", "replay", str(tmp_path / "empty.yaml"), "--stdout")
    assert res.returncode == 1 and res.stderr.strip().endswith("replayed 0 events, 1 dead-lettered")


def test_output_to_a_full_disk_is_one_line_not_a_traceback():
    """`collect replay --stdout > file` when the disk fills (/dev/full: every write fails with ENOSPC)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
    with open("/dev/full", "w") as out:
        res = subprocess.run([sys.executable, "-m", "kubesight", "collect", "replay", "--stdout"], stdout=out,
                             stderr=subprocess.PIPE, text=True, cwd=REPO, env=e, timeout=120)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "Exception ignored" not in res.stderr
    assert res.stderr.splitlines()[-1] == "kubesight: writing output: No space left on device"


# ---------------------------------------------------------------- the CLI audit of 2026-11-29: exit codes and pipes

CORPUS_HINT = "corpus not found; pass --data PATH or set KUBESIGHT_DATA"


@pytest.mark.parametrize("args, files, line", [
    (("routes", "test", "badlabel"), {}, "kubesight routes test: invalid label 'badlabel' (use name=value)"),
    # the repo's deploy/demo/recordings are checked before a broker, a worker and the board start (was ~10 s)
    (("demo", "--events", "{d}/none"), {}, "kubesight: {d}/none: no such file or folder"),
    (("bench", "derived", "--data", "{d}"), {},
     "kubesight: {d}/nri-kubernetes-testdata/1_35/controlplane/api-server/metrics: " + CORPUS_HINT),
    (("bench", "rules", "--data", "{d}"), {}, "kubesight: {d}/openshift-must-gather-events: " + CORPUS_HINT),
    (("bench", "kernel", "--corpus", "{d}"), {}, "kubesight: {d}/report: corpus not found; pass "),
    # Kafka unreachable at a collector's start: was exit 1 and "Unclosed AIOKafkaProducer" lines after the message
    (("collect", "metrics", "--config", "{d}/m.yaml", "--once"),
     {"m.yaml": b"targets:\n  - job: x\n    url: http://127.0.0.1:1/metrics\n"},
     "kubesight: Kafka unreachable at 127.0.0.1:1 (127.0.0.1:1: connection refused)"),
    (("collect", "cloud", "--listen", "127.0.0.1:0", "--token-file", "{d}/tok"), {"tok": b"t\n"},
     "kubesight: Kafka unreachable at 127.0.0.1:1 (127.0.0.1:1: connection refused)"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, args, files, line):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    res = run(*(a.format(d=tmp_path) for a in args), env={"KUBESIGHT_KAFKA": "127.0.0.1:1"}, timeout=25)
    assert res.returncode == 2, res.stderr
    assert one_line(res).startswith(line.format(d=tmp_path))


def test_demo_help_names_its_real_default():
    from collectors.replay import DEFAULT_EVENTS

    res = run("demo", "--help")
    assert str(DEFAULT_EVENTS) in "".join(res.stdout.split())  # argparse wraps the path at its hyphens


def test_routes_check_into_a_closed_pipe_ends_quietly():
    """`kubesight routes check FILE | true`: was exit 1 and "FILE: Broken pipe", the pipe's error put on the file."""
    r, w = os.pipe()
    os.close(r)
    with os.fdopen(w, "w") as out:
        e = {k: v for k, v in os.environ.items() if not k.startswith("KUBESIGHT_")}
        res = subprocess.run([sys.executable, "-m", "kubesight", "routes", "check", "deploy/routing.example.yaml"],
                             stdout=out, stderr=subprocess.PIPE, text=True, cwd=REPO, env=e, timeout=60)
    assert res.stderr == "" and res.returncode == 141


@pytest.fixture
def closed_stdout():
    """A pipe whose reader has gone (`kubesight demo | head -3` after head's third line), to put as sys.stdout in the
    test itself (pytest's capture sets sys.stdout again between a fixture and its test)."""
    from streams import cli_run

    r, w = os.pipe()
    os.close(r)
    out = os.fdopen(w, "w")
    cli_run.STDOUT_GONE.clear()
    yield out
    cli_run.STDOUT_GONE.clear()
    out.close()


def test_demo_printing_stops_when_the_reader_has_gone(closed_stdout, monkeypatch):
    """The alert tail printed into the closed pipe and died with a BrokenPipeError traceback per line."""
    from streams.cli_run import print_line, stop_if_reader_gone

    monkeypatch.setattr(sys, "stdout", closed_stdout)
    stop_if_reader_gone()  # reader still there: nothing to stop
    for _ in range(3):
        print_line("2021-08-03T09:21:42Z FIRING   warning  KubeBackOff shop/web-1: Back-off restarting")
    with pytest.raises(BrokenPipeError):  # the demo's next step: main's handler ends it with 141
        stop_if_reader_gone()
    closed_stdout.write("x" * 100_000)
    closed_stdout.flush()  # what was buffered goes nowhere, not to a second error at exit


def test_demo_receivers_answer_200_when_stdout_is_closed(tmp_path, closed_stdout, monkeypatch):
    """Printing a notification into the closed pipe made the receiver answer 500: delivery retried, the demo never
    ended."""
    import urllib.request

    from streams.cli_run import STDOUT_GONE, DemoReceivers

    monkeypatch.setattr(sys, "stdout", closed_stdout)
    src = tmp_path / "routing.yaml"
    src.write_text("route: {receiver: a}\nreceivers:\n  - name: a\n    webhook_configs: [{url: 'http://127.0.0.1:9/a'}]\n")
    hooks = DemoReceivers(str(src), tmp_path / "out.yaml", quiet=False)
    hooks.start()
    try:
        assert hooks.ready.wait(10)
        import yaml

        url = yaml.safe_load(hooks.out_path.read_text())["receivers"][0]["webhook_configs"][0]["url"]
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
        body = b'{"status": "firing", "groupLabels": {}, "alerts": [{"labels": {"alertname": "A"}}]}'
        for _ in range(2):
            req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
            assert direct.open(req, timeout=5).status == 200
        assert len(hooks.got["a"]) == 2 and STDOUT_GONE.is_set()
    finally:
        hooks.stop()


def test_worker_runs_without_faust_spinner(monkeypatch):
    """`kubesight worker > worker.out` got the spinner's cursor codes (ESC[?25l ... ESC[?25h) in the file."""
    import argparse

    import faust
    from faust.worker import Worker

    from streams import cli_run

    built = []
    monkeypatch.setattr("core.topics.ensure_topics", lambda *a, **k: None)
    monkeypatch.setattr(cli_run, "bootstrap_for", lambda settings: "127.0.0.1:1")
    monkeypatch.setattr("streams.app.create_app", lambda *a, **k: faust.App("spinner-test", broker="kafka://127.0.0.1:1"))
    monkeypatch.setattr(cli_run, "what_it_runs", lambda *a, **k: "test")
    monkeypatch.setattr(Worker, "execute_from_commandline", lambda self: built.append(self))
    args = argparse.Namespace(config=None, loglevel="warning", role="one", worker_id="w", metrics_file=None)
    monkeypatch.delenv("KUBESIGHT_CONFIG", raising=False)
    assert cli_run._worker(args) == 0
    assert len(built) == 1 and built[0].spinner is None


class _Book:
    def __init__(self):
        self.silences = argparse_ns(by_id={"s1": object()})
        self.expired = []

    async def expire(self, id):
        self.expired.append(id)


def argparse_ns(**kw):
    import argparse

    return argparse.Namespace(**kw)


def test_silences_expire_of_an_unknown_id_is_the_users_error(monkeypatch, capsys):
    import asyncio

    from streams import cli_alerts

    book = _Book()
    monkeypatch.setattr(cli_alerts, "_book_call", lambda args, fn: asyncio.run(fn(book)))
    assert cli_alerts._silences_expire(argparse_ns(ids=["s1", "nonexistent-id"], url=None, config=None)) == 2
    assert book.expired == ["s1"]
    assert capsys.readouterr().err == "kubesight silences expire: no silence nonexistent-id\n"


@pytest.mark.parametrize("prefix, line", [
    ("zzzz", "kubesight: incident 'zzzz': not found"),
    ("c", "kubesight: incident 'c': ambiguous (c1, c2)"),
])
def test_incidents_show_of_an_unknown_or_ambiguous_id_is_the_users_error(monkeypatch, capsys, prefix, line):
    from streams import cli_incidents

    monkeypatch.setattr(cli_incidents, "_kafka", lambda args: (None, None))
    monkeypatch.setattr(cli_incidents, "latest", lambda settings, bootstrap: {"c1": {}, "c2": {}})
    assert cli_incidents._show(argparse_ns(id=prefix, json=False, candidates=3, config=None)) == 2
    assert capsys.readouterr().err.strip() == line


def test_kafka_python_start_up_chatter_is_not_shown():
    """`collect metrics --once` on a live broker printed ~18 "INFO kafka.net.manager: Attempting bootstrap" lines."""
    import logging

    from core.kafkaclient import debug_logging, quiet_startup_noise

    root = logging.getLogger()
    was = root.level
    root.setLevel(logging.INFO)  # as the collectors' logging.basicConfig(level=INFO)
    quiet_startup_noise()
    try:
        for name in ("kafka.net.manager", "kafka.net.transport", "kafka.conn"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO)
            assert logging.getLogger(name).isEnabledFor(logging.WARNING)
        debug_logging("info")
        assert not logging.getLogger("kafka.net.manager").isEnabledFor(logging.INFO)
        debug_logging("debug")
        assert logging.getLogger("kafka.net.manager").isEnabledFor(logging.INFO)  # --loglevel debug: all of it
    finally:
        logging.getLogger("kafka").setLevel(logging.NOTSET)
        root.setLevel(was)


def test_kafka_python_s_slow_task_warnings_stay_out_of_a_command_s_output_unless_debug(caplog):
    """A loaded machine made kafka-python print "Task ... ran for 0.105s (>0.100s threshold). It is blocking the event
    loop" at a command's start: a bad routing file's one-line error came with two of them."""
    import logging

    from core.kafkaclient import debug_logging, quiet_startup_noise

    selector = logging.getLogger("kafka.net.selector")
    slow = "Task <x> ran for 0.105s (>0.100s threshold). It is blocking the event loop -- likely a tight sync loop"
    try:
        quiet_startup_noise()
        with caplog.at_level(logging.WARNING):
            selector.warning(slow)
            selector.warning("Task <x> left RUNNING after step; demoting to UNSCHEDULED")
        assert [r.getMessage() for r in caplog.records] == ["Task <x> left RUNNING after step; demoting to UNSCHEDULED"]
        caplog.clear()
        debug_logging("debug")
        with caplog.at_level(logging.WARNING):
            selector.warning(slow)
        assert [r.getMessage() for r in caplog.records] == [slow]
    finally:
        logging.getLogger("kafka").setLevel(logging.WARNING)


@pytest.mark.kafka
def test_a_worker_whose_web_port_is_taken_says_so_in_one_line(kafka_bootstrap, tmp_path):
    """A second worker on the same web_port: Faust's web server failed late with a 48-line traceback and exit 1."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        res = run("worker", "--role", "signals", env={"KUBESIGHT_KAFKA": kafka_bootstrap,
                                                      "KUBESIGHT_WEB_PORT": str(port),
                                                      "KUBESIGHT_STATE_DIR": str(tmp_path),
                                                      "KUBESIGHT_TOPIC_PREFIX": f"port-{port}-"})
    assert res.returncode == 2
    assert one_line(res) == f"kubesight: cannot listen on 127.0.0.1:{port} (web_port): Address already in use"
