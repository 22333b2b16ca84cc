"""Kafka client security, once: ``kafka_security`` in settings -> the arguments of every client.

Every Kafka client of kubesight (kafka-python, aiokafka, Faust) is built with
:func:`client_config`, which turns the bootstrap servers and their :class:`KafkaSecurity` into
that library's keyword arguments: ``security_protocol``, one ``ssl.SSLContext`` (made by
``aiokafka.helpers.create_ssl_context``: the CA bundle, the client certificate, hostname
verification), the SASL mechanism, user and password (read from its file or environment variable
when the client is built, never stored in settings).  The servers travel as a :class:`Bootstrap`,
a ``str`` that also carries the security to reach them, so every function that is handed
"bootstrap" connects the same way as the one that resolved it (``core.broker.bootstrap_for``).

:func:`problem` is the start-up check behind ``core.broker.check_reachable``: a real TCP
connection, TLS handshake, ApiVersions request and SASL authentication (PLAIN or SCRAM, RFC 5802)
within a deadline, answering one line that says what is wrong: the client libraries themselves
retry a refused password, an unknown CA or a plaintext client on a TLS listener for half a minute
and then report only "unable to bootstrap".

:func:`partition_of` puts a keyed record where the producer's default partitioner would (Kafka's murmur2, a
faster :func:`murmur2` than aiokafka's), so a record whose partition kubesight picks itself lands where any
other producer would put it; :func:`send_in_batches` appends records to one record batch per partition.

>>> b = Bootstrap("k1:9093,k2:9093", KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
...               username="u", password_env="NO_SUCH_VARIABLE_HOPEFULLY"))
>>> b, b.security.protocol
('k1:9093,k2:9093', 'SASL_PLAINTEXT')
>>> client_config("k1:9092", "kafka-python")
{'bootstrap_servers': 'k1:9092', 'security_protocol': 'PLAINTEXT'}
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import socket
import ssl
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from core.settings import KafkaSecurity

Flavour = Literal["kafka-python", "aiokafka", "faust"]


class Bootstrap(str):
    """Bootstrap servers (``host:port,...``) that carry the :class:`KafkaSecurity` to reach them."""

    security: KafkaSecurity

    def __new__(cls, servers: str, security: KafkaSecurity | None = None) -> Bootstrap:
        self = super().__new__(cls, servers)
        self.security = security or KafkaSecurity()
        return self

    def __reduce__(self):  # pickles (multiprocessing) keep the security; the password is not in it
        return (Bootstrap, (str(self), self.security))


def security_of(bootstrap: str) -> KafkaSecurity:
    return getattr(bootstrap, "security", None) or KafkaSecurity()


class KafkaSecurityError(ValueError):
    """The security settings cannot be used as they are (a missing password file, an unreadable CA)."""


class Password(str):
    """The SASL password: a ``str`` for the clients, ``<redacted>`` in any repr -- kafka-python logs its whole
    configuration at DEBUG (``Starting KafkaAdminClient with configuration: {...}``), which printed it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<redacted>'"


def password(sec: KafkaSecurity) -> str:
    """The password of ``sec`` (a ``Password``: usable as a str, its repr hides it)."""
    if sec.password_file:
        try:
            with open(sec.password_file, encoding="utf-8") as fh:
                return Password(fh.read().rstrip("\r\n"))
        except OSError as exc:  # neither slot is quoted: the password itself may have been typed there
            raise KafkaSecurityError(f"kafka_security.password_file: cannot read the file named there: "
                                     f"{exc.strerror or exc}") from None
    if sec.password_env:
        value = os.environ.get(sec.password_env)
        if value is None:
            raise KafkaSecurityError("kafka_security.password_env: the environment variable named there is not set")
        return Password(value)
    raise KafkaSecurityError(f"kafka_security: protocol {sec.protocol} needs password_file or password_env")


