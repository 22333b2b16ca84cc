"""Replay of recorded real signals into Kafka: Kubernetes Event lists (must-gather layout) as Event records.

Reads every ``events.yaml`` (a ``kind: EventList``) under a folder, converts each core/v1
Event into an Event record, sorts them by time and produces them in that order, optionally
paced (``--speed 60`` = one recorded minute per second; 0 = as fast as possible).  An object
that cannot be converted is dead-lettered with the reason, never dropped.  ``--owners`` maps
namespaces to owning teams (a YAML of ``{namespace regex: team}``, anchored), standing in for
the workload labels that the live Kubernetes collector reads.  Entities are named as the live collector names
them (``collector.event_entity``, ``owners.team_namespace``): an Event about a cluster-scoped object (a Node, a
PersistentVolume) has no namespace and no team, a Node's has that node, a Namespace's is that namespace's team.
"""

from __future__ import annotations

import gzip
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import RootModel

from collectors.kubernetes.owners import team_namespace
from core import yamlconfig
from core.matchers import RegexError, full_match
from core.records import PAYLOAD_LIMIT, Event, RecordError, Sample, parse_time
from core.yamlconfig import shown

# the repo's own copy (deploy/demo/recordings/README.md): EventLists over 8 KB are stored as events.yaml.gz
DEFAULT_EVENTS = Path(__file__).resolve().parent.parent / "deploy" / "demo" / "recordings" / "openshift-must-gather-events"


@dataclass
class Rejected:
    reason: str
    obj: object
    file: str
    index: int


def k8s_event_to_record(obj: dict, cluster: str = "default") -> Event:
    """A core/v1 (or events.k8s.io/v1) Event object -> the record the live collector would emit for it.

    The same reading as ``collectors.kubernetes`` (``view`` + ``occurrences`` of a first list):
    one record carrying the object's count. An Event without a reason is refused here.

    >>> ev = k8s_event_to_record({"reason": "BackOff", "type": "Warning", "count": 3,
    ...     "lastTimestamp": "2021-08-03T09:21:42Z", "message": "Back-off restarting failed container",
    ...     "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "shop", "uid": "u1",
    ...                        "fieldPath": "spec.containers{web}"},
    ...     "metadata": {"uid": "e1", "namespace": "shop"}, "source": {"host": "node-a"}})
    >>> ev.reason, ev.count, ev.entity.node, ev.labels["container"]
    ('BackOff', 3, 'node-a', 'web')
    """
    from collectors.kubernetes.collector import event_entity
    from collectors.kubernetes.events import occurrences, view

    v = view(obj)
    if not v.reason:
        raise RecordError("event has no reason")
    return occurrences(v, None, event_entity(v, cluster), baseline=True)[0]


class _Owners(RootModel[dict[str, str]]):
    """The ``--owners`` file: ``{namespace regex: team}``."""


def load_owners(path: str | None) -> list[tuple[Callable[[str], bool], str]]:
    """(namespace matcher, team) of each entry of the ``--owners`` file, in the file's order (the first match wins).

    Read by the strict config loader, the regexes as every regex of kubesight's configs (Go's syntax, anchored:
    ``core.matchers.full_match``); raises ConfigError listing every problem, ``file:line: yaml.path: message``."""
    if not path:
        return []
    doc = yamlconfig.read(path)
    owners = doc.validate(_Owners)
    out = []
    for pat in doc.data if isinstance(doc.data, dict) else ():
        try:
            matches = full_match(str(pat))
        except RegexError as exc:
            doc.error((pat,), f"invalid regex {shown(pat)}: {exc}")
            continue
        if owners is not None:
            out.append((matches, owners.root[pat]))
    doc.raise_for_errors()
    return out


def read_events(root: Path, cluster: str = "default", owners=()) -> tuple[list[Event], list[Rejected]]:
    """Every Event under ``root`` (files named events.yaml or events.yaml.gz), sorted by time, plus what was rejected."""
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    files = sorted([*root.rglob("events.yaml"), *root.rglob("events.yaml.gz")]) if root.is_dir() else [root]
    if not files:
        raise FileNotFoundError(f"{root}: no events.yaml or events.yaml.gz under it")
    events: list[Event] = []
    rejected: list[Rejected] = []
    for f in files:
        with (gzip.open(f, "rt") if f.suffix == ".gz" else open(f)) as fh:
            text = fh.read()  # not UTF-8: a UnicodeDecodeError for the CLI to say, as before
        try:
            doc = yamlconfig.load_data(text, str(f))  # an alias bomb is refused, not expanded
        except yaml.YAMLError as exc:
            rejected.append(Rejected(f"invalid YAML: {exc}", f.read_text(errors="replace"), str(f), -1))
            continue
        except ValueError as exc:
            rejected.append(Rejected(str(exc), text[:PAYLOAD_LIMIT], str(f), -1))
            continue
        items = doc.get("items") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            rejected.append(Rejected("not an EventList (no items list)", doc, str(f), -1))
            continue
        for i, obj in enumerate(items):
            try:
                ev = k8s_event_to_record(obj, cluster)
            except RecordError as exc:
                rejected.append(Rejected(str(exc), obj, str(f), i))
                continue
            ns = team_namespace(ev.entity.namespace, ev.entity.kind, ev.entity.name)
            for matches, team in owners if ns else ():  # a cluster-scoped object is no namespace's
                if matches(ns):
                    ev.entity.owner = team
                    break
            events.append(ev)
    events.sort(key=lambda e: e.time)
    return events, rejected


