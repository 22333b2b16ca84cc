"""Kernel line shapes: every prefix found in the shared data parses to the bare kernel message."""

from __future__ import annotations

import orjson
import pytest

from collectors.kernel.lines import LineError, parse_line
from collectors.kernel.sources import from_lines, from_path, kmsg_items, parse_record


@pytest.mark.parametrize("raw, shape, text, fields", [
    ("6,3964,206764307,-;nvidia-nvswitch2: open (major=510)", "kmsg", "nvidia-nvswitch2: open (major=510)",
     {"seq": 3964, "prio": 6, "mono": 206.764307}),
    ("[   72.159680] INFO: Stall ended before state dump start", "bracket", "INFO: Stall ended before state dump start",
     {"mono": 72.15968, "ctx": ""}),
    ("[  990.309025][    C0] rcu: INFO: rcu_preempt self-detected stall on CPU", "bracket",
     "rcu: INFO: rcu_preempt self-detected stall on CPU", {"ctx": "C0"}),
    ("[   49.650190][  T126] wlan1: Created IBSS", "bracket", "wlan1: Created IBSS", {"ctx": "T126"}),
    ("[  433.233894][T22566] fuse: Unknown parameter", "bracket", "fuse: Unknown parameter", {"ctx": "T22566"}),
    ("<1>[  201.654822] BUG: unable to handle kernel NULL pointer dereference at           (null)", "pstore",
     "BUG: unable to handle kernel NULL pointer dereference at           (null)", {"prio": 1, "mono": 201.654822}),
    ("[Sun Feb 23 16:24:18 2025] NVRM: GPU Board Serial Number: 1650124014249", "dmesg-T",
     "NVRM: GPU Board Serial Number: 1650124014249", {"wall": 1740327858.0}),
    ("kern  :warn  : 2025-01-21T04:41:44,283302+00:00 VFS: file-max limit 1000000 reached", "iso",
     "VFS: file-max limit 1000000 reached", {"prio": 4, "wall": 1737434504.283302}),
    ("Nov 25 10:00:01 worker-3 kernel: [ 5123.456789] EXT4-fs error (device sda1): x", "syslog",
     "EXT4-fs error (device sda1): x", {"host": "worker-3", "mono": 5123.456789}),
    ("2025-11-25T10:00:01.5+00:00 worker-3 kernel: nf_conntrack: table full, dropping packet", "syslog",
     "nf_conntrack: table full, dropping packet", {"wall": 1764064801.5}),
    ("syzkaller login: [   50.946624] WARNING: CPU: 0 PID: 3081 at mm/slab_common.c:971 kmalloc_slab+0x5d/0x70",
     "bracket", "WARNING: CPU: 0 PID: 3081 at mm/slab_common.c:971 kmalloc_slab+0x5d/0x70", {}),
    ("** 5311 printk messages dropped ** [   60.136772] INFO: Freed in fasync_free_rcu+0x14/0x20 age=624",
     "bracket", "INFO: Freed in fasync_free_rcu+0x14/0x20 age=624", {}),
    ("2017/11/13 12:34:56 BUG: memory leak", "datetime", "BUG: memory leak", {}),
    ("Nov 25 10:00:01.250000 worker-3 kernel: EXT4-fs error x", "syslog", "EXT4-fs error x",
     {"wall": 1764064801.25}),  # journalctl -o short-precise
    ("[ 5123.456789] worker-3 kernel: EXT4-fs error x", "journal-monotonic", "EXT4-fs error x",
     {"mono": 5123.456789, "host": "worker-3"}),  # journalctl -o short-monotonic
    ("Panic#1 Part2", "header", "", {}),
    ("unregister_netdevice: waiting for lo to become free. Usage count = 1", "bare",
     "unregister_netdevice: waiting for lo to become free. Usage count = 1", {}),
])
def test_every_line_shape(raw, shape, text, fields):
    ln = parse_line(raw, year=2025)
    assert (ln.shape, ln.text) == (shape, text)
    for k, v in fields.items():
        assert getattr(ln, k) == pytest.approx(v) if isinstance(v, float) else getattr(ln, k) == v, k


def test_syslog_without_year_uses_the_given_year():
    assert parse_line("Jan  2 15:04:05 n1 kernel: x", year=2024).wall == 1704207845.0


def test_journal_json_export():
    raw = orjson.dumps({"MESSAGE": "Out of memory: Killed process 9 (java)", "PRIORITY": "3", "_HOSTNAME": "n1",
                        "__REALTIME_TIMESTAMP": "1737434504283302", "_SOURCE_MONOTONIC_TIMESTAMP": "12000000"}).decode()
    ln = parse_line(raw)
    assert (ln.shape, ln.text, ln.prio, ln.wall, ln.mono, ln.host) == (
        "journal", "Out of memory: Killed process 9 (java)", 3, 1737434504.283302, 12.0, "n1")


