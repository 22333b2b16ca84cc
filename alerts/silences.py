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

import math
import re
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from core import yamlconfig
from core.durations import Duration
from core.matchers import Matcher, MatcherError, Matchers, matches_all
from core.records import TIME_MAX, Alert, RecordError, format_time, parse_time


class SilenceError(ValueError):
    """A silence that is not valid (the message lists every problem)."""


LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # Alertmanager 0.25's silence label names (validateMatcher)


def check_label_name(name: str) -> str:
    """A silence's label name as Alertmanager 0.25 takes it: stricter than ``core.matchers``, whose parser also reads
    routing files, where Alertmanager accepts a ``:`` (a silence with ``a:b`` is a 400 there)."""
    if not LABEL_NAME.match(name):
        raise ValueError(f"invalid label name {name!r} (letters, digits and _, not starting with a digit)")
    return name


class MatcherIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    value: str
    isRegex: bool = False
    isEqual: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_label_name(v)


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
        # a new silence starting in the past starts now (Alertmanager's Set); one posted with an id keeps its start
        # as sent: ``Silences.posted`` decides whether it updates that silence in place or replaces it
        return cls(body.id or id or str(uuid.uuid4()), tuple(ms), starts if body.id else max(starts, now), ends,
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


# ---------------------------------------------------------------- silences as code

_TAG = re.compile(r" \[silences apply (?P<set>[A-Za-z0-9._-]+)/(?P<id>[A-Za-z0-9._-]+)\]$")
_NAME = r"^[A-Za-z0-9._-]+$"


def _when(v) -> float:
    """A time in a silences file: RFC 3339 text, or what YAML made of an unquoted one (``parse_time`` takes both;
    an epoch number is refused here: a file says when in words)."""
    try:
        if isinstance(v, str | datetime):
            return parse_time(v)
    except (RecordError, ValueError):
        pass
    raise ValueError(f"invalid time {v!r} (use RFC 3339, e.g. 2026-12-01T22:00:00Z)")


class SilenceSpec(BaseModel):
    """One silence of a file: ``id`` is yours (its identity across applies), the rest as ``silences add``."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=_NAME)
    matchers: Matchers = Field(min_length=1)
    comment: str = Field(min_length=1)
    created_by: str = Field("kubesight silences apply", min_length=1)
    starts: Annotated[float, BeforeValidator(_when)] | None = None  # default: when first applied
    ends: Annotated[float, BeforeValidator(_when)] | None = None
    duration: Duration | None = None  # from starts: instead of ends

    @model_validator(mode="after")
    def _window(self) -> SilenceSpec:
        if (self.ends is None) == (self.duration is None):
            raise ValueError("set exactly one of ends and duration")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration must be > 0")
        if self.duration is not None and self.starts is not None and self.starts + self.duration > TIME_MAX:
            # its end is written as RFC 3339 when applied: refused here, before any silence of the set is written
            raise ValueError("starts + duration ends after the year 9999")
        if self.ends is not None and self.starts is not None and self.ends <= self.starts:
            raise ValueError("ends must be after starts")
        if all(m.matches({}) for m in self.matchers):
            raise ValueError("matchers would match every alert (at least one must not match an empty label set)")
        for m in self.matchers:  # written to the same topic as the API's silences: the same names
            check_label_name(m.name)
        return self


class SilenceFile(BaseModel):
    """A set of silences kept as code (``kubesight silences apply FILE``): the file says which silences of the set
    exist; applying it creates, updates and ends silences until the topic says the same."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_NAME)
    silences: list[SilenceSpec] = []


def load_file(path) -> SilenceFile:
    """The strict loader's ``file:line: yaml.path: message`` for every problem (``core.yamlconfig``)."""
    doc = yamlconfig.read(path)
    got = doc.validate(SilenceFile)
    if got is not None:
        seen: dict[str, int] = {}
        for i, spec in enumerate(got.silences):
            if spec.id in seen:
                doc.error(("silences", i, "id"), f"duplicate id {spec.id!r} (first at silences[{seen[spec.id]}])")
            seen.setdefault(spec.id, i)
    doc.raise_for_errors()
    return got


def silence_id(set_name: str, spec_id: str) -> str:
    """The silence's id: the same for the same set and id in every apply (a UUID, as Alertmanager's)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kubesight-silences/{set_name}/{spec_id}"))


def plan(f: SilenceFile, book: Silences, now: float) -> list[tuple[str, Silence]]:
    """What ``apply`` does, in order: ("create" | "update" | "unchanged" | "expire" | "past", silence).

    A silence keeps its start across applies (a ``duration`` runs from the first apply, so applying again never
    renews it); one the file no longer lists, and still pending or active, ends now; one whose end has passed is
    left as it is ("past"); one ended early and listed again, with its end still ahead, is updated (active again).

    >>> f = SilenceFile.model_validate({"name": "maint", "silences": [
    ...     {"id": "db", "matchers": ['namespace="shop"'], "comment": "migration", "duration": "2h"}]})
    >>> book = Silences()
    >>> [(what, s.endsAt - s.startsAt, s.comment) for what, s in plan(f, book, now=1000.0)]
    [('create', 7200.0, 'migration [silences apply maint/db]')]
    >>> book.put(plan(f, book, now=1000.0)[0][1])
    >>> [what for what, _ in plan(f, book, now=2000.0)], [what for what, _ in plan(f.model_copy(update={"silences": []}), book, now=2000.0)]
    (['unchanged'], ['expire'])
    """
    out: list[tuple[str, Silence]] = []
    listed = set()
    for spec in f.silences:
        sid = silence_id(f.name, spec.id)
        listed.add(sid)
        old = book.by_id.get(sid)
        # a duration runs from the first apply: applying the file again (a CI job) never renews a silence
        starts = spec.starts if spec.starts is not None else old.startsAt if old is not None else now
        ends = spec.ends if spec.ends is not None else starts + spec.duration
        want = Silence(sid, tuple(spec.matchers), starts, ends, spec.created_by,
                       f"{spec.comment} [silences apply {f.name}/{spec.id}]", now)
        if ends <= now:
            out.append(("past", want))
        elif old is None:
            out.append(("create", want))
        elif (old.matchers, old.startsAt, old.endsAt, old.createdBy, old.comment) == (
                want.matchers, want.startsAt, want.endsAt, want.createdBy, want.comment):
            out.append(("unchanged", old))
        else:
            out.append(("update", want))
    for s in sorted(book.by_id.values(), key=lambda s: s.id):
        m = _TAG.search(s.comment)
        if m and m["set"] == f.name and s.id not in listed and s.state(now) != "expired":
            out.append(("expire", s))
    return out


# ---------------------------------------------------------------- reminders

REMINDER = "SilenceStillMuting"


def reminders(book: Silences, firing: dict[str, dict], now: float, after: float, every: float,
              cluster: str = "") -> list[Alert]:
    """Forgotten silences: one alert for each silence active for ``after`` seconds or more that still mutes a
    firing alert (``firing``: labels by fingerprint).  It ends ``3 x every`` ahead, so it resolves by itself once
    the silence ends or mutes nothing (the caller re-emits it every ``every`` seconds while it holds).

    >>> book = Silences()
    >>> book.put(Silence.create({"matchers": [{"name": "node", "value": "n1"}], "startsAt": "2021-08-01T00:00:00Z",
    ...                          "endsAt": "2021-09-01T00:00:00Z", "createdBy": "ana", "comment": "disk swap"}, 0.0,
    ...                         id="s1"))
    >>> firing = {"f1": {"alertname": "NodeDown", "node": "n1"}}
    >>> (a,) = reminders(book, firing, now=parse_time("2021-08-08T00:00:00Z"), after=7 * 86400, every=60.0)
    >>> a.labels["alertname"], a.labels["silence_id"], a.annotations["summary"]
    ('SilenceStillMuting', 's1', 'silence s1 by ana has been active for 7d and still mutes 1 firing alert')
    >>> reminders(book, {}, now=parse_time("2021-08-08T00:00:00Z"), after=7 * 86400, every=60.0)  # mutes nothing
    []
    """
    from core.durations import format_duration

    out = []
    for s in book.by_id.values():
        if s.state(now) != "active" or now - s.startsAt < after:
            continue
        n = sum(1 for labels in firing.values() if labels.get("alertname") != REMINDER
                and matches_all(s.matchers, labels))
        if not n:
            continue
        labels = {"alertname": REMINDER, "severity": "info", "silence_id": s.id, "created_by": s.createdBy}
        if cluster:
            labels["cluster"] = cluster
        days = int((now - s.startsAt) // 86400)
        age = f"{days}d" if days else format_duration(int((now - s.startsAt) // 3600) * 3600 or (now - s.startsAt))
        out.append(Alert(labels, {
            "summary": f"silence {s.id} by {s.createdBy} has been active for {age} and still mutes {n} firing "
                       f"alert{'s' if n > 1 else ''}",
            "description": f"{s.comment} (matchers {', '.join(str(m) for m in s.matchers)}; ends "
                           f"{format_time(s.endsAt)}). If the work it was for is done: kubesight silences expire "
                           f"{s.id}"}, "firing", s.startsAt + after, now + 3 * every, "kubesight/silences"))
    return out


RETENTION = 120 * 3600.0  # s: an expired silence is kept this long after its end, then forgotten (Alertmanager's
# --data.retention default): listed as expired meanwhile


class Silences:
    """All known silences by id (kept in memory: a silence is small, and expired ones go after ``RETENTION``)."""

    def __init__(self, retention: float = RETENTION) -> None:
        self.by_id: dict[str, Silence] = {}
        self.retention = retention
        self.clock = 0.0  # the latest time a silence was made or changed at: what "ago" is measured from
        self._pruned = 0.0
        self.gone: set[str] = set()  # forgotten here, no tombstone read yet: what a writer deletes from the topic

    def put(self, s: Silence) -> None:
        self.by_id[s.id] = s
        if s.updatedAt > self.clock:
            self.clock = s.updatedAt
            if self.clock >= self._pruned + 60.0:  # one pass a minute of silence time at most (a topic re-read)
                self.prune()

    def prune(self) -> None:
        """Forget the silences that ended more than ``retention`` before the latest silence change (the compacted
        topic still holds them; every reader forgets the same ones, whatever its wall clock or the order it read
        them in, as long as it read them all).  Measured on the silences' own times, so a replay of old ones keeps
        them as they were."""
        horizon = self.clock - self.retention
        for id in [id for id, s in self.by_id.items() if s.endsAt < horizon]:
            del self.by_id[id]
            self.gone.add(id)
        self._pruned = self.clock

    def apply(self, key: bytes, value: bytes | None) -> None:
        """One record of the silences topic (None: tombstone).  A version older than the one held (``updatedAt``) is
        not taken, as Alertmanager merges silences from its peers: a writer holds its new version at once and then
        reads its earlier record back from the topic, which must not undo the update for that moment."""
        if value is None:
            id = key.decode()
            self.by_id.pop(id, None)
            self.gone.discard(id)
        else:
            s = Silence.decode(value)
            held = self.by_id.get(s.id)
            if held is None or held.updatedAt <= s.updatedAt:
                self.put(s)

    def muting(self, labels: dict, now: float) -> list[str]:
        return [s.id for s in self.by_id.values() if s.mutes(labels, now)]

    def expire(self, id: str, now: float) -> Silence:
        """End a silence now (kept, so ``list`` shows it as expired); KeyError when unknown.  A pending one (it starts
        later) gets its start moved to now too, as Alertmanager does, so it is expired and not pending still."""
        s = self.by_id[id]
        if s.endsAt > now:
            s.startsAt = min(s.startsAt, now)
            s.endsAt = now
            s.updatedAt = now
        return s

    def posted(self, s: Silence, now: float) -> tuple[Silence, str | None]:
        """Alertmanager's ``Silences.Set`` for ``s`` posted with the id of a known silence (KeyError if unknown):
        (the silence to write, the id of one to expire first or None).  ``s`` updates that silence in place when
        ``can_update`` says so; otherwise it is written as a new silence with a new id (its start moved to now if
        in the past) and the old one, unless already expired, is expired, so the history of what was muted when
        stays true.

        >>> book = Silences()
        >>> old = Silence("s1", (Matcher("job", "=", "a"),), 100.0, 500.0, "ana", "c", 100.0); book.put(old)
        >>> book.posted(replace(old, endsAt=900.0), now=200.0)[0].id           # same matchers and start: in place
        's1'
        >>> new, gone = book.posted(replace(old, matchers=(Matcher("job", "=", "b"),)), now=200.0)
        >>> (new.id != "s1", new.startsAt, gone)                                # other matchers: replaced
        (True, 200.0, 's1')
        """
        old = self.by_id[s.id]
        if can_update(old, s, now):
            return s, None
        new = replace(s, id=str(uuid.uuid4()), startsAt=max(s.startsAt, now))
        return new, (old.id if old.state(now) != "expired" else None)

    def list(self, now: float, state: str | None = None) -> list[Silence]:
        """Alertmanager's order (``SortSilences``): active by end, then pending by start, then expired, the most
        recently ended first."""
        order = {"active": 0, "pending": 1, "expired": 2}

        def key(s: Silence) -> tuple:
            st = s.state(now)
            return order[st], -s.endsAt if st == "expired" else s.startsAt if st == "pending" else s.endsAt, s.id

        return sorted((s for s in self.by_id.values() if state is None or s.state(now) == state), key=key)


def can_update(old: Silence, new: Silence, now: float) -> bool:
    """Alertmanager's ``canUpdate``: whether ``new`` may overwrite ``old`` (same id) without rewriting history.
    The matchers must be the same (in order); an active silence keeps its start (to the second: the API shows
    milliseconds, so a client posting back what it read still matches) and may not end in the past; a pending one
    may move its start but not into the past; an expired one never changes.

    >>> old = Silence("s1", (Matcher("job", "=", "a"),), 100.4, 500.0, "ana", "c", 100.4)
    >>> can_update(old, replace(old, startsAt=100.0, endsAt=900.0), now=200.0), can_update(old, replace(old, startsAt=99.9), now=200.0)
    (True, False)
    >>> can_update(old, replace(old, startsAt=150.0), now=120.0), can_update(old, replace(old, startsAt=150.0), now=50.0)
    (False, True)
    """
    if old.matchers != new.matchers:
        return False
    st = old.state(now)
    if st == "active":
        return math.floor(new.startsAt) == math.floor(old.startsAt) and new.endsAt >= now
    if st == "pending":
        return new.startsAt >= now
    return False