def ssl_context(sec: KafkaSecurity) -> ssl.SSLContext | None:
    """The TLS context of every client (None for PLAINTEXT and SASL_PLAINTEXT)."""
    if not sec.protocol.endswith("SSL"):
        return None
    from aiokafka.helpers import create_ssl_context

    try:
        ctx = create_ssl_context(cafile=sec.ca_file, certfile=sec.cert_file, keyfile=sec.key_file)
    except (OSError, ssl.SSLError) as exc:
        which = ", ".join(f"{n} {getattr(sec, n)}" for n in ("ca_file", "cert_file", "key_file") if getattr(sec, n))
        raise KafkaSecurityError(f"kafka_security: cannot load {which}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    ctx.check_hostname = sec.check_hostname
    return ctx


class Protocol(Enum):
    """Kafka's ``security.protocol`` values."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


@dataclass(frozen=True)
class Credentials:
    """The security of the "faust" flavour as plain values: ``streams.app`` makes them Faust's own credential
    objects, as the base layer knows no library of the layers above (it imported ``faust.auth`` here)."""

    protocol: Protocol
    ssl_context: ssl.SSLContext | None = None
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def client_config(bootstrap: str, flavour: Flavour) -> dict:
    """Keyword arguments for a client of ``flavour`` reaching ``bootstrap`` with its security.

    kafka-python and aiokafka take the same names (``bootstrap_servers``, ``security_protocol``,
    ``ssl_context``, ``sasl_*``); Faust takes ``broker`` and ``broker_credentials``, here a :class:`Credentials`
    (None for PLAINTEXT) that ``streams.app`` turns into Faust's."""
    sec = security_of(bootstrap)
    ctx = ssl_context(sec)
    servers = str(bootstrap)
    if flavour == "faust":
        out: dict = {"broker": ";".join(f"kafka://{s.strip()}" for s in servers.split(","))}
        if sec.protocol.startswith("SASL_"):
            out["broker_credentials"] = Credentials(Protocol(sec.protocol), ctx, sec.sasl_mechanism, sec.username,
                                                    password(sec))
        elif ctx is not None:
            out["broker_credentials"] = Credentials(Protocol.SSL, ctx)
        return out
    out = {"bootstrap_servers": servers, "security_protocol": sec.protocol}
    if ctx is not None:
        out["ssl_context"] = ctx
    if sec.protocol.startswith("SASL_"):
        out.update(sasl_mechanism=sec.sasl_mechanism, sasl_plain_username=sec.username,
                   sasl_plain_password=password(sec))
    return out


# ---------------------------------------------------------------------------------- the start-up check

_TLS_HINT = "set kafka_security.protocol to SSL or SASL_SSL"


class _Refused(Exception):
    """The server gave no Kafka answer; the message says what happened instead."""


class _Silent(_Refused):
    """No answer at all: a TLS listener waiting for a handshake looks the same as an HTTP server waiting for a
    request line (the Kafka request holds no newline), so neither is asserted."""


class _TlsRecord(_Refused):
    """A TLS record (an alert, a handshake) in answer to a plaintext request: a TLS listener."""


class _NotKafka(_Refused):
    """An answer that is neither a Kafka frame nor TLS (an HTTP status line, other bytes); the message says what
    the server is, with nothing of a security setting to add."""


class _OutOfTime(Exception):
    """The server's time in the check was spent before the next step could start: nothing is known of the server,
    so nothing is said of it (a broker left 0.1 s after a server that hung was called "not a Kafka broker")."""


def seconds(s: float) -> str:
    """A duration as a message says it.

    >>> seconds(2.5), seconds(0.4996), seconds(5.0), seconds(1 / 3), seconds(0.004), seconds(12.5), seconds(0)
    ('2.5', '0.5', '5', '0.33', '0.004', '12', '0')
    """
    return f"{s:.2g}" if s < 10 else f"{s:.0f}"


def problem(bootstrap: str, sock: socket.socket, host: str, deadline: float) -> str | None:
    """Speak to one connected bootstrap server as every client will; None if all is well, else why not.

    Never raises for what the server does; owns ``sock`` (closes it).  ``deadline`` is this server's own: a
    timeout says how long the server had, and no time left at all is said as such, not as a fault of the server."""
    sec = security_of(bootstrap)
    try:
        ctx = ssl_context(sec)
        pw = password(sec) if sec.protocol.startswith("SASL_") else None
    except KafkaSecurityError as exc:
        sock.close()
        return str(exc)
    conn = _Conn(sock, deadline)
    try:
        if (left := deadline - time.monotonic()) <= 0:
            raise _OutOfTime
        sock.settimeout(left)
        if ctx is not None:
            try:
                conn.sock = ctx.wrap_socket(sock, server_hostname=host)
            except ssl.SSLCertVerificationError as exc:
                return (f"TLS: the broker's certificate is not trusted ({exc.verify_message}); "
                        f"set kafka_security.ca_file to the CA that signed it"
                        + ("" if exc.verify_code != 62 else " or fix the address (check_hostname)"))
            except ssl.SSLError as exc:
                return f"TLS handshake failed ({exc.reason or exc}): is this a TLS listener? (protocol {sec.protocol})"
            except (ConnectionError, OSError) as exc:
                if isinstance(exc, TimeoutError):
                    return f"TLS handshake timed out (no answer in {seconds(left)} s): is this a TLS listener?"
                return f"TLS handshake failed ({exc.strerror or exc}): is this a TLS listener? (protocol {sec.protocol})"
        try:
            conn.request(18, 0, b"")  # ApiVersions
        except _NotKafka as exc:
            return str(exc)
        except _Refused as exc:
            if ctx is not None:
                return f"the broker did not answer a Kafka request over TLS ({exc})"
            if isinstance(exc, _TlsRecord):
                return f"the broker answered a plaintext Kafka request with {exc}: a TLS listener? {_TLS_HINT}"
            if isinstance(exc, _Silent):
                return (f"the server did not answer a plaintext Kafka request ({exc}): either a TLS listener waiting "
                        f"for a handshake ({_TLS_HINT}) or not a Kafka broker at all, such as an HTTP server waiting "
                        f"for a request line: is that the right port?")
            return f"the broker did not answer a plaintext Kafka request ({exc}): a TLS listener? {_TLS_HINT}"
        if pw is None:
            try:
                conn.request(3, 4, struct.pack(">ib", -1, 0))  # Metadata v4: refused by a SASL listener
            except _Silent as exc:  # a SASL listener closes the connection; this one is slow, or its time spent
                return f"the broker answered ApiVersions but not a Metadata request ({exc})"
            except _Refused:
                return ("the broker closed the connection on a Metadata request: it expects SASL "
                        "(set kafka_security.protocol to SASL_PLAINTEXT or SASL_SSL)")
            return None
        return _sasl(conn, sec, pw)
    except _Silent as exc:
        return f"the broker stopped answering during the SASL login ({exc})"
    except _Refused as exc:
        return f"the broker closed the connection ({exc})"
    except _OutOfTime:
        return "connected, but its time in the check was spent before a Kafka request could be sent"
    finally:
        conn.close()


def _sasl(conn: _Conn, sec: KafkaSecurity, pw: str) -> str | None:
    mech = sec.sasl_mechanism
    body = conn.request(17, 1, _str(mech))  # SaslHandshake v1
    err, n = struct.unpack_from(">hi", body)
    if err:
        enabled, off = [], 6
        for _ in range(max(n, 0)):
            (ln,) = struct.unpack_from(">h", body, off)
            enabled.append(body[off + 2:off + 2 + ln].decode())
            off += 2 + ln
        return f"SASL: the broker does not offer {mech} (it offers {', '.join(enabled) or 'none'})"
    if mech == "PLAIN":
        return _auth(conn, f"\0{sec.username}\0{pw}".encode(), sec)[0]
    algo = "sha256" if mech == "SCRAM-SHA-256" else "sha512"
    nonce = base64.b64encode(secrets.token_bytes(18)).decode()
    user = (sec.username or "").replace("=", "=3D").replace(",", "=2C")
    first_bare = f"n={user},r={nonce}"
    why, server_first = _auth(conn, f"n,,{first_bare}".encode(), sec)
    if why:
        return why
    fields = dict(part.split("=", 1) for part in server_first.decode().split(",") if "=" in part)
    if not fields.get("r", "").startswith(nonce) or "s" not in fields or "i" not in fields:
        return f"SASL {mech}: unexpected server message"
    salted = hashlib.pbkdf2_hmac(algo, pw.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
    client_key = hmac.digest(salted, b"Client Key", algo)
    without_proof = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first.decode()},{without_proof}".encode()
    signature = hmac.digest(hashlib.new(algo, client_key).digest(), auth_message, algo)
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True))).decode()
    why, server_final = _auth(conn, f"{without_proof},p={proof}".encode(), sec)
    if why:
        return why
    expected = base64.b64encode(hmac.digest(hmac.digest(salted, b"Server Key", algo), auth_message, algo)).decode()
    if server_final.decode() != f"v={expected}":
        return f"SASL {mech}: the broker's final message does not prove it knows the password"
    return None


