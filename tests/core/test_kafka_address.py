"""The Kafka address, checked before anything runs: the bootstrap list when the settings load, and what answers at
it when a command starts (``core.broker.check_reachable``), each said as what it is.

An audit (2026-12) found an HTTP port reported as "likely TLS" (every reply whose first four bytes made a frame over
64 MiB was, the ASCII "HTTP" included), a trailing comma in ``KUBESIGHT_KAFKA`` passed by the start-up check (it
stopped at the first server that answered) and then retried as ``:9092`` by every client, and a port of 99999 said
as "connection refused".  The servers here are real local ones: aiohttp's, ``http.server``'s, a TLS socket made with
``tests.tlsfiles``' certificates.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import re
import socket
import ssl
import threading
import time

import pytest
from pydantic import ValidationError

from core.broker import KafkaUnreachable, check_reachable
from core.kafkaclient import problem
from core.settings import Settings, bootstrap_servers
from core.yamlconfig import ConfigError
from tests import tlsfiles

TLS_HINT = "set kafka_security.protocol to SSL or SASL_SSL"


def refusal(address: str, timeout: float = 5.0) -> str:
    with pytest.raises(KafkaUnreachable) as exc:
        check_reachable(address, timeout=timeout)
    return str(exc.value)


def waited(line: str) -> str:
    """``line`` with each "no answer in 0.49 s" as "no answer in N s": how long a server had is measured."""
    return re.sub(r"no answer in \d+(\.\d+)? s", "no answer in N s", line)


@contextlib.contextmanager
def aiohttp_server():
    """aiohttp's server on its own loop: it answers the Kafka request's bytes with ``HTTP/1.x 400 Bad Request``."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(web.Application())
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@contextlib.contextmanager
def http_server():
    """``python -m http.server``'s server: it waits for a request line, and the Kafka request has no newline."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def socket_server(answer):
    """A listener whose every connection gets ``answer(conn)`` (in a thread of its own), then is closed."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # so that the loop sees ``done``
    done = threading.Event()

    def serve():
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                with contextlib.suppress(OSError, ssl.SSLError):
                    answer(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        done.set()
        thread.join(timeout=10)
        listener.close()


def silent(conn: socket.socket) -> None:
    """Accepts, reads what comes, says nothing until the client hangs up."""
    while conn.recv(4096):
        pass


def test_an_http_server_that_answers_is_said_to_be_one():
    with aiohttp_server() as address:
        line = refusal(address)
    assert line.startswith(f"Kafka at {address} rejects kubesight's connection ({address}: an HTTP server, not a "
                           f"Kafka broker: is that the right port? (it answered 'HTTP/1."), line
    assert " 400 Bad Request')" in line and "TLS" not in line, line


def test_a_server_that_says_nothing_is_not_said_to_be_tls():
    """http.server and a silent TLS listener cannot be told apart by one read: both are named, neither asserted."""
    with http_server() as address:
        line = refusal(address, timeout=0.5)
    assert waited(line) == (
        f"Kafka at {address} rejects kubesight's connection ({address}: the server did not answer a plaintext Kafka "
        f"request (no answer in N s): either a TLS listener waiting for a handshake ({TLS_HINT}) or not a Kafka broker "
        "at all, such as an HTTP server waiting for a request line: is that the right port?)")
    with socket_server(silent) as address:
        assert "(no answer in N s): either a TLS listener" in waited(refusal(address, timeout=0.5))


def test_other_bytes_are_not_kafka_and_not_tls():
    with socket_server(lambda conn: (conn.recv(4096), conn.sendall(b"\0\0\0\0garbage"))) as address:
        line = refusal(address)
    assert line.endswith(f"({address}: not a Kafka broker: it answered with bytes that are not a Kafka frame "
                         "(00 00 00 00 ...): is that the right port?)"), line


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory) -> ssl.SSLContext:
    d = tmp_path_factory.mktemp("tls")
    pair = tlsfiles.signed(d, tlsfiles.ca(d), "server")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pair.cert, pair.key)
    return ctx


def test_a_tls_listener_keeps_the_tls_hint(server_tls):
    """OpenSSL drops a plaintext request without a word; a Java listener (Kafka's) answers with a TLS alert."""
    def tls_listener(conn):
        with server_tls.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    with socket_server(tls_listener) as address:
        line = refusal(address)
    assert f"{address}: the broker did not answer a plaintext Kafka request (" in line, line
    assert line.endswith(f"): a TLS listener? {TLS_HINT})"), line

    alert = bytes.fromhex("15 03 03 00 02 02 0a")  # fatal unexpected_message, what the JDK's SSLEngine sends
    with socket_server(lambda conn: (conn.recv(4096), conn.sendall(alert))) as address:
        line = refusal(address)
    assert line.endswith(f"({address}: the broker answered a plaintext Kafka request with a TLS alert: "
                         f"a TLS listener? {TLS_HINT})"), line


# ------------------------------------------------------------------------------------- the list, at load


