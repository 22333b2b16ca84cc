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

from collections.abc import Iterator, MutableMapping

import orjson


class Store(MutableMapping):
    __slots__ = ("_data", "_dirty", "__weakref__")

    def __init__(self) -> None:
        self._data: dict[str, object] = {}
        self._dirty: set[str] = set()

    # -- mapping protocol
    def __getitem__(self, key: str):
        return self._data[key]

    def get(self, key: str, default=None):
        return self._data.get(key, default)

    def __setitem__(self, key: str, value) -> None:
        self._data[key] = value
        self._dirty.add(key)

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._dirty.add(key)

    def __contains__(self, key) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    # -- changelog
    def restore(self, key: bytes, value: bytes | None) -> None:
        """Apply one changelog record (None = tombstone) without marking it dirty."""
        k = key.decode()
        if value is None:
            self._data.pop(k, None)
        else:
            self._data[k] = orjson.loads(value)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def flush_items(self) -> list[tuple[bytes, bytes | None]]:
        """Changed keys since the last flush, encoded for the changelog; clears the dirty set."""
        out = []
        for k in self._dirty:
            if k in self._data:
                v = self._data[k]
                snap = getattr(v, "snapshot", None)
                out.append((k.encode(), orjson.dumps(snap() if snap else v, option=orjson.OPT_SERIALIZE_NUMPY)))
            else:
                out.append((k.encode(), None))
        self._dirty.clear()
        return out