def read_series_csv(path: Path, name: str = "nab_value", labels: dict | None = None) -> list[Sample]:
    """A NAB-layout CSV (``timestamp,value``, UTC) as Samples of one series named ``name``.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "cpu.csv"
    >>> _ = f.write_text(chr(10).join(["timestamp,value", "2014-05-14 01:14:00,85.8"]))
    >>> read_series_csv(f)[0]
    Sample(name='nab_value', value=85.8, time=1400030040.0, labels={'file': 'cpu'})
    """
    import csv

    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            out.append(Sample(name, float(row["value"]), parse_time(row["timestamp"].replace(" ", "T")),
                              dict(labels or {"file": Path(path).stem})))
    return out


def paced(events: list[Event], speed: float) -> Iterator[Event]:
    """Yield events, sleeping so that recorded gaps pass ``speed`` times faster (0 = no pause).

    >>> evs = [Event(source="k8s", reason="X", time=t) for t in (0.0, 5.0)]
    >>> [e.time for e in paced(evs, speed=0)]  # order kept, nothing dropped
    [0.0, 5.0]
    """
    if not events or speed <= 0:
        yield from events
        return
    t0, w0 = events[0].time, time.monotonic()
    for ev in events:
        wait = (ev.time - t0) / speed - (time.monotonic() - w0)
        if wait > 0:
            time.sleep(wait)
        yield ev


def replay(sink, root: Path, *, speed: float = 0.0, cluster: str = "default", owners=(), progress: bool = True,
           on_event=None) -> tuple[int, int]:
    """Produce the recorded events through ``sink``; returns (sent, rejected)."""
    import orjson
    from tqdm import tqdm

    events, rejected = read_events(root, cluster, owners)
    for r in rejected:
        sink.reject(r.reason, orjson.dumps(r.obj, default=str), origin="collector/replay", file=r.file, index=r.index)
    bar = tqdm(total=len(events), desc="replay", unit="ev", file=sys.stderr, disable=None if progress else True,  # None: off when stderr is no terminal
               dynamic_ncols=True, ascii=not sys.stderr.isatty())
    for ev in paced(events, speed):
        sink.send(ev)
        bar.update(1)
        if on_event:
            on_event(ev)
    bar.close()
    sink.flush()
    return len(events), len(rejected)


# ---------------------------------------------------------------- CLI


def speed(text: str) -> float:
    """``--speed``: a finite number >= 0 (a negative or NaN one replayed at full speed without a word).

    >>> speed("60"), speed("0")
    (60.0, 0.0)
    >>> speed("-1")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be a number >= 0 (0: as fast as possible), not '-1'
    """
    import argparse
    import math

    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (0: as fast as possible), not {text!r}")
    return v


def register(sub, group) -> None:

    g = group("collect", "run a collector")
    p = g.add_parser("replay", help="replay recorded Kubernetes Events (must-gather layout) into Kafka")
    p.add_argument("path", nargs="?", default=str(DEFAULT_EVENTS), help="folder or events.yaml (default: %(default)s)")
    p.add_argument("--speed", type=speed, default=0.0, help="time acceleration; 0 = as fast as possible (default)")
    p.add_argument("--cluster", default="default", help="cluster name for the entities")
    p.add_argument("--owners", help="YAML {namespace regex: team} giving each namespace an owner")
    p.add_argument("--stdout", action="store_true", help="print Event records as JSON lines instead of producing")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from collectors.sink import KafkaSink, StdoutSink
    from core.settings import Settings
    from core.yamlconfig import ConfigError

    try:
        owners = load_owners(args.owners)  # before reaching Kafka: a bad file is said first
    except ConfigError as exc:
        print(f"kubesight collect replay: invalid owners file\n{exc}", file=sys.stderr)
        return 2
    settings = Settings.load(args.config)
    if args.stdout:
        sink = StdoutSink()
    else:
        from core.broker import bootstrap_for
        from core.topics import ensure_topics

        bootstrap = bootstrap_for(settings)
        ensure_topics(settings, bootstrap)
        sink = KafkaSink(bootstrap, settings.topic, client_id="kubesight-replay")
    sent, bad = replay(sink, Path(args.path), speed=args.speed, cluster=args.cluster,
                       owners=owners, progress=not args.stdout)
    sink.close()
    print(f"replayed {sent} events, {bad} dead-lettered", file=sys.stderr)
    return 0 if sent else 1  # nothing replayed (an empty file, or every record refused) is a failure to say
