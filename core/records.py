"""Wire records: Event, Sample, Alert as plain JSON (``v: 1``), encoded with orjson.

Every record on a kubesight topic is one JSON object with ``"v": 1`` and a ``"kind"`` of
``event``, ``sample`` or ``alert``; no framework metadata, so ``kcat`` or any consumer reads
the topics as they are.  Times are RFC 3339 UTC strings on the wire and float epoch seconds
in memory.

>>> e = Event(source="k8s", reason="BackOff", type="Warning", time=1627984800.0,
...           entity=Entity(namespace="shop", kind="Pod", name="cart-7d9f", workload="Deployment/cart"),
...           message="Back-off restarting failed container")
>>> e.key()
b'default/shop/Deployment/cart'
>>> decode(encode(e)) == e
True
>>> decode(b'{"v": 1, "kind": "sample", "name": "up"}')
Traceback (most recent call last):
...
core.records.RecordError: sample: Object missing required field `value`
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal

import msgspec
import orjson

VERSION = 1
SOURCES = ("k8s", "k8s-state", "k8s-audit", "kernel", "cloud", "controlplane", "metrics")
SEVERITIES = ("critical", "warning", "info", "none")
_INF = float("inf")


class RecordError(ValueError):
    """A payload that is not a valid kubesight record; the message says why."""


# ---------------------------------------------------------------- time helpers


def parse_time(value) -> float:
    """RFC 3339 / ISO 8601 string (or epoch number, or a ``datetime``: what YAML makes of an unquoted time; naive
    is UTC) -> float epoch seconds, UTC.

    >>> parse_time("2021-08-03T10:00:00Z")
    1627984800.0
    >>> parse_time("2021-08-03T10:00:00.250+00:00")
    1627984800.25
    >>> parse_time(datetime(2021, 8, 3, 10))
    1627984800.0
    """
    if type(value) is str:
        return _parse_iso(value)
    if type(value) is datetime:
        return check_time(_seconds(value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return check_time(float(value))
    raise RecordError(f"invalid time {value!r} (use RFC 3339, e.g. 2021-08-03T10:00:00Z)")


TIME_MIN, TIME_MAX = -62135596800.0, 253402300799.999  # 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999Z


def check_time(t: float, what: str = "time") -> float:
    """``t`` if it is epoch seconds RFC 3339 can write (years 1-9999), else RecordError: a number read in the wrong
    unit (microseconds as seconds), Inf or NaN is refused where it comes in, with the reason, instead of failing
    later when a record is written (where a sender would be told to retry for ever).

    >>> check_time(1627984800.0)
    1627984800.0
    >>> check_time(1.6e15)
    Traceback (most recent call last):
    ...
    core.records.RecordError: time 1600000000000000.0 is not a time RFC 3339 can write (epoch seconds of years 1-9999; milliseconds or microseconds?)
    """
    if not TIME_MIN <= t <= TIME_MAX:  # NaN fails both comparisons
        raise RecordError(f"{what} {t!r} is not a time RFC 3339 can write (epoch seconds of years 1-9999; "
                          "milliseconds or microseconds?)")
    return t


_LONG_FRACTION = re.compile(r"([.,]\d{6})(\d+)")  # the seconds' fraction past microseconds (the date has no '.')


@lru_cache(maxsize=4096)
def _parse_iso(value: str) -> float:
    """RFC 3339 text -> epoch seconds, read as ``wire_time`` (msgspec) reads it, so that the intake and the worker
    agree on the time of one text.

    >>> _parse_iso("2021-08-03T10:00:00.9999996Z"), _parse_iso("2021-08-03T10:00:00.1234564999z")
    (1627984801.0, 1627984800.123456)
    """
    # cached: the samples of one scrape, and events of one second, share their timestamp string
    # RFC 3339 (5.6) allows a lower-case "z", which msgspec reads and fromisoformat does not
    text = value[:-1] + "Z" if value[-1:] == "z" and value[-2:-1].isdigit() else value
    up = False
    m = _LONG_FRACTION.search(text)
    if m:  # fromisoformat cuts a fraction to microseconds; msgspec rounds half up on the 7th digit alone
        up = m.group(2)[0] >= "5"
        text = text[:m.end(1)] + text[m.end():]
    try:
        dt = datetime.fromisoformat(text)  # Python >= 3.11 reads "Z" and fractions of any length
    except ValueError:
        raise RecordError(f"invalid time {value!r} (use RFC 3339, e.g. 2021-08-03T10:00:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if up:
        try:
            dt += timedelta(microseconds=1)
        except OverflowError:  # 9999-12-31T23:59:59.9999995Z rounds into the year 10000
            raise RecordError(f"time {value!r} is outside the years 1-9999 in UTC") from None
    t = dt.timestamp()
    if not TIME_MIN <= t <= TIME_MAX:  # 9999-12-31T23:59:59-01:00 is in the year 10000 in UTC
        raise RecordError(f"time {value!r} is outside the years 1-9999 in UTC")
    return t


def format_time(ts: float | None) -> str | None:
    """Float epoch seconds -> RFC 3339 UTC with milliseconds (``Z`` suffix).

    >>> format_time(1627984800.25)
    '2021-08-03T10:00:00.250Z'
    >>> format_time(parse_time("0999-01-01T00:00:00Z"))  # four digits, as RFC 3339 wants and parse_time reads
    '0999-01-01T00:00:00.000Z'
    """
    if ts is None:
        return None
    s = _FORMATTED.get(ts)
    if s is None:  # alerts repeat their times (startsAt of every transition of a group): format each once
        if len(_FORMATTED) >= 16384:
            _FORMATTED.clear()
        dt = datetime.fromtimestamp(ts, UTC)
        # isoformat cuts the microseconds to milliseconds as strftime's %f[:-3] does, in a third less time, and
        # pads years below 1000 to four digits, which glibc's strftime does not ("999-01-01": unreadable back)
        s = _FORMATTED[ts] = dt.isoformat(timespec="milliseconds")[:-6] + "Z"
    return s


_FORMATTED: dict[float, str] = {}


# ---------------------------------------------------------------- records


class Entity(msgspec.Struct, forbid_unknown_fields=True, gc=False):  # gc=False: strings only, no cycle possible
    """What a signal is about, resolved to its workload and owner where known."""

    cluster: str = "default"
    namespace: str = ""
    kind: str = ""
    name: str = ""
    uid: str = ""
    node: str = ""
    workload: str = ""  # "Deployment/cart", "DaemonSet/node-exporter", "" if none
    owner: str = ""  # team that must act (from labels/annotations), "" if unknown

    def key(self) -> bytes:
        """The Kafka key: one entity (a workload, else the object, else its node) -> one partition."""
        if self.workload:
            return f"{self.cluster}/{self.namespace}/{self.workload}".encode()
        if self.kind and self.name and self.kind != "Node":
            return f"{self.cluster}/{self.namespace}/{self.kind}/{self.name}".encode()
        if self.node or self.name:
            return f"{self.cluster}//Node/{self.node or self.name}".encode()
        return f"{self.cluster}/{self.namespace}".encode()


ENTITY_FIELDS = Entity.__struct_fields__


class Event(msgspec.Struct):
    """One discrete happening: a Kubernetes Event, a state change, a kernel line, a cloud event."""

    source: str
    reason: str
    time: float
    type: str = "Normal"  # Kubernetes' Normal | Warning; other sources map to these
    severity: str = ""  # collector's opinion, rules may override
    entity: Entity = msgspec.field(default_factory=Entity)
    labels: dict = msgspec.field(default_factory=dict)
    message: str = ""
    count: int = 1
    id: str = ""  # stable across re-deliveries, for dedup; derived from the content when not given

    def __post_init__(self) -> None:
        if not self.id:
            self.id = self.default_id()

    def key(self) -> bytes:
        return self.entity.key()

    def to_dict(self) -> dict:
        return {
            "v": VERSION,
            "kind": "event",
            "id": self.id,
            "source": self.source,
            "reason": self.reason,
            "type": self.type,
            "severity": self.severity,
            "time": format_time(self.time),
            "entity": msgspec.structs.asdict(self.entity),
            "labels": self.labels,
            "message": self.message,
            "count": self.count,
        }

    def default_id(self) -> str:
        h = hashlib.blake2b(digest_size=10)
        h.update(f"{self.source}|{self.reason}|{self.time}|{self.entity.key()!r}|{self.count}|{self.message}".encode())
        return h.hexdigest()


def _escaped(v) -> str:
    """A label value as the exposition format writes it: backslash, double quote and newline escaped (a value that is
    not text, from a record built in code, as its text)."""
    if type(v) is not str:
        v = str(v)
    if "\\" in v or '"' in v or "\n" in v:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return v


class Sample(msgspec.Struct):
    """One numeric observation of one series."""

    name: str
    value: float
    time: float
    labels: dict = msgspec.field(default_factory=dict)

    def series(self) -> str:
        """Series identity: name plus sorted labels, PromQL-style (values escaped as the exposition format does,
        so a value holding ``",b="`` is not another series' labels).

        >>> Sample("up", 1.0, 0.0, {"job": "etcd", "instance": "a:2379"}).series()
        'up{instance="a:2379",job="etcd"}'
        >>> Sample("m", 1.0, 0.0, {"a": 'x",b="y'}).series() != Sample("m", 1.0, 0.0, {"a": "x", "b": "y"}).series()
        True
        """
        if not self.labels:
            return self.name
        inner = ",".join([f'{k}="{_escaped(v)}"' for k, v in sorted(self.labels.items())])
        return f"{self.name}{{{inner}}}"

    def key(self) -> bytes:
        return self.series().encode()

    def to_dict(self) -> dict:
        v = self.value
        if v != v or v in (_INF, -_INF):  # JSON has no NaN/Inf: spell them as Prometheus does
            v = "NaN" if v != v else ("+Inf" if v > 0 else "-Inf")
        return {
            "v": VERSION,
            "kind": "sample",
            "name": self.name,
            "labels": self.labels,
            "value": v,
            "time": format_time(self.time),
        }


def fingerprint(labels: dict) -> str:
    """Alertmanager's fingerprint of a label set, bit for bit (``model.LabelSet.Fingerprint()``).

    FNV-1a 64 over name, 0xff, value, 0xff for each label in sorted order, as 16 lowercase hex
    digits; so kubesight and an Alertmanager deduplicate the same alert under the same id.  A label
    with an empty value is no label (Alertmanager drops those when an alert is posted):

    >>> fingerprint({"alertname": "X", "pod": "a"}) == fingerprint({"pod": "a", "alertname": "X"})
    True
    >>> fingerprint({}), fingerprint({"alertname": "Watchdog"})
    ('cbf29ce484222325', '003b0a0f7d3fa569')
    >>> fingerprint({"alertname": "Watchdog", "namespace": ""})
    '003b0a0f7d3fa569'
    """
    items = tuple(labels.items())
    for _, v in items:
        if v.__class__ is not str:
            break
    else:  # string values only (the rule for alert labels): memoised by the labels as they are, in their order
        fp = _BY_ITEMS.get(items)
        if fp is None:
            if len(_BY_ITEMS) >= 8192:
                _BY_ITEMS.clear()
            fp = _BY_ITEMS[items] = _fingerprint(tuple(sorted(kv for kv in items if kv[1] != "")))
        return fp
    return _fingerprint(tuple(sorted((k, v if v.__class__ is str else str(v)) for k, v in items
                                     if v != "" and v is not None)))


_BY_ITEMS: dict[tuple, str] = {}  # labels' items in their order -> fingerprint (sorting them cost ~2 µs an alert)


_FNV_OFFSET, _FNV_PRIME, _U64 = 0xCBF29CE484222325, 0x100000001B3, 0xFFFFFFFFFFFFFFFF


def _fnv1a_64_py(data: bytes) -> int:
    """FNV-1a 64 in Python (~100 ns a byte): the reference, and the fallback without ``fnv_c``.

    >>> d = b"\\xff".join([b"alertname", b"Watchdog", b""])  # one label, as fingerprint() joins it
    >>> _fnv1a_64(d) == _fnv1a_64_py(d) == 0x003b0a0f7d3fa569
    True
    """
    h, prime, u64 = _FNV_OFFSET, _FNV_PRIME, _U64
    for b in data:
        h = ((h ^ b) * prime) & u64
    return h


try:  # the same function in C (~0.3 µs for a label set, against 15-40 µs in Python)
    from fnv_c import fnv1a_64 as _fnv1a_64
except ImportError:  # pragma: no cover
    _fnv1a_64 = _fnv1a_64_py


@lru_cache(maxsize=8192)  # the same alert is seen again and again (every transition, every worker step)
def _fingerprint(items: tuple) -> str:
    data = b"".join([b"%s\xff%s\xff" % (name.encode(), value.encode()) for name, value in items])
    return f"{_fnv1a_64(data):016x}"


class _once:
    """``functools.cached_property`` without its lock (Python 3.11 takes one on every first read: ~0.3 µs an
    alert): the value is computed once per object and kept in its ``__dict__``, which later reads find first."""

    __slots__ = ("f", "name")

    def __init__(self, f):
        self.f, self.name = f, f.__name__

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        v = obj.__dict__[self.name] = self.f(obj)
        return v


class Alert(msgspec.Struct, dict=True):  # dict=True: room for the cached fingerprint (labels are never changed)
    """An alert transition, shaped like Alertmanager's alert."""

    labels: dict
    annotations: dict = msgspec.field(default_factory=dict)
    status: str = "firing"  # firing | resolved
    startsAt: float = 0.0
    endsAt: float | None = None
    source: str = ""  # pack/rule@version
    generatorURL: str = ""

    @_once  # read several times per transition (key, lifecycle, inhibitor, encoding)
    def fingerprint(self) -> str:
        return fingerprint(self.labels)

    def key(self) -> bytes:
        return self.fingerprint.encode()

    def to_dict(self) -> dict:
        return {
            "v": VERSION,
            "kind": "alert",
            "labels": self.labels,
            "annotations": self.annotations,
            "status": self.status,
            "startsAt": format_time(self.startsAt),
            "endsAt": format_time(self.endsAt),
            "fingerprint": self.fingerprint,
            "source": self.source,
            "generatorURL": self.generatorURL,
        }


Record = Event | Sample | Alert


# ---------------------------------------------------------------- codec
#
# Decoding goes straight from bytes to typed wire structs (msgspec validates types in C while it
# parses: label values must be strings, entity fields must be known strings, ...), then to the
# in-memory record (times as float epoch seconds).  Optional string fields may be null on the wire.

Time = str | float  # RFC 3339 on the wire (epoch numbers accepted); the text is checked by _when
Labels = dict[str, str]


class _WireEvent(msgspec.Struct, tag="event", tag_field="kind", gc=False):
    v: int
    source: Literal[SOURCES]
    reason: str
    time: Time
    type: str | None = None
    severity: str | None = None
    entity: Entity | None = None
    labels: Labels | None = None
    message: str | None = None
    count: int = 1
    id: str | None = None


class _WireSample(msgspec.Struct, tag="sample", tag_field="kind", gc=False):
    v: int
    name: str
    value: float | Literal["NaN", "+Inf", "-Inf", "Inf"]
    time: Time
    labels: Labels | None = None


class _WireAlert(msgspec.Struct, tag="alert", tag_field="kind"):
    v: int
    labels: Labels
    startsAt: Time
    annotations: Labels | None = None
    status: Literal["firing", "resolved"] = "firing"
    endsAt: Time | None = None
    source: str | None = None
    generatorURL: str | None = None


_Wire = _WireEvent | _WireSample | _WireAlert  # event and sample structs hold strings, numbers and string dicts:
_DECODER = msgspec.json.Decoder(_Wire)         # no cycle, so not tracked by the garbage collector (gc=False)


_DATETIME = msgspec.json.Decoder(datetime)  # msgspec's RFC 3339 parser, the one a ``datetime`` field uses
_TIMES: dict[str, float] = {}  # RFC 3339 text -> epoch seconds: a scrape's samples share one time


def _when(t, field: str) -> float:
    """A wire time (RFC 3339 text or epoch number) -> epoch seconds; each distinct text parsed once."""
    if type(t) is not str:
        try:
            return check_time(float(t), field)
        except RecordError:  # as an invalid text: the decoder's error, which peek words and the hot loop catches
            raise msgspec.ValidationError(f"Expected epoch seconds of years 1-9999, got {float(t)!r} - at `$.{field}`") \
                from None
    s = _TIMES.get(t)
    if s is None:
        s = _canonical(t)
        if s is None:
            try:
                s = _seconds(_DATETIME.decode(orjson.dumps(t)))
            except msgspec.ValidationError:
                raise msgspec.ValidationError(f"Invalid RFC3339 encoded datetime - at `$.{field}`") from None
        if not TIME_MIN <= s <= TIME_MAX:  # an offset past the years' edge: 9999-12-31T23:59:59-01:00
            raise msgspec.ValidationError(f"Expected a time of years 1-9999 in UTC, got {t!r} - at `$.{field}`")
        if len(_TIMES) >= 16384:
            _TIMES.clear()
        _TIMES[t] = s
    return s


_MINUTES: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM" -> its epoch second (checked by the full parser once)


def _canonical(t: str) -> float | None:
    """Epoch seconds of a time in the canonical shape ``format_time`` writes (``...THH:MM:SS.mmmZ``, or
    ``...:SSZ``), or None for any other text (the full parser takes it).  Events advance their time, so
    most texts are new; their minute is not: it is parsed once, and the seconds and milliseconds are
    added as ``datetime.timestamp()`` does (whole microseconds divided by 10**6), so the result is
    the same float.

    >>> ts = ["2021-08-03T10:00:00.250Z", "2021-08-03T10:59:59Z", "2024-02-29T23:59:59.999Z"]
    >>> [_canonical(t) == _seconds(_DATETIME.decode(orjson.dumps(t))) for t in ts]
    [True, True, True]
    >>> _canonical("2021-08-03T10:00:60Z"), _canonical("2021-08-03T10:00:00.25Z"), _canonical("2021-02-30T10:00:00Z")
    (None, None, None)
    """
    n = len(t)
    sec = _SECONDS.get(t[16:19])  # ":00" .. ":59"
    if sec is None:
        return None
    if n == 24:
        us = _MILLIS.get(t[19:23])  # ".000" .. ".999"
        if us is None or t[23] != "Z":
            return None
    elif n == 20 and t[19] == "Z":
        us = 0
    else:
        return None
    m = _MINUTES.get(t[:16])
    if m is None:
        try:
            m = int(_seconds(_DATETIME.decode(orjson.dumps(t[:16] + ":00Z"))))
        except msgspec.ValidationError:
            return None
        if len(_MINUTES) >= 16384:
            _MINUTES.clear()
        _MINUTES[t[:16]] = m
    return ((m + sec) * 1_000_000 + us) / 1_000_000


# the seconds and milliseconds of a canonical time text, looked up (two dict probes cost less than checking and
# converting the digits): ":SS" -> SS for 00..59, ".mmm" -> microseconds for 000..999
_SECONDS = {f":{i:02d}": i for i in range(60)}
_MILLIS = {f".{i:03d}": i * 1000 for i in range(1000)}


def _seconds(t) -> float:
    if type(t) is float:
        return t
    if type(t) is datetime:
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return t.timestamp()
    return float(t)


def _check(w) -> float:
    """Validate a wire struct beyond its types; returns its time (an alert's startsAt) as epoch seconds."""
    if w.v != VERSION:
        raise RecordError(f"unsupported record version v={w.v!r} (expected {VERSION})")
    tw = type(w)
    if tw is _WireSample:
        return _when(w.time, "time")
    if tw is _WireEvent:
        if w.count < 0:
            raise RecordError(f"event: 'count' must be >= 0, got {w.count}")
        return _when(w.time, "time")
    if "alertname" not in w.labels:
        raise RecordError("alert: labels must include 'alertname'")
    t = _when(w.startsAt, "startsAt")
    if w.endsAt is not None:
        _when(w.endsAt, "endsAt")
    return t


def build(w, t: float) -> Record:
    """The in-memory record of a wire struct that ``peek`` checked (``t``: the time it returned)."""
    tw = type(w)
    if tw is _WireEvent:
        return Event(w.source, w.reason, t, w.type or "Normal", w.severity or "",
                     w.entity or Entity(), w.labels or {}, w.message or "", w.count, w.id or "")
    if tw is _WireSample:
        v = w.value
        return Sample(w.name, v if type(v) is float else float(v), t, w.labels or {})
    return Alert(w.labels, w.annotations or {}, w.status, t,
                 None if w.endsAt is None else _when(w.endsAt, "endsAt"), w.source or "", w.generatorURL or "")


def _record(w) -> Record:
    return build(w, _check(w))


# a record with a null value (a tombstone, which a compacting producer or a hand-written delete sends): no record
NO_VALUE = "no value (a tombstone): a kubesight record is a JSON object"


def peek(payload: bytes | None, w=None) -> tuple:
    """Bytes from Kafka -> ``(record type, routing key, time, wire struct)``, checked as ``decode`` checks
    (the same RecordError), without building the record: the hot path builds (``build``) only the
    records a stage wants.  The routing key is a sample's name, an event's ``(source, reason)``, ``Alert``
    for an alert.  The hot path's loop (``streams.hotpath``) takes the common case itself (a current
    event or sample: ``WIRE.decode``, ``TIME_SECONDS``, ``wire_time``) and calls this for
    every other record, so the checks and the reasons are these (``w``: the wire struct the loop decoded
    from ``payload`` already, when it did).

    >>> rtype, key, t, w = peek(b'{"v":1,"kind":"sample","name":"up","value":1,"time":"2021-08-03T10:00:00Z"}')
    >>> rtype is Sample, key, t, build(w, t) == decode(encode(build(w, t)))
    (True, 'up', 1627984800.0, True)
    """
    if payload is None:
        raise RecordError(NO_VALUE)
    try:
        if w is None:
            w = _DECODER.decode(payload)
        t = _check(w)
    except msgspec.ValidationError as exc:
        raise RecordError(_why(exc, payload)) from None
    except msgspec.DecodeError as exc:
        raise RecordError(f"not valid JSON: {exc}") from None
    tw = type(w)
    if tw is _WireSample:
        return Sample, w.name, t, w
    if tw is _WireEvent:
        return Event, (w.source, w.reason), t, w
    return Alert, Alert, t, w


# what the hot path's loop inlines of ``peek`` for the common case (see there)
WIRE = _DECODER
WireEvent, WireSample = _WireEvent, _WireSample
TIME_SECONDS = _TIMES  # RFC 3339 text -> epoch seconds, for the texts ``_when`` parsed (a scrape's samples share one)


def wire_time(t) -> float:
    """A wire struct's ``time`` -> epoch seconds, as ``peek`` reads it (msgspec.ValidationError if it is no time)."""
    return _when(t, "time")


def _why(exc: msgspec.ValidationError, payload: bytes) -> str:
    """``_reason`` for a payload msgspec parsed and refused: read again to word it, where orjson can read it (not
    1e999, which it will not make infinite, nor nesting past its depth limit: then msgspec's words alone)."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return f"record: {exc}"
    return _reason(exc, obj)


def _reason(exc: msgspec.ValidationError, obj) -> str:
    """The dead-letter reason for a payload that failed validation (the rare path: it may look again)."""
    if not isinstance(obj, dict):
        return f"record must be a JSON object, got {type(obj).__name__}"
    if obj.get("v") != VERSION:
        return f"unsupported record version v={obj.get('v')!r} (expected {VERSION})"
    kind = obj.get("kind")
    if kind not in ("event", "sample", "alert"):
        return f"unknown record kind {kind!r} (expected event, sample or alert)"
    return f"{kind}: {exc}".replace("`float | str`", "`float | datetime`")  # the wire's time: RFC 3339 or a number


def encode(rec: Record) -> bytes:
    # orjson, like every producer of records (the metrics collector's batch producer writes the same bytes:
    # msgspec would spell 9.2e18 where orjson writes 9.2e+18)
    return orjson.dumps(rec.to_dict())


def decode(payload: bytes | None) -> Record:
    """Bytes from Kafka -> record, or RecordError with a reason fit for the dead-letter topic.

    >>> decode(b'{"v": 1, "kind": "sample", "name": "up", "value": 1, "time": 0, "labels": {"code": 500}}')
    Traceback (most recent call last):
    ...
    core.records.RecordError: sample: Expected `str`, got `int` - at `$.labels[...]`
    >>> decode(None)
    Traceback (most recent call last):
    ...
    core.records.RecordError: no value (a tombstone): a kubesight record is a JSON object
    """
    if payload is None:
        raise RecordError(NO_VALUE)
    try:
        return _record(_DECODER.decode(payload))
    except msgspec.ValidationError as exc:
        raise RecordError(_why(exc, payload)) from None
    except msgspec.DecodeError as exc:
        raise RecordError(f"not valid JSON: {exc}") from None


def from_dict(d) -> Record:
    """Validate an already-parsed JSON object (state restored from a changelog) into its record."""
    try:
        return _record(msgspec.convert(d, _Wire))
    except msgspec.ValidationError as exc:
        raise RecordError(_reason(exc, d)) from None


# what a dead letter keeps of a payload: far below any broker's message limit (1 MB by default),
# so rejecting a bad input never fails on the size of the rejection itself
PAYLOAD_LIMIT = 64 * 1024
TEXT_LIMIT = 2048  # the reason and each position field
# the largest record (key + value) kubesight sends: under the producers' max.request.size (1 MiB) and the broker's
# default max.message.bytes (1 MiB + 12) with room for the batch's own bytes. A larger output is refused for good by
# the broker; inside a worker's transaction that would abort and rewind it forever (the partition stops), so it
# becomes a dead letter instead (``oversize``)
RECORD_LIMIT = 1_000_000


def deadletter_key(key: bytes | None) -> bytes | None:
    """The Kafka key of a dead letter: the original's, cut to its first ``TEXT_LIMIT`` bytes (a series key of nearly a
    megabyte beside the 64 KiB a dead letter keeps would be over ``RECORD_LIMIT``, refused in its turn).

    >>> deadletter_key(b"k"), len(deadletter_key(b"k" * 900_000)), deadletter_key(None)
    (b'k', 2048, None)
    """
    return key[:TEXT_LIMIT] if key is not None and len(key) > TEXT_LIMIT else key


def oversize(key: bytes | None, value: bytes | None) -> str | None:
    """Why a record (key + value) cannot go to Kafka, when it is over ``RECORD_LIMIT`` bytes; else None.
    The sender dead-letters it with this reason instead (``deadletter`` keeps its first 64 KiB).

    >>> oversize(b"k", b"x" * 10) is None
    True
    >>> oversize(b"k", b"x" * RECORD_LIMIT)
    'record of 1000001 bytes is over the 1000000 bytes kubesight sends to Kafka'
    """
    size = (len(key) if key else 0) + (len(value) if value else 0)
    if size <= RECORD_LIMIT:
        return None
    return f"record of {size} bytes is over the {RECORD_LIMIT} bytes kubesight sends to Kafka"


def deadletter(reason: str, payload: bytes | str | None, *, origin: str, key: bytes | None = None,
               time: float | None = None, limit: int = PAYLOAD_LIMIT, size: int | None = None, **where) -> bytes:
    """The dead-letter record: why, where from, and the original payload (its first ``limit`` bytes).

    ``origin`` names who rejected it (``worker``, ``collector/cloud``, ...); ``where`` adds the
    position (topic, partition, offset, file, line, url). Binary payloads are kept base64-encoded.
    A payload over ``limit`` bytes is cut to its first ``limit`` bytes and the record says so:
    ``truncated``, with the whole payload's ``size`` and ``sha256``, so a dead letter never
    exceeds the topic's message limit. ``size``: the whole payload's, when ``payload`` is only its
    beginning (an intake does not read a body over its limit whole): ``truncated`` too, without ``sha256``.

    >>> import orjson
    >>> d = orjson.loads(deadletter("not valid JSON", b"{oops", origin="worker", topic="events", offset=7, time=0.0))
    >>> d["reason"], d["payload"], d["where"]["offset"], d["truncated"]
    ('not valid JSON', '{oops', 7, False)
    >>> d = orjson.loads(deadletter("too big", b"x" * 100_000, origin="collector/metrics", limit=10, time=0.0))
    >>> d["payload"], d["truncated"], d["size"], d["sha256"][:12]
    ('xxxxxxxxxx', True, 100000, 'd69e68988157')
    >>> d = orjson.loads(deadletter("too big", b"xx", origin="collector/cloud", size=9_000_000, time=0.0))
    >>> d["payload"], d["truncated"], d["size"], "sha256" in d
    ('xx', True, 9000000, False)
    """
    import base64
    import hashlib

    raw = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else payload
    extra: dict = {"truncated": False}
    if raw is not None and len(raw) > limit:
        extra = {"truncated": True, "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
        raw = raw[:limit]
    elif raw is not None and size is not None and size > len(raw):
        extra = {"truncated": True, "size": size}
    enc = "utf-8"
    if raw is not None:
        # text stays text (a cut may split one UTF-8 character: up to 3 trailing bytes go); else base64
        for cut in range(4 if extra["truncated"] else 1):
            try:
                payload = raw[:len(raw) - cut].decode("utf-8")
                break
            except UnicodeDecodeError:
                continue
        else:
            payload, enc = base64.b64encode(raw).decode(), "base64"
    return _deadletter_record(reason, payload, enc, origin, where, key, time, extra)


def _deadletter_record(reason, payload, enc, origin, where, key, time, extra) -> bytes:
    import time as _time

    def cut(v):
        return v[:TEXT_LIMIT] + "..." if isinstance(v, str) and len(v) > TEXT_LIMIT else v

    return orjson.dumps({
        "v": VERSION,
        "kind": "deadletter",
        "reason": cut(reason),
        "origin": origin,
        "where": {k: cut(v) for k, v in where.items()},
        "key": cut(key.decode("utf-8", "replace")) if key else None,
        "payload": payload,
        "encoding": enc,
        **extra,
        "time": format_time(_time.time() if time is None else time),
    })


# ---------------------------------------------------------------- ownership (the ``owners`` topic)


def owner_key(cluster: str, namespace: str, name: str = "", kind: str = "Pod") -> bytes:
    """Key of an ``owners`` record: a namespace's team (``cluster/namespace``), a pod's (``cluster/namespace/Pod/name``)
    or a workload's (``cluster/namespace/Deployment/name``: its team while it has no pod), the shapes of ``Entity.key``
    for the same objects.

    >>> owner_key("prod", "shop"), owner_key("prod", "shop", "cart-7d9f-x"), owner_key("prod", "shop", "cart", "Deployment")
    (b'prod/shop', b'prod/shop/Pod/cart-7d9f-x', b'prod/shop/Deployment/cart')
    """
    return f"{cluster}/{namespace}/{kind}/{name}".encode() if name else f"{cluster}/{namespace}".encode()


def owner_record(owner: str, workload: str = "", controller: str = "") -> bytes:
    """Value of an ``owners`` record: the team (``""``: none found), and for a pod its workload and its controller
    (``kind/name`` of the ownerReference: a ReplicaSet, a Job), by which alerts that name those are owned too; a
    workload's own record names itself as its workload (``Deployment/cart``).

    >>> owner_record("payments", "Deployment/cart", "ReplicaSet/cart-7d9f")
    b'{"v":1,"kind":"owner","owner":"payments","workload":"Deployment/cart","controller":"ReplicaSet/cart-7d9f"}'
    """
    return orjson.dumps({"v": VERSION, "kind": "owner", "owner": owner, "workload": workload, "controller": controller})
