"""Instance id -> Kubernetes node name, through ``node.spec.providerID``: from node files or the Kubernetes API.

>>> instance_of("aws:///us-east-1b/i-04c3029e207ee2de8"), instance_of("cn-hangzhou.i-bp1ecr5go2go")
('i-04c3029e207ee2de8', 'i-bp1ecr5go2go')
>>> instance_of("alicloud://cn-hangzhou.i-bp1ecr5go2go"), instance_of("gce://proj/zone/vm-1")
('i-bp1ecr5go2go', None)
>>> nodes_from_objects({"items": [{"metadata": {"name": "n1"}, "spec": {"providerID": "aws:///us-east-1a/i-0abc1234"}}]})
{'i-0abc1234': 'n1'}
>>> nodes_from_objects({"i-0abc1234": "n1", "cn-hangzhou.i-bp1xyz": "n2"})
{'i-0abc1234': 'n1', 'i-bp1xyz': 'n2'}
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core import yamlconfig
from core.yamlconfig import path_str, shown

_PROVIDER_ID = re.compile(r"^(?:aws://[^/]*/(?:[a-z0-9-]+/)?|(?:alicloud://)?[a-z0-9-]+\.)(i-[0-9a-z]+)$")
_INSTANCE = re.compile(r"^i-[0-9a-z]+$")


class NodeMapError(ValueError):
    """A node map given on the command line (``--node``) that is not one; the message says why."""


def instance_of(provider_id: str) -> str | None:
    """The instance id inside a providerID (AWS ``aws:///zone/i-...``, Alibaba ``region.i-...``), else None."""
    m = _PROVIDER_ID.match(provider_id or "")
    return m.group(1) if m else None


def _entries(doc, error: Callable[[tuple, str], None]) -> dict[str, str]:
    """The node map of one document; each problem goes to ``error(YAML path, message)`` and the rest is still read."""
    if isinstance(doc, dict) and doc.get("kind") == "Node":
        doc = {"items": [doc]}
    out: dict[str, str] = {}
    if isinstance(doc, dict) and isinstance(doc.get("items"), list):
        for i, node in enumerate(doc["items"]):
            if not isinstance(node, dict):
                error(("items", i), f"expected a Node, got {shown(node)}")
                continue
            meta, spec = node.get("metadata"), node.get("spec")
            name = meta.get("name") if isinstance(meta, dict) else None
            inst = instance_of(str(spec.get("providerID") or "")) if isinstance(spec, dict) else None
            if name and inst:  # a node without an instance id (Fargate, another cloud) maps nothing
                out[inst] = str(name)
        return out
    if not isinstance(doc, dict):
        error((), f"expected a Node, a NodeList or a mapping {{instance id or providerID: node name}}, got {shown(doc)}")
        return out
    for key, node in doc.items():
        inst = key if _INSTANCE.match(str(key)) else instance_of(str(key))
        if not inst:
            error((key,), f"expected an instance id (i-...) or a providerID as the key, got {shown(key)}")
        if not isinstance(node, str) or not node:
            error((key,), f"expected a node name, got {shown(node)}")
        elif inst:
            out[inst] = node
    return out


def nodes_from_objects(doc) -> dict[str, str]:
    """A Node, a NodeList (``kubectl get nodes -o yaml``) or a plain ``{instance id or providerID: node}`` mapping;
    raises NodeMapError naming every bad entry."""
    problems: list[str] = []
    out = _entries(doc, lambda loc, message: problems.append(f"{path_str(loc)}: {message}" if loc else message))
    if problems:
        raise NodeMapError("\n".join(problems))
    return out


def load_node_files(paths) -> dict[str, str]:
    """Node map from YAML/JSON files (a folder: every *.yaml, *.yml, *.json in it), read by the strict config loader:
    raises ConfigError listing every problem of every file (``file:line: yaml.path: message``)."""
    out: dict[str, str] = {}
    docs: list[yamlconfig.Document] = []
    for p in map(Path, paths):
        files = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml", ".json")) if p.is_dir() else [p]
        for f in files:
            doc = yamlconfig.read(f)
            docs.append(doc)
            if doc.readable and doc.data is not None:  # an empty file maps nothing
                out.update(_entries(doc.data, doc.error))
    yamlconfig.raise_for(docs)
    return out


def kubernetes_lister(api_client) -> Callable[[], dict[str, str]]:
    """A function listing the cluster's nodes with the official client."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)

    def list_nodes() -> dict[str, str]:
        out = {}
        for node in core.list_node(_request_timeout=10).items:
            inst = instance_of(node.spec.provider_id or "") if node.spec else None
            if inst:
                out[inst] = node.metadata.name
        return out

    return list_nodes


class NodeMap:
    """Static entries plus an optional lister, re-listed every ``refresh`` seconds and, at most once per
    ``min_interval`` seconds, when an instance is not known (a node that joined since the last listing)."""

    def __init__(self, static: dict[str, str] | None = None, lister: Callable[[], dict[str, str]] | None = None,
                 refresh: float = 300.0, min_interval: float = 30.0, clock=time.monotonic):
        self.static = dict(static or {})
        self.lister = lister
        self.refresh = refresh
        self.min_interval = min_interval
        self.clock = clock
        self.listed: dict[str, str] = {}
        self.listed_at: float | None = None
        self.errors = 0
        self._lock = threading.Lock()
        self._merged: dict[str, str] | None = None

    def snapshot(self) -> dict[str, str]:
        """The current map (static entries win); rebuilt only when a listing changes it."""
        if self._merged is None:
            self._merged = self.listed | self.static
        return self._merged

    def due(self, missing: bool) -> bool:
        if self.lister is None:
            return False
        if self.listed_at is None:
            return True
        age = self.clock() - self.listed_at
        return age >= self.refresh or (missing and age >= self.min_interval)

    def relist(self, missing: bool | None = None) -> None:
        """List nodes now (blocking; run it in a thread from async code). A failure keeps the last map.

        With ``missing`` given, list only if still due: concurrent requests that all saw the map as stale
        cause one listing, not one each."""
        with self._lock:
            if missing is not None and not self.due(missing):
                return
            self.listed_at = self.clock()
            try:
                self.listed = self.lister()
                self._merged = None
            except Exception as exc:  # noqa: BLE001 - any API failure: keep the old map, count it, try again later
                self.errors += 1
                logging.getLogger("kubesight.cloud").warning("listing nodes failed (%s); keeping %d known nodes",
                                                             exc, len(self.listed))