def test_journal_export_format_entries():
    text = """__CURSOR=s=abc;i=1
__REALTIME_TIMESTAMP=1737434504283302
__MONOTONIC_TIMESTAMP=12000000
_HOSTNAME=n1
PRIORITY=3
SYSLOG_IDENTIFIER=kernel
MESSAGE=nf_conntrack: table full, dropping packet

__CURSOR=s=abc;i=2
__REALTIME_TIMESTAMP=1737434505283302
_HOSTNAME=n1

__CURSOR=s=abc;i=3
MESSAGE=EXT4-fs error (device sda1): boom"""
    items = list(from_lines(text.splitlines(), where={"file": "j.export"}))
    assert [(i.kind, i.pos) for i in items] == [("line", 1), ("bad", 9), ("line", 13)]
    ln = items[0].line
    assert (ln.shape, ln.text, ln.prio, ln.wall, ln.mono, ln.host) == (
        "journal-export", "nf_conntrack: table full, dropping packet", 3, 1737434504.283302, 12.0, "n1")
    assert items[1].reason == "journal-export entry has no MESSAGE field"
    assert items[2].line.text == "EXT4-fs error (device sda1): boom"


@pytest.mark.parametrize("raw, reason", [
    ("6,12\x00,1;x", "NUL bytes"),
    ('{"MESSAGE": "x", ', "not valid JSON"),
    ('{"PRIORITY": "3"}', "no MESSAGE field"),
    ("6,abc,12,-;hello", "malformed /dev/kmsg record header"),
    # dates that do not exist, fields of the wrong type, times no record can carry: each one stopped the collector
    ("[Sun Feb 30 16:24:18 2025] x", "day is out of range"),
    ("2025/02/30 10:00:00 x", "day is out of range"),
    ("kern  :warn  : 2025-02-30T04:41:44,283302+00:00 VFS: x", "day is out of range"),
    ('{"MESSAGE": [300]}', "journal entry is unreadable: bytes must be in range"),
    ('{"MESSAGE": ["a"]}', "journal entry is unreadable"),
    ('{"MESSAGE": "x", "__REALTIME_TIMESTAMP": "1' + "0" * 400 + '"}', "int too large"),
    ('{"MESSAGE": "x", "__REALTIME_TIMESTAMP": "9999999999999999999"}', "not a time RFC 3339 can write"),
    ("[99999999999999.000000] x", "uptime 99999999999999.0 s is not one"),
])
def test_broken_lines_say_why(raw, reason):
    with pytest.raises(LineError, match=reason):
        parse_line(raw)


def test_a_year_less_feb_29_is_from_the_latest_leap_year_and_a_given_year_is_kept():
    from datetime import UTC, datetime

    ln = parse_line("Feb 29 15:04:05 node-1 kernel: EXT4-fs error x")
    d = datetime.fromtimestamp(ln.wall, UTC)
    assert (d.month, d.day) == (2, 29) and d.year <= datetime.now(UTC).year
    with pytest.raises(LineError, match="'Feb 29 15:04:05' is not a date in 2025"):
        parse_line("Feb 29 15:04:05 node-1 kernel: x", year=2025)


def test_kmsg_record_dictionary_and_escaped_newlines():
    lines = parse_record("4,88,5000,-;first\\x0asecond\n SUBSYSTEM=net\n DEVICE=n3\n")
    assert [ln.text for ln in lines] == ["first", "second"]
    assert {ln.seq for ln in lines} == {88}
    assert lines[0].dict == {"SUBSYSTEM": "net", "DEVICE": "n3"}


def test_real_raw_kmsg_file_keeps_sequence_numbers(data_dir):
    items = list(from_path(data_dir / "gpud-testdata" / "kmsg" / "kmsg.1.log"))
    lines = [i for i in items if i.kind == "line"]
    assert len(lines) == 47
    seqs = [i.line.seq for i in lines]
    assert seqs == list(range(3964, 4011))
    assert lines[0].line.text == "nvidia-nvswitch2: open (major=510)"


def test_bad_lines_become_bad_items_with_position():
    items = list(from_lines(["[ 1.0] fine", "6,x,1,-;bad header", "bin\x00ary"], where={"file": "f.log"}))
    assert [i.kind for i in items] == ["line", "bad", "bad"]
    assert items[1].where == {"file": "f.log", "line": 2}
    assert "NUL" in items[2].reason