def _auth(conn: _Conn, data: bytes, sec: KafkaSecurity) -> tuple[str | None, bytes]:
    body = conn.request(36, 0, struct.pack(">i", len(data)) + data)  # SaslAuthenticate v0
    err, mlen = struct.unpack_from(">hh", body)
    off = 4 + max(mlen, 0)
    if err:
        msg = body[4:4 + mlen].decode(errors="replace") if mlen > 0 else f"error {err}"
        return (f"SASL {sec.sasl_mechanism} authentication of user {sec.username!r} failed: {msg} "
                f"(check kafka_security.username and the password)"), b""
    (alen,) = struct.unpack_from(">i", body, off)
    return None, body[off + 4:off + 4 + max(alen, 0)]


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


class _Conn:
    """Blocking request/response on one socket, every read and write bounded by the deadline."""

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock, self.deadline, self.correlation = sock, deadline, 0

    def request(self, api: int, version: int, body: bytes) -> bytes:
        self.correlation += 1
        msg = struct.pack(">hhi", api, version, self.correlation) + _str("kubesight-check") + body
        if (left := self.deadline - time.monotonic()) <= 0:
            raise _OutOfTime
        self.sock.settimeout(left)
        try:
            self.sock.sendall(struct.pack(">i", len(msg)) + msg)
            head = self._read(4)
            (size,) = struct.unpack(">i", head)
            if head[:1] in (b"\x15", b"\x16") and head[1:2] == b"\x03":  # a TLS alert or handshake record
                raise _TlsRecord("a TLS alert" if head[0] == 0x15 else "a TLS handshake record")
            if head == b"HTTP":  # its size would be 1.2 GB
                raise _NotKafka(f"an HTTP server, not a Kafka broker: is that the right port? (it answered "
                                f"{self._first_line(head)!r})")
            if size <= 4 or size > 64 << 20:
                raise _NotKafka(f"not a Kafka broker: it answered with bytes that are not a Kafka frame "
                                f"({head.hex(' ')} ...): is that the right port?")
            data = self._read(size)
        except TimeoutError:  # the time it had: from the request to this server's deadline
            raise _Silent(f"no answer in {seconds(left)} s") from None
        except ssl.SSLError as exc:
            raise _Refused(f"TLS: {exc.reason or exc}") from None
        except OSError as exc:
            raise _Refused(exc.strerror or str(exc)) from None
        if struct.unpack_from(">i", data)[0] != self.correlation:
            raise _Refused("answer out of order")
        return data[4:]

    def _timeout(self) -> None:
        """The time left for the next read, as the socket's timeout; none: the wait is over (``TimeoutError``)."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)

    def _first_line(self, head: bytes) -> str:
        """The answer's first line (``HTTP/1.1 400 Bad Request``) from what has come with ``head``, to quote it."""
        try:
            self._timeout()
            head += self.sock.recv(200)
        except OSError:  # no more in time (TimeoutError) or the connection gone: quote what came
            pass
        return head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].decode("ascii", "replace")

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            self._timeout()
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise _Refused("connection closed")
            buf += chunk
        return buf

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- the producer's partitioning and batching


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``aiokafka.partitioner.murmur2``, the Java client's ``Utils.murmur2``), 4 bytes a step.

    >>> from aiokafka.partitioner import murmur2 as kafka_murmur2
    >>> keys = [b"", b"a", b"ab", b"abc", b"abcd", b'{}:{alertname="KubeNodeNotReady", node="n1"}', bytes(range(256))]
    >>> all(murmur2(k) == kafka_murmur2(k) for k in keys)
    True
    """
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    n = len(data)
    h = 0x9747B28C ^ n
    n4 = n & ~3
    for (k,) in _WORDS(memoryview(data)[:n4]):
        k = (k * m) & mask
        k = ((k ^ (k >> 24)) * m) & mask
        h = ((h * m) & mask) ^ k
    rest = n & 3
    if rest:
        if rest == 3:
            h ^= data[n4 + 2] << 16
        if rest >= 2:
            h ^= data[n4 + 1] << 8
        h = ((h ^ data[n4]) * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    return h ^ (h >> 15)


_WORDS = struct.Struct("<I").iter_unpack


def key_hash(key: bytes) -> int:
    """The number the producer's default partitioner takes a key's partition from: murmur2 made positive."""
    return murmur2(key) & 0x7FFFFFFF


def partition_of(key: bytes, partitions: Sequence[int]) -> int:
    """Where the producer's default partitioner puts a keyed record (as Kafka's Java client: ``key_hash`` modulo
    the partition count, over the topic's partitions in order)."""
    return partitions[key_hash(key) % len(partitions)]


