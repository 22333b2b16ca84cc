"""Per-partition state: a dict that remembers what changed so it can be written to the changelog.

The hot path (``streams.hotpath``) keeps one ``Store`` per input partition.  Pure code in
``rules/``, ``detectors/`` and ``alerts/`` sees it only as a mutable mapping, so a plain
``dict`` serves in their unit tests.  Two rules, as with Faust tables:

* values must be JSON-serialisable by orjson, or have a ``snapshot()`` method returning such a
  value; after a restore the raw snapshot comes back, and the owner rebuilds its object;
* a value changed in place is not saved until it is assigned back (``store[k] = v``).

>>> s = Store()
>>> s["rule|a"] = {"n": 1}
>>> s.flush_items()
[(b'rule|a', b'{"n":1}')]
>>> del s["rule|a"]; s.flush_items()
[(b'rule|a', None)]
>>> s.flush_items()
[]
"""

from __future__ import annotations

import orjson


class Store(dict):
    """A dict (reads at C speed: the hot path reads state for every signal) whose writes are tracked.

    Every way to change it marks the key dirty: assignment, ``del``, ``pop``, ``popitem``,
    ``setdefault``, ``update``, ``|=`` and ``clear``.
    """

    __slots__ = ("_dirty", "__weakref__")

    def __init__(self) -> None:
        super().__init__()
        self._dirty: set[str] = set()

    def __setitem__(self, key: str, value) -> None:
        dict.__setitem__(self, key, value)
        self._dirty.add(key)

    def __delitem__(self, key: str) -> None:
        dict.__delitem__(self, key)
        self._dirty.add(key)

    _MISSING = object()

    def pop(self, key, default=_MISSING):
        if key in self:
            self._dirty.add(key)
            return dict.pop(self, key)
        if default is Store._MISSING:
            raise KeyError(key)
        return default

    def popitem(self):
        k, v = dict.popitem(self)
        self._dirty.add(k)
        return k, v

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    def update(self, *args, **kw) -> None:
        for k, v in dict(*args, **kw).items():
            self[k] = v

    def __ior__(self, other):
        self.update(other)
        return self

    def clear(self) -> None:
        self._dirty.update(self.keys())
        dict.clear(self)

    # -- changelog
    def restore(self, key: bytes, value: bytes | None) -> None:
        """Apply one changelog record (None = tombstone) without marking it dirty."""
        k = key.decode()
        if value is None:
            dict.pop(self, k, None)
        else:
            dict.__setitem__(self, k, orjson.loads(value))

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def flush_items(self) -> list[tuple[bytes, bytes | None]]:
        """Changed keys since the last flush, encoded for the changelog; clears the dirty set."""
        out = []
        for k in self._dirty:
            if k in self:
                v = dict.__getitem__(self, k)
                snap = getattr(v, "snapshot", None)
                out.append((k.encode(), orjson.dumps(snap() if snap else v, option=orjson.OPT_SERIALIZE_NUMPY)))
            else:
                out.append((k.encode(), None))
        self._dirty.clear()
        return out
