"""Alertmanager's Go templates in message fields, run by Alertmanager's own template package.

A routing file copied from Alertmanager often sets ``text: '{{ template "slack.default.text" . }}'`` or its
own ``{{ define }}`` in the files of ``templates:``.  Rather than a second implementation of Go's
text/template and of Alertmanager's functions and data, kubesight runs the real one: ``deploy/amtemplate``
is a small Go program over ``github.com/prometheus/alertmanager/template`` (with its default.tmpl and
email.tmpl), built once from the Go module proxy into ``~/.cache/kubesight/amtemplate`` (``make amtemplate``
or ``python -m alerts.gotemplate build``, ~15 s; ``$KUBESIGHT_AMTEMPLATE`` names another binary).  Each
process starts one helper when it first needs it and talks to it over a pipe (one JSON line each way,
~70 µs a field with three alerts, measured on a loaded 2-core box).

Without the helper a Go template is not run: the loader warns and the field keeps kubesight's default text.
With it, a template that does not parse is an error at load (``file:line: path: template: ...``), and
one that fails when run (``index .Alerts 5``) falls back to kubesight's default text for that field,
with a warning, so the notification still goes out.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import select
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import orjson

log = logging.getLogger("kubesight.alerts.gotemplate")

SOURCE = Path(__file__).resolve().parents[1] / "deploy" / "amtemplate"
NAME = "kubesight-amtemplate"
ANSWER_WITHIN = 5.0  # seconds: a template that loops for ever, or a helper that hangs, is killed after this


class GoText(str):
    """A message field that is a Go template: the template files (globs) of its routing file, whether it is
    HTML (``email_configs.html``: Alertmanager escapes it as html/template does), and the kubesight template
    (``alerts.payload.MessageTemplate``) sent instead if it fails when run."""

    files: tuple[str, ...] = ()
    html: bool = False
    fallback: str = "$title"

    @classmethod
    def of(cls, text: str, files, html: bool = False, fallback: str | None = None) -> GoText:
        out = cls(text)
        out.files, out.html = tuple(files), html
        if fallback is not None:
            out.fallback = fallback
        return out


class TemplateError(Exception):
    """A Go template failed when run (Alertmanager's message), or the helper is missing or stopped."""


def is_go(text) -> bool:
    return isinstance(text, str) and "{{" in text


def helper_path() -> Path:
    """Where the helper is: ``$KUBESIGHT_AMTEMPLATE``, else the cache entry of these very sources."""
    return _helper_path(os.environ.get("KUBESIGHT_AMTEMPLATE"), os.environ.get("KUBESIGHT_AMTEMPLATE_CACHE"))


@functools.lru_cache(maxsize=8)  # asked on every rendered field: the sources are hashed once per setting
def _helper_path(given: str | None, cache: str | None) -> Path:
    if given:
        return Path(given)
    h = hashlib.blake2b(digest_size=8)
    for name in ("go.mod", "go.sum", "main.go"):
        h.update((SOURCE / name).read_bytes())
    return Path(cache or Path.home() / ".cache" / "kubesight" / "amtemplate") / h.hexdigest() / NAME


def available() -> bool:
    try:
        return os.access(helper_path(), os.X_OK)
    except OSError:
        return False


def build(quiet: bool = False) -> Path:
    """Build the helper from the Go module proxy unless it is built already; returns its path."""
    out = helper_path()
    if os.access(out, os.X_OK):
        return out
    if not shutil.which("go"):
        raise RuntimeError("Go is not installed: install Go >= 1.26 (https://go.dev/dl) to run Alertmanager's Go "
                           "templates (kubesight's own message fields work without it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{NAME}.{os.getpid()}")
    env = dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN="local", GOWORK="off")
    if not quiet:
        print(f"building {NAME} (Alertmanager's template package) into {out.parent} (once, ~15 s)", file=sys.stderr)
    proc = subprocess.run(["go", "build", "-trimpath", "-o", str(tmp), "."], cwd=SOURCE, env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{NAME} build failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
    tmp.replace(out)  # atomic: a concurrent build or reader never sees half a binary
    return out


class _Helper:
    """One helper process for this process, started when first asked; restarted if it died."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def ask(self, request: dict) -> dict:
        line = orjson.dumps(request) + b"\n"
        with self.lock:
            for attempt in (1, 2):
                if self.proc is None or self.proc.poll() is not None:
                    self.proc = subprocess.Popen([str(helper_path())], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                 stderr=subprocess.DEVNULL)
                try:
                    self.proc.stdin.write(line)
                    self.proc.stdin.flush()
                    # never wait on it for long: delivery runs on an event loop, and a helper that hangs must not
                    # stop it for good (the field's kubesight default is sent instead)
                    ready, _, _ = select.select([self.proc.stdout], [], [], ANSWER_WITHIN)
                    answer = self.proc.stdout.readline() if ready else b""
                except (BrokenPipeError, OSError):
                    answer = b""
                if answer:
                    return orjson.loads(answer)
                self.proc.kill()
                try:
                    self.proc.wait(1.0)  # reaped, not left a zombie
                except subprocess.TimeoutExpired:
                    pass
                self.proc = None
                if attempt == 2:
                    raise RuntimeError(f"{NAME} did not answer within {ANSWER_WITHIN:g} s")
        raise AssertionError("unreachable")


_HELPER = _Helper()


def check(texts: list[str], files) -> list[str]:
    """The parse error of each text ("" when it parses), with the template files ``files`` (globs) loaded."""
    return _HELPER.ask({"files": list(files), "check": list(texts)})["errors"]


def render(text: GoText, note: dict, external_url: str) -> str:
    """``text`` run on one notification by Alertmanager's template package; TemplateError if it fails."""
    if not available():
        raise TemplateError(f"{NAME} is not built (make amtemplate)")
    kind = "html" if text.html else "text"
    try:
        got = _HELPER.ask({"files": list(text.files), "external_url": external_url, kind: {"f": str(text)},
                           "note": {"receiver": note["receiver"], "groupLabels": note.get("groupLabels") or {},
                                    "alerts": [{"labels": a["labels"], "annotations": a.get("annotations") or {},
                                                "startsAt": a["startsAt"], "endsAt": a.get("endsAt"),
                                                "generatorURL": a.get("generatorURL") or ""}
                                               for a in note["alerts"]]}})
    except (RuntimeError, OSError) as exc:
        raise TemplateError(str(exc)) from None
    if "f" in (got.get("errors") or {}):
        raise TemplateError(got["errors"]["f"])
    return got["out"]["f"]


if __name__ == "__main__":  # python -m alerts.gotemplate build
    if sys.argv[1:] != ["build"]:
        sys.exit("usage: python -m alerts.gotemplate build")
    try:
        print(build())
    except RuntimeError as exc:
        sys.exit(str(exc))