def test_kmsg_overrun_and_restart_gaps_are_counted(data_dir):
    """EPIPE from read() (the ring buffer overwrote unread records) -> a gap with the number lost."""
    recs = [ln.encode() for ln in (data_dir / "gpud-testdata" / "kmsg" / "kmsg.1.log").read_text().splitlines()]
    reads = recs[:5] + [BrokenPipeError(32, "Broken pipe")] + recs[12:]
    items = list(kmsg_items(reads))
    gaps = [i for i in items if i.kind == "gap"]
    assert [(g.missed, g.cause, g.where["from_seq"], g.where["to_seq"]) for g in gaps] == [(7, "overrun", 3969, 3975)]
    # restarting after seq 3970 when the buffer already starts at 3976: lost while stopped
    items = list(kmsg_items(recs[12:], after=3970))
    assert [(i.missed, i.cause) for i in items if i.kind == "gap"] == [(5, "while-stopped")]
    assert [i.pos for i in items if i.kind == "line"][0] == 3976


def test_real_dev_kmsg_reads_records_and_resumes():
    from collectors.kernel.sources import read_kmsg

    try:
        items = [i for i in read_kmsg("/dev/kmsg", follow=False) if i.kind == "line"]
    except PermissionError:
        pytest.skip("/dev/kmsg is not readable here (needs CAP_SYSLOG when kernel.dmesg_restrict=1)")
    except FileNotFoundError:
        pytest.skip("no /dev/kmsg on this machine")
    assert items, "the ring buffer always holds the boot messages"
    seqs = [i.pos for i in items]
    assert seqs == sorted(seqs)
    last = seqs[-1]
    again = [i.pos for i in read_kmsg("/dev/kmsg", follow=False, after=last - 3) if i.kind == "line"]
    assert again[:3] == [last - 2, last - 1, last] and min(again) == last - 2


def test_kmsg_dictionary_becomes_labels():
    from collectors.kernel.classify import Classifier
    from collectors.kernel.patterns import load_patterns

    c = Classifier(load_patterns(), node="n")
    evs = []
    for it in from_lines(["6,5,100,-;e1000e 0000:00:1f.6 eno1: NIC Link is Down", " SUBSYSTEM=pci",
                          " DEVICE=+pci:0000:00:1f.6"]):
        evs += c.feed(it.line, it.pos)
    (e,) = evs
    assert (e.reason, e.labels["device"], e.labels["driver"], e.labels["seq"]) == ("NetLinkDown", "eno1", "e1000e", "5")
    assert (e.labels["kmsg_subsystem"], e.labels["kmsg_device"]) == ("pci", "+pci:0000:00:1f.6")


def test_stream_keeps_multi_line_records_together():
    """stdin (a pipe) carries kmsg dictionaries and journal export entries across reads."""
    import os

    from collectors.kernel.sources import from_stream

    r, w = os.pipe()
    os.write(w, b"__CURSOR=s=a;i=1\n__REALTIME_TIMESTAMP=1737434504283302\n_TRANSPORT=kernel\n"
                b"MESSAGE=nf_conntrack: table full, dropping packet\n\n"
                b"6,5,100,-;e1000e 0000:00:1f.6 eno1: NIC Link is Down\n SUBSYSTEM=pci\n")
    os.close(w)
    items = list(from_stream(r, idle=None))
    os.close(r)
    assert [(i.kind, i.pos, i.line.shape) for i in items] == [("line", 1, "journal-export"), ("line", 6, "kmsg")]
    assert items[0].line.ident == "kernel" and items[1].line.dict == {"SUBSYSTEM": "pci"}


def test_stream_reads_past_a_huge_line_and_keeps_its_head():
    """A 3 MB line without a newline on stdin was held whole and the buffer re-split on every read (15 s and 144 MB
    for 40 MB); it is now held to a few hundred KiB, dead-lettered as too long with its first MAX_LINE characters,
    and the lines around it go on. A line cut across reads is joined; a last line without a newline is read."""
    import os
    import threading
    import tracemalloc

    from collectors.kernel.sources import MAX_LINE, from_stream

    r, w = os.pipe()
    huge = "é".encode() * 1_500_000  # 3 MB of two-byte characters

    def write():
        os.write(w, b"6,1,100,-;first\n6,2,")
        os.write(w, b"200,-;second\n")
        os.write(w, huge)
        os.write(w, b"\n6,3,300,-;last")
        os.close(w)

    t = threading.Thread(target=write)
    tracemalloc.start()
    try:
        t.start()
        items = list(from_stream(r, idle=None))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    t.join()
    os.close(r)
    assert peak < 2_000_000, peak  # the line is not held whole (3 MB, and more while it was re-split)
    assert [(i.kind, i.pos) for i in items] == [("line", 1), ("line", 2), ("bad", 3), ("line", 4)]
    assert [i.line.text for i in items if i.kind == "line"] == ["first", "second", "last"]
    assert items[2].reason == f"line longer than {MAX_LINE} characters" and items[2].raw == "é" * MAX_LINE


