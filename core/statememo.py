"""In-memory companions of a state store: one per store, gone with it, never saved.

The rule engine keeps which groups a scan may skip, the derived stage which series are due; both are
derived from the state alone, so a restored or new store simply builds its own again.

>>> memo = PerState(lambda state: {"built from": len(state)})
>>> a = {"k": 1}
>>> memo(a) is memo(a), memo(a)
(True, {'built from': 1})
>>> memo({}) is memo(a)
False
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any


class PerState:
    """``memo(state)``: the value ``build(state)`` made for this very store (not one that reuses its id).

    A store that takes weak references (the worker's) drops its value when it goes (a revoked or rewound
    partition); a plain dict (tests) keeps it for the memo's lifetime."""

    __slots__ = ("_build", "_by")

    def __init__(self, build: Callable[[Any], Any]):
        self._build = build
        self._by: dict[int, tuple] = {}  # id(state) -> (reference to the state, value)

    def __call__(self, state):
        entry = self._by.get(id(state))
        if entry is not None and entry[0]() is state:
            return entry[1]
        value = self._build(state)
        try:
            ref = weakref.ref(state)
            weakref.finalize(state, self._by.pop, id(state), None)
        except TypeError:
            ref = (lambda st: lambda: st)(state)
        self._by[id(state)] = (ref, value)
        return value
