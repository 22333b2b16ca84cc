"""The hour repeated when summer time ends, across restarts of ``--from-file`` with a checkpoint: a kern.log that
logrotate replaced inside that hour goes on from the last stamp of the file it replaced (read from where rotation
put it, or from the checkpoint when that file is gone), as one stream read in one run does."""

from __future__ import annotations

import io
import os
from zoneinfo import ZoneInfo

import orjson
import pytest

from collectors.kernel.checkpoint import FileCheckpoint
from collectors.kernel.classify import Classifier
from collectors.kernel.collector import KernelCollector
from collectors.kernel.patterns import load_patterns
from collectors.kernel.sources import from_path
from collectors.sink import StdoutSink

BERLIN = ZoneInfo("Europe/Berlin")  # 2024-10-27 03:00 CEST -> 02:00 CET: 02:00-03:00 twice


@pytest.fixture(scope="module")
def patterns():
    return load_patterns()


def down(hm: str, eth: int) -> str:
    """A syslog line of the node's local time, without zone."""
    return f"Oct 27 {hm}:00 n1 kernel: [  1.000000] e1000e: eth{eth} NIC Link is Down\n"


def run(patterns, path, cp=None) -> dict[str, str]:
    """One ``collect kernel --from-file PATH --tz Europe/Berlin --year 2024 [--checkpoint]`` run: device -> time."""
    out = io.StringIO()
    sid = f"file:{os.path.realpath(path)}"
    col = KernelCollector(Classifier(patterns, node="n1", source_id=sid, boot_time=1.7e9), StdoutSink(out),
                          checkpoint=cp, source_id=sid)
    col.resume()
    col.run(from_path(path, year=2024, tz=BERLIN))
    return {e["labels"]["device"]: e["time"] for e in map(orjson.loads, out.getvalue().splitlines())
            if e["reason"] == "NetLinkDown"}


FIRST = down("02:40", 1) + down("02:59", 2)  # CEST: 00:40Z, 00:59Z
SECOND = down("02:05", 3) + down("02:10", 4)  # the clock went back: CET, 01:05Z and 01:10Z
TIMES = {"eth1": "2024-10-27T00:40:00.000Z", "eth2": "2024-10-27T00:59:00.000Z",
         "eth3": "2024-10-27T01:05:00.000Z", "eth4": "2024-10-27T01:10:00.000Z"}


@pytest.mark.parametrize("old", ["rotated", "gone"])
def test_a_file_rotated_inside_the_repeated_hour_is_read_after_the_one_it_replaced(patterns, tmp_path, old):
    """The new kern.log starts in the second pass: its 02:05 was read as the first pass (00:05Z), an hour early."""
    one = tmp_path / "one" / "kern.log"
    one.parent.mkdir()
    one.write_text(FIRST + SECOND)
    assert run(patterns, one) == TIMES  # one stream, one run: told apart

    log, cp = tmp_path / "kern.log", FileCheckpoint(tmp_path / "cp.json")
    log.write_text(FIRST)
    got = run(patterns, log, cp)
    assert cp.load()["stamp"] == 1729990740.0  # 02:59 CEST
    if old == "rotated":
        log.rename(tmp_path / "kern.log.1")
    else:
        log.unlink()
    log.write_text(SECOND)
    got |= run(patterns, log, cp)
    assert got == TIMES
    assert cp.load()["stamp"] == 1729991400.0  # 02:10 CET
    assert run(patterns, log, cp) == {}
