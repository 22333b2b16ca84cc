"""Keep/drop of scraped samples by name or label values, with anchored regexes (Prometheus semantics).

>>> from collectors.metrics.config import Relabel
>>> keep = compile_rules([Relabel(action="drop", regex="go_.*"),
...                       Relabel(action="keep", source_labels=["__name__", "code"], regex="http_requests_total;5..|up;.*")])
>>> keep("go_goroutines", {}), keep("http_requests_total", {"code": "500"}), keep("http_requests_total", {"code": "1500"})
(False, True, False)
>>> keep("up", {})
True
"""

from __future__ import annotations

from core.matchers import full_match


def compile_rules(rules) -> callable:
    """Rules (``config.Relabel``) -> ``keep(name, labels) -> bool``; all rules must pass, in order."""
    compiled = [(r.action == "keep", full_match(r.regex), tuple(r.source_labels), r.separator) for r in rules]
    if not compiled:
        return lambda name, labels: True

    def keep(name: str, labels: dict) -> bool:
        for is_keep, rx, sources, sep in compiled:
            if len(sources) == 1:
                s = sources[0]
                value = name if s == "__name__" else labels.get(s, "")
            else:
                value = sep.join(name if s == "__name__" else labels.get(s, "") for s in sources)
            if rx(value) != is_keep:
                return False
        return True

    return keep