async def send_in_batches(producer, records) -> list:
    """Send (topic, key, value, partition) records in order per topic-partition, appended to one record batch per
    topic-partition (``create_batch`` / ``send_batch``) instead of one ``send`` each, which costs ~15 µs of Python
    per record; returns the batches' delivery futures."""
    batches: dict[tuple[str, int], object] = {}
    sent = []
    for topic, key, value, partition in records:
        b = batches.get((topic, partition))
        if b is None:
            b = batches[(topic, partition)] = producer.create_batch()
        if b.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
            sent.append(await producer.send_batch(b, topic, partition=partition))
            b = batches[(topic, partition)] = producer.create_batch()
            b.append(key=key, value=value, timestamp=None)  # an empty batch takes any one record
    for (topic, partition), b in batches.items():
        if b.record_count():
            sent.append(await producer.send_batch(b, topic, partition=partition))
    return sent


# ---------------------------------------------------------------- start-up noise

# answers a broker gives while a new topic's partition leaders or a group's coordinator are being elected: aiokafka
# logs each at ERROR and retries it by itself
TRANSIENT = ("NotLeaderForPartitionError", "GroupCoordinatorNotAvailableError", "UnknownTopicOrPartitionError",
             "NotCoordinatorForGroupError", "CoordinatorLoadInProgressError")
