"""``kubesight rules check | test | list`` and ``kubesight bench rules``."""

from __future__ import annotations

import sys

from rules.load import DEFAULT_PACK


def register(sub, group) -> None:

    g = group("rules", "rule packs: validate, unit-test, list")
    p = g.add_parser("check", help="validate rule packs; exit 1 listing every error")
    p.add_argument("paths", nargs="+", metavar="PATH", help="pack files or folders of *.yaml")
    p.set_defaults(func=_check)
    p = g.add_parser("test", help="run rule unit tests (input events/series, expected alerts)")
    p.add_argument("paths", nargs="+", metavar="CASES", help="test files or folders of *.yaml")
    p.set_defaults(func=_test)
    default = f"default: the packs of --config / $KUBESIGHT_CONFIG (default_pack, rules), else {DEFAULT_PACK}"
    p = g.add_parser("list", help="print the rules of packs as a Markdown table (name, what, severity, why)")
    p.add_argument("paths", nargs="*", metavar="PATH", help=default)
    p.set_defaults(func=_list)
    p = g.add_parser("signals", help="print the event reasons and metric names that packs expect (Markdown)")
    p.add_argument("paths", nargs="*", metavar="PATH", help=default)
    p.set_defaults(func=_signals)
    b = group("bench", "benchmarks that print figures")
    p = b.add_parser("rules", help="rule-evaluation cost per signal with the whole default pack loaded")
    p.add_argument("--packs", nargs="*", default=None, metavar="PATH", help=f"default: {DEFAULT_PACK}")
    p.add_argument("--data", default=None, help="shared data folder (default: $KUBESIGHT_DATA or ../shared/data)")
    p.add_argument("--rounds", type=int, default=3, help="passes over the signal mix (default 3)")
    p.set_defaults(func=_bench)


def _check(args) -> int:
    from core.yamlconfig import ConfigError
    from rules.load import load_packs

    try:
        rs = load_packs(args.paths)
    except ConfigError as exc:
        for e in exc.errors:
            print(e, file=sys.stderr)
        print(f"{len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    for p in rs.packs:
        print(f"ok  {p.file}: pack {p.name}@{p.version}, {p.rules} rules")
    ev = sum(1 for r in rs.rules if r.on == "event")
    print(f"{len(rs.packs)} pack(s), {len(rs)} rules ({ev} on events, {len(rs) - ev} on metrics)")
    return 0


def _test(args) -> int:
    from rules.testing import run_tests

    rep = run_tests(args.paths)
    for f in rep.failures:
        print(f"FAILED {f}", file=sys.stderr)
    for path, passed, failed in rep.files:
        print(f"{'ok  ' if not failed else 'FAIL'} {path}: {passed} passed" + (f", {failed} failed" if failed else ""))
    print(f"{len(rep.files)} file(s): {rep.passed} test case(s) passed, {rep.failed} failed")
    if not rep.files or rep.passed + rep.failed == 0:
        print("no test cases found", file=sys.stderr)
        return 1
    return 1 if rep.failed else 0


def _packs(args):
    """The packs named on the command line, else those the settings' worker evaluates (``--config``,
    ``$KUBESIGHT_CONFIG``; with neither, the default pack).  A settings or pack error is raised (ConfigError):
    one line each, exit 2, as every command says a file's problems."""
    from core.settings import Settings
    from core.yamlconfig import ConfigError
    from rules.load import load_packs, pack_paths

    paths = args.paths or pack_paths(Settings.load(args.config))
    if not paths:
        raise ConfigError(["no rule packs: the settings turn the default pack off (default_pack: false) and name "
                           "no rules"])
    return load_packs(paths)


def _list(args) -> int:
    rs = _packs(args)
    print("| rule | pack | what | severity | why | on the node (`kubesight remediate`) |")
    print("|---|---|---|---|---|---|")
    for r in rs.rules:
        what = r.annotations.get("summary")
        why = r.annotations.get("description")
        cell = lambda t: (t.text if t else "").replace("|", "\\|").replace("\n", " ")  # noqa: E731
        print(f"| {r.alert} | {r.pack} | {cell(what)} | {r.severity} | {cell(why)} | {node_effects(r)} |")
    return 0


def node_effects(r) -> str:
    """The rule's condition, event and actions on its node, for the rule table."""
    out = []
    if r.node_condition is not None:
        out.append(f"condition {r.node_condition.type} ({r.node_condition.reason})")
    if r.node_event is not None:
        out.append(f"event {r.node_event.reason}")
    for a in r.actions:
        out.append(a.type + (f" {a.key}" + (f"={a.value}" if a.value else "") + (f":{a.effect}" if a.type == "taint" else "")
                             if getattr(a, "key", None) else ""))
    return ", ".join(out)


def signals_tables(rs) -> str:
    """Markdown tables: (source, reason) -> rules, metric name -> rules, label -> rules matching on it."""
    ev: dict = {}
    sm: dict = {}
    lab: dict = {}
    for r in rs.rules:
        if r.on == "event":
            for s in r.sources:
                for x in sorted(r.reasons or ()):
                    ev.setdefault((s, x), set()).add(r.alert)
            for x in r.resolve_reasons:
                ev.setdefault(("any", x), set()).add(f"{r.alert} (clears)")
        else:
            for m in r.metrics:
                sm.setdefault(m, set()).add(r.alert)
        for m in r.matchers:
            lab.setdefault(m.name, set()).add(r.alert)
    lines = ["| source | reason | rules |", "|---|---|---|"]
    lines += [f"| {s} | {x} | {', '.join(sorted(a))} |" for (s, x), a in sorted(ev.items())]
    lines += ["", "| metric | rules |", "|---|---|"]
    lines += [f"| `{m}` | {', '.join(sorted(a))} |" for m, a in sorted(sm.items())]
    lines += ["", "| label matched on | rules |", "|---|---|"]
    lines += [f"| `{n}` | {', '.join(sorted(a))} |" for n, a in sorted(lab.items())]
    return "\n".join(lines)


def _signals(args) -> int:
    rs = _packs(args)
    print(signals_tables(rs))
    return 0


def _bench(args) -> int:
    from rules.bench import main

    return main(args)
