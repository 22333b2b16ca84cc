"""The layering rule, enforced: every module's imports (inside functions too) against README's table.

README's "may import" column is the single source of truth: this test reads it, so the table and the
code cannot drift apart.  A package imports only itself and what its row names; no module-level
import cycle exists anywhere (a cycle through function-level imports counts too).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "detectors", "rules", "alerts", "collectors", "deploy", "streams", "kubesight")


def allowed_from_readme() -> dict[str, set[str]]:
    """Rows of README's layout table: | `pkg/` | owns | may import |."""
    rows = {}
    for line in (REPO / "README.md").read_text().splitlines():
        m = re.match(r"\|\s*`(\w+)/`\s*\|.*\|\s*([^|]*)\|\s*$", line)
        if m and m.group(1) in PACKAGES:
            cell = m.group(2)
            rows[m.group(1)] = set(re.findall(r"`(\w+)/`", cell)) if "nothing" not in cell else set()
    return rows


def imports_of(path: Path) -> set[str]:
    """Every absolute import of one of our packages in the file, at any depth, as dotted module names."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from core import broker` imports core.broker when that is a module
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out.update(n for n in names if n.split(".")[0] in PACKAGES)
    return out


def modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*.py"):
            rel = p.relative_to(REPO).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found[".".join(parts)] = p
    return found


def test_readme_table_names_every_package():
    rows = allowed_from_readme()
    assert set(rows) == set(PACKAGES), f"README layout table rows: {sorted(rows)}"
    assert rows["core"] == set(), "the base package imports nothing of ours"


def test_no_package_imports_a_package_its_readme_row_does_not_allow():
    rows = allowed_from_readme()
    bad = []
    for mod, path in sorted(modules().items()):
        pkg = mod.split(".")[0]
        for imp in sorted(imports_of(path)):
            target = imp.split(".")[0]
            if target != pkg and target not in rows[pkg]:
                bad.append(f"{path.relative_to(REPO)}: imports {imp} ({pkg}/ may import: "
                           f"{', '.join(sorted(rows[pkg])) or 'nothing of ours'})")
    assert not bad, "\n".join(bad)


def test_no_import_cycle_between_modules():
    mods = modules()
    graph = {m: {i for i in imports_of(p) if i in mods and i != m} for m, p in mods.items()}
    # a package's __init__ is imported with any of its modules, but ours are docstrings only
    for p in mods.values():
        if p.name == "__init__.py":
            assert not imports_of(p), f"{p.relative_to(REPO)}: __init__ modules import nothing (no facades)"
    color: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        color[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if color.get(n) == 1:
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in color:
                visit(n)
        stack.pop()
        color[m] = 2

    for m in sorted(graph):
        if m not in color:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_rule_catches_a_violation(tmp_path):
    """The checker itself can fail: a rules/ module importing streams is reported."""
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from streams.hotpath import HotPath\n")
    assert imports_of(bad) == {"streams.hotpath", "streams.hotpath.HotPath"}
    assert "streams" not in allowed_from_readme()["rules"]