_NOISY = ("aiokafka.consumer.fetcher", "aiokafka.consumer.group_coordinator", "aiokafka.cluster",
          "aiokafka.producer.sender")  # a collector's first sends to a new topic: "Got error produce response ..."


class StartupNoise(logging.Filter):
    """Drops aiokafka's retried ``TRANSIENT`` errors during a process's first ``grace`` seconds (a command on a
    fresh broker printed "Failed fetch offsets ... NotLeaderForPartitionError" before its answer); later they
    are shown, since by then they say something about the cluster.

    >>> f = StartupNoise(60.0)
    >>> rec = lambda msg: logging.LogRecord("aiokafka.consumer.fetcher", logging.ERROR, "", 0, msg, None, None)
    >>> f.filter(rec("Failed fetch offsets from 1: [Error 6] NotLeaderForPartitionError: tp")), f.filter(rec("other"))
    (False, True)
    """

    def __init__(self, grace: float = 60.0):
        super().__init__()
        self.until = time.monotonic() + grace

    def filter(self, record: logging.LogRecord) -> bool:
        if time.monotonic() > self.until:
            return True
        msg = record.getMessage()
        return not any(t in msg for t in TRANSIENT)


class NoSaslBytes(logging.Filter):
    """Drops the debug lines of the client libraries' loggers that print requests and their bytes (kafka-python's
    protocol parser dumps every request it sends, aiokafka's connection logs ``SaslAuthenticateRequest`` with its
    ``auth_bytes``): a SASL PLAIN login is ``user\\x00user\\x00password`` in clear, whatever the settings'
    ``Password`` hides. Their other lines pass (connections made and closed, with why)."""

    DUMPS = ("Send:", "Recv:", "Request", "Response", "Sending request", "Received correlation")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            return True
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - cannot tell what it holds: not shown
            return False
        return not any(d in text for d in self.DUMPS) and "auth_bytes" not in text


