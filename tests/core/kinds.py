"""Every config kind, each with a valid file and its real loader (shared by the loader's tests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core import yamlconfig
from core.yamlconfig import ConfigError


@dataclass(frozen=True)
class Kind:
    valid: str
    load: Callable[[Path], object]  # raises ConfigError


def _model(name: str):
    def load(path: Path):
        import importlib

        module, cls = name.rsplit(".", 1)
        return yamlconfig.load(path, getattr(importlib.import_module(module), cls))
    return load


KINDS = {
    "rules": Kind("apiVersion: kubesight.io/v1\nkind: RulePack\nmetadata: {name: t, version: '1'}\nrules:\n"
                  "  - alert: A\n    match: {source: k8s, reason: BackOff}\n    condition: {type: event_count}\n",
                  _model("rules.schema.RulePack")),
    "routing": Kind("route:\n  receiver: r\nreceivers:\n  - name: r\n", _model("alerts.config.RoutingConfig")),
    "settings": Kind("partitions: 4\n", _model("core.settings.Settings")),
    "metrics": Kind("targets:\n  - job: api\n    url: http://a:1/metrics\n", _model("collectors.metrics.config.MetricsConfig")),
    "kernel": Kind("version: 1\npatterns:\n  - {id: a, reason: A, severity: info, match: 'a', examples: ['a']}\n",
                   _model("collectors.kernel.patterns.PatternFile")),
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
