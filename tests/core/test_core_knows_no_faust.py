"""The base layer (core/) imports nothing of the layers above nor their libraries: Faust is the stream layer's
(streams/).  core.kafkaclient imported ``faust.auth`` for the "faust" flavour of ``client_config`` (an audit); it
now gives plain values that ``streams.app`` makes Faust's credentials."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"


def faust_imports(source: str) -> list[str]:
    """Where ``source`` imports faust (line: name): ``import faust...``, ``from faust... import``, and
    ``import_module("faust...")`` / ``__import__("faust...")``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        names: list = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            f = node.func
            if (f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)) in ("import_module", "__import__"):
                names = [node.args[0].value]
        out += [f"{node.lineno}: {n}" for n in names if isinstance(n, str) and n.split(".")[0] == "faust"]
    return out


def test_core_imports_no_faust():
    files = sorted(CORE.rglob("*.py"))
    assert (CORE / "kafkaclient.py") in files
    found = [f"{f.relative_to(CORE.parent)}:{line}" for f in files for line in faust_imports(f.read_text())]
    assert found == []


def test_the_check_sees_each_form():
    forms = ["import faust", "import faust.auth as fa", "from faust.auth import SSLCredentials",
             "def f():\n    import faust", "importlib.import_module('faust.auth')", "__import__('faust')",
             "import faustish", "from core import faust_like", "from . import faust"]
    assert [bool(faust_imports(text)) for text in forms] == [True] * 6 + [False] * 3
