"""Classification accuracy on labelled kernel logs (syzkaller's ``TITLE:/TYPE:``-headed crash reports).

A file is scored right when the FIRST crash-class event it yields (hang, oops, panic, warning)
has a reason in the family of the file's ``TYPE`` (or, for an empty TYPE, of its title), and
a file without ``TITLE`` is right when it yields no crash-class event.

>>> family("HANG", "")
('RCUStall', 'SoftLockup', 'TaskHung', 'HardLockup', 'DockerHung', 'AUFSUmountHung')
>>> family("", "WARNING: kernel stack regs has bad value")
('KernelWarning',)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from collectors.kernel.classify import Classifier
from collectors.kernel.lines import LineError, parse_line
from collectors.kernel.patterns import PatternSet

HANG = ("RCUStall", "SoftLockup", "TaskHung", "HardLockup", "DockerHung", "AUFSUmountHung")
OOPS = ("KernelOops",)
CRASH_FAMILIES = ("hang", "oops", "panic", "warning")
TYPE_FAMILY = {
    "HANG": HANG,
    "WARNING": ("KernelWarning",),
    "REFCOUNT_WARNING": ("KernelWarning",),
    "LOCKDEP": ("KernelWarning", "KernelOops", "SoftLockup"),  # lock debugging prints WARNING: or BUG:
    "ATOMIC_SLEEP": ("KernelOops", "KernelWarning"),
    "DoS": ("KernelOops", "KernelPanic"),
    "SYZ_FAILURE": ("KernelOops", "KernelPanic", "KernelWarning") + HANG,
}
ANY_CRASH = ("KernelOops", "KernelPanic", "KernelWarning") + HANG


def family(type_: str, title: str) -> tuple[str, ...]:
    """Reasons that count as right for a syzkaller TYPE (or, if empty, its title)."""
    if type_ in TYPE_FAMILY:
        return TYPE_FAMILY[type_]
    if type_:  # BUG, NULL-POINTER-DEREFERENCE, MEMORY_SAFETY_BUG, KASAN-*, KMSAN-*, KFENCE-*, KCSAN-*, UBSAN, LEAK
        return OOPS
    if title.startswith(("INFO: task hung", "INFO: rcu detected stall", "BUG: soft lockup")):
        return HANG
    if title.startswith(("WARNING", "INFO: trying to register non-static key")):
        return ("KernelWarning",)
    if title.startswith(("BUG", "INFO: Freed", "KASAN", "general protection")):
        return OOPS
    return ANY_CRASH


@dataclass(slots=True)
class Result:
    file: str
    title: str
    type: str
    expected: tuple[str, ...]
    got: str  # reason of the first crash-class event, "" if none
    ok: bool
    events: int


def read_report(path: Path) -> tuple[dict, list[str]]:
    """syzkaller test file -> (header fields, console lines)."""
    text = path.read_bytes().decode("utf-8", "replace")
    head, _, body = text.partition("\n\n")
    fields = {}
    for ln in head.splitlines():
        k, sep, v = ln.partition(": ")
        if sep and k.isupper():
            fields[k] = v.strip()
        elif ln.rstrip(":").isupper() and ln.endswith(":"):
            fields[ln[:-1]] = ""
    return fields, body.splitlines()


def classify_lines(patterns: PatternSet, lines: list[str]) -> list:
    c = Classifier(patterns, node="bench", source_id="bench")
    events = []
    for i, raw in enumerate(lines, 1):
        try:
            ln = parse_line(raw)
        except LineError:
            continue
        events.extend(c.feed(ln, i))
    events.extend(c.flush())
    events.sort(key=lambda e: int(e.labels.get("line") or e.labels.get("seq") or 0))
    return events


def score(patterns: PatternSet, corpus: Path) -> tuple[list[Result], int, float]:
    """Every report file under ``corpus``/report -> results, lines parsed, seconds spent classifying."""
    results, nlines, spent = [], 0, 0.0
    files = sorted((corpus / "report").iterdir(), key=lambda p: (len(p.name), p.name))
    for f in files:
        fields, lines = read_report(f)
        title, type_ = fields.get("TITLE", ""), fields.get("TYPE", "")
        t0 = time.perf_counter()
        events = classify_lines(patterns, lines)
        spent += time.perf_counter() - t0
        nlines += len(lines)
        crash = [e for e in events if e.labels.get("family") in CRASH_FAMILIES]
        got = crash[0].reason if crash else ""
        expected = family(type_, title) if title else ()
        ok = (got in expected) if title else not crash
        results.append(Result(f.name, title, type_, expected, got, ok, len(events)))
    return results, nlines, spent
