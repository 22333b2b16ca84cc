"""Rule unit tests as data (promtool's spirit): input events and series over time, expected alerts.

A test file names its ``rule_files`` (relative to itself), then ``tests``: each with
``input_events`` (``at``, source, reason, entity, labels, optional ``repeat``/``every``),
``input_series`` (``series: 'name{label="v"}'``, ``values: "0 1 2x3 _ 5+5x2"`` one per
``interval``) and ``alert_rule_test`` checks (``eval_time``, ``alertname``, ``exp_alerts``:
exact labels, the annotations listed, ``status`` firing|resolved).  At ``eval_time`` the
alerts compared are the latest transition of every alert of that name emitted so far, so an
empty ``exp_alerts`` means "never fired".  The production ``Engine`` runs the timeline, ticking
every ``evaluation_interval``, with its state passed through JSON at every tick as the
changelog would.

>>> expand("1 2x2 _ 3+1x2 _x2")
[1.0, 2.0, 2.0, 2.0, None, 3.0, 4.0, 5.0, None, None]
>>> parse_series('up{job="etcd", instance="a:2379"}')
('up', {'job': 'etcd', 'instance': 'a:2379'})
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from core.durations import format_duration
from core.records import ENTITY_FIELDS, Entity, Event, Sample
from core.yamlconfig import ConfigError
from rules import schema
from rules.engine import Engine
from rules.load import load_packs, pack_files, parse_file, valid_parts

_SERIES = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$")
_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_TOKEN = re.compile(r"^(_|[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)(?:([-+])((?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?))?(?:x(\d+))?$")


def expand(values: str) -> list[float | None]:
    """promtool's expanding notation: ``a+bxn`` -> a, a+b, ..., a+n*b; ``axn`` -> n+1 times a;
    ``_`` a missed scrape, ``_xn`` n of them."""
    out: list[float | None] = []
    for tok in values.split():
        m = _TOKEN.match(tok)
        if not m:
            raise ValueError(f'invalid value "{tok}" (use numbers, _, a+bxn, a-bxn, axn, _xn)')
        base, sign, step, n = m.groups()
        if base == "_":
            if sign:
                raise ValueError(f'invalid value "{tok}" (use numbers, _, a+bxn, a-bxn, axn, _xn)')
            out.extend([None] * (int(n) if n else 1))
            continue
        a = float(base)
        if n is None:
            if sign:
                raise ValueError(f'invalid value "{tok}" (a+b needs xN, e.g. 1+1x5)')
            out.append(a)
            continue
        b = float(step) * (-1 if sign == "-" else 1) if sign else 0.0
        out.extend(a + i * b for i in range(int(n) + 1))
    return out


def parse_series(text: str) -> tuple[str, dict]:
    m = _SERIES.match(text)
    if not m:
        raise ValueError(f"invalid series {json.dumps(text)} (use name{{label=\"value\", ...}})")
    name, inner = m.group(1), (m.group(2) or "").strip()
    labels: dict = {}
    pos = 0
    while pos < len(inner):
        pm = _PAIR.match(inner, pos)
        if not pm or pm.end() == pos:
            raise ValueError(f"invalid series {json.dumps(text)} (use name{{label=\"value\", ...}})")
        labels[pm.group(1)] = json.loads(f'"{pm.group(2)}"')
        pos = pm.end()
    return name, labels


def _fmt_alert(labels: dict, status: str, annotations: dict | None = None) -> str:
    inner = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
    s = f"{status} {{{inner}}}"
    if annotations:
        s += " annotations " + json.dumps(annotations, sort_keys=True)
    return s


def _signals(case: schema.Case, errs: list[str], where: str) -> list:
    sigs = []
    order = 0
    for i, e in enumerate(case.input_events):
        try:
            ent = Entity(**e.entity)
        except TypeError:
            known = ", ".join(ENTITY_FIELDS)
            errs.append(f"{where}.input_events[{i}].entity: unknown field (use {known})")
            continue
        for r in range(e.repeat):
            t = e.at + r * e.every
            sigs.append((t, order, Event(source=e.source, reason=e.reason, type=e.type, time=t, entity=ent,
                                         labels=dict(e.labels), message=e.message)))
            order += 1
    for i, s in enumerate(case.input_series):
        try:
            name, labels = parse_series(s.series)
            vals = expand(s.values)
        except ValueError as exc:
            errs.append(f"{where}.input_series[{i}]: {exc}")
            continue
        for j, v in enumerate(vals):
            if v is not None:
                sigs.append((j * case.interval, order, Sample(name, v, j * case.interval, dict(labels))))
                order += 1
    sigs.sort(key=lambda x: (x[0], x[1]))
    return [s for _, _, s in sigs]


def _roundtrip(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        snap = getattr(v, "snapshot", None)
        out[k] = orjson.loads(orjson.dumps(snap() if snap else v))
    return out


def run_case(engine: Engine, case: schema.Case, eval_interval: float, where: str) -> list[str]:
    """Run one test case; returns failure messages (empty when it passes)."""
    errs: list[str] = []
    sigs = _signals(case, errs, where)
    if errs:
        return errs
    checks = sorted(case.alert_rule_test, key=lambda c: c.eval_time)
    end = max((c.eval_time for c in checks), default=0.0)
    ticks = sorted({i * eval_interval for i in range(int(end // eval_interval) + 1)} | {c.eval_time for c in checks})
    state: dict = {}
    latest: dict = {}
    i = 0
    ci = 0
    for t in ticks:
        while i < len(sigs) and sigs[i].time <= t:
            for a in engine.process(sigs[i], state, sigs[i].time):
                latest[a.fingerprint] = a
            for _, copy in engine.rekey(sigs[i]):  # what the worker re-keys for anomaly_vector rules
                for a in engine.process(copy, state, copy.time):
                    latest[a.fingerprint] = a
            i += 1
        for a in engine.tick(t, state):
            latest[a.fingerprint] = a
        state = _roundtrip(state)
        while ci < len(checks) and checks[ci].eval_time == t:
            errs.extend(_check(checks[ci], latest, where))
            ci += 1
    return errs


def _check(chk: schema.AlertCheck, latest: dict, where: str) -> list[str]:
    got = [a for a in latest.values() if a.labels.get("alertname") == chk.alertname]
    unmatched = list(got)
    missing = []
    for exp in chk.exp_alerts:
        hit = next((a for a in unmatched if a.labels == exp.labels and a.status == exp.status
                    and all(a.annotations.get(k) == v for k, v in exp.annotations.items())), None)
        if hit is None:
            missing.append(exp)
        else:
            unmatched.remove(hit)
    if not missing and not unmatched:
        return []
    lines = [f"{where}: alertname {chk.alertname} at {format_duration(chk.eval_time)}:"]
    for e in missing:
        lines.append("    expected " + _fmt_alert(e.labels, e.status, e.annotations))
    for a in unmatched:
        lines.append("    got      " + _fmt_alert(a.labels, a.status, a.annotations))
    if missing and not unmatched:
        lines.append("    got      " + ("; ".join(_fmt_alert(a.labels, a.status, a.annotations) for a in got)
                                      if got else "nothing"))
    return ["\n".join(lines)]


def case_files(paths) -> list[Path]:
    return pack_files(paths)


@dataclass
class Report:
    """Results of a test run: per file (path, cases passed, cases failed) and every failure message."""

    files: list[tuple[str, int, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(p for _, p, _ in self.files)

    @property
    def failed(self) -> int:
        return sum(f for _, _, f in self.files)


def run_tests(paths, registry=None) -> Report:
    """Run every test file in ``paths``; a file that cannot be read or validated counts as one failure.

    Its rule files are loaded even when the file failed the schema (if ``rule_files`` itself validated), so that
    a missing or broken pack is listed with the schema's errors, not found in a second run."""
    rep = Report()
    for f in case_files(paths):
        tf, errs = parse_file(f, schema.CaseFile)
        rule_files = tf.rule_files if tf is not None else _rule_files(errs)
        rs = None
        if rule_files is not None:
            try:
                rs = load_packs([f.parent / p for p in rule_files], registry=registry)
            except ConfigError as exc:
                for e in exc.errors:
                    errs.error(("rule_files",), e)
        if tf is None or rs is None:
            rep.failures.extend(errs.errors)
            rep.files.append((str(f), 0, 1))
            continue
        known = {r.alert for r in rs.rules}
        passed = failed = 0
        for ti, case in enumerate(tf.tests):
            where = f'{f}:{errs.line_of(("tests", ti))}: test "{case.name}"'
            bad = [c.alertname for c in case.alert_rule_test if c.alertname not in known]
            if bad:
                rep.failures.append(f"{where}: alertname {json.dumps(bad[0])} is not defined in the rule files")
                failed += 1
                continue
            got = run_case(Engine(rs, registry), case, tf.evaluation_interval, where)
            if got:
                rep.failures.extend(got)
                failed += 1
            else:
                passed += 1
        rep.files.append((str(f), passed, failed))
    return rep


def _rule_files(doc) -> list[str] | None:
    """``rule_files`` of a test file that failed the schema, if that key validated (else None: reported)."""
    if not doc.readable or not isinstance(doc.data, dict):
        return None
    part, _ = valid_parts(schema.CaseFile, doc.data)
    return part.rule_files
