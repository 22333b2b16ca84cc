"""Silences: matchers over a time window, with author and comment; Alertmanager's v2 API shape on the wire.

Every worker keeps all silences (they live in the compacted ``silences`` topic keyed by id), so
any worker can decide whether an alert is muted.

>>> s = Silence.create({"matchers": [{"name": "namespace", "value": "shop", "isRegex": False}],
...                     "startsAt": "2021-08-03T10:00:00Z", "endsAt": "2021-08-03T12:00:00Z",
...                     "createdBy": "ana", "comment": "load test"}, now=1627984800.0, id="s1")
>>> book = Silences(); book.put(s)
>>> book.muting({"namespace": "shop", "alertname": "X"}, now=1627984900.0)
['s1']
>>> book.muting({"namespace": "shop"}, now=1627992001.0)   # after endsAt
[]
>>> s.state(1627980000.0), s.state(1627984900.0), s.state(1627992001.0)
('pending', 'active', 'expired')
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.matchers import Matcher, MatcherError, matches_all
from core.records import format_time, parse_time


class SilenceError(ValueError):
    """A silence that is not valid (the message lists every problem)."""


class MatcherIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    value: str
    isRegex: bool = False
    isEqual: bool = True


class SilenceIn(BaseModel):
    """What a client posts (Alertmanager's PostableSilence)."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    matchers: list[MatcherIn] = Field(min_length=1)
    startsAt: str
    endsAt: str
    createdBy: str = Field(min_length=1)
    comment: str = Field(min_length=1)

    @field_validator("startsAt", "endsAt")
    @classmethod
    def _time(cls, v: str) -> str:
        parse_time(v)
        return v


@dataclass(slots=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    startsAt: float
    endsAt: float
    createdBy: str
    comment: str
    updatedAt: float

    @classmethod
    def create(cls, data: dict, now: float, id: str | None = None) -> Silence:
        """Validate a posted silence (Alertmanager's JSON shape); raises SilenceError with every problem."""
        try:
            body = SilenceIn.model_validate(data)
        except ValidationError as exc:
            msgs = [f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()]
            raise SilenceError("; ".join(msgs)) from None
        ms = []
        for i, x in enumerate(body.matchers):
            try:
                ms.append(Matcher.from_api(x.model_dump()))
            except MatcherError as exc:
                raise SilenceError(f"matchers.{i}: {exc}") from None
        starts, ends = parse_time(body.startsAt), parse_time(body.endsAt)
        if ends <= starts:
            raise SilenceError("endsAt must be after startsAt")
        if ends <= now:
            raise SilenceError("endsAt is in the past")
        if all(x.matches({}) for x in ms):
            raise SilenceError("matchers would match every alert (at least one must not match an empty label set)")
        return cls(body.id or id or str(uuid.uuid4()), tuple(ms), max(starts, now) if body.id else starts, ends,
                   body.createdBy, body.comment, now)

    def state(self, now: float) -> str:
        return "pending" if now < self.startsAt else "active" if now < self.endsAt else "expired"

    def mutes(self, labels: dict, now: float) -> bool:
        return self.startsAt <= now < self.endsAt and matches_all(self.matchers, labels)

    def to_dict(self, now: float | None = None) -> dict:
        d = {
            "id": self.id,
            "matchers": [x.to_api() for x in self.matchers],
            "startsAt": format_time(self.startsAt),
            "endsAt": format_time(self.endsAt),
            "createdBy": self.createdBy,
            "comment": self.comment,
            "updatedAt": format_time(self.updatedAt),
        }
        if now is not None:
            d["status"] = {"state": self.state(now)}
        return d

    def encode(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def decode(cls, payload: bytes) -> Silence:
        d = orjson.loads(payload)
        ms = tuple(Matcher.from_api(x) for x in d["matchers"])
        return cls(d["id"], ms, parse_time(d["startsAt"]), parse_time(d["endsAt"]), d["createdBy"],
                   d["comment"], parse_time(d.get("updatedAt") or d["startsAt"]))


class Silences:
    """All known silences by id (kept in memory: a silence is small and there are few)."""

    def __init__(self) -> None:
        self.by_id: dict[str, Silence] = {}

    def put(self, s: Silence) -> None:
        self.by_id[s.id] = s

    def apply(self, key: bytes, value: bytes | None) -> None:
        """One record of the silences topic (None: tombstone)."""
        if value is None:
            self.by_id.pop(key.decode(), None)
        else:
            self.put(Silence.decode(value))

    def muting(self, labels: dict, now: float) -> list[str]:
        return [s.id for s in self.by_id.values() if s.mutes(labels, now)]

    def expire(self, id: str, now: float) -> Silence:
        """End a silence now (kept, so ``list`` shows it as expired); KeyError when unknown."""
        s = self.by_id[id]
        if s.endsAt > now:
            s.endsAt = max(now, s.startsAt)
            s.updatedAt = now
        return s

    def list(self, now: float, state: str | None = None) -> list[Silence]:
        out = [s for s in self.by_id.values() if state is None or s.state(now) == state]
        return sorted(out, key=lambda s: (s.state(now) != "active", s.endsAt))
