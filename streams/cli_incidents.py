"""``kubesight incidents list | show ID``: the incidents topic, latest record per incident, the evidence chain."""

from __future__ import annotations

import sys

import orjson

from alerts.incidents import render, render_list


def register(sub, group) -> None:
    g = group("incidents", "incidents: alerts grouped by root cause (the incidents topic)")
    ls = g.add_parser("list", help="one line per incident, newest first (open ones; --all adds resolved)")
    ls.add_argument("--all", action="store_true", help="resolved incidents too")
    ls.add_argument("--json", action="store_true", help="the latest record of each incident, one JSON per line")
    ls.set_defaults(func=_list)
    sh = g.add_parser("show", help="the evidence chain of one incident: probable cause, why, blast radius")
    sh.add_argument("id", help="incident id (a unique prefix is enough)")
    sh.add_argument("--json", action="store_true", help="the latest record as JSON")
    sh.add_argument("--candidates", type=int, default=3, help="candidates to print (default 3)")
    sh.set_defaults(func=_show)


def latest(settings, bootstrap, timeout: float = 30.0) -> dict[str, dict]:
    """The latest record of every incident on the topic (read_committed, to its end offsets of now)."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    from core.kafkaclient import client_config

    topic = settings.topic("incidents")
    c = KafkaConsumer(**client_config(bootstrap, "kafka-python"), enable_auto_commit=False, group_id=None,
                      isolation_level="read_committed")
    out: dict[str, dict] = {}
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while any(c.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500, max_records=50_000).values():
                for m in recs:
                    try:
                        r = orjson.loads(m.value)
                        out[r["id"]] = r
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue
    finally:
        c.close()
    return out


def _kafka(args):
    from core.broker import bootstrap_for
    from core.settings import Settings
    from core.topics import ensure_topics

    settings = Settings.load(args.config)
    bootstrap = bootstrap_for(settings)
    ensure_topics(settings, bootstrap)
    return settings, bootstrap


def _list(args) -> int:
    recs = [r for r in latest(*_kafka(args)).values() if args.all or r.get("status") == "open"]
    if args.json:
        for r in recs:
            sys.stdout.write(orjson.dumps(r).decode() + "\n")
        return 0
    print(render_list(recs) if recs else "no incidents" + ("" if args.all else " open (--all shows resolved ones)"))
    return 0


def _show(args) -> int:
    recs = latest(*_kafka(args))
    hits = sorted(i for i in recs if i.startswith(args.id))
    if len(hits) != 1:
        print(f"kubesight: incident {args.id!r}: " + ("not found" if not hits else f"ambiguous ({', '.join(hits[:5])})"),
              file=sys.stderr)
        return 2  # a wrong or too short id: the user's to fix
    r = recs[hits[0]]
    print(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode() if args.json else render(r, args.candidates))
    return 0