_SASL_LOGGERS = ("kafka.protocol.parser", "kafka.net.connection", "aiokafka.conn")


class SlowTaskNoise(logging.Filter):
    """Drops kafka-python's own event-loop diagnostics ("Task ... ran for 0.105s (>0.100s threshold). It is blocking
    the event loop"), which a loaded machine prints at any command's start: a bad routing file's one-line error came
    with two of them. Shown again with ``--loglevel debug``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger(_KAFKA_PYTHON).level == logging.NOTSET:  # debug_logging: everything of kafka-python's
            return True
        try:
            return "blocking the event loop" not in record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot be rendered is not this one
            return True


# kafka-python's logger: at INFO it narrates its own connections ("Attempting bootstrap ...", "Closing transport ...",
# ~18 lines for one topic check at a collector's start), which say nothing the user acts on; WARNING and above still show
_KAFKA_PYTHON = "kafka"


def quiet_startup_noise(grace: float = 60.0) -> None:
    """Install ``StartupNoise`` on aiokafka's loggers, ``NoSaslBytes`` on the loggers that print SASL logins at
    debug level, and keep kafka-python's INFO lines out unless debug logging is asked for (``debug_logging``);
    the ``kubesight`` command does this for every subcommand."""
    f = StartupNoise(grace)
    for name in _NOISY:
        logging.getLogger(name).addFilter(f)
    hide = NoSaslBytes()
    for name in _SASL_LOGGERS:
        logging.getLogger(name).addFilter(hide)
    logging.getLogger(_KAFKA_PYTHON).setLevel(logging.WARNING)
    logging.getLogger("kafka.net.selector").addFilter(SlowTaskNoise())


def debug_logging(level: str | int) -> None:
    """A command run with ``--loglevel debug``: kafka-python's INFO and DEBUG lines back (SASL bytes still hidden).

    >>> quiet_startup_noise(); logging.getLogger("kafka.net.manager").isEnabledFor(logging.INFO)
    False
    >>> debug_logging("debug"); logging.getLogger("kafka.net.manager").getEffectiveLevel() == logging.getLogger().level
    True
    """
    level = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if isinstance(level, int) and level <= logging.DEBUG:
        logging.getLogger(_KAFKA_PYTHON).setLevel(logging.NOTSET)
