"""Every config kind, each with a valid file and its real loader (the one production uses)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.yamlconfig import ConfigError


@dataclass(frozen=True)
class Kind:
    valid: str
    load: Callable[[Path], object]  # raises ConfigError


def _rules(path: Path):
    from rules.load import load_packs

    return load_packs([path])


def _routing(path: Path):
    from alerts.config import load

    return load(path)


def _settings(path: Path):
    from core.settings import Settings

    return Settings.load(path)


def _metrics(path: Path):
    from collectors.metrics.config import load

    return load(str(path))


def _kernel(path: Path):
    from collectors.kernel.patterns import load_patterns

    return load_patterns(path, defaults_file=False)


def _silences(path: Path):
    from alerts.silences import load_file

    return load_file(path)


KINDS = {
    "rules": Kind("apiVersion: kubesight.io/v1\nkind: RulePack\nmetadata: {name: t, version: '1'}\nrules:\n"
                  "  - alert: A\n    match: {source: k8s, reason: BackOff}\n    condition: {type: event_count}\n",
                  _rules),
    "routing": Kind("route:\n  receiver: r\nreceivers:\n  - name: r\n", _routing),
    "settings": Kind("partitions: 4\n", _settings),
    "metrics": Kind("targets:\n  - job: api\n    url: http://a:1/metrics\n", _metrics),
    "kernel": Kind("version: 1\npatterns:\n  - {id: a, reason: A, severity: info, match: 'a', examples: ['a']}\n",
                   _kernel),
    "silences": Kind("name: maint\n", _silences),  # no silence: the cases below append the silences key
}


def load_errors(kind: str, text: str | None, tmp_path: Path) -> list[str]:
    """The errors of loading ``text`` as ``f.yaml`` (None: no file), file names relative to tmp_path."""
    path = tmp_path / "f.yaml"
    if text is not None:
        path.write_text(text)
    try:
        KINDS[kind].load(path)
    except ConfigError as exc:
        return [e.replace(f"{tmp_path}/", "") for e in exc.errors]
    return []
