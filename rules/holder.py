"""Hot reload: validate a new rule set, then swap the engine in one assignment; a bad pack changes nothing.

State carries over by construction: a rule's state key is its alert name plus a hash of its
match and condition, so a rule that still exists unchanged finds its groups where they were;
states of rules that are gone (or changed) are resolved and dropped by the next ``tick``.

>>> h = EngineHolder(RuleSet.empty())
>>> h.reload(["/nonexistent/pack.yaml"])[0].startswith("/nonexistent/pack.yaml:1: cannot read")
True
>>> len(h.engine.ruleset)
0
"""

from __future__ import annotations

import logging

from core.yamlconfig import ConfigError
from rules.engine import Engine
from rules.load import load_packs
from rules.ruleset import RuleSet

log = logging.getLogger("kubesight.rules")


class EngineHolder:
    """Holds the engine in force; readers take ``holder.engine`` once per record or batch."""

    __slots__ = ("engine", "_registry")

    def __init__(self, ruleset: RuleSet, registry=None):
        self._registry = registry
        self.engine = Engine(ruleset, registry)

    def swap(self, ruleset: RuleSet) -> Engine:
        """Put ``ruleset`` in force (a single reference assignment: atomic for every reader)."""
        eng = Engine(ruleset, self._registry)
        eng.evicted = self.engine.evicted  # a counter: it goes on across reloads
        self.engine = eng
        return eng

    def reload(self, paths) -> list[str]:
        """Load and swap; on any error keep the running rule set and return every error."""
        try:
            rs = load_packs(paths, registry=self._registry)
        except ConfigError as exc:
            return exc.errors
        except Exception as exc:  # noqa: BLE001 - a check with a bug refuses the version too: the running set stays
            log.exception("rule packs: the loader failed")
            return [f"the rule pack loader failed ({type(exc).__name__}: {exc})"]
        self.swap(rs)
        return []