def test_kmsg_caller_field_keeps_interleaved_reports_apart():
    """CONFIG_PRINTK_CALLER adds ",caller=T42" to the /dev/kmsg header: reports group by it, as by "[ T42]"."""
    from collectors.kernel.classify import Classifier
    from collectors.kernel.patterns import load_patterns

    assert parse_line("4,100,5000000,-,caller=C3;x").ctx == "C3"
    assert parse_record("4,88,5000,-,caller=T7;first\\x0asecond")[1].ctx == "T7"
    recs = [b"3,100,5000000,-,caller=T42;INFO: task jbd2/sda1-8:42 blocked for more than 120 seconds.",
            b"1,101,5000100,-,caller=T77;BUG: kernel NULL pointer dereference, address: 0000000000000008",
            b"4,102,5000200,-,caller=T42;      Not tainted 6.1.0 #1",
            b"1,103,5000300,-,caller=T77;Oops: 0000 [#1] PREEMPT SMP NOPTI",
            b"4,104,5000400,-,caller=T42;Call Trace:",
            b"4,105,5000500,-,caller=T77;---[ end trace 0000000000000000 ]---"]
    c = Classifier(load_patterns(), node="n1")
    evs = [e for it in kmsg_items(recs) for e in c.feed(it.line, it.pos)] + c.flush()
    assert sorted((e.reason, e.labels["caller"], e.labels["lines"]) for e in evs) == [
        ("KernelOops", "T77", "3"), ("TaskHung", "T42", "3")]


def test_syslog_and_dmesg_t_stamps_are_local_time_of_the_given_zone(tmp_path, capsys):
    """A node in Asia/Shanghai (UTC+8) writes 08:19:26 for 00:19:26 UTC; `--tz` says so for its files."""
    from zoneinfo import ZoneInfo

    from kubesight.cli import main

    utc = 1743121166.0  # 2025-03-28T00:19:26Z
    sh = ZoneInfo("Asia/Shanghai")
    assert parse_line("Mar 28 08:19:26 node-1 kernel: x", year=2025, tz=sh).wall == utc
    assert parse_line("[Fri Mar 28 08:19:26 2025] x", tz=sh).wall == utc
    assert parse_line("2025-03-28T08:19:26.5 node-1 kernel: x", tz=sh).wall == utc + 0.5
    assert parse_line("2025-03-28T08:19:26+08:00 node-1 kernel: x", tz=ZoneInfo("UTC")).wall == utc  # has its zone
    log = tmp_path / "kern.log"
    log.write_text("[Fri Mar 28 08:19:26 2025] EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2\n")
    assert main(["collect", "kernel", "--from-file", str(log), "--stdout", "--tz", "Asia/Shanghai"]) == 0
    assert orjson.loads(capsys.readouterr().out)["time"].startswith("2025-03-28T00:19:26")
    assert main(["collect", "kernel", "--from-file", str(log), "--stdout", "--tz", "Mars/Olympus"]) == 2
    assert "--tz: unknown time zone 'Mars/Olympus'" in capsys.readouterr().err


