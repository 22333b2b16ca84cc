"""An empty or corrupt broker.json (a start killed while writing it) makes ``kafka status`` and ``down`` say "not
running", not crash with a JSONDecodeError until someone deletes the file (an audit); broker.json is written whole
or not at all.  All in a temporary KUBESIGHT_HOME: the running broker and the repo's .cache/kafka are not touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import broker as launcher
from kubesight.cli import main

UNREADABLE = ["", '{"pid": 12', "null", "[1, 2]", '{"bootstrap": "127.0.0.1:1"}', '{"pid": "7", "bootstrap": "x"}']


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("KUBESIGHT_HOME", str(tmp_path))
    monkeypatch.delenv("KUBESIGHT_KAFKA", raising=False)  # the local broker's status, not the configured one
    assert launcher.cache_dir() == tmp_path / "kafka"
    return tmp_path / "kafka" / "runs"


@pytest.mark.parametrize("text", UNREADABLE)
def test_unreadable_broker_json_is_no_broker(home, text):
    meta = home / "default" / "broker.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(text)
    assert launcher.status() is None and not meta.exists()  # removed, as a stale one is
    meta.write_text(text)
    assert launcher.stop() is False


def test_kafka_status_and_down_say_not_running(home, capsys):
    meta = home / "default" / "broker.json"
    meta.parent.mkdir(parents=True)
    meta.write_text("")
    assert main(["kafka", "status"]) == 1
    assert "local broker: not running" in capsys.readouterr().err
    meta.write_text("")
    assert main(["kafka", "down"]) == 0
    assert "not running" in capsys.readouterr().out


def test_reaping_skips_an_unreadable_broker_json(home):
    """Another broker's unreadable file is left alone (its own status removes it), dead brokers are reaped."""
    for name, text in (("cut", '{"pid"'), ("dead", json.dumps({"pid": 2 ** 22 + 1, "bootstrap": "x"}))):
        (home / name).mkdir(parents=True)
        (home / name / "broker.json").write_text(text)
    launcher._reap_stale()
    assert (home / "cut" / "broker.json").exists() and not (home / "dead").exists()


def test_broker_json_is_written_whole_or_not_at_all(home, monkeypatch):
    """A write cut short (the process killed mid-write) leaves the previous broker.json, not half a file."""
    meta = home / "default" / "broker.json"
    meta.parent.mkdir(parents=True)
    launcher._write_meta(meta, {"pid": 1, "bootstrap": "127.0.0.1:9092"})

    def cut(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise KeyboardInterrupt

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(Path, "write_text", cut)
        launcher._write_meta(meta, {"pid": 2, "bootstrap": "127.0.0.1:9093"})
    assert json.loads(meta.read_text()) == {"pid": 1, "bootstrap": "127.0.0.1:9092"}


def test_down_and_purge_leave_the_local_broker_alone_when_another_is_configured(home, monkeypatch, capsys):
    """``KUBESIGHT_KAFKA=127.0.0.1:1 kubesight kafka status`` reports that address, and ``kafka down`` then stopped the
    local broker, one other work on the machine used (an audit did so). Now down and purge say so and act on nothing
    unless the configured address is the local broker's own."""
    import subprocess
    import sys

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # stands for the local broker
    try:
        meta = home / "default" / "broker.json"
        meta.parent.mkdir(parents=True)
        launcher._write_meta(meta, {"pid": sleeper.pid, "bootstrap": "127.0.0.1:45999"})
        monkeypatch.setenv("KUBESIGHT_KAFKA", "127.0.0.1:1")
        for cmd, what in (("down", "stopped"), ("purge", "deleted")):
            assert main(["kafka", cmd]) == 0
            err = capsys.readouterr().err
            assert f"KUBESIGHT_KAFKA is 127.0.0.1:1, not the local broker (127.0.0.1:45999): nothing {what}" in err
            assert sleeper.poll() is None and meta.exists()
        monkeypatch.setenv("KUBESIGHT_KAFKA", "127.0.0.1:45999")  # the local broker itself: down stops it
        assert main(["kafka", "down"]) == 0
        sleeper.wait(30)
    finally:
        sleeper.kill()
