"""YAML with positions: the data plus a map from YAML path to line, for error messages."""

from __future__ import annotations

import yaml


class YamlError(ValueError):
    """A file that is not valid YAML; ``line`` is 1-based."""

    def __init__(self, line: int, msg: str):
        super().__init__(msg)
        self.line = line


def path_str(loc) -> str:
    """``("rules", 3, "for")`` -> ``"rules[3].for"``.

    >>> path_str(("rules", 3, "match", "matchers", 0))
    'rules[3].match.matchers[0]'
    """
    out = ""
    for p in loc:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def load(text: str) -> tuple[object, dict[tuple, int], list[tuple[int, tuple, str]]]:
    """Parse one YAML document -> (data, {path: line}, [(line, path, duplicate-key error)]).

    >>> data, lines, dups = load("a: 1\\nb:\\n  - x\\n  - y\\n")
    >>> lines[("b", 1)], dups
    (4, [])
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {(): 1}, []
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlError(line, f"YAML syntax error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlError(1, f"YAML error: {exc}") from None
    finally:
        loader.dispose()
    lines: dict[tuple, int] = {}
    dups: list[tuple[int, tuple, str]] = []
    _walk(node, (), lines, dups)
    return data, lines, dups


def _walk(node, path: tuple, lines: dict, dups: list) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
            p = path + (key,)
            if key in seen:
                dups.append((k.start_mark.line + 1, p, f'duplicate key "{key}" (first at line {seen[key]})'))
                continue
            seen[key] = k.start_mark.line + 1
            lines[p] = k.start_mark.line + 1
            _walk(v, p, lines, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _walk(v, path + (i,), lines, dups)