@pytest.mark.parametrize("value, message", [
    ("127.0.0.1:47931,", "an empty server in '127.0.0.1:47931,' (a stray comma?): expected host:port,host:port,..."),
    (",k:9092", "an empty server in ',k:9092' (a stray comma?): expected host:port,host:port,..."),
    ("a:9092,,b:9092", "an empty server in 'a:9092,,b:9092' (a stray comma?): expected host:port,host:port,..."),
    ("127.0.0.1:99999", "the port of '127.0.0.1:99999' must be 1-65535, got 99999"),
    ("k:0", "the port of 'k:0' must be 1-65535, got 0"),
    ("k:", "the port of 'k:' must be 1-65535, got nothing"),
    ("k:90x2", "the port of 'k:90x2' must be 1-65535, got 90x2"),
    (":9092", "':9092': no host before the port"),
    ("b-1 example:9092", "'b-1 example:9092': 'b-1 example' is not a host name or address"),
    ("PLAINTEXT://k:9092", "'PLAINTEXT://k:9092': expected host:port, without a scheme (kafka_security.protocol "
                           "says how to connect)"),
    ("::1:9092", "'::1:9092': an IPv6 address goes in brackets, as [::1]:9092"),
    ("[::1:9092", "'[::1:9092': expected [IPv6 address]:port"),
    ("[fe80::zz]:9092", "'[fe80::zz]:9092': not an IPv6 address in brackets"),
    ("[::1]9092", "'[::1]9092': expected [IPv6 address]:port"),
])
def test_a_bad_bootstrap_list_is_a_settings_error(value, message):
    with pytest.raises(ValidationError, match="kafka"):
        Settings(kafka=value)
    with pytest.raises(ValueError) as exc:
        bootstrap_servers(value)
    assert str(exc.value) == message


def test_good_lists_load_as_given():
    value = "b-1.example.net:9096, b-2.example.net:9096,10.0.0.7:9092,kafka,[::1]:9093,[fe80::1]"
    assert Settings(kafka=value).kafka == value  # the clients get the setting unchanged
    assert bootstrap_servers(value) == [("b-1.example.net", 9096), ("b-2.example.net", 9096), ("10.0.0.7", 9092),
                                        ("kafka", 9092), ("::1", 9093), ("fe80::1", 9092)]
    assert Settings(kafka="").kafka == "" and Settings().kafka is None  # the local broker


def test_the_error_names_the_variable_or_the_line(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBESIGHT_KAFKA", raising=False)
    f = tmp_path / "s.yaml"
    f.write_text("cluster: x\nkafka: 'k1:9092,k2:70000'\n")
    with pytest.raises(ConfigError) as exc:
        Settings.load(f)
    assert exc.value.errors == [f"{f}:2: kafka: the port of 'k2:70000' must be 1-65535, got 70000"]
    f.write_text("cluster: x\nkafka: k1:9092\n")
    monkeypatch.setenv("KUBESIGHT_KAFKA", "127.0.0.1:47931,")
    with pytest.raises(ConfigError) as exc:
        Settings.load(f)  # not blamed on the file's line 2
    assert exc.value.errors == ["KUBESIGHT_KAFKA='127.0.0.1:47931,': an empty server in '127.0.0.1:47931,' "
                                "(a stray comma?): expected host:port,host:port,..."]


def test_the_start_up_check_reads_the_whole_list_first():
    """Called with an address that did not come through the settings, a bad entry is still not passed over."""
    with http_server() as address:  # would be connected to, and refused, if the list were read one by one
        assert refusal(f"{address},", timeout=0.5) == (
            f"Kafka: an empty server in '{address},' (a stray comma?): expected host:port,host:port,...")
    assert refusal("127.0.0.1:99999") == "Kafka: the port of '127.0.0.1:99999' must be 1-65535, got 99999"


# ----------------------------------------------------------------------- several servers, one check's time
# An audit (2027-01) found one deadline shared by every bootstrap server: a first server that accepted the connection
# and said nothing used it all, the healthy broker after it was left 0.1 s (no time for a request at all), and the
# check failed calling that broker "either a TLS listener ... or not a Kafka broker at all".


@pytest.mark.kafka
def test_a_server_that_says_nothing_does_not_starve_the_broker_after_it(kafka_bootstrap):
    broker = kafka_bootstrap.split(",")[0]
    with socket_server(silent) as hung:
        check_reachable(f"{hung},{broker}", timeout=2.0)  # raises if the broker had no time of its own
        with socket_server(silent) as hung2:
            check_reachable(f"{hung},{hung2},{broker}", timeout=3.0)


def test_each_silent_server_is_named_with_the_time_it_had():
    with socket_server(silent) as first, socket_server(silent) as second:
        line = refusal(f"{first},{second}", timeout=1.0)
    said = "the server did not answer a plaintext Kafka request (no answer in N s): either a TLS listener"
    assert waited(line).startswith(f"Kafka at {first},{second} rejects kubesight's connection ({first}: {said}"), line
    assert f"; {second}: {said}" in waited(line), line
    assert all(float(s) > 0 for s in re.findall(r"no answer in ([\d.]+) s", line)), line


@pytest.mark.kafka
def test_a_server_left_no_time_is_not_said_to_be_anything(kafka_bootstrap):
    """The check's time spent before a request could be sent says nothing of the server: here a real broker."""
    host, _, port = kafka_bootstrap.split(",")[0].rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    assert problem(kafka_bootstrap, sock, host, time.monotonic() - 1) == (
        "connected, but its time in the check was spent before a Kafka request could be sent")
    assert refusal("127.0.0.1:1,127.0.0.1:2", timeout=0) == (
        "Kafka unreachable at 127.0.0.1:1,127.0.0.1:2 (127.0.0.1:1: connection refused; "
        "127.0.0.1:2: not tried, the check's 0 s were spent on the servers before it)")
