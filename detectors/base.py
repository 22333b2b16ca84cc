"""The detector contract: learn_one / score_one, params under their own names, JSON snapshots."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar


class Detector:
    """An online anomaly detector for one series (or one multivariate entity).

    - ``score_one(x, t)`` -> a float in [0, 1] (higher = more anomalous) or ``None`` while
      warming up; it does not change the detector.
    - ``learn_one(x, t)`` updates the detector with the observation (call it after scoring).
    - parameters are the ``__init__`` arguments, kept as attributes of the same names.
    - ``snapshot()`` is a JSON-serialisable dict holding the registry name, the parameters and
      the state; ``type(d).restore(snapshot)`` (or ``registry.restore``) rebuilds an equal detector.

    - ``input`` says what ``x`` is: ``"value"`` (one float: a sample's value) or ``"vector"``
      (a dict of floats: one entity's metrics). Rule packs check it at load.

    Subclasses set ``name`` and ``input`` and implement ``_state`` / ``_load``.
    """

    INPUTS: ClassVar[tuple[str, ...]] = ("value", "vector")
    name: ClassVar[str] = ""
    input: ClassVar[str] = ""

    def learn_one(self, x, t: float | None = None) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def score_one(self, x, t: float | None = None) -> float | None:  # pragma: no cover - interface
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The ``__init__`` arguments as given (river's convention: attributes of the same names)."""
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    def _state(self) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def _load(self, state: dict[str, Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any]:
        return {"detector": self.name, "params": self.params(), "state": self._state()}

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> Detector:
        if snapshot.get("detector") != cls.name:
            raise ValueError(f"snapshot is of detector {snapshot.get('detector')!r}, not {cls.name!r}")
        d = cls(**snapshot["params"])
        d._load(snapshot["state"])
        return d

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def build_from(classes: dict[str, type[Detector]], name: str, params: dict[str, Any] | None = None) -> Detector:
    """``classes[name](**params)``; ValueError listing what is valid on an unknown name or bad params."""
    cls = classes.get(name)
    if cls is None:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(sorted(classes))}")
    params = dict(params or {})
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"detector {name!r}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    try:
        return cls(**params)
    except (TypeError, ValueError, KeyError, AttributeError) as e:  # parameters of the wrong shape, however they fail
        raise ValueError(f"detector {name!r}: bad parameters {params}: {e}") from None
