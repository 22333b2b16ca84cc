"""``kubesight collect kernel`` (read /dev/kmsg or logs, produce kernel Events) and ``kubesight bench kernel``."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

DEFAULT_KMSG = "/dev/kmsg"


def register(sub, group) -> None:

    g = group("collect", "run a collector")
    p = g.add_parser(
        "kernel", help="kernel log (/dev/kmsg, dmesg/syslog/journal/pstore files) -> kernel Events",
        description="Read the node's kernel log and produce one Event per kernel problem (OOM kill, hung task, "
                    "lockup, oops, panic, filesystem/disk/NIC errors, MCE/EDAC, NVIDIA Xid, ...). "
                    "By default reads /dev/kmsg and follows it; --from-file reads a log file or a folder of them.",
        epilog="Events go to the 'events' topic of the configured Kafka (--config, KUBESIGHT_KAFKA; a local "
               "broker otherwise), unparseable lines to 'deadletter' with the reason. Examples: "
               "kubesight collect kernel --from-file /var/log/kern.log --stdout; "
               "journalctl -k -o json -f | kubesight collect kernel --from-file -; "
               "kubesight collect kernel --patterns site.yaml --check")
    p.add_argument("--from-file", metavar="PATH",
                   help="read this log file, every file under this folder, or '-' for stdin, instead of /dev/kmsg; "
                        "any mix of raw kmsg, '[ 1.2]', '[..][ T1]', syslog 'kernel:', dmesg -T, "
                        "'dmesg --time-format iso', pstore '<4>[..]', 'journalctl -k' (short, short-precise, "
                        "short-iso, short-monotonic, -o json, -o export) lines")
    p.add_argument("--kmsg", default=DEFAULT_KMSG, metavar="PATH", help="kmsg device to read (default: %(default)s)")
    p.add_argument("--no-follow", action="store_true",
                   help="/dev/kmsg: stop at the end of the ring buffer instead of waiting for new records")
    p.add_argument("--stdout", action="store_true",
                   help="print the Event records as JSON lines on stdout instead of producing them to Kafka "
                        "(dead letters are reported on stderr)")
    p.add_argument("--node", default=None,
                   help="node name for the events (default: $NODE_NAME, else the host name)")
    p.add_argument("--cluster", default=None, help="cluster name for the events (default: settings 'cluster')")
    p.add_argument("--patterns", action="append", default=[], metavar="FILE",
                   help="extra pattern file loaded after the shipped one (repeatable); see "
                        "collectors/kernel/patterns.yaml for the format")
    p.add_argument("--check", action="store_true",
                   help="only validate the pattern files (every error with file, line and YAML path) and exit")
    p.add_argument("--xid-fatal", metavar="CODES",
                   help="comma-separated NVIDIA Xid codes that are fatal (replaces the pattern files' xid.fatal; "
                        "default there: derived from the Xid catalogue's immediate action)")
    p.add_argument("--checkpoint", metavar="PATH|kafka|none", default=None,
                   help="where to remember the last handled position so a restart neither loses nor repeats "
                        "lines: a JSON file on the node, 'kafka' (the compacted checkpoints topic) or 'none' "
                        "(default: kafka when producing from /dev/kmsg, else none; /dev/kmsg or one file only)")
    p.add_argument("--boot-time", metavar="TIME",
                   help="boot time (RFC 3339 or epoch seconds) to date '[ 12.3]'-stamped lines "
                        "(default: this machine's boot time)")
    p.add_argument("--year", type=int, default=None,
                   help="year for syslog stamps without one ('Jan  2 15:04:05'; default: the current year)")
    p.add_argument("--tz", metavar="ZONE", default=None,
                   help="IANA time zone (Europe/Berlin, UTC) of the local-time stamps of syslog and 'dmesg -T' "
                        "lines, for files written on a node in another zone (default: this machine's zone)")
    p.set_defaults(func=_collect)

    b = group("bench", "measure a component on real recorded data")
    q = b.add_parser("kernel", help="kernel classification accuracy on syzkaller reports, and lines/s parsed",
                     description="Scores the kernel classifier on syzkaller's labelled crash reports "
                                 "(first crash-class event must be in the file's TYPE family; files without "
                                 "TITLE must yield none) and measures parse+classify throughput.")
    q.add_argument("--corpus", default=None,
                   help="syzkaller report folder (default: <data>/syzkaller-kernel-reports)")
    q.add_argument("--repeat", type=int, default=5, help="passes over the corpus for the lines/s figure (default: 5)")
    q.add_argument("--patterns", action="append", default=[], metavar="FILE", help="extra pattern file (repeatable)")
    q.add_argument("--misses", action="store_true", help="list every file scored wrong")
    q.set_defaults(func=_bench)


def _node(args) -> str:
    return args.node or os.environ.get("NODE_NAME") or socket.gethostname()


def _boot_time(value: str | None) -> float | None:
    """The boot time to date ``[ 12.3]`` stamps by; None (the error printed) when ``--boot-time`` cannot be read."""
    if value:
        from core.records import parse_time

        try:
            return parse_time(float(value) if value.replace(".", "", 1).isdigit() else value)
        except ValueError as exc:
            print(f"--boot-time: {exc}", file=sys.stderr)  # the user's to fix: exit 2, as every such error (README)
            return None
    return round(time.time() - time.monotonic(), 3)


def _load(args):
    """(the pattern files, 0), or (None, the exit code) with every error printed: errors the user can fix exit 2
    (README), except from ``--check``, a checker that exits 1 when it finds problems, as ``rules check`` does."""
    from collectors.kernel.patterns import load_patterns
    from core.yamlconfig import ConfigError

    fatal = None
    if getattr(args, "xid_fatal", None):
        try:
            fatal = [int(x) for x in args.xid_fatal.split(",") if x.strip()]
        except ValueError:  # an option written wrong, not a finding of the check: 2 with --check too (argparse's)
            print(f"--xid-fatal: expected comma-separated integers, got {args.xid_fatal!r}", file=sys.stderr)
            return None, 2
    try:
        return load_patterns(*args.patterns, xid_fatal=fatal), 0
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None, 1 if getattr(args, "check", False) else 2


def _collect(args) -> int:
    from collectors.kernel import sources
    from collectors.kernel.checkpoint import FileCheckpoint, KafkaCheckpoint
    from collectors.kernel.classify import Classifier
    from collectors.kernel.collector import KernelCollector, SelfMetrics
    from collectors.sink import KafkaSink, StdoutSink
    from core.settings import Settings

    patterns, code = _load(args)
    if patterns is None:
        return code
    if args.check:
        print(f"ok: {len(patterns.patterns)} patterns from {', '.join(patterns.sources)}")
        return 0
    from collectors.kernel.lines import zone

    try:
        tz = zone(args.tz)
    except ValueError as exc:
        print(f"--tz: {exc}", file=sys.stderr)
        return 2
    settings = Settings.load(args.config)
    node = _node(args)
    cluster = args.cluster or settings.cluster
    boot = _boot_time(args.boot_time)
    if boot is None:
        return 2
    live = args.from_file is None
    if live:
        bid = sources.boot_id()
        source_id = f"kmsg:{bid}"
    elif args.from_file == "-":
        source_id = "stdin"
    else:
        source_id = f"file:{Path(args.from_file).resolve()}"
    fallback = time.time()
    if not live and args.from_file != "-":
        fallback = Path(args.from_file).stat().st_mtime  # a missing file: one line, exit 2 (kubesight.cli)
    classifier = Classifier(patterns, node=node, cluster=cluster, boot_time=boot, fallback_time=fallback,
                            source_id=source_id)

    if args.stdout:
        sink = StdoutSink()
        bootstrap = None
    else:
        from core.broker import bootstrap_for
        from core.topics import ensure_topics

        bootstrap = bootstrap_for(settings)
        ensure_topics(settings, bootstrap)
        sink = KafkaSink(bootstrap, settings.topic, client_id=f"kubesight-kernel-{node}")

    mode = args.checkpoint or ("kafka" if live and not args.stdout else "none")
    if mode != "none" and not live and (args.from_file == "-" or Path(args.from_file).is_dir()):
        print("--checkpoint applies to /dev/kmsg or one file (positions on stdin or across a folder "
              "would not mean the same lines after a restart)", file=sys.stderr)
        return 2
    checkpoint = None
    if mode == "kafka":
        if bootstrap is None:
            print("--checkpoint kafka needs Kafka (drop --stdout or use a checkpoint file)", file=sys.stderr)
            return 2
        checkpoint = KafkaCheckpoint(bootstrap, settings.topic("checkpoints"), f"kernel/{cluster}/{node}", sink)
    elif mode != "none":
        checkpoint = FileCheckpoint(mode)

    collector = KernelCollector(classifier, sink, checkpoint=checkpoint, source_id=source_id)
    if live or args.from_file == "-":  # a long-running follower: probes and metrics
        from core.telemetry import serve_for

        serve_for(settings, bootstrap, "kubesight collect kernel", [SelfMetrics(collector).registry])
    after = collector.resume()
    idle = patterns.defaults.idle_seconds
    if live:
        items = sources.read_kmsg(args.kmsg, after=after, follow=not args.no_follow, idle=idle)
    elif args.from_file == "-":
        items = _stamped(sources.from_stream(sources.stdin_fd(), idle=idle, year=args.year, tz=tz), classifier)
    else:
        items = sources.from_path(args.from_file, year=args.year, tz=tz)
    from core.settings import Settings
    from core.shutdown import on_stop

    def _stop():  # Kubernetes stops pods with SIGTERM: flush and save the checkpoint first
        raise KeyboardInterrupt

    on_stop(_stop, Settings.load(args.config).shutdown_timeout, "kubesight collect kernel")
    try:
        collector.run(items)
    except PermissionError as exc:
        print(f"cannot read {exc.filename}: {exc.strerror} (reading /dev/kmsg needs CAP_SYSLOG when "
              "kernel.dmesg_restrict=1)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        collector.commit()
        raise
    finally:
        sink.close()
    print(f"kernel: {collector.lines} lines, {collector.events} events, {collector.bad} dead-lettered"
          + (f", {collector.skipped} already produced before the restart" if collector.skipped else ""),
          file=sys.stderr)
    return 0


def _stamped(items, classifier):
    """Live stdin: a line without any time stamp happened when it arrived."""
    for it in items:
        classifier.fallback_time = time.time()
        yield it


def _bench(args) -> int:
    from collections import Counter

    from tqdm import tqdm

    from collectors.kernel.accuracy import classify_lines, read_report, score

    patterns, code = _load(args)
    if patterns is None:
        return code
    from core.datafolder import data_root

    corpus = (data_root(args.corpus, "report", option="--corpus") if args.corpus
              else data_root(None, "syzkaller-kernel-reports/report", option="--corpus") / "syzkaller-kernel-reports")
    results, nlines, _ = score(patterns, corpus)
    ok = sum(r.ok for r in results)
    titled = [r for r in results if r.title]
    print(f"syzkaller accuracy: {ok}/{len(results)} files = {100 * ok / len(results):.1f}% "
          f"({sum(r.ok for r in titled)}/{len(titled)} crash reports classified in their TYPE family, "
          f"{sum(r.ok for r in results if not r.title)}/{len(results) - len(titled)} clean logs with no crash event)")
    miss = Counter(r.type or "(no type)" for r in results if not r.ok)
    if miss:
        print("misses by TYPE: " + ", ".join(f"{k} {v}" for k, v in miss.most_common()))
    if args.misses:
        for r in results:
            if not r.ok:
                print(f"  {r.file}: {r.type or '-'} {r.title!r} -> {r.got or 'no crash event'}")
    bodies = [read_report(f)[1] for f in sorted((corpus / "report").iterdir())]
    total = 0
    t0 = time.perf_counter()
    for _ in tqdm(range(args.repeat), desc="bench kernel", unit="pass", file=sys.stderr,
                  disable=not sys.stderr.isatty()):
        for lines in bodies:
            classify_lines(patterns, lines)
            total += len(lines)
    spent = time.perf_counter() - t0
    print(f"kernel lines parsed and classified: {total} in {spent:.2f} s = {total / spent:,.0f} lines/s "
          f"(one core, {len(patterns.patterns)} patterns)")

    # End to end: the collector loop over one big node log, events JSON-encoded to a sink.
    from collectors.kernel.classify import Classifier
    from collectors.kernel.collector import KernelCollector
    from collectors.kernel.sources import from_lines
    from collectors.sink import StdoutSink

    big = [ln for lines in bodies for ln in lines] * args.repeat
    with open(os.devnull, "w") as devnull:
        col = KernelCollector(Classifier(patterns, node="bench"), StdoutSink(devnull))
        t0 = time.perf_counter()
        col.run(from_lines(big))
        spent = time.perf_counter() - t0
    print(f"collector end to end (read, parse, classify, encode): {col.lines} lines, {col.events} events "
          f"in {spent:.2f} s = {col.lines / spent:,.0f} lines/s")
    return 0