def _utc(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat()


def test_a_year_less_stamp_is_never_read_as_from_the_future():
    """Read at 00:00:30 on Jan 1, "Dec 31 23:59:50" was put a year ahead (the worker dead-letters future times)."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    utc = ZoneInfo("UTC")
    now = datetime(2025, 1, 1, 0, 0, 30, tzinfo=UTC).timestamp()
    assert _utc(parse_line("Dec 31 23:59:50 node-1 kernel: x", tz=utc, now=now).wall) == "2024-12-31T23:59:50+00:00"
    assert _utc(parse_line("Jan  1 00:00:10 node-1 kernel: x", tz=utc, now=now).wall) == "2025-01-01T00:00:10+00:00"
    # a node's clock a little ahead of this one's keeps the current year; a given year is taken as given
    assert _utc(parse_line("Jan  1 03:00:00 node-1 kernel: x", tz=utc, now=now).wall) == "2025-01-01T03:00:00+00:00"
    assert _utc(parse_line("Dec 31 23:59:50 node-1 kernel: x", tz=utc, now=now, year=2025).wall) \
        == "2025-12-31T23:59:50+00:00"
    # Feb 29 read in January of a leap year: that year's is ahead, the latest one behind is four years back
    jan = datetime(2024, 1, 15, tzinfo=UTC).timestamp()
    assert _utc(parse_line("Feb 29 15:04:05 node-1 kernel: x", tz=utc, now=jan).wall) == "2020-02-29T15:04:05+00:00"


def test_a_year_less_stamp_takes_the_year_where_the_node_is():
    """At 05:00 on Jan 1 in Tokyo it is still Dec 31 in UTC: "Jan  1 04:59:00" was read as of the year before."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    now = datetime(2024, 12, 31, 20, 0, tzinfo=UTC).timestamp()  # 2025-01-01T05:00+09:00
    ln = parse_line("Jan  1 04:59:00 node-1 kernel: x", tz=ZoneInfo("Asia/Tokyo"), now=now)
    assert _utc(ln.wall) == "2024-12-31T19:59:00+00:00"
    ln = parse_line("Dec 31 23:59:00 node-1 kernel: x", tz=ZoneInfo("America/Los_Angeles"),
                    now=datetime(2025, 1, 1, 7, 30, tzinfo=UTC).timestamp())  # 23:30 on Dec 31 there
    assert _utc(ln.wall) == "2025-01-01T07:59:00+00:00"  # 29 min ahead: the node's clock, still this year


BERLIN_FALL = ["02:40:00", "02:59:59", "02:05:00", "02:30:00", "03:00:00"]  # 2024-10-27: 03:00 CEST -> 02:00 CET


@pytest.mark.parametrize("shape", ["Oct 27 {} node-1 kernel: x", "[Sun Oct 27 {} 2024] x",
                                   "2024-10-27T{} node-1 kernel: x"])
def test_the_hour_repeated_when_summer_time_ends_is_read_in_the_stream_s_order(shape):
    """The second pass of 02:00-03:00 was read as the first (fold 0): an hour early, then dead-lettered as late."""
    from zoneinfo import ZoneInfo

    items = list(from_lines([shape.format(t) for t in BERLIN_FALL], year=2024, tz=ZoneInfo("Europe/Berlin")))
    assert [_utc(i.line.wall)[11:19] for i in items] == ["00:40:00", "00:59:59", "01:05:00", "01:30:00", "02:00:00"]


def test_the_repeated_hour_is_told_apart_per_stream_and_a_small_step_back_is_no_change_of_pass(tmp_path):
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    # lines of several writers interleave a little out of order: still the first pass
    items = from_lines([f"Oct 27 {t} node-1 kernel: x" for t in ("02:40:00", "02:39:30", "02:41:00")], year=2024,
                       tz=berlin)
    assert [_utc(i.line.wall)[11:19] for i in items] == ["00:40:00", "00:39:30", "00:41:00"]
    # each file is its own stream: a file that starts in the hour starts in its first pass
    (tmp_path / "a.log").write_text("Oct 27 02:50:00 node-1 kernel: x\nOct 27 02:10:00 node-1 kernel: x\n")
    (tmp_path / "b.log").write_text("Oct 27 02:20:00 node-1 kernel: x\n")
    items = [i for i in from_path(tmp_path, year=2024, tz=berlin) if i.kind == "line"]
    assert [_utc(i.line.wall)[11:19] for i in items] == ["00:50:00", "01:10:00", "00:20:00"]
    # a last line without its newline yet, parsed on its own, still follows the file's stamps
    (tmp_path / "b.log").write_text("Oct 27 02:50:00 node-1 kernel: x\nOct 27 02:10:00 node-1 kernel: x")
    items = [i for i in from_path(tmp_path / "b.log", year=2024, tz=berlin) if i.kind == "line"]
    assert [(_utc(i.line.wall)[11:19], i.partial) for i in items] == [("00:50:00", False), ("01:10:00", True)]
    # a stream whose stamps are behind both readings is not in order there: nothing tells, the first pass is taken
    items = from_lines([f"Oct 27 {t} node-1 kernel: x" for t in ("04:00:00", "02:30:00")], year=2024, tz=berlin)
    assert [_utc(i.line.wall)[11:19] for i in items] == ["03:00:00", "00:30:00"]
    # the hour skipped when summer time starts is not a repeated one
    items = from_lines([f"Mar 31 {t} node-1 kernel: x" for t in ("02:40:00", "02:10:00")], year=2024, tz=berlin)
    assert [_utc(i.line.wall)[11:19] for i in items] == ["01:40:00", "01:10:00"]
